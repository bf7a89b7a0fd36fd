//! The docker runtime against the real Docker Engine on this machine.
//!
//! No registry is reachable, so the tests build a tiny `FROM scratch` image
//! from host files (`/bin/sh`, `/bin/sleep` and the shared libraries `ldd`
//! lists). If the daemon is not reachable every test FAILS with a message
//! saying so, unless `KEEL_SKIP_DOCKER=1` is set: a silently passing suite
//! would hide that the runtime was never exercised.
//!
//! Every test uses its own pod namespace; a guard removes every container
//! labelled with it when the test ends, pass or fail.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keel_node::runtime::docker::{DockerRuntime, LABEL_POD_NAMESPACE};
use keel_node::runtime::{ContainerSpec, ContainerState, Runtime, RuntimeError};

#[path = "support/docker_image.rs"]
mod docker_image;

use docker_image::{docker_available, ensure_image, IMAGE};

/// Removes every container of one test's namespace when dropped.
struct Cleanup {
    namespace: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label={LABEL_POD_NAMESPACE}={}", self.namespace);
        let Ok(out) = Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
        else {
            return;
        };
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .output();
        }
    }
}

struct Fixture {
    rt: DockerRuntime,
    namespace: String,
    dir: tempfile::TempDir,
    _cleanup: Cleanup,
}

async fn fixture(test: &str) -> Option<Fixture> {
    if !docker_available() {
        return None;
    }
    ensure_image();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let namespace = format!("t-{test}-{}-{nanos:x}", std::process::id());
    let cleanup = Cleanup {
        namespace: namespace.clone(),
    };
    let rt = DockerRuntime::connect(&namespace)
        .await
        .expect("connect to the Docker daemon");
    Some(Fixture {
        rt,
        namespace,
        dir: tempfile::tempdir().unwrap(),
        _cleanup: cleanup,
    })
}

impl Fixture {
    fn spec(&self, name: &str, script: &str) -> ContainerSpec {
        ContainerSpec {
            pod_uid: format!("{}-uid", self.namespace),
            pod_name: "pod".into(),
            pod_namespace: self.namespace.clone(),
            container_name: name.into(),
            image: IMAGE.into(),
            command: vec!["/bin/sh".into(), "-c".into()],
            args: vec![script.into()],
            env: vec![
                ("X".into(), "old".into()),
                ("POD_IP".into(), "127.0.0.7".into()),
                ("X".into(), "world".into()),
            ],
            working_dir: Some("/bin".into()),
            log_path: self.dir.path().join(format!("logs/{name}/0.log")),
            image_root: None,
            resources: Default::default(),
            mounts: Vec::new(),
            security: Default::default(),
        }
    }
}

