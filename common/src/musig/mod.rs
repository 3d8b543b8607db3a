//! MuSig2 (BIP-327) helpers: sorted Taproot key aggregation with a shared cache, nonces,
//! partial signing, and aggregate-first combination with identifiable abort.
//!
//! Key aggregation and signing are our own (`keyagg`, `sign`): the aggregate key is one
//! multi-scalar multiplication over the keys (`msm`) instead of one point multiplication
//! per key, and a partial signature is not re-verified by its signer. The `musig2` crate
//! still provides the point, scalar and nonce types, nonce generation and the tagged
//! hashes. Signatures come out as `bitcoin` (secp256k1 0.29) Schnorr signatures, ready for
//! a Taproot key-path witness.

use std::sync::Arc;

use bitcoin::hashes::Hash as _;
use bitcoin::secp256k1::{schnorr, Message, SECP256K1};
use bitcoin::{TapNodeHash, XOnlyPublicKey};
use dashmap::DashMap;
use musig2::SecNonceBuilder;
use rand::RngCore as _;
use rayon::prelude::*;

pub use musig2::errors::SigningError;
pub use musig2::secp::{Point, Scalar};
pub use musig2::{AggNonce, PartialSignature, PubNonce, SecNonce};

pub use keyagg::KeyAggContext;

use crate::keys::{to_xonly, Keypair};

mod keyagg;
mod msm;
mod sign;

/// Errors of the MuSig2 helpers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MusigError {
    /// Key aggregation was asked for with no keys.
    #[error("cannot aggregate an empty key set")]
    EmptyKeySet,
    /// Key aggregation was asked for with more keys than BIP-327 allows (2^32 - 1).
    #[error("cannot aggregate {count} keys: at most 2^32 - 1 are allowed")]
    TooManyKeys {
        /// How many keys were given.
        count: usize,
    },
    /// Nonce aggregation was asked for with no public nonces.
    #[error("cannot aggregate an empty set of public nonces")]
    EmptyNonceSet,
    /// The keys aggregate to the point at infinity (a degenerate, adversarial key set).
    #[error("key aggregation of {count} keys gives the point at infinity")]
    KeyAgg {
        /// How many keys were aggregated.
        count: usize,
    },
    /// A tweak is not below the curve order, or tweaking gives the point at infinity.
    #[error("tweak {index} is out of range or makes the aggregate key infinite")]
    Tweak {
        /// Index of the failing tweak (0 for the Taproot tweak).
        index: usize,
    },
    /// Partial signing failed: our key is not in the set, or the secret nonce belongs to
    /// another key.
    #[error("partial signing failed: {0}")]
    Signing(#[source] SigningError),
    /// The number of contributions is not the number of keys in the key set.
    #[error("expected {expected} partial signatures (one per key), got {got}")]
    ContributionCount {
        /// Number of keys in the aggregation context.
        expected: usize,
        /// Number of contributions given.
        got: usize,
    },
    /// The final signature is invalid and these contributions (indices into the slice
    /// given) carry invalid partial signatures: exclude their signers and retry.
    #[error("invalid partial signatures from contributions {signers:?}")]
    InvalidPartials {
        /// Indices into the contributions of the invalid partial signatures, ascending.
        signers: Vec<usize>,
    },
    /// Every partial signature verifies on its own but their sum does not: the
    /// contributions do not cover the key set exactly, or the aggregated nonce is not
    /// the sum of their public nonces (a coordinator-side bug, not a signer's fault).
    #[error("every partial signature verifies but the aggregate does not: contributions do not match the key set or the aggregated nonce")]
    InconsistentContributions,
    /// A signing session was used with a key context other than the one it was made for.
    #[error("the signing session was made for another key")]
    SessionMismatch,
}

/// BIP-327 KeySort: sorts keys by their 33-byte compressed encoding, in place.
pub fn key_sort(keys: &mut [Point]) {
    // Serialize each key once rather than on every comparison.
    keys.sort_by_cached_key(|p| p.serialize());
}

