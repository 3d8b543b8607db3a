//! Static deposit addresses (DESIGN 3.1), virtual-deposit leaves (3.4) and P2A anchors (3.3).
//!
//! A deposit output's internal key is `KeyAgg(KeySort(U, C))`; its one script leaf is
//! `<U> OP_CHECKSIGVERIFY <csv> OP_CHECKSEQUENCEVERIFY`. The cooperative spend is one
//! MuSig2(U, C) key-path signature with the Taproot tweak; the reclaim is the script
//! path after `csv` blocks.

use bitcoin::hashes::Hash;
use bitcoin::key::TweakedPublicKey;
use bitcoin::opcodes::all::{OP_CHECKSIGVERIFY, OP_CSV};
use bitcoin::secp256k1::{schnorr, Parity, PublicKey, SECP256K1};
use bitcoin::sighash::{Prevouts, SighashCache, TapSighashType};
use bitcoin::taproot::{ControlBlock, LeafVersion, TaprootBuilder, TaprootSpendInfo};
use bitcoin::{
    Address, Amount, Network, ScriptBuf, Sequence, TapNodeHash, Transaction, TxOut, Witness,
    XOnlyPublicKey,
};

use crate::keys::to_point;
use crate::musig::{self, KeyAggContext, MusigError, Point};
use crate::params::MAX_DEPOSIT_CSV;

/// Errors building or spending deposit scripts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptError {
    /// The relative timeout is zero or above the largest accepted.
    #[error("csv of {csv} blocks is outside 1..={max}")]
    CsvOutOfRange {
        /// The timeout asked for.
        csv: u16,
        /// The largest accepted.
        max: u16,
    },
    /// The user key and the coordinator key are the same key.
    #[error("user key and coordinator key must differ")]
    SameKeys,
    /// Key aggregation failed.
    #[error("key aggregation: {0}")]
    Musig(#[from] MusigError),
    /// The sighash could not be computed (wrong input index or prevout count).
    #[error("sighash of input {input}: {reason}")]
    Sighash {
        /// The input.
        input: usize,
        /// Why.
        reason: String,
    },
}

/// The 2-of-2 deposit script of DESIGN 3.1, or the same shape as a virtual-deposit leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepositScript {
    user: PublicKey,
    coordinator: PublicKey,
    csv: u16,
    internal_key: XOnlyPublicKey,
    spend_info: TaprootSpendInfo,
    /// `KeyAgg(KeySort(U, C))` before any tweak, kept so that signing only tweaks it.
    key_agg: KeyAggContext,
}

impl DepositScript {
    /// A static deposit address's script with `deposit_csv` (refused above 28,800 blocks).
    pub fn new(user: PublicKey, coordinator: PublicKey, csv: u16) -> Result<Self, ScriptError> {
        Self::with_max_csv(user, coordinator, csv, MAX_DEPOSIT_CSV)
    }

    /// The *virtual deposit* leaf script: the same shape with `exit_csv` (DESIGN 3.4).
    pub fn virtual_deposit(
        user: PublicKey,
        coordinator: PublicKey,
        exit_csv: u16,
    ) -> Result<Self, ScriptError> {
        Self::with_max_csv(user, coordinator, exit_csv, MAX_DEPOSIT_CSV)
    }

    fn with_max_csv(
        user: PublicKey,
        coordinator: PublicKey,
        csv: u16,
        max: u16,
    ) -> Result<Self, ScriptError> {
        if csv == 0 || csv > max {
            return Err(ScriptError::CsvOutOfRange { csv, max });
        }
        if user == coordinator {
            return Err(ScriptError::SameKeys);
        }
        let mut keys = [to_point(&user), to_point(&coordinator)];
        musig::key_sort(&mut keys);
        let key_agg = musig::key_agg(&keys)?;
        let internal_key = musig::internal_key(&key_agg);
        let leaf = leaf_script(&user.x_only_public_key().0, csv);
        let spend_info = match TaprootBuilder::new().add_leaf(0, leaf) {
            Ok(builder) => match builder.finalize(SECP256K1, internal_key) {
                Ok(info) => info,
                Err(_) => unreachable!("a one-leaf tree is always complete"),
            },
            Err(_) => unreachable!("depth 0 is valid for the first leaf"),
        };
        Ok(DepositScript { user, coordinator, csv, internal_key, spend_info, key_agg })
    }

    /// The participant's key U.
    pub fn user(&self) -> PublicKey {
        self.user
    }