async fn wait_for_log(path: &PathBuf, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "log {} never contained {needle:?}; got {text:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_exited(rt: &DockerRuntime, id: &keel_node::runtime::ContainerId) -> ContainerState {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let state = rt.state(id).await.unwrap();
        if !state.is_running() {
            return state;
        }
        assert!(Instant::now() < deadline, "container never exited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn runs_with_env_logs_and_stops_gracefully() {
    let Some(f) = fixture("graceful").await else {
        return;
    };
    assert_eq!(f.rt.name(), "docker");
    let spec = f.spec(
        "main",
        "trap 'echo bye; exit 0' TERM; echo hello $X from $(pwd) at $POD_IP; echo oops >&2; sleep 100 & wait",
    );
    let id = f.rt.start(&spec).await.unwrap();
    assert!(f.rt.state(&id).await.unwrap().is_running());
    let text = wait_for_log(&spec.log_path, "oops").await;
    assert!(
        text.contains("hello world from /bin at 127.0.0.7"),
        "{text:?}"
    );

    let state = f.rt.stop(&id, 5_000).await.unwrap();
    match &state {
        ContainerState::Exited {
            code,
            reason,
            started_at,
            finished_at,
            ..
        } => {
            assert_eq!((*code, reason.as_str()), (0, "Completed"));
            assert!(finished_at >= started_at);
        }
        other => panic!("expected exited, got {other:?}"),
    }
    // The log is complete once stop returns.
    let text = std::fs::read_to_string(&spec.log_path).unwrap();
    assert!(text.ends_with("bye\n"), "{text:?}");
    // Stopping again is a no-op returning the same state.
    assert_eq!(f.rt.stop(&id, 1_000).await.unwrap(), state);
    f.rt.remove(&id).await.unwrap();
    assert!(matches!(
        f.rt.state(&id).await,
        Err(RuntimeError::NotFound(_))
    ));
}

#[tokio::test]
async fn stop_kills_after_grace_when_term_is_ignored() {
    let Some(f) = fixture("kill").await else {
        return;
    };
    // sh as PID 1 without a TERM handler ignores SIGTERM.
    let spec = f.spec("main", "echo up; sleep 100");
    let id = f.rt.start(&spec).await.unwrap();
    wait_for_log(&spec.log_path, "up").await;
    let begin = Instant::now();
    let state = f.rt.stop(&id, 1_000).await.unwrap();
    assert!(begin.elapsed() >= Duration::from_millis(900));
    assert_eq!(state.exit_code(), Some(137), "{state:?}");
    f.rt.remove(&id).await.unwrap();

    // A container that forwards TERM to its worker and exits with the
    // worker's status reports 143 (128 + SIGTERM) well within the grace.
    let spec = f.spec(
        "term",
        "sleep 100 & c=$!; trap 'kill -TERM $c; wait $c; exit $?' TERM; echo up; wait $c",
    );
    let id = f.rt.start(&spec).await.unwrap();
    wait_for_log(&spec.log_path, "up").await;
    let begin = Instant::now();
    let state = f.rt.stop(&id, 10_000).await.unwrap();
    assert!(
        begin.elapsed() < Duration::from_secs(8),
        "{:?}",
        begin.elapsed()
    );
    match state {
        ContainerState::Exited { code, reason, .. } => {
            assert_eq!((code, reason.as_str()), (143, "Error"))
        }
        other => panic!("{other:?}"),
    }
    f.rt.remove(&id).await.unwrap();
}

#[tokio::test]
async fn exit_code_and_reason_are_reported() {
    let Some(f) = fixture("exit").await else {
        return;
    };
    let spec = f.spec("main", "echo failing; exit 3");
    let id = f.rt.start(&spec).await.unwrap();
    match wait_exited(&f.rt, &id).await {
        ContainerState::Exited {
            code,
            signal,
            reason,
            ..
        } => assert_eq!((code, signal, reason.as_str()), (3, None, "Error")),
        other => panic!("{other:?}"),
    }
    wait_for_log(&spec.log_path, "failing").await;
    f.rt.remove(&id).await.unwrap();
}

#[tokio::test]
async fn missing_image_and_missing_executable_fail_cleanly() {
    let Some(f) = fixture("fail").await else {
        return;
    };
    let mut spec = f.spec("main", "true");
    spec.image = "keel-test/does-not-exist:1".into();
    match f.rt.start(&spec).await {
        Err(RuntimeError::ImagePull { image, reason }) => {
            assert_eq!(image, spec.image);
            assert!(
                reason.contains("not present in the local Docker engine"),
                "{reason}"
            );
        }
        other => panic!("expected ImagePull, got {other:?}"),
    }
    let mut spec = f.spec("main", "true");
    spec.command = vec!["/no/such/binary".into()];
    match f.rt.start(&spec).await {
        Err(RuntimeError::StartFailed(message)) => {
            assert!(message.contains("/no/such/binary"), "{message}")
        }
        other => panic!("expected StartFailed, got {other:?}"),
    }
    // Nothing is left behind.
    let ours: Vec<_> =
        f.rt.list()
            .await
            .unwrap()
            .into_iter()
            .filter(|c| c.spec.pod_namespace == f.namespace)
            .collect();
    assert!(ours.is_empty(), "{ours:?}");
}

#[tokio::test]
async fn new_instance_readopts_and_resumes_logs_without_duplicates() {
    let Some(f) = fixture("adopt").await else {
        return;
    };
    let spec = f.spec("main", "echo first; sleep 2; echo second; sleep 100");
    let id = f.rt.start(&spec).await.unwrap();
    wait_for_log(&spec.log_path, "first").await;
    // Agent restart: the old instance (and its log follower) goes away.
    let Fixture {
        rt,
        namespace,
        dir,
        _cleanup,
    } = f;
    drop(rt);

    let rt = DockerRuntime::connect(&namespace).await.unwrap();
    let listed: Vec<_> = rt
        .list()
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.spec.pod_namespace == namespace)
        .collect();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].id, id);
    // Another owner (another agent on the same engine) does not see it.
    let other = DockerRuntime::connect(&format!("{namespace}-other"))
        .await
        .unwrap();
    assert!(other.list().await.unwrap().is_empty());
    assert!(matches!(
        other.state(&id).await,
        Err(RuntimeError::NotFound(_))
    ));
    drop(other);
    assert_eq!(listed[0].spec, spec);
    assert!(listed[0].state.is_running());

    let text = wait_for_log(&spec.log_path, "second").await;
    assert_eq!(text, "first\nsecond\n");
    // Listing again does not start a second follower.
    rt.list().await.unwrap();

    assert!(matches!(
        rt.remove(&id).await,
        Err(RuntimeError::StillRunning(_))
    ));
    let state = rt.stop(&id, 0).await.unwrap();
    assert_eq!(state.exit_code(), Some(137));
    assert_eq!(
        std::fs::read_to_string(&spec.log_path).unwrap(),
        "first\nsecond\n"
    );
    rt.remove(&id).await.unwrap();
    drop(dir);
}

