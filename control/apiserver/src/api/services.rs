//! Service address allocation: cluster IPs from the service range and node
//! ports from 30000–32767, unique cluster-wide.
//!
//! Each allocation is a claim key in the store (`/keel/alloc/...`) created
//! only if absent, so two replicas can never hand out the same address;
//! the claim holds the owning service's key and is released when the
//! service is deleted. A claim left by a crash between claim and create is
//! leaked until a repair pass (Kubernetes has the same window and a repair
//! controller); it never causes a duplicate.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use rand::Rng;
use serde_json::{json, Value};

use crate::admission::Cause;
use crate::resources::ResourceInfo;
use crate::status::{ApiError, ApiResult};
use crate::storage::Objects;

const NODE_PORT_MIN: u16 = 30000;
const NODE_PORT_MAX: u16 = 32767;
/// Random probes before scanning (ranges are sparse in practice).
const PROBES: usize = 64;

/// The service cluster-IP range. The default, `127.43.0.0/16`, is k3s'
/// `10.43.0.0/16` moved to loopback: in loopback mode the service proxy
/// listens on cluster IPs in the host's network namespace, where only
/// 127.0.0.0/8 addresses may be used. It does not overlap the default
/// pod range (`--cluster-cidr 127.16.0.0/12`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceRange(pub Ipv4Net);

impl Default for ServiceRange {
    fn default() -> Self {
        ServiceRange(Ipv4Net::new(Ipv4Addr::new(127, 43, 0, 0), 16).expect("/16 is a valid prefix"))
    }
}

impl std::str::FromStr for ServiceRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let net: Ipv4Net = s.parse().map_err(|_| {
            format!("service range {s:?} is not an IPv4 CIDR such as 127.43.0.0/16")
        })?;
        if !(8..=28).contains(&net.prefix_len()) {
            return Err(format!("service range {s:?}: prefix length must be 8..=28"));
        }
        Ok(ServiceRange(net.trunc()))
    }
}

impl std::fmt::Display for ServiceRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ServiceRange {
    fn size(&self) -> u32 {
        1u32 << (32 - u32::from(self.0.prefix_len()))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.0.contains(&ip)
    }

    /// The `kubernetes` Service's address: the first usable one (`.1`),
    /// as in Kubernetes.
    pub fn api_service_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.0.network()) + API_SERVICE_OFFSET)
    }

    /// The cluster DNS Service's address (`.10`, as kube-dns' 10.43.0.10
    /// in k3s): `kube-system/kube-dns` asks for it by name.
    pub fn dns_service_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.0.network()) + DNS_SERVICE_OFFSET)
    }

    /// The n-th address random allocation may hand out: never the network
    /// address, `.1` ([`Self::api_service_ip`]), `.10`
    /// ([`Self::dns_service_ip`]) nor the broadcast address, so the
    /// Services that ask for those by address can always have them.
    fn nth(&self, n: u32) -> Ipv4Addr {
        // Offsets 2..=size-2, skipping the DNS offset: size - 4 of them
        // (a /28, the smallest range, still has 12).
        let mut offset = 2 + n % (self.size() - 4);
        if offset >= DNS_SERVICE_OFFSET {
            offset += 1;
        }
        debug_assert!(offset != API_SERVICE_OFFSET && offset < self.size() - 1);
        Ipv4Addr::from(u32::from(self.0.network()) + offset)
    }
}

/// Where the `kubernetes` Service's address sits in the range.
const API_SERVICE_OFFSET: u32 = 1;
/// Where the cluster DNS Service's address sits in the range.
const DNS_SERVICE_OFFSET: u32 = 10;

fn ip_key(ip: Ipv4Addr) -> String {
    format!("/keel/alloc/serviceip/{ip}")
}

fn port_key(port: u16) -> String {
    format!("/keel/alloc/nodeport/{port}")
}

fn invalid(info: &ResourceInfo, obj: &Value, field: &str, message: String) -> ApiError {
    ApiError::invalid(
        info,
        obj["metadata"]["name"].as_str().unwrap_or(""),
        &[Cause {
            field: field.into(),
            reason: "FieldValueInvalid".into(),
            message,
        }],
    )
}

/// Claims the addresses a new service needs, writing them into `obj`.
/// Returns the claim keys (to release if the create then fails).
pub async fn allocate(
    objects: &Objects,
    range: ServiceRange,
    info: &ResourceInfo,
    owner: &str,
    obj: &mut Value,
) -> ApiResult<Vec<String>> {
    let mut claims = Vec::new();
    let r = allocate_inner(objects, range, info, owner, obj, &mut claims).await;
    if r.is_err() {
        release_keys(objects, &claims, owner).await;
    }
    r.map(|_| claims)
}

