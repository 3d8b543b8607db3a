//! The short fuzz run CI makes: every target (the round fuzzer aside: it has
//! `participant/tests/round_fuzz.rs`) over its committed corpus, its crash regressions, and
//! seeded mutations of both, with the same assertions as the libFuzzer binaries.
//!
//! Not coverage-guided: the mutations are libFuzzer's simplest kinds (bit flips, bytes set
//! to interesting values, insertions, deletions, copies, splices), drawn from a seed fixed
//! per target, so a failure repeats. Each target gets 5 to 20 s of inputs on this
//! project's 2-core machine (its count is beside its name below; a store target's input
//! writes and reads a SQLite file, so it gets far fewer), about a minute in all on two
//! test threads; `COHORT_FUZZ_SCALE` multiplies every count (`0.01` for a quick look, `10`
//! for a longer run). A failing input is written under the target directory's
//! `fuzz-replay/` and named in the panic, ready for `fuzz/regressions/<target>/`. The
//! long, coverage-guided runs are `scripts/fuzz.sh`.

use std::collections::BTreeSet;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use cohort_fuzz_checks::heap::Counting;
use cohort_fuzz_checks::targets::{Target, TARGETS};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[global_allocator]
static COUNTING: Counting = Counting;

/// Longest mutated input, in bytes (the seeds may be longer; they are never cut to it).
const MAX_MUTATED_LEN: usize = 1 << 16;

/// Bytes worth writing into a codec's input: bincode's varint markers (251 to 253 announce
/// a 2, 4 or 8-byte integer), boundaries, and lengths near the limits.
const INTERESTING: &[u8] = &[0, 1, 2, 0x7f, 0x80, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Every file under `fuzz/<kind>/<target>/`, sorted by name (an absent directory is empty).
fn files(kind: &str, target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = fuzz_dir().join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .map(|entry| {
            let path = entry.expect("a corpus directory lists").path();
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            (format!("{kind}/{target}/{}", path.file_name().unwrap_or_default().display()), bytes)
        })
        .collect();
    out.sort();
    out
}

/// One mutation of `seeds[pick]`: one to four edits, or a splice with another seed.
fn mutate(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seeds[rng.gen_range(0..seeds.len())].clone();
    for _ in 0..rng.gen_range(1..=4) {
        let len = data.len();
        let at = if len == 0 { 0 } else { rng.gen_range(0..len) };
        match rng.gen_range(0..8) {
            0 if len > 0 => data[at] ^= 1 << rng.gen_range(0..8),
            1 if len > 0 => data[at] = rng.gen(),
            2 if len > 0 => data[at] = INTERESTING[rng.gen_range(0..INTERESTING.len())],
            3 => {
                let n = rng.gen_range(1..=16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                data.splice(at..at, bytes);
            }
            4 if len > 0 => {
                let end = rng.gen_range(at..=len.min(at + 64));
                data.drain(at..end);
            }
            5 if len > 0 => {
                let end = rng.gen_range(at..=len.min(at + 64));
                let copy = data[at..end].to_vec();
                let to = rng.gen_range(0..=len);
                data.splice(to..to, copy);
            }
            6 => {
                let other = &seeds[rng.gen_range(0..seeds.len())];
                let from = if other.is_empty() { 0 } else { rng.gen_range(0..other.len()) };
                data.truncate(at);
                data.extend_from_slice(&other[from..]);
            }
            _ => data.truncate(at),
        }
        if data.len() > MAX_MUTATED_LEN.max(len) {
            data.truncate(MAX_MUTATED_LEN.max(len));
        }
    }
    data
}

/// Runs `target` on `input`; on a panic, keeps the input and fails naming it.
fn run_one(target: &Target, label: &str, input: &[u8]) {
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| (target.run)(input)));
    let Err(cause) = outcome else { return };
    let why = cause
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| cause.downcast_ref::<&str>().copied())
        .unwrap_or("(not a string)");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-replay").join(target.name);
    let kept = std::fs::create_dir_all(&dir)
        .and_then(|()| {
            let path = dir.join(format!("crash-{:016x}", fingerprint(input)));
            std::fs::write(&path, input).map(|()| path)
        })
        .map_or_else(|e| format!("(could not be written: {e})"), |p| p.display().to_string());
    panic!("{} failed on {label} ({} bytes, kept at {kept}): {why}", target.name, input.len());
}

