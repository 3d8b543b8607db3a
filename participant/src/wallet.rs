//! The wallet: a random 32-byte seed in the store, the coordinator it was set up for, and
//! every key derived deterministically from the seed.
//!
//! # Derivation
//!
//! A key is `tagged_hash(tag, seed ‖ counter)` (BIP-340 tagged hash, `counter` as 4 bytes
//! big-endian) read as a secret key:
//!
//! - the static deposit key `U`: tag `cohort/deposit-key`, counter 0 (the next counter
//!   if the hash is not a valid secret key);
//! - the fee key (pays CPFP children and receives exits and reclaims): tag
//!   `cohort/fee-key`, counter 0 (same retry rule);
//! - leaf key `i` (the cosigner-free key of a remainder's virtual-deposit leaf): tag
//!   `cohort/leaf-key`, counter `i` from [`ParticipantStore::next_key_index`], so an index
//!   is never used twice; if the hash is not a valid secret key it is hashed again with the
//!   same tag until it is (probability about 2^-128 per step).

use bitcoin::secp256k1::{PublicKey, SecretKey};
use bitcoin::{Address, Network, ScriptBuf};
use cohort_common::exit::p2tr_single;
use cohort_common::keys::Keypair;
use cohort_common::messages::{tagged_hash, ServerInfo};
use cohort_common::scripts::{DepositScript, ScriptError};
use serde::{Deserialize, Serialize};

use crate::store::{ParticipantStore, StoreError};

/// Tag of the static deposit key.
pub const DEPOSIT_KEY_TAG: &str = "cohort/deposit-key";
/// Tag of the per-round leaf keys.
pub const LEAF_KEY_TAG: &str = "cohort/leaf-key";
/// Tag of the fee key.
pub const FEE_KEY_TAG: &str = "cohort/fee-key";
/// The settings key under which the coordinator is stored (JSON).
pub const COORDINATOR_SETTING: &str = "coordinator";

/// Errors loading, creating or using a wallet.
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    /// `init` was not run for this data directory.
    #[error("no wallet here yet: run `cohort init --coordinator URI` first")]
    NoSeed,
    /// A seed exists but no coordinator is remembered (an interrupted `init`).
    #[error("the wallet has no coordinator: run `cohort init --coordinator URI` again")]
    NoCoordinator,
    /// A wallet already exists; its seed is never overwritten.
    #[error("a wallet already exists in this data directory; refusing to overwrite its seed")]
    Exists,
    /// The stored coordinator setting does not decode.
    #[error("stored coordinator setting is damaged: {0}")]
    BadSetting(String),
    /// The coordinator's parameters do not make a valid script with our key.
    #[error("cannot build the deposit script: {0}")]
    Script(#[from] ScriptError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the wallet remembers of its coordinator (fetched with `SideRequest::Info`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinatorInfo {
    /// The `cohort://<pin>@host:port` URI it was reached at.
    pub uri: String,
    /// Its long-term key `C`.
    pub key: PublicKey,
    /// The network of its addresses.
    pub network: Network,
    /// The static address's reclaim timeout, in blocks.
    pub deposit_csv: u16,
    /// The virtual-deposit leaves' timeout, in blocks.
    pub exit_csv: u16,
    /// Whether it serves the dev chain endpoint.
    pub dev: bool,
    /// The dev chain's identity when the wallet was made (absent in older wallets).
    #[serde(default)]
    pub dev_chain: Option<[u8; 16]>,
}

impl CoordinatorInfo {
    /// The wallet's record of a coordinator from its URI and [`ServerInfo`].
    pub fn from_server(uri: &str, info: &ServerInfo) -> Self {
        CoordinatorInfo {
            uri: uri.to_owned(),
            key: info.coordinator_key,
            network: info.network,
            deposit_csv: info.deposit_csv,
            exit_csv: info.exit_csv,
            dev: info.dev,
            dev_chain: info.dev_chain,
        }
    }
}

/// An open wallet: the seed and its coordinator.
#[derive(Clone)]
pub struct Wallet {
    seed: [u8; 32],
    coordinator: CoordinatorInfo,
}

