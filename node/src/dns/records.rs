//! The cluster zone as an in-memory name index, built from Services and
//! EndpointSlices (pure: no I/O, unit-tested).
//!
//! Names follow the Kubernetes DNS specification as CoreDNS' `kubernetes`
//! plugin serves it (with `pods insecure`):
//! - `<svc>.<ns>.svc.<zone>`: A/AAAA of the cluster IPs; for a headless
//!   Service, of its ready endpoints (all of them with
//!   `publishNotReadyAddresses`); CNAME for an ExternalName Service;
//! - `<host>.<svc>.<ns>.svc.<zone>` for each endpoint of a headless Service,
//!   `<host>` being the endpoint's hostname (StatefulSet pods) or its
//!   address with dashes (`10-0-0-1`);
//! - SRV `_<port>._<proto>.<svc>.<ns>.svc.<zone>` for each named port
//!   (target: the Service name, or each endpoint's name when headless), and
//!   SRV of all ports at the Service name itself;
//! - `<a-b-c-d>.<ns>.pod.<zone>`: A of the address spelled in the name,
//!   without checking that such a pod exists (`pods insecure`);
//! - SOA at the apex, and in the authority section of every negative answer.
//!
//! Guarantees: every record has TTL [`TTL_S`]; a name that exists (holds
//! records, or is an ancestor of one inside the zone) without records of
//! the asked type is [`Answer::NoData`]; any other name in the zone is
//! [`Answer::NxDomain`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// TTL of every record, as CoreDNS' kubernetes plugin (5 s).
pub const TTL_S: u32 = 5;
/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The answer to one question about a name inside the zone.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Records of the asked type (or the CNAME standing for the name).
    Records(Vec<Record>),
    /// The name exists but has no record of that type (NOERROR, empty).
    NoData,
    /// The name does not exist (NXDOMAIN).
    NxDomain,
}

/// One endpoint of a headless Service, deduplicated across its slices.
#[derive(Debug)]
struct Endpoint {
    ip: IpAddr,
    /// The label under the Service name: hostname or dashed address.
    label: String,
}

/// The zone's records by lower-case fully qualified name.
#[derive(Debug, Clone)]
pub struct ZoneIndex {
    zone: Name,
    soa: Record,
    records: HashMap<String, Vec<Record>>,
    /// Every name that exists: owners of records and their ancestors down
    /// to the apex (empty non-terminals answer NODATA, not NXDOMAIN).
    names: HashSet<String>,
}