    /// The coordinator's key C.
    pub fn coordinator(&self) -> PublicKey {
        self.coordinator
    }

    /// The relative timeout of the reclaim path, in blocks.
    pub fn csv(&self) -> u16 {
        self.csv
    }

    /// The two MuSig2 signer keys (unsorted: U, C).
    pub fn musig_keys(&self) -> [Point; 2] {
        [to_point(&self.user), to_point(&self.coordinator)]
    }

    /// The one script leaf: `<U> OP_CHECKSIGVERIFY <csv> OP_CHECKSEQUENCEVERIFY`.
    pub fn leaf_script(&self) -> ScriptBuf {
        leaf_script(&self.user.x_only_public_key().0, self.csv)
    }

    /// The untweaked internal key `KeyAgg(KeySort(U, C))`.
    pub fn internal_key(&self) -> XOnlyPublicKey {
        self.internal_key
    }

    /// The merkle root of the one-leaf script tree.
    pub fn merkle_root(&self) -> TapNodeHash {
        match self.spend_info.merkle_root() {
            Some(root) => root,
            None => unreachable!("the spend info was built with one leaf"),
        }
    }

    /// The Taproot spend data (output key, control blocks).
    pub fn spend_info(&self) -> &TaprootSpendInfo {
        &self.spend_info
    }

    /// The tweaked output key.
    pub fn output_key(&self) -> TweakedPublicKey {
        self.spend_info.output_key()
    }

    /// The P2TR scriptPubKey.
    pub fn script_pubkey(&self) -> ScriptBuf {
        ScriptBuf::new_p2tr_tweaked(self.output_key())
    }

    /// The bech32m address on `network`.
    pub fn address(&self, network: Network) -> Address {
        Address::p2tr_tweaked(self.output_key(), network)
    }

    /// A `tr(...)` output descriptor with its checksum, for wallets that watch the address.
    pub fn descriptor(&self) -> String {
        let body = format!(
            "tr({},and_v(v:pk({}),older({})))",
            self.internal_key,
            self.user.x_only_public_key().0,
            self.csv
        );
        match descriptor_checksum(&body) {
            Some(sum) => format!("{body}#{sum}"),
            None => unreachable!("the descriptor is plain ASCII"),
        }
    }

    /// The MuSig2 context for the cooperative key-path spend: `KeyAgg(KeySort(U, C))`
    /// with the Taproot tweak of this script tree.
    /// The aggregation was done when the script was built, and the tweaked key is the
    /// output key the spend info holds: this only hashes the tweak and decompresses that
    /// key, with no point multiplication.
    pub fn signing_context(&self) -> Result<KeyAggContext, ScriptError> {
        let root = self.merkle_root().to_byte_array();
        let mut compressed = [0u8; 33];
        compressed[0] = match self.spend_info.output_key_parity() {
            Parity::Even => 0x02,
            Parity::Odd => 0x03,
        };
        compressed[1..].copy_from_slice(&self.output_key().serialize());
        let output = match Point::try_from(&compressed) {
            Ok(point) => point,
            Err(_) => unreachable!("a Taproot output key is a point on the curve"),
        };
        Ok(self
            .key_agg
            .clone()
            .with_taproot_output(Some(&root), output)
            .ok_or(MusigError::Tweak { index: 0 })?)
    }

    /// The control block of the reclaim leaf.
    pub fn control_block(&self) -> ControlBlock {
        match self.spend_info.control_block(&(self.leaf_script(), LeafVersion::TapScript)) {
            Some(cb) => cb,
            None => unreachable!("the leaf is in the tree"),
        }
    }

    /// The sequence an input must carry to spend through the reclaim leaf.
    pub fn reclaim_sequence(&self) -> Sequence {
        Sequence::from_height(self.csv)
    }

    /// The sighash the user signs to reclaim input `input` through the script path.
    pub fn reclaim_sighash(
        &self,
        tx: &Transaction,
        input: usize,
        prevouts: &[TxOut],
    ) -> Result<[u8; 32], ScriptError> {
        let leaf_hash =
            bitcoin::TapLeafHash::from_script(&self.leaf_script(), LeafVersion::TapScript);
        SighashCache::new(tx)
            .taproot_script_spend_signature_hash(
                input,
                &Prevouts::All(prevouts),
                leaf_hash,
                TapSighashType::Default,
            )
            .map(|h| h.to_byte_array())
            .map_err(|e| ScriptError::Sighash { input, reason: e.to_string() })
    }

