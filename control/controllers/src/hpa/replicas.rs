//! The replica count one resource metric asks for: Kubernetes'
//! `ReplicaCalculator` (`pkg/controller/podautoscaler/replica_calculator.go`)
//! as pure functions over pod samples, so the table-driven tests below can
//! state the documented examples directly.
//!
//! The algorithm: `desired = ceil(current * usage / target)`, computed over
//! the pods that have a usable sample; no change while the ratio is within
//! the tolerance (0.1). Pods being deleted or failed are ignored. For CPU,
//! pods not yet ready are set aside. When some pods have no sample, or
//! unready pods might tip a scale-up, the ratio is recomputed
//! conservatively: missing pods count as using 100% of their request (or
//! the target value) when scaling down and 0 when scaling up, unready pods
//! as 0; and the scale direction may not flip, nor go against the first
//! ratio, because of those guesses.

use std::collections::BTreeMap;

/// Kubernetes' default `--horizontal-pod-autoscaler-tolerance`.
pub const TOLERANCE: f64 = 0.1;

/// One pod, as the calculation sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodSample {
    pub name: String,
    /// Deleted, or phase Failed: not counted at all.
    pub ignored: bool,
    /// Pending, or (CPU only) not ready within its start-up period: set
    /// aside even when it has a sample.
    pub unready: bool,
    /// Usage in milli-units (millicores, millibytes); `None` = no sample.
    pub usage_milli: Option<i64>,
    /// Sum of the containers' requests for the resource, milli-units;
    /// `None` when a container has none (utilization is then undefined).
    pub request_milli: Option<i64>,
}

/// What a metric target asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// Percent of the pods' requests.
    Utilization(i32),
    /// Average usage per pod, milli-units.
    AverageValueMilli(i64),
}

/// The calculation's answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Proposal {
    pub replicas: i32,
    /// Current average utilization (percent of requests), for Utilization targets.
    pub utilization: Option<i32>,
    /// Current average usage per pod, milli-units.
    pub average_milli: i64,
}

/// Why no proposal could be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CalcError {
    NoPods,
    NoMetrics,
    MissingRequest { resource: String, pod: String },
}

impl std::fmt::Display for CalcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CalcError::NoPods => {
                f.write_str("no pods returned by selector while calculating replica count")
            }
            CalcError::NoMetrics => {
                f.write_str("did not receive metrics for targeted pods (pods might be unready)")
            }
            CalcError::MissingRequest { resource, pod } => {
                write!(f, "missing request for {resource} in pod {pod}")
            }
        }
    }
}

impl std::error::Error for CalcError {}

