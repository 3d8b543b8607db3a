//! BIP-327 (MuSig2) and BIP-340 reference vectors, run through `cohort_common::musig`.
//!
//! The vectors are copied under `tests/data/bip327/` (see the README there for
//! provenance). Where a vector case sits below what our helpers take (invalid encodings,
//! messages that are not 32 bytes), the test asserts that the encoding is refused by the
//! parser, or calls `musig2` directly and says so.

// Vector files are trusted test data: helpers below unwrap like test bodies do.
#![allow(clippy::unwrap_used)]

use cohort_common::bitcoin::secp256k1::{schnorr, SecretKey};
use cohort_common::bitcoin::XOnlyPublicKey;
use cohort_common::keys::Keypair;
use cohort_common::musig::{
    combine, key_agg, key_sort, nonce_agg, sign_partial, tweak, verify_partial, verify_schnorr,
    AggNonce, Contribution, KeyAggContext, MusigError, PartialSignature, Point, PubNonce, SecNonce,
    SigningError,
};
use serde_json::Value;

const KEY_SORT: &str = include_str!("data/bip327/key_sort_vectors.json");
const KEY_AGG: &str = include_str!("data/bip327/key_agg_vectors.json");
const TWEAK: &str = include_str!("data/bip327/tweak_vectors.json");
const NONCE_AGG: &str = include_str!("data/bip327/nonce_agg_vectors.json");
const SIGN_VERIFY: &str = include_str!("data/bip327/sign_verify_vectors.json");
const SIG_AGG: &str = include_str!("data/bip327/sig_agg_vectors.json");
const BIP340: &str = include_str!("data/bip327/bip340_vectors.csv");

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

fn bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn arr32(v: &Value) -> [u8; 32] {
    bytes(v).try_into().unwrap()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as usize).collect()
}

fn bools(v: &Value) -> Vec<bool> {
    v.as_array().unwrap().iter().map(|b| b.as_bool().unwrap()).collect()
}

/// The entries of a JSON array.
fn list(v: &Value) -> &Vec<Value> {
    v.as_array().unwrap()
}

fn point(v: &Value) -> Result<Point, ()> {
    Point::from_slice(&bytes(v)).map_err(|_| ())
}

fn pubnonce(v: &Value) -> Result<PubNonce, ()> {
    PubNonce::from_bytes(&bytes(v)).map_err(|_| ())
}

fn aggnonce(v: &Value) -> Result<AggNonce, ()> {
    AggNonce::from_bytes(&bytes(v)).map_err(|_| ())
}

fn psig(v: &Value) -> Result<PartialSignature, ()> {
    PartialSignature::from_slice(&bytes(v)).map_err(|_| ())
}

/// Parses every entry of `v`, keeping parse failures as `Err` so cases can pick them.
fn parse_all<T>(v: &Value, f: impl Fn(&Value) -> Result<T, ()>) -> Vec<Result<T, ()>> {
    list(v).iter().map(f).collect()
}

/// Picks entries that must all parse.
fn pick_ok<T: Clone>(all: &[Result<T, ()>], indices: &[usize]) -> Vec<T> {
    indices.iter().map(|&i| all[i].clone().unwrap()).collect()
}

/// Asserts that entry `signer` of the picked indices is the (first) one that fails to parse.
fn assert_bad_contribution<T: Clone>(all: &[Result<T, ()>], indices: &[usize], signer: usize) {
    let first_bad = indices.iter().position(|&i| all[i].is_err());
    assert_eq!(first_bad, Some(signer), "indices {indices:?}");
}

/// The aggregate of a context as 32 x-only bytes.
fn xonly(ctx: &KeyAggContext) -> [u8; 32] {
    ctx.aggregated_pubkey::<Point>().serialize_xonly()
}

fn tweaks_of(case: &Value, all: &[Value]) -> Vec<([u8; 32], bool)> {
    let idx = usizes(&case["tweak_indices"]);
    let xonly = bools(&case["is_xonly"]);
    idx.iter().zip(xonly).map(|(&i, x)| (arr32(&all[i]), x)).collect()
}