/// BIP-327 KeyAgg of `keys` in the given order (no sorting, no tweak).
pub fn key_agg(keys: &[Point]) -> Result<KeyAggContext, MusigError> {
    KeyAggContext::new(keys)
}

/// Applies BIP-327 tweaks in order: each is 32 big-endian bytes and a flag, `true` for an
/// x-only tweak (as Taproot uses), `false` for a plain one (as BIP-32 uses).
pub fn tweak(ctx: KeyAggContext, tweaks: &[([u8; 32], bool)]) -> Result<KeyAggContext, MusigError> {
    tweaks.iter().enumerate().try_fold(ctx, |ctx, (index, (bytes, is_xonly))| {
        ctx.with_tweak(bytes, *is_xonly).ok_or(MusigError::Tweak { index })
    })
}

/// Sorted KeyAgg plus the BIP-341 Taproot tweak. `merkle_root = None` is key-path only
/// (tweak with an empty merkle root); `Some(root)` commits to that script tree.
/// Sorts a copy of `keys`, so the result does not depend on their order.
pub fn taproot_context(
    keys: &[Point],
    merkle_root: Option<TapNodeHash>,
) -> Result<KeyAggContext, MusigError> {
    let mut sorted = keys.to_vec();
    key_sort(&mut sorted);
    taproot_context_sorted(&sorted, merkle_root.map(|r| r.to_byte_array()))
}

/// Taproot context of keys already in KeySort order.
fn taproot_context_sorted(
    sorted: &[Point],
    merkle_root: Option<[u8; 32]>,
) -> Result<KeyAggContext, MusigError> {
    key_agg(sorted)?.with_taproot_tweak(merkle_root.as_ref()).ok_or(MusigError::Tweak { index: 0 })
}

/// The tweaked aggregate key (what goes in the P2TR scriptPubKey), x-only.
pub fn output_key(ctx: &KeyAggContext) -> XOnlyPublicKey {
    to_xonly(&ctx.aggregated_pubkey::<Point>())
}

/// The untweaked aggregate key (the Taproot internal key), x-only.
pub fn internal_key(ctx: &KeyAggContext) -> XOnlyPublicKey {
    to_xonly(&ctx.aggregated_pubkey_untweaked::<Point>())
}

/// Cache key: the SHA-256 of the sorted key set's compressed encodings, and the merkle
/// root. A digest rather than the keys: comparing and hashing thousands of keys on every
/// lookup cost more than half of a warm lookup, and finding two key sets with one
/// digest is finding a SHA-256 collision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct CacheKey {
    key_set: [u8; 32],
    merkle_root: Option<[u8; 32]>,
}

/// Thread-safe cache of Taproot key contexts, keyed by the sorted key set (by its
/// digest) and merkle root, so that participants living in one process aggregate each
/// node key once.
///
/// Contexts are shared as `Arc`s: a hit clones a pointer, never a context. On a miss the
/// context is computed outside any lock; if two threads race, both compute and the first
/// insert wins, so every caller gets the same `Arc`.
pub struct KeyAggCache {
    map: DashMap<CacheKey, Arc<KeyAggContext>>,
}

impl std::fmt::Debug for KeyAggCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyAggCache").field("len", &self.map.len()).finish()
    }
}

impl Default for KeyAggCache {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyAggCache {
    /// An empty cache.
    pub fn new() -> Self {
        KeyAggCache { map: DashMap::new() }
    }

