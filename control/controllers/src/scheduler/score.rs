//! Scores: among the nodes that passed the filters, which is best?
//!
//! Each score is 0..=100 (Kubernetes' MaxNodeScore) and the total is their
//! weighted sum, with the default profile's weights where Kubernetes has the
//! plugin: TaintToleration 3, spreading 2 (as PodTopologySpread's system
//! defaults), NodeResourcesFit least-allocated 1. Like Kubernetes'
//! selectHost, the pick among equal totals is uniform at random: scores are
//! coarse integers, so a fixed order (say, by name) would send a burst of
//! small pods all to the first of many equally empty nodes.

use rand::Rng;

use super::{filter, NodeInfo, PodRequest};

/// Highest score one scorer gives.
pub const MAX_NODE_SCORE: i64 = 100;
/// Weight of [`least_allocated`].
pub const WEIGHT_LEAST_ALLOCATED: i64 = 1;
/// Weight of spreading pods of one owner over nodes.
pub const WEIGHT_SPREAD: i64 = 2;
/// Weight of avoiding untolerated PreferNoSchedule taints.
pub const WEIGHT_TAINT: i64 = 3;

/// NodeResourcesFit's LeastAllocated strategy: the free fraction of cpu and
/// of memory once the pod is placed, averaged, so emptier nodes win. Uses
/// the non-zero requests so that pods without requests still count.
pub fn least_allocated(pod: &PodRequest, node: &NodeInfo) -> i64 {
    let after = node.non_zero_requested.plus(pod.non_zero);
    let cpu = free_fraction(after.cpu_millis, node.allocatable.cpu_millis);
    let memory = free_fraction(after.memory, node.allocatable.memory);
    (cpu + memory) / 2
}

/// (allocatable - requested) / allocatable in 0..=100; 0 when the node has
/// none of the resource or would be over-committed.
fn free_fraction(requested: i64, allocatable: i64) -> i64 {
    if allocatable <= 0 || requested > allocatable {
        return 0;
    }
    let free = i128::from(allocatable - requested) * i128::from(MAX_NODE_SCORE);
    i64::try_from(free / i128::from(allocatable)).unwrap_or(0)
}

/// Pods of the same owner already on the node (0 for pods without an
/// owner, so spreading does not affect them).
pub fn owner_count(pod: &PodRequest, node: &NodeInfo) -> i64 {
    let count = pod.owner.as_ref().and_then(|o| node.owner_counts.get(o));
    count.map_or(0, |c| i64::from(*c))
}

