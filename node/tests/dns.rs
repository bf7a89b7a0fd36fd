//! The cluster DNS server over real sockets on 127.x: cluster names from
//! the index (UDP and TCP), NXDOMAIN/NODATA with an SOA, index updates,
//! and forwarding of other names to a fake upstream the test runs.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use hickory_proto::op::DnsResponse;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use keel_node::dns::{forward, handler, listen, ClusterDns, ZoneIndex};
use serde_json::json;

fn index(services: serde_json::Value, slices: serde_json::Value) -> ZoneIndex {
    let services: Vec<_> = serde_json::from_value::<Vec<_>>(services)
        .unwrap()
        .into_iter()
        .map(Arc::new)
        .collect();
    let slices: Vec<_> = serde_json::from_value::<Vec<_>>(slices)
        .unwrap()
        .into_iter()
        .map(Arc::new)
        .collect();
    ZoneIndex::build("cluster.local", &services, &slices).unwrap()
}

fn web(ip: &str) -> serde_json::Value {
    json!([{"metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80}]}}])
}

/// A hand-made upstream: `example.test` A → 127.1.2.3, anything else
/// NXDOMAIN; counts the queries it answers.
async fn fake_upstream(addr: &str) -> (SocketAddr, Arc<AtomicUsize>) {
    let sock = tokio::net::UdpSocket::bind(addr).await.unwrap();
    let local = sock.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let mut r = Message::response(q.metadata.id, q.metadata.op_code);
            r.metadata.recursion_desired = q.metadata.recursion_desired;
            r.metadata.recursion_available = true;
            r.add_queries(q.queries.clone());
            let query = &q.queries[0];
            let name = query.name().to_ascii().to_ascii_lowercase();
            if name == "example.test." && query.query_type() == RecordType::A {
                r.add_answer(Record::from_rdata(
                    query.name().clone(),
                    60,
                    RData::A(A("127.1.2.3".parse().unwrap())),
                ));
            } else {
                r.metadata.response_code = ResponseCode::NXDomain;
            }
            let _ = sock.send_to(&r.to_vec().unwrap(), from).await;
        }
    });
    (local, seen)
}

async fn udp(addr: SocketAddr) -> Client<TokioRuntimeProvider> {
    let conn = UdpClientStream::builder(addr, TokioRuntimeProvider::default()).build();
    let (client, bg) = Client::<TokioRuntimeProvider>::from_sender(conn);
    tokio::spawn(bg);
    client
}

async fn query(c: &mut Client<TokioRuntimeProvider>, name: &str, t: RecordType) -> DnsResponse {
    c.query(Name::from_ascii(name).unwrap(), DNSClass::IN, t)
        .await
        .unwrap_or_else(|e| panic!("query {name} {t}: {e}"))
}

fn addresses(r: &DnsResponse) -> Vec<IpAddr> {
    r.answers.iter().filter_map(|a| a.data.ip_addr()).collect()
}

fn has_soa(r: &DnsResponse) -> bool {
    r.authorities
        .iter()
        .any(|a| a.record_type() == RecordType::SOA && a.name.to_ascii() == "cluster.local.")
}

