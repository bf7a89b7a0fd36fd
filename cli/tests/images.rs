//! The keel binary serves the built-in images the exec runtime runs.

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn keel_image_echo_answers_with_the_pod_identity() {
    let port = util::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["image", "echo"])
        .env("PORT", port.to_string())
        .env("POD_IP", "127.0.0.1")
        .env("POD_NAME", "web-1")
        .env("POD_NAMESPACE", "shop")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let reply = loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            s.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            break out;
        }
        assert!(Instant::now() < deadline, "keel image echo never listened");
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply.contains("pod=web-1")
            && reply.contains("namespace=shop")
            && reply.contains("path=/hello"),
        "{reply}"
    );
}
