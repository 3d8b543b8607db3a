//! Writes the seed corpora under `fuzz/corpus/<target>/` (or under the directory given
//! as its argument): a few valid encodings per target, made from the real values in
//! [`cohort_fuzz_checks::samples`].
//!
//! `cargo run --release -p cohort-fuzz-checks --bin seeds`. Existing seed files are
//! overwritten; nothing else in the directories is touched. The replay test
//! (`tests/replay.rs`) fails when the committed seeds are not what this writes.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use cohort_common::bitcoin::Network;
use cohort_common::codec::{self, FrameDecoder};
use cohort_common::messages::ToParticipant;
use cohort_common::params::TreeParams;
use cohort_coordinator::config_file::commented_default;
use cohort_fuzz_checks::samples::{self, key};
use cohort_participant::wallet::CoordinatorInfo;
use cohort_transport::CoordinatorUri;
use serde::Serialize;

// The round target's harness and the test kit it drives, included by path as the target
// includes them (they name the session's types through `super::`); only the harness's
// seed schedules are used here.
#[allow(unused_imports)]
use cohort_participant::session::{
    Event, ExitPath, OwnedDeposit, PhaseName, ProposalError, Randomness, Session, SessionConfig,
    SessionError, SharedCaches, BODY_DECODE_LIMIT,
};

// (The test kit allows its own dead code.)
#[path = "../../../participant/src/session/testkit.rs"]
mod testkit;

#[allow(dead_code)]
#[path = "../../../participant/src/session/roundfuzz.rs"]
mod roundfuzz;

/// Writes one seed file.
fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) -> io::Result<()> {
    let dir = dir.join(target);
    fs::create_dir_all(&dir)?;
    fs::write(dir.join(format!("seed-{name}")), bytes)
}

/// Writes the body encoding of each named value.
fn write_all<T: Serialize>(dir: &Path, target: &str, values: &[(&str, T)]) -> io::Result<()> {
    for (name, value) in values {
        let bytes = codec::encode(value).map_err(io::Error::other)?;
        write(dir, target, name, &bytes)?;
    }
    Ok(())
}

/// Frame-layer seeds: `max_frame`, then a stream of whole frames (and one cut short).
fn frame_seeds(dir: &Path) -> io::Result<()> {
    let max_frame: u32 = 1 << 16;
    let mut stream = max_frame.to_be_bytes().to_vec();
    for (_, msg) in samples::to_participant().iter().take(4) {
        stream.extend(codec::encode_frame(msg, max_frame).map_err(io::Error::other)?);
    }
    write(dir, "frame_header", "frames", &stream)?;
    stream.truncate(stream.len() - 3);
    write(dir, "frame_header", "cut-frame", &stream)?;
    // A header above max_frame: refused after its 4 bytes.
    let mut oversize = 16u32.to_be_bytes().to_vec();
    oversize.extend(17u32.to_be_bytes());
    oversize.extend([0; 17]);
    write(dir, "frame_header", "oversize", &oversize)?;
    // Sanity: the stream seed really is frames.
    let mut decoder = FrameDecoder::new(max_frame);
    decoder.push(&stream[4..]);
    decoder.next_frame().map_err(io::Error::other)?;
    Ok(())
}

fn uri_seeds(dir: &Path) -> io::Result<()> {
    let uris = [
        ("ipv4", CoordinatorUri { pin: [0xab; 32], host: "127.0.0.1".into(), port: 4433 }),
        ("ipv6", CoordinatorUri { pin: [0x01; 32], host: "::1".into(), port: 1 }),
        (
            "name",
            CoordinatorUri { pin: [0x5c; 32], host: "coordinator.example".into(), port: 65535 },
        ),
    ];
    for (name, uri) in uris {
        write(dir, "coordinator_uri", name, uri.to_string().as_bytes())?;
    }
    Ok(())
}

fn wallet_seeds(dir: &Path) -> io::Result<()> {
    for (name, network, dev) in
        [("regtest", Network::Regtest, true), ("mainnet", Network::Bitcoin, false)]
    {
        let info = CoordinatorInfo {
            uri: format!("cohort://{}@127.0.0.1:4433", "ab".repeat(32)),
            key: key(1).public,
            network,
            deposit_csv: 1_008,
            exit_csv: 144,
            dev,
            dev_chain: dev.then_some([3; 16]),
        };
        let json = serde_json::to_string(&info).map_err(io::Error::other)?;
        write(dir, "wallet_coordinator", name, json.as_bytes())?;
    }
    Ok(())
}

/// The coordinator's configuration: the commented default, a dev file, and a bitcoind file
/// with environment overrides after the NUL (`config_file`'s input layout).
fn config_seeds(dir: &Path) -> io::Result<()> {
    let default = commented_default().map_err(io::Error::other)?;
    write(dir, "config_file", "commented-default", default.as_bytes())?;
    write(dir, "config_file", "dev", b"dev = true\nlisten = \"127.0.0.1:0\"\nradix = 4\n")?;
    let bitcoind = "chain = \"bitcoind\"\nnetwork = \"signet\"\nbitcoind_cookie = \"/c\"\n\0\
                    MAX_BATCH_WEIGHT=50000\nCOHORT_COORDINATOR_METRICS_LISTEN=\"127.0.0.1:9464\"\n";
    write(dir, "config_file", "bitcoind-env", bitcoind.as_bytes())
}

fn proposal_seeds(dir: &Path) -> io::Result<()> {
    let body = samples::proposal_body();
    let mut deep = body.clone();
    deep.tree = TreeParams { radix: 2, max_depth: 3 };
    let mut no_shape = body.clone();
    no_shape.tree = TreeParams { radix: 1, max_depth: 1 };
    write_all(dir, "proposal_body", &[("default", body), ("deep", deep), ("no-shape", no_shape)])
}

fn main() -> io::Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus"));
    write_all(&dir, "to_coordinator", &samples::to_coordinator())?;
    write_all(&dir, "to_participant", &samples::to_participant())?;
    write_all(&dir, "side_request", &samples::side_requests())?;
    write_all(&dir, "side_response", &samples::side_responses())?;
    proposal_seeds(&dir)?;
    frame_seeds(&dir)?;
    uri_seeds(&dir)?;
    wallet_seeds(&dir)?;
    config_seeds(&dir)?;
    // The store targets' input is a list of damages; no damage reads the valid store.
    write(&dir, "coordinator_store", "no-damage", &[])?;
    write(&dir, "participant_store", "no-damage", &[])?;
    // The round target's input is a schedule of faults (`roundfuzz::op`).
    for (name, schedule) in roundfuzz::seed_schedules() {
        write(&dir, "round", &name, &schedule)?;
    }
    let proposal = samples::to_participant().into_iter().find_map(|(_, m)| match m {
        ToParticipant::Proposal(p) => Some(p),
        _ => None,
    });
    println!(
        "seeds written under {} (proposal body of {} bytes)",
        dir.display(),
        proposal.map_or(0, |p| p.body.len())
    );
    Ok(())
}