#[test]
fn key_sort_vectors() {
    let v = json(KEY_SORT);
    let mut keys: Vec<Point> = list(&v["pubkeys"]).iter().map(|k| point(k).unwrap()).collect();
    key_sort(&mut keys);
    let got: Vec<String> = keys.iter().map(|k| hex::encode_upper(k.serialize())).collect();
    let want: Vec<&str> = list(&v["sorted_pubkeys"]).iter().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(got, want);
}

#[test]
fn key_agg_vectors() {
    let v = json(KEY_AGG);
    let keys = parse_all(&v["pubkeys"], point);
    let tweaks = list(&v["tweaks"]);
    for case in list(&v["valid_test_cases"]) {
        // Vectors give the key order explicitly: key_agg keeps it.
        let ctx = key_agg(&pick_ok(&keys, &usizes(&case["key_indices"]))).unwrap();
        assert_eq!(xonly(&ctx), arr32(&case["expected"]), "{case}");
    }
    for case in list(&v["error_test_cases"]) {
        let idx = usizes(&case["key_indices"]);
        let err = &case["error"];
        match err["type"].as_str().unwrap() {
            "invalid_contribution" => {
                assert_eq!(err["contrib"], "pubkey");
                let signer = err["signer"].as_u64().unwrap() as usize;
                assert_bad_contribution(&keys, &idx, signer);
            }
            "value" => {
                let ctx = key_agg(&pick_ok(&keys, &idx)).unwrap();
                let got = tweak(ctx, &tweaks_of(case, tweaks)).map(|c| xonly(&c));
                assert_eq!(got, Err(MusigError::Tweak { index: 0 }), "{case}");
            }
            other => panic!("unknown error type {other}"),
        }
    }
}

#[test]
fn tweak_vectors() {
    let v = json(TWEAK);
    let sk = Keypair::from_secret(SecretKey::from_slice(&bytes(&v["sk"])).unwrap());
    let keys = parse_all(&v["pubkeys"], point);
    let pnonces = parse_all(&v["pnonces"], pubnonce);
    let agg_nonce = aggnonce(&v["aggnonce"]).unwrap();
    let tweaks = list(&v["tweaks"]);
    let msg = arr32(&v["msg"]);
    for case in list(&v["valid_test_cases"]) {
        let key_idx = usizes(&case["key_indices"]);
        let nonce_idx = usizes(&case["nonce_indices"]);
        let signer = case["signer_index"].as_u64().unwrap() as usize;
        let nonces = pick_ok(&pnonces, &nonce_idx);
        assert_eq!(nonce_agg(&nonces).unwrap(), agg_nonce);
        let ctx =
            tweak(key_agg(&pick_ok(&keys, &key_idx)).unwrap(), &tweaks_of(case, tweaks)).unwrap();
        let secnonce = SecNonce::from_bytes(&bytes(&v["secnonce"])).unwrap();
        let sig = sign_partial(&ctx, &sk, secnonce, &agg_nonce, &msg).unwrap();
        assert_eq!(sig.serialize(), arr32(&case["expected"]), "{case}");
        let signer_key = keys[key_idx[signer]].unwrap();
        assert!(verify_partial(&ctx, sig, &agg_nonce, &signer_key, &nonces[signer], &msg));
    }
    for case in list(&v["error_test_cases"]) {
        let ctx = key_agg(&pick_ok(&keys, &usizes(&case["key_indices"]))).unwrap();
        let got = tweak(ctx, &tweaks_of(case, tweaks)).map(|c| xonly(&c));
        assert_eq!(got, Err(MusigError::Tweak { index: 0 }), "{case}");
    }
}

#[test]
fn nonce_agg_vectors() {
    let v = json(NONCE_AGG);
    let pnonces = parse_all(&v["pnonces"], pubnonce);
    for case in list(&v["valid_test_cases"]) {
        let agg = nonce_agg(&pick_ok(&pnonces, &usizes(&case["pnonce_indices"]))).unwrap();
        assert_eq!(agg.serialize().to_vec(), bytes(&case["expected"]), "{case}");
    }
    for case in list(&v["error_test_cases"]) {
        let err = &case["error"];
        assert_eq!(err["contrib"], "pubnonce");
        let signer = err["signer"].as_u64().unwrap() as usize;
        assert_bad_contribution(&pnonces, &usizes(&case["pnonce_indices"]), signer);
    }
}

