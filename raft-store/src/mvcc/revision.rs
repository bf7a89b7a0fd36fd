//! A revision names one change: the write transaction's main revision and
//! the change's position inside it (sub), as in etcd.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

impl Revision {
    pub const fn new(main: i64, sub: i64) -> Self {
        Revision { main, sub }
    }

    /// Big-endian bytes, so that RocksDB's byte order is revision order.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.main.to_be_bytes());
        out[8..].copy_from_slice(&self.sub.to_be_bytes());
        out
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != 16 {
            return None;
        }
        let main = i64::from_be_bytes(b[..8].try_into().ok()?);
        let sub = i64::from_be_bytes(b[8..].try_into().ok()?);
        Some(Revision { main, sub })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_order_is_revision_order() {
        let a = Revision::new(1, 5);
        let b = Revision::new(2, 0);
        assert!(a.to_bytes() < b.to_bytes());
        assert_eq!(Revision::from_bytes(&b.to_bytes()), Some(b));
        assert_eq!(Revision::from_bytes(&[1, 2]), None);
    }
}
