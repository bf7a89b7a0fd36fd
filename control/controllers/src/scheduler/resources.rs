//! Quantities and a pod's effective resource request, computed the way the
//! Kubernetes scheduler computes them, so that a pod fits (or not) on the
//! same nodes here as it would there.
//!
//! Quantity syntax is parsed by the admission validator's parser, so the
//! scheduler accepts exactly what the API server stored.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::quantity::quantity_nanos;

/// CPU a container is assumed to use when scoring if it requests none
/// (Kubernetes' `DefaultMilliCPURequest`): without it, best-effort pods
/// would look free and pile onto one node.
pub const DEFAULT_MILLI_CPU: i64 = 100;
/// Memory assumed for scoring when a container requests none
/// (Kubernetes' `DefaultMemoryRequest`, 200 MiB).
pub const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// The two resources the scheduler accounts for: CPU in millicores and
/// memory in bytes. Other resources (ephemeral storage, extended
/// resources) are not tracked yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_millis: i64,
    pub memory: i64,
}

impl Resources {
    /// Component-wise sum (saturating: quantities come from users).
    pub fn plus(self, o: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(o.cpu_millis),
            memory: self.memory.saturating_add(o.memory),
        }
    }

    /// Component-wise difference, floored at zero, for removing a pod.
    pub fn minus(self, o: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(o.cpu_millis).max(0),
            memory: self.memory.saturating_sub(o.memory).max(0),
        }
    }

    /// Component-wise maximum: init containers run one at a time, so each
    /// resource's peak is taken independently.
    pub fn max(self, o: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.max(o.cpu_millis),
            memory: self.memory.max(o.memory),
        }
    }
}

/// A pod's request twice over: as declared (for fitting) and with the
/// defaults above filled in for containers that declare none (for scoring).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodResources {
    pub requests: Resources,
    pub non_zero: Resources,
}

impl PodResources {
    fn plus(self, o: PodResources) -> PodResources {
        PodResources {
            requests: self.requests.plus(o.requests),
            non_zero: self.non_zero.plus(o.non_zero),
        }
    }

    fn max(self, o: PodResources) -> PodResources {
        PodResources {
            requests: self.requests.max(o.requests),
            non_zero: self.non_zero.max(o.non_zero),
        }
    }
}

/// CPU quantity in millicores, rounded up like `Quantity.MilliValue()`.
/// None for malformed or negative quantities.
pub fn cpu_millis(q: &str) -> Option<i64> {
    scaled(q, 1_000_000)
}

/// Plain value (bytes, pod count), rounded up like `Quantity.Value()`.
pub fn value(q: &str) -> Option<i64> {
    scaled(q, 1_000_000_000)
}

fn scaled(q: &str, per_unit: i128) -> Option<i64> {
    let nanos = quantity_nanos(q).filter(|n| *n >= 0)?;
    i64::try_from((nanos + per_unit - 1) / per_unit).ok()
}

/// A pod's effective request as Kubernetes computes it (resourcehelper's
/// PodRequests): app containers and restartable (sidecar) init containers
/// run together and add up; each ordinary init container runs alone beside
/// the sidecars started before it; the pod needs the larger of the two
/// peaks, plus `spec.overhead`.
pub fn pod_requests(spec: &PodSpec) -> Result<PodResources, String> {
    let mut total = PodResources::default();
    for (i, c) in spec.containers.iter().enumerate() {
        total = total.plus(container(c, &format!("spec.containers[{i}]"))?);
    }
    let (mut sidecars, mut init_peak) = (PodResources::default(), PodResources::default());
    let init_containers = spec.init_containers.as_deref().unwrap_or_default();
    for (i, c) in init_containers.iter().enumerate() {
        let r = container(c, &format!("spec.initContainers[{i}]"))?;
        let peak = if c.restart_policy.as_deref() == Some("Always") {
            total = total.plus(r);
            sidecars = sidecars.plus(r);
            sidecars
        } else {
            sidecars.plus(r)
        };
        init_peak = init_peak.max(peak);
    }
    let overhead = resource_list(spec.overhead.as_ref(), "spec.overhead")?;
    let overhead = PodResources {
        requests: overhead,
        non_zero: overhead,
    };
    Ok(total.max(init_peak).plus(overhead))
}

/// One container's request; the non-zero variant substitutes the defaults
/// only for a resource that is absent (an explicit "0" stays 0, as in
/// Kubernetes' GetNonzeroRequests).
fn container(c: &Container, path: &str) -> Result<PodResources, String> {
    let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
    let path = format!("{path}.resources.requests");
    let declared = resource_list(requests, &path)?;
    let has = |k: &str| requests.is_some_and(|r| r.contains_key(k));
    let non_zero = Resources {
        cpu_millis: if has("cpu") {
            declared.cpu_millis
        } else {
            DEFAULT_MILLI_CPU
        },
        memory: if has("memory") {
            declared.memory
        } else {
            DEFAULT_MEMORY
        },
    };
    Ok(PodResources {
        requests: declared,
        non_zero,
    })
}

