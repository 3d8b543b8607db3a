//! Key types and conversions between `bitcoin`'s secp256k1 (0.29) and `musig2`'s (0.31).
//!
//! The two crates link side by side. Keys cross between them through the 65-byte
//! uncompressed encoding, which needs no square root (about 0.1 µs, against 3.3 µs
//! for the 33-byte form), so hot paths stay cheap.

use bitcoin::secp256k1::{self, PublicKey, SecretKey, XOnlyPublicKey};
use musig2::secp::{Point, Scalar};

/// A MuSig2 signer key (cosigner keys, deposit keys, the coordinator's keys) as `musig2` uses it.
pub type MusigPoint = Point;

/// Errors converting keys between the two secp256k1 crates.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The bytes are not a valid curve point.
    #[error("invalid public key bytes")]
    InvalidPoint,
    /// The bytes are not a valid non-zero scalar below the curve order.
    #[error("invalid secret key bytes")]
    InvalidScalar,
}

/// Converts a `bitcoin` public key into a `musig2` point (uncompressed route).
pub fn to_point(pk: &PublicKey) -> Point {
    // A valid 0.29 key always serializes to a valid 0.31 key.
    match Point::try_from(&pk.serialize_uncompressed()) {
        Ok(p) => p,
        Err(_) => unreachable!("a valid secp256k1 0.29 public key is a valid point"),
    }
}

/// Converts a `musig2` point into a `bitcoin` public key (uncompressed route).
pub fn to_public_key(p: &Point) -> PublicKey {
    match PublicKey::from_slice(&p.serialize_uncompressed()) {
        Ok(pk) => pk,
        Err(_) => unreachable!("a valid point is a valid secp256k1 0.29 public key"),
    }
}

/// The x-only form of a `musig2` point, as Taproot uses it.
pub fn to_xonly(p: &Point) -> XOnlyPublicKey {
    to_public_key(p).x_only_public_key().0
}

/// Converts a `bitcoin` secret key into a `musig2` scalar.
pub fn to_scalar(sk: &SecretKey) -> Scalar {
    match Scalar::from_slice(&sk.secret_bytes()) {
        Ok(s) => s,
        Err(_) => unreachable!("a valid secret key is a valid non-zero scalar"),
    }
}

/// Converts a `musig2` scalar into a `bitcoin` secret key.
pub fn to_secret_key(s: &Scalar) -> SecretKey {
    match SecretKey::from_slice(&s.serialize()) {
        Ok(sk) => sk,
        Err(_) => unreachable!("a non-zero scalar is a valid secret key"),
    }
}

/// Parses a 33-byte compressed point.
pub fn point_from_slice(bytes: &[u8]) -> Result<Point, KeyError> {
    Point::from_slice(bytes).map_err(|_| KeyError::InvalidPoint)
}

/// A secret key with its public key in both crates' forms, for local signing.
#[derive(Clone)]
pub struct Keypair {
    /// The secret key (`bitcoin` form).
    pub secret: SecretKey,
    /// The public key (`bitcoin` form).
    pub public: PublicKey,
    /// The public key as a `musig2` point.
    pub point: Point,
}

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keypair").field("public", &self.public).finish_non_exhaustive()
    }
}

impl Keypair {
    /// Builds the key pair of a secret key.
    pub fn from_secret(secret: SecretKey) -> Self {
        let public = PublicKey::from_secret_key(secp256k1::SECP256K1, &secret);
        Keypair { secret, public, point: to_point(&public) }
    }

    /// A fresh random key pair from the operating system's randomness.
    pub fn random() -> Self {
        Self::from_secret(SecretKey::new(&mut rand::thread_rng()))
    }

    /// A key pair from any RNG (seeded in simulations and tests).
    pub fn from_rng<R: rand::Rng + ?Sized>(rng: &mut R) -> Self {
        loop {
            let mut bytes = [0u8; 32];
            rng.fill_bytes(&mut bytes);
            if let Ok(sk) = SecretKey::from_slice(&bytes) {
                return Self::from_secret(sk);
            }
        }
    }

    /// The x-only public key.
    pub fn xonly(&self) -> XOnlyPublicKey {
        self.public.x_only_public_key().0
    }

    /// The secret key as a `musig2` scalar.
    pub fn scalar(&self) -> Scalar {
        to_scalar(&self.secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_trip() {
        let kp = Keypair::random();
        assert_eq!(to_public_key(&kp.point), kp.public);
        assert_eq!(kp.point.serialize(), kp.public.serialize());
        assert_eq!(to_secret_key(&kp.scalar()), kp.secret);
        assert_eq!(to_xonly(&kp.point), kp.xonly());
        assert_eq!(kp.scalar().base_point_mul(), kp.point);
    }

    #[test]
    fn bad_point_bytes_are_an_error() {
        assert_eq!(point_from_slice(&[0u8; 33]), Err(KeyError::InvalidPoint));
        assert_eq!(point_from_slice(&[2u8; 5]), Err(KeyError::InvalidPoint));
    }
}
