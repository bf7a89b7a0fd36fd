//! Filters: can this pod run on this node at all?
//!
//! Each filter follows the Kubernetes plugin of the same job
//! (NodeUnschedulable, TaintToleration, NodeAffinity, NodeResourcesFit,
//! VolumeBinding in [`super::volumes`]) and
//! they run in the default profile's order. As in Kubernetes, a node is
//! reported with the first filter that rejects it only, so the aggregated
//! message counts every node once (resources may name several reasons).

use k8s_openapi::api::core::v1::{
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Taint, Toleration,
};

use super::{NodeInfo, PodRequest};

/// Taint the node lifecycle controller puts on cordoned nodes; a pod that
/// tolerates it may be placed on an unschedulable node.
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
/// Taint for a node whose Ready condition is False.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Taint for a node whose Ready condition is Unknown (lease not renewed).
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";

/// NoSchedule and NoExecute keep new pods off; PreferNoSchedule only
/// lowers the node's score.
pub fn blocks_scheduling(taint: &Taint) -> bool {
    taint.effect == "NoSchedule" || taint.effect == "NoExecute"
}

/// Kubernetes' Toleration.ToleratesTaint: effect and key must match
/// unless left empty; Exists ignores the value, Equal (also when empty)
/// compares it; any other operator tolerates nothing. An absent field
/// reads as empty, as in Go.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or_default();
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or_default() {
        "" | "Equal" => toleration.value.as_deref().unwrap_or_default() == taint_value(taint),
        "Exists" => true,
        _ => false,
    }
}

/// Whether any toleration in the list tolerates the taint.
pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

/// A taint's value; absent reads as empty.
pub fn taint_value(taint: &Taint) -> &str {
    taint.value.as_deref().unwrap_or_default()
}

/// Operator of a node selector requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt(i64),
    Lt(i64),
}

/// One `matchExpressions` / `matchFields` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
    values: Vec<String>,
}

impl Requirement {
    /// Label requirement semantics: NotIn and DoesNotExist also hold when
    /// the label is absent; Gt/Lt need an integer label.
    fn matches(&self, value: Option<&str>) -> bool {
        let contains = |v: &str| self.values.iter().any(|x| x == v);
        let int = || value.and_then(|v| v.parse::<i64>().ok());
        match &self.op {
            Op::In => value.is_some_and(contains),
            Op::NotIn => !value.is_some_and(contains),
            Op::Exists => value.is_some(),
            Op::DoesNotExist => value.is_none(),
            Op::Gt(n) => int().is_some_and(|v| v > *n),
            Op::Lt(n) => int().is_some_and(|v| v < *n),
        }
    }
}

/// One of `nodeSelectorTerms`: its expressions and fields are ANDed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Term {
    exprs: Vec<Requirement>,
    fields: Vec<Requirement>,
}

impl Term {
    fn matches(&self, node: &NodeInfo) -> bool {
        let label = |k: &str| node.labels.get(k).map(String::as_str);
        let field = |k: &str| (k == "metadata.name").then_some(node.name.as_str());
        self.exprs.iter().all(|r| r.matches(label(&r.key)))
            && self.fields.iter().all(|r| field_matches(r, field(&r.key)))
    }
}

/// A field selector compares with "" when the field is unknown, so `In`
/// fails and `NotIn` holds, as in Kubernetes' fields.Set.
fn field_matches(r: &Requirement, value: Option<&str>) -> bool {
    r.matches(Some(value.unwrap_or("")))
}

/// `requiredDuringSchedulingIgnoredDuringExecution`: the node must match at
/// least one term. Terms that are empty or malformed match nothing (as
/// Kubernetes' lazy-error node selector does) but do not spoil the others.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequiredAffinity {
    terms: Vec<Option<Term>>,
}

impl RequiredAffinity {
    /// Parses the pod's `v1.NodeSelector` once, so matching a node does
    /// no string parsing.
    pub fn from_selector(selector: &NodeSelector) -> RequiredAffinity {
        let terms = selector.node_selector_terms.iter().map(term).collect();
        RequiredAffinity { terms }
    }

    pub fn matches(&self, node: &NodeInfo) -> bool {
        self.terms.iter().flatten().any(|t| t.matches(node))
    }
}