    /// The Taproot context of this key set (see [`taproot_context`]), computed on a miss.
    /// Any order of the same keys hits the same entry. A lookup serializes each key once
    /// and hashes the sorted encodings; keys given in KeySort order are not sorted again.
    pub fn taproot_context(
        &self,
        keys: &[Point],
        merkle_root: Option<TapNodeHash>,
    ) -> Result<Arc<KeyAggContext>, MusigError> {
        let mut encoded: Vec<[u8; 33]> = keys.iter().map(Point::serialize).collect();
        let in_order = encoded.is_sorted();
        if !in_order {
            encoded.sort_unstable();
        }
        let mut engine = bitcoin::hashes::sha256::Hash::engine();
        for key in &encoded {
            bitcoin::hashes::HashEngine::input(&mut engine, key);
        }
        let key_set = bitcoin::hashes::sha256::Hash::from_engine(engine).to_byte_array();
        let key = CacheKey { key_set, merkle_root: merkle_root.map(|r| r.to_byte_array()) };
        if let Some(hit) = self.map.get(&key) {
            return Ok(Arc::clone(hit.value()));
        }
        let mut sorted = keys.to_vec();
        if !in_order {
            key_sort(&mut sorted);
        }
        let ctx = Arc::new(taproot_context_sorted(&sorted, key.merkle_root)?);
        Ok(Arc::clone(self.map.entry(key).or_insert(ctx).value()))
    }

    /// Number of cached contexts.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// A fresh secret nonce seeded with 32 bytes from the operating system's CSPRNG, bound to
/// the signer's key and, when known, the message (BIP-327 NonceGen inputs); a given
/// `seckey` is hashed in as extra input.
pub fn new_secnonce(
    signer: &Point,
    seckey: Option<&Scalar>,
    message: Option<&[u8; 32]>,
) -> SecNonce {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let mut builder = SecNonceBuilder::from_pubkey(seed, *signer);
    // The secret key goes in as extra input rather than as BIP-327's `sk`: musig2 would
    // re-derive the public key from it (a base-point multiplication per nonce, ~15 µs),
    // while hashing it in gives the same defence against a weak random source.
    let sk_bytes = seckey.map(|sk| sk.serialize());
    if let Some(bytes) = &sk_bytes {
        builder = builder.with_extra_input(bytes);
    }
    if let Some(msg) = message {
        builder = builder.with_message(msg);
    }
    builder.build()
}

/// A secret nonce from a caller-supplied seed: deterministic tests and simulations only.
/// Reusing a seed with the same key on two messages reveals the secret key.
pub fn secnonce_from_seed(seed: [u8; 32], signer: &Point) -> SecNonce {
    SecNonceBuilder::from_pubkey(seed, *signer).build()
}

/// BIP-327 NonceAgg: the sum of the public nonces.
pub fn nonce_agg(nonces: &[PubNonce]) -> Result<AggNonce, MusigError> {
    if nonces.is_empty() {
        return Err(MusigError::EmptyNonceSet);
    }
    Ok(AggNonce::sum(nonces))
}

/// One BIP-327 signing session: a tweaked key, an aggregate nonce and a message, with
/// the session values (nonce coefficient, final nonce, challenge) computed once. The
/// final nonce costs a point multiplication, so a signer that also combines (the
/// coordinator, on every node and deposit input) makes one session for both instead of
/// paying it twice.
#[derive(Debug, Clone)]
pub struct SigningSession {
    agg_nonce: AggNonce,
    message: [u8; 32],
    values: sign::Session,
}

impl SigningSession {
    /// The session of `ctx`'s tweaked key, `agg_nonce` and `message`.
    pub fn new(ctx: &KeyAggContext, agg_nonce: &AggNonce, message: &[u8; 32]) -> SigningSession {
        SigningSession {
            agg_nonce: agg_nonce.clone(),
            message: *message,
            values: sign::Session::new(ctx, agg_nonce, message),
        }
    }

    /// The aggregate nonce the session was made with.
    pub fn agg_nonce(&self) -> &AggNonce {
        &self.agg_nonce
    }

    /// A partial signature by `signer`, consuming the secret nonce so it cannot sign
    /// twice. `ctx` must be the context the session was made for (the same tweaked key),
    /// or this refuses with [`MusigError::SessionMismatch`]. The result is not verified
    /// again here (BIP-327's optional self-check costs three point multiplications): a
    /// wrong partial signature fails the aggregate check in [`SigningSession::combine`],
    /// which then names its signer.
    pub fn sign(
        &self,
        ctx: &KeyAggContext,
        signer: &Keypair,
        secnonce: SecNonce,
    ) -> Result<PartialSignature, MusigError> {
        if !self.values.is_for(ctx) {
            return Err(MusigError::SessionMismatch);
        }
        sign::sign(ctx, &self.values, signer, secnonce).map_err(MusigError::Signing)
    }

