//! A pod's resolv.conf, as the kubelet writes it (`pods/<uid>/resolv.conf`).
//!
//! `dnsPolicy`:
//! - `ClusterFirst` (default): `nameserver <cluster DNS>`, search
//!   `<ns>.svc.<domain> svc.<domain> <domain>` then the host's search
//!   domains, `options ndots:5`; a hostNetwork pod gets `Default` instead;
//! - `ClusterFirstWithHostNet`: `ClusterFirst`, hostNetwork or not;
//! - `Default`: the host's nameservers, search domains and options;
//! - `None`: only what `dnsConfig` gives.
//!
//! `dnsConfig` is merged on top: nameservers and searches appended
//! (duplicates dropped), options replace same-named ones. As the kubelet,
//! at most 3 nameservers and 32 search domains are kept; a cluster policy
//! while the cluster DNS address is unknown falls back to `Default`.
//!
//! In the exec runtime pods share the host's `/etc/resolv.conf`, so the
//! file's path reaches containers as env [`RESOLV_CONF_ENV`]; an isolating
//! runtime bind-mounts it at `/etc/resolv.conf`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;

/// The env var naming the pod's resolv.conf in every container.
pub const RESOLV_CONF_ENV: &str = "KEEL_RESOLV_CONF";
/// The file's name in the pod directory.
pub const FILE_NAME: &str = "resolv.conf";
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;

/// What a node knows for building resolv.conf files.
#[derive(Debug, Clone, Default)]
pub struct DnsSettings {
    /// The cluster DNS address; `None` until known.
    pub cluster_dns: Option<IpAddr>,
    /// The cluster domain, e.g. `cluster.local`.
    pub cluster_domain: String,
    /// The host's resolv.conf text.
    pub host: String,
}

