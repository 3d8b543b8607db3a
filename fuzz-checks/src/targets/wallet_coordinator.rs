//! Fuzzes the participant wallet's only parser of stored text: the coordinator setting
//! (JSON of `CoordinatorInfo`) that [`Wallet::load`] reads from the wallet's store. The
//! participant has no other config file; the seed is covered by `participant_store`.
//!
//! Asserts: loading never panics, it fails with `BadSetting` exactly when the text is not
//! a `CoordinatorInfo`, and a wallet that loads can derive its keys, deposit script,
//! address, descriptor and leaf scripts without panicking; its coordinator written back as
//! JSON reads back the same.

use cohort_participant::store::{MemoryStore, ParticipantStore};
use cohort_participant::wallet::{CoordinatorInfo, Wallet, WalletError, COORDINATOR_SETTING};

/// Runs one input.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let store = MemoryStore::new();
    store.init_seed([7; 32]).expect("a fresh store takes a seed");
    store.set_setting(COORDINATOR_SETTING, text).expect("a memory store keeps settings");
    let parsed = serde_json::from_str::<CoordinatorInfo>(text);
    let wallet = match Wallet::load(&store) {
        Ok(wallet) => wallet,
        Err(WalletError::BadSetting(_)) => {
            assert!(parsed.is_err(), "a valid setting was refused");
            return;
        }
        Err(other) => panic!("unexpected error {other}"),
    };
    assert_eq!(parsed.ok().as_ref(), Some(wallet.coordinator()));

    let _ = (wallet.deposit_key(), wallet.fee_key(), wallet.fee_script(), wallet.leaf_key(0));
    let _ = (wallet.deposit_script(), wallet.address(), wallet.descriptor());
    let _ = (wallet.leaf_script(0), wallet.leaf_script(u32::MAX));

    let json = serde_json::to_string(wallet.coordinator()).expect("a coordinator encodes");
    let back: CoordinatorInfo = serde_json::from_str(&json).expect("its own JSON parses");
    assert_eq!(&back, wallet.coordinator(), "JSON round trip changed the coordinator");
}
