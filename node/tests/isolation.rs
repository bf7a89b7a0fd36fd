//! Integration tests of the isolating runtime (`--runtime keel`) with real
//! namespaces, overlayfs and cgroups. They need root and a busybox-static
//! rootfs (`apt-get install -y busybox-static`); without either they print
//! why and pass without checking anything. Network: 127.0.0.1 only (pods
//! share the host network namespace in loopback mode).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_node::runtime::exec::ExecConfig;
use keel_node::runtime::isolated::{missing_features, IsolatedConfig, IsolatedRuntime};
use keel_node::runtime::{
    ContainerId, ContainerSpec, ContainerState, ExecOutput, ExecRequest, ExecSession, ImageRoot,
    Mount, Runtime, RuntimeError, SeccompProfile,
};

const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &[
    "sh", "ps", "id", "cat", "ls", "echo", "sleep", "hostname", "touch", "wc", "grep", "yes",
    "test", "mount", "head", "true", "readlink", "tty", "stty", "mkdir", "unshare",
];

/// Why these tests cannot run here, if they cannot.
fn unsupported() -> Option<String> {
    let missing = missing_features(Path::new("/sys/fs/cgroup"));
    if !missing.is_empty() {
        return Some(missing.join(", "));
    }
    if !Path::new(BUSYBOX).is_file() {
        return Some(format!(
            "{BUSYBOX} missing (apt-get install -y busybox-static)"
        ));
    }
    None
}

macro_rules! require_isolation {
    () => {
        if let Some(why) = unsupported() {
            eprintln!("skipping: the isolating runtime cannot run here: {why}");
            return;
        }
    };
}

/// A busybox rootfs with `/etc/passwd` (user `web` = 1000:1001).
fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("busybox-rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nweb:x:1000:1001::/:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nweb:x:1001:\n").unwrap();
    root
}

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    rootfs: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let rootfs = busybox_rootfs(&dir);
        Fixture {
            _tmp: tmp,
            dir,
            rootfs,
        }
    }

    fn config(&self) -> IsolatedConfig {
        let mut config = IsolatedConfig::new(ExecConfig {
            state_dir: self.dir.join("state"),
            keel_binary: PathBuf::from(env!("CARGO_BIN_EXE_keel-node-images")),
            image_dir: None,
        });
        config.cgroup_parent = "keel-test".into();
        config
    }

    fn runtime(&self) -> Arc<IsolatedRuntime> {
        Arc::new(IsolatedRuntime::new(self.config()).expect("runtime"))
    }

    /// A busybox container running `sh -c script`, in pod `uid`.
    fn sh(&self, uid: &str, name: &str, script: &str) -> ContainerSpec {
        ContainerSpec {
            pod_uid: uid.into(),
            pod_name: "iso-pod".into(),
            pod_namespace: "default".into(),
            container_name: name.into(),
            image: "busybox".into(),
            command: vec!["sh".into(), "-c".into(), script.into()],
            args: vec![],
            env: vec![("GREETING".into(), "hi".into())],
            working_dir: None,
            log_path: self.dir.join("logs").join(format!("{uid}-{name}.log")),
            image_root: Some(ImageRoot {
                digest: "sha256:test".into(),
                rootfs: self.rootfs.clone(),
                entrypoint: vec![],
                cmd: vec![],
                env: vec![],
                working_dir: None,
                user: None,
            }),
            resources: Default::default(),
            mounts: Vec::new(),
            security: Default::default(),
        }
    }
}

