//! Which nodes a DaemonSet's pod belongs on (Kubernetes'
//! `NodeShouldRunDaemonPod`), and how its pod is pinned to one.
//!
//! The predicates are the scheduler's own (`scheduler::filter`): the node's
//! name, nodeSelector and required node affinity, and the NoSchedule /
//! NoExecute taints against the template's tolerations plus the ones
//! Kubernetes adds to every daemon pod. Node readiness and resources are
//! left to the scheduler, as in Kubernetes: a daemon pod for a node that
//! is not ready yet waits Pending until it is.
//!
//! A pod is placed the Kubernetes way: a required node affinity
//! `matchFields metadata.name In [<node>]` replaces the template's (which
//! was already checked to match), and the scheduler binds it.

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, Toleration,
};

use crate::scheduler::filter;
use crate::scheduler::{NodeInfo, PodRequest};

/// Taint keys of node conditions, as the node lifecycle controller sets them.
const NOT_READY: &str = "node.kubernetes.io/not-ready";
const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
const DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
const MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
const PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
const NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";

/// The field a daemon pod's node affinity names its node by.
const NODE_NAME_FIELD: &str = "metadata.name";

/// What a node means for a DaemonSet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fit {
    /// A daemon pod should be created here if there is none.
    pub should_run: bool,
    /// A daemon pod already here may stay (a NoSchedule taint keeps new
    /// pods off but does not evict; a NoExecute one does).
    pub may_stay: bool,
}

/// The tolerations Kubernetes gives every daemon pod, so a daemon keeps
/// running through node problems and lands on cordoned nodes (plus
/// network-unavailable for hostNetwork pods, which bring the network).
pub(super) fn default_tolerations(host_network: bool) -> Vec<Toleration> {
    let exists = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Toleration::default()
    };
    let mut t = vec![
        exists(NOT_READY, "NoExecute"),
        exists(UNREACHABLE, "NoExecute"),
        exists(DISK_PRESSURE, "NoSchedule"),
        exists(MEMORY_PRESSURE, "NoSchedule"),
        exists(PID_PRESSURE, "NoSchedule"),
        exists(UNSCHEDULABLE, "NoSchedule"),
    ];
    if host_network {
        t.push(exists(NETWORK_UNAVAILABLE, "NoSchedule"));
    }
    t
}

/// Adds the default daemon tolerations to `spec`; one already there with
/// the same key, operator, value and effect is replaced, not doubled.
pub(super) fn add_default_tolerations(spec: &mut PodSpec) {
    let defaults = default_tolerations(spec.host_network == Some(true));
    let list = spec.tolerations.get_or_insert_with(Vec::new);
    for d in defaults {
        match list.iter_mut().find(|t| same_toleration(t, &d)) {
            Some(existing) => *existing = d,
            None => list.push(d),
        }
    }
}

/// Kubernetes' `Toleration.MatchToleration`.
fn same_toleration(a: &Toleration, b: &Toleration) -> bool {
    a.key == b.key && a.operator == b.operator && a.value == b.value && a.effect == b.effect
}

/// The pod spec of `ds` for `node` before pinning: the template's spec
/// with the default daemon tolerations.
pub(super) fn daemon_pod_spec(ds: &DaemonSet) -> PodSpec {
    let template = ds.spec.as_ref().and_then(|s| s.template.spec.clone());
    let mut spec = template.unwrap_or_default();
    add_default_tolerations(&mut spec);
    spec
}

/// Kubernetes' `NodeShouldRunDaemonPod` for `ds` on `node`.
pub(super) fn fit(ds: &DaemonSet, node: &Node) -> Fit {
    const NO: Fit = Fit {
        should_run: false,
        may_stay: false,
    };
    let spec = daemon_pod_spec(ds);
    let node_name = node.metadata.name.as_deref().unwrap_or_default();
    let pinned = spec.node_name.as_deref().unwrap_or_default();
    if !pinned.is_empty() && pinned != node_name {
        return NO;
    }
    let pod = Pod {
        spec: Some(spec),
        ..Pod::default()
    };
    // Resources are the scheduler's business: only parsing errors of
    // quantities could fail here, and those the API server refuses.
    let Ok(request) = PodRequest::from_pod(&pod) else {
        return NO;
    };
    let mut info = NodeInfo::from_node(node, &[]);
    if filter::affinity(&request, &info).is_err() {
        return NO;
    }
    if filter::taints(&request, &info).is_ok() {
        return Fit {
            should_run: true,
            may_stay: true,
        };
    }
    info.taints.retain(|t| t.effect == "NoExecute");
    Fit {
        should_run: false,
        may_stay: filter::taints(&request, &info).is_ok(),
    }
}

/// The node a daemon pod is for: its `spec.nodeName` once bound, else the
/// node its pinning affinity names (Kubernetes' `GetTargetNodeName`).
pub(super) fn target_node(pod: &Pod) -> Option<&str> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(n);
    }
    let required = spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?;
    required
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == NODE_NAME_FIELD && r.operator == "In")
        .and_then(|r| match r.values.as_deref() {
            Some([one]) => Some(one.as_str()),
            _ => None,
        })
}

