//! The openraft type configuration and the commands replicated through the
//! log.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// A replica as raft membership knows it: a stable name and the address its
/// peers reach it at. The node id is derived from the name (see
/// [`member_id`]), so a restarted replica keeps its identity.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub peer_addr: String,
}

/// A write, replicated through raft and applied by every replica in log
/// order. Request bodies are etcd's protobuf messages, so the log holds
/// exactly what the client asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// A prost-encoded `TxnRequest`; puts and deletes are single-op txns.
    Txn(#[serde(with = "byte_string")] Vec<u8>),
    Compact {
        revision: i64,
    },
    LeaseGrant {
        id: i64,
        ttl_s: i64,
    },
    LeaseRevoke {
        id: i64,
    },
    /// A replica announces the client address it serves on.
    Publish {
        member_id: u64,
        client_addr: String,
    },
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Txn(b) => write!(f, "txn({} bytes)", b.len()),
            Command::Compact { revision } => write!(f, "compact({revision})"),
            Command::LeaseGrant { id, ttl_s } => write!(f, "lease_grant({id}, {ttl_s}s)"),
            Command::LeaseRevoke { id } => write!(f, "lease_revoke({id})"),
            Command::Publish { member_id, .. } => write!(f, "publish({member_id:x})"),
        }
    }
}

/// What applying a command produced, at which store revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResponse {
    /// The store revision after the command.
    pub revision: i64,
    pub result: Result<CommandOutput, StoreError>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CommandOutput {
    /// A prost-encoded `TxnResponse` (headers unset).
    Txn(#[serde(with = "byte_string")] Vec<u8>),
    LeaseGranted {
        id: i64,
        ttl_s: i64,
    },
    Done,
}

/// A byte vector as one byte string instead of a sequence of single bytes.
/// bincode writes both the same way (a length, then the bytes), so logs and
/// peers that predate it read it unchanged; the byte string is copied in
/// one go instead of visited byte by byte.
mod byte_string {
    use serde::de::{SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(b) = seq.next_element()? {
                v.push(b);
            }
            Ok(v)
        }
    }
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = u64,
        Node = Member,
        AsyncRuntime = crate::runtime::KeelRuntime,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig, crate::state_machine::StateMachine>;

/// A stable 64-bit id from a replica's name (FNV-1a), never 0.
pub fn member_id(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log_store::{decode, encode};

    /// `Command` as it was serialized before `byte_string`.
    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    enum LegacyCommand {
        Txn(Vec<u8>),
    }

    #[test]
    fn byte_strings_keep_the_log_encoding() {
        let body: Vec<u8> = (0..=255u8).cycle().take(700).collect();
        let now = encode(&Command::Txn(body.clone())).unwrap();
        let before = encode(&LegacyCommand::Txn(body.clone())).unwrap();
        assert_eq!(now, before);
        assert_eq!(
            decode::<Command>(&before).unwrap(),
            Command::Txn(body.clone())
        );
        let out = encode(&CommandOutput::Txn(body.clone())).unwrap();
        assert_eq!(
            decode::<CommandOutput>(&out).unwrap(),
            CommandOutput::Txn(body)
        );
    }
}
