//! Property tests: our BIP-327 key aggregation and signing (`cohort_common::musig`)
//! against the `musig2` crate, on random key sets of 1 to 64 keys with duplicates.
//!
//! Same aggregate key (in the given order and sorted with the Taproot tweak), same
//! result for random plain and x-only tweaks, partial signatures that `musig2` verifies
//! (and the other way round), and final signatures valid under BIP-340 that equal
//! `musig2`'s aggregate.

// Test bodies unwrap like the vectors tests do.
#![allow(clippy::unwrap_used)]

use cohort_common::bitcoin::secp256k1::{schnorr, SecretKey};
use cohort_common::bitcoin::TapNodeHash;
use cohort_common::keys::Keypair;
use cohort_common::musig::{
    self, AggNonce, Contribution, KeyAggContext, Point, PubNonce, Scalar, SecNonce,
};
use cohort_common::musig2;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

/// `n` secret keys drawn (with repetition) from a pool of `pool` distinct ones.
fn secret_keys(n: usize, pool: usize, seed: u64) -> Vec<Scalar> {
    let mut rng = StdRng::seed_from_u64(seed);
    let distinct: Vec<Scalar> = (0..pool).map(|_| Scalar::reduce_from(&rng.gen())).collect();
    (0..n).map(|_| distinct[rng.gen_range(0..pool)]).collect()
}

fn points(secrets: &[Scalar]) -> Vec<Point> {
    secrets.iter().map(Scalar::base_point_mul).collect()
}

fn theirs(keys: &[Point]) -> musig2::KeyAggContext {
    musig2::KeyAggContext::new(keys.iter().copied()).unwrap()
}

fn same_key(ours: &KeyAggContext, theirs: &musig2::KeyAggContext) -> bool {
    ours.aggregated_pubkey::<Point>() == theirs.aggregated_pubkey::<Point>()
}

