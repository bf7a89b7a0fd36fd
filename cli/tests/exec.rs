//! `kubectl exec`, `cp`, `attach` and `port-forward` on `keel up --agents
//! 1`, with the real kubectl 1.33 (exec: WebSocket `v5.channel.k8s.io`, or
//! plain SPDY; port-forward: SPDY tunneled over a WebSocket, or plain SPDY),
//! and the official Python client's `stream` / `portforward`
//! (`python/exec_portforward.py`); and the agent port itself, which serves
//! only the API server (mutual TLS from the cluster CA).

mod util;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use util::agent_port;
use util::kubectl::Kubectl;
use util::up::{http_get, is_ready, write, Up};
use util::{free_port, tail, wait_for};

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: shell}
spec:
  containers:
  - name: main
    image: keel/host
    command: ["sleep", "3600"]
---
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - name: echo
    image: keel/echo
---
apiVersion: v1
kind: Pod
metadata: {name: ticker}
spec:
  containers:
  - name: tick
    image: keel/host
    command: ["sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done"]
"#;

fn ready(k: &Kubectl, pod: &str) -> bool {
    let o = k.run(&["get", "pod", pod, "-o", "json"]);
    o.status.success()
        && serde_json::from_slice(&o.stdout)
            .map(|p| is_ready(&p))
            .unwrap_or(false)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs kubectl with `input` on stdin.
fn with_stdin(k: &Kubectl, args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = k
        .cmd(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn kubectl_and_python_stream_through_the_agent() {
    let up = Up::start(1, &[]);
    let k = up.kubectl();
    let f = write(up.dir.path(), "pods.yaml", PODS);
    k.ok(&["apply", "-f", f.to_str().unwrap()]);
    for pod in ["shell", "web", "ticker"] {
        wait_for(
            &format!("pod {pod} Ready"),
            90,
            || ready(&k, pod),
            || up.log(),
        );
    }

    exec_streams_and_exit_codes(&k, &up);
    exec_errors(&k);
    exec_over_plain_spdy(&k);
    exec_tty(&k);
    cp_in_and_out(&k, up.dir.path());
    attach_follows_output(&k);
    port_forward_reaches_the_pod(&k, &up, true);
    port_forward_reaches_the_pod(&k, &up, false);
    python_client(&up);
    agent_port_serves_only_the_api_server(&k, &up);
}

/// A direct call to the agent port is refused unless it comes from the
/// API server: plaintext, TLS without a client certificate, and the
/// node's own client certificate (from the cluster CA, but not the API
/// server's) all fail; the API server's certificate works, and the
/// agent's serving certificate verifies against the cluster CA and the
/// Node's InternalIP.
fn agent_port_serves_only_the_api_server(k: &Kubectl, up: &Up) {
    let nodes = k.json(&["get", "nodes", "-o", "json"]);
    let node = &nodes["items"][0];
    let name = node["metadata"]["name"].as_str().unwrap();
    let (ip, port) = agent_port::endpoint(node);
    let data = up.data_dir();
    let ca = agent_port::ca(&data);
    let apiserver = agent_port::apiserver(&data);
    let node_id = agent_port::node(&data, name);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let plain = agent_port::stats(None, None, &ip, port).await;
        assert!(plain.is_err(), "plaintext h2c was served: {plain:?}");
        let anonymous = agent_port::stats(Some(&ca), None, &ip, port).await;
        assert!(
            anonymous.is_err(),
            "TLS without a client certificate was served: {anonymous:?}"
        );
        let as_node = agent_port::stats(Some(&ca), Some(&node_id), &ip, port)
            .await
            .expect_err("the node's certificate was served");
        assert_eq!(
            as_node.code,
            Some(tonic::Code::PermissionDenied),
            "{as_node:?}"
        );
        assert!(
            as_node.message.contains(&format!("system:node:{name}"))
                && as_node.message.contains("kube-apiserver-kubelet-client"),
            "{as_node:?}"
        );
        agent_port::stats(Some(&ca), Some(&apiserver), &ip, port)
            .await
            .expect("the API server's certificate is served");
    });
    let plain = http_get(&format!("{ip}:{port}"), "/metrics/resource").unwrap_or_default();
    assert!(
        !plain.contains("node_cpu_usage"),
        "served in plaintext: {plain}"
    );
    let as_node =
        agent_port::https_get(&ca, Some(&node_id), &ip, port, "/metrics/resource").unwrap();
    assert!(as_node.starts_with("HTTP/1.1 403"), "{as_node}");
    assert!(
        as_node.contains("kube-apiserver-kubelet-client"),
        "{as_node}"
    );
    let metrics =
        agent_port::https_get(&ca, Some(&apiserver), &ip, port, "/metrics/resource").unwrap();
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
}

fn exec_streams_and_exit_codes(k: &Kubectl, up: &Up) {
    let o = k.run(&["exec", "shell", "--", "sh", "-c", "echo out; echo err >&2"]);
    assert!(
        o.status.success(),
        "{}\n{}",
        text(&o.stderr),
        tail(&up.log(), 40)
    );
    assert_eq!(text(&o.stdout), "out\n");
    assert_eq!(text(&o.stderr), "err\n");

    let o = with_stdin(
        k,
        &["exec", "-i", "shell", "--", "cat"],
        b"line one\nline two\n",
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "line one\nline two\n");

    let o = k.run(&["exec", "shell", "--", "sh", "-c", "exit 3"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("exit code 3"),
        "{}",
        text(&o.stderr)
    );
}

/// What kubectl before 1.30 speaks (and 1.30+ after a failed WebSocket
/// upgrade): SPDY/3.1 with `v4`/`v5.channel.k8s.io`.
fn exec_over_plain_spdy(k: &Kubectl) {
    let spdy = |args: &[&str], input: &[u8]| {
        let mut c = k.cmd(args);
        c.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    };
    let o = spdy(
        &["exec", "shell", "--", "sh", "-c", "echo out; echo err >&2"],
        b"",
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(
        (text(&o.stdout), text(&o.stderr)),
        ("out\n".into(), "err\n".into())
    );
    let o = spdy(&["exec", "-i", "shell", "--", "cat"], b"over spdy\n");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "over spdy\n");
    let o = spdy(&["exec", "shell", "--", "sh", "-c", "exit 4"], b"");
    assert_eq!(o.status.code(), Some(4), "{}", text(&o.stderr));
}

fn exec_errors(k: &Kubectl) {
    let o = k.run(&["exec", "shell", "-c", "nope", "--", "true"]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("nope"), "{}", text(&o.stderr));

    let o = k.run(&["exec", "missing", "--", "true"]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("NotFound") || text(&o.stderr).contains("not found"),
        "{}",
        text(&o.stderr)
    );

    // Not an upgrade: a 400 Status naming what to do.
    let o = k.run(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/pods/shell/exec?command=true&stdout=true",
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("Upgrade request required"),
        "{}",
        text(&o.stderr)
    );

    let o = k.run(&["exec", "shell", "--", "/no/such/program"]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("/no/such/program"),
        "{}",
        text(&o.stderr)
    );
}

/// `kubectl exec -t` needs a terminal on its own stdin: `script` gives it
/// one. The command sees a pty whose size is kubectl's terminal's.
fn exec_tty(k: &Kubectl) {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipping the kubectl tty check: no `script` (util-linux)");
        return;
    }
    let kubectl = format!(
        "stty cols 97 rows 31; KUBECONFIG={} KUBECACHEDIR={} kubectl exec -it shell -- sh -c 'tty; stty size'",
        k.kubeconfig.display(),
        std::env::temp_dir().join("keel-exec-tty-cache").display()
    );
    let o = Command::new("script")
        .args(["-qec", &kubectl, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", text(&o.stderr));
    assert!(out.contains("/dev/pts/"), "{out}");
    assert!(out.contains("31 97"), "{out}");
}

fn cp_in_and_out(k: &Kubectl, dir: &Path) {
    // A directory that exists only inside the pod on an isolating runtime
    // (the exec runtime's containers see the host's filesystem instead).
    let inside = format!("/tmp/keel-cp-{}", std::process::id());
    k.ok(&["exec", "shell", "--", "mkdir", "-p", &inside]);
    let src = write(dir, "local.txt", "copied through tar\n");
    let dest = format!("shell:{inside}/in.txt");
    k.ok(&["cp", src.to_str().unwrap(), &dest]);
    let cat = k.ok(&["exec", "shell", "--", "cat", &format!("{inside}/in.txt")]);
    assert_eq!(cat, "copied through tar\n");
    let back = dir.join("back.txt");
    k.ok(&["cp", &dest, back.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(back).unwrap(),
        "copied through tar\n"
    );
    k.ok(&["exec", "shell", "--", "rm", "-r", &inside]);
}

/// Reads `child`'s stdout lines in a thread until one contains `want`.
fn wait_line(child: &mut std::process::Child, want: &str, secs: u64) -> Option<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let want = want.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.contains(&want) {
                let _ = tx.send(line);
                return;
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(secs)).ok()
}

fn attach_follows_output(k: &Kubectl) {
    let mut child = k
        .cmd(&["attach", "ticker"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let line = wait_line(&mut child, "tick", 60);
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.is_some(), "kubectl attach printed no new output");
}

/// `websockets: false` makes kubectl use plain SPDY/3.1 (what clients
/// before 1.31 do) instead of SPDY tunneled in a WebSocket.
fn port_forward_reaches_the_pod(k: &Kubectl, up: &Up, websockets: bool) {
    let port = free_port();
    let mut child = k
        .cmd(&[
            "port-forward",
            "--address",
            "127.0.0.1",
            "pod/web",
            &format!("{port}:8080"),
        ])
        .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", websockets.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    let mut answer = String::new();
    for i in 0..3 {
        wait_for(
            "an answer through kubectl port-forward",
            60,
            || match http_get(&addr, &format!("/through-forward-{i}")) {
                Some(a) if a.contains("pod=web") => {
                    answer = a;
                    true
                }
                _ => false,
            },
            || tail(&up.log(), 40),
        );
        assert!(
            answer.contains(&format!("path=/through-forward-{i}")),
            "{answer}"
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn python_client(up: &Up) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/exec_portforward.py");
    let o = Command::new("python3")
        .arg(script)
        .arg(up.data_dir().join("kubeconfig"))
        .args(["default", "shell", "web"])
        .env("PYTHONUNBUFFERED", "1")
        .output()
        .expect("python3 runs");
    let out = text(&o.stdout);
    assert!(
        o.status.success(),
        "exec_portforward.py failed:\n{out}\n{}\n--- keel up log ---\n{}",
        text(&o.stderr),
        tail(&up.log(), 40)
    );
    assert_eq!(out.matches("ok ").count(), 5, "{out}");
}