/// Reads cpu and memory from a ResourceList (absent = 0); Err names the
/// field (`path.cpu`) of a malformed quantity.
pub fn resource_list(
    list: Option<&BTreeMap<String, Quantity>>,
    path: &str,
) -> Result<Resources, String> {
    let get = |k: &str, parse: fn(&str) -> Option<i64>| -> Result<i64, String> {
        match list.and_then(|l| l.get(k)) {
            None => Ok(0),
            Some(q) => parse(&q.0).ok_or_else(|| format!("{path}.{k}: invalid quantity {:?}", q.0)),
        }
    };
    Ok(Resources {
        cpu_millis: get("cpu", cpu_millis)?,
        memory: get("memory", value)?,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ResourceRequirements;

    #[test]
    fn cpu_quantities() {
        assert_eq!(cpu_millis("100m"), Some(100));
        assert_eq!(cpu_millis("0.5"), Some(500));
        assert_eq!(cpu_millis("1"), Some(1000));
        assert_eq!(cpu_millis("1e3"), Some(1_000_000));
        assert_eq!(cpu_millis("250u"), Some(1), "rounds up like MilliValue");
        assert_eq!(cpu_millis("abc"), None);
        assert_eq!(cpu_millis("-1"), None);
    }

    #[test]
    fn memory_quantities() {
        assert_eq!(value("2Gi"), Some(2 << 30));
        assert_eq!(value("500Mi"), Some(500 << 20));
        assert_eq!(value("128974848"), Some(128_974_848));
        assert_eq!(value("129e6"), Some(129_000_000));
        assert_eq!(value("1k"), Some(1000));
        assert_eq!(value("0.5"), Some(1), "rounds up like Value");
        assert_eq!(value("12Zi"), None);
    }

    /// A ResourceList of (resource, quantity) pairs.
    pub(crate) fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
        let q = |(k, v): &(&str, &str)| (k.to_string(), Quantity(v.to_string()));
        pairs.iter().map(q).collect()
    }

    fn c(cpu: &str, mem: &str) -> Container {
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: Some(quantities(&[("cpu", cpu), ("memory", mem)])),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn spec(init_containers: Vec<Container>, containers: Vec<Container>) -> PodSpec {
        PodSpec {
            init_containers: Some(init_containers),
            containers,
            ..Default::default()
        }
    }

    fn req(cpu: i64, memory: i64) -> Resources {
        Resources {
            cpu_millis: cpu,
            memory,
        }
    }

    #[test]
    fn containers_add_up() {
        let spec = spec(vec![], vec![c("100m", "1Mi"), c("200m", "2Mi")]);
        let r = pod_requests(&spec).unwrap();
        assert_eq!(r.requests, req(300, 3 << 20));
        assert_eq!(r.non_zero, r.requests);
    }

    #[test]
    fn init_containers_take_the_max() {
        // Sum of app containers 300m/3Mi; the big init container runs alone
        // and needs 1 cpu, so cpu comes from it, memory from the app.
        let spec = spec(
            vec![c("1", "1Mi"), c("50m", "2Mi")],
            vec![c("100m", "1Mi"), c("200m", "2Mi")],
        );
        let r = pod_requests(&spec).unwrap().requests;
        assert_eq!(r, req(1000, 3 << 20));
    }

    #[test]
    fn sidecars_run_beside_everything_after_them() {
        let mut sidecar = c("100m", "10Mi");
        sidecar.restart_policy = Some("Always".into());
        // init1 runs alone (500m); the sidecar then runs beside init2
        // (100m + 450m = 550m) and beside the app (100m + 200m = 300m).
        let spec = spec(
            vec![c("500m", "1Mi"), sidecar, c("450m", "1Mi")],
            vec![c("200m", "1Mi")],
        );
        let r = pod_requests(&spec).unwrap().requests;
        assert_eq!(r, req(550, 11 << 20));
    }

    #[test]
    fn overhead_is_added() {
        let mut spec = spec(vec![], vec![c("100m", "1Mi")]);
        spec.overhead = Some(quantities(&[("cpu", "10m")]));
        assert_eq!(pod_requests(&spec).unwrap().requests, req(110, 1 << 20));
    }

    #[test]
    fn missing_requests_get_scoring_defaults_only() {
        let bare = Container {
            name: "a".into(),
            ..Default::default()
        };
        let zero_cpu = Container {
            name: "b".into(),
            resources: Some(ResourceRequirements {
                requests: Some(quantities(&[("cpu", "0")])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let spec = spec(vec![], vec![bare, zero_cpu]);
        let r = pod_requests(&spec).unwrap();
        assert_eq!(r.requests, req(0, 0));
        assert_eq!(r.non_zero, req(100, 2 * DEFAULT_MEMORY));
    }

    #[test]
    fn malformed_quantity_names_the_field() {
        let spec = spec(vec![], vec![c("lots", "1Mi")]);
        let err = pod_requests(&spec).unwrap_err();
        assert!(
            err.contains("spec.containers[0].resources.requests.cpu"),
            "{err}"
        );
    }
}
