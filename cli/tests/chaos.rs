//! `keel chaos`: the runner's table, in simulation and against real
//! processes (SIGKILL / SIGSTOP faults).

use std::process::Command;

/// Runs `keel chaos` with `args`. Unless the test names its own `--out`,
/// failing histories go to a temporary directory, never into the source tree.
fn chaos(args: &[&str]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let default_out = dir.path().join("failures.jsonl");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keel"));
    cmd.arg("chaos").args(args);
    if !args.contains(&"--out") {
        cmd.arg("--out").arg(&default_out);
    }
    let out = cmd.output().expect("run keel chaos");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn rows(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| seed"))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

#[test]
fn simulated_seeds_print_a_passing_table() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fail.jsonl");
    let (ok, stdout, stderr) = chaos(&[
        "--seeds",
        "2",
        "--first-seed",
        "7",
        "--ops",
        "200",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    let rows = rows(&stdout);
    assert_eq!(rows.len(), 2, "{stdout}");
    for r in &rows {
        assert_eq!(&r[3..7], ["pass", "pass", "pass", "pass"], "{stdout}");
        assert!(
            r[2].parse::<usize>().unwrap() > 0,
            "faults were injected: {stdout}"
        );
    }
    assert!(stdout.contains("2 seeds, 0 failed"), "{stdout}");
    assert!(!out.exists(), "no failing history written");
}

#[test]
fn real_processes_under_kill_and_pause() {
    let (ok, stdout, stderr) = chaos(&[
        "--real",
        "--seeds",
        "1",
        "--ops",
        "400",
        "--process-faults",
        "kill,pause",
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    let rows = rows(&stdout);
    assert_eq!(rows.len(), 1, "{stdout}");
    assert_eq!(&rows[0][3..7], ["pass", "pass", "pass", "pass"], "{stdout}");
}

/// Two-way partitions between real processes: every ordered link between
/// replicas can be cut at its peer proxy.
#[test]
fn real_processes_under_partitions() {
    let (ok, stdout, stderr) = chaos(&[
        "--real",
        "--seeds",
        "1",
        "--first-seed",
        "3",
        "--ops",
        "400",
        "--process-faults",
        "isolate,isolate-leader,partition,bridge",
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    let rows = rows(&stdout);
    assert_eq!(rows.len(), 1, "{stdout}");
    assert_eq!(&rows[0][3..7], ["pass", "pass", "pass", "pass"], "{stdout}");
    assert!(rows[0][2].parse::<usize>().unwrap() > 0, "{stdout}");
}

#[test]
fn bad_flags_are_rejected() {
    let (ok, _, stderr) = chaos(&["--replicas", "4"]);
    assert!(!ok);
    assert!(stderr.contains("--replicas must be 3 or 5"), "{stderr}");
    let (ok, _, stderr) = chaos(&["--faults", "meteor"]);
    assert!(!ok);
    assert!(stderr.contains("unknown fault"), "{stderr}");
}
