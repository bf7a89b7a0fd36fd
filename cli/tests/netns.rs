//! `keel agent --network netns` end to end: a server and two agents, each
//! agent in a "host" network namespace the test creates (joined by a veth,
//! 192.168.233.1 and .2, which exist only inside those namespaces). Pods
//! get 10.244.x IPs in namespaces of their own; a pod on one node reaches a
//! pod on the other over host-gw routes; an agent restart keeps pod IPs; a
//! deleted pod's IP is reused and its veth and namespace pin are gone.
//!
//! Needs root, `ip`, `kubectl`, Debian's busybox-static and the isolating
//! runtime; otherwise prints why and checks nothing.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use util::{free_port, kill_processes_under, tail, unmount_under, wait_for};

const BUSYBOX: &str = "/bin/busybox";
const H1_IP: &str = "192.168.233.1";
const H2_IP: &str = "192.168.233.2";

fn unsupported() -> Option<String> {
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

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The test's two hosts and everything started in them; torn down on drop.
struct Hosts {
    ns: [String; 2],
    dir: tempfile::TempDir,
    server: Option<Child>,
    agents: [Option<Child>; 2],
    cache: tempfile::TempDir,
}

impl Hosts {
    fn new() -> Hosts {
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
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `keel <args>` inside host `h`'s network namespace (nsenter changes
    /// only the network namespace, so pins stay visible to the test).
    fn spawn(&self, h: usize, log: &str, args: &[&str]) -> Child {
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

    fn start_server(&mut self) {
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
            ],
        );
        self.server = Some(child);
    }

    fn start_agent(&mut self, h: usize) {
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

    fn kill_agent(&mut self, h: usize) {
        if let Some(mut c) = self.agents[h].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
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
    fn kubectl(&self, args: &[&str]) -> std::process::Output {
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

    fn pod(&self, name: &str) -> Option<Value> {
        let o = self.kubectl(&["get", "pod", name, "-o", "json"]);
        o.status
            .success()
            .then(|| serde_json::from_slice(&o.stdout).unwrap())
    }

    /// Waits until pod `name` is Running with a pod IP; returns (uid, IP).
    fn running(&self, name: &str) -> (String, String) {
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

    fn host_veths(&self, h: usize) -> String {
        let o = Command::new("ip")
            .args(["-n", &self.ns[h], "-o", "link", "show", "type", "veth"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
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
}

/// `<images>/busybox/latest`: busybox with the applets the pods use.
fn busybox_image(images: &Path) {
    let dir = images.join("busybox/latest");
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
    for a in ["sh", "httpd", "mkdir", "echo", "sleep", "hostname"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    std::fs::write(dir.join("image.json"), r#"{"cmd": ["sh"]}"#).unwrap();
}

fn pod_yaml(name: &str, node: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 0
  containers:
  - name: web
    image: busybox
    command: ["sh", "-c", "mkdir -p /www && echo served-by-$(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www"]
"#
    )
}

/// An HTTP GET of `/index.html` on `addr` from inside the network
/// namespace pinned at `netns` (a pod's): the body, or the error.
fn get_from(netns: &Path, addr: SocketAddr) -> std::io::Result<String> {
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

#[test]
fn pods_in_their_own_namespaces_talk_across_nodes() {
    if let Some(why) = unsupported() {
        eprintln!("skipping: netns mode cannot be tested here: {why}");
        return;
    }
    let mut hosts = Hosts::new();
    busybox_image(&hosts.path("images"));
    hosts.start_server();
    wait_for(
        "server kubeconfig",
        30,
        || hosts.path("server/kubeconfig").exists(),
        || hosts.log(),
    );
    hosts.start_agent(0);
    hosts.start_agent(1);
    std::fs::write(
        hosts.path("pods.yaml"),
        format!("{}---\n{}", pod_yaml("client", "n0"), pod_yaml("web", "n1")),
    )
    .unwrap();
    let pods = hosts.path("pods.yaml").display().to_string();
    wait_for(
        "pods created",
        30,
        || hosts.kubectl(&["apply", "-f", &pods]).status.success(),
        || hosts.log(),
    );
    let (client_uid, client_ip) = hosts.running("client");
    let (web_uid, web_ip) = hosts.running("web");
    assert!(client_ip.starts_with("10.244."), "client IP {client_ip}");
    assert!(web_ip.starts_with("10.244."), "web IP {web_ip}");
    assert_ne!(
        client_ip.rsplit_once('.').unwrap().0,
        web_ip.rsplit_once('.').unwrap().0,
        "the nodes have different podCIDRs"
    );

    // Pod to pod across nodes, over host-gw routes (the client's side of
    // the exchange runs in the client pod's own namespace).
    let client_ns = hosts.path(&format!("agent0/pods/{client_uid}/ns/net"));
    let web_addr: SocketAddr = format!("{web_ip}:8080").parse().unwrap();
    let body = std::cell::RefCell::new(String::new());
    wait_for(
        "client pod reaches web pod",
        30,
        || {
            let got = get_from(&client_ns, web_addr).unwrap_or_else(|e| e.to_string());
            *body.borrow_mut() = got;
            body.borrow().contains("served-by-web")
        },
        || format!("last answer: {}\n{}", body.borrow(), hosts.log()),
    );

    // Agent restart: the pod keeps its IP and stays reachable.
    hosts.kill_agent(1);
    hosts.start_agent(1);
    std::thread::sleep(Duration::from_secs(2));
    let (uid_after, ip_after) = hosts.running("web");
    assert_eq!(
        (uid_after.as_str(), ip_after.as_str()),
        (web_uid.as_str(), web_ip.as_str())
    );
    assert!(get_from(&client_ns, web_addr)
        .unwrap()
        .contains("served-by-web"));

    // Deletion: veth and pin go; the next pod on the node reuses the IP.
    let web_pin = hosts.path(&format!("agent1/pods/{web_uid}/ns/net"));
    assert!(hosts
        .host_veths(1)
        .contains(&keel_node::podnet::veth_name(&web_uid)));
    assert!(
        hosts
            .kubectl(&["delete", "pod", "web", "--wait=true", "--timeout=60s"])
            .status
            .success(),
        "{}",
        hosts.log()
    );
    wait_for(
        "web veth and pin removed",
        30,
        || !hosts.host_veths(1).contains(" kv") && !web_pin.exists(),
        || hosts.log(),
    );
    std::fs::write(hosts.path("web2.yaml"), pod_yaml("web2", "n1")).unwrap();
    let web2 = hosts.path("web2.yaml").display().to_string();
    assert!(hosts.kubectl(&["apply", "-f", &web2]).status.success());
    let (_, web2_ip) = hosts.running("web2");
    assert_eq!(web2_ip, web_ip, "the released IP is handed out again");

    // Deleting every pod leaves no pod veth and no pinned namespace.
    assert!(hosts
        .kubectl(&["delete", "pods", "--all", "--wait=true", "--timeout=60s"])
        .status
        .success());
    wait_for(
        "no pod veths or pins left",
        30,
        || {
            let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            !hosts.host_veths(0).contains(" kv")
                && !hosts.host_veths(1).contains(" kv")
                && !mounts.contains(&format!("{}/agent", hosts.dir.path().display()))
        },
        || hosts.log(),
    );
}