async fn allocate_inner(
    objects: &Objects,
    range: ServiceRange,
    info: &ResourceInfo,
    owner: &str,
    obj: &mut Value,
    claims: &mut Vec<String>,
) -> ApiResult<()> {
    let kind = obj["spec"]["type"]
        .as_str()
        .unwrap_or("ClusterIP")
        .to_string();
    if kind == "ExternalName" {
        return Ok(());
    }
    let asked = obj["spec"]["clusterIP"].as_str().unwrap_or("").to_string();
    if asked != "None" {
        let ip = cluster_ip(objects, range, info, owner, obj, &asked, claims).await?;
        obj["spec"]["clusterIP"] = json!(ip.to_string());
        obj["spec"]["clusterIPs"] = json!([ip.to_string()]);
    } else {
        obj["spec"]["clusterIPs"] = json!(["None"]);
    }
    obj["spec"]["ipFamilies"] = json!(["IPv4"]);
    obj["spec"]["ipFamilyPolicy"] = json!("SingleStack");
    if kind == "NodePort" || kind == "LoadBalancer" {
        node_ports(objects, info, owner, obj, claims).await?;
    }
    Ok(())
}

async fn cluster_ip(
    objects: &Objects,
    range: ServiceRange,
    info: &ResourceInfo,
    owner: &str,
    obj: &Value,
    asked: &str,
    claims: &mut Vec<String>,
) -> ApiResult<Ipv4Addr> {
    if !asked.is_empty() {
        let ip: Ipv4Addr = asked.parse().map_err(|_| {
            invalid(
                info,
                obj,
                "spec.clusterIP",
                format!("Invalid value: {asked:?}: must be a valid IPv4 address or None"),
            )
        })?;
        if !range.contains(ip) {
            return Err(invalid(info, obj, "spec.clusterIPs", format!(
                "Invalid value: {asked:?}: failed to allocate IP {asked}: the provided IP ({asked}) is not in the valid range {range}"
            )));
        }
        if !objects
            .claim_raw(&ip_key(ip), owner.as_bytes().to_vec())
            .await?
        {
            return Err(invalid(info, obj, "spec.clusterIPs", format!(
                "Invalid value: {asked:?}: failed to allocate IP {asked}: provided IP is already allocated"
            )));
        }
        claims.push(ip_key(ip));
        return Ok(ip);
    }
    let start: u32 = rand::thread_rng().gen();
    for i in 0..PROBES as u32 + range.size() {
        let ip = range.nth(start.wrapping_add(i));
        if objects
            .claim_raw(&ip_key(ip), owner.as_bytes().to_vec())
            .await?
        {
            claims.push(ip_key(ip));
            return Ok(ip);
        }
    }
    Err(ApiError::internal("the service IP range is full"))
}

async fn node_ports(
    objects: &Objects,
    info: &ResourceInfo,
    owner: &str,
    obj: &mut Value,
    claims: &mut Vec<String>,
) -> ApiResult<()> {
    let n = obj["spec"]["ports"].as_array().map_or(0, Vec::len);
    for i in 0..n {
        let asked = obj["spec"]["ports"][i]["nodePort"].as_u64();
        let port = match asked {
            Some(p) => {
                let p = u16::try_from(p)
                    .ok()
                    .filter(|p| (NODE_PORT_MIN..=NODE_PORT_MAX).contains(p))
                    .ok_or_else(|| invalid(info, obj, &format!("spec.ports[{i}].nodePort"),
                        format!("Invalid value: {p}: provided port is not in the valid range. The range of valid ports is {NODE_PORT_MIN}-{NODE_PORT_MAX}")))?;
                if !objects
                    .claim_raw(&port_key(p), owner.as_bytes().to_vec())
                    .await?
                {
                    return Err(invalid(
                        info,
                        obj,
                        &format!("spec.ports[{i}].nodePort"),
                        format!("Invalid value: {p}: provided port is already allocated"),
                    ));
                }
                p
            }
            None => free_node_port(objects, owner).await?,
        };
        claims.push(port_key(port));
        obj["spec"]["ports"][i]["nodePort"] = json!(port);
    }
    Ok(())
}

async fn free_node_port(objects: &Objects, owner: &str) -> ApiResult<u16> {
    let span = u32::from(NODE_PORT_MAX - NODE_PORT_MIN) + 1;
    let start: u32 = rand::thread_rng().gen();
    for i in 0..span {
        let p = NODE_PORT_MIN + ((start.wrapping_add(i)) % span) as u16;
        if objects
            .claim_raw(&port_key(p), owner.as_bytes().to_vec())
            .await?
        {
            return Ok(p);
        }
    }
    Err(ApiError::internal("the node port range is full"))
}