#[test]
fn sign_verify_vectors() {
    let v = json(SIGN_VERIFY);
    let sk = Keypair::from_secret(SecretKey::from_slice(&bytes(&v["sk"])).unwrap());
    let keys = parse_all(&v["pubkeys"], point);
    let pnonces = parse_all(&v["pnonces"], pubnonce);
    let aggnonces = parse_all(&v["aggnonces"], aggnonce);
    let msgs: Vec<Vec<u8>> = list(&v["msgs"]).iter().map(bytes).collect();
    let secnonce = |i: usize| SecNonce::from_bytes(&bytes(&v["secnonces"][i]));

    let mut through_helpers = 0;
    for case in list(&v["valid_test_cases"]) {
        let key_idx = usizes(&case["key_indices"]);
        let nonces = pick_ok(&pnonces, &usizes(&case["nonce_indices"]));
        let agg_nonce =
            aggnonces[case["aggnonce_index"].as_u64().unwrap() as usize].clone().unwrap();
        assert_eq!(nonce_agg(&nonces).unwrap(), agg_nonce, "{case}");
        let signer = case["signer_index"].as_u64().unwrap() as usize;
        let ctx = key_agg(&pick_ok(&keys, &key_idx)).unwrap();
        let expected = arr32(&case["expected"]);
        let msg = &msgs[case["msg_index"].as_u64().unwrap() as usize];
        let sn = secnonce(0).unwrap();
        let signer_key = keys[key_idx[signer]].unwrap();
        match <&[u8; 32]>::try_from(msg.as_slice()) {
            Ok(msg) => {
                let sig = sign_partial(&ctx, &sk, sn, &agg_nonce, msg).unwrap();
                assert_eq!(sig.serialize(), expected, "{case}");
                assert!(verify_partial(&ctx, sig, &agg_nonce, &signer_key, &nonces[signer], msg));
                through_helpers += 1;
            }
            // Our helpers sign 32-byte sighashes only; check the other lengths on musig2.
            Err(_) => {
                let ctx =
                    cohort_common::musig2::KeyAggContext::new(pick_ok(&keys, &key_idx)).unwrap();
                let sig: PartialSignature =
                    cohort_common::musig2::sign_partial(&ctx, sk.scalar(), sn, &agg_nonce, msg)
                        .unwrap();
                assert_eq!(sig.serialize(), expected, "{case}");
            }
        }
    }
    assert_eq!(through_helpers, 4);

    for case in list(&v["sign_error_test_cases"]) {
        let key_idx = usizes(&case["key_indices"]);
        let err = &case["error"];
        match (err["type"].as_str().unwrap(), err["contrib"].as_str()) {
            ("invalid_contribution", Some("pubkey")) => {
                let signer = err["signer"].as_u64().unwrap() as usize;
                assert_bad_contribution(&keys, &key_idx, signer);
            }
            ("invalid_contribution", Some("aggnonce")) => {
                assert!(aggnonces[case["aggnonce_index"].as_u64().unwrap() as usize].is_err());
            }
            ("value", _) if case["secnonce_index"] == 1 => {
                // A zeroed (already used) secret nonce is refused by the parser.
                assert!(secnonce(1).is_err());
            }
            ("value", _) => {
                // The signer's key is not in the set.
                let ctx = key_agg(&pick_ok(&keys, &key_idx)).unwrap();
                let agg_nonce = aggnonces[0].clone().unwrap();
                let msg: [u8; 32] = msgs[0].as_slice().try_into().unwrap();
                assert_eq!(
                    sign_partial(&ctx, &sk, secnonce(0).unwrap(), &agg_nonce, &msg),
                    Err(MusigError::Signing(SigningError::UnknownKey))
                );
            }
            other => panic!("unknown error {other:?}"),
        }
    }

    for case in list(&v["verify_fail_test_cases"]) {
        let key_idx = usizes(&case["key_indices"]);
        let nonces = pick_ok(&pnonces, &usizes(&case["nonce_indices"]));
        let ctx = key_agg(&pick_ok(&keys, &key_idx)).unwrap();
        let signer = case["signer_index"].as_u64().unwrap() as usize;
        let msg: [u8; 32] =
            msgs[case["msg_index"].as_u64().unwrap() as usize].as_slice().try_into().unwrap();
        match psig(&case["sig"]) {
            Ok(sig) => {
                let agg_nonce = nonce_agg(&nonces).unwrap();
                let signer_key = keys[key_idx[signer]].unwrap();
                assert!(!verify_partial(&ctx, sig, &agg_nonce, &signer_key, &nonces[signer], &msg));
            }
            // "Signature exceeds group size": refused by the parser.
            Err(()) => assert_eq!(bytes(&case["sig"])[..4], [0xff; 4]),
        }
    }

    for case in list(&v["verify_error_test_cases"]) {
        let err = &case["error"];
        let signer = err["signer"].as_u64().unwrap() as usize;
        match err["contrib"].as_str().unwrap() {
            "pubnonce" => {
                assert_bad_contribution(&pnonces, &usizes(&case["nonce_indices"]), signer)
            }
            "pubkey" => assert_bad_contribution(&keys, &usizes(&case["key_indices"]), signer),
            other => panic!("unknown contribution {other}"),
        }
    }
}

