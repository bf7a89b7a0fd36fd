//! LimitRange admission (Kubernetes' `LimitRanger` plugin), on the create
//! of pods and PersistentVolumeClaims.
//!
//! First it fills what containers leave out: limits from a `Container`
//! item's `default`, requests from its `defaultRequest` (recorded in the
//! `kubernetes.io/limit-ranger` annotation). Then it enforces every item:
//! `min`/`max`/`maxLimitRequestRatio` per `Container` and for the `Pod` as
//! a whole, `min`/`max` storage per `PersistentVolumeClaim`. A violation is
//! 403 Forbidden with Kubernetes' wording (`maximum cpu usage per Container
//! is 500m, but limit is 1`), and nothing is written.
//!
//! A LimitRange created a moment ago through another replica already
//! applies: the LimitRanges are read from this replica's applied state and
//! the create's write is guarded (see [`super::reads`]): it commits only if
//! the namespace's LimitRanges are still exactly those read (none created,
//! changed or deleted since), else admission runs again from a
//! linearizable read. So the object stored was defaulted and checked
//! against the LimitRanges the namespace held when it was written. A
//! refusal is confirmed from a linearizable read before it is answered;
//! dry runs read linearizably throughout.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::quota::forbidden;
use super::reads::Reads;
use crate::resources::{self, ResourceInfo};
use crate::status::ApiResult;
use crate::storage::{Guard, Objects, Stored};
use keel_apimachinery::quota::{format_quantity, pod_resources};

const ANNOTATION: &str = "kubernetes.io/limit-ranger";

/// Defaults then checks `obj` (a pod or a PVC being created) against the
/// LimitRanges of its namespace, read as `reads` says; other kinds pass
/// untouched (None). Some(guard): what was read, for the create's write
/// to check (see [`super::reads`]). A refusal from a local read is
/// confirmed from a linearizable one before it is answered.
pub async fn admit(
    objects: &Objects,
    info: &ResourceInfo,
    obj: &mut Value,
    reads: Reads,
) -> ApiResult<Option<Guard>> {
    if !info.group.is_empty() || !matches!(info.resource, "pods" | "persistentvolumeclaims") {
        return Ok(None);
    }
    let Some(ns) = obj["metadata"]["namespace"].as_str() else {
        return Ok(None);
    };
    let lr = resources::find("", "v1", "limitranges").expect("limitranges are served");
    let prefix = lr.prefix(Some(ns));
    let mut reads = reads;
    loop {
        let (page, guard) = super::reads::list(objects, &prefix, reads).await?;
        let items = limits(page.items);
        if items.is_empty() {
            return Ok(Some(guard));
        }
        let mut admitted = obj.clone();
        let errors = if info.resource == "pods" {
            apply_defaults(&mut admitted, &items);
            check_pod(&admitted, &items)
        } else {
            check_pvc(&admitted, &items)
        };
        match (errors.as_slice(), reads) {
            ([], _) => {
                *obj = admitted;
                return Ok(Some(guard));
            }
            (_, Reads::Local) => reads = Reads::Linearizable,
            ([one], _) => return Err(forbidden(info, &admitted, one)),
            (many, _) => {
                let why = format!("[{}]", many.join(", "));
                return Err(forbidden(info, &admitted, &why));
            }
        }
    }
}

/// The `spec.limits` items of every LimitRange, in key order.
fn limits(ranges: Vec<Stored>) -> Vec<Value> {
    ranges
        .into_iter()
        .flat_map(|mut s| match s.obj["spec"]["limits"].take() {
            Value::Array(items) => items,
            _ => vec![],
        })
        .collect()
}

fn of_type<'a>(items: &'a [Value], ty: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    items.iter().filter(move |i| i["type"] == ty)
}