/// Pins a pod to `node`: the required node affinity becomes the one term
/// `metadata.name In [node]` (Kubernetes'
/// `ReplaceDaemonSetPodNodeNameNodeAffinity`); preferred terms and pod
/// (anti-)affinity are kept.
pub(super) fn pin_to_node(affinity: Option<Affinity>, node: &str) -> Affinity {
    let selector = NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_fields: Some(vec![NodeSelectorRequirement {
                key: NODE_NAME_FIELD.into(),
                operator: "In".into(),
                values: Some(vec![node.to_string()]),
            }]),
            match_expressions: None,
        }],
    };
    let mut affinity = affinity.unwrap_or_default();
    let node_affinity = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution = Some(selector);
    affinity
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DaemonSetSpec;
    use k8s_openapi::api::core::v1::{NodeSpec, PodTemplateSpec, Taint};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn node(name: &str, labels: &[(&str, &str)], taints: &[(&str, &str)]) -> Node {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let taints = taints
            .iter()
            .map(|(k, effect)| Taint {
                key: k.to_string(),
                effect: effect.to_string(),
                ..Taint::default()
            })
            .collect();
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(labels),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                taints: Some(taints),
                ..NodeSpec::default()
            }),
            status: None,
        }
    }

    fn ds(spec: serde_json::Value) -> DaemonSet {
        let spec: PodSpec = serde_json::from_value(spec).expect("a test pod spec");
        DaemonSet {
            spec: Some(DaemonSetSpec {
                template: PodTemplateSpec {
                    metadata: None,
                    spec: Some(spec),
                },
                ..DaemonSetSpec::default()
            }),
            ..DaemonSet::default()
        }
    }

    const RUN: Fit = Fit {
        should_run: true,
        may_stay: true,
    };
    const NO: Fit = Fit {
        should_run: false,
        may_stay: false,
    };

    #[test]
    fn selector_affinity_and_node_name_decide_eligibility() {
        let plain = ds(json!({"containers": []}));
        let linux = node("a", &[("os", "linux")], &[]);
        assert_eq!(fit(&plain, &linux), RUN);
        let selective = ds(json!({"containers": [], "nodeSelector": {"os": "linux"}}));
        assert_eq!(fit(&selective, &linux), RUN);
        assert_eq!(fit(&selective, &node("b", &[], &[])), NO);
        let affine = ds(json!({"containers": [], "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "os", "operator": "NotIn", "values": ["linux"]}]}]}}}}));
        assert_eq!(fit(&affine, &linux), NO);
        let named = ds(json!({"containers": [], "nodeName": "b"}));
        assert_eq!(fit(&named, &linux), NO);
    }

    #[test]
    fn taints_keep_new_pods_off_and_no_execute_evicts() {
        let plain = ds(json!({"containers": []}));
        let no_schedule = node("a", &[], &[("dedicated", "NoSchedule")]);
        let no_execute = node("a", &[], &[("dedicated", "NoExecute")]);
        let prefer = node("a", &[], &[("dedicated", "PreferNoSchedule")]);
        let stay = Fit {
            should_run: false,
            may_stay: true,
        };
        assert_eq!(fit(&plain, &no_schedule), stay);
        assert_eq!(fit(&plain, &no_execute), NO);
        assert_eq!(fit(&plain, &prefer), RUN);
        let tolerant = ds(json!({"containers": [], "tolerations": [
            {"key": "dedicated", "operator": "Exists"}]}));
        assert_eq!(fit(&tolerant, &no_execute), RUN);
    }

    #[test]
    fn default_tolerations_cover_node_conditions_and_cordons() {
        let plain = ds(json!({"containers": []}));
        for (key, effect) in [
            (NOT_READY, "NoExecute"),
            (UNREACHABLE, "NoExecute"),
            (MEMORY_PRESSURE, "NoSchedule"),
            (UNSCHEDULABLE, "NoSchedule"),
        ] {
            assert_eq!(fit(&plain, &node("a", &[], &[(key, effect)])), RUN, "{key}");
        }
        let net = node("a", &[], &[(NETWORK_UNAVAILABLE, "NoSchedule")]);
        assert!(!fit(&plain, &net).should_run);
        let host = ds(json!({"containers": [], "hostNetwork": true}));
        assert_eq!(fit(&host, &net), RUN);
        // An identical toleration in the template is not doubled.
        let dup = ds(json!({"containers": [], "tolerations": [
            {"key": UNSCHEDULABLE, "operator": "Exists", "effect": "NoSchedule"}]}));
        let tolerations = daemon_pod_spec(&dup).tolerations.unwrap_or_default();
        assert_eq!(tolerations.len(), 6);
    }

    #[test]
    fn pinning_replaces_required_affinity_and_is_read_back() {
        let original: Affinity = serde_json::from_value(json!({"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "os", "operator": "In", "values": ["linux"]}]}]},
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "preference": {"matchExpressions": [{"key": "x", "operator": "Exists"}]}}]}}))
        .expect("a test affinity");
        let pinned = pin_to_node(Some(original), "n2");
        let na = pinned.node_affinity.clone().unwrap_or_default();
        assert_eq!(
            na.preferred_during_scheduling_ignored_during_execution
                .map(|p| p.len()),
            Some(1)
        );
        let pod = Pod {
            spec: Some(PodSpec {
                affinity: Some(pinned),
                ..PodSpec::default()
            }),
            ..Pod::default()
        };
        assert_eq!(target_node(&pod), Some("n2"));
        let bound = Pod {
            spec: Some(PodSpec {
                node_name: Some("n3".into()),
                ..PodSpec::default()
            }),
            ..Pod::default()
        };
        assert_eq!(target_node(&bound), Some("n3"));
        assert_eq!(target_node(&Pod::default()), None);
    }
}
