//! Cluster DNS end to end on `keel up --agents 2`: the API server creates
//! `kube-system/kube-dns` at the service range's network + 10; both agents
//! serve it on that address, port 53 (SO_REUSEPORT); Services created with
//! kubectl resolve, a headless Service resolves to the addresses of a
//! hand-made EndpointSlice, unknown names are NXDOMAIN, other names go to
//! the fake upstream the test passes with `--dns-upstream`, and a pod gets
//! a resolv.conf naming the cluster DNS. Runs as root (port 53).

mod util;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::udp::UdpClientStream;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use util::up::{ready_nodes, write, Up};
use util::wait_for;

/// A hand-made upstream on 127.x: `example.test` A → 127.1.2.3, anything
/// else NXDOMAIN. Runs on a thread until the process ends.
fn fake_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let sock = UdpSocket::bind("127.0.56.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let mut r = Message::response(q.metadata.id, q.metadata.op_code);
            r.metadata.recursion_desired = q.metadata.recursion_desired;
            r.metadata.recursion_available = true;
            r.add_queries(q.queries.clone());
            let query = &q.queries[0];
            if query
                .name()
                .to_ascii()
                .eq_ignore_ascii_case("example.test.")
                && query.query_type() == RecordType::A
            {
                r.add_answer(Record::from_rdata(
                    query.name().clone(),
                    60,
                    RData::A(A("127.1.2.3".parse().unwrap())),
                ));
            } else {
                r.metadata.response_code = ResponseCode::NXDomain;
            }
            let _ = sock.send_to(&r.to_vec().unwrap(), from);
        }
    });
    (addr, seen)
}

/// Queries the cluster DNS with hickory's client over UDP.
struct Dns {
    rt: tokio::runtime::Runtime,
    server: SocketAddr,
}

impl Dns {
    /// (response code, sorted answer addresses); `None` on a timeout or
    /// transport error (the server may not be bound yet).
    fn query(&self, name: &str, t: RecordType) -> Option<(ResponseCode, Vec<IpAddr>)> {
        let server = self.server;
        let name = Name::from_ascii(name).unwrap();
        self.rt.block_on(async move {
            let conn = UdpClientStream::builder(server, TokioRuntimeProvider::default())
                .with_timeout(Some(Duration::from_secs(3)))
                .build();
            let (mut client, bg) = Client::<TokioRuntimeProvider>::from_sender(conn);
            let bg = tokio::spawn(bg);
            let r = client.query(name, DNSClass::IN, t).await.ok();
            bg.abort();
            let r = r?;
            let mut ips: Vec<IpAddr> = r.answers.iter().filter_map(|a| a.data.ip_addr()).collect();
            ips.sort();
            Some((r.metadata.response_code, ips))
        })
    }

    fn wait_for_answer(&self, up: &Up, name: &str, want: &[IpAddr]) {
        let mut want = want.to_vec();
        want.sort();
        let last = std::cell::RefCell::new(None);
        wait_for(
            &format!("{name} to resolve to {want:?}"),
            60,
            || {
                let got = self.query(name, RecordType::A);
                let done = got == Some((ResponseCode::NoError, want.clone()));
                *last.borrow_mut() = got;
                done
            },
            || format!("last answer: {:?}\n{}", last.borrow(), up.log()),
        );
    }
}