#[tokio::test]
async fn cluster_names_answer_from_the_index_over_udp_and_tcp() {
    let shared = handler::shared(index(web("127.43.0.20"), json!([])));
    let server = listen::serve(
        "127.0.53.1:0".parse().unwrap(),
        ClusterDns::new(shared.clone(), None),
    )
    .unwrap();
    let mut c = udp(server.addr).await;

    let r = query(&mut c, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.metadata.authoritative);
    assert_eq!(
        addresses(&r),
        vec!["127.43.0.20".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(r.answers[0].ttl, 5);

    // SRV for the named port, with the target's address as additional.
    let r = query(
        &mut c,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    assert_eq!(r.answers.len(), 1, "{r:?}");
    assert_eq!(
        r.additionals
            .iter()
            .filter_map(|a| a.data.ip_addr())
            .collect::<Vec<_>>(),
        vec!["127.43.0.20".parse::<IpAddr>().unwrap()]
    );

    let r = query(&mut c, "nope.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert!(r.answers.is_empty() && has_soa(&r), "{r:?}");

    let r = query(&mut c, "web.default.svc.cluster.local.", RecordType::AAAA).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty() && has_soa(&r), "{r:?}");

    // Without upstreams, other names are refused.
    let r = query(&mut c, "example.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);

    // A new index is served at once.
    handler::publish(&shared, index(web("127.43.0.21"), json!([])));
    let r = query(&mut c, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(
        addresses(&r),
        vec!["127.43.0.21".parse::<IpAddr>().unwrap()]
    );

    // TCP on the same port.
    let (stream, sender) =
        TcpClientStream::new(server.addr, None, None, TokioRuntimeProvider::new());
    let (mut tcp, bg) = Client::<TokioRuntimeProvider>::new(stream.await.unwrap(), sender);
    tokio::spawn(bg);
    let r = query(&mut tcp, "WEB.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(
        addresses(&r),
        vec!["127.43.0.21".parse::<IpAddr>().unwrap()]
    );
    server.stop().await;
}

#[tokio::test]
async fn other_names_are_forwarded_to_the_upstream() {
    let (upstream, seen) = fake_upstream("127.0.54.1:0").await;
    let shared = handler::shared(index(web("127.43.0.20"), json!([])));
    let catalog = forward::catalog(&[upstream]).unwrap();
    let server = listen::serve(
        "127.0.53.2:0".parse().unwrap(),
        ClusterDns::new(shared, Some(catalog)),
    )
    .unwrap();
    let mut c = udp(server.addr).await;

    let r = query(&mut c, "example.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{r:?}");
    assert_eq!(addresses(&r), vec!["127.1.2.3".parse::<IpAddr>().unwrap()]);
    assert!(seen.load(Ordering::SeqCst) >= 1);

    let r = query(&mut c, "missing.example.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "{r:?}");

    // Cluster names never reach the upstream.
    let before = seen.load(Ordering::SeqCst);
    let r = query(&mut c, "gone.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    let r = query(&mut c, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(
        addresses(&r),
        vec!["127.43.0.20".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(seen.load(Ordering::SeqCst), before);
    server.stop().await;
}

#[tokio::test]
async fn headless_services_resolve_to_their_endpoints() {
    let services = json!([{"metadata": {"name": "db", "namespace": "data"},
        "spec": {"clusterIP": "None"}},
        {"metadata": {"name": "alias", "namespace": "default"},
        "spec": {"type": "ExternalName", "externalName": "db-0.db.data.svc.cluster.local"}}]);
    let slices = json!([{"metadata": {"name": "db-abc", "namespace": "data",
          "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.0.7.1"], "hostname": "db-0"},
                      {"addresses": ["127.0.7.2"], "hostname": "db-1"}]}]);
    let shared = handler::shared(index(services, slices));
    let server = listen::serve(
        "127.0.53.3:0".parse().unwrap(),
        ClusterDns::new(shared, None),
    )
    .unwrap();
    let mut c = udp(server.addr).await;
    let r = query(&mut c, "db.data.svc.cluster.local.", RecordType::A).await;
    let mut got = addresses(&r);
    got.sort();
    assert_eq!(
        got,
        vec![
            "127.0.7.1".parse::<IpAddr>().unwrap(),
            "127.0.7.2".parse().unwrap()
        ]
    );
    let r = query(&mut c, "db-1.db.data.svc.cluster.local.", RecordType::A).await;
    assert_eq!(addresses(&r), vec!["127.0.7.2".parse::<IpAddr>().unwrap()]);
    // An ExternalName aliasing an in-zone name: the CNAME, then its A.
    let r = query(&mut c, "alias.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(r.answers[0].record_type(), RecordType::CNAME, "{r:?}");
    assert_eq!(addresses(&r), vec!["127.0.7.1".parse::<IpAddr>().unwrap()]);
    let r = query(&mut c, "127-0-0-9.data.pod.cluster.local.", RecordType::A).await;
    assert_eq!(addresses(&r), vec!["127.0.0.9".parse::<IpAddr>().unwrap()]);
    server.stop().await;
}