    /// The witness of a reclaim spend: signature, leaf script, control block.
    pub fn reclaim_witness(&self, sig: &schnorr::Signature) -> Witness {
        let mut witness = Witness::new();
        witness.push(sig.as_ref());
        witness.push(self.leaf_script().as_bytes());
        witness.push(self.control_block().serialize());
        witness
    }
}

/// `<xonly> OP_CHECKSIGVERIFY <csv> OP_CHECKSEQUENCEVERIFY`.
pub fn leaf_script(user: &XOnlyPublicKey, csv: u16) -> ScriptBuf {
    bitcoin::script::Builder::new()
        .push_x_only_key(user)
        .push_opcode(OP_CHECKSIGVERIFY)
        .push_int(i64::from(csv))
        .push_opcode(OP_CSV)
        .into_script()
}

/// The sighash of a Taproot key-path spend of input `input` (SIGHASH_DEFAULT).
pub fn key_spend_sighash(
    tx: &Transaction,
    input: usize,
    prevouts: &[TxOut],
) -> Result<[u8; 32], ScriptError> {
    SighashCache::new(tx)
        .taproot_key_spend_signature_hash(input, &Prevouts::All(prevouts), TapSighashType::Default)
        .map(|h| h.to_byte_array())
        .map_err(|e| ScriptError::Sighash { input, reason: e.to_string() })
}

/// The key-path sighashes of every input at once (one pass over the transaction-wide
/// hashes, instead of one per input).
pub fn key_spend_sighashes(
    tx: &Transaction,
    prevouts: &[TxOut],
) -> Result<Vec<[u8; 32]>, ScriptError> {
    let mut cache = SighashCache::new(tx);
    (0..tx.input.len())
        .map(|input| {
            cache
                .taproot_key_spend_signature_hash(
                    input,
                    &Prevouts::All(prevouts),
                    TapSighashType::Default,
                )
                .map(|h| h.to_byte_array())
                .map_err(|e| ScriptError::Sighash { input, reason: e.to_string() })
        })
        .collect()
}

/// The witness of a key-path spend with SIGHASH_DEFAULT: the 64-byte signature alone.
pub fn key_spend_witness(sig: &schnorr::Signature) -> Witness {
    Witness::from_slice(&[sig.as_ref()])
}

/// The zero-value pay-to-anchor output (`OP_1 0x4e73`) every tree node ends with.
pub fn anchor_output() -> TxOut {
    TxOut { value: Amount::ZERO, script_pubkey: ScriptBuf::new_p2a() }
}

/// A key-path-only P2TR scriptPubKey for a MuSig2 node or batch key.
pub fn p2tr_key_only(ctx: &KeyAggContext) -> ScriptBuf {
    ScriptBuf::new_p2tr_tweaked(TweakedPublicKey::dangerous_assume_tweaked(musig::output_key(ctx)))
}

