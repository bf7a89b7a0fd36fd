//! Protobuf and gRPC definitions for keel.
//!
//! keel speaks etcd's v3 gRPC API so that unmodified `etcdctl` and etcd client
//! libraries (such as the `etcd-client` crate) can use it. gRPC compatibility
//! is decided purely by the wire: the protobuf package and service/method
//! names (which make up the HTTP/2 paths like `/etcdserverpb.KV/Range`), and
//! each message's field numbers, field types and enum values. The `.proto`
//! files under `proto/` are keel's own, written to match etcd v3.4/v3.5 on
//! exactly those points while leaving out what keel does not serve (Auth,
//! Downgrade, gogoproto and HTTP-gateway annotations).
//!
//! Modules:
//! - [`mvccpb`]: `KeyValue` and `Event`, shared by the KV and Watch APIs.
//! - [`etcdserverpb`]: the KV, Watch, Lease, Cluster and Maintenance services.
//! - [`keelraft`]: keel's private node-to-node Raft transport; its payload is
//!   an opaque byte blob whose encoding is owned by `keel-net`.
//! - [`keelnode`]: the node service (agent ↔ control plane) and the agent's
//!   log service.
//!
//! Each module contains prost message types plus tonic `*_client` and
//! `*_server` submodules. This crate holds no logic.

/// MVCC record types (etcd package `mvccpb`).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// etcd v3 client API (etcd package `etcdserverpb`).
///
/// Generated code refers to `super::mvccpb`, which resolves to the sibling
/// [`crate::mvccpb`] module.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// keel's internal Raft transport (package `keelraft`).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod keelraft {
    tonic::include_proto!("keelraft");
}

/// The node service between `keel agent` and the control plane, and the
/// agent's log service (package `keelnode`).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod keelnode {
    tonic::include_proto!("keelnode");
}

#[cfg(test)]
mod tests {
    //! Byte-level checks against hand-computed protobuf encodings, so a wrong
    //! field number, type or enum value fails here without needing etcd.

    use super::etcdserverpb::{
        compare, range_request, request_op, watch_request, Compare, LeaseGrantRequest, PutRequest,
        RangeRequest, RequestOp, StatusResponse, WatchCreateRequest, WatchRequest, WatchResponse,
    };
    use super::keelraft::RaftMessage;
    use super::mvccpb::{event, Event, KeyValue};
    use prost::Message;

    #[test]
    fn put_request_bytes() {
        let req = PutRequest {
            key: b"a".to_vec(),
            value: b"b".to_vec(),
            lease: 7,
            ..Default::default()
        };
        assert_eq!(req.encode_to_vec(), [0x0a, 1, b'a', 0x12, 1, b'b', 0x18, 7]);

        let req = PutRequest {
            prev_kv: true,
            ignore_value: true,
            ignore_lease: true,
            ..Default::default()
        };
        assert_eq!(req.encode_to_vec(), [0x20, 1, 0x28, 1, 0x30, 1]);
    }

    #[test]
    fn range_request_bytes() {
        let req = RangeRequest {
            key: b"k".to_vec(),
            range_end: b"z".to_vec(),
            limit: 5,
            revision: 3,
            sort_order: range_request::SortOrder::Descend as i32,
            sort_target: range_request::SortTarget::Mod as i32,
            serializable: true,
            keys_only: true,
            count_only: true,
            min_mod_revision: 1,
            max_mod_revision: 2,
            min_create_revision: 3,
            max_create_revision: 4,
        };
        assert_eq!(
            req.encode_to_vec(),
            [
                0x0a, 1, b'k', // key = 1
                0x12, 1, b'z', // range_end = 2
                0x18, 5, // limit = 3
                0x20, 3, // revision = 4
                0x28, 2, // sort_order = 5 (DESCEND)
                0x30, 3, // sort_target = 6 (MOD)
                0x38, 1, // serializable = 7
                0x40, 1, // keys_only = 8
                0x48, 1, // count_only = 9
                0x50, 1, // min_mod_revision = 10
                0x58, 2, // max_mod_revision = 11
                0x60, 3, // min_create_revision = 12
                0x68, 4, // max_create_revision = 13
            ]
        );
    }

