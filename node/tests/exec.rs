//! Integration tests of the exec runtime with real processes. The built-in
//! images and the supervisor are served by this crate's `keel-node-images`
//! binary, standing in for the keel binary. Network: 127.0.0.1 only.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_node::runtime::exec::{ExecConfig, ExecRuntime};
use keel_node::runtime::{ContainerSpec, ContainerState, Runtime, RuntimeError};

fn config(state_dir: &Path) -> ExecConfig {
    ExecConfig {
        state_dir: state_dir.to_path_buf(),
        keel_binary: PathBuf::from(env!("CARGO_BIN_EXE_keel-node-images")),
        image_dir: None,
    }
}

fn runtime(state_dir: &Path) -> Arc<dyn Runtime> {
    Arc::new(ExecRuntime::new(config(state_dir)).expect("runtime"))
}

fn spec(dir: &Path, name: &str, image: &str, command: &[&str]) -> ContainerSpec {
    ContainerSpec {
        pod_uid: "0000-uid".into(),
        pod_name: "pod-a".into(),
        pod_namespace: "default".into(),
        container_name: name.into(),
        image: image.into(),
        command: command.iter().map(|s| s.to_string()).collect(),
        args: vec![],
        env: vec![],
        working_dir: None,
        log_path: dir.join("logs").join(format!("{name}.log")),
        image_root: None,
        resources: Default::default(),
        mounts: Vec::new(),
        security: Default::default(),
    }
}

fn sh(dir: &Path, name: &str, script: &str) -> ContainerSpec {
    spec(dir, name, "keel/host", &["sh", "-c", script])
}

async fn wait_exited(rt: &dyn Runtime, id: &keel_node::runtime::ContainerId) -> ContainerState {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = rt.state(id).await.unwrap();
        if !state.is_running() || Instant::now() > deadline {
            return state;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until `pred` holds on the log, for processes that write asynchronously.
async fn wait_log(path: &Path, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        if pred(&log) || Instant::now() > deadline {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A pid that no longer runs: gone, or a zombie awaiting a reaper.
fn process_is_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            let state = stat[stat.rfind(')').unwrap() + 1..]
                .split_whitespace()
                .next();
            matches!(state, Some("Z") | Some("X"))
        }
    }
}

#[tokio::test]
async fn host_command_logs_both_streams_and_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let spec = sh(dir.path(), "c", "echo hi; echo err >&2; exit 3");
    let id = rt.start(&spec).await.unwrap();
    match wait_exited(rt.as_ref(), &id).await {
        ContainerState::Exited {
            code,
            reason,
            started_at,
            finished_at,
            ..
        } => {
            assert_eq!((code, reason.as_str()), (3, "Error"));
            assert!(finished_at >= started_at);
        }
        other => panic!("still running: {other:?}"),
    }
    let log = std::fs::read_to_string(&spec.log_path).unwrap();
    assert_eq!(log, "hi\nerr\n");
}

#[tokio::test]
async fn env_working_dir_and_args_reach_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    // cargo sets CARGO_MANIFEST_DIR for the test process: the agent's own
    // environment must not leak into containers.
    let script = "echo \"$GREETING $(pwd) $0 $1 [${CARGO_MANIFEST_DIR:-}]\"";
    let mut spec = sh(dir.path(), "c", script);
    spec.args = vec!["zero".into(), "one".into()];
    spec.env = vec![("GREETING".into(), "hello".into())];
    spec.working_dir = Some(dir.path().to_path_buf());
    let id = rt.start(&spec).await.unwrap();
    assert_eq!(wait_exited(rt.as_ref(), &id).await.exit_code(), Some(0));
    let log = std::fs::read_to_string(&spec.log_path).unwrap();
    assert_eq!(log, format!("hello {} zero one []\n", dir.path().display()));
}

#[tokio::test]
async fn pause_stops_on_sigterm_within_grace() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let id = rt
        .start(&spec(dir.path(), "pause", "keel/pause", &[]))
        .await
        .unwrap();
    assert!(rt.state(&id).await.unwrap().is_running());
    let begun = Instant::now();
    let state = rt.stop(&id, 1_000).await.unwrap();
    let took = begun.elapsed();
    // 0 once pause handles SIGTERM; 143 if the signal beat its handler
    // (a loaded machine can stop it within microseconds of the start).
    assert!(matches!(state.exit_code(), Some(0 | 143)), "{state:?}");
    assert!(
        took < Duration::from_millis(900),
        "SIGTERM should end pause at once: {took:?}"
    );
}

