//! Which replica process dialed a proxied connection, found from `/proc`,
//! for every waiting connection at once, on one thread per run.
//!
//! Why batched: finding one socket's owner means reading the host's whole
//! TCP table (`/proc/net/tcp`) and every replica's fd table, so its cost
//! grows with every socket on the machine, another run's included. Done
//! once per accepted connection on tokio's blocking pool, the followers'
//! leader probes (a new connection to the leader every heartbeat) outran it
//! on a loaded machine: waiting connections grew the table, which made each
//! lookup slower still; up to hundreds of pool threads fought over the
//! pool's lock while the runner's only runtime thread spun on it to spawn
//! more; the proxies stopped accepting, every replica was cut off from
//! every other for good, and `keel chaos --real` hung (two runs at once
//! wedged that way). Here one read of each table answers everything that is
//! waiting, so a backlog costs one pass, not one pass per connection.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::mpsc;

use tokio::sync::oneshot;

/// A handle on the identifying thread; the thread ends once every handle
/// is dropped.
pub(crate) struct Identifier {
    tx: mpsc::Sender<Request>,
}

struct Request {
    dialer: SocketAddr,
    dialed: SocketAddr,
    /// The replicas' pids when the connection came in, by replica index.
    pids: Vec<Option<u32>>,
    reply: oneshot::Sender<Option<usize>>,
}

impl Identifier {
    /// Starts the thread. Errors: the thread could not be spawned.
    pub(crate) fn start() -> std::io::Result<Identifier> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("proxy-identify".into())
            .spawn(move || serve(rx))?;
        Ok(Identifier { tx })
    }

    /// Asks for the index in `pids` of the process owning the socket bound
    /// to `dialer` and connected to `dialed`. The answer is `None` if no
    /// replica owns it (another process, or the socket is already closed),
    /// or if the thread is gone.
    pub(crate) fn request(
        &self,
        dialer: SocketAddr,
        dialed: SocketAddr,
        pids: Vec<Option<u32>>,
    ) -> oneshot::Receiver<Option<usize>> {
        let (reply, answer) = oneshot::channel();
        // If the thread is gone, `reply` is dropped and the answer is an error.
        let _ = self.tx.send(Request {
            dialer,
            dialed,
            pids,
            reply,
        });
        answer
    }

    /// [`Identifier::request`], awaited.
    pub(crate) async fn identify(
        &self,
        dialer: SocketAddr,
        dialed: SocketAddr,
        pids: Vec<Option<u32>>,
    ) -> Option<usize> {
        self.request(dialer, dialed, pids).await.ok().flatten()
    }
}

fn serve(rx: mpsc::Receiver<Request>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let tuples: HashSet<(String, String)> = batch
            .iter()
            .filter_map(|r| Some((hex(r.dialer)?, hex(r.dialed)?)))
            .collect();
        let inodes = socket_inodes(&tuples);
        let mut owned: HashMap<u32, HashSet<u64>> = HashMap::new();
        for r in &batch {
            for pid in r.pids.iter().flatten() {
                owned.entry(*pid).or_insert_with(|| socket_fds(*pid));
            }
        }
        for r in batch {
            let who = (|| {
                let inode = inodes.get(&(hex(r.dialer)?, hex(r.dialed)?))?;
                r.pids
                    .iter()
                    .position(|p| p.is_some_and(|p| owned[&p].contains(inode)))
            })();
            let _ = r.reply.send(who);
        }
    }
}

/// An IPv4 address as `/proc/net/tcp` writes it: the address in
/// little-endian hex, the port in big-endian hex.
fn hex(a: SocketAddr) -> Option<String> {
    match a {
        SocketAddr::V4(v4) => Some(format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        )),
        SocketAddr::V6(_) => None,
    }
}

/// The inodes of the wanted `(local, remote)` IPv4 TCP sockets, from one
/// read of `/proc/net/tcp`. Closed sockets (inode 0) are left out.
fn socket_inodes(wanted: &HashSet<(String, String)>) -> HashMap<(String, String), u64> {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return HashMap::new();
    };
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() <= 9 {
                return None;
            }
            let key = (f[1].to_string(), f[2].to_string());
            let inode: u64 = f[9].parse().ok().filter(|i| *i != 0)?;
            wanted.contains(&key).then_some((key, inode))
        })
        .collect()
}

/// The inodes of the sockets process `pid` has open.
fn socket_fds(pid: u32) -> HashSet<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| {
            let link = std::fs::read_link(fd.path()).ok()?;
            link.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn finds_the_owner_of_many_waiting_sockets_at_once() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dialed = listener.local_addr().unwrap();
        let streams: Vec<_> = (0..20)
            .map(|_| std::net::TcpStream::connect(dialed).unwrap())
            .collect();
        let id = Identifier::start().unwrap();
        // This process plays replica 1; replica 0 is not running.
        let pids = vec![None, Some(std::process::id())];
        // All asked before any is awaited: they are answered together.
        let asked: Vec<_> = streams
            .iter()
            .map(|s| id.request(s.local_addr().unwrap(), dialed, pids.clone()))
            .collect();
        for a in asked {
            assert_eq!(a.await.unwrap(), Some(1));
        }
        let s = &streams[0];
        let other = id
            .identify(s.local_addr().unwrap(), dialed, vec![Some(1), None])
            .await;
        assert_eq!(other, None, "a socket no listed process owns");
        let gone = id
            .identify("127.0.0.1:1".parse().unwrap(), dialed, pids)
            .await;
        assert_eq!(gone, None, "a connection that does not exist");
    }
}