/// Every container (init containers too) gets the limits and requests it
/// lacks from the `Container` items, first LimitRange first.
fn apply_defaults(pod: &mut Value, items: &[Value]) {
    let mut notes = Vec::new();
    for (list, label) in [
        ("initContainers", "init container"),
        ("containers", "container"),
    ] {
        let Some(containers) = pod["spec"][list].as_array_mut() else {
            continue;
        };
        for c in containers {
            let name = c["name"].as_str().unwrap_or("").to_string();
            let limits = fill(c, "limits", items, "default");
            let requests = fill(c, "requests", items, "defaultRequest");
            // Kubernetes notes requests before limits.
            for (set, word) in [(requests, "request"), (limits, "limit")] {
                if !set.is_empty() {
                    notes.push(format!("{} {word} for {label} {name}", set.join(", ")));
                }
            }
        }
    }
    if notes.is_empty() {
        return;
    }
    let m = crate::meta::meta_mut(pod);
    let annotations = m.entry("annotations").or_insert_with(|| json!({}));
    if !annotations.is_object() {
        *annotations = json!({});
    }
    annotations[ANNOTATION] = json!(format!("LimitRanger plugin set: {}", notes.join("; ")));
}

/// Copies into `c.resources.<kind>` each resource it lacks from the
/// Container items' `<from>`; the names set, sorted.
fn fill(c: &mut Value, kind: &str, items: &[Value], from: &str) -> Vec<String> {
    let mut set = Vec::new();
    for item in of_type(items, "Container") {
        for (r, q) in item[from].as_object().into_iter().flatten() {
            if !c["resources"].is_object() {
                c["resources"] = json!({});
            }
            if !c["resources"][kind].is_object() {
                c["resources"][kind] = json!({});
            }
            if c["resources"][kind].get(r).is_none() {
                c["resources"][kind][r] = q.clone();
                set.push(r.clone());
            }
        }
    }
    set.sort();
    set
}

/// A resource list as amounts; malformed entries are left to validation.
fn amounts(v: &Value) -> BTreeMap<String, i128> {
    keel_apimachinery::quota::parse_list(v)
}

/// The Container checks for each container, then the Pod checks on the
/// pod's total.
fn check_pod(pod: &Value, items: &[Value]) -> Vec<String> {
    let mut errors = Vec::new();
    let spec = &pod["spec"];
    let containers = spec["containers"].as_array().into_iter().flatten();
    let inits = spec["initContainers"].as_array().into_iter().flatten();
    for c in containers.chain(inits) {
        let req = amounts(&c["resources"]["requests"]);
        let lim = amounts(&c["resources"]["limits"]);
        for item in of_type(items, "Container") {
            constraints(&mut errors, "Container", item, &req, &lim);
        }
    }
    let req = pod_resources(spec, "requests");
    let lim = pod_resources(spec, "limits");
    for item in of_type(items, "Pod") {
        constraints(&mut errors, "Pod", item, &req, &lim);
    }
    errors
}

/// min, max and maxLimitRequestRatio of one item against requests `req`
/// and limits `lim`, worded as Kubernetes' limitranger.
fn constraints(
    errors: &mut Vec<String>,
    ty: &str,
    item: &Value,
    req: &BTreeMap<String, i128>,
    lim: &BTreeMap<String, i128>,
) {
    let show = |r: &str, n: i128| format_quantity(r, n);
    for (r, min) in amounts(&item["min"]) {
        let floor = format!("minimum {r} usage per {ty} is {}", show(&r, min));
        match (req.get(&r), lim.get(&r)) {
            (None, _) => errors.push(format!("{floor}.  No request is specified")),
            (Some(q), _) if *q < min => {
                errors.push(format!("{floor}, but request is {}", show(&r, *q)))
            }
            (_, Some(l)) if *l < min => {
                errors.push(format!("{floor}, but limit is {}", show(&r, *l)))
            }
            _ => {}
        }
    }
    for (r, max) in amounts(&item["max"]) {
        let ceiling = format!("maximum {r} usage per {ty} is {}", show(&r, max));
        match (req.get(&r), lim.get(&r)) {
            (_, None) => errors.push(format!("{ceiling}.  No limit is specified")),
            (_, Some(l)) if *l > max => {
                errors.push(format!("{ceiling}, but limit is {}", show(&r, *l)))
            }
            (Some(q), _) if *q > max => {
                errors.push(format!("{ceiling}, but request is {}", show(&r, *q)))
            }
            _ => {}
        }
    }
    for (r, ratio) in amounts(&item["maxLimitRequestRatio"]) {
        let head = format!(
            "{r} max limit to request ratio per {ty} is {}",
            show("", ratio)
        );
        let q = req.get(&r).copied().filter(|q| *q != 0);
        let l = lim.get(&r).copied().filter(|l| *l != 0);
        match (q, l) {
            (None, _) => errors.push(format!(
                "{head}, but no request is specified or request is 0"
            )),
            (_, None) => errors.push(format!("{head}, but no limit is specified or limit is 0")),
            (Some(q), Some(l)) => {
                // limit / request > ratio, in integers: limit * 1e9 > ratio * request.
                if l.saturating_mul(1_000_000_000) > ratio.saturating_mul(q) {
                    let observed = l as f64 / q as f64;
                    errors.push(format!("{head}, but provided ratio is {observed:.6}"));
                }
            }
        }
    }
}

