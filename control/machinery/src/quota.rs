//! ResourceQuota arithmetic (Kubernetes' `pkg/quota/v1/evaluator/core`):
//! what one object charges against a quota, whether a quota's scopes cover
//! it, and how quantities are printed in `status.used` and in messages.
//!
//! Shared by the API server's quota admission (which refuses a create that
//! would exceed `spec.hard`) and the quota controller (which recomputes
//! `status.used`), so the two can never disagree about what counts.
//!
//! Guarantees: no panics on any input; malformed quantities count as zero
//! (validation rejects them before they are stored). Amounts are nano-units
//! (see [`quantity_nanos`]), so a count of 1 is `1_000_000_000`.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::quantity::quantity_nanos;

/// Resource name → amount in nano-units.
pub type Usage = BTreeMap<String, i128>;

/// One whole unit (one object, one core) in nano-units.
pub const ONE: i128 = 1_000_000_000;

/// The quota names an object of `(group, resource)` is charged under:
/// `count/<resource>[.<group>]`, plus the kind's own names (`pods`,
/// `requests.cpu`, `services`, `requests.storage`, ...). Empty for a pod that
/// no longer counts (finished or terminating, as in Kubernetes).
pub fn usage(group: &str, resource: &str, obj: &Value) -> Usage {
    let mut u = Usage::new();
    if resource == "pods" && !pod_counts(obj) {
        return u;
    }
    u.insert(count_name(group, resource), ONE);
    match (group, resource) {
        ("", "pods") => pod_usage(obj, &mut u),
        ("", "services") => service_usage(obj, &mut u),
        ("", "persistentvolumeclaims") => {
            u.insert(resource.to_string(), ONE);
            let storage = obj["spec"]["resources"]["requests"]["storage"].as_str();
            add(&mut u, "requests.storage", storage.and_then(quantity_nanos));
        }
        ("", "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas") => {
            u.insert(resource.to_string(), ONE);
        }
        _ => {}
    }
    u
}

/// `count/pods`, `count/deployments.apps`: Kubernetes' object-count names.
pub fn count_name(group: &str, resource: &str) -> String {
    if group.is_empty() {
        format!("count/{resource}")
    } else {
        format!("count/{resource}.{group}")
    }
}

/// The `(group, resource)` a quota name can charge, for the names a
/// controller must recount; None for names no object is charged under.
pub fn charged_resource(name: &str) -> Option<(String, String)> {
    let core = |r: &str| Some((String::new(), r.to_string()));
    match name {
        "pods" | "cpu" | "memory" | "ephemeral-storage" => core("pods"),
        n if n.starts_with("requests.") || n.starts_with("limits.") => match n {
            "requests.storage" => core("persistentvolumeclaims"),
            _ => core("pods"),
        },
        "services" | "services.nodeports" | "services.loadbalancers" => core("services"),
        "configmaps"
        | "secrets"
        | "persistentvolumeclaims"
        | "replicationcontrollers"
        | "resourcequotas" => core(name),
        n => {
            let counted = n.strip_prefix("count/")?;
            match counted.split_once('.') {
                Some((r, g)) => Some((g.to_string(), r.to_string())),
                None => core(counted),
            }
        }
    }
}

/// A pod counts against quota unless it finished (Succeeded/Failed) or is
/// being deleted.
pub fn pod_counts(pod: &Value) -> bool {
    let finished = matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    );
    !finished && pod["metadata"]["deletionTimestamp"].is_null()
}

fn add(u: &mut Usage, name: &str, amount: Option<i128>) {
    if let Some(a) = amount {
        *u.entry(name.to_string()).or_insert(0) += a;
    }
}

/// `pods`, and the compute resources: the sum over containers, or the
/// largest init container when that is more (they run one at a time
/// before the others), plus the pod's overhead.
fn pod_usage(pod: &Value, u: &mut Usage) {
    u.insert("pods".into(), ONE);
    let spec = &pod["spec"];
    for (res, amount) in pod_resources(spec, "requests") {
        // Requests of cpu/memory are also charged under the bare name
        // (`cpu`), Kubernetes' legacy quota names.
        if matches!(res.as_str(), "cpu" | "memory" | "ephemeral-storage") {
            u.insert(res.clone(), amount);
        }
        u.insert(format!("requests.{res}"), amount);
    }
    for (res, amount) in pod_resources(spec, "limits") {
        u.insert(format!("limits.{res}"), amount);
    }
}

/// The pod's effective `requests` or `limits` per resource.
pub fn pod_resources(spec: &Value, kind: &str) -> BTreeMap<String, i128> {
    let sum = containers_total(&spec["containers"], kind, |a, b| a + b);
    let init = containers_total(&spec["initContainers"], kind, i128::max);
    let mut out = sum;
    for (r, v) in init {
        let e = out.entry(r).or_insert(0);
        *e = (*e).max(v);
    }
    if let Some(overhead) = spec["overhead"].as_object() {
        for (r, q) in overhead {
            if let Some(n) = q.as_str().and_then(quantity_nanos) {
                *out.entry(r.clone()).or_insert(0) += n;
            }
        }
    }
    out
}