async fn wait_exited(rt: &dyn Runtime, id: &ContainerId) -> ContainerState {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = rt.state(id).await.unwrap();
        if !state.is_running() || Instant::now() > deadline {
            return state;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `script` to completion; returns (log, exit code, reason).
async fn run(rt: &dyn Runtime, spec: &ContainerSpec) -> (String, i32, String) {
    let id = rt.start(spec).await.expect("start");
    let state = wait_exited(rt, &id).await;
    let log = std::fs::read_to_string(&spec.log_path).unwrap_or_default();
    match state {
        ContainerState::Exited { code, reason, .. } => {
            rt.remove(&id).await.unwrap();
            (log, code, reason)
        }
        s => panic!("still running: {s:?}; log: {log}"),
    }
}

async fn collect(mut s: ExecSession) -> (String, String, i32) {
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

fn exec_req(cmd: &[&str]) -> ExecRequest {
    ExecRequest {
        command: cmd.iter().map(|s| s.to_string()).collect(),
        stdin: false,
        tty: false,
        size: None,
    }
}

fn mounted_under(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.display().to_string();
    info.lines().any(|l| l.contains(&p))
}

#[tokio::test]
async fn a_container_sees_neither_host_processes_nor_host_files() {
    require_isolation!();
    let f = Fixture::new();
    let rt = f.runtime();
    let secret = f.dir.join("host-only-file");
    std::fs::write(&secret, "host").unwrap();
    let script = format!(
        "echo pid=$$; echo procs=$(ls -d /proc/[0-9]* | wc -l); echo host=$(hostname); \
         echo etc=$(cat /etc/hostname); cat /etc/hosts; \
         test -e {} && echo SEES-HOST-FILE; test -e /work && echo SEES-WORK; \
         echo greeting=$GREETING; echo kcore=$(cat /proc/kcore | wc -c); \
         grep ' /proc/sys ' /proc/mounts",
        secret.display()
    );
    let (log, code, _) = run(rt.as_ref(), &f.sh("u-proc", "c", &script)).await;
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("pid=1\n"),
        "the container is PID 1 of its namespace: {log}"
    );
    let procs: usize = log
        .lines()
        .find_map(|l| l.strip_prefix("procs="))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        procs <= 4,
        "sees only its own processes, not the host's: {log}"
    );
    assert!(
        log.contains("host=iso-pod\n") && log.contains("etc=iso-pod\n"),
        "{log}"
    );
    assert!(
        log.contains("\tiso-pod\n") && log.contains("localhost"),
        "/etc/hosts: {log}"
    );
    assert!(!log.contains("SEES-"), "host files are invisible: {log}");
    assert!(log.contains("greeting=hi"), "{log}");
    assert!(log.contains("kcore=0\n"), "/proc/kcore is masked: {log}");
    assert!(
        log.contains(" /proc/sys proc ro,"),
        "/proc/sys is read-only: {log}"
    );
}

#[tokio::test]
async fn a_memory_hog_is_oom_killed() {
    require_isolation!();
    let f = Fixture::new();
    let rt = f.runtime();
    let mut spec = f.sh("u-oom", "hog", "x=$(yes 0123456789abcdef); echo survived");
    spec.resources.memory_limit_bytes = Some(32 << 20);
    let (log, code, reason) = run(rt.as_ref(), &spec).await;
    assert_eq!((code, reason.as_str()), (137, "OOMKilled"), "{log}");
    assert!(!log.contains("survived"), "{log}");
}

#[tokio::test]
async fn volumes_appear_at_mount_path_and_read_only_is_enforced() {
    require_isolation!();
    let f = Fixture::new();
    let rt = f.runtime();
    let vol = f.dir.join("vol");
    std::fs::create_dir_all(vol.join("sub")).unwrap();
    std::fs::write(vol.join("hello"), "from-host\n").unwrap();
    std::fs::write(vol.join("sub/inner"), "from-sub\n").unwrap();
    let mut spec = f.sh(
        "u-vol",
        "c",
        "cat /data/hello; echo written > /data/new; cat /only-sub/inner; \
         (echo x > /ro/hello) 2>/dev/null && echo RO-WRITABLE || echo ro-refused; \
         test -e /only-sub/hello && echo SUBPATH-LEAK; true",
    );
    spec.mounts = vec![
        Mount {
            name: "data".into(),
            source: vol.clone(),
            destination: "/data".into(),
            read_only: false,
        },
        Mount {
            name: "ro".into(),
            source: vol.clone(),
            destination: "/ro".into(),
            read_only: true,
        },
        Mount {
            name: "sub".into(),
            source: vol.join("sub"),
            destination: "/only-sub".into(),
            read_only: false,
        },
    ];
    let (log, code, _) = run(rt.as_ref(), &spec).await;
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("from-host") && log.contains("from-sub"),
        "{log}"
    );
    assert!(
        log.contains("ro-refused") && !log.contains("RO-WRITABLE"),
        "{log}"
    );
    assert!(!log.contains("SUBPATH-LEAK"), "{log}");
    assert_eq!(
        std::fs::read_to_string(vol.join("new")).unwrap(),
        "written\n"
    );
    assert_eq!(
        std::fs::read_to_string(vol.join("hello")).unwrap(),
        "from-host\n"
    );
}