/// Collects an exec session's (stdout, stderr, exit code).
async fn collect(mut s: keel_node::runtime::ExecSession) -> (String, String, i32) {
    use keel_node::runtime::ExecOutput;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), s.output.recv())
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

#[tokio::test]
async fn exec_streams_stdin_and_exit_codes_through_docker() {
    use keel_node::runtime::{ExecInput, ExecRequest};
    let Some(f) = fixture("exec").await else {
        return;
    };
    let id = f.rt.start(&f.spec("main", "sleep 600")).await.unwrap();
    let req = |cmd: &[&str], stdin: bool, tty: bool| ExecRequest {
        command: cmd.iter().map(|s| s.to_string()).collect(),
        stdin,
        tty,
        size: None,
    };
    let s =
        f.rt.exec(
            &id,
            req(
                &["/bin/sh", "-c", "echo out $X; echo err >&2; exit 3"],
                false,
                false,
            ),
        )
        .await
        .unwrap();
    assert_eq!(collect(s).await, ("out world\n".into(), "err\n".into(), 3));

    let s =
        f.rt.exec(
            &id,
            req(&["/bin/sh", "-c", "read l; echo got $l"], true, false),
        )
        .await
        .unwrap();
    s.input
        .send(ExecInput::Stdin(b"line\n".to_vec()))
        .await
        .unwrap();
    s.input.send(ExecInput::CloseStdin).await.unwrap();
    assert_eq!(collect(s).await, ("got line\n".into(), String::new(), 0));

    let s =
        f.rt.exec(
            &id,
            req(
                &["/bin/sh", "-c", "test -t 1 && echo on-a-tty"],
                false,
                true,
            ),
        )
        .await
        .unwrap();
    let (out, _, code) = collect(s).await;
    assert_eq!((out.trim(), code), ("on-a-tty", 0));

    f.rt.stop(&id, 1_000).await.unwrap();
    assert!(f
        .rt
        .exec(&id, req(&["/bin/sh"], false, false))
        .await
        .is_err());
}

