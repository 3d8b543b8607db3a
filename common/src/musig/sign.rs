//! BIP-327 signing on our [`KeyAggContext`]: the session values, computed once per
//! session, partial signing (without re-verifying the signature just made: the
//! aggregate-first check catches any error), partial-signature verification (used only
//! to name culprits) and signature aggregation.

use bitcoin::secp256k1::{schnorr, Message, SECP256K1};
use musig2::secp::{MaybeScalar, Point, G};
use musig2::{compute_challenge_hash_tweak, AggNonce, BinaryEncoding as _, PartialSignature};
use musig2::{PubNonce, SecNonce};

use super::{KeyAggContext, SigningError};
use crate::keys::{to_xonly, Keypair};

/// BIP-327 GetSessionValues: the nonce coefficient `b`, the final nonce `R` and the
/// challenge `e`, for the tweaked key `q` they were computed under.
#[derive(Debug, Clone)]
pub(super) struct Session {
    q: Point,
    b: MaybeScalar,
    r: Point,
    e: MaybeScalar,
}

impl Session {
    /// Costs one point multiplication (`b·R₂` in the final nonce).
    pub(super) fn new(ctx: &KeyAggContext, agg_nonce: &AggNonce, message: &[u8; 32]) -> Session {
        let q: Point = ctx.aggregated_pubkey();
        let b: MaybeScalar = agg_nonce.nonce_coefficient(q, message);
        let r: Point = agg_nonce.final_nonce(b);
        let e: MaybeScalar = compute_challenge_hash_tweak(&r.serialize_xonly(), &q, message);
        Session { q, b, r, e }
    }

    /// Whether these values belong to `ctx`'s tweaked key (they depend on nothing else of
    /// the context).
    pub(super) fn is_for(&self, ctx: &KeyAggContext) -> bool {
        ctx.aggregated_pubkey::<Point>() == self.q
    }
}

/// Whether the secret key is negated when signing: `g·gacc = -1`, with `g = -1` when
/// `Q` has odd y.
fn key_negated(ctx: &KeyAggContext) -> bool {
    ctx.aggregated_pubkey::<Point>().has_odd_y() ^ ctx.gacc_negated()
}

/// BIP-327 Sign, without the final self-verification, under `session` (made for `ctx`).
/// Checks, as BIP-327 does, that the signer is in the key set and that the secret nonce
/// was made for this key. The signer's point is the key pair's own, computed once when
/// the pair was made, instead of `d·G` again at every signature.
pub(super) fn sign(
    ctx: &KeyAggContext,
    session: &Session,
    signer: &Keypair,
    secnonce: SecNonce,
) -> Result<PartialSignature, SigningError> {
    // `secnonce` came in by value and goes out of scope here unused again: it signs once.
    let nonce_bytes = secnonce.to_bytes();
    let a = ctx.key_coefficient(&signer.point).ok_or(SigningError::UnknownKey)?;
    if signer.point.serialize()[..] != nonce_bytes[64..] {
        return Err(SigningError::SecNoncePubkeyMismatch);
    }
    let k1 = MaybeScalar::from_slice(&nonce_bytes[..32]).map_err(|_| SigningError::UnknownKey)?;
    let k2 = MaybeScalar::from_slice(&nonce_bytes[32..64]).map_err(|_| SigningError::UnknownKey)?;
    let k = neg_if(k1 + session.b * k2, session.r.has_odd_y());
    let d = neg_if(signer.scalar(), key_negated(ctx));
    Ok(k + session.e * a * d)
}

/// BIP-327 PartialSigVerify for one signer under `session` (made for `ctx`); false also
/// when the key is not in the set.
pub(super) fn verify(
    ctx: &KeyAggContext,
    session: &Session,
    psig: PartialSignature,
    signer: &Point,
    pubnonce: &PubNonce,
) -> bool {
    let Some(a) = ctx.key_coefficient(signer) else {
        return false;
    };
    let nonce = neg_if(pubnonce.R1 + session.b * pubnonce.R2, session.r.has_odd_y());
    let challenge = neg_if(session.e * a, key_negated(ctx)) * *signer;
    psig * G == nonce + challenge
}

/// BIP-327 PartialSigAgg under `session` (made for `ctx`), followed by one BIP-340
/// verification of the result against the tweaked key; `None` when it does not verify.
pub(super) fn aggregate(
    ctx: &KeyAggContext,
    session: &Session,
    message: &[u8; 32],
    psigs: impl Iterator<Item = PartialSignature>,
) -> Option<schnorr::Signature> {
    let q = session.q;
    let s = psigs.fold(MaybeScalar::Zero, |acc, p| acc + p)
        + neg_if(session.e * ctx.tweak_acc(), q.has_odd_y());
    let mut bytes = [0u8; 64];
    bytes[..32].copy_from_slice(&session.r.serialize_xonly());
    bytes[32..].copy_from_slice(&s.serialize());
    let sig = schnorr::Signature::from_slice(&bytes).ok()?;
    SECP256K1
        .verify_schnorr(&sig, &Message::from_digest(*message), &to_xonly(&q))
        .is_ok()
        .then_some(sig)
}

/// `-x` when `negate`, else `x`.
fn neg_if<T: std::ops::Neg<Output = T>>(x: T, negate: bool) -> T {
    if negate {
        -x
    } else {
        x
    }
}