#[tokio::test]
async fn sigterm_ignoring_group_is_killed_after_grace() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let script = r#"trap "" TERM; sleep 100 & echo child=$!; wait"#;
    let spec = sh(dir.path(), "stubborn", script);
    let id = rt.start(&spec).await.unwrap();
    let log = wait_log(&spec.log_path, |l| l.contains('\n')).await;
    let child: i32 = log.trim().strip_prefix("child=").unwrap().parse().unwrap();
    let begun = Instant::now();
    let state = rt.stop(&id, 1_000).await.unwrap();
    let took = begun.elapsed();
    match &state {
        ContainerState::Exited { code, signal, .. } => assert_eq!((*code, *signal), (137, Some(9))),
        other => panic!("{other:?}"),
    }
    assert!(
        took >= Duration::from_millis(1_000),
        "killed before grace: {took:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "kill took too long: {took:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !process_is_gone(child) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        process_is_gone(child),
        "child {child} of the container survived"
    );
}

#[tokio::test]
async fn new_runtime_readopts_running_and_exited_containers() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let first = runtime(&state_dir);
    let pause = first
        .start(&spec(dir.path(), "pause", "keel/pause", &[]))
        .await
        .unwrap();
    let quick = first
        .start(&sh(dir.path(), "quick", "sleep 0.3; exit 7"))
        .await
        .unwrap();
    drop(first);
    tokio::time::sleep(Duration::from_millis(600)).await;

    let second = runtime(&state_dir);
    let listed = second.list().await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let find = |id| listed.iter().find(|c| &c.id == id).unwrap();
    assert!(find(&pause).state.is_running());
    assert_eq!(find(&pause).spec.container_name, "pause");
    assert_eq!(
        find(&quick).state.exit_code(),
        Some(7),
        "exit code recorded without the runtime"
    );

    assert!(matches!(
        second.remove(&pause).await,
        Err(RuntimeError::StillRunning(_))
    ));
    let stopped = second.stop(&pause, 1_000).await.unwrap();
    assert_eq!(stopped.exit_code(), Some(0));
    assert_eq!(
        second.stop(&pause, 1_000).await.unwrap(),
        stopped,
        "stop is idempotent"
    );
    second.remove(&pause).await.unwrap();
    second.remove(&quick).await.unwrap();
    assert!(second.list().await.unwrap().is_empty());
    assert!(matches!(
        second.state(&pause).await,
        Err(RuntimeError::NotFound(_))
    ));
}

/// The exec runtime runs host processes: it cannot enter an image's rootfs,
/// so it refuses a store image instead of running host binaries.
#[tokio::test]
async fn oci_images_are_refused_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let mut s = spec(dir.path(), "x", "127.0.0.1:5000/app:v1", &[]);
    s.image_root = Some(keel_node::runtime::ImageRoot {
        digest: format!("sha256:{}", "a".repeat(64)),
        rootfs: dir.path().join("rootfs"),
        entrypoint: vec!["/bin/app".into()],
        cmd: vec![],
        env: vec![],
        working_dir: None,
        user: None,
    });
    let err = rt.start(&s).await.unwrap_err();
    assert!(matches!(err, RuntimeError::InvalidSpec(_)), "{err}");
    assert!(
        err.to_string().contains(
            "image 127.0.0.1:5000/app:v1 is an OCI image; it needs the isolating runtime (--runtime keel, root)"
        ),
        "{err}"
    );
    assert!(rt.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn unknown_image_and_missing_command_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let err = rt
        .start(&spec(dir.path(), "x", "nginx:1.25", &[]))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::ImagePull { .. }), "{err}");
    let missing = spec(dir.path(), "y", "keel/host", &["/definitely/not/here"]);
    let err = rt.start(&missing).await.unwrap_err();
    assert!(matches!(err, RuntimeError::StartFailed(_)), "{err}");
    assert!(
        rt.list().await.unwrap().is_empty(),
        "failed starts leave nothing behind"
    );
}

#[tokio::test]
async fn local_image_directory_runs_its_entrypoint() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    let image = images.join("acme/hello/v1");
    std::fs::create_dir_all(&image).unwrap();
    std::fs::write(
        image.join("image.json"),
        r#"{"entrypoint": ["sh", "-c", "echo $GREETING from $(pwd)"], "env": {"GREETING": "hello"}}"#,
    )
    .unwrap();
    let rt: Arc<dyn Runtime> = Arc::new(
        ExecRuntime::new(ExecConfig {
            image_dir: Some(images),
            ..config(&dir.path().join("state"))
        })
        .unwrap(),
    );
    let spec = spec(dir.path(), "hello", "acme/hello:v1", &[]);
    let id = rt.start(&spec).await.unwrap();
    assert_eq!(wait_exited(rt.as_ref(), &id).await.exit_code(), Some(0));
    let log = std::fs::read_to_string(&spec.log_path).unwrap();
    assert_eq!(log, format!("hello from {}\n", image.display()));
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    let mut conn = TcpStream::connect(("127.0.0.1", port))?;
    write!(conn, "GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n")?;
    let mut response = String::new();
    conn.read_to_string(&mut response)?;
    Ok(response)
}