#[tokio::test]
async fn run_as_user_capabilities_and_read_only_root() {
    require_isolation!();
    let f = Fixture::new();
    let rt = f.runtime();
    let script = "echo uid=$(id -u) gid=$(id -g); grep -E '^Cap(Bnd|Eff)' /proc/self/status; \
                  grep NoNewPrivs /proc/self/status; \
                  (touch /newfile) 2>/dev/null && echo ROOT-WRITABLE || echo root-ro";
    let mut spec = f.sh("u-user", "c", script);
    spec.security.run_as_user = Some(1000);
    spec.security.read_only_root_filesystem = true;
    let (log, code, _) = run(rt.as_ref(), &spec).await;
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("uid=1000 gid=1001"),
        "primary group from the image's passwd: {log}"
    );
    assert!(log.contains("CapEff:\t0000000000000000"), "{log}");
    // Docker's default set: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID
    // SETUID SETPCAP NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP.
    assert!(log.contains("CapBnd:\t00000000a80425fb"), "{log}");
    assert!(log.contains("NoNewPrivs:\t1"), "{log}");
    assert!(
        log.contains("root-ro") && !log.contains("ROOT-WRITABLE"),
        "{log}"
    );

    // Root in the container with NET_ADMIN added and CHOWN dropped.
    let mut spec = f.sh(
        "u-user",
        "root",
        "grep CapEff /proc/self/status; touch /newfile && echo root-rw",
    );
    spec.security.capabilities_add = vec!["NET_ADMIN".into()];
    spec.security.capabilities_drop = vec!["CHOWN".into()];
    let (log, code, _) = run(rt.as_ref(), &spec).await;
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("CapEff:\t00000000a80435fa"), "{log}");
    assert!(
        log.contains("root-rw"),
        "the writable layer takes writes: {log}"
    );
    assert!(
        !f.rootfs.join("newfile").exists(),
        "the image rootfs is never written"
    );
}

