//! `spec.podFailurePolicy`: what a failed pod means for its Job. The first
//! rule that matches decides: `FailJob` fails the Job at once, `Ignore`
//! does not count the failure toward `backoffLimit` (nor in
//! `status.failed`), `Count` counts it as usual. No matching rule counts.
//!
//! As in Kubernetes, `onExitCodes` looks at terminated containers (and
//! init containers) whose exit code is not 0, optionally only the one
//! named; `onPodConditions` matches a pod condition of that type and
//! status (`True` when unset).

use k8s_openapi::api::batch::v1::{PodFailurePolicy, PodFailurePolicyRule};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

/// What a failed pod means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Counts toward `backoffLimit`.
    Count,
    /// Not counted at all.
    Ignore,
    /// Fails the Job; the message for its `Failed` condition.
    FailJob(String),
}

/// Judges the failed `pod` under `policy` (none: every failure counts).
pub fn judge(policy: Option<&PodFailurePolicy>, pod: &Pod) -> Verdict {
    let Some(policy) = policy else {
        return Verdict::Count;
    };
    for (i, rule) in policy.rules.iter().enumerate() {
        let Some(why) = matches(rule, pod) else {
            continue;
        };
        let pod_key = format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default()
        );
        return match rule.action.as_str() {
            "FailJob" => Verdict::FailJob(format!(
                "{why} for pod {pod_key} matching FailJob rule at index {i}"
            )),
            "Ignore" => Verdict::Ignore,
            _ => Verdict::Count,
        };
    }
    Verdict::Count
}

/// Why `rule` matches `pod` (the start of the condition's message), if it does.
fn matches(rule: &PodFailurePolicyRule, pod: &Pod) -> Option<String> {
    if let Some(req) = &rule.on_exit_codes {
        let status = pod.status.as_ref()?;
        let all = status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten());
        for cs in all {
            if req.container_name.as_ref().is_some_and(|n| *n != cs.name) {
                continue;
            }
            let Some(code) = exit_code(cs).filter(|c| *c != 0) else {
                continue;
            };
            let listed = req.values.contains(&code);
            let hit = match req.operator.as_str() {
                "In" => listed,
                "NotIn" => !listed,
                _ => false,
            };
            if hit {
                return Some(format!(
                    "Container {} failed with exit code {code}",
                    cs.name
                ));
            }
        }
        return None;
    }
    let patterns = rule.on_pod_conditions.as_ref()?;
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    patterns.iter().find_map(|p| {
        let want = if p.status.is_empty() {
            "True"
        } else {
            &p.status
        };
        conditions
            .iter()
            .any(|c| c.type_ == p.type_ && c.status == want)
            .then(|| format!("Pod has condition {}", p.type_))
    })
}

fn exit_code(cs: &ContainerStatus) -> Option<i32> {
    Some(cs.state.as_ref()?.terminated.as_ref()?.exit_code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{
        PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyOnPodConditionsPattern,
    };
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, PodCondition, PodStatus,
    };

    fn failed(code: i32, condition: Option<&str>) -> Pod {
        Pod {
            status: Some(PodStatus {
                phase: Some("Failed".into()),
                container_statuses: Some(vec![ContainerStatus {
                    name: "main".into(),
                    state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: code,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                conditions: condition.map(|t| {
                    vec![PodCondition {
                        type_: t.into(),
                        status: "True".into(),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn policy() -> PodFailurePolicy {
        PodFailurePolicy {
            rules: vec![
                PodFailurePolicyRule {
                    action: "FailJob".into(),
                    on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                        container_name: Some("main".into()),
                        operator: "In".into(),
                        values: vec![42],
                    }),
                    on_pod_conditions: None,
                },
                PodFailurePolicyRule {
                    action: "Ignore".into(),
                    on_exit_codes: None,
                    on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                        type_: "DisruptionTarget".into(),
                        status: "True".into(),
                    }]),
                },
            ],
        }
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let p = policy();
        assert!(matches!(
            judge(Some(&p), &failed(42, None)),
            Verdict::FailJob(m) if m.starts_with("Container main failed with exit code 42")
        ));
        assert_eq!(
            judge(Some(&p), &failed(1, Some("DisruptionTarget"))),
            Verdict::Ignore
        );
        assert_eq!(judge(Some(&p), &failed(1, None)), Verdict::Count);
        assert_eq!(judge(None, &failed(42, None)), Verdict::Count);
    }
}
