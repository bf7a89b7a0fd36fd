//! Netns mode's plumbing (`keel_node::podnet`) against the kernel: pod
//! namespaces, veths on the node bridge, host-gw routes between two
//! "hosts", teardown and the stale-veth sweep.
//!
//! Runs as root only (skips with a reason otherwise). Every address used
//! (10.244.x pods, 192.168.231.x hosts) exists only inside network
//! namespaces this test creates (`ip netns add keeltest-…`), and every
//! packet stays inside them; the test's own namespace is never changed.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use keel_node::podnet::{self, hostgw, PodNet};

fn skip_reason() -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root");
    }
    let ok = Command::new("ip")
        .arg("-V")
        .output()
        .map(|o| o.status.success());
    (ok.ok() != Some(true)).then_some("no `ip` command for test setup")
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A named network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(role: &str) -> Netns {
        let name = format!("keeltest-{role}-{}-{}", std::process::id(), rand_suffix());
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Netns(name)
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.0)
    }

    /// `ip -n <ns> <args>` output.
    fn ip_out(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .arg("-n")
            .arg(&self.0)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn rand_suffix() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    t.subsec_nanos() % 100_000
}

/// Runs `f` on a thread inside the network namespace at `ns`.
fn in_ns<T: Send + 'static>(ns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_path_buf();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&ns).unwrap();
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// Runs the async `f` on a current-thread runtime inside `ns` (threads the
/// code under test spawns inherit the namespace).
fn block_in<T, F>(ns: &Path, f: impl FnOnce() -> F + Send + 'static) -> T
where
    T: Send + 'static,
    F: std::future::Future<Output = T>,
{
    in_ns(ns, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f())
    })
}