/// Key-set sizes 1..=64, a pool of distinct keys at most that large (so small pools
/// give many duplicates), and a seed.
fn key_sets() -> impl Strategy<Value = (usize, usize, u64)> {
    (1usize..=64).prop_flat_map(|n| (Just(n), 1usize..=n, any::<u64>()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn aggregate_keys_match_musig2((n, pool, seed) in key_sets(), root in any::<Option<[u8; 32]>>()) {
        let keys = points(&secret_keys(n, pool, seed));
        // In the given order, untweaked.
        let ours = musig::key_agg(&keys).unwrap();
        prop_assert!(same_key(&ours, &theirs(&keys)));
        for key in &keys {
            prop_assert_eq!(ours.key_coefficient(key), theirs(&keys).key_coefficient(*key));
        }
        // Sorted, with the Taproot tweak (key-path only or with a script tree).
        let merkle_root = root.map(TapNodeHash::assume_hidden);
        let ours = musig::taproot_context(&keys, merkle_root).unwrap();
        let mut sorted = keys.clone();
        musig::key_sort(&mut sorted);
        let theirs = match root {
            None => theirs(&sorted).with_unspendable_taproot_tweak(),
            Some(r) => theirs(&sorted).with_taproot_tweak(&r),
        }
        .unwrap();
        prop_assert!(same_key(&ours, &theirs));
        prop_assert_eq!(
            ours.aggregated_pubkey_untweaked::<Point>(),
            theirs.aggregated_pubkey_untweaked::<Point>()
        );
    }

    #[test]
    fn tweaks_match_musig2((n, pool, seed) in key_sets(), tweaks in prop::collection::vec((any::<[u8; 32]>(), any::<bool>()), 1..4)) {
        let keys = points(&secret_keys(n, pool, seed));
        let ours = musig::tweak(musig::key_agg(&keys).unwrap(), &tweaks);
        let theirs = tweaks.iter().try_fold(theirs(&keys), |ctx, (t, xonly)| {
            let t = musig2::secp::MaybeScalar::try_from(*t).map_err(|_| ())?;
            ctx.with_tweak(t, *xonly).map_err(|_| ())
        });
        match (ours, theirs) {
            (Ok(ours), Ok(theirs)) => prop_assert!(same_key(&ours, &theirs)),
            // Random 32 bytes are at or above the order about once in 2^128: both refuse.
            (Err(_), Err(())) => {}
            (ours, theirs) => prop_assert!(false, "ours {:?}, theirs {:?}", ours.is_ok(), theirs.is_ok()),
        }
    }

    #[test]
    fn signatures_cross_verify_with_musig2((n, pool, seed) in key_sets(), message in any::<[u8; 32]>(), tweaked in any::<bool>()) {
        let secrets = secret_keys(n, pool, seed);
        let keys = points(&secrets);
        let (ours, theirs) = if tweaked {
            let mut sorted = keys.clone();
            musig::key_sort(&mut sorted);
            (
                musig::taproot_context(&keys, None).unwrap(),
                theirs(&sorted).with_unspendable_taproot_tweak().unwrap(),
            )
        } else {
            (musig::key_agg(&keys).unwrap(), theirs(&keys))
        };
        // Signers in the context's order, each with its secret key.
        let order: Vec<(Point, Scalar)> = ours
            .pubkeys()
            .iter()
            .map(|p| (*p, secrets[keys.iter().position(|k| k == p).unwrap()]))
            .collect();
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
        let nonces: Vec<SecNonce> =
            order.iter().map(|(p, _)| musig::secnonce_from_seed(rng.gen(), p)).collect();
        let pubnonces: Vec<PubNonce> = nonces.iter().map(SecNonce::public_nonce).collect();
        let agg_nonce: AggNonce = musig::nonce_agg(&pubnonces).unwrap();
        let mut contributions = Vec::new();
        for (((signer, secret), nonce), pubnonce) in order.iter().zip(&nonces).zip(&pubnonces) {
            let pair = Keypair::from_secret(SecretKey::from_slice(&secret.serialize()).unwrap());
            let psig = musig::sign_partial(&ours, &pair, nonce.clone(), &agg_nonce, &message).unwrap();
            // musig2 verifies ours, and signs the same partial signature.
            prop_assert!(musig2::verify_partial(&theirs, psig, &agg_nonce, *signer, pubnonce, message).is_ok());
            let their_psig: musig2::PartialSignature =
                musig2::sign_partial(&theirs, *secret, nonce.clone(), &agg_nonce, message).unwrap();
            prop_assert_eq!(psig, their_psig);
            prop_assert!(musig::verify_partial(&ours, psig, &agg_nonce, signer, pubnonce, &message));
            contributions.push(Contribution { signer: *signer, pubnonce: pubnonce.clone(), psig });
        }
        let sig = musig::combine(&ours, &agg_nonce, &message, &contributions).unwrap();
        prop_assert!(musig::verify_schnorr(&sig, &message, &musig::output_key(&ours)));
        let their_sig: musig2::LiftedSignature = musig2::aggregate_partial_signatures(
            &theirs,
            &agg_nonce,
            contributions.iter().map(|c| c.psig),
            message,
        )
        .unwrap();
        prop_assert_eq!(sig, schnorr::Signature::from_slice(&their_sig.serialize()).unwrap());

        // A corrupted partial signature is caught by our verification and named by combine.
        let bad = rng.gen_range(0..contributions.len());
        contributions[bad].psig += musig2::secp::MaybeScalar::one();
        let c = &contributions[bad];
        prop_assert!(!musig::verify_partial(&ours, c.psig, &agg_nonce, &c.signer, &c.pubnonce, &message));
        let named = musig::combine(&ours, &agg_nonce, &message, &contributions);
        // With duplicate keys every copy of the bad signer's key carries the same
        // coefficient, so the culprit is the corrupted contribution alone.
        prop_assert_eq!(named, Err(musig::MusigError::InvalidPartials { signers: vec![bad] }));
    }
}