    #[test]
    fn compare_and_txn_op_bytes() {
        let cmp = Compare {
            result: compare::CompareResult::NotEqual as i32,
            target: compare::CompareTarget::Lease as i32,
            key: b"k".to_vec(),
            target_union: Some(compare::TargetUnion::Lease(9)),
            range_end: b"z".to_vec(),
        };
        assert_eq!(
            cmp.encode_to_vec(),
            [
                0x08, 3, // result = 1 (NOT_EQUAL)
                0x10, 4, // target = 2 (LEASE)
                0x1a, 1, b'k', // key = 3
                0x40, 9, // lease = 8
                0x82, 0x04, 1, b'z', // range_end = 64
            ]
        );

        let op = RequestOp {
            request: Some(request_op::Request::RequestTxn(Default::default())),
        };
        assert_eq!(op.encode_to_vec(), [0x22, 0]);
    }

    #[test]
    fn watch_bytes() {
        let req = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: b"a".to_vec(),
                    filters: vec![1],
                    prev_kv: true,
                    watch_id: 2,
                    fragment: true,
                    ..Default::default()
                },
            )),
        };
        // filters is a packed repeated enum: tag 5, wire type 2.
        let inner = [0x0a, 1, b'a', 0x2a, 1, 1, 0x30, 1, 0x38, 2, 0x40, 1];
        let mut expected = vec![0x0a, inner.len() as u8];
        expected.extend_from_slice(&inner);
        assert_eq!(req.encode_to_vec(), expected);

        let resp = WatchResponse {
            watch_id: 1,
            fragment: true,
            events: vec![Event {
                r#type: event::EventType::Delete as i32,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(resp.encode_to_vec(), [0x10, 1, 0x38, 1, 0x5a, 2, 0x08, 1]);
    }

    #[test]
    fn key_value_bytes() {
        let kv = KeyValue {
            key: b"k".to_vec(),
            create_revision: 2,
            mod_revision: 3,
            version: 4,
            value: b"v".to_vec(),
            lease: 6,
        };
        assert_eq!(
            kv.encode_to_vec(),
            [0x0a, 1, b'k', 0x10, 2, 0x18, 3, 0x20, 4, 0x2a, 1, b'v', 0x30, 6]
        );
    }

    #[test]
    fn lease_and_status_bytes() {
        let req = LeaseGrantRequest { ttl: 10, id: 3 };
        assert_eq!(req.encode_to_vec(), [0x08, 10, 0x10, 3]);

        let status = StatusResponse {
            db_size: 1,
            leader: 2,
            raft_applied_index: 3,
            db_size_in_use: 4,
            is_learner: true,
            ..Default::default()
        };
        assert_eq!(
            status.encode_to_vec(),
            [0x18, 1, 0x20, 2, 0x38, 3, 0x48, 4, 0x50, 1]
        );
    }

    #[test]
    fn raft_message_round_trip() {
        let msg = RaftMessage {
            data: vec![1, 2, 3],
        };
        let bytes = msg.encode_to_vec();
        assert_eq!(bytes, [0x0a, 3, 1, 2, 3]);
        assert_eq!(RaftMessage::decode(bytes.as_slice()).unwrap(), msg);
    }

    #[test]
    fn grpc_service_names() {
        use super::etcdserverpb::{
            cluster_server, kv_server, lease_server, maintenance_server, watch_server,
        };
        use super::keelraft::raft_peer_server;
        assert_eq!(kv_server::SERVICE_NAME, "etcdserverpb.KV");
        assert_eq!(watch_server::SERVICE_NAME, "etcdserverpb.Watch");
        assert_eq!(lease_server::SERVICE_NAME, "etcdserverpb.Lease");
        assert_eq!(cluster_server::SERVICE_NAME, "etcdserverpb.Cluster");
        assert_eq!(maintenance_server::SERVICE_NAME, "etcdserverpb.Maintenance");
        assert_eq!(raft_peer_server::SERVICE_NAME, "keelraft.RaftPeer");
    }
}
