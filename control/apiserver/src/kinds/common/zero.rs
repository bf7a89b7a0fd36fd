//! Go's zero values: the fields Kubernetes always emits because its Go
//! structs carry them without `omitempty` (counts as `0`, strings as `""`,
//! nested structs as `{}`), and the phases its `SetDefaults_*Status`
//! functions fill in.
//!
//! Typed clients depend on them: the official Python `kubernetes` client
//! rejects an object whose *required* field (in the OpenAPI schema, i.e.
//! one Go always emits) is missing, e.g. a DaemonSet status without
//! `numberReady`. keel keeps objects as JSON, so nothing emits these by
//! itself; the API server fills them on every write instead (create, update,
//! patch, apply and status writes, which controllers make and which may
//! leave fields out), so that everything it stores, and therefore returns
//! on get, list and watch, has them.
//!
//! The table is the one place that says, per served kind, which fields those
//! are. It follows the `k8s.io/api` structs (v1.33): a path names only
//! non-pointer structs on the way (created when missing, as Go emits them)
//! and lists (`[]`: each element; a missing list stays missing). Every fill
//! only sets a field that is missing or null, so the pass is idempotent, and
//! it never replaces JSON of the wrong type (strict decoding reports that).

use serde_json::{json, Map, Value};

/// One field and the value Go emits for it when unset.
type Fill = (&'static str, fn() -> Value);

fn zero() -> Value {
    json!(0)
}
fn empty() -> Value {
    json!("")
}
fn object() -> Value {
    json!({})
}
fn list() -> Value {
    json!([])
}
fn falsy() -> Value {
    json!(false)
}
fn pending() -> Value {
    json!("Pending")
}
fn active() -> Value {
    json!("Active")
}

/// `ContainerStatus` (of every container list): name, ready, restartCount,
/// image and imageID have no omitempty.
const POD: &[Fill] = &[
    ("status.containerStatuses[].name", empty),
    ("status.containerStatuses[].ready", falsy),
    ("status.containerStatuses[].restartCount", zero),
    ("status.containerStatuses[].image", empty),
    ("status.containerStatuses[].imageID", empty),
    ("status.initContainerStatuses[].name", empty),
    ("status.initContainerStatuses[].ready", falsy),
    ("status.initContainerStatuses[].restartCount", zero),
    ("status.initContainerStatuses[].image", empty),
    ("status.initContainerStatuses[].imageID", empty),
    ("status.ephemeralContainerStatuses[].name", empty),
    ("status.ephemeralContainerStatuses[].ready", falsy),
    ("status.ephemeralContainerStatuses[].restartCount", zero),
    ("status.ephemeralContainerStatuses[].image", empty),
    ("status.ephemeralContainerStatuses[].imageID", empty),
];

/// `NodeStatus.nodeInfo` and `.daemonEndpoints` are structs: always there,
/// every `NodeSystemInfo` string and the kubelet port with them.
const NODE: &[Fill] = &[
    ("status.daemonEndpoints.kubeletEndpoint.Port", zero),
    ("status.nodeInfo.machineID", empty),
    ("status.nodeInfo.systemUUID", empty),
    ("status.nodeInfo.bootID", empty),
    ("status.nodeInfo.kernelVersion", empty),
    ("status.nodeInfo.osImage", empty),
    ("status.nodeInfo.containerRuntimeVersion", empty),
    ("status.nodeInfo.kubeletVersion", empty),
    ("status.nodeInfo.kubeProxyVersion", empty),
    ("status.nodeInfo.operatingSystem", empty),
    ("status.nodeInfo.architecture", empty),
];

/// `metav1.Condition`: all five fields have no omitempty (the time is the
/// writer's to set; a zero time is `null` in Go too).
const CONDITION_TEXTS: [Fill; 2] = [
    ("status.conditions[].reason", empty),
    ("status.conditions[].message", empty),
];

/// The fills of each served `(group, resource)`.
static ZEROS: &[(&str, &str, &[Fill])] = &[
    ("", "pods", POD),
    ("", "services", &[("status.loadBalancer", object)]),
    // SetDefaults_NamespaceStatus.
    ("", "namespaces", &[("status.phase", active)]),
    ("", "nodes", NODE),
    // SetDefaults_PersistentVolume / _PersistentVolumeClaim.
    ("", "persistentvolumes", &[("status.phase", pending)]),
    ("", "persistentvolumeclaims", &[("status.phase", pending)]),
    (
        "",
        "events",
        &[
            ("involvedObject", object),
            ("reportingComponent", empty),
            ("reportingInstance", empty),
        ],
    ),
    ("", "resourcequotas", &[("status", object)]),
    ("", "limitranges", &[("spec.limits", list)]),
    ("", "replicationcontrollers", &[("status.replicas", zero)]),
    ("apps", "deployments", &[("status", object)]),
    ("apps", "replicasets", &[("status.replicas", zero)]),
    (
        "apps",
        "statefulsets",
        &[
            ("status.replicas", zero),
            ("status.availableReplicas", zero),
        ],
    ),
    (
        "apps",
        "daemonsets",
        &[
            ("status.currentNumberScheduled", zero),
            ("status.numberMisscheduled", zero),
            ("status.desiredNumberScheduled", zero),
            ("status.numberReady", zero),
        ],
    ),
    ("batch", "jobs", &[("status", object)]),
    ("batch", "cronjobs", &[("status", object)]),
    (
        "autoscaling",
        "horizontalpodautoscalers",
        &[
            ("status.currentReplicas", zero),
            ("status.desiredReplicas", zero),
        ],
    ),
    ("discovery.k8s.io", "endpointslices", &[("endpoints", list)]),
    (
        "networking.k8s.io",
        "ingresses",
        &[("status.loadBalancer", object)],
    ),
    (
        "policy",
        "poddisruptionbudgets",
        &[
            ("status.disruptionsAllowed", zero),
            ("status.currentHealthy", zero),
            ("status.desiredHealthy", zero),
            ("status.expectedPods", zero),
            CONDITION_TEXTS[0],
            CONDITION_TEXTS[1],
        ],
    ),
    (
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        &[
            ("status.acceptedNames.kind", empty),
            ("status.acceptedNames.plural", empty),
        ],
    ),
];

/// Fills the fields Go always emits for `(group, resource)` that `obj`
/// lacks; objects of other kinds, and non-objects, are left alone.
pub fn fill(group: &str, resource: &str, obj: &mut Value) {
    let Some((_, _, fills)) = ZEROS.iter().find(|(g, r, _)| *g == group && *r == resource) else {
        return;
    };
    for (path, value) in fills.iter() {
        let segs: Vec<&str> = path.split('.').collect();
        fill_at(obj, &segs, *value);
    }
}

/// Walks `segs` from `v`, creating missing structs on the way and visiting
/// every element of a `name[]` list, and sets the last one when unset.
fn fill_at(v: &mut Value, segs: &[&str], value: fn() -> Value) {
    let (Some((seg, rest)), Some(map)) = (segs.split_first(), v.as_object_mut()) else {
        return;
    };
    if let Some(list) = seg.strip_suffix("[]") {
        for item in map
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            fill_at(item, rest, value);
        }
        return;
    }
    let slot = map.entry(*seg).or_insert(Value::Null);
    if slot.is_null() {
        *slot = if rest.is_empty() {
            value()
        } else {
            Value::Object(Map::new())
        };
    }
    if !rest.is_empty() {
        fill_at(slot, rest, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_daemon_set_status_counts_zero() {
        let mut ds = json!({"spec": {}, "status": {"numberReady": 2}});
        fill("apps", "daemonsets", &mut ds);
        assert_eq!(
            ds["status"],
            json!({"numberReady": 2, "currentNumberScheduled": 0,
                   "numberMisscheduled": 0, "desiredNumberScheduled": 0})
        );
    }

    #[test]
    fn missing_status_is_created_and_fills_are_idempotent() {
        let mut rs = json!({"metadata": {"name": "r"}});
        fill("apps", "replicasets", &mut rs);
        assert_eq!(rs["status"], json!({"replicas": 0}));
        let once = rs.clone();
        fill("apps", "replicasets", &mut rs);
        assert_eq!(rs, once);
    }

    #[test]
    fn list_elements_are_filled_and_missing_lists_stay_missing() {
        let mut pod = json!({"status": {"containerStatuses": [
            {"name": "a", "ready": true, "restartCount": 3, "image": "x"}, {}
        ]}});
        fill("", "pods", &mut pod);
        let cs = &pod["status"]["containerStatuses"];
        assert_eq!(
            cs[0],
            json!({"name": "a", "ready": true, "restartCount": 3, "image": "x", "imageID": ""})
        );
        assert_eq!(
            cs[1],
            json!({"name": "", "ready": false, "restartCount": 0, "image": "", "imageID": ""})
        );
        assert!(pod["status"].get("initContainerStatuses").is_none());
    }

    #[test]
    fn null_is_unset_and_wrong_types_are_left_for_decoding() {
        let mut pdb = json!({"status": {"currentHealthy": null, "expectedPods": "x",
            "conditions": [{"type": "DisruptionAllowed", "status": "True"}]}});
        fill("policy", "poddisruptionbudgets", &mut pdb);
        assert_eq!(pdb["status"]["currentHealthy"], 0);
        assert_eq!(pdb["status"]["expectedPods"], "x");
        assert_eq!(pdb["status"]["conditions"][0]["reason"], "");
        assert_eq!(pdb["status"]["conditions"][0]["message"], "");
        let mut odd = json!({"status": "nonsense"});
        fill("apps", "statefulsets", &mut odd);
        assert_eq!(odd, json!({"status": "nonsense"}));
    }

    #[test]
    fn other_kinds_and_non_objects_are_untouched() {
        let mut cm = json!({"data": {}});
        fill("", "configmaps", &mut cm);
        assert_eq!(cm, json!({"data": {}}));
        let mut arr = json!([1]);
        fill("apps", "daemonsets", &mut arr);
        assert_eq!(arr, json!([1]));
    }

    #[test]
    fn every_entry_names_a_known_kind() {
        for (g, r, _) in ZEROS {
            assert!(crate::kinds::of(g, r).is_some(), "{g}/{r}");
        }
    }
}