fn term(t: &NodeSelectorTerm) -> Option<Term> {
    let exprs = t.match_expressions.as_deref().unwrap_or_default();
    let fields = t.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return None;
    }
    Some(Term {
        exprs: exprs.iter().map(expression).collect::<Option<_>>()?,
        fields: fields.iter().map(field).collect::<Option<_>>()?,
    })
}

/// A label requirement, checked as Kubernetes' NewRequirement would
/// (value counts; Gt/Lt take one integer). None when invalid.
fn expression(r: &NodeSelectorRequirement) -> Option<Requirement> {
    let values = r.values.clone().unwrap_or_default();
    let one_int = || match values.as_slice() {
        [x] => x.parse::<i64>().ok(),
        _ => None,
    };
    let op = match r.operator.as_str() {
        "In" if !values.is_empty() => Op::In,
        "NotIn" if !values.is_empty() => Op::NotIn,
        "Exists" if values.is_empty() => Op::Exists,
        "DoesNotExist" if values.is_empty() => Op::DoesNotExist,
        "Gt" => Op::Gt(one_int()?),
        "Lt" => Op::Lt(one_int()?),
        _ => return None,
    };
    (!r.key.is_empty()).then(|| Requirement {
        key: r.key.clone(),
        op,
        values,
    })
}

/// A field requirement: In or NotIn with exactly one value.
fn field(r: &NodeSelectorRequirement) -> Option<Requirement> {
    let r = expression(r)?;
    let ok = matches!(r.op, Op::In | Op::NotIn) && r.values.len() == 1;
    ok.then_some(r)
}

/// Why a node cannot take the pod. `reasons()` words it as the Kubernetes
/// plugin does in the PodScheduled=False condition message.
#[derive(Debug, Clone, PartialEq)]
pub enum Unfit {
    /// Cordoned and not tolerating `node.kubernetes.io/unschedulable`.
    Unschedulable,
    /// A NoSchedule/NoExecute taint no toleration matches (the first one).
    Taint(Taint),
    /// Ready condition not True; `taint` is the key the node lifecycle
    /// controller would put on it (not-ready or unreachable).
    NotReady { taint: &'static str },
    /// `spec.nodeSelector` does not match the node's labels.
    NodeSelector,
    /// Required node affinity does not match.
    Affinity,
    /// Which of the node's remaining resources are too small; "Too many
    /// pods" is one of them, as in NodeResourcesFit.
    Resources { pods: bool, cpu: bool, memory: bool },
    /// A bound volume's node affinity (or a claim's selected node) rules
    /// the node out.
    VolumeNodeAffinity,
    /// No available volume an unbound claim could bind is usable here.
    VolumeBind,
}

impl Unfit {
    /// The reason strings Kubernetes counts for this node.
    pub fn reasons(&self) -> Vec<String> {
        let taint = |k: &str, v: &str| format!("node(s) had untolerated taint {{{k}: {v}}}");
        match self {
            Unfit::Unschedulable => vec!["node(s) were unschedulable".into()],
            Unfit::Taint(t) => vec![taint(&t.key, taint_value(t))],
            Unfit::NotReady { taint: key } => vec![taint(key, "")],
            Unfit::NodeSelector | Unfit::Affinity => {
                vec!["node(s) didn't match Pod's node affinity/selector".into()]
            }
            Unfit::Resources { pods, cpu, memory } => [
                (*pods, "Too many pods"),
                (*cpu, "Insufficient cpu"),
                (*memory, "Insufficient memory"),
            ]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, r)| r.to_string())
            .collect(),
            Unfit::VolumeNodeAffinity => vec!["node(s) had volume node affinity conflict".into()],
            Unfit::VolumeBind => {
                vec!["node(s) didn't find available persistent volumes to bind".into()]
            }
        }
    }
}

/// Runs every filter in Kubernetes' default order; Err with the first
/// rejection.
pub fn check(pod: &PodRequest, node: &NodeInfo) -> Result<(), Unfit> {
    unschedulable(pod, node)?;
    taints(pod, node)?;
    readiness(pod, node)?;
    affinity(pod, node)?;
    resources(pod, node)?;
    pod.volumes.check(node)
}