/// FNV-1a of the input: a stable name for a kept crash.
fn fingerprint(input: &[u8]) -> u64 {
    input
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

/// `count` times `COHORT_FUZZ_SCALE` (default 1).
fn mutations(count: u32) -> u64 {
    let scale = match std::env::var("COHORT_FUZZ_SCALE") {
        Ok(text) => match text.parse::<f64>() {
            Ok(scale) if scale.is_finite() && scale >= 0.0 => scale,
            _ => panic!("COHORT_FUZZ_SCALE={text:?} is not a non-negative number"),
        },
        Err(_) => 1.0,
    };
    (f64::from(count) * scale).round() as u64
}

fn replay(name: &str, count: u32) {
    let target = TARGETS.iter().find(|t| t.name == name).expect("the target is listed");
    let corpus = files("corpus", name);
    assert!(!corpus.is_empty(), "fuzz/corpus/{name}/ holds no seed");
    let regressions = files("regressions", name);
    for (label, input) in corpus.iter().chain(&regressions) {
        run_one(target, label, input);
    }
    let seeds: Vec<Vec<u8>> = corpus.into_iter().chain(regressions).map(|(_, b)| b).collect();
    let mut rng = StdRng::seed_from_u64(fingerprint(name.as_bytes()));
    for i in 0..mutations(count) {
        let input = mutate(&mut rng, &seeds);
        run_one(target, &format!("mutation {i}"), &input);
    }
}

/// The committed seeds are what the `seeds` binary writes now: a message that changed
/// shape would otherwise leave the fuzzers starting from inputs that no longer decode.
#[test]
fn committed_seeds_are_what_the_seeds_binary_writes() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-seeds");
    let _ = std::fs::remove_dir_all(&out);
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_seeds"))
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("the seeds binary runs");
    assert!(status.success(), "seeds failed: {status}");
    let seeds_under = |root: &Path| -> BTreeSet<(String, Vec<u8>)> {
        let mut all = BTreeSet::new();
        for target in std::fs::read_dir(root).expect("a corpus root lists") {
            let target = target.expect("an entry").path();
            for file in std::fs::read_dir(&target).expect("a corpus directory lists") {
                let path = file.expect("an entry").path();
                let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
                if name.starts_with("seed-") {
                    let bytes = std::fs::read(&path).expect("a seed reads");
                    let target = target.file_name().unwrap_or_default().to_string_lossy();
                    all.insert((format!("{target}/{name}"), bytes));
                }
            }
        }
        all
    };
    let written = seeds_under(&out);
    let committed = seeds_under(&fuzz_dir().join("corpus"));
    // A seed missing on either side, or with other bytes, is on one side only.
    let differ: BTreeSet<&str> =
        written.symmetric_difference(&committed).map(|(name, _)| name.as_str()).collect();
    assert!(
        differ.is_empty(),
        "fuzz/corpus/ differs from the seeds binary's output in {differ:?}: run `cargo run \
         --release -p cohort-fuzz-checks --bin seeds` and commit the result"
    );
}

macro_rules! replay_tests {
    ($($name:ident: $count:expr,)*) => {
        $(
            #[test]
            fn $name() {
                replay(stringify!($name), $count);
            }
        )*

        /// The tests above, the target list, the corpus directories and the libFuzzer
        /// binaries name the same targets (plus `round`, which is not replayed here).
        #[test]
        fn every_target_is_replayed_and_built() {
            let tested: BTreeSet<&str> = [$(stringify!($name)),*].into_iter().collect();
            let listed: BTreeSet<&str> = TARGETS.iter().map(|t| t.name).collect();
            assert_eq!(tested, listed, "replay tests against TARGETS");
            let names = |dir: &str, strip: &str| -> BTreeSet<String> {
                std::fs::read_dir(fuzz_dir().join(dir))
                    .expect("the fuzz crate's directory lists")
                    .map(|e| e.expect("an entry").file_name().to_string_lossy().into_owned())
                    .filter_map(|n| n.strip_suffix(strip).map(str::to_owned))
                    .filter(|n| n != "round")
                    .collect()
            };
            let listed: BTreeSet<String> = listed.into_iter().map(str::to_owned).collect();
            assert_eq!(names("corpus", ""), listed, "fuzz/corpus/ against TARGETS");
            assert_eq!(names("fuzz_targets", ".rs"), listed, "fuzz/fuzz_targets/ against TARGETS");
        }
    };
}

replay_tests! {
    config_file: 1_000_000,
    coordinator_store: 16_000,
    coordinator_uri: 2_000_000,
    frame_header: 2_000_000,
    participant_store: 16_000,
    proposal_body: 1_000_000,
    side_request: 2_000_000,
    side_response: 2_000_000,
    to_coordinator: 800_000,
    to_participant: 1_600_000,
    wallet_coordinator: 400_000,
}
