//! Fault-injecting TCP proxies on loopback for real-process runs, one in
//! front of each replica's peer port: every peer reaches a replica through
//! its proxy. A proxy tells which replica dialed a connection (the process
//! owning the dialing socket, from `/proc`, see `identify.rs`), so each *ordered link*
//! `from -> to` (the connections `from` opens to `to`: its raft messages and
//! forwarded requests to `to`, and `to`'s answers) can be cut on its own.
//! Cutting both `a -> b` and `b -> a` partitions two replicas the way the
//! simulation does; cutting one is a one-way partition.
//!
//! Why not one proxy per ordered pair: a replica dials the peer address in
//! the raft membership, which is replicated, so every replica dials the same
//! address for a given peer (see the note in `real.rs`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::identify::Identifier;

/// Which ordered links are cut, and which process is which replica.
#[derive(Clone)]
pub struct Links {
    inner: Arc<Mutex<LinksInner>>,
    identifier: Arc<Identifier>,
}

#[derive(Default)]
struct LinksInner {
    /// The pid of each replica's running process, by replica index.
    pids: Vec<Option<u32>>,
    /// Cut links `(from, to)`.
    cut: BTreeSet<(usize, usize)>,
    conns: Vec<Conn>,
}

struct Conn {
    to: usize,
    /// The dialing replica, once known.
    from: Arc<OnceLock<Option<usize>>>,
    task: JoinHandle<()>,
}

impl Links {
    /// Errors: the thread that identifies dialers could not be started.
    pub fn new(replicas: usize) -> std::io::Result<Self> {
        let links = Links {
            inner: Arc::default(),
            identifier: Arc::new(Identifier::start()?),
        };
        links.lock().pids = vec![None; replicas];
        Ok(links)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LinksInner> {
        self.inner.lock().expect("links lock")
    }

    /// Replica `i` now runs as `pid` (or is not running).
    pub fn set_pid(&self, i: usize, pid: Option<u32>) {
        self.lock().pids[i] = pid;
    }

    /// Cuts `from -> to`: drops its open connections and refuses new ones.
    pub fn cut(&self, from: usize, to: usize) {
        let mut l = self.lock();
        l.cut.insert((from, to));
        // A connection whose dialer is not known yet is dropped too: the
        // dialer reconnects if it may.
        l.conns.retain(|c| {
            let hit = c.to == to && c.from.get().is_none_or(|f| *f == Some(from));
            if hit {
                c.task.abort();
            }
            !hit && !c.task.is_finished()
        });
    }

    /// Cuts every link between `a` and `b`, both ways.
    pub fn cut_between(&self, a: &[usize], b: &[usize]) {
        for &x in a {
            for &y in b {
                self.cut(x, y);
                self.cut(y, x);
            }
        }
    }

    pub fn heal_all(&self) {
        self.lock().cut.clear();
    }

    pub fn is_cut(&self, from: usize, to: usize) -> bool {
        self.lock().cut.contains(&(from, to))
    }

    /// The replica whose process owns the socket bound to `dialer` and
    /// connected to `dialed`, if any.
    async fn identify(&self, dialer: SocketAddr, dialed: SocketAddr) -> Option<usize> {
        let pids = self.lock().pids.clone();
        self.identifier.identify(dialer, dialed, pids).await
    }
}

/// The proxy in front of replica `to`'s peer port.
pub struct Proxy {
    pub addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`, the peer
    /// port of replica `to`, honouring `links`.
    pub async fn start(to: usize, upstream: SocketAddr, links: Links) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let accept = tokio::spawn(async move {
            while let Ok((inbound, dialer)) = listener.accept().await {
                let from: Arc<OnceLock<Option<usize>>> = Arc::default();
                let (l, f) = (links.clone(), from.clone());
                let task = tokio::spawn(forward(inbound, dialer, addr, upstream, to, l, f));
                let mut g = links.lock();
                g.conns.retain(|c| !c.task.is_finished());
                g.conns.push(Conn { to, from, task });
            }
        });
        Ok(Proxy { addr, accept })
    }
}

async fn forward(
    mut inbound: TcpStream,
    dialer: SocketAddr,
    proxy: SocketAddr,
    upstream: SocketAddr,
    to: usize,
    links: Links,
    from: Arc<OnceLock<Option<usize>>>,
) {
    let who = links.identify(dialer, proxy).await;
    {
        // Under the lock `cut` takes: either it sees who dialed and aborts
        // this task, or this sees the cut.
        let g = links.lock();
        let _ = from.set(who);
        if who.is_some_and(|w| g.cut.contains(&(w, to))) {
            return; // dropped: the dialer sees the connection close
        }
    }
    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
        let _ = inbound.set_nodelay(true);
        let _ = outbound.set_nodelay(true);
        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Drop for LinksInner {
    fn drop(&mut self) {
        for c in self.conns.drain(..) {
            c.task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn cuts_and_heals_one_ordered_link() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = upstream.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4];
                    while s.read_exact(&mut buf).await.is_ok() {
                        let _ = s.write_all(&buf).await;
                    }
                });
            }
        });
        // This process plays replica 0; the proxy fronts replica 1.
        let links = Links::new(2).unwrap();
        links.set_pid(0, Some(std::process::id()));
        let p = Proxy::start(1, up, links.clone()).await.unwrap();
        let echo = |addr| async move {
            let mut s = TcpStream::connect(addr).await?;
            s.write_all(b"ping").await?;
            let mut buf = [0u8; 4];
            tokio::time::timeout(std::time::Duration::from_secs(2), s.read_exact(&mut buf))
                .await
                .map_err(|_| std::io::Error::other("timeout"))??;
            Ok::<_, std::io::Error>(buf)
        };
        assert_eq!(&echo(p.addr).await.unwrap(), b"ping");
        // An open connection is dropped by the cut.
        let mut open = TcpStream::connect(p.addr).await.unwrap();
        open.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        open.read_exact(&mut buf).await.unwrap();
        links.cut(1, 0);
        assert_eq!(
            &echo(p.addr).await.unwrap(),
            b"ping",
            "the other direction is not cut"
        );
        links.cut(0, 1);
        assert!(links.is_cut(0, 1));
        let _ = open.write_all(b"ping").await;
        let n = tokio::time::timeout(std::time::Duration::from_secs(2), open.read(&mut buf))
            .await
            .expect("a cut connection closes");
        assert!(n.is_err() || n.unwrap() == 0, "cut link must not forward");
        assert!(echo(p.addr).await.is_err(), "cut link must not connect");
        links.heal_all();
        assert_eq!(&echo(p.addr).await.unwrap(), b"ping");
        // A dialer that is no replica is let through.
        links.set_pid(0, None);
        links.cut(0, 1);
        assert_eq!(&echo(p.addr).await.unwrap(), b"ping");
    }
}
