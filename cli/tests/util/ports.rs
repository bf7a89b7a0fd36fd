//! Loopback ports for test servers that must know their port before they
//! start (peers name each other in `--initial-cluster`; restarts reuse the
//! same addresses).
//!
//! Why not "bind port 0, read it, close it": the kernel hands that port out
//! again, to another test process's bind to port 0 or to an outgoing
//! connection's source port, before our child binds it. A replica then
//! meets some other server on its own port (seen in CI as a gRPC
//! `Unimplemented` from a peer port). Here ports come from below the
//! kernel's ephemeral range, which the kernel never picks by itself, and
//! each is reserved across processes by an advisory lock on a file named
//! after it, held until this test process exits.
//!
//! Guarantee: no two live test processes using this module get the same
//! port, and no bind to port 0 anywhere on the machine takes it.
//! Panics (a test failure) when no port in the range is free.

use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Mutex;

/// Reservations held for the life of the test process; dropping a file
/// would release its lock.
static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());

const RANGE_LOW: u16 = 20_000;

/// A port on `ip` (a loopback address) that no other test process holds
/// and nothing listens on now.
pub fn reserve(ip: &str) -> u16 {
    let high = ephemeral_low().saturating_sub(1).max(RANGE_LOW + 1_000);
    let span = u32::from(high - RANGE_LOW);
    let dir = lock_dir();
    // Start somewhere different in each process so reservations rarely
    // contend.
    let start = (std::process::id().wrapping_mul(2_654_435_761) >> 8) % span;
    for step in 0..span {
        let port = RANGE_LOW + ((start + step) % span) as u16;
        let Ok(file) = File::create(dir.join(port.to_string())) else {
            continue;
        };
        if file.try_lock().is_err() {
            continue;
        }
        // Someone outside the tests may listen there.
        if TcpListener::bind((ip, port)).is_err() {
            continue;
        }
        HELD.lock().unwrap().push(file);
        return port;
    }
    panic!("no free test port in {RANGE_LOW}..{high} on {ip}");
}

/// The lowest port the kernel picks for port-0 binds and outgoing
/// connections (`net.ipv4.ip_local_port_range`).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

fn lock_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("keel-test-ports");
    std::fs::create_dir_all(&dir).expect("create the test port lock dir");
    dir
}
