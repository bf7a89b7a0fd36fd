//! Which PersistentVolume a claim may bind to: Kubernetes'
//! `FindMatchingVolume`, shared by the binder and the scheduler.
//!
//! A volume pre-bound to the claim (its `claimRef` names the claim, with
//! the claim's uid or none) wins outright if its node affinity allows the
//! node. Otherwise the candidates are Available, unclaimed, not being
//! deleted, of the claim's class and volume mode, matching its selector,
//! offering every access mode it asks for, with capacity at least its
//! request and node affinity allowing the node; the smallest one wins.
//! Without a node, delayed (WaitForFirstConsumer) claims match only
//! pre-bound volumes: for the others a node must be chosen first.

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim};

use super::{claim_class, volume_class, volume_phase};
use crate::quantity::quantity_nanos;
use crate::reconcile::selector_of;
use crate::scheduler::filter::RequiredAffinity;
use crate::scheduler::NodeInfo;

/// The best volume among `volumes` for `claim` on `node` (see the module
/// docs); `delayed`: the claim's class binds only once a node is chosen.
pub fn find<'a, I>(
    claim: &PersistentVolumeClaim,
    volumes: I,
    node: Option<&NodeInfo>,
    delayed: bool,
) -> Option<&'a PersistentVolume>
where
    I: IntoIterator<Item = &'a PersistentVolume>,
{
    let request = requested_bytes(claim);
    let mut best: Option<(&PersistentVolume, i128)> = None;
    for pv in volumes {
        if pv.metadata.deletion_timestamp.is_some() || volume_mode(pv) != claim_mode(claim) {
            continue;
        }
        let affinity_ok = node.is_none_or(|n| node_allows(pv, n));
        if is_prebound_to(pv, claim) {
            return affinity_ok.then_some(pv);
        }
        if node.is_none() && delayed {
            continue;
        }
        if !affinity_ok || !available_for(pv, claim) {
            continue;
        }
        let Some(size) = capacity_bytes(pv) else {
            continue;
        };
        if size >= request && best.is_none_or(|(_, b)| size < b) {
            best = Some((pv, size));
        }
    }
    best.map(|(pv, _)| pv)
}

/// Unclaimed, Available, and matching class, selector and access modes.
fn available_for(pv: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let claimed = pv
        .spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .is_some();
    let selector_ok = claim
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_none_or(|s| match selector_of(s) {
            Some(sel) => sel.matches_labels(pv.metadata.labels.as_ref()),
            // An empty selector matches everything; an invalid one nothing.
            None => crate::selector::LabelSelector::from_typed(s).is_ok(),
        });
    volume_phase(pv) == "Available"
        && !claimed
        && selector_ok
        && volume_class(pv) == claim_class(claim)
        && offers_access_modes(pv, claim)
}

/// Whether a volume can serve a claim it is (to be) bound to by name:
/// capacity, class and volume mode, as Kubernetes' checkVolumeSatisfyClaim.
pub fn satisfies(pv: &PersistentVolume, claim: &PersistentVolumeClaim) -> Result<(), String> {
    let size = capacity_bytes(pv).unwrap_or(0);
    if size < requested_bytes(claim) {
        return Err("requested PV is too small".into());
    }
    if volume_class(pv) != claim_class(claim) {
        return Err("storageClassName does not match".into());
    }
    if volume_mode(pv) != claim_mode(claim) {
        return Err("incompatible volumeMode".into());
    }
    Ok(())
}

/// Whether `pv`'s claimRef names `claim` (same uid, or no uid yet).
pub fn is_prebound_to(pv: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    pv.spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .is_some_and(|r| refers_to(r, claim))
}

/// Whether a claimRef names `claim`: namespace and name equal, uid equal
/// or unset.
pub fn refers_to(r: &ObjectReference, claim: &PersistentVolumeClaim) -> bool {
    let m = &claim.metadata;
    r.name.as_deref() == m.name.as_deref()
        && r.namespace.as_deref() == m.namespace.as_deref()
        && r.uid
            .as_deref()
            .is_none_or(|u| u.is_empty() || Some(u) == m.uid.as_deref())
}

/// Every access mode the claim asks for is one the volume offers.
fn offers_access_modes(pv: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let offered = pv.spec.as_ref().and_then(|s| s.access_modes.as_deref());
    let wanted = claim.spec.as_ref().and_then(|s| s.access_modes.as_deref());
    let offered = offered.unwrap_or_default();
    wanted
        .unwrap_or_default()
        .iter()
        .all(|m| offered.contains(m))
}

/// The volume's required node affinity as the scheduler matches it; None
/// when the volume may be used on any node.
pub fn node_affinity(pv: &PersistentVolume) -> Option<RequiredAffinity> {
    let spec = pv.spec.as_ref()?;
    let required = spec.node_affinity.as_ref()?.required.as_ref()?;
    Some(RequiredAffinity::from_selector(required))
}

/// Whether the volume may be used on `node`.
pub fn node_allows(pv: &PersistentVolume, node: &NodeInfo) -> bool {
    node_affinity(pv).is_none_or(|a| a.matches(node))
}