/// The BIP-380 descriptor checksum of `desc`, or `None` for a character outside the set.
pub fn descriptor_checksum(desc: &str) -> Option<String> {
    const INPUT: &str = "0123456789()[],'/*abcdefgh@:$%{}IJKLMNOPQRSTUVWXYZ&+-.;<=>?!^_|~ijklmnopqrstuvwxyzABCDEFGH`#\"\\ ";
    const CHARS: &[u8] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
    fn polymod(c: u64, val: u64) -> u64 {
        let c0 = c >> 35;
        let mut c = ((c & 0x7_ffff_ffff) << 5) ^ val;
        for (bit, gen) in
            [0xf5_dee5_1989u64, 0xa9_fdca_3312, 0x1b_ab10_e32d, 0x37_06b1_677a, 0x64_4d62_6ffd]
                .iter()
                .enumerate()
        {
            if c0 & (1 << bit) != 0 {
                c ^= gen;
            }
        }
        c
    }
    let (mut c, mut cls, mut clscount) = (1u64, 0u64, 0);
    for ch in desc.chars() {
        let pos = INPUT.find(ch)? as u64;
        c = polymod(c, pos & 31);
        cls = cls * 3 + (pos >> 5);
        clscount += 1;
        if clscount == 3 {
            c = polymod(c, cls);
            cls = 0;
            clscount = 0;
        }
    }
    if clscount > 0 {
        c = polymod(c, cls);
    }
    for _ in 0..8 {
        c = polymod(c, 0);
    }
    c ^= 1;
    Some((0..8).map(|j| CHARS[((c >> (5 * (7 - j))) & 31) as usize] as char).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Keypair;
    use std::str::FromStr;

    fn keys() -> (Keypair, Keypair) {
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7);
        (Keypair::from_rng(&mut rng), Keypair::from_rng(&mut rng))
    }

    #[test]
    fn descriptor_checksum_matches_bip380_examples() {
        // Examples from BIP-380.
        assert_eq!(descriptor_checksum("raw(deadbeef)").as_deref(), Some("89f8spxm"));
        assert_eq!(
            descriptor_checksum("addr(mkmZxiEcEd8ZqjQWVZuC6so5dFMKEFpN2j)").as_deref(),
            Some("02wpgw69")
        );
        assert_eq!(descriptor_checksum("pk(é)"), None);
    }

    #[test]
    fn deposit_script_has_the_designed_shape() {
        let (u, c) = keys();
        let d = DepositScript::new(u.public, c.public, 14_400).unwrap();
        let leaf = d.leaf_script();
        let bytes = leaf.as_bytes();
        assert_eq!(bytes[0], 32, "x-only push");
        assert_eq!(&bytes[1..33], &u.xonly().serialize());
        assert_eq!(bytes[33], OP_CHECKSIGVERIFY.to_u8());
        assert_eq!(*bytes.last().unwrap(), OP_CSV.to_u8());
        // Internal key is the sorted aggregate, whatever the argument order.
        let swapped = musig::taproot_context(&[c.point, u.point], None).unwrap();
        assert_eq!(d.internal_key(), musig::internal_key(&swapped));
        // The address re-parses to the same script.
        let addr = d.address(Network::Regtest);
        assert!(addr.to_string().starts_with("bcrt1p"));
        let parsed = Address::from_str(&addr.to_string()).unwrap().assume_checked();
        assert_eq!(parsed.script_pubkey(), d.script_pubkey());
        // The signing context's output key is the address's output key.
        let ctx = d.signing_context().unwrap();
        assert_eq!(musig::output_key(&ctx), d.output_key().to_x_only_public_key());
        // Tweaking the kept aggregation is aggregating afresh with the tweak.
        assert_eq!(ctx, musig::taproot_context(&d.musig_keys(), Some(d.merkle_root())).unwrap());
        assert!(d.descriptor().starts_with("tr("));
        assert_eq!(d.descriptor().split('#').nth(1).map(str::len), Some(8));
    }

    /// The signing context takes its tweaked key from the spend info instead of
    /// multiplying: it must equal a fresh aggregation and tweak for every parity of the
    /// internal and the output key.
    #[test]
    fn signing_context_equals_a_fresh_tweak_for_every_parity() {
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(11);
        let mut seen = std::collections::BTreeSet::new();
        for csv in 1..=40u16 {
            let (u, c) = (Keypair::from_rng(&mut rng), Keypair::from_rng(&mut rng));
            let d = DepositScript::new(u.public, c.public, csv).unwrap();
            let ctx = d.signing_context().unwrap();
            let fresh = musig::taproot_context(&d.musig_keys(), Some(d.merkle_root())).unwrap();
            assert_eq!(ctx, fresh, "csv {csv}");
            let internal_odd = ctx.aggregated_pubkey_untweaked::<Point>().has_odd_y();
            seen.insert((internal_odd, d.spend_info().output_key_parity() == Parity::Odd));
        }
        assert_eq!(seen.len(), 4, "not every parity pair was tried: {seen:?}");
    }

    #[test]
    fn csv_bounds_are_enforced() {
        let (u, c) = keys();
        assert!(matches!(
            DepositScript::new(u.public, c.public, 28_801),
            Err(ScriptError::CsvOutOfRange { csv: 28_801, .. })
        ));
        assert!(DepositScript::new(u.public, c.public, 0).is_err());
        assert!(DepositScript::new(u.public, c.public, 28_800).is_ok());
        assert_eq!(DepositScript::new(u.public, u.public, 10), Err(ScriptError::SameKeys));
        assert!(DepositScript::virtual_deposit(u.public, c.public, 144).is_ok());
    }

    #[test]
    fn anchor_is_p2a() {
        let a = anchor_output();
        assert_eq!(a.script_pubkey.as_bytes(), &[0x51, 0x02, 0x4e, 0x73]);
        assert_eq!(a.value, Amount::ZERO);
    }
}