async fn release_keys(objects: &Objects, keys: &[String], owner: &str) {
    for k in keys {
        if let Err(e) = objects.release_raw(k, owner.as_bytes()).await {
            tracing::warn!(key = %k, error = %e.message, "could not release a service allocation");
        }
    }
}

/// Releases what a deleted service held.
pub async fn release(objects: &Objects, owner: &str, obj: &Value) {
    let mut keys = Vec::new();
    if let Some(ip) = obj["spec"]["clusterIP"]
        .as_str()
        .and_then(|s| s.parse().ok())
    {
        keys.push(ip_key(ip));
    }
    for p in obj["spec"]["ports"].as_array().into_iter().flatten() {
        if let Some(n) = p["nodePort"].as_u64().and_then(|n| u16::try_from(n).ok()) {
            keys.push(port_key(n));
        }
    }
    release_keys(objects, &keys, owner).await;
}

/// On update, an omitted cluster IP or node port keeps the stored one
/// (clients such as `kubectl apply` never send them back).
pub fn carry_over(old: &Value, new: &mut Value) {
    for f in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
        if new["spec"].get(f).is_none_or(|v| v.is_null() || v == "") {
            if let Some(v) = old["spec"].get(f) {
                new["spec"][f] = v.clone();
            }
        }
    }
    let Some(ports) = new["spec"]["ports"].as_array_mut() else {
        return;
    };
    for p in ports {
        if p.get("nodePort").is_some() {
            continue;
        }
        let proto = |v: &Value| v["protocol"].as_str().unwrap_or("TCP").to_string();
        let same = old["spec"]["ports"].as_array().and_then(|olds| {
            olds.iter()
                .find(|o| o["port"] == p["port"] && proto(o) == proto(p))
        });
        if let Some(n) = same.and_then(|o| o.get("nodePort")) {
            p["nodePort"] = n.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_skip_reserved_addresses() {
        let r: ServiceRange = "127.43.7.9/16".parse().unwrap();
        assert_eq!(r.to_string(), "127.43.0.0/16");
        assert_eq!(r, ServiceRange::default());
        assert_eq!(r.nth(0), Ipv4Addr::new(127, 43, 0, 2));
        assert!(r.contains(r.nth(u32::MAX)));
        assert_ne!(r.nth(65532), Ipv4Addr::new(127, 43, 255, 255));
        assert!("10.0.0.0".parse::<ServiceRange>().is_err());
        assert!("10.0.0.0/31".parse::<ServiceRange>().is_err());
        let small: ServiceRange = "127.90.0.0/28".parse().unwrap();
        for n in 0..100 {
            let ip = small.nth(n);
            assert!(
                small.contains(ip)
                    && ip != Ipv4Addr::new(127, 90, 0, 15)
                    && ip != Ipv4Addr::new(127, 90, 0, 1)
                    && ip != Ipv4Addr::new(127, 90, 0, 10)
            );
        }
    }

    /// `.1` (the `kubernetes` Service) and `.10` (kube-dns) are asked for
    /// by address; random allocation never hands them out, and every
    /// other usable address is reachable.
    #[test]
    fn random_allocation_skips_the_api_and_dns_addresses() {
        let small: ServiceRange = "127.90.0.0/28".parse().unwrap();
        assert_eq!(small.api_service_ip(), Ipv4Addr::new(127, 90, 0, 1));
        assert_eq!(small.dns_service_ip(), Ipv4Addr::new(127, 90, 0, 10));
        let handed: std::collections::BTreeSet<u8> =
            (0..1000).map(|n| small.nth(n).octets()[3]).collect();
        let want: std::collections::BTreeSet<u8> = (2..=14).filter(|o| *o != 10).collect();
        assert_eq!(handed, want);
        let wide = ServiceRange::default();
        assert_eq!(wide.dns_service_ip(), Ipv4Addr::new(127, 43, 0, 10));
        assert!((0..70_000).all(|n| {
            let ip = wide.nth(n);
            ip != wide.dns_service_ip() && ip != wide.api_service_ip()
        }));
    }

    #[test]
    fn updates_keep_allocated_addresses() {
        let old = json!({"spec": {"clusterIP": "127.43.0.5", "clusterIPs": ["127.43.0.5"],
                                  "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30001}]}});
        let mut new = json!({"spec": {"ports": [{"port": 80, "protocol": "TCP"}]}});
        carry_over(&old, &mut new);
        assert_eq!(new["spec"]["clusterIP"], "127.43.0.5");
        assert_eq!(new["spec"]["ports"][0]["nodePort"], 30001);
    }
}
