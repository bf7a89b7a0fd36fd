//! Two "hosts" for netns-mode tests: network namespaces the test creates
//! (joined by a veth, 192.168.233.1 and .2, which exist only inside them),
//! a server in the first and an agent per host, all torn down on drop.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{free_port, kill_processes_under, tail, unmount_under, wait_for};

pub const BUSYBOX: &str = "/bin/busybox";
pub const H1_IP: &str = "192.168.233.1";
pub const H2_IP: &str = "192.168.233.2";

pub fn unsupported() -> Option<String> {
    let missing = keel_node::runtime::isolated::missing_features(Path::new("/sys/fs/cgroup"));
    if !missing.is_empty() {
        return Some(missing.join(", "));
    }
    for (bin, what) in [(BUSYBOX, "busybox-static"), ("/usr/sbin/ip", "iproute2")] {
        if !Path::new(bin).is_file() {
            return Some(format!("{bin} missing ({what})"));
        }
    }
    let kubectl = Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output();
    (!kubectl.is_ok_and(|o| o.status.success())).then(|| "no kubectl".to_string())
}

pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The test's two hosts and everything started in them; torn down on drop.
pub struct Hosts {
    pub ns: [String; 2],
    pub dir: tempfile::TempDir,
    server: Option<Child>,
    agents: [Option<Child>; 2],
    cache: tempfile::TempDir,
    torn_down: bool,
}