#[test]
fn sig_agg_vectors() {
    let v = json(SIG_AGG);
    let keys = parse_all(&v["pubkeys"], point);
    let pnonces = parse_all(&v["pnonces"], pubnonce);
    let psigs = parse_all(&v["psigs"], psig);
    let tweaks = list(&v["tweaks"]);
    let msg = arr32(&v["msg"]);
    for case in list(&v["valid_test_cases"]) {
        let signers = pick_ok(&keys, &usizes(&case["key_indices"]));
        let nonces = pick_ok(&pnonces, &usizes(&case["nonce_indices"]));
        let sigs = pick_ok(&psigs, &usizes(&case["psig_indices"]));
        let agg_nonce = aggnonce(&case["aggnonce"]).unwrap();
        assert_eq!(nonce_agg(&nonces).unwrap(), agg_nonce, "{case}");
        let ctx = tweak(key_agg(&signers).unwrap(), &tweaks_of(case, tweaks)).unwrap();
        let mut contributions: Vec<Contribution> = signers
            .iter()
            .zip(&nonces)
            .zip(&sigs)
            .map(|((s, n), p)| Contribution { signer: *s, pubnonce: n.clone(), psig: *p })
            .collect();
        let sig = combine(&ctx, &agg_nonce, &msg, &contributions).unwrap();
        assert_eq!(sig.serialize().to_vec(), bytes(&case["expected"]), "{case}");
        let key = XOnlyPublicKey::from_slice(&xonly(&ctx)).unwrap();
        assert!(verify_schnorr(&sig, &msg, &key));

        // Every vector partial is valid, so a swapped one is the only one named.
        contributions[1].psig = contributions[0].psig;
        assert_eq!(
            combine(&ctx, &agg_nonce, &msg, &contributions),
            Err(MusigError::InvalidPartials { signers: vec![1] }),
            "{case}"
        );
    }
    for case in list(&v["error_test_cases"]) {
        let signer = case["error"]["signer"].as_u64().unwrap() as usize;
        assert_bad_contribution(&psigs, &usizes(&case["psig_indices"]), signer);
    }
}

#[test]
fn bip340_vectors() {
    let mut checked = 0;
    for line in BIP340.lines().skip(1) {
        let fields: Vec<&str> = line.splitn(8, ',').collect();
        let (pk, msg, sig, result) = (fields[2], fields[4], fields[5], fields[6]);
        let Ok(key) = XOnlyPublicKey::from_slice(&hex::decode(pk).unwrap()) else {
            assert_eq!(result, "FALSE", "row {}", fields[0]);
            continue;
        };
        // verify_schnorr takes 32-byte sighashes; the other rows are message-length tests.
        let Ok(msg) = <[u8; 32]>::try_from(hex::decode(msg).unwrap()) else {
            continue;
        };
        let sig = schnorr::Signature::from_slice(&hex::decode(sig).unwrap()).unwrap();
        assert_eq!(verify_schnorr(&sig, &msg, &key), result == "TRUE", "row {}", fields[0]);
        checked += 1;
    }
    // Rows 0-13 except 5 (key not on the curve); 14 has an invalid key, 15-18 other lengths.
    assert_eq!(checked, 13);
}
