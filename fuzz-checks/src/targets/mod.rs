//! Each fuzz target's body, a function of the input bytes: the cargo-fuzz binaries in
//! `fuzz/fuzz_targets/` call these, and the workspace test `fuzz-checks/tests/replay.rs`
//! runs them over the committed corpora, the crash regressions and mutations of both.
//!
//! A target reports a broken property by panicking. The round fuzzer is not here: it
//! drives the participant crate's test kit, and its workspace test is
//! `participant/tests/round_fuzz.rs`.

pub mod config_file;
pub mod coordinator_store;
pub mod coordinator_uri;
pub mod frame_header;
pub mod participant_store;
pub mod proposal_body;
pub mod side_request;
pub mod side_response;
pub mod to_coordinator;
pub mod to_participant;
pub mod wallet_coordinator;

/// One fuzz target: its name (its cargo-fuzz binary, and its directory under
/// `fuzz/corpus/` and `fuzz/regressions/`) and its body.
#[derive(Debug)]
pub struct Target {
    /// The name.
    pub name: &'static str,
    /// Runs one input; panics when a property breaks.
    pub run: fn(&[u8]),
}

/// Every target but the round fuzzer.
pub const TARGETS: &[Target] = &[
    Target { name: "config_file", run: config_file::run },
    Target { name: "coordinator_store", run: coordinator_store::run },
    Target { name: "coordinator_uri", run: coordinator_uri::run },
    Target { name: "frame_header", run: frame_header::run },
    Target { name: "participant_store", run: participant_store::run },
    Target { name: "proposal_body", run: proposal_body::run },
    Target { name: "side_request", run: side_request::run },
    Target { name: "side_response", run: side_response::run },
    Target { name: "to_coordinator", run: to_coordinator::run },
    Target { name: "to_participant", run: to_participant::run },
    Target { name: "wallet_coordinator", run: wallet_coordinator::run },
];