/// NodeUnschedulable: a cordoned node takes only pods tolerating the
/// unschedulable taint (DaemonSet pods carry that toleration).
pub fn unschedulable(pod: &PodRequest, node: &NodeInfo) -> Result<(), Unfit> {
    if !node.unschedulable {
        return Ok(());
    }
    let taint = no_schedule(TAINT_UNSCHEDULABLE);
    if tolerated(&pod.tolerations, &taint) {
        Ok(())
    } else {
        Err(Unfit::Unschedulable)
    }
}

/// TaintToleration: the first NoSchedule/NoExecute taint left untolerated.
pub fn taints(pod: &PodRequest, node: &NodeInfo) -> Result<(), Unfit> {
    let untolerated = node
        .taints
        .iter()
        .find(|t| blocks_scheduling(t) && !tolerated(&pod.tolerations, t));
    match untolerated {
        Some(t) => Err(Unfit::Taint(t.clone())),
        None => Ok(()),
    }
}

/// A node that is not Ready is treated as if it carried the NoSchedule
/// taint the node lifecycle controller gives it, so scheduling does not
/// depend on that controller having run yet, and pods tolerating the taint
/// (DaemonSets) may still go there.
pub fn readiness(pod: &PodRequest, node: &NodeInfo) -> Result<(), Unfit> {
    let Some(key) = node.ready.taint_key() else {
        return Ok(());
    };
    if tolerated(&pod.tolerations, &no_schedule(key)) {
        Ok(())
    } else {
        Err(Unfit::NotReady { taint: key })
    }
}

/// NodeAffinity: `spec.nodeSelector` (every pair) and the required node
/// affinity (any term) must both match.
pub fn affinity(pod: &PodRequest, node: &NodeInfo) -> Result<(), Unfit> {
    let selector_ok = pod
        .node_selector
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v));
    if !selector_ok {
        return Err(Unfit::NodeSelector);
    }
    match &pod.affinity {
        Some(a) if !a.matches(node) => Err(Unfit::Affinity),
        _ => Ok(()),
    }
}

/// NodeResourcesFit: one more pod must fit under allocatable pods, and each
/// non-zero request under allocatable minus what the node's pods request.
pub fn resources(pod: &PodRequest, node: &NodeInfo) -> Result<(), Unfit> {
    let want = pod.requests;
    let free = node.allocatable.minus(node.requested);
    let pods = node.pod_count + 1 > node.allowed_pods;
    let cpu = want.cpu_millis > 0 && want.cpu_millis > free.cpu_millis;
    let memory = want.memory > 0 && want.memory > free.memory;
    if pods || cpu || memory {
        Err(Unfit::Resources { pods, cpu, memory })
    } else {
        Ok(())
    }
}