#[tokio::test]
async fn echo_image_answers_with_pod_identity() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let port = free_port();
    let mut spec = spec(dir.path(), "web", "keel/echo:v2", &[]);
    spec.env = vec![
        ("PORT".into(), port.to_string()),
        ("POD_IP".into(), "127.0.0.1".into()),
    ];
    let id = rt.start(&spec).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let response = loop {
        match http_get(port, "/hello/world") {
            Ok(r) => break r,
            Err(e) if Instant::now() > deadline => panic!("echo not answering: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(
        response.ends_with("pod=pod-a namespace=default path=/hello/world image=keel/echo:v2\n"),
        "{response}"
    );
    let log = wait_log(&spec.log_path, |l| l.contains("GET /hello/world")).await;
    assert!(log.contains("listening on 127.0.0.1:"), "{log}");
    assert_eq!(rt.stop(&id, 1_000).await.unwrap().exit_code(), Some(0));
}

#[tokio::test]
async fn lost_supervisor_still_allows_stop_and_reports_unknown_status() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let rt = runtime(&state_dir);
    let id = rt
        .start(&spec(dir.path(), "pause", "keel/pause", &[]))
        .await
        .unwrap();
    let running_file = state_dir
        .join("containers")
        .join(&id.0)
        .join("running.json");
    let running: serde_json::Value =
        serde_json::from_slice(&std::fs::read(running_file).unwrap()).unwrap();
    let supervisor_pid = running["supervisor"]["pid"].as_i64().unwrap() as i32;
    // SAFETY: kill has no memory-safety requirements; the pid is our grandchild.
    unsafe { libc::kill(supervisor_pid, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !process_is_gone(supervisor_pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        rt.state(&id).await.unwrap().is_running(),
        "container outlives its supervisor"
    );
    match rt.stop(&id, 1_000).await.unwrap() {
        ContainerState::Exited { code, reason, .. } => {
            assert_eq!((code, reason.as_str()), (137, "ContainerStatusUnknown"))
        }
        other => panic!("{other:?}"),
    }
}

/// Collects an exec session's (stdout, stderr, exit code).
async fn collect(mut s: keel_node::runtime::ExecSession) -> (String, String, i32) {
    use keel_node::runtime::ExecOutput;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let deadline = Duration::from_secs(30);
    loop {
        let msg = tokio::time::timeout(deadline, s.output.recv())
            .await
            .expect("the exec ends")
            .expect("an exit code before the end");
        match msg {
            ExecOutput::Stdout(b) => out.extend(b),
            ExecOutput::Stderr(b) => err.extend(b),
            ExecOutput::Exit(code) => {
                return (
                    String::from_utf8_lossy(&out).into(),
                    String::from_utf8_lossy(&err).into(),
                    code,
                )
            }
        }
    }
}

fn exec_req(cmd: &[&str], stdin: bool, tty: bool) -> keel_node::runtime::ExecRequest {
    keel_node::runtime::ExecRequest {
        command: cmd.iter().map(|s| s.to_string()).collect(),
        stdin,
        tty,
        size: None,
    }
}

#[tokio::test]
async fn exec_runs_in_the_containers_environment() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(&dir.path().join("state"));
    let mut s = sh(dir.path(), "main", "sleep 600");
    s.env = vec![("GREETING".into(), "from-spec".into())];
    s.working_dir = Some(dir.path().to_path_buf());
    let id = rt.start(&s).await.unwrap();

    let script = "echo $GREETING; pwd; echo to-stderr >&2; exit 3";
    let session = rt
        .exec(&id, exec_req(&["sh", "-c", script], false, false))
        .await
        .unwrap();
    let (out, err, code) = collect(session).await;
    assert_eq!(out, format!("from-spec\n{}\n", dir.path().display()));
    assert_eq!((err.as_str(), code), ("to-stderr\n", 3));

    let session = rt.exec(&id, exec_req(&["cat"], true, false)).await.unwrap();
    use keel_node::runtime::ExecInput;
    session
        .input
        .send(ExecInput::Stdin(b"piped\n".to_vec()))
        .await
        .unwrap();
    session.input.send(ExecInput::CloseStdin).await.unwrap();
    assert_eq!(collect(session).await, ("piped\n".into(), String::new(), 0));

    let session = rt
        .exec(
            &id,
            exec_req(
                &["sh", "-c", "test -t 0 && test -t 1 && echo on-a-tty"],
                false,
                true,
            ),
        )
        .await
        .unwrap();
    let (out, _, code) = collect(session).await;
    assert_eq!((out.trim(), code), ("on-a-tty", 0));

    rt.stop(&id, 1_000).await.unwrap();
    let e = rt
        .exec(&id, exec_req(&["true"], false, false))
        .await
        .unwrap_err();
    assert!(matches!(e, RuntimeError::InvalidSpec(_)), "{e}");
    let gone = keel_node::runtime::ContainerId("no-such-container".into());
    let e = rt
        .exec(&gone, exec_req(&["true"], false, false))
        .await
        .unwrap_err();
    assert!(matches!(e, RuntimeError::NotFound(_)), "{e}");
}