/// `min`/`max` of PersistentVolumeClaim items against the claim's request.
fn check_pvc(pvc: &Value, items: &[Value]) -> Vec<String> {
    let req = amounts(&pvc["spec"]["resources"]["requests"]);
    let mut errors = Vec::new();
    let ty = "PersistentVolumeClaim";
    for item in of_type(items, ty) {
        for (bound, word, lower) in [("min", "minimum", true), ("max", "maximum", false)] {
            for (r, limit) in amounts(&item[bound]) {
                let head = format!(
                    "{word} {r} usage per {ty} is {}",
                    format_quantity(&r, limit)
                );
                match req.get(&r) {
                    None => errors.push(format!("{head}.  No request is specified")),
                    Some(q) if (lower && *q < limit) || (!lower && *q > limit) => errors.push(
                        format!("{head}, but request is {}", format_quantity(&r, *q)),
                    ),
                    _ => {}
                }
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items() -> Vec<Value> {
        vec![
            json!({"type": "Container", "max": {"cpu": "500m"}, "default": {"cpu": "200m", "memory": "64Mi"},
                   "defaultRequest": {"cpu": "100m"}, "maxLimitRequestRatio": {"cpu": "4"}}),
            json!({"type": "Pod", "max": {"cpu": "800m"}}),
        ]
    }

    fn pod(containers: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"containers": containers}})
    }

    #[test]
    fn defaults_fill_only_what_is_missing_and_are_recorded() {
        let mut p = pod(json!([{"name": "a", "resources": {"limits": {"cpu": "300m"}}}]));
        apply_defaults(&mut p, &items());
        let r = &p["spec"]["containers"][0]["resources"];
        assert_eq!(r["limits"], json!({"cpu": "300m", "memory": "64Mi"}));
        assert_eq!(r["requests"], json!({"cpu": "100m"}));
        assert_eq!(
            p["metadata"]["annotations"][ANNOTATION],
            "LimitRanger plugin set: cpu request for container a; memory limit for container a"
        );
        assert!(check_pod(&p, &items()).is_empty());
    }

    #[test]
    fn violations_use_kubernetes_wording() {
        let p = pod(
            json!([{"name": "a", "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "100m"}}}]),
        );
        assert_eq!(
            check_pod(&p, &items()),
            vec![
                "maximum cpu usage per Container is 500m, but limit is 1".to_string(),
                "cpu max limit to request ratio per Container is 4, but provided ratio is 10.000000"
                    .to_string(),
                "maximum cpu usage per Pod is 800m, but limit is 1".to_string(),
            ]
        );
        let two = pod(json!([
            {"name": "a", "resources": {"limits": {"cpu": "500m"}, "requests": {"cpu": "400m"}}},
            {"name": "b", "resources": {"limits": {"cpu": "500m"}, "requests": {"cpu": "400m"}}}
        ]));
        assert_eq!(
            check_pod(&two, &items()),
            vec!["maximum cpu usage per Pod is 800m, but limit is 1".to_string()]
        );
    }

    #[test]
    fn claims_are_held_to_their_storage_bounds() {
        let items = vec![
            json!({"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"}, "max": {"storage": "2Gi"}}),
        ];
        let pvc = |s: &str| json!({"spec": {"resources": {"requests": {"storage": s}}}});
        assert!(check_pvc(&pvc("1Gi"), &items).is_empty());
        assert_eq!(
            check_pvc(&pvc("3Gi"), &items),
            vec![
                "maximum storage usage per PersistentVolumeClaim is 2Gi, but request is 3Gi"
                    .to_string()
            ]
        );
        assert_eq!(
            check_pvc(&pvc("512Mi"), &items),
            vec![
                "minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 512Mi"
                    .to_string()
            ]
        );
    }
}