#[tokio::test]
async fn stats_report_cpu_and_memory_of_a_running_container() {
    let Some(f) = fixture("stats").await else {
        return;
    };
    // Spins for a while, then sleeps: CPU time must grow, then hold.
    let spec = f.spec(
        "spin",
        "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; echo spun; sleep 100",
    );
    let id = f.rt.start(&spec).await.unwrap();
    wait_for_log(&spec.log_path, "spun").await;
    let s = f.rt.stats(&id).await.unwrap();
    assert!(s.cpu_usage_ns > 10_000_000, "{s:?}");
    assert!(s.memory_working_set_bytes > 0, "{s:?}");
    f.rt.stop(&id, 1_000).await.unwrap();
    f.rt.remove(&id).await.unwrap();
    assert!(f.rt.stats(&id).await.is_err());
}

/// `keel/pause` needs no registry: the runtime imports an image made of
/// the binary serving built-ins (here `keel-node-images`) and its
/// libraries, runs it, and the pause process exits 0 on a graceful stop.
/// Without a binary the image is a clear `ImagePull` error.
#[tokio::test]
async fn builtin_pause_is_made_locally_and_stops_gracefully() {
    let Some(f) = fixture("builtin").await else {
        return;
    };
    let mut spec = f.spec("pause", "");
    spec.image = "keel/pause".into();
    spec.command = Vec::new();
    spec.args = Vec::new();
    spec.working_dir = None;
    match f.rt.start(&spec).await {
        Err(RuntimeError::ImagePull { image, reason }) => {
            assert_eq!(image, "keel/pause");
            assert!(reason.contains("no keel binary"), "{reason}");
        }
        other => panic!("expected ImagePull without a keel binary, got {other:?}"),
    }
    let rt = DockerRuntime::connect(&f.namespace)
        .await
        .unwrap()
        .with_keel_binary(PathBuf::from(env!("CARGO_BIN_EXE_keel-node-images")));
    let id = rt.start(&spec).await.expect("start keel/pause");
    let out = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{.Config.Image}} {{json .Config.Entrypoint}}",
        ])
        .arg(&id.0)
        .output()
        .unwrap();
    let inspect = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        inspect.starts_with("keel/pause:bin-") && inspect.ends_with(r#"["/keel","image","pause"]"#),
        "{inspect}"
    );
    wait_catches_sigterm(&id.0).await;
    // Exit 0 on SIGTERM is `keel image pause` itself: a broken image
    // (missing library, wrong entrypoint) exits 127 or 2 at once.
    match rt.stop(&id, 10_000).await.unwrap() {
        ContainerState::Exited { code, reason, .. } => {
            assert_eq!((code, reason.as_str()), (0, "Completed"));
        }
        other => panic!("expected Exited, got {other:?}"),
    }
    rt.remove(&id).await.unwrap();

    // Removed behind the runtime's back: the next start makes it again.
    let image = inspect.split_whitespace().next().unwrap().to_string();
    let rmi = Command::new("docker")
        .args(["rmi", &image])
        .output()
        .unwrap();
    assert!(
        rmi.status.success(),
        "{}",
        String::from_utf8_lossy(&rmi.stderr)
    );
    let id = rt.start(&spec).await.expect("start keel/pause after rmi");
    wait_catches_sigterm(&id.0).await;
    let remade = Command::new("docker")
        .args(["image", "inspect", &image])
        .output()
        .unwrap();
    assert!(remade.status.success(), "{image} was not made again");
    rt.stop(&id, 1_000).await.unwrap();
    rt.remove(&id).await.unwrap();
}

/// Waits until the container's PID 1 has a SIGTERM handler (`SigCgt`):
/// before that, PID 1 of a PID namespace ignores SIGTERM and a stop
/// would wait out its whole grace period.
async fn wait_catches_sigterm(id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new("docker")
            .args(["inspect", "-f", "{{.State.Pid}}", id])
            .output()
            .unwrap();
        let pid = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let caught = status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << (libc_sigterm() - 1)) != 0);
        if caught {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "container {id} never handled SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn libc_sigterm() -> u32 {
    15
}
