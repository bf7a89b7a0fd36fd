//! Which names a peer certificate may carry: those of current members.

use std::sync::{Arc, RwLock};

/// Yields the current members as `(name, peer_addr)` pairs.
pub type MemberSource = Arc<dyn Fn() -> Vec<(String, String)> + Send + Sync>;

/// The current membership as the peer verifiers see it. Starts from a
/// fixed list (the configured initial cluster, used until the store is up)
/// and follows a live source once the store sets one.
pub struct Members {
    source: RwLock<MemberSource>,
}

impl Members {
    pub fn fixed(members: Vec<(String, String)>) -> Self {
        Members {
            source: RwLock::new(Arc::new(move || members.clone())),
        }
    }

    /// From now on, ask `source` (e.g. the raft membership).
    pub fn set_source(&self, source: MemberSource) {
        *self.source.write().expect("members lock poisoned") = source;
    }

    /// Every name a member's certificate may carry: each member's name and
    /// the host of its peer address. Deduplicated, in a stable order.
    pub fn identities(&self) -> Vec<String> {
        let source = self.source.read().expect("members lock poisoned").clone();
        let mut out: Vec<String> = Vec::new();
        for (name, addr) in source() {
            for id in [name, host_of(&addr)] {
                if !id.is_empty() && !out.contains(&id) {
                    out.push(id);
                }
            }
        }
        out
    }
}

/// `https://host:port`, `host:port` or `[v6]:port` → the host.
pub(crate) fn host_of(addr: &str) -> String {
    let a = addr.split_once("://").map_or(addr, |(_, rest)| rest);
    let a = a.trim_end_matches('/');
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("").to_string();
    }
    match a.rsplit_once(':') {
        Some((h, _)) => h.to_string(),
        None => a.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_names_and_hosts() {
        let m = Members::fixed(vec![
            ("a".into(), "127.0.0.1:2380".into()),
            ("b".into(), "https://node-b:2380".into()),
            ("c".into(), "[::1]:2380".into()),
        ]);
        assert_eq!(
            m.identities(),
            vec!["a", "127.0.0.1", "b", "node-b", "c", "::1"]
        );
        m.set_source(Arc::new(|| vec![("a".into(), "127.0.0.1:2380".into())]));
        assert_eq!(m.identities(), vec!["a", "127.0.0.1"]);
    }
}