impl std::fmt::Debug for Wallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wallet").field("coordinator", &self.coordinator).finish_non_exhaustive()
    }
}

/// Reads a tagged hash as a secret key, hashing again while it is out of range.
fn key_from_hash(tag: &str, mut hash: [u8; 32]) -> Keypair {
    loop {
        if let Ok(sk) = SecretKey::from_slice(&hash) {
            return Keypair::from_secret(sk);
        }
        hash = tagged_hash(tag, &[&hash]);
    }
}

/// The first valid key of `tag` over `seed ‖ counter`, counting up from 0.
fn first_key(tag: &str, seed: &[u8; 32]) -> Keypair {
    let mut counter: u32 = 0;
    loop {
        let hash = tagged_hash(tag, &[seed, &counter.to_be_bytes()]);
        if let Ok(sk) = SecretKey::from_slice(&hash) {
            return Keypair::from_secret(sk);
        }
        // 2^32 consecutive invalid hashes cannot happen; wrap rather than panic.
        counter = counter.wrapping_add(1);
    }
}

impl Wallet {
    /// Creates a wallet in `store`: a fresh random seed (refused with
    /// [`WalletError::Exists`] if one is stored) and the coordinator to remember.
    pub fn create(
        store: &dyn ParticipantStore,
        coordinator: CoordinatorInfo,
    ) -> Result<Self, WalletError> {
        let mut seed = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
        Self::create_with_seed(store, seed, coordinator)
    }

    /// Like [`Wallet::create`] with a given seed (tests, restores).
    pub fn create_with_seed(
        store: &dyn ParticipantStore,
        seed: [u8; 32],
        coordinator: CoordinatorInfo,
    ) -> Result<Self, WalletError> {
        let wallet = Wallet { seed, coordinator };
        // Check the coordinator's parameters before writing anything.
        wallet.deposit_script()?;
        match store.init_seed(seed) {
            Ok(()) => {}
            Err(StoreError::SeedExists) => return Err(WalletError::Exists),
            Err(e) => return Err(e.into()),
        }
        wallet.remember_coordinator(store)?;
        Ok(wallet)
    }

    /// Opens the wallet kept in `store`.
    pub fn load(store: &dyn ParticipantStore) -> Result<Self, WalletError> {
        let seed = store.seed()?.ok_or(WalletError::NoSeed)?;
        let text = store.setting(COORDINATOR_SETTING)?.ok_or(WalletError::NoCoordinator)?;
        let coordinator: CoordinatorInfo =
            serde_json::from_str(&text).map_err(|e| WalletError::BadSetting(e.to_string()))?;
        Ok(Wallet { seed, coordinator })
    }

    fn remember_coordinator(&self, store: &dyn ParticipantStore) -> Result<(), WalletError> {
        let text = serde_json::to_string(&self.coordinator)
            .map_err(|e| WalletError::BadSetting(e.to_string()))?;
        store.set_setting(COORDINATOR_SETTING, &text)?;
        Ok(())
    }

    /// The coordinator this wallet was set up for.
    pub fn coordinator(&self) -> &CoordinatorInfo {
        &self.coordinator
    }

    /// The static deposit key `U`.
    pub fn deposit_key(&self) -> Keypair {
        first_key(DEPOSIT_KEY_TAG, &self.seed)
    }

    /// The fee key: pays CPFP children, receives exits and reclaims.
    pub fn fee_key(&self) -> Keypair {
        first_key(FEE_KEY_TAG, &self.seed)
    }

    /// The fee key's key-path-only P2TR script.
    pub fn fee_script(&self) -> ScriptBuf {
        p2tr_single(&self.fee_key())
    }

    /// Leaf key number `index`.
    pub fn leaf_key(&self, index: u32) -> Keypair {
        key_from_hash(LEAF_KEY_TAG, tagged_hash(LEAF_KEY_TAG, &[&self.seed, &index.to_be_bytes()]))
    }

    /// The static deposit script `DepositScript(U, C, deposit_csv)`.
    pub fn deposit_script(&self) -> Result<DepositScript, WalletError> {
        Ok(DepositScript::new(
            self.deposit_key().public,
            self.coordinator.key,
            self.coordinator.deposit_csv,
        )?)
    }

