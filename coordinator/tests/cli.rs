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
