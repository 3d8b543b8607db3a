//! The `cohort-coordinator` binary as an operator meets it: a bad setting is refused by
//! its key before anything is written, a taken port is reported before a first run writes
//! its key, and SIGTERM shuts it down as cleanly as Ctrl-C.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_cohort-coordinator");

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cohort-coord-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("run").args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn a_bad_setting_is_refused_by_its_key_and_nothing_is_written() {
    let dir = scratch("bad");
    let data = dir.display().to_string();
    let base = ["--dev", "--data-dir", &data, "--listen", "127.0.0.1:0"];
    let out = run(&base, &[("COHORT_COORDINATOR_MAX_ATTEMPTS", "0")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_attempts = 0 is out of range: allowed 1..=100"), "{err}");
    let out = run(&base, &[("COHORT_COORDINATOR_ROUND_INTERVAL_SECS", "0")]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("round_interval_secs = 0"));
    let out = run(&base, &[("COHORT_COORDINATOR_NO_SUCH_KEY", "1")]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("COHORT_COORDINATOR_NO_SUCH_KEY"));
    assert!(!dir.exists(), "a refused configuration wrote {}", dir.display());
}

#[test]
fn a_taken_port_is_reported_before_the_key_is_written() {
    let dir = scratch("port");
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let data = dir.display().to_string();
    let out = run(&["--dev", "--data-dir", &data, "--listen", &listen], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on {listen}")), "{err}");
    assert!(!dir.join("coordinator.key").exists());
}

#[cfg(unix)]
#[test]
fn sigterm_shuts_down_cleanly() {
    let dir = scratch("term");
    let data = dir.display().to_string();
    let mut child = Command::new(BIN)
        .args(["run", "--dev", "--data-dir", &data, "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("coordinator listening: cohort://"), "{line}");
    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "{status:?}: {err}");
    assert!(err.contains("shutting down") && err.contains("SIGTERM"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn json_logs_are_one_object_per_line_with_stable_fields() {
    let dir = scratch("json");
    let data = dir.display().to_string();
    let mut child = Command::new(BIN)
        .args(["--log-format", "json", "run", "--dev", "--data-dir", &data])
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    assert!(child.wait().unwrap().success());
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let events: Vec<serde_json::Value> =
        err.lines().map(|l| serde_json::from_str(l).expect("a JSON object per line")).collect();
    let started = events
        .iter()
        .find(|e| e["fields"]["message"] == "round started")
        .unwrap_or_else(|| panic!("no round start in {err}"));
    assert_eq!(started["level"], "INFO");
    assert_eq!(started["fields"]["round"], 1);
    assert!(started["timestamp"].is_string() && started["target"].is_string());
    assert!(events.iter().any(|e| e["fields"]["signal"] == "SIGTERM"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts `run --dev` on a fresh data directory with `env` settings; returns the child and
/// the URI it printed.
fn start(dir: &std::path::Path, env: &[(&str, &str)]) -> (std::process::Child, String) {
    let data = dir.display().to_string();
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--dev", "--data-dir", &data, "--listen", "127.0.0.1:0"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let uri = line.trim().strip_prefix("coordinator listening: ").expect("start line").to_owned();
    (child, uri)
}

/// `cohort-coordinator admin --data-dir DIR ARGS...`.
fn admin(dir: &std::path::Path, args: &[&str]) -> Output {
    let data = dir.display().to_string();
    Command::new(BIN).args(["admin", "--data-dir", &data]).args(args).output().unwrap()
}

fn stderr_of(mut child: std::process::Child) -> (std::process::ExitStatus, String) {
    let status = child.wait().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (status, err)
}

#[cfg(unix)]
#[test]
fn admin_commands_answer_over_the_socket_and_drain_exits_cleanly() {
    let dir = scratch("admin");
    let (child, _) = start(&dir, &[]);
    let out = admin(&dir, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("round        1: taking registrations"), "{text}");
    assert!(text.contains("mode         running"), "{text}");

    let out = admin(&dir, &["--json", "pause"]);
    assert!(out.status.success(), "{out:?}");
    let out = admin(&dir, &["--json", "status"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["kind"], "status");
    assert_eq!(status["body"]["mode"], "paused");
    assert_eq!(status["body"]["round"], 1);
    assert!(admin(&dir, &["resume"]).status.success());
    let out = admin(&dir, &["bans"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no deposit is banned"));
    let free = format!("{}:0", "11".repeat(32));
    let out = admin(&dir, &["unban", &free]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("is not banned"));
    let out = admin(&dir, &["batch", "1"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("ROUND:BATCH"));
    let out = admin(&dir, &["rounds"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("registering"), "{out:?}");

    let picture = dir.join("round1.svg");
    let out = admin(&dir, &["round", "1", "--timeline", picture.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let svg = std::fs::read_to_string(&picture).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("Cohort round 1"), "{svg}");
    let out = admin(&dir, &["round", "9", "--timeline", picture.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("not kept"), "{out:?}");

    // Nobody registered: the drain closes the empty round and the process ends at once.
    let out = admin(&dir, &["drain"]);
    assert!(out.status.success(), "{out:?}");
    let (status, err) = stderr_of(child);
    assert!(status.success(), "{status:?}: {err}");
    assert!(err.contains("drained"), "{err}");
    assert!(!dir.join("admin.sock").exists(), "the socket outlived the process");
    let out = admin(&dir, &["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no coordinator answers"), "{out:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGTERM while a batch is being signed: the batch finishes (both participants see it
/// confirmed), then the process exits 0.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_during_a_round_lets_its_batch_finish_then_exits() {
    use std::ops::ControlFlow;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use cohort_participant::cli::{self, Context};
    use cohort_participant::driver::{Outcome, Progress};

    let dir = scratch("drain");
    let env = [
        ("COHORT_COORDINATOR_MAX_REGISTRATIONS", "2"),
        ("COHORT_COORDINATOR_REGISTRATION_WINDOW_SECS", "120"),
    ];
    let (child, uri) = start(&dir, &env);
    let pid = child.id().to_string();
    let mut wallets = Vec::new();
    for name in ["a", "b"] {
        let ctx = Context::new(dir.join(name));
        cli::init(&ctx, &uri).await.unwrap();
        cli::dev_fund(&ctx, bitcoin::Amount::from_sat(300_000)).await.unwrap();
        wallets.push(ctx);
    }
    let sent = Arc::new(AtomicBool::new(false));
    let join = |ctx: &Context| {
        let sent = sent.clone();
        let pid = pid.clone();
        let ctx = ctx.clone();
        async move {
            cli::join(&ctx, &cli::JoinArgs::default(), move |p| {
                if matches!(p, Progress::TreeSigned { .. }) && !sent.swap(true, Ordering::SeqCst) {
                    let kill = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
                    assert!(kill.success());
                }
                ControlFlow::Continue(())
            })
            .await
        }
    };
    let (ra, rb) = tokio::join!(join(&wallets[0]), join(&wallets[1]));
    for r in [ra, rb] {
        let r = r.unwrap();
        assert!(matches!(r.outcome, Outcome::Confirmed { .. }), "{:?}", r.outcome);
    }
    assert!(sent.load(Ordering::SeqCst));
    let (status, err) = tokio::task::spawn_blocking(move || stderr_of(child)).await.unwrap();
    assert!(status.success(), "{status:?}: {err}");
    assert!(err.contains("draining before shutdown") && err.contains("drained"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