    /// Aggregate-first combination: sums the partial signatures and checks the final
    /// signature once; only if that check fails are the partials verified one by one
    /// (on rayon) to name the culprits in [`MusigError::InvalidPartials`].
    ///
    /// `contributions` must hold one entry per key of `ctx` and the session's aggregate
    /// nonce must be the sum of their public nonces. The aggregate is checked by a full
    /// BIP-340 verification against the tweaked key, so a returned signature is valid
    /// and is not verified again. A `ctx` other than the session's is refused with
    /// [`MusigError::SessionMismatch`].
    pub fn combine(
        &self,
        ctx: &KeyAggContext,
        contributions: &[Contribution],
    ) -> Result<schnorr::Signature, MusigError> {
        if !self.values.is_for(ctx) {
            return Err(MusigError::SessionMismatch);
        }
        check_count(ctx, contributions)?;
        match self.aggregate(ctx, contributions) {
            Ok(sig) => Ok(sig),
            Err(_) => {
                let bad = self.invalid_partials(ctx, contributions);
                if bad.is_empty() {
                    Err(MusigError::InconsistentContributions)
                } else {
                    Err(MusigError::InvalidPartials { signers: bad })
                }
            }
        }
    }

    /// Sums the partial signatures and verifies the result (see [`Self::combine`]).
    fn aggregate(
        &self,
        ctx: &KeyAggContext,
        contributions: &[Contribution],
    ) -> Result<schnorr::Signature, MusigError> {
        sign::aggregate(ctx, &self.values, &self.message, contributions.iter().map(|c| c.psig))
            .ok_or(MusigError::InconsistentContributions)
    }