/// Echo server on `addr` inside `ns`: answers one connection with
/// `reply` + what it read. Returns once it listens.
fn serve_once(ns: &Path, addr: SocketAddr, reply: &'static str) -> std::thread::JoinHandle<()> {
    let ns = ns.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        let file = std::fs::File::open(&ns).unwrap();
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let l = TcpListener::bind(addr).unwrap();
        tx.send(()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap();
        s.write_all(reply.as_bytes()).unwrap();
        s.write_all(&buf[..n]).unwrap();
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    h
}

/// Connects from inside `ns` to `addr`, sends `msg`, returns the answer.
fn ask(ns: &Path, addr: SocketAddr, msg: &'static str) -> std::io::Result<String> {
    in_ns(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(msg.as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
}

#[test]
fn pods_on_two_hosts_talk_over_host_gw_and_teardown_leaves_nothing() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping: {why}");
        return;
    }
    // Two "hosts" on one link: 192.168.231.1 and .2, inside test namespaces.
    let h1 = Netns::new("h1");
    let h2 = Netns::new("h2");
    let (v1, v2) = (
        format!("kt1{}", rand_suffix()),
        format!("kt2{}", rand_suffix()),
    );
    ip(&[
        "-n", &h1.0, "link", "add", &v1, "type", "veth", "peer", "name", &v2, "netns", &h2.0,
    ]);
    ip(&["-n", &h1.0, "addr", "add", "192.168.231.1/24", "dev", &v1]);
    ip(&["-n", &h2.0, "addr", "add", "192.168.231.2/24", "dev", &v2]);
    ip(&["-n", &h1.0, "link", "set", &v1, "up"]);
    ip(&["-n", &h2.0, "link", "set", &v2, "up"]);

    let dir = tempfile::tempdir().unwrap();
    let root1 = dir.path().join("a1/pods");
    let root2 = dir.path().join("a2/pods");
    let net1 = PodNet::new(root1.clone(), "10.244.1.0/24").unwrap();
    let net2 = PodNet::new(root2.clone(), "10.244.2.0/24").unwrap();

    // Node setup and one pod per host; a second setup call is a no-op.
    let n1 = net1.clone();
    block_in(&h1.path(), move || async move {
        n1.prepare_node().await.unwrap();
        n1.setup_pod("pod-a", "10.244.1.2".parse().unwrap())
            .await
            .unwrap();
        n1.setup_pod("pod-a", "10.244.1.2".parse().unwrap())
            .await
            .unwrap();
    });
    let n2 = net2.clone();
    block_in(&h2.path(), move || async move {
        n2.prepare_node().await.unwrap();
        n2.setup_pod("pod-b", "10.244.2.5".parse().unwrap())
            .await
            .unwrap();
    });
    let pin_a = podnet::pin_path(&root1, "pod-a");
    let pin_b = podnet::pin_path(&root2, "pod-b");
    assert!(podnet::ns::is_pinned(&pin_a) && podnet::ns::is_pinned(&pin_b));
    let h1_links = h1.ip_out(&["-o", "link", "show", "master", "keel0"]);
    assert!(h1_links.contains(&podnet::veth_name("pod-a")), "{h1_links}");
    let fwd = in_ns(&h1.path(), || {
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap()
    });
    assert_eq!(fwd.trim(), "1", "forwarding on in the agent's namespace");

    // Same host: the bridge gateway reaches the pod.
    let srv = serve_once(&pin_a, "10.244.1.2:7070".parse().unwrap(), "a:");
    let got = ask(&h1.path(), "10.244.1.2:7070".parse().unwrap(), "from-h1").unwrap();
    assert_eq!(got, "a:from-h1");
    srv.join().unwrap();

    // Across hosts: no route yet, then host-gw routes on both sides.
    let no_route = ask(&pin_b, "10.244.1.2:7071".parse().unwrap(), "x");
    assert!(no_route.is_err(), "pod-b reached pod-a without a route");
    let want1 = [(
        "10.244.2.0/24".parse().unwrap(),
        "192.168.231.2".parse().unwrap(),
    )]
    .into();
    let want2 = [(
        "10.244.1.0/24".parse().unwrap(),
        "192.168.231.1".parse().unwrap(),
    )]
    .into();
    let (added, _) = block_in(&h1.path(), move || hostgw::reconcile(want1)).unwrap();
    assert_eq!(added, 1);
    block_in(&h2.path(), move || hostgw::reconcile(want2)).unwrap();
    let routes = h1.ip_out(&["route", "show", "proto", "77"]);
    assert!(
        routes.contains("10.244.2.0/24 via 192.168.231.2"),
        "{routes}"
    );
    let srv = serve_once(&pin_a, "10.244.1.2:7072".parse().unwrap(), "a:");
    let got = ask(&pin_b, "10.244.1.2:7072".parse().unwrap(), "from-pod-b").unwrap();
    assert_eq!(got, "a:from-pod-b");
    srv.join().unwrap();

    // A node leaving: its route goes, other routes are left alone.
    ip(&[
        "-n",
        &h1.0,
        "route",
        "add",
        "10.99.0.0/24",
        "via",
        "192.168.231.2",
    ]);
    let (_, deleted) = block_in(&h1.path(), || hostgw::reconcile(Default::default())).unwrap();
    assert_eq!(deleted, 1);
    let routes = h1.ip_out(&["route", "show"]);
    assert!(!routes.contains("10.244.2.0/24"), "{routes}");
    assert!(
        routes.contains("10.99.0.0/24"),
        "foreign route kept: {routes}"
    );

    // Teardown: veth and pin gone; the sweep removes a veth whose pod is
    // no longer assigned and keeps a live one.
    let n1 = net1.clone();
    block_in(&h1.path(), move || async move {
        n1.setup_pod("pod-c", "10.244.1.3".parse().unwrap())
            .await
            .unwrap();
        n1.teardown_pod("pod-a").await.unwrap();
    });
    assert!(!pin_a.exists(), "pin removed");
    let live: HashSet<String> = ["pod-x".to_string()].into();
    let swept = block_in(&h1.path(), move || async move {
        podnet::sweep_veths(&live).await
    })
    .unwrap();
    assert_eq!(swept, vec![podnet::veth_name("pod-c")]);
    let left = h1.ip_out(&["-o", "link", "show", "type", "veth"]);
    assert!(!left.contains(" kv"), "no pod veths left: {left}");
    block_in(&h1.path(), move || async move {
        podnet::teardown(&root1, "pod-c").await.unwrap();
        podnet::teardown(&root1, "pod-c").await.unwrap();
    });
    block_in(&h2.path(), move || async move {
        podnet::teardown(&root2, "pod-b").await.unwrap()
    });
    assert!(!pin_b.exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&dir.path().display().to_string()),
        "no pin mounts left"
    );
}

#[test]
fn setup_refuses_an_ip_outside_the_pod_cidr() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping: {why}");
        return;
    }
    let h = Netns::new("bad");
    let dir = tempfile::tempdir().unwrap();
    let net = PodNet::new(dir.path().join("pods"), "10.244.7.0/24").unwrap();
    let err = block_in(&h.path(), move || async move {
        for ip in ["10.244.8.2", "10.244.7.1"] {
            let e = net.setup_pod("p", ip.parse().unwrap()).await.unwrap_err();
            assert!(format!("{e:#}").contains("not a pod address"), "{e:#}");
        }
        net.setup_pod("p", "::1".parse().unwrap())
            .await
            .unwrap_err()
    });
    assert!(format!("{err:#}").contains("not IPv4"), "{err:#}");
    assert!(!podnet::pin_path(&dir.path().join("pods"), "p").exists());
}