fn containers_total(
    containers: &Value,
    kind: &str,
    combine: fn(i128, i128) -> i128,
) -> BTreeMap<String, i128> {
    let mut out = BTreeMap::new();
    for c in containers.as_array().into_iter().flatten() {
        for (r, q) in c["resources"][kind].as_object().into_iter().flatten() {
            if let Some(n) = q.as_str().and_then(quantity_nanos) {
                let e = out.entry(r.clone()).or_insert(0);
                *e = combine(*e, n);
            }
        }
    }
    out
}

fn service_usage(svc: &Value, u: &mut Usage) {
    u.insert("services".into(), ONE);
    let ty = svc["spec"]["type"].as_str().unwrap_or("ClusterIP");
    let ports = svc["spec"]["ports"].as_array().map_or(0, Vec::len);
    let ports = i128::try_from(ports).unwrap_or(0) * ONE;
    match ty {
        "NodePort" => {
            u.insert("services.nodeports".into(), ports);
        }
        "LoadBalancer" => {
            u.insert("services.loadbalancers".into(), ONE);
            u.insert("services.nodeports".into(), ports);
        }
        _ => {}
    }
}

/// Names whose quota obliges every container to state the resource
/// (Kubernetes' backward-compatibility rule for cpu and memory).
const MUST_SPECIFY: &[&str] = &[
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];

/// `must specify limits.cpu for: a,b; requests.cpu for: a` when a quota
/// limits one of [`MUST_SPECIFY`] and some container does not state it.
pub fn missing_constraints<'a>(
    pod: &Value,
    hard: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let required: Vec<&str> = hard
        .into_iter()
        .filter(|h| MUST_SPECIFY.contains(h))
        .collect();
    let mut missing: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let spec = &pod["spec"];
    let containers = spec["containers"].as_array().into_iter().flatten();
    let inits = spec["initContainers"].as_array().into_iter().flatten();
    for c in containers.chain(inits) {
        let name = c["name"].as_str().unwrap_or("");
        for r in &required {
            let (kind, res) = match r.split_once('.') {
                Some((k, res)) => (k, res),
                None => ("requests", *r),
            };
            if c["resources"][kind][res].is_null() {
                missing.entry(r).or_default().push(name);
            }
        }
    }
    if missing.is_empty() {
        return None;
    }
    let parts: Vec<String> = missing
        .into_iter()
        .map(|(r, mut names)| {
            names.sort_unstable();
            names.dedup();
            format!("{r} for: {}", names.join(","))
        })
        .collect();
    Some(format!("must specify {}", parts.join("; ")))
}

/// Whether a quota with `scopes` covers the object: scoped quotas
/// (`Terminating`, `NotTerminating`, `BestEffort`, `NotBestEffort`) only
/// cover pods that fit every scope; unknown scopes cover nothing.
pub fn scopes_match(scopes: &[&str], resource: &str, obj: &Value) -> bool {
    if scopes.is_empty() {
        return true;
    }
    if resource != "pods" {
        return false;
    }
    let terminating = !obj["spec"]["activeDeadlineSeconds"].is_null();
    let best_effort = is_best_effort(&obj["spec"]);
    scopes.iter().all(|s| match *s {
        "Terminating" => terminating,
        "NotTerminating" => !terminating,
        "BestEffort" => best_effort,
        "NotBestEffort" => !best_effort,
        _ => false,
    })
}

/// No container states any cpu or memory request or limit.
fn is_best_effort(spec: &Value) -> bool {
    let containers = spec["containers"].as_array().into_iter().flatten();
    let inits = spec["initContainers"].as_array().into_iter().flatten();
    containers.chain(inits).all(|c| {
        ["requests", "limits"].iter().all(|k| {
            let r = &c["resources"][*k];
            r["cpu"].is_null() && r["memory"].is_null()
        })
    })
}

/// Which quantities a resource name holds in bytes (printed with binary
/// suffixes when exact, `128Mi`, as Kubernetes keeps its BinarySI format).
fn is_bytes(name: &str) -> bool {
    name.contains("memory") || name.contains("storage")
}

/// A quantity in Kubernetes' canonical form: `500m`, `2`, `1k`, `128Mi`.
pub fn format_quantity(name: &str, nanos: i128) -> String {
    if nanos < 0 {
        return format!("-{}", format_quantity(name, -nanos));
    }
    if nanos % ONE != 0 {
        for (div, suffix) in [(1_000_000, "m"), (1_000, "u"), (1, "n")] {
            if nanos % div == 0 {
                return format!("{}{suffix}", nanos / div);
            }
        }
    }
    let n = nanos / ONE;
    if n == 0 {
        return "0".into();
    }
    if is_bytes(name) {
        for (shift, suffix) in [
            (60, "Ei"),
            (50, "Pi"),
            (40, "Ti"),
            (30, "Gi"),
            (20, "Mi"),
            (10, "Ki"),
        ] {
            if n % (1i128 << shift) == 0 {
                return format!("{}{suffix}", n >> shift);
            }
        }
    }
    for (exp, suffix) in [
        (18, "E"),
        (15, "P"),
        (12, "T"),
        (9, "G"),
        (6, "M"),
        (3, "k"),
    ] {
        let div = 10i128.pow(exp);
        if n % div == 0 {
            return format!("{}{suffix}", n / div);
        }
    }
    n.to_string()
}

