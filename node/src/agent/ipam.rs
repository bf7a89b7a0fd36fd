//! Pod IPs from the node's podCIDR.
//!
//! Allocations are persisted (`<root>/ipam.json`, pod uid → IP) so a
//! restarted agent gives each pod the IP its running containers already
//! use. Addresses `.0`, `.1` and the broadcast address of the CIDR are never
//! handed out. Without a podCIDR (or when it is full) pods share the node IP.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use ipnet::Ipv4Net;

/// See the module docs.
#[derive(Debug)]
pub struct Ipam {
    path: PathBuf,
    cidr: Option<Ipv4Net>,
    by_uid: BTreeMap<String, IpAddr>,
}

impl Ipam {
    pub fn load(root: &Path) -> anyhow::Result<Self> {
        let path = root.join("ipam.json");
        let by_uid = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("parse {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        Ok(Ipam {
            path,
            cidr: None,
            by_uid,
        })
    }

    /// Sets the CIDR (`a.b.c.d/len`, IPv4); anything unparsable means none.
    pub fn set_cidr(&mut self, cidr: Option<String>) {
        self.cidr = cidr.and_then(|c| parse_cidr(&c));
    }

    /// The pod's IP: its existing allocation, else the first free address.
    pub fn allocate(&mut self, uid: &str) -> Option<IpAddr> {
        if let Some(ip) = self.by_uid.get(uid) {
            return Some(*ip);
        }
        let net = self.cidr?;
        let used: std::collections::BTreeSet<IpAddr> = self.by_uid.values().copied().collect();
        // hosts() leaves out the network and broadcast addresses; the first
        // host (.1) is the node's own.
        let ip = net
            .hosts()
            .skip(1)
            .map(IpAddr::V4)
            .find(|ip| !used.contains(ip))?;
        self.by_uid.insert(uid.to_string(), ip);
        self.save();
        Some(ip)
    }

    pub fn release(&mut self, uid: &str) {
        if self.by_uid.remove(uid).is_some() {
            self.save();
        }
    }

    /// Uids holding an allocation (for orphan cleanup).
    pub fn uids(&self) -> Vec<String> {
        self.by_uid.keys().cloned().collect()
    }

    fn save(&self) {
        let tmp = self.path.with_extension("json.tmp");
        let result = serde_json::to_vec_pretty(&self.by_uid)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = result {
            tracing::warn!(error = %e, path = %self.path.display(), "cannot persist pod IPs");
        }
    }
}

/// An IPv4 CIDR of /8 to /30 (a smaller one holds no pod address).
fn parse_cidr(s: &str) -> Option<Ipv4Net> {
    let net: Ipv4Net = s.parse().ok()?;
    (8..=30).contains(&net.prefix_len()).then(|| net.trunc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_persists_and_releases() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = Ipam::load(dir.path()).unwrap();
        assert_eq!(ipam.allocate("a"), None, "no CIDR yet");
        ipam.set_cidr(Some("127.16.3.0/24".into()));
        let a = ipam.allocate("a").unwrap();
        assert_eq!(a.to_string(), "127.16.3.2");
        assert_eq!(ipam.allocate("b").unwrap().to_string(), "127.16.3.3");
        assert_eq!(ipam.allocate("a"), Some(a));
        let mut again = Ipam::load(dir.path()).unwrap();
        again.set_cidr(Some("127.16.3.0/24".into()));
        assert_eq!(again.allocate("a"), Some(a));
        again.release("a");
        assert_eq!(again.allocate("c").unwrap().to_string(), "127.16.3.2");
    }

    #[test]
    fn small_cidr_fills_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = Ipam::load(dir.path()).unwrap();
        ipam.set_cidr(Some("127.0.5.0/30".into()));
        assert!(ipam.allocate("a").is_some());
        assert_eq!(ipam.allocate("b"), None);
    }
}