/// `spec.resources.requests.storage` in bytes (0 when absent).
pub fn requested_bytes(claim: &PersistentVolumeClaim) -> i128 {
    let spec = claim.spec.as_ref();
    let requests = spec.and_then(|s| s.resources.as_ref()?.requests.as_ref());
    let storage = requests.and_then(|r| r.get("storage"));
    storage.and_then(|q| quantity_nanos(&q.0)).unwrap_or(0) / 1_000_000_000
}

/// `spec.capacity.storage` in bytes, None when absent or malformed.
fn capacity_bytes(pv: &PersistentVolume) -> Option<i128> {
    let capacity = pv.spec.as_ref()?.capacity.as_ref()?;
    Some(quantity_nanos(&capacity.get("storage")?.0)? / 1_000_000_000)
}

fn volume_mode(pv: &PersistentVolume) -> &str {
    let mode = pv.spec.as_ref().and_then(|s| s.volume_mode.as_deref());
    mode.unwrap_or("Filesystem")
}

fn claim_mode(claim: &PersistentVolumeClaim) -> &str {
    let mode = claim.spec.as_ref().and_then(|s| s.volume_mode.as_deref());
    mode.unwrap_or("Filesystem")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::tests::{from_json, node_obj};
    use serde_json::json;

    fn pv(name: &str, size: &str, class: &str, modes: &[&str]) -> PersistentVolume {
        from_json(json!({
            "metadata": {"name": name, "labels": {"tier": name}},
            "spec": {"capacity": {"storage": size}, "storageClassName": class,
                     "accessModes": modes, "hostPath": {"path": "/tmp/x"}},
            "status": {"phase": "Available"},
        }))
    }

    fn claim(size: &str, class: &str, modes: &[&str]) -> PersistentVolumeClaim {
        from_json(json!({
            "metadata": {"name": "c", "namespace": "default", "uid": "u1"},
            "spec": {"resources": {"requests": {"storage": size}},
                     "storageClassName": class, "accessModes": modes},
        }))
    }

    fn names(found: Option<&PersistentVolume>) -> Option<&str> {
        found.and_then(|p| p.metadata.name.as_deref())
    }

    #[test]
    fn the_smallest_volume_that_fits_wins() {
        let vols = [
            pv("big", "10Gi", "fast", &["ReadWriteOnce"]),
            pv("small", "1Gi", "fast", &["ReadWriteOnce"]),
            pv("fit", "2Gi", "fast", &["ReadWriteOnce", "ReadOnlyMany"]),
            pv("other-class", "2Gi", "slow", &["ReadWriteOnce"]),
        ];
        let c = claim("1500Mi", "fast", &["ReadWriteOnce"]);
        assert_eq!(names(find(&c, &vols, None, false)), Some("fit"));
        let c = claim("1500Mi", "fast", &["ReadOnlyMany"]);
        assert_eq!(names(find(&c, &vols, None, false)), Some("fit"));
        let c = claim("20Gi", "fast", &["ReadWriteOnce"]);
        assert_eq!(names(find(&c, &vols, None, false)), None);
        let c = claim("1Gi", "fast", &["ReadWriteMany"]);
        assert_eq!(names(find(&c, &vols, None, false)), None);
        // Delayed claims wait for a node.
        let c = claim("1Gi", "fast", &["ReadWriteOnce"]);
        assert_eq!(names(find(&c, &vols, None, true)), None);
    }

    #[test]
    fn selectors_claims_and_node_affinity_narrow_the_choice() {
        let mut vols = [
            pv("a", "1Gi", "", &["ReadWriteOnce"]),
            pv("b", "1Gi", "", &["ReadWriteOnce"]),
        ];
        let mut c = claim("1Gi", "", &["ReadWriteOnce"]);
        c.spec.as_mut().unwrap().selector = Some(from_json(json!({"matchLabels": {"tier": "b"}})));
        assert_eq!(names(find(&c, &vols, None, false)), Some("b"));
        // Claimed by someone else: not available.
        vols[1].spec.as_mut().unwrap().claim_ref = Some(from_json(json!({
            "namespace": "default", "name": "other", "uid": "u2"})));
        assert_eq!(names(find(&c, &vols, None, false)), None);
        // Pre-bound to this claim: chosen even against the selector.
        vols[0].spec.as_mut().unwrap().claim_ref =
            Some(from_json(json!({"namespace": "default", "name": "c"})));
        vols[0].status = None;
        assert_eq!(names(find(&c, &vols, None, true)), Some("a"));
        // ... unless its node affinity rules the node out.
        vols[0].spec.as_mut().unwrap().node_affinity = Some(from_json(json!({"required": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]}})));
        let mut n2 = node_obj("n2", "1", "1Gi");
        n2.metadata.labels = Some([("kubernetes.io/hostname".into(), "n2".into())].into());
        let n2 = NodeInfo::from_node(&n2, &[]);
        assert_eq!(names(find(&c, &vols, Some(&n2), true)), None);
    }

    #[test]
    fn satisfies_checks_size_class_and_mode() {
        let v = pv("a", "1Gi", "fast", &["ReadWriteOnce"]);
        assert!(satisfies(&v, &claim("1Gi", "fast", &["ReadWriteOnce"])).is_ok());
        assert!(satisfies(&v, &claim("2Gi", "fast", &["ReadWriteOnce"])).is_err());
        assert!(satisfies(&v, &claim("1Gi", "slow", &["ReadWriteOnce"])).is_err());
    }
}