fn no_schedule(key: &str) -> Taint {
    Taint {
        key: key.into(),
        effect: "NoSchedule".into(),
        ..Taint::default()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::scheduler::tests::{node, pod, with_spec};
    use serde_json::{json, Value};

    pub(crate) fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: Some(value.into()),
            effect: effect.into(),
            ..Taint::default()
        }
    }

    /// A toleration from its JSON form (absent fields stay None).
    pub(crate) fn tol(v: Value) -> Toleration {
        serde_json::from_value(v).expect("a valid toleration")
    }

    #[test]
    fn toleration_matrix() {
        let t = taint("k", "v", "NoSchedule");
        let cases = [
            (json!({"key": "k", "operator": "Equal", "value": "v"}), true),
            (json!({"key": "k", "value": "v"}), true),
            (
                json!({"key": "k", "operator": "Equal", "value": "w"}),
                false,
            ),
            (json!({"key": "k", "operator": "Exists"}), true),
            (json!({"key": "other", "operator": "Exists"}), false),
            (json!({"operator": "Exists"}), true),
            (json!({"operator": "Exists", "effect": "NoSchedule"}), true),
            (json!({"operator": "Exists", "effect": "NoExecute"}), false),
            (
                json!({"key": "k", "operator": "Exists", "effect": "NoSchedule"}),
                true,
            ),
            (
                json!({"key": "k", "value": "v", "effect": "PreferNoSchedule"}),
                false,
            ),
            (
                json!({"key": "k", "operator": "Bogus", "value": "v"}),
                false,
            ),
        ];
        for (t_json, want) in cases {
            assert_eq!(tolerates(&tol(t_json.clone()), &t), want, "{t_json}");
        }
    }

    #[test]
    fn taint_effects() {
        let p = pod("p", "100m", "1Mi");
        for (effect, blocks) in [
            ("NoSchedule", true),
            ("NoExecute", true),
            ("PreferNoSchedule", false),
        ] {
            let mut n = node("n", "1", "1Gi");
            n.taints.push(taint("dedicated", "gpu", effect));
            assert_eq!(taints(&p, &n).is_err(), blocks, "{effect}");
        }
    }

    #[test]
    fn untolerated_taint_is_reported_and_tolerated_one_passes() {
        let mut n = node("n", "1", "1Gi");
        n.taints.push(taint("a", "1", "NoSchedule"));
        n.taints.push(taint("b", "2", "NoExecute"));
        let mut p = pod("p", "100m", "1Mi");
        p.tolerations
            .push(tol(json!({"key": "a", "operator": "Exists"})));
        let err = taints(&p, &n).unwrap_err();
        assert_eq!(err.reasons(), ["node(s) had untolerated taint {b: 2}"]);
        p.tolerations.push(tol(json!({"key": "b", "value": "2"})));
        assert_eq!(taints(&p, &n), Ok(()));
    }

    #[test]
    fn cordoned_node_needs_the_unschedulable_toleration() {
        let mut n = node("n", "1", "1Gi");
        n.unschedulable = true;
        let mut p = pod("p", "100m", "1Mi");
        assert_eq!(unschedulable(&p, &n), Err(Unfit::Unschedulable));
        p.tolerations.push(tol(json!({
            "key": TAINT_UNSCHEDULABLE, "operator": "Exists", "effect": "NoSchedule"
        })));
        assert_eq!(unschedulable(&p, &n), Ok(()));
        n.unschedulable = false;
        assert_eq!(unschedulable(&pod("q", "1m", "1"), &n), Ok(()));
    }

    #[test]
    fn not_ready_node_is_filtered_unless_tolerated() {
        use crate::scheduler::Readiness;
        let mut n = node("n", "1", "1Gi");
        let mut p = pod("p", "100m", "1Mi");
        assert_eq!(readiness(&p, &n), Ok(()));
        n.ready = Readiness::NotReady;
        let err = readiness(&p, &n).unwrap_err();
        let want = ["node(s) had untolerated taint {node.kubernetes.io/not-ready: }"];
        assert_eq!(err.reasons(), want);
        n.ready = Readiness::Unknown;
        assert_eq!(
            readiness(&p, &n),
            Err(Unfit::NotReady {
                taint: TAINT_UNREACHABLE
            })
        );
        p.tolerations
            .push(tol(json!({"key": TAINT_UNREACHABLE, "operator": "Exists"})));
        assert_eq!(readiness(&p, &n), Ok(()));
    }

    #[test]
    fn node_selector() {
        let mut n = node("n", "1", "1Gi");
        n.labels.insert("disk".into(), "ssd".into());
        let p = |sel: Value| with_spec(json!({"nodeSelector": sel}));
        assert_eq!(affinity(&p(json!({"disk": "ssd"})), &n), Ok(()));
        assert_eq!(affinity(&p(json!({})), &n), Ok(()));
        let wrong = p(json!({"disk": "hdd"}));
        assert_eq!(affinity(&wrong, &n), Err(Unfit::NodeSelector));
        let extra = p(json!({"disk": "ssd", "zone": "a"}));
        assert_eq!(affinity(&extra, &n), Err(Unfit::NodeSelector));
    }

    fn affinity_pod(terms: Value) -> PodRequest {
        with_spec(json!({"affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}
        }}}))
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> Value {
        json!({"matchExpressions": [{"key": key, "operator": op, "values": values}]})
    }

    #[test]
    fn required_affinity_operators() {
        let mut n = node("node-1", "1", "1Gi");
        n.labels.insert("zone".into(), "a".into());
        n.labels.insert("gen".into(), "5".into());
        let cases = [
            (expr("zone", "In", &["a", "b"]), true),
            (expr("zone", "In", &["b"]), false),
            (expr("zone", "NotIn", &["b"]), true),
            (expr("zone", "NotIn", &["a"]), false),
            (expr("missing", "NotIn", &["a"]), true),
            (expr("zone", "Exists", &[]), true),
            (expr("missing", "Exists", &[]), false),
            (expr("missing", "DoesNotExist", &[]), true),
            (expr("zone", "DoesNotExist", &[]), false),
            (expr("gen", "Gt", &["4"]), true),
            (expr("gen", "Gt", &["5"]), false),
            (expr("gen", "Lt", &["6"]), true),
            (expr("zone", "Lt", &["6"]), false),
            (expr("missing", "Gt", &["1"]), false),
            (expr("gen", "Gt", &["x"]), false),
            (expr("zone", "In", &[]), false),
            (expr("zone", "Exists", &["a"]), false),
            (expr("zone", "Near", &["a"]), false),
        ];
        for (term, want) in cases {
            let p = affinity_pod(json!([term]));
            assert_eq!(affinity(&p, &n).is_ok(), want, "{term}");
        }
    }

    #[test]
    fn required_affinity_terms_and_fields() {
        let mut n = node("node-1", "1", "1Gi");
        n.labels.insert("zone".into(), "a".into());
        let field = |op: &str, v: &[&str]| json!({"matchFields": [{"key": "metadata.name", "operator": op, "values": v}]});
        let ok = |terms: Value| affinity(&affinity_pod(terms), &n).is_ok();
        assert!(ok(json!([field("In", &["node-1"])])));
        assert!(!ok(json!([field("In", &["node-2"])])));
        assert!(ok(json!([field("NotIn", &["node-2"])])));
        assert!(
            !ok(json!([field("In", &["node-1", "node-2"])])),
            "one value only"
        );
        // Terms are ORed; an empty or broken term matches nothing.
        assert!(ok(json!([
            expr("zone", "In", &["b"]),
            expr("zone", "In", &["a"])
        ])));
        assert!(ok(json!([{}, expr("zone", "Exists", &[])])));
        assert!(!ok(json!([{}])));
        assert!(!ok(json!([])));
        // Within a term, expressions and fields are ANDed.
        let both = json!([{
            "matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}],
            "matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-2"]}],
        }]);
        assert!(!ok(both));
        let err = affinity(&affinity_pod(json!([{}])), &n).unwrap_err();
        assert_eq!(
            err.reasons(),
            ["node(s) didn't match Pod's node affinity/selector"]
        );
    }

    #[test]
    fn resources_fit_and_misfit() {
        let mut n = node("n", "1", "1Gi");
        n.add_pod(&pod("old", "600m", "512Mi"));
        assert_eq!(resources(&pod("p", "400m", "512Mi"), &n), Ok(()));
        let err = resources(&pod("p", "500m", "513Mi"), &n).unwrap_err();
        assert_eq!(err.reasons(), ["Insufficient cpu", "Insufficient memory"]);
        let err = resources(&pod("p", "100m", "1Gi"), &n).unwrap_err();
        assert_eq!(err.reasons(), ["Insufficient memory"]);
        // A pod requesting nothing fits even on a full node.
        n.add_pod(&pod("big", "400m", "512Mi"));
        assert_eq!(resources(&with_spec(json!({})), &n), Ok(()));
    }

    #[test]
    fn too_many_pods() {
        let mut n = node("n", "1", "1Gi");
        n.allowed_pods = 1;
        let p = pod("p", "1m", "1");
        assert_eq!(resources(&p, &n), Ok(()));
        n.add_pod(&p);
        assert_eq!(resources(&p, &n).unwrap_err().reasons(), ["Too many pods"]);
    }

    #[test]
    fn first_failing_filter_wins() {
        let mut n = node("n", "1", "1Gi");
        n.unschedulable = true;
        n.taints.push(taint("k", "", "NoSchedule"));
        assert_eq!(check(&pod("p", "2", "2Gi"), &n), Err(Unfit::Unschedulable));
    }
}