/// Untolerated PreferNoSchedule taints on the node. Only tolerations whose
/// effect is empty or PreferNoSchedule count, as in TaintToleration's score.
pub fn prefer_no_schedule_count(pod: &PodRequest, node: &NodeInfo) -> i64 {
    let tolerates = |t| {
        pod.tolerations
            .iter()
            .filter(|tol| matches!(tol.effect.as_deref(), None | Some("" | "PreferNoSchedule")))
            .any(|tol| filter::tolerates(tol, t))
    };
    let n = node
        .taints
        .iter()
        .filter(|t| t.effect == "PreferNoSchedule" && !tolerates(t))
        .count();
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Kubernetes' DefaultNormalizeScore with reverse: the node with the most
/// gets 0, none gets 100, linear in between; all 100 when nobody has any.
pub fn reverse_normalize(count: i64, max: i64) -> i64 {
    if max <= 0 {
        return MAX_NODE_SCORE;
    }
    MAX_NODE_SCORE - MAX_NODE_SCORE * count / max
}

/// Raw per-node inputs, normalized once all feasible nodes are known.
struct Raw {
    index: usize,
    least_allocated: i64,
    owner_pods: i64,
    prefer_taints: i64,
}

/// The index (into `nodes`) of the best of the `feasible` nodes, which must
/// not be empty; among equal totals each node is picked with the same
/// probability (reservoir sampling, one pass).
pub fn best<R: Rng + ?Sized>(
    pod: &PodRequest,
    nodes: &[NodeInfo],
    feasible: &[usize],
    rng: &mut R,
) -> usize {
    let raw: Vec<Raw> = feasible
        .iter()
        .map(|&index| Raw {
            index,
            least_allocated: least_allocated(pod, &nodes[index]),
            owner_pods: owner_count(pod, &nodes[index]),
            prefer_taints: prefer_no_schedule_count(pod, &nodes[index]),
        })
        .collect();
    let max_owner = raw.iter().map(|r| r.owner_pods).max().unwrap_or(0);
    let max_taints = raw.iter().map(|r| r.prefer_taints).max().unwrap_or(0);
    let total = |r: &Raw| {
        WEIGHT_LEAST_ALLOCATED * r.least_allocated
            + WEIGHT_SPREAD * reverse_normalize(r.owner_pods, max_owner)
            + WEIGHT_TAINT * reverse_normalize(r.prefer_taints, max_taints)
    };
    let (mut chosen, mut top, mut ties) = (0, i64::MIN, 0u32);
    for r in &raw {
        let score = total(r);
        if score > top {
            (chosen, top, ties) = (r.index, score, 1);
        } else if score == top {
            // The k-th node with the top score replaces the pick with
            // probability 1/k, which leaves each of them equally likely.
            ties += 1;
            if rng.gen_range(0..ties) == 0 {
                chosen = r.index;
            }
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::filter::tests::{taint, tol};
    use crate::scheduler::tests::{node, owned_pod, pod, rng};
    use crate::scheduler::{schedule, NodeInfo};
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use serde_json::json;

    #[test]
    fn least_allocated_prefers_the_emptier_node() {
        let p = pod("p", "1", "1Gi");
        let mut busy = node("a-busy", "4", "8Gi");
        busy.add_pod(&pod("x", "2", "4Gi"));
        let idle = node("b-idle", "4", "8Gi");
        // busy: cpu (4-3)/4 = 25, mem (8-5)/8 = 37 → 31; idle: 75, 87 → 81.
        assert_eq!(least_allocated(&p, &busy), 31);
        assert_eq!(least_allocated(&p, &idle), 81);
        let nodes = [busy, idle];
        assert_eq!(
            nodes[schedule(&p, &nodes, &mut 0, &mut rng()).unwrap()].name,
            "b-idle"
        );
    }

    #[test]
    fn bigger_node_wins_when_equally_loaded() {
        let p = pod("p", "1", "1Gi");
        let nodes = [node("a-small", "2", "2Gi"), node("b-large", "8", "8Gi")];
        assert_eq!(
            nodes[schedule(&p, &nodes, &mut 0, &mut rng()).unwrap()].name,
            "b-large"
        );
    }

    #[test]
    fn free_fraction_edges() {
        assert_eq!(free_fraction(0, 0), 0);
        assert_eq!(free_fraction(5, 4), 0);
        assert_eq!(free_fraction(0, 4), 100);
        assert_eq!(free_fraction(i64::MAX - 1, i64::MAX), 0);
    }

    #[test]
    fn ties_are_broken_at_random_among_the_best_only() {
        let p = pod("p", "100m", "1Mi");
        let mut busy = node("a-busy", "1", "1Gi");
        busy.add_pod(&pod("x", "500m", "512Mi"));
        let nodes = [
            node("c", "1", "1Gi"),
            busy,
            node("a", "1", "1Gi"),
            node("b", "1", "1Gi"),
        ];
        let mut rng = rng();
        let mut picked = [0; 4];
        for _ in 0..3000 {
            picked[schedule(&p, &nodes, &mut 0, &mut rng).unwrap()] += 1;
        }
        assert_eq!(picked[1], 0, "the busier node never wins: {picked:?}");
        for i in [0, 2, 3] {
            assert!(
                (800..1200).contains(&picked[i]),
                "about a third each: {picked:?}"
            );
        }
        // The same seed gives the same choices.
        let again = |seed| {
            let mut r = StdRng::seed_from_u64(seed);
            (0..20)
                .map(|_| schedule(&p, &nodes, &mut 0, &mut r).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(again(3), again(3));
    }

    #[test]
    fn a_burst_of_small_pods_spreads_over_equal_nodes() {
        // 10m pods barely move a 32-core node's integer score: with a fixed
        // tie-break the first node would take the whole burst.
        let mut nodes: Vec<NodeInfo> = (0..100)
            .map(|i| node(&format!("n{i:03}"), "32", "128Gi"))
            .collect();
        let mut rng = rng();
        for i in 0..100 {
            let p = pod(&format!("p{i}"), "10m", "16Mi");
            let chosen = schedule(&p, &nodes, &mut 0, &mut rng).unwrap();
            nodes[chosen].add_pod(&p);
        }
        let max = nodes.iter().map(|n| n.pod_count).max().unwrap_or(0);
        let used = nodes.iter().filter(|n| n.pod_count > 0).count();
        assert!(max <= 6, "at most a few per node, got {max}");
        assert!(used >= 50, "most nodes used, got {used}");
    }

    #[test]
    fn six_replicas_spread_two_per_node() {
        let mut nodes: Vec<NodeInfo> = ["n1", "n2", "n3"]
            .iter()
            .map(|n| node(n, "4", "8Gi"))
            .collect();
        for i in 0..6 {
            let p = owned_pod(&format!("web-{i}"), "rs-uid", "100m", "64Mi");
            let chosen = schedule(&p, &nodes, &mut 0, &mut rng()).unwrap();
            nodes[chosen].add_pod(&p);
        }
        let counts: Vec<i64> = nodes.iter().map(|n| n.pod_count).collect();
        assert_eq!(counts, [2, 2, 2]);
        assert!(nodes.iter().all(|n| n.owner_counts["rs-uid"] == 2));
    }

    #[test]
    fn spreading_beats_a_small_resource_difference() {
        // n1 is a bit emptier but already runs a replica of the same owner.
        let mut n1 = node("n1", "4", "8Gi");
        n1.add_pod(&owned_pod("web-0", "rs", "100m", "64Mi"));
        let mut n2 = node("n2", "4", "8Gi");
        n2.add_pod(&pod("other", "200m", "128Mi"));
        let p = owned_pod("web-1", "rs", "100m", "64Mi");
        let nodes = [n1, n2];
        assert_eq!(
            nodes[schedule(&p, &nodes, &mut 0, &mut rng()).unwrap()].name,
            "n2"
        );
        // Without an owner, the emptier node wins.
        let q = pod("solo", "100m", "64Mi");
        assert_eq!(
            nodes[schedule(&q, &nodes, &mut 0, &mut rng()).unwrap()].name,
            "n1"
        );
    }

    #[test]
    fn best_effort_pods_spread_by_default_requests() {
        let mut nodes = vec![node("a", "4", "8Gi"), node("b", "4", "8Gi")];
        for _ in 0..4 {
            let p = crate::scheduler::tests::with_spec(json!({"containers": [{"name": "c"}]}));
            let i = schedule(&p, &nodes, &mut 0, &mut rng()).unwrap();
            nodes[i].add_pod(&p);
        }
        assert_eq!(nodes[0].pod_count, 2);
        assert_eq!(nodes[1].pod_count, 2);
    }

    #[test]
    fn prefer_no_schedule_is_avoided_but_not_forbidden() {
        let soft = taint("spot", "", "PreferNoSchedule");
        let mut a = node("a", "4", "8Gi");
        a.taints.push(soft.clone());
        let b = node("b", "4", "8Gi");
        let mut p = pod("p", "100m", "1Mi");
        assert_eq!(prefer_no_schedule_count(&p, &a), 1);
        let nodes = [a.clone(), b];
        assert_eq!(
            nodes[schedule(&p, &nodes, &mut 0, &mut rng()).unwrap()].name,
            "b"
        );
        assert_eq!(schedule(&p, &[a.clone()], &mut 0, &mut rng()), Ok(0));
        // A NoSchedule-only toleration does not cancel PreferNoSchedule.
        let exists =
            |effect: &str| tol(json!({"key": "spot", "operator": "Exists", "effect": effect}));
        p.tolerations.push(exists("NoSchedule"));
        assert_eq!(prefer_no_schedule_count(&p, &a), 1);
        p.tolerations.push(exists(""));
        assert_eq!(prefer_no_schedule_count(&p, &a), 0);
    }

    #[test]
    fn reverse_normalize_range() {
        assert_eq!(reverse_normalize(0, 0), 100);
        assert_eq!(reverse_normalize(0, 4), 100);
        assert_eq!(reverse_normalize(2, 4), 50);
        assert_eq!(reverse_normalize(4, 4), 0);
    }
}