    /// The static deposit address on the coordinator's network.
    pub fn address(&self) -> Result<Address, WalletError> {
        Ok(self.deposit_script()?.address(self.coordinator.network))
    }

    /// The static deposit address's output descriptor.
    pub fn descriptor(&self) -> Result<String, WalletError> {
        Ok(self.deposit_script()?.descriptor())
    }

    /// The virtual-deposit script a remainder leaf with leaf key `index` pays.
    pub fn leaf_script(&self, index: u32) -> Result<DepositScript, WalletError> {
        Ok(DepositScript::virtual_deposit(
            self.leaf_key(index).public,
            self.coordinator.key,
            self.coordinator.exit_csv,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn info() -> CoordinatorInfo {
        CoordinatorInfo {
            uri: "cohort://00@localhost:1".into(),
            key: Keypair::from_secret(SecretKey::from_slice(&[9; 32]).unwrap()).public,
            network: Network::Regtest,
            deposit_csv: 100,
            exit_csv: 10,
            dev: true,
            dev_chain: Some([5; 16]),
        }
    }

    #[test]
    fn keys_are_deterministic_and_distinct() {
        let a = Wallet::create_with_seed(&MemoryStore::new(), [1; 32], info()).unwrap();
        let b = Wallet::create_with_seed(&MemoryStore::new(), [1; 32], info()).unwrap();
        let c = Wallet::create_with_seed(&MemoryStore::new(), [2; 32], info()).unwrap();
        assert_eq!(a.deposit_key().public, b.deposit_key().public);
        assert_eq!(a.leaf_key(3).public, b.leaf_key(3).public);
        assert_ne!(a.deposit_key().public, c.deposit_key().public);
        let keys = [a.deposit_key(), a.fee_key(), a.leaf_key(0), a.leaf_key(1)];
        for (i, x) in keys.iter().enumerate() {
            for y in &keys[i + 1..] {
                assert_ne!(x.public, y.public);
            }
        }
        // The documented derivation.
        let expected = SecretKey::from_slice(&tagged_hash(
            DEPOSIT_KEY_TAG,
            &[&[1u8; 32], &0u32.to_be_bytes()],
        ))
        .unwrap();
        assert_eq!(a.deposit_key().secret, expected);
        assert_eq!(a.address().unwrap(), b.address().unwrap());
        assert!(a.descriptor().unwrap().starts_with("tr("));
        assert!(a.address().unwrap().to_string().starts_with("bcrt1p"));
    }

    #[test]
    fn create_refuses_to_overwrite_and_load_finds_it() {
        let store = MemoryStore::new();
        assert!(matches!(Wallet::load(&store), Err(WalletError::NoSeed)));
        let w = Wallet::create(&store, info()).unwrap();
        assert!(matches!(Wallet::create(&store, info()), Err(WalletError::Exists)));
        let loaded = Wallet::load(&store).unwrap();
        assert_eq!(loaded.coordinator(), &info());
        assert_eq!(loaded.deposit_key().public, w.deposit_key().public);
    }

    #[test]
    fn bad_coordinator_parameters_write_nothing() {
        let store = MemoryStore::new();
        let mut bad = info();
        bad.deposit_csv = 0;
        assert!(matches!(Wallet::create(&store, bad), Err(WalletError::Script(_))));
        assert_eq!(store.seed().unwrap(), None);
        store.set_setting(COORDINATOR_SETTING, "{not json").unwrap();
        store.init_seed([1; 32]).unwrap();
        assert!(matches!(Wallet::load(&store), Err(WalletError::BadSetting(_))));
    }

    #[test]
    fn leaf_script_is_a_virtual_deposit_of_the_leaf_key() {
        let w = Wallet::create_with_seed(&MemoryStore::new(), [5; 32], info()).unwrap();
        let s = w.leaf_script(7).unwrap();
        assert_eq!(s.user(), w.leaf_key(7).public);
        assert_eq!(s.csv(), 10);
        assert_ne!(s.script_pubkey(), w.leaf_script(8).unwrap().script_pubkey());
    }
}