/// The parsed parts of a resolv.conf.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResolvConf {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    /// `name` or `name:value`, in order.
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Parses `nameserver`, `search`/`domain` and `options` lines (the
    /// last `search` or `domain` line wins, as in libc).
    pub fn parse(text: &str) -> ResolvConf {
        let mut out = ResolvConf::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => out.nameservers.extend(words.next().map(str::to_string)),
                Some("search") | Some("domain") => {
                    out.searches = words.map(str::to_string).collect();
                }
                Some("options") => {
                    for o in words {
                        merge_option(&mut out.options, o.to_string());
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// The file text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for n in &self.nameservers {
            s.push_str(&format!("nameserver {n}\n"));
        }
        if !self.searches.is_empty() {
            s.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        if !self.options.is_empty() {
            s.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        s
    }
}

fn option_name(o: &str) -> &str {
    o.split(':').next().unwrap_or(o)
}

fn merge_option(options: &mut Vec<String>, o: String) {
    match options
        .iter_mut()
        .find(|cur| option_name(cur) == option_name(&o))
    {
        Some(cur) => *cur = o,
        None => options.push(o),
    }
}

fn push_unique(list: &mut Vec<String>, v: String) {
    if !list.contains(&v) {
        list.push(v);
    }
}

/// The resolv.conf of `pod`.
///
/// Errors (the message for the pod's event): an unknown `dnsPolicy`, or
/// `None` without any nameserver in `dnsConfig`.
pub fn for_pod(pod: &Pod, s: &DnsSettings) -> Result<ResolvConf, String> {
    let spec = pod.spec.as_ref();
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let host = ResolvConf::parse(&s.host);
    let domain = s.cluster_domain.trim_end_matches('.');
    let cluster = |dns: IpAddr| ResolvConf {
        nameservers: vec![dns.to_string()],
        searches: [
            format!("{ns}.svc.{domain}"),
            format!("svc.{domain}"),
            domain.to_string(),
        ]
        .into_iter()
        .chain(host.searches.iter().cloned())
        .collect(),
        options: vec!["ndots:5".to_string()],
    };
    let mut out = match (policy, s.cluster_dns) {
        ("ClusterFirst", Some(dns)) if !host_network => cluster(dns),
        ("ClusterFirstWithHostNet", Some(dns)) => cluster(dns),
        ("ClusterFirst" | "ClusterFirstWithHostNet" | "Default", _) => host.clone(),
        ("None", _) => ResolvConf::default(),
        (other, _) => {
            return Err(format!(
                "spec.dnsPolicy: Unsupported value: {other:?}: supported values: \"ClusterFirst\", \"ClusterFirstWithHostNet\", \"Default\", \"None\""
            ))
        }
    };
    if let Some(cfg) = spec.and_then(|s| s.dns_config.as_ref()) {
        for n in cfg.nameservers.iter().flatten() {
            push_unique(&mut out.nameservers, n.clone());
        }
        for d in cfg.searches.iter().flatten() {
            push_unique(&mut out.searches, d.clone());
        }
        for o in cfg.options.iter().flatten() {
            let o = match &o.value {
                Some(v) => format!("{}:{v}", o.name.as_deref().unwrap_or_default()),
                None => o.name.clone().unwrap_or_default(),
            };
            if !o.is_empty() {
                merge_option(&mut out.options, o);
            }
        }
    }
    if policy == "None" && out.nameservers.is_empty() {
        return Err("spec.dnsConfig.nameservers: Required value: must provide at least one DNS nameserver when dnsPolicy is None".into());
    }
    out.nameservers.truncate(MAX_NAMESERVERS);
    out.searches.truncate(MAX_SEARCHES);
    Ok(out)
}

/// The file's path in a pod directory.
pub fn path(pod_dir: &Path) -> PathBuf {
    pod_dir.join(FILE_NAME)
}

/// Writes the pod's resolv.conf into `pod_dir` (atomically: a reader
/// never sees half a file). Errors: as [`for_pod`], or the write failing.
pub fn write(pod: &Pod, pod_dir: &Path, s: &DnsSettings) -> Result<PathBuf, String> {
    let text = for_pod(pod, s)?.render();
    let dst = path(pod_dir);
    let tmp = pod_dir.join(format!(".{FILE_NAME}.tmp"));
    std::fs::create_dir_all(pod_dir)
        .and_then(|()| std::fs::write(&tmp, text))
        .and_then(|()| std::fs::rename(&tmp, &dst))
        .map_err(|e| format!("writing {}: {e}", dst.display()))?;
    Ok(dst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "shop"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn settings() -> DnsSettings {
        DnsSettings {
            cluster_dns: Some("127.43.0.10".parse().unwrap()),
            cluster_domain: "cluster.local".into(),
            host: "nameserver 127.0.0.53\nsearch corp.test\noptions edns0 trust-ad\n".into(),
        }
    }

    #[test]
    fn cluster_first_points_at_the_cluster_dns() {
        let text = for_pod(&pod(json!({"containers": []})), &settings())
            .unwrap()
            .render();
        assert_eq!(
            text,
            "nameserver 127.43.0.10\n\
             search shop.svc.cluster.local svc.cluster.local cluster.local corp.test\n\
             options ndots:5\n"
        );
        // hostNetwork + ClusterFirst = the host's; WithHostNet = cluster.
        let host_net = for_pod(
            &pod(json!({"containers": [], "hostNetwork": true})),
            &settings(),
        )
        .unwrap();
        assert_eq!(host_net.nameservers, vec!["127.0.0.53"]);
        let with_host_net = for_pod(
            &pod(json!({"containers": [], "hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"})),
            &settings(),
        )
        .unwrap();
        assert_eq!(with_host_net.nameservers, vec!["127.43.0.10"]);
        // Unknown cluster DNS: the host's configuration.
        let unknown = DnsSettings {
            cluster_dns: None,
            ..settings()
        };
        let fallback = for_pod(&pod(json!({"containers": []})), &unknown).unwrap();
        assert_eq!(fallback.options, vec!["edns0", "trust-ad"]);
    }

    #[test]
    fn default_none_and_dns_config() {
        let default = for_pod(
            &pod(json!({"containers": [], "dnsPolicy": "Default"})),
            &settings(),
        )
        .unwrap();
        assert_eq!(default, ResolvConf::parse(&settings().host));
        let none = for_pod(
            &pod(json!({"containers": [], "dnsPolicy": "None", "dnsConfig": {
                "nameservers": ["127.0.0.9", "127.0.0.9"],
                "searches": ["a.test"],
                "options": [{"name": "ndots", "value": "2"}, {"name": "rotate"}]}})),
            &settings(),
        )
        .unwrap();
        assert_eq!(
            none.render(),
            "nameserver 127.0.0.9\nsearch a.test\noptions ndots:2 rotate\n"
        );
        let merged = for_pod(
            &pod(json!({"containers": [], "dnsConfig": {
                "options": [{"name": "ndots", "value": "1"}]}})),
            &settings(),
        )
        .unwrap();
        assert_eq!(merged.options, vec!["ndots:1"]);
        let err = for_pod(
            &pod(json!({"containers": [], "dnsPolicy": "None"})),
            &settings(),
        )
        .unwrap_err();
        assert!(err.contains("dnsConfig.nameservers"), "{err}");
        let bad = for_pod(
            &pod(json!({"containers": [], "dnsPolicy": "Bogus"})),
            &settings(),
        )
        .unwrap_err();
        assert!(bad.contains("spec.dnsPolicy"), "{bad}");
    }

    #[test]
    fn writes_the_file_into_the_pod_dir() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&pod(json!({"containers": []})), dir.path(), &settings()).unwrap();
        assert_eq!(p, dir.path().join("resolv.conf"));
        let text = std::fs::read_to_string(p).unwrap();
        assert!(text.starts_with("nameserver 127.43.0.10\n"), "{text}");
    }
}