#[tokio::test]
async fn limits_are_in_the_cgroup_exec_enters_the_container_and_removal_cleans_up() {
    require_isolation!();
    let f = Fixture::new();
    let rt = f.runtime();
    let mut spec = f.sh("u-cg", "c", "echo started; exec sleep 1000");
    spec.resources.cpu_request_millis = Some(250);
    spec.resources.cpu_limit_millis = Some(500);
    spec.resources.memory_limit_bytes = Some(64 << 20);
    let id = rt.start(&spec).await.unwrap();
    let cg = rt.cgroup(&id).unwrap();
    let read = |controller: &str, file: &str| {
        std::fs::read_to_string(cg.dirs[controller].join(file))
            .unwrap()
            .trim()
            .to_string()
    };
    if cg.v2 {
        assert_eq!(read("unified", "memory.max"), "67108864");
        assert_eq!(read("unified", "cpu.max"), "50000 100000");
        assert_eq!(read("unified", "pids.max"), "4096");
    } else {
        assert_eq!(read("memory", "memory.limit_in_bytes"), "67108864");
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(read("cpu", "cpu.shares"), "256");
        assert_eq!(read("pids", "pids.max"), "4096");
    }
    let stats = rt.stats(&id).await.unwrap();
    assert!(stats.memory_working_set_bytes > 0, "{stats:?}");

    let (out, err, code) = collect(
        rt.exec(
            &id,
            exec_req(&[
                "sh",
                "-c",
                "hostname; ls -d /proc/[0-9]* | wc -l; ps -o comm | grep -c sleep; id -u; exit 3",
            ]),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(code, 3, "exit codes propagate: {out} {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "iso-pod", "{out}");
    let procs: usize = lines[1].trim().parse().unwrap();
    assert!(
        procs <= 5,
        "exec is in the container's PID namespace: {out}"
    );
    assert_eq!(lines[2], "1", "sees the container's sleep: {out}");
    let mut tty = exec_req(&["sh", "-c", "tty; stty size; exit 4"]);
    tty.tty = true;
    tty.size = Some(keel_node::runtime::TermSize {
        width: 97,
        height: 31,
    });
    let (out, _, code) = collect(rt.exec(&id, tty).await.unwrap()).await;
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains("/dev/pts/0"),
        "a pty of the container's devpts: {out}"
    );
    assert!(out.contains("31 97"), "the session's window size: {out}");
    let (_, err, code) = collect(rt.exec(&id, exec_req(&["no-such-binary"])).await.unwrap()).await;
    assert_ne!(code, 0, "{err}");

    // Re-adoption: a new runtime instance on the same state finds it.
    drop(rt);
    let rt = f.runtime();
    let listed = rt.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].state.is_running());
    let (out, _, code) = collect(
        rt.exec(&id, exec_req(&["cat", "/etc/hostname"]))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((out.as_str(), code), ("iso-pod\n", 0));

    let state = rt.stop(&id, 2_000).await.unwrap();
    assert_eq!(
        state.exit_code(),
        Some(137),
        "sleep as PID 1 ignores SIGTERM: {state:?}"
    );
    let container_dir = f.dir.join("state/containers").join(&id.0);
    rt.remove(&id).await.unwrap();
    for dir in cg.dirs.values() {
        assert!(!dir.exists(), "container cgroup {} removed", dir.display());
        assert!(!dir.parent().unwrap().exists(), "pod cgroup removed");
    }
    assert!(!container_dir.exists());
    assert!(!mounted_under(&container_dir), "no mount leaks to the host");
}

#[tokio::test]
async fn start_errors_leave_nothing_behind() {
    require_isolation!();
    let f = Fixture::new();
    let rt = f.runtime();
    let mut spec = f.sh("u-err", "c", "true");
    spec.command = vec!["/no/such/program".into()];
    match rt.start(&spec).await {
        Err(RuntimeError::StartFailed(msg)) => assert!(msg.contains("/no/such/program"), "{msg}"),
        other => panic!("expected StartFailed, got {other:?}"),
    }
    assert!(rt.list().await.unwrap().is_empty());
    let layout =
        keel_node::runtime::isolated::cgroup::CgroupLayout::detect(Path::new("/sys/fs/cgroup"));
    let root = match &layout {
        keel_node::runtime::isolated::cgroup::CgroupLayout::V2(r) => r.clone(),
        keel_node::runtime::isolated::cgroup::CgroupLayout::V1(m) => m["memory"].clone(),
    };
    assert!(!root.join("keel-test/podu-err").exists(), "cgroups removed");

    spec.security.capabilities_add = vec!["NOT_A_CAP".into()];
    spec.command = vec!["true".into()];
    match rt.start(&spec).await {
        Err(RuntimeError::InvalidSpec(msg)) => assert!(msg.contains("NOT_A_CAP"), "{msg}"),
        other => panic!("expected InvalidSpec, got {other:?}"),
    }
}

#[tokio::test]
async fn built_in_images_run_on_the_host_userland_root() {
    require_isolation!();
    let f = Fixture::new();
    let rt = f.runtime();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut spec = f.sh("u-echo", "echo", "");
    spec.image = "keel/echo".into();
    spec.image_root = None;
    spec.command = vec![];
    spec.env = vec![
        ("POD_IP".into(), "127.0.0.1".into()),
        ("PORT".into(), port.to_string()),
    ];
    let id = rt.start(&spec).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        use std::io::{Read, Write};
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            s.write_all(b"GET /x HTTP/1.0\r\n\r\n").unwrap();
            let mut body = String::new();
            let _ = s.read_to_string(&mut body);
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "echo never listened: {:?}",
            std::fs::read_to_string(&spec.log_path)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        body.contains("pod=iso-pod") && body.contains("path=/x"),
        "{body}"
    );
    let (out, _, code) = collect(
        rt.exec(
            &id,
            exec_req(&[
                "/bin/sh",
                "-c",
                "ls /; test -e /work/wt && echo SEES-WORKTREE; true",
            ]),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("usr") && !out.contains("home"), "{out}");
    assert!(
        !out.contains("SEES-WORKTREE"),
        "only the keel binary of /work is shown: {out}"
    );
    rt.stop(&id, 5_000).await.unwrap();
    rt.remove(&id).await.unwrap();
}

#[tokio::test]
async fn containers_of_a_pod_share_ipc_and_uts_namespaces_until_the_last_is_removed() {
    require_isolation!();
    let f = Fixture::new();
    let rt = f.runtime();
    let ns =
        "echo ipc=$(readlink /proc/self/ns/ipc) uts=$(readlink /proc/self/ns/uts); exec sleep 1000";
    let a = rt.start(&f.sh("u-pod", "a", ns)).await.unwrap();
    let b = rt.start(&f.sh("u-pod", "b", ns)).await.unwrap();
    let other = rt.start(&f.sh("u-other", "c", ns)).await.unwrap();
    let line = |name: &str, uid: &str| {
        let path = f.dir.join("logs").join(format!("{uid}-{name}.log"));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            if log.contains("uts=") || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let (la, lb, lo) = (line("a", "u-pod"), line("b", "u-pod"), line("c", "u-other"));
    assert!(la.contains("ipc=ipc:["), "{la}");
    assert_eq!(la, lb, "one IPC and UTS namespace per pod");
    assert_ne!(la, lo, "pods do not share");
    let pins = f.dir.join("state/pods/u-pod/ns");
    for id in [&a, &b, &other] {
        rt.stop(id, 1_000).await.unwrap();
    }
    rt.remove(&a).await.unwrap();
    assert!(
        pins.join("ipc").exists(),
        "pinned while a container of the pod remains"
    );
    rt.remove(&b).await.unwrap();
    rt.remove(&other).await.unwrap();
    assert!(!f.dir.join("state/pods/u-pod").exists());
    assert!(!mounted_under(&f.dir), "namespace pins unmounted");
}

#[tokio::test]
async fn share_process_namespace_shows_the_pods_processes_and_its_init_reaps_orphans() {
    require_isolation!();
    let f = Fixture::new();
    let rt = f.runtime();
    let shared = |name: &str, script: &str| {
        let mut spec = f.sh("u-shared", name, script);
        spec.security.share_process_namespace = true;
        spec
    };
    let a = rt.start(&shared("a", "exec sleep 1001")).await.unwrap();
    // The inner shell exits at once; its background `sleep` is orphaned,
    // so the namespace's init must reap it or it stays a zombie.
    let b = rt
        .start(&shared("b", "sh -c 'sleep 0.2 &'; exec sleep 1002"))
        .await
        .unwrap();
    let alone = rt
        .start(&f.sh("u-alone", "c", "exec sleep 1003"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let ps = || exec_req(&["ps", "-o", "pid,stat,args"]);
    let (out, err, code) = collect(rt.exec(&a, ps()).await.unwrap()).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("sleep 1002"), "a sees b's process: {out}");
    assert!(out.contains("sleep 1001"), "{out}");
    let init = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some("1"))
        .unwrap_or_default();
    assert!(init.contains("__pause"), "PID 1 is the pod's pause: {out}");
    let zombies: Vec<&str> = out
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|s| s.starts_with('Z'))
        })
        .collect();
    assert!(zombies.is_empty(), "orphans are reaped: {out}");
    let (out, _, _) = collect(rt.exec(&alone, ps()).await.unwrap()).await;
    assert!(
        !out.contains("sleep 1001") && !out.contains("__pause"),
        "a pod without shareProcessNamespace sees only itself: {out}"
    );
    let pause: serde_json::Value = serde_json::from_slice(
        &std::fs::read(f.dir.join("state/pods/u-shared/ns/pause.json")).unwrap(),
    )
    .unwrap();
    let pause_pid = pause["pid"].as_i64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pause_pid}/status")).unwrap();
    assert!(
        status.contains("Uid:\t65534") && status.contains("CapEff:\t0000000000000000"),
        "the pause process runs unprivileged: {status}"
    );
    // A restarted container joins the same namespace.
    rt.stop(&b, 1_000).await.unwrap();
    rt.remove(&b).await.unwrap();
    let b2 = rt.start(&shared("b2", "exec sleep 1004")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (out, _, _) = collect(rt.exec(&a, ps()).await.unwrap()).await;
    assert!(out.contains("sleep 1004"), "{out}");
    for id in [&a, &b2, &alone] {
        rt.stop(id, 1_000).await.unwrap();
        rt.remove(id).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{pause_pid}/ns")).exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let gone = std::fs::read_to_string(format!("/proc/{pause_pid}/stat"))
        .map(|s| s.contains(") Z "))
        .unwrap_or(true);
    assert!(gone, "the pause process ends with the pod's last container");
    assert!(!f.dir.join("state/pods/u-shared").exists());
    assert!(!mounted_under(&f.dir), "the PID namespace pin is unmounted");
}

#[tokio::test]
async fn runtime_default_seccomp_denies_mount_and_unshare_even_with_cap_sys_admin() {
    require_isolation!();
    let f = Fixture::new();
    let rt = f.runtime();
    let script = "grep Seccomp: /proc/self/status; mkdir -p /mnt; \
                  mount -t tmpfs none /mnt && echo MOUNTED; \
                  unshare -u true && echo UNSHARED; echo done";
    let mut spec = f.sh("u-sec", "default", script);
    spec.security.capabilities_add = vec!["SYS_ADMIN".into()];
    spec.security.seccomp = SeccompProfile::RuntimeDefault;
    let (log, code, _) = run(rt.as_ref(), &spec).await;
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("Seccomp:\t2"), "a filter is installed: {log}");
    assert!(
        !log.contains("MOUNTED") && !log.contains("UNSHARED"),
        "{log}"
    );
    assert!(log.contains("Operation not permitted"), "EPERM: {log}");

    // The same container unconfined: the capability alone allows both.
    let mut spec = f.sh("u-sec", "unconfined", script);
    spec.security.capabilities_add = vec!["SYS_ADMIN".into()];
    let (log, code, _) = run(rt.as_ref(), &spec).await;
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("Seccomp:\t0"), "{log}");
    assert!(log.contains("MOUNTED") && log.contains("UNSHARED"), "{log}");

    // exec runs under the container's filter too.
    let mut spec = f.sh("u-sec", "exec", "exec sleep 1000");
    spec.security.seccomp = SeccompProfile::RuntimeDefault;
    let id = rt.start(&spec).await.unwrap();
    let (out, _, code) = collect(
        rt.exec(&id, exec_req(&["grep", "Seccomp:", "/proc/self/status"]))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((out.as_str(), code), ("Seccomp:\t2\n", 0));
    rt.stop(&id, 1_000).await.unwrap();
    rt.remove(&id).await.unwrap();

    // Localhost profiles are refused with a clear message.
    let mut spec = f.sh("u-sec", "local", "true");
    spec.security.seccomp = SeccompProfile::Localhost("profiles/audit.json".into());
    match rt.start(&spec).await {
        Err(RuntimeError::InvalidSpec(msg)) => {
            assert!(
                msg.contains("Localhost") && msg.contains("not supported"),
                "{msg}"
            )
        }
        other => panic!("expected InvalidSpec, got {other:?}"),
    }
}

