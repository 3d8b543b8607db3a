//! `cohort-sim sweep` end to end at small sizes: the table, the CSV, the JSON and the
//! plots hold one row or point per size, and bad arguments are refused before any run.

// Helpers outside #[test] functions are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `cohort-sim` with `args`.
fn sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cohort-sim"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("cohort-sim runs")
}

/// Runs `cohort-sim` with `args`, which must fail, and returns its stderr.
fn refused(args: &[&str]) -> String {
    let out = sim(args);
    assert!(!out.status.success(), "cohort-sim {args:?} should be refused");
    String::from_utf8(out.stderr).expect("utf-8 error")
}

/// A fresh, empty temporary directory for this test.
fn temp_dir(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("cohort-sim-sweep-{}-{name}", std::process::id()));
    std::fs::remove_dir_all(&path).ok();
    std::fs::create_dir_all(&path).expect("temp dir");
    path
}

/// Runs a sweep of `sizes` into `out`, which must succeed.
fn sweep(sizes: &str, out: &Path) {
    let out_arg = out.display().to_string();
    let result = sim(&["sweep", "--users", sizes, "--seed", "3", "--out", &out_arg]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "the sweep failed: {stderr}");
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The rows of the Markdown tables that start with `users` (both tables).
fn rows_for(md: &str, users: &str) -> usize {
    md.lines().filter(|l| l.starts_with(&format!("| {users} |"))).count()
}

#[test]
fn a_sweep_writes_one_row_and_one_point_per_size() {
    let out = temp_dir("two");
    sweep("20,40", &out);

    let md = read(&out.join("SCALING.md"));
    assert_eq!(rows_for(&md, "20"), 2, "{md}");
    assert_eq!(rows_for(&md, "40"), 2, "{md}");
    assert!(md.contains("cohort-sim sweep --users 20,40 --seed 3"), "the command is cited");
    assert!(md.contains("logical CPUs") && md.contains("(UTC)"), "machine and date");

    let csv = read(&out.join("figures/scaling.csv"));
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let rows: Vec<Vec<f64>> =
        lines.map(|l| l.split(',').map(|v| v.parse().expect("a number")).collect()).collect();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0][0], rows[1][0]), (20.0, 40.0));
    for row in &rows {
        assert_eq!(row.len(), header.len());
        for column in [
            "completed",
            "batches",
            "exit_depth",
            "wall_ms",
            "coordinator_cpu_ms_per_user",
            "participant_cpu_ms_per_user",
            "bytes_to_participant_per_user",
            "bytes_from_participant_per_user",
            "peak_rss_bytes_per_user",
            "funding_vbytes_per_user",
        ] {
            let at = header.iter().position(|h| *h == column).expect(column);
            assert!(row[at] > 0.0, "{column} is {} in {row:?}", row[at]);
        }
        assert_eq!(row[1], row[0], "every user completed");
    }

    let json: serde_json::Value =
        serde_json::from_str(&read(&out.join("figures/scaling.json"))).expect("json");
    let users: Vec<u64> = json["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["users"].as_u64().expect("users"))
        .collect();
    assert_eq!(users, [20, 40]);

    // A point per size on every line: one line of memory, two of bytes.
    for (file, lines) in [("scaling-memory.svg", 1), ("scaling-bytes.svg", 2)] {
        let svg = read(&out.join("figures").join(file));
        assert!(svg.starts_with("<svg") && svg.contains("<text"), "{file}");
        assert_eq!(svg.matches("<circle").count(), 2 * lines, "{file}");
    }
    for file in ["scaling-wall.svg", "scaling-cpu.svg"] {
        let svg = read(&out.join("figures").join(file));
        assert!(svg.contains("<text") && svg.contains("users"), "{file}");
        assert!(svg.matches("<circle").count() >= 2, "{file}");
    }
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn a_new_sweep_keeps_the_notes_and_replaces_the_rest() {
    let out = temp_dir("notes");
    sweep("20,40", &out);
    let md = read(&out.join("SCALING.md"));
    let notes = "## Notes\n\nThe second run was on a busy machine.\n";
    let at = md.find("\n## Notes\n").expect("a notes section");
    std::fs::write(out.join("SCALING.md"), format!("{}\n{notes}", &md[..at])).expect("write");

    sweep("30", &out);
    let md = read(&out.join("SCALING.md"));
    assert!(md.ends_with(notes), "{md}");
    assert_eq!(rows_for(&md, "20"), 0);
    assert_eq!(rows_for(&md, "30"), 2);
    let csv = read(&out.join("figures/scaling.csv"));
    assert_eq!(csv.lines().count(), 2, "{csv}");
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn bad_sizes_are_refused_before_any_run() {
    let out = temp_dir("sizes");
    let out_arg = out.display().to_string();
    for (sizes, says) in [
        ("", "--users"),
        ("0", "--users 0: a round needs at least 1 user"),
        ("20,0", "--users 0: a round needs at least 1 user"),
        ("40,20", "strictly increasing: 20 comes after 40"),
        ("20,20", "strictly increasing: 20 comes after 20"),
        ("20,x", "--users"),
        ("-5", "--users"),
    ] {
        let message = refused(&["sweep", &format!("--users={sizes}"), "--out", &out_arg]);
        assert!(message.contains(says), "--users {sizes:?}: {message}");
    }
    assert!(!out.join("SCALING.md").exists(), "nothing ran");
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn an_output_directory_that_cannot_take_the_results_is_refused() {
    let dir = temp_dir("out");
    let missing = dir.join("no-such-dir").display().to_string();
    let message = refused(&["sweep", "--users", "20", "--out", &missing]);
    assert!(message.contains(&format!("--out {missing} does not exist")), "{message}");

    let file = dir.join("a-file");
    std::fs::write(&file, "not a directory").expect("file");
    let file = file.display().to_string();
    let message = refused(&["sweep", "--users", "20", "--out", &file]);
    assert!(message.contains(&format!("--out {file} is not a directory")), "{message}");

    let blocked = dir.join("blocked");
    std::fs::create_dir_all(&blocked).expect("dir");
    std::fs::write(blocked.join("figures"), "a file where figures/ goes").expect("file");
    let blocked = blocked.display().to_string();
    let message = refused(&["sweep", "--users", "20", "--out", &blocked]);
    assert!(message.contains("figures is not a directory"), "{message}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn single_run_options_are_refused_with_the_sweep() {
    // Options of the single run would do nothing for the sweep: clap refuses them.
    for argv in [
        &["--users", "20", "sweep"][..],
        &["--faults", "0.1", "sweep"],
        &["sweep", "--faults", "0.1"],
        &["sweep", "--json", "r.json"],
        &["sweep", "--transport", "quic"],
    ] {
        let message = refused(argv);
        assert!(message.contains("error:"), "{argv:?}: {message}");
    }
}