/// The lower-case, dot-terminated spelling used as the index key.
pub fn key(name: &Name) -> String {
    let mut s = name.to_ascii().to_ascii_lowercase();
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

fn fqdn(s: &str) -> Option<Name> {
    let mut n = Name::from_ascii(s).ok()?;
    n.set_fqdn(true);
    Some(n)
}

/// `10.0.0.1` → `10-0-0-1`, `fd00::1` → `fd00--1` (CoreDNS' spelling).
pub fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// The inverse of [`dashed`] for pod names; `None` if not an address.
pub fn undashed(label: &str) -> Option<IpAddr> {
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

fn address_record(name: &Name, ip: IpAddr) -> Record {
    let rdata = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name.clone(), TTL_S, rdata)
}

impl ZoneIndex {
    /// An index holding only the apex SOA. `zone` is the cluster domain
    /// (e.g. `cluster.local`), with or without the final dot.
    ///
    /// Errors: a domain that is not a valid DNS name.
    pub fn empty(zone: &str) -> anyhow::Result<ZoneIndex> {
        let zone = fqdn(zone)
            .filter(|z| !z.is_root())
            .ok_or_else(|| anyhow::anyhow!("cluster domain {zone:?} is not a DNS name"))?;
        let at = |l: &str| {
            Name::from_ascii(l)
                .and_then(|n| n.append_domain(&zone))
                .expect("a fixed label under a valid zone is a valid name")
        };
        let soa = SOA::new(at("ns.dns"), at("hostmaster"), 1, 7200, 1800, 86400, TTL_S);
        let soa = Record::from_rdata(zone.clone(), TTL_S, RData::SOA(soa));
        let mut index = ZoneIndex {
            zone: zone.clone(),
            soa,
            records: HashMap::new(),
            names: HashSet::new(),
        };
        let (apex, soa) = (index.zone.clone(), index.soa.clone());
        index.add(&apex, soa);
        for sub in ["svc", "pod"] {
            index.mark(&at(sub));
        }
        Ok(index)
    }

    /// The index of `services` and their `slices` (slices are matched to
    /// Services by namespace and the `kubernetes.io/service-name` label;
    /// objects without a name or namespace are skipped).
    pub fn build(
        zone: &str,
        services: &[Arc<Service>],
        slices: &[Arc<EndpointSlice>],
    ) -> anyhow::Result<ZoneIndex> {
        let mut index = ZoneIndex::empty(zone)?;
        let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
        for s in slices {
            let (Some(ns), Some(svc)) = (
                s.metadata.namespace.clone(),
                s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SERVICE_NAME_LABEL))
                    .cloned(),
            ) else {
                continue;
            };
            by_service.entry((ns, svc)).or_default().push(s);
        }
        for svc in services {
            let (Some(ns), Some(name)) = (&svc.metadata.namespace, &svc.metadata.name) else {
                continue;
            };
            let slices = by_service
                .get(&(ns.clone(), name.clone()))
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            index.add_service(ns, name, svc, slices);
        }
        Ok(index)
    }

    /// The zone apex (fully qualified).
    pub fn zone(&self) -> &Name {
        &self.zone
    }

    /// The apex SOA, for the authority section of negative answers.
    pub fn soa(&self) -> &Record {
        &self.soa
    }

    /// Whether `name` is the apex or below it.
    pub fn in_zone(&self, name: &Name) -> bool {
        self.zone.zone_of(name)
    }

    /// Answers `qtype` for `name`, which must be [in the zone](Self::in_zone).
    /// `ANY` returns every record of the name. A name holding a CNAME answers
    /// the CNAME whatever the asked type (the client follows it).
    pub fn lookup(&self, name: &Name, qtype: RecordType) -> Answer {
        debug_assert!(self.in_zone(name), "{name} is outside {}", self.zone);
        let k = key(name);
        if let Some(ip) = self.pod_address(name) {
            return match (qtype, ip) {
                (RecordType::A | RecordType::ANY, IpAddr::V4(_))
                | (RecordType::AAAA | RecordType::ANY, IpAddr::V6(_)) => {
                    Answer::Records(vec![address_record(name, ip)])
                }
                _ => Answer::NoData,
            };
        }
        let Some(all) = self.records.get(&k) else {
            return match self.names.contains(&k) {
                true => Answer::NoData,
                false => Answer::NxDomain,
            };
        };
        let wanted: Vec<Record> = all
            .iter()
            .filter(|r| {
                qtype == RecordType::ANY
                    || r.record_type() == qtype
                    || r.record_type() == RecordType::CNAME
            })
            .map(|r| {
                // Answer with the asker's spelling of the name (0x20 case).
                let mut r = r.clone();
                r.name = name.clone();
                r
            })
            .collect();
        match wanted.is_empty() {
            true => Answer::NoData,
            false => Answer::Records(wanted),
        }
    }

    /// Number of names holding records (for logs and benchmarks).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// `<addr>.<ns>.pod.<zone>` → the address spelled in the first label.
    fn pod_address(&self, name: &Name) -> Option<IpAddr> {
        if usize::from(name.num_labels()) != usize::from(self.zone.num_labels()) + 3 {
            return None;
        }
        let mut labels = name.iter();
        let first = String::from_utf8_lossy(labels.next()?).to_ascii_lowercase();
        let _ns = labels.next()?;
        let pod = labels.next()?;
        if !pod.eq_ignore_ascii_case(b"pod") {
            return None;
        }
        undashed(&first)
    }

    fn name(&self, labels: &[&str]) -> Option<Name> {
        let mut n = Name::new();
        for l in labels {
            n = n.append_label(*l).ok()?;
        }
        n.append_domain(&self.zone).ok()
    }

    /// Marks `name` and its ancestors inside the zone as existing.
    fn mark(&mut self, name: &Name) {
        let mut n = name.clone();
        while self.zone.zone_of(&n) {
            if !self.names.insert(key(&n)) {
                break;
            }
            if n.num_labels() == 0 {
                break;
            }
            n = n.base_name();
        }
    }

    fn add(&mut self, name: &Name, record: Record) {
        self.mark(name);
        self.records.entry(key(name)).or_default().push(record);
    }

    fn add_service(&mut self, ns: &str, name: &str, svc: &Service, slices: &[&EndpointSlice]) {
        let Some(spec) = &svc.spec else { return };
        let Some(svc_name) = self.name(&[name, ns, "svc"]) else {
            return;
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            if let Some(target) = spec.external_name.as_deref().and_then(fqdn) {
                let cname =
                    Record::from_rdata(svc_name.clone(), TTL_S, RData::CNAME(CNAME(target)));
                self.add(&svc_name, cname);
            }
            return;
        }
        let cluster_ips: Vec<IpAddr> = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .filter_map(|ip| ip.parse().ok())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let headless = spec.cluster_ip.as_deref() == Some("None");
        if !headless {
            if cluster_ips.is_empty() {
                return;
            }
            for ip in &cluster_ips {
                self.add(&svc_name, address_record(&svc_name, *ip));
            }
            let ports = spec.ports.iter().flatten().map(|p| {
                let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                (p.name.clone().unwrap_or_default(), proto, p.port)
            });
            let ports: Vec<_> = ports.collect();
            for (port_name, proto, port) in ports {
                self.add_srv(
                    &svc_name,
                    &port_name,
                    &proto,
                    port,
                    std::slice::from_ref(&svc_name),
                );
            }
            return;
        }
        let publish_all = spec.publish_not_ready_addresses == Some(true);
        let endpoints = headless_endpoints(slices, publish_all);
        let mut targets = Vec::new();
        for ep in &endpoints {
            let Some(host) = self.name(&[&ep.label, name, ns, "svc"]) else {
                continue;
            };
            self.add(&svc_name, address_record(&svc_name, ep.ip));
            self.add(&host, address_record(&host, ep.ip));
            if !targets.contains(&host) {
                targets.push(host);
            }
        }
        let mut ports: BTreeSet<(String, String, i32)> = BTreeSet::new();
        for s in slices {
            for p in s.ports.iter().flatten() {
                if let Some(port) = p.port {
                    let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                    ports.insert((p.name.clone().unwrap_or_default(), proto, port));
                }
            }
        }
        if !targets.is_empty() {
            for (port_name, proto, port) in ports {
                self.add_srv(&svc_name, &port_name, &proto, port, &targets);
            }
        }
    }

    /// SRV records for one port: at `_<port>._<proto>.<svc>` when the port
    /// is named, and at the Service name itself.
    fn add_srv(&mut self, svc: &Name, port_name: &str, proto: &str, port: i32, targets: &[Name]) {
        let Ok(port) = u16::try_from(port) else {
            return;
        };
        let weight = u16::try_from((100 / targets.len().max(1)).max(1)).unwrap_or(1);
        let proto = format!("_{}", proto.to_ascii_lowercase());
        let named = match port_name.is_empty() {
            true => None,
            false => Name::from_labels([format!("_{port_name}").as_str(), proto.as_str()])
                .ok()
                .and_then(|n| n.append_domain(svc).ok()),
        };
        for t in targets {
            let srv = RData::SRV(SRV::new(0, weight, port, t.clone()));
            if let Some(n) = &named {
                self.add(n, Record::from_rdata(n.clone(), TTL_S, srv.clone()));
            }
            self.add(svc, Record::from_rdata(svc.clone(), TTL_S, srv));
        }
    }
}