/// `pods=1,requests.cpu=500m`: Kubernetes' `prettyPrint` of a resource
/// list, sorted by name.
pub fn pretty(u: &Usage) -> String {
    u.iter()
        .map(|(k, v)| format!("{k}={}", format_quantity(k, *v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// A resource list (`{"pods": "2"}`) as amounts; malformed entries dropped.
pub fn parse_list(v: &Value) -> Usage {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, q)| Some((k.clone(), q.as_str().and_then(quantity_nanos)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(containers: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"containers": containers}, "status": {"phase": "Running"}})
    }

    #[test]
    fn a_pod_charges_count_and_compute() {
        let p = pod(json!([
            {"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1"}}},
            {"name": "b", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}}
        ]));
        let u = usage("", "pods", &p);
        assert_eq!(
            pretty(&u),
            "count/pods=1,cpu=500m,limits.cpu=1,memory=128Mi,pods=1,requests.cpu=500m,requests.memory=128Mi"
        );
    }

    #[test]
    fn finished_and_terminating_pods_are_free() {
        let mut p = pod(json!([{"name": "a"}]));
        p["status"]["phase"] = json!("Succeeded");
        assert!(usage("", "pods", &p).is_empty());
        let mut p = pod(json!([{"name": "a"}]));
        p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert!(usage("", "pods", &p).is_empty());
    }

    #[test]
    fn init_containers_count_when_larger() {
        let mut p = pod(json!([{"name": "a", "resources": {"requests": {"cpu": "100m"}}}]));
        p["spec"]["initContainers"] =
            json!([{"name": "i", "resources": {"requests": {"cpu": "1"}}}]);
        assert_eq!(usage("", "pods", &p)["requests.cpu"], ONE);
    }

    #[test]
    fn other_kinds_charge_their_names() {
        let pvc = json!({"spec": {"resources": {"requests": {"storage": "1Gi"}}}});
        assert_eq!(
            pretty(&usage("", "persistentvolumeclaims", &pvc)),
            "count/persistentvolumeclaims=1,persistentvolumeclaims=1,requests.storage=1Gi"
        );
        let svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 1}, {"port": 2}]}});
        assert_eq!(
            pretty(&usage("", "services", &svc)),
            "count/services=1,services=1,services.nodeports=2"
        );
        assert_eq!(
            pretty(&usage("apps", "deployments", &json!({}))),
            "count/deployments.apps=1"
        );
    }

    #[test]
    fn names_map_back_to_resources() {
        let r = |n: &str| charged_resource(n);
        assert_eq!(r("requests.cpu"), Some((String::new(), "pods".into())));
        assert_eq!(
            r("count/deployments.apps"),
            Some(("apps".into(), "deployments".into()))
        );
        assert_eq!(
            r("requests.storage"),
            Some((String::new(), "persistentvolumeclaims".into()))
        );
        assert_eq!(r("count/secrets"), Some((String::new(), "secrets".into())));
        assert_eq!(r("bogus"), None);
    }

    #[test]
    fn missing_requests_are_named_per_container() {
        let p = pod(json!([
            {"name": "b", "resources": {"requests": {"cpu": "1"}}},
            {"name": "a"}
        ]));
        assert_eq!(
            missing_constraints(&p, ["requests.cpu", "pods"]),
            Some("must specify requests.cpu for: a".into())
        );
        assert_eq!(
            missing_constraints(&p, ["limits.cpu", "requests.cpu"]),
            Some("must specify limits.cpu for: a,b; requests.cpu for: a".into())
        );
        assert_eq!(missing_constraints(&p, ["pods"]), None);
    }

    #[test]
    fn scopes_select_pods() {
        let be = pod(json!([{"name": "a"}]));
        assert!(scopes_match(&["BestEffort"], "pods", &be));
        assert!(!scopes_match(&["NotBestEffort"], "pods", &be));
        assert!(scopes_match(&["NotTerminating"], "pods", &be));
        assert!(!scopes_match(&["BestEffort"], "services", &json!({})));
        assert!(scopes_match(&[], "services", &json!({})));
    }

    #[test]
    fn quantities_print_canonically() {
        let q = |n: &str, s: &str| format_quantity(n, quantity_nanos(s).unwrap());
        assert_eq!(q("requests.cpu", "0.5"), "500m");
        assert_eq!(q("requests.cpu", "2000m"), "2");
        assert_eq!(q("requests.memory", "1073741824"), "1Gi");
        assert_eq!(q("requests.memory", "1G"), "1G");
        assert_eq!(q("pods", "1500"), "1500");
        assert_eq!(q("pods", "0"), "0");
        assert_eq!(q("pods", "3000"), "3k");
    }
}