#[test]
fn cluster_dns_on_keel_up() {
    let (upstream, seen) = fake_upstream();
    let up = Up::start(2, &["--dns-upstream", &upstream.to_string()]);
    let k = up.kubectl();
    wait_for("2 ready nodes", 90, || ready_nodes(&k) == 2, || up.log());

    // The kube-dns Service: network + 10 of the fixture's range.
    let range: ipnet::Ipv4Net = up.service_cidr().parse().unwrap();
    let dns_ip = std::net::Ipv4Addr::from(u32::from(range.network()) + 10);
    let svc = k.json(&["get", "svc", "-n", "kube-system", "kube-dns"]);
    assert_eq!(svc["spec"]["clusterIP"], dns_ip.to_string(), "{svc}");
    assert_eq!(
        svc["metadata"]["annotations"]["keel.dev/served-by"],
        "agent"
    );
    let ports: Vec<(String, String)> = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().into(),
                p["protocol"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        vec![
            ("dns".into(), "UDP".into()),
            ("dns-tcp".into(), "TCP".into())
        ]
    );
    let table = k.ok(&["get", "svc", "-n", "kube-system", "kube-dns"]);
    assert!(table.contains(&dns_ip.to_string()), "{table}");

    let dns = Dns {
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
        server: SocketAddr::new(dns_ip.into(), 53),
    };
    // kube-dns resolves to itself once the agents serve it.
    dns.wait_for_answer(
        &up,
        "kube-dns.kube-system.svc.cluster.local.",
        &[dns_ip.into()],
    );

    // A Service created with kubectl.
    k.ok(&["create", "service", "clusterip", "web", "--tcp=80:8080"]);
    let web = k.json(&["get", "svc", "web"]);
    let web_ip: IpAddr = web["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
    dns.wait_for_answer(&up, "web.default.svc.cluster.local.", &[web_ip]);

    // A headless Service with a hand-made EndpointSlice.
    let octet = range.network().octets()[1];
    let (a, b) = (format!("127.{octet}.0.200"), format!("127.{octet}.0.201"));
    let yaml = format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: db}}
spec:
  clusterIP: None
  ports: [{{name: pg, port: 5432}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-manual
  labels: {{kubernetes.io/service-name: db}}
addressType: IPv4
ports: [{{name: pg, port: 5432, protocol: TCP}}]
endpoints:
- addresses: ["{a}"]
  hostname: db-0
  conditions: {{ready: true}}
- addresses: ["{b}"]
  hostname: db-1
  conditions: {{ready: true}}
"#
    );
    let file = write(up.dir.path(), "db.yaml", &yaml);
    k.ok(&["apply", "-f", file.to_str().unwrap()]);
    let (a, b): (IpAddr, IpAddr) = (a.parse().unwrap(), b.parse().unwrap());
    dns.wait_for_answer(&up, "db.default.svc.cluster.local.", &[a, b]);
    dns.wait_for_answer(&up, "db-1.db.default.svc.cluster.local.", &[b]);

    // Unknown names in the zone: NXDOMAIN, from both agents alike.
    for _ in 0..4 {
        let r = dns.query("nope.default.svc.cluster.local.", RecordType::A);
        assert_eq!(r, Some((ResponseCode::NXDomain, vec![])));
    }

    // Other names: the fake upstream's answer.
    let r = dns.query("example.test.", RecordType::A);
    assert_eq!(
        r,
        Some((ResponseCode::NoError, vec!["127.1.2.3".parse().unwrap()]))
    );
    assert!(seen.load(Ordering::SeqCst) >= 1);

    // A pod's resolv.conf names the cluster DNS; its path is in the env.
    k.ok(&["run", "probe", "--image=keel/pause", "--restart=Never"]);
    let mut resolv = String::new();
    wait_for(
        "the pod's resolv.conf",
        60,
        || {
            let pod = k.json(&["get", "pod", "probe"]);
            let (Some(uid), Some(node)) = (
                pod["metadata"]["uid"].as_str(),
                pod["spec"]["nodeName"].as_str(),
            ) else {
                return false;
            };
            let path = up
                .data_dir()
                .join("agents")
                .join(node)
                .join("pods")
                .join(uid)
                .join("resolv.conf");
            resolv = std::fs::read_to_string(path).unwrap_or_default();
            !resolv.is_empty()
        },
        || up.log(),
    );
    assert!(
        resolv.starts_with(&format!(
            "nameserver {dns_ip}\nsearch default.svc.cluster.local svc.cluster.local cluster.local"
        )),
        "{resolv}"
    );
    assert!(resolv.contains("options ndots:5"), "{resolv}");
}