/// The endpoints a headless Service publishes: ready ones (a missing
/// condition counts as ready, as in the API), or all with `publish_all`;
/// FQDN-typed slices are skipped; an address in several slices counts once.
fn headless_endpoints(slices: &[&EndpointSlice], publish_all: bool) -> Vec<Endpoint> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for s in slices {
        if s.address_type == "FQDN" {
            continue;
        }
        for ep in &s.endpoints {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready && !publish_all {
                continue;
            }
            for addr in &ep.addresses {
                let Ok(ip) = addr.parse::<IpAddr>() else {
                    continue;
                };
                if !seen.insert(ip) {
                    continue;
                }
                let label = ep
                    .hostname
                    .clone()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| dashed(ip));
                out.push(Endpoint { ip, label });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Arc<Service> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn slice(v: serde_json::Value) -> Arc<EndpointSlice> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn rdatas(a: Answer) -> Vec<RData> {
        match a {
            Answer::Records(r) => r.into_iter().map(|r| r.data).collect(),
            other => panic!("expected records, got {other:?}"),
        }
    }

    fn index() -> ZoneIndex {
        let services = vec![
            svc(json!({"metadata": {"name": "web", "namespace": "default"},
                "spec": {"clusterIP": "127.43.0.20", "clusterIPs": ["127.43.0.20"],
                  "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 81}]}})),
            svc(json!({"metadata": {"name": "db", "namespace": "data"},
                "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}})),
            svc(json!({"metadata": {"name": "all", "namespace": "data"},
                "spec": {"clusterIP": "None", "publishNotReadyAddresses": true}})),
            svc(json!({"metadata": {"name": "ext", "namespace": "default"},
                "spec": {"type": "ExternalName", "externalName": "example.test"}})),
            svc(json!({"metadata": {"name": "v6", "namespace": "default"},
                "spec": {"clusterIP": "fd00::a", "clusterIPs": ["fd00::a"]}})),
        ];
        let slices = vec![
            slice(json!({"metadata": {"name": "db-1", "namespace": "data",
                  "labels": {"kubernetes.io/service-name": "db"}},
                "addressType": "IPv4",
                "ports": [{"name": "pg", "port": 15432, "protocol": "TCP"}],
                "endpoints": [
                  {"addresses": ["127.0.1.1"], "hostname": "db-0", "conditions": {"ready": true}},
                  {"addresses": ["127.0.1.2"], "conditions": {}},
                  {"addresses": ["127.0.1.3"], "hostname": "db-2", "conditions": {"ready": false}}]})),
            slice(json!({"metadata": {"name": "db-2", "namespace": "data",
                  "labels": {"kubernetes.io/service-name": "db"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["127.0.1.1"], "hostname": "db-0"}]})),
            slice(json!({"metadata": {"name": "all-1", "namespace": "data",
                  "labels": {"kubernetes.io/service-name": "all"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["127.0.2.1"], "conditions": {"ready": false}}]})),
            // Same service name in another namespace: must not leak into data/db.
            slice(json!({"metadata": {"name": "db-x", "namespace": "other",
                  "labels": {"kubernetes.io/service-name": "db"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["127.0.9.9"]}]})),
        ];
        ZoneIndex::build("cluster.local", &services, &slices).unwrap()
    }

    #[test]
    fn cluster_ip_services_answer_their_address() {
        let ix = index();
        let a = ix.lookup(&n("web.default.svc.cluster.local."), RecordType::A);
        assert_eq!(rdatas(a), vec![RData::A(A("127.43.0.20".parse().unwrap()))]);
        // Case-insensitive, answered with the asker's spelling.
        let Answer::Records(r) = ix.lookup(&n("WEB.Default.svc.cluster.local."), RecordType::A)
        else {
            panic!("mixed case must resolve")
        };
        assert_eq!(r[0].name.to_ascii(), "WEB.Default.svc.cluster.local.");
        assert_eq!(r[0].ttl, TTL_S);
        let aaaa = ix.lookup(&n("v6.default.svc.cluster.local."), RecordType::AAAA);
        assert_eq!(
            rdatas(aaaa),
            vec![RData::AAAA(AAAA("fd00::a".parse().unwrap()))]
        );
    }

    #[test]
    fn nodata_for_existing_names_and_nxdomain_otherwise() {
        let ix = index();
        for (name, t) in [
            ("web.default.svc.cluster.local.", RecordType::AAAA),
            ("web.default.svc.cluster.local.", RecordType::TXT),
            ("default.svc.cluster.local.", RecordType::A),
            ("svc.cluster.local.", RecordType::A),
            ("cluster.local.", RecordType::A),
            ("_tcp.web.default.svc.cluster.local.", RecordType::A),
        ] {
            assert_eq!(ix.lookup(&n(name), t), Answer::NoData, "{name} {t}");
        }
        for name in [
            "nope.default.svc.cluster.local.",
            "web.nope.svc.cluster.local.",
            "x.web.default.svc.cluster.local.",
            "other.cluster.local.",
        ] {
            assert_eq!(
                ix.lookup(&n(name), RecordType::A),
                Answer::NxDomain,
                "{name}"
            );
        }
        let soa = ix.lookup(&n("cluster.local."), RecordType::SOA);
        assert!(matches!(&rdatas(soa)[0], RData::SOA(s) if s.minimum == TTL_S));
        assert!(!ix.in_zone(&n("example.test.")));
        assert!(ix.in_zone(&n("a.cluster.local.")));
    }

    #[test]
    fn headless_services_answer_ready_endpoints_and_hostnames() {
        let ix = index();
        let mut a = rdatas(ix.lookup(&n("db.data.svc.cluster.local."), RecordType::A));
        a.sort_by_key(|r| r.ip_addr());
        assert_eq!(
            a,
            vec![
                RData::A(A("127.0.1.1".parse().unwrap())),
                RData::A(A("127.0.1.2".parse().unwrap())),
            ]
        );
        let host = ix.lookup(&n("db-0.db.data.svc.cluster.local."), RecordType::A);
        assert_eq!(
            rdatas(host),
            vec![RData::A(A("127.0.1.1".parse().unwrap()))]
        );
        let dashed = ix.lookup(&n("127-0-1-2.db.data.svc.cluster.local."), RecordType::A);
        assert_eq!(
            rdatas(dashed),
            vec![RData::A(A("127.0.1.2".parse().unwrap()))]
        );
        // Not ready: no record.
        assert_eq!(
            ix.lookup(&n("db-2.db.data.svc.cluster.local."), RecordType::A),
            Answer::NxDomain
        );
        // publishNotReadyAddresses: not-ready endpoints are published.
        let all = ix.lookup(&n("all.data.svc.cluster.local."), RecordType::A);
        assert_eq!(rdatas(all), vec![RData::A(A("127.0.2.1".parse().unwrap()))]);
    }

    #[test]
    fn srv_records_for_named_ports() {
        let ix = index();
        let srv = rdatas(ix.lookup(
            &n("_http._tcp.web.default.svc.cluster.local."),
            RecordType::SRV,
        ));
        assert_eq!(
            srv,
            vec![RData::SRV(SRV::new(
                0,
                100,
                80,
                n("web.default.svc.cluster.local.")
            ))]
        );
        // Unnamed ports only at the service name itself.
        let at_svc = rdatas(ix.lookup(&n("web.default.svc.cluster.local."), RecordType::SRV));
        assert_eq!(at_svc.len(), 2);
        // Headless: one SRV per endpoint, targets are the endpoint names,
        // ports are the endpoints' ports.
        let mut targets: Vec<(String, u16)> =
            rdatas(ix.lookup(&n("_pg._tcp.db.data.svc.cluster.local."), RecordType::SRV))
                .into_iter()
                .map(|r| match r {
                    RData::SRV(s) => (s.target.to_ascii(), s.port),
                    other => panic!("not SRV: {other:?}"),
                })
                .collect();
        targets.sort();
        assert_eq!(
            targets,
            vec![
                ("127-0-1-2.db.data.svc.cluster.local.".to_string(), 15432),
                ("db-0.db.data.svc.cluster.local.".to_string(), 15432),
            ]
        );
    }

    #[test]
    fn pods_and_external_names() {
        let ix = index();
        let pod = ix.lookup(&n("127-0-0-5.any.pod.cluster.local."), RecordType::A);
        assert_eq!(rdatas(pod), vec![RData::A(A("127.0.0.5".parse().unwrap()))]);
        let pod6 = ix.lookup(&n("fd00--5.any.pod.cluster.local."), RecordType::AAAA);
        assert_eq!(
            rdatas(pod6),
            vec![RData::AAAA(AAAA("fd00::5".parse().unwrap()))]
        );
        assert_eq!(
            ix.lookup(&n("127-0-0-5.any.pod.cluster.local."), RecordType::AAAA),
            Answer::NoData
        );
        assert_eq!(
            ix.lookup(&n("not-an-ip.any.pod.cluster.local."), RecordType::A),
            Answer::NxDomain
        );
        let ext = ix.lookup(&n("ext.default.svc.cluster.local."), RecordType::A);
        assert_eq!(rdatas(ext), vec![RData::CNAME(CNAME(n("example.test.")))]);
    }

    #[test]
    fn bad_domains_are_errors() {
        assert!(ZoneIndex::empty("").is_err());
        assert!(ZoneIndex::empty("bad..domain").is_err());
        let ix = ZoneIndex::empty("corp.example.").unwrap();
        assert_eq!(ix.zone().to_ascii(), "corp.example.");
    }
}
