//! A fault-injecting TCP proxy on loopback for real-process runs: each
//! replica's peers reach it through its proxy, so cutting the proxy cuts
//! every connection *to* that replica (raft messages sent to it, votes it
//! should receive, writes forwarded to it) while it can still dial out: a
//! one-way partition. Healing lets new connections through again.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct Proxy {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (c, k) = (cut.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    continue; // dropped: the dialer sees the connection close
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                let mut conns = k.lock().expect("proxy lock");
                conns.retain(|t| !t.is_finished());
                conns.push(task);
            }
        });
        Ok(Proxy {
            addr,
            cut,
            conns,
            accept,
        })
    }

    /// Drops every open connection and refuses new ones until [`heal`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for t in self.conns.lock().expect("proxy lock").drain(..) {
            t.abort();
        }
    }

    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for t in self.conns.lock().expect("proxy lock").drain(..) {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn forwards_cuts_and_heals() {
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
        let p = Proxy::start(up).await.unwrap();
        let echo = |addr| async move {
            let mut s = TcpStream::connect(addr).await?;
            s.write_all(b"ping").await?;
            let mut buf = [0u8; 4];
            tokio::time::timeout(std::time::Duration::from_secs(1), s.read_exact(&mut buf))
                .await
                .map_err(|_| std::io::Error::other("timeout"))??;
            Ok::<_, std::io::Error>(buf)
        };
        assert_eq!(&echo(p.addr).await.unwrap(), b"ping");
        p.cut();
        assert!(echo(p.addr).await.is_err(), "cut proxy must not forward");
        p.heal();
        assert_eq!(&echo(p.addr).await.unwrap(), b"ping");
    }
}
