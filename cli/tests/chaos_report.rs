//! `keel chaos --report DIR` and `keel chaos report FILE`: the HTML report,
//! checked as text and, when Debian's `chromium` is installed, as the DOM a
//! real browser builds from it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn keel(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(args)
        .output()
        .expect("run keel");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The DOM headless Chromium builds from `file` (scripts run), or `None`
/// with a printed reason when Chromium is not installed.
fn browser_dom(file: &Path, profile: &Path) -> Option<String> {
    let Some(bin) = ["chromium", "chromium-browser"].into_iter().find(|b| {
        Command::new(b)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }) else {
        eprintln!("SKIP browser check: chromium is not installed (apt-get install -y chromium)");
        return None;
    };
    let child = Command::new(bin)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("file://{}", file.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let pid = child.id();
    // Read the DOM while Chromium writes it (it is larger than a pipe's
    // buffer), on a thread so a hung browser fails the test instead of it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(out) => out.expect("chromium output"),
        Err(_) => {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            panic!("chromium did not finish loading the report within 30 s");
        }
    };
    assert!(out.status.success(), "chromium failed: {:?}", out.status);
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The acceptance run, shrunk to one seed: with stale reads injected, seed
/// 101 fails linearizability, and the report shows where and which ops.
#[test]
fn injected_bug_shows_the_failing_window_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("out");
    let fails = dir.path().join("fails.jsonl");
    let (ok, stdout, stderr) = keel(&[
        "chaos",
        "--seeds",
        "1",
        "--first-seed",
        "101",
        "--ops",
        "300",
        "--inject-bug",
        "stale-reads",
        "--report",
        report.to_str().unwrap(),
        "--out",
        fails.to_str().unwrap(),
    ]);
    assert!(
        !ok,
        "the injected bug must fail the run\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("report: "), "{stdout}");
    let file = report.join("index.html");
    let html = std::fs::read_to_string(&file).expect("report written");
    assert!(html.contains("id=\"seed-101\" data-passed=\"false\""));
    assert!(html.contains("--inject-bug stale-reads"), "replay command");

    let Some(dom) = browser_dom(&file, &dir.path().join("profile")) else {
        return;
    };
    // The page's script ran: with no seed chosen, the failing one is open.
    assert!(dom.contains("class=\"seed open\" id=\"seed-101\""));
    assert!(dom.contains("<svg class=\"timeline\""), "timeline rendered");
    assert!(
        dom.contains("class=\"fail-window\""),
        "failing window highlighted"
    );
    assert!(
        dom.contains("class=\"op ok offending\"") || dom.contains("class=\"op fail offending\"")
    );
    assert!(
        dom.contains("<tr class=\"offending-op\""),
        "offending ops listed"
    );
    assert!(dom.contains("class=\"nemesis\""), "fault bands drawn");

    // The failures file renders as a report too.
    let again = dir.path().join("again");
    let (ok, stdout, stderr) = keel(&[
        "chaos",
        "report",
        fails.to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    let html = std::fs::read_to_string(again.join("index.html")).unwrap();
    assert!(html.contains("class=\"fail-window\""));
}

#[test]
fn corrupt_history_file_fails_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("h.jsonl");
    let op = r#"{"id":0,"process":0,"invoke":1,"complete":2,"call":{"type":"put","key":"k","value":"v"},"outcome":{"ok":{"type":"put","revision":2}}}"#;
    std::fs::write(&file, format!("# seed 5\n{op}\n{{\"id\": 1, \"proc\n")).unwrap();
    let out = dir.path().join("out");
    let (ok, _, stderr) = keel(&[
        "chaos",
        "report",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(stderr.contains("line 3: not an operation"), "{stderr}");
    assert!(
        !out.join("index.html").exists(),
        "no report from a corrupt file"
    );

    let (ok, _, stderr) = keel(&[
        "chaos",
        "report",
        "/nonexistent/h.jsonl",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(stderr.contains("/nonexistent/h.jsonl"), "{stderr}");

    let (ok, _, stderr) = keel(&["chaos", "--inject-bug", "gremlins"]);
    assert!(!ok);
    assert!(stderr.contains("unknown bug \"gremlins\""), "{stderr}");

    std::fs::write(&file, format!("{op}\n")).unwrap();
    let (ok, stdout, stderr) = keel(&[
        "chaos",
        "report",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(out.join("index.html").exists());
}