/// The replica count `pods` ask for at `target`, from `current` replicas.
pub fn replicas(
    current: i32,
    pods: &[PodSample],
    target: Target,
    resource: &str,
    tolerance: f64,
) -> Result<Proposal, CalcError> {
    if pods.is_empty() {
        return Err(CalcError::NoPods);
    }
    let mut metrics: BTreeMap<&str, i64> = BTreeMap::new();
    let mut unready = Vec::new();
    let mut missing = Vec::new();
    let mut requests: BTreeMap<&str, i64> = BTreeMap::new();
    let mut ready_count = 0i64;
    for p in pods.iter().filter(|p| !p.ignored) {
        if let Some(r) = p.request_milli {
            requests.insert(&p.name, r);
        }
        match p.usage_milli {
            _ if p.unready => unready.push(p),
            None => missing.push(p),
            Some(u) => {
                metrics.insert(&p.name, u);
                ready_count += 1;
            }
        }
    }
    if metrics.is_empty() {
        return Err(CalcError::NoMetrics);
    }
    let ratio_of =
        |m: &BTreeMap<&str, i64>| -> Result<(f64, Option<i32>, i64), CalcError> {
            let count = m.len() as i64;
            let total: i64 = m.values().sum();
            let average = total / count.max(1);
            match target {
                Target::Utilization(t) => {
                    let mut req_total = 0i64;
                    for name in m.keys() {
                        req_total += requests.get(name).copied().ok_or_else(|| {
                            CalcError::MissingRequest {
                                resource: resource.to_string(),
                                pod: name.to_string(),
                            }
                        })?;
                    }
                    if req_total <= 0 {
                        return Err(CalcError::MissingRequest {
                            resource: resource.to_string(),
                            pod: m.keys().next().map(|s| s.to_string()).unwrap_or_default(),
                        });
                    }
                    let util = (total * 100 / req_total) as i32;
                    Ok((f64::from(util) / f64::from(t), Some(util), average))
                }
                Target::AverageValueMilli(v) => Ok((average as f64 / v as f64, None, average)),
            }
        };
    let (ratio, utilization, average_milli) = ratio_of(&metrics)?;
    let answer = |replicas: i32| Proposal {
        replicas,
        utilization,
        average_milli,
    };
    let scale_up_with_unready = !unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && missing.is_empty() {
        if (1.0 - ratio).abs() <= tolerance {
            return Ok(answer(current));
        }
        return Ok(answer((ratio * ready_count as f64).ceil() as i32));
    }
    // Conservative guesses for the pods without a usable sample.
    for p in &missing {
        let guess = if ratio < 1.0 {
            match target {
                Target::Utilization(t) => {
                    let request = requests.get(p.name.as_str()).copied().unwrap_or(0);
                    request * i64::from(t.max(100)) / 100
                }
                Target::AverageValueMilli(v) => v,
            }
        } else {
            0
        };
        metrics.insert(&p.name, guess);
    }
    if scale_up_with_unready {
        for p in &unready {
            metrics.insert(&p.name, 0);
        }
    }
    let (new_ratio, _, _) = ratio_of(&metrics)?;
    if (1.0 - new_ratio).abs() <= tolerance
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok(answer(current));
    }
    let proposed = (new_ratio * metrics.len() as f64).ceil() as i32;
    if (new_ratio < 1.0 && proposed > current) || (new_ratio > 1.0 && proposed < current) {
        return Ok(answer(current));
    }
    Ok(answer(proposed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, usage: Option<i64>, request: i64) -> PodSample {
        PodSample {
            name: name.into(),
            ignored: false,
            unready: false,
            usage_milli: usage,
            request_milli: Some(request),
        }
    }

    fn unready(mut p: PodSample) -> PodSample {
        p.unready = true;
        p
    }

    fn calc(current: i32, pods: &[PodSample], target: Target) -> Result<Proposal, CalcError> {
        replicas(current, pods, target, "cpu", TOLERANCE)
    }

    #[test]
    fn documented_examples() {
        // (current, usages with 1000m requests, target %, expected replicas)
        let table: &[(i32, &[i64], i32, i32)] = &[
            // The docs: current usage twice the target doubles the replicas.
            (1, &[2000], 100, 2),
            // 50% of target halves them.
            (4, &[500, 500, 500, 500], 100, 2),
            // Within the 10% tolerance: no change.
            (3, &[950, 1050, 1000], 100, 3),
            // 60% average at target 50%: ceil(3 * 1.2) = 4.
            (3, &[600, 600, 600], 50, 4),
            // Idle: down to one pod (min/max are applied later).
            (3, &[0, 0, 0], 50, 0),
        ];
        for (current, usages, target, want) in table {
            let pods: Vec<PodSample> = usages
                .iter()
                .enumerate()
                .map(|(i, u)| pod(&format!("p{i}"), Some(*u), 1000))
                .collect();
            let got = calc(*current, &pods, Target::Utilization(*target)).unwrap();
            assert_eq!(got.replicas, *want, "{usages:?} at {target}%");
        }
    }

    #[test]
    fn utilization_is_reported() {
        let pods = [pod("a", Some(300), 1000), pod("b", Some(500), 1000)];
        let got = calc(2, &pods, Target::Utilization(40)).unwrap();
        assert_eq!(got.utilization, Some(40));
        assert_eq!(got.replicas, 2);
        assert_eq!(got.average_milli, 400);
    }

    #[test]
    fn average_value_target() {
        // 3 pods averaging 200Mi against a 100Mi target: 6 replicas.
        let mi = 1024 * 1024 * 1000;
        let pods = [
            pod("a", Some(100 * mi), 0),
            pod("b", Some(200 * mi), 0),
            pod("c", Some(300 * mi), 0),
        ];
        let got = calc(3, &pods, Target::AverageValueMilli(100 * mi)).unwrap();
        assert_eq!(got.replicas, 6);
        assert_eq!(got.utilization, None);
    }

    #[test]
    fn missing_pods_count_as_full_on_scale_down_and_idle_on_scale_up() {
        // Scale down: two pods at 10%, one missing treated as 100% => ratio
        // (100+100+1000)/3000 / 0.5 = 0.8 => ceil(0.8*3) = 3 (no change).
        let pods = [
            pod("a", Some(100), 1000),
            pod("b", Some(100), 1000),
            pod("c", None, 1000),
        ];
        assert_eq!(calc(3, &pods, Target::Utilization(50)).unwrap().replicas, 3);
        // Scale up: two pods at 100% of a 50% target, one missing as 0 =>
        // ratio (2000/3000)/0.5 = 1.33 => ceil(1.33*3) = 4.
        let pods = [
            pod("a", Some(1000), 1000),
            pod("b", Some(1000), 1000),
            pod("c", None, 1000),
        ];
        assert_eq!(calc(3, &pods, Target::Utilization(50)).unwrap().replicas, 4);
    }

    #[test]
    fn unready_pods_dampen_a_scale_up_but_never_reverse_it() {
        // Ready pod at 2x target, unready pod counted as 0 => ratio 1.0 =>
        // within tolerance: stay.
        let pods = [
            pod("a", Some(1000), 1000),
            unready(pod("b", Some(900), 1000)),
        ];
        assert_eq!(calc(2, &pods, Target::Utilization(50)).unwrap().replicas, 2);
        // Unready pods do not matter when scaling down.
        let pods = [
            pod("a", Some(100), 1000),
            unready(pod("b", Some(900), 1000)),
        ];
        assert_eq!(calc(2, &pods, Target::Utilization(50)).unwrap().replicas, 1);
    }

    #[test]
    fn ignored_pods_and_errors() {
        let mut gone = pod("x", Some(5000), 1000);
        gone.ignored = true;
        let pods = [pod("a", Some(500), 1000), gone];
        assert_eq!(calc(2, &pods, Target::Utilization(50)).unwrap().replicas, 2);
        assert_eq!(
            calc(1, &[], Target::Utilization(50)),
            Err(CalcError::NoPods)
        );
        assert_eq!(
            calc(1, &[pod("a", None, 1000)], Target::Utilization(50)),
            Err(CalcError::NoMetrics)
        );
        let mut no_req = pod("a", Some(10), 0);
        no_req.request_milli = None;
        assert!(matches!(
            calc(1, &[no_req], Target::Utilization(50)),
            Err(CalcError::MissingRequest { .. })
        ));
    }
}