    /// Indices of the contributions whose partial signature does not verify, ascending.
    fn invalid_partials(&self, ctx: &KeyAggContext, contributions: &[Contribution]) -> Vec<usize> {
        contributions
            .par_iter()
            .enumerate()
            .filter(|(_, c)| !sign::verify(ctx, &self.values, c.psig, &c.signer, &c.pubnonce))
            .map(|(i, _)| i)
            .collect()
    }
}

/// A partial signature on `message` by `signer` (a [`SigningSession`] used once).
/// Consumes the secret nonce so it cannot sign twice.
pub fn sign_partial(
    ctx: &KeyAggContext,
    signer: &Keypair,
    secnonce: SecNonce,
    agg_nonce: &AggNonce,
    message: &[u8; 32],
) -> Result<PartialSignature, MusigError> {
    SigningSession::new(ctx, agg_nonce, message).sign(ctx, signer, secnonce)
}

/// Verifies one signer's partial signature (false also when `signer` is not in the set).
pub fn verify_partial(
    ctx: &KeyAggContext,
    psig: PartialSignature,
    agg_nonce: &AggNonce,
    signer: &Point,
    pubnonce: &PubNonce,
    message: &[u8; 32],
) -> bool {
    let session = sign::Session::new(ctx, agg_nonce, message);
    sign::verify(ctx, &session, psig, signer, pubnonce)
}

/// One signer's contribution to a node's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contribution {
    /// The signer's key (a member of the node's key set).
    pub signer: Point,
    /// The public nonce the signer committed to for this node.
    pub pubnonce: PubNonce,
    /// The signer's partial signature.
    pub psig: PartialSignature,
}

/// [`SigningSession::combine`] in a session of its own.
pub fn combine(
    ctx: &KeyAggContext,
    agg_nonce: &AggNonce,
    message: &[u8; 32],
    contributions: &[Contribution],
) -> Result<schnorr::Signature, MusigError> {
    SigningSession::new(ctx, agg_nonce, message).combine(ctx, contributions)
}

/// The slow path on its own: verifies every partial signature, then aggregates (for the
/// benchmark comparison with [`combine`]).
pub fn combine_verify_each(
    ctx: &KeyAggContext,
    agg_nonce: &AggNonce,
    message: &[u8; 32],
    contributions: &[Contribution],
) -> Result<schnorr::Signature, MusigError> {
    check_count(ctx, contributions)?;
    let session = SigningSession::new(ctx, agg_nonce, message);
    let bad = session.invalid_partials(ctx, contributions);
    if !bad.is_empty() {
        return Err(MusigError::InvalidPartials { signers: bad });
    }
    session.aggregate(ctx, contributions)
}

/// Verifies a BIP-340 signature on a 32-byte message against an x-only key.
pub fn verify_schnorr(sig: &schnorr::Signature, message: &[u8; 32], key: &XOnlyPublicKey) -> bool {
    SECP256K1.verify_schnorr(sig, &Message::from_digest(*message), key).is_ok()
}

/// One contribution per key, or an error.
fn check_count(ctx: &KeyAggContext, contributions: &[Contribution]) -> Result<(), MusigError> {
    let expected = ctx.pubkeys().len();
    if contributions.len() != expected {
        return Err(MusigError::ContributionCount { expected, got: contributions.len() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Keypair;
    use bitcoin::secp256k1::Secp256k1;
    use bitcoin::{Address, Network};
    use musig2::secp::MaybeScalar;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn keypairs(n: usize, seed: u64) -> Vec<Keypair> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n).map(|_| Keypair::from_rng(&mut rng)).collect()
    }

    /// Runs a full signing session; returns the context, aggregated nonce and contributions.
    fn session(
        kps: &[Keypair],
        message: &[u8; 32],
    ) -> (KeyAggContext, AggNonce, Vec<Contribution>) {
        let points: Vec<Point> = kps.iter().map(|k| k.point).collect();
        let ctx = taproot_context(&points, None).unwrap();
        let secnonces: Vec<SecNonce> =
            kps.iter().map(|k| new_secnonce(&k.point, Some(&k.scalar()), Some(message))).collect();
        let pubnonces: Vec<PubNonce> = secnonces.iter().map(SecNonce::public_nonce).collect();
        let agg_nonce = nonce_agg(&pubnonces).unwrap();
        let contributions = kps
            .iter()
            .zip(secnonces)
            .zip(pubnonces)
            .map(|((k, sn), pn)| Contribution {
                signer: k.point,
                pubnonce: pn,
                psig: sign_partial(&ctx, k, sn, &agg_nonce, message).unwrap(),
            })
            .collect();
        (ctx, agg_nonce, contributions)
    }

    fn corrupt(c: &mut Contribution) {
        c.psig += MaybeScalar::Valid(Scalar::one());
    }

    #[test]
    fn one_session_signs_and_combines_as_separate_calls_do() {
        let kps = keypairs(3, 11);
        let msg = [9u8; 32];
        let (ctx, agg_nonce, contributions) = session(&kps, &msg);
        let shared = SigningSession::new(&ctx, &agg_nonce, &msg);
        // The same secret nonce signs to the same partial signature in the shared
        // session as in a session of its own.
        let nonce = || secnonce_from_seed([5; 32], &kps[2].point);
        assert_eq!(
            shared.sign(&ctx, &kps[2], nonce()),
            sign_partial(&ctx, &kps[2], nonce(), &agg_nonce, &msg)
        );
        assert_eq!(shared.agg_nonce(), &agg_nonce);
        let separate = combine(&ctx, &agg_nonce, &msg, &contributions).unwrap();
        assert_eq!(shared.combine(&ctx, &contributions).unwrap(), separate);
        let mut bad = contributions.clone();
        corrupt(&mut bad[1]);
        assert_eq!(
            shared.combine(&ctx, &bad),
            Err(MusigError::InvalidPartials { signers: vec![1] })
        );
        // A session is bound to its tweaked key: another context is refused, for signing
        // and for combining.
        let other = taproot_context(&[kps[0].point, kps[1].point], None).unwrap();
        assert_eq!(shared.sign(&other, &kps[2], nonce()), Err(MusigError::SessionMismatch));
        assert_eq!(shared.combine(&other, &contributions), Err(MusigError::SessionMismatch));
    }

    #[test]
    fn three_of_three_round_trip() {
        let kps = keypairs(3, 1);
        let msg = [7u8; 32];
        let (ctx, agg_nonce, contributions) = session(&kps, &msg);
        for c in &contributions {
            assert!(verify_partial(&ctx, c.psig, &agg_nonce, &c.signer, &c.pubnonce, &msg));
        }
        let sig = combine(&ctx, &agg_nonce, &msg, &contributions).unwrap();
        assert!(verify_schnorr(&sig, &msg, &output_key(&ctx)));
        assert!(!verify_schnorr(&sig, &[8u8; 32], &output_key(&ctx)));
        assert!(!verify_schnorr(&sig, &msg, &internal_key(&ctx)));
        let slow = combine_verify_each(&ctx, &agg_nonce, &msg, &contributions).unwrap();
        assert_eq!(sig, slow);
    }

    #[test]
    fn one_bad_partial_is_named() {
        let kps = keypairs(3, 2);
        let msg = [1u8; 32];
        let (ctx, agg_nonce, mut contributions) = session(&kps, &msg);
        corrupt(&mut contributions[1]);
        let want = MusigError::InvalidPartials { signers: vec![1] };
        assert_eq!(combine(&ctx, &agg_nonce, &msg, &contributions), Err(want.clone()));
        assert_eq!(combine_verify_each(&ctx, &agg_nonce, &msg, &contributions), Err(want));
    }

    #[test]
    fn two_bad_partials_are_both_named() {
        let kps = keypairs(5, 3);
        let msg = [2u8; 32];
        let (ctx, agg_nonce, mut contributions) = session(&kps, &msg);
        corrupt(&mut contributions[0]);
        // A partial from a key outside the set is also invalid.
        contributions[3].signer = keypairs(1, 99)[0].point;
        assert_eq!(
            combine(&ctx, &agg_nonce, &msg, &contributions),
            Err(MusigError::InvalidPartials { signers: vec![0, 3] })
        );
    }

    #[test]
    fn valid_partials_that_do_not_cover_the_key_set_are_reported() {
        let kps = keypairs(3, 4);
        let msg = [3u8; 32];
        let (ctx, agg_nonce, mut contributions) = session(&kps, &msg);
        let first = contributions[0].clone();
        contributions[2] = first;
        assert_eq!(
            combine(&ctx, &agg_nonce, &msg, &contributions),
            Err(MusigError::InconsistentContributions)
        );
        assert_eq!(
            combine(&ctx, &agg_nonce, &msg, &contributions[..2]),
            Err(MusigError::ContributionCount { expected: 3, got: 2 })
        );
    }

    #[test]
    fn empty_sets_are_errors() {
        assert_eq!(key_agg(&[]).err(), Some(MusigError::EmptyKeySet));
        assert_eq!(taproot_context(&[], None).err(), Some(MusigError::EmptyKeySet));
        assert_eq!(
            KeyAggCache::new().taproot_context(&[], None).err(),
            Some(MusigError::EmptyKeySet)
        );
        assert_eq!(nonce_agg(&[]).err(), Some(MusigError::EmptyNonceSet));
        let ctx = key_agg(&[keypairs(1, 5)[0].point]).unwrap();
        assert_eq!(
            combine(&ctx, &AggNonce::new(Point::generator(), Point::generator()), &[0; 32], &[]),
            Err(MusigError::ContributionCount { expected: 1, got: 0 })
        );
    }

    #[test]
    fn signing_with_a_foreign_key_or_nonce_fails() {
        let kps = keypairs(3, 6);
        let outsider = &keypairs(1, 7)[0];
        let msg = [4u8; 32];
        let ctx = taproot_context(&kps.iter().map(|k| k.point).collect::<Vec<_>>(), None).unwrap();
        let sn = secnonce_from_seed([9; 32], &outsider.point);
        let agg_nonce = nonce_agg(&[sn.public_nonce()]).unwrap();
        assert_eq!(
            sign_partial(&ctx, outsider, sn, &agg_nonce, &msg),
            Err(MusigError::Signing(SigningError::UnknownKey))
        );
        let sn = secnonce_from_seed([9; 32], &kps[1].point);
        assert_eq!(
            sign_partial(&ctx, &kps[0], sn, &agg_nonce, &msg),
            Err(MusigError::Signing(SigningError::SecNoncePubkeyMismatch))
        );
    }

    #[test]
    fn taproot_tweak_matches_bitcoin() {
        let secp = Secp256k1::verification_only();
        let points: Vec<Point> = keypairs(4, 8).iter().map(|k| k.point).collect();
        let root = TapNodeHash::from_byte_array([0x5a; 32]);
        for merkle_root in [None, Some(root)] {
            let ctx = taproot_context(&points, merkle_root).unwrap();
            let addr = Address::p2tr(&secp, internal_key(&ctx), merkle_root, Network::Regtest);
            let spk = addr.script_pubkey();
            assert_eq!(&spk.as_bytes()[2..], &output_key(&ctx).serialize());
            let untweaked = key_agg(&{
                let mut p = points.clone();
                key_sort(&mut p);
                p
            })
            .unwrap();
            assert_eq!(internal_key(&ctx), output_key(&untweaked));
        }
        assert_ne!(
            output_key(&taproot_context(&points, None).unwrap()),
            output_key(&taproot_context(&points, Some(root)).unwrap())
        );
    }

    #[test]
    fn taproot_context_ignores_key_order() {
        let mut points: Vec<Point> = keypairs(5, 9).iter().map(|k| k.point).collect();
        let a = taproot_context(&points, None).unwrap();
        points.reverse();
        let b = taproot_context(&points, None).unwrap();
        assert_eq!(output_key(&a), output_key(&b));
        // While plain key_agg keeps the order given.
        let c = key_agg(&points).unwrap();
        points.reverse();
        assert_ne!(output_key(&c), output_key(&key_agg(&points).unwrap()));
    }

    #[test]
    fn cache_shares_one_arc_across_orders() {
        let cache = KeyAggCache::new();
        assert!(cache.is_empty());
        let mut points: Vec<Point> = keypairs(6, 10).iter().map(|k| k.point).collect();
        let a = cache.taproot_context(&points, None).unwrap();
        points.rotate_left(2);
        let b = cache.taproot_context(&points, None).unwrap();
        points.swap(0, 5);
        let c = cache.taproot_context(&points, None).unwrap();
        assert!(Arc::ptr_eq(&a, &b) && Arc::ptr_eq(&a, &c));
        assert_eq!(cache.len(), 1);
        assert_eq!(*a, taproot_context(&points, None).unwrap());
        let root = TapNodeHash::from_byte_array([1; 32]);
        let d = cache.taproot_context(&points, Some(root)).unwrap();
        assert!(!Arc::ptr_eq(&a, &d));
        let e = cache.taproot_context(&points[1..], None).unwrap();
        assert!(!Arc::ptr_eq(&a, &e));
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn seeded_nonces_are_deterministic_and_fresh_ones_differ() {
        let kp = &keypairs(1, 11)[0];
        assert_eq!(secnonce_from_seed([3; 32], &kp.point), secnonce_from_seed([3; 32], &kp.point));
        assert_ne!(secnonce_from_seed([3; 32], &kp.point), secnonce_from_seed([4; 32], &kp.point));
        assert_ne!(new_secnonce(&kp.point, None, None), new_secnonce(&kp.point, None, None));
    }
}