impl Hosts {
    pub fn new() -> Hosts {
        let tag = format!("{}-{}", std::process::id(), free_port());
        let ns = [format!("keeltest-h1-{tag}"), format!("keeltest-h2-{tag}")];
        for n in &ns {
            ip(&["netns", "add", n]);
            ip(&["-n", n, "link", "set", "lo", "up"]);
        }
        let (a, b) = (
            format!("kte1{}", free_port()),
            format!("kte2{}", free_port()),
        );
        ip(&[
            "-n", &ns[0], "link", "add", &a, "type", "veth", "peer", "name", &b, "netns", &ns[1],
        ]);
        ip(&[
            "-n",
            &ns[0],
            "addr",
            "add",
            &format!("{H1_IP}/24"),
            "dev",
            &a,
        ]);
        ip(&[
            "-n",
            &ns[1],
            "addr",
            "add",
            &format!("{H2_IP}/24"),
            "dev",
            &b,
        ]);
        ip(&["-n", &ns[0], "link", "set", &a, "up"]);
        ip(&["-n", &ns[1], "link", "set", &b, "up"]);
        Hosts {
            ns,
            dir: tempfile::tempdir().unwrap(),
            server: None,
            agents: [None, None],
            cache: tempfile::tempdir().unwrap(),
            torn_down: false,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `keel <args>` inside host `h`'s network namespace (nsenter changes
    /// only the network namespace, so pins stay visible to the test).
    pub fn spawn(&self, h: usize, log: &str, args: &[&str]) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(log))
            .unwrap();
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns[h]))
            .arg(env!("CARGO_BIN_EXE_keel"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start keel")
    }

    /// `keel server` in h1 with the API on H1_IP and a 10.244.0.0/16
    /// cluster CIDR; `extra` flags are appended.
    pub fn start_server(&mut self, extra: &[&str]) {
        let peer = format!("127.0.0.1:{}", free_port());
        let data = self.path("server").display().to_string();
        let child = self.spawn(
            0,
            "server.log",
            &[
                "server",
                "--name",
                "r0",
                "--data-dir",
                &data,
                "--listen-client",
                &format!("127.0.0.1:{}", free_port()),
                "--listen-peer",
                &peer,
                "--listen-api",
                &format!("{H1_IP}:0"),
                "--initial-cluster",
                &format!("r0=http://{peer}"),
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
                "--cluster-cidr",
                "10.244.0.0/16",
            ]
            .into_iter()
            .chain(extra.iter().copied())
            .collect::<Vec<_>>(),
        );
        self.server = Some(child);
    }

    pub fn start_agent(&mut self, h: usize) {
        let node_ip = [H1_IP, H2_IP][h];
        let root = self.path(&format!("agent{h}")).display().to_string();
        let images = self.path("images").display().to_string();
        let kubeconfig = self.path("server/kubeconfig").display().to_string();
        let child = self.spawn(
            h,
            &format!("agent{h}.log"),
            &[
                "agent",
                "--kubeconfig",
                &kubeconfig,
                "--node-name",
                &format!("n{h}"),
                "--root-dir",
                &root,
                "--image-dir",
                &images,
                "--network",
                "netns",
                "--runtime",
                "keel",
                "--node-ip",
                node_ip,
                "--listen-logs",
                &format!("{node_ip}:0"),
                "--disable-ingress",
                "--allowed-registries",
                "127.0.0.1,localhost",
                "--heartbeat-interval-ms",
                "1000",
                "--restart-backoff-base-ms",
                "500",
            ],
        );
        self.agents[h] = Some(child);
    }

    pub fn kill_agent(&mut self, h: usize) {
        if let Some(mut c) = self.agents[h].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        ["server.log", "agent0.log", "agent1.log"]
            .iter()
            .map(|l| {
                format!(
                    "== {l}\n{}",
                    tail(
                        &std::fs::read_to_string(self.path(l)).unwrap_or_default(),
                        25
                    )
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// kubectl inside h1 (where the API listens).
    pub fn kubectl(&self, args: &[&str]) -> std::process::Output {
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns[0]))
            .arg("kubectl")
            .args(args)
            .env("KUBECONFIG", self.path("server/kubeconfig"))
            .env("KUBECACHEDIR", self.cache.path())
            .env("HOME", self.cache.path())
            .output()
            .expect("kubectl runs")
    }

    pub fn pod(&self, name: &str) -> Option<Value> {
        let o = self.kubectl(&["get", "pod", name, "-o", "json"]);
        o.status
            .success()
            .then(|| serde_json::from_slice(&o.stdout).unwrap())
    }

    /// Waits until pod `name` is Running with a pod IP; returns (uid, IP).
    pub fn running(&self, name: &str) -> (String, String) {
        let mut out = None;
        wait_for(
            &format!("pod {name} running"),
            60,
            || {
                out = self
                    .pod(name)
                    .filter(|p| p["status"]["phase"] == "Running")
                    .and_then(|p| {
                        let ip = p["status"]["podIP"].as_str()?.to_string();
                        Some((p["metadata"]["uid"].as_str()?.to_string(), ip))
                    });
                out.is_some()
            },
            || self.log(),
        );
        out.unwrap()
    }

    pub fn host_veths(&self, h: usize) -> String {
        let o = Command::new("ip")
            .args(["-n", &self.ns[h], "-o", "link", "show", "type", "veth"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Hosts {
    /// Stops everything and deletes both host namespaces (with the
    /// bridges, veths, routes and nft tables inside them). Idempotent.
    pub fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        let _ = self.kubectl(&["delete", "pods", "--all", "--wait=false"]);
        for c in self.agents.iter_mut().chain([&mut self.server]).flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        kill_processes_under(self.dir.path());
        unmount_under(self.dir.path());
        for n in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }

    /// `kubectl exec <pod> -- <cmd...>` (from h1): exit success and output.
    pub fn exec(&self, pod: &str, cmd: &[&str]) -> (bool, String) {
        let mut args = vec!["exec", pod, "--"];
        args.extend_from_slice(cmd);
        let o = self.kubectl(&args);
        (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    }

    /// `cmd` run inside host `h`'s network namespace: its stdout.
    pub fn in_host(&self, h: usize, cmd: &[&str]) -> String {
        let o = Command::new("ip")
            .args(["netns", "exec", &self.ns[h]])
            .args(cmd)
            .output()
            .expect("run ip netns exec");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// `<images>/busybox/latest`: busybox with the applets the pods use.
pub fn busybox_image(images: &Path) {
    let dir = images.join("busybox/latest");
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
    for a in [
        "sh", "httpd", "mkdir", "echo", "sleep", "hostname", "wget", "nslookup", "cat", "sed",
        "tail", "nc",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    std::fs::write(dir.join("image.json"), r#"{"cmd": ["sh"]}"#).unwrap();
}

/// An HTTP GET of `/index.html` on `addr` from inside the network
/// namespace pinned at `netns` (a pod's): the body, or the error.
pub fn get_from(netns: &Path, addr: SocketAddr) -> std::io::Result<String> {
    let netns = netns.to_path_buf();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&netns)?;
        // SAFETY: setns on a descriptor `f` owns; it moves this thread only.
        if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
    .join()
    .unwrap()
}