/// `running.json` of container `id`: (supervisor pid, main pid).
fn running_pids(f: &Fixture, id: &ContainerId) -> (i32, i32) {
    let path = f
        .dir
        .join("state/containers")
        .join(&id.0)
        .join("running.json");
    let running: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let pid = |k: &str| running[k]["pid"].as_i64().unwrap() as i32;
    (pid("supervisor"), pid("main"))
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

#[tokio::test]
async fn the_startup_sweep_removes_leftovers_of_dead_pods_and_keeps_running_ones() {
    require_isolation!();
    let f = Fixture::new();
    let rt = f.runtime();
    let shared = |uid: &str, script: &str| {
        let mut spec = f.sh(uid, "c", script);
        spec.security.share_process_namespace = true;
        spec
    };
    let live = rt
        .start(&shared("u-live", "exec sleep 1001"))
        .await
        .unwrap();
    let dead = rt
        .start(&shared("u-dead", "exec sleep 1002"))
        .await
        .unwrap();
    let live_cg = rt.cgroup(&live).unwrap();
    let dead_cg = rt.cgroup(&dead).unwrap();
    // The agent and the dead pod's supervisor are SIGKILLed; the container
    // process goes too (what a node crash or OOM kill leaves behind).
    let (sup, main) = running_pids(&f, &dead);
    for pid in [sup, main] {
        // SAFETY: kill has no memory-safety requirements.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    drop(rt);
    // Fabricated leftovers of a pod with no containers left (only its pod
    // directory): a pinned namespace, and a cgroup with a process in it.
    let cg_parent = live_cg
        .dirs
        .values()
        .next()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let stray_cg = cg_parent.join("podu-stray");
    // Another agent's pod on this host: not this agent's to remove.
    let foreign_cg = cg_parent.join("podof-another-agent");
    std::fs::create_dir_all(&foreign_cg).unwrap();
    std::fs::create_dir_all(stray_cg.join("c")).unwrap();
    let mut stray = std::process::Command::new("sleep")
        .arg("1003")
        .spawn()
        .unwrap();
    std::fs::write(stray_cg.join("c/cgroup.procs"), stray.id().to_string()).unwrap();
    let stray_pin = f.dir.join("state/pods/u-stray/ns/ipc");
    std::fs::create_dir_all(stray_pin.parent().unwrap()).unwrap();
    std::fs::write(&stray_pin, "").unwrap();
    let status = std::process::Command::new("mount")
        .args(["--bind", "/proc/self/ns/ipc"])
        .arg(&stray_pin)
        .status()
        .unwrap();
    assert!(status.success());
    let dead_pause = f.dir.join("state/pods/u-dead/ns/pause.json");
    let pause: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&dead_pause).unwrap()).unwrap();
    let pause_pid = pause["pid"].as_i64().unwrap() as i32;
    let deadline = Instant::now() + Duration::from_secs(5);
    while (alive(main) || alive(sup)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(alive(pause_pid) && !alive(main));

    // The agent starts again.
    let rt = f.runtime();
    let report = rt.sweep_stale().unwrap();
    assert!(report.errors.is_empty(), "{report:?}");
    assert!(!f.dir.join("state/pods/u-dead").exists(), "{report:?}");
    assert!(!f.dir.join("state/pods/u-stray").exists(), "{report:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pause_pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alive(pause_pid), "the dead pod's pause process is killed");
    assert!(!stray_cg.exists(), "{report:?}");
    assert!(foreign_cg.exists(), "other agents' pods are left alone");
    std::fs::remove_dir(&foreign_cg).unwrap();
    assert!(
        matches!(stray.try_wait(), Ok(Some(_))),
        "a process left in a stale cgroup is killed"
    );
    for dir in dead_cg.dirs.values() {
        assert!(
            !dir.exists() && !dir.parent().unwrap().exists(),
            "{}",
            dir.display()
        );
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains("u-dead") && !mounts.contains("u-stray"),
        "{mounts}"
    );

    // The running pod is untouched and still usable.
    assert!(rt.state(&live).await.unwrap().is_running());
    for dir in live_cg.dirs.values() {
        assert!(dir.exists(), "{}", dir.display());
    }
    assert!(f.dir.join("state/pods/u-live/ns/pause.json").exists());
    let (out, _, code) = collect(
        rt.exec(&live, exec_req(&["ps", "-o", "args"]))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("sleep 1001") && out.contains("__pause"),
        "{out}"
    );

    // The dead pod's record is still removable afterwards.
    assert!(!rt.state(&dead).await.unwrap().is_running());
    rt.remove(&dead).await.unwrap();
    rt.stop(&live, 1_000).await.unwrap();
    rt.remove(&live).await.unwrap();
    assert!(!mounted_under(&f.dir));
}

#[tokio::test]
async fn every_start_records_its_steps_in_all_three_processes_on_one_clock() {
    require_isolation!();
    let f = Fixture::new();
    let rt = f.runtime();
    let id = rt.start(&f.sh("steps", "c", "sleep 30")).await.unwrap();
    let steps = rt.start_steps(&id).unwrap();
    let of = |p: &str| {
        steps
            .iter()
            .find(|s| s.process == p)
            .unwrap_or_else(|| panic!("no {p} steps in {steps:?}"))
    };
    let (runtime, supervisor, init) = (of("runtime"), of("supervisor"), of("init"));
    let names: Vec<&str> = init.steps.iter().map(|(n, _)| n.as_str()).collect();
    for step in [
        "join cgroups",
        "assemble root",
        "pivot_root",
        "user and privileges",
    ] {
        assert!(names.contains(&step), "init steps {names:?} lack {step:?}");
    }
    // One monotonic clock: each process starts after the one that spawned
    // it, and the runtime returned only after the others' steps ended.
    assert!(
        runtime.start_mono_us < supervisor.start_mono_us,
        "{steps:?}"
    );
    assert!(supervisor.start_mono_us < init.start_mono_us, "{steps:?}");
    assert!(init.end_mono_us() <= supervisor.end_mono_us(), "{steps:?}");
    assert!(
        supervisor.end_mono_us() <= runtime.end_mono_us(),
        "{steps:?}"
    );
    rt.stop(&id, 0).await.unwrap();
    rt.remove(&id).await.unwrap();
}
