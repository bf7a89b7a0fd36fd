//! The pods a Job makes from its template, and how it reads them.
//!
//! Every pod carries the `batch.kubernetes.io/job-tracking` finalizer, so
//! it cannot disappear before the Job counted it (see the module
//! documentation of `job`). Indexed pods also carry their completion
//! index (annotation and label), the hostname `<job>-<index>` and the
//! `JOB_COMPLETION_INDEX` environment variable, read by the agent from the
//! annotation through a fieldRef, exactly as Kubernetes injects it.

use std::cmp::Reverse;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::indexed::COMPLETION_INDEX;
use crate::reconcile::{
    created_s, is_deleting, name, namespace, owner_ref, pod_is_ready, pod_phase,
};

/// Holds a finished pod until its Job counted it in `status`.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
const INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

/// The pod carries the tracking finalizer.
pub fn is_tracked(pod: &Pod) -> bool {
    pod.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == TRACKING_FINALIZER)
}

/// Pending or running, and not terminating.
pub fn is_active(pod: &Pod) -> bool {
    !is_deleting(&pod.metadata) && !matches!(pod_phase(pod), Some("Succeeded" | "Failed"))
}

pub fn is_succeeded(pod: &Pod) -> bool {
    pod_phase(pod) == Some("Succeeded")
}

/// Failed, or terminating before it succeeded (Kubernetes'
/// `podReplacementPolicy: TerminatingOrFailed` view: a pod deleted under
/// a running Job is a failure).
pub fn is_failed(pod: &Pod) -> bool {
    pod_phase(pod) == Some("Failed") || (is_deleting(&pod.metadata) && !is_succeeded(pod))
}

/// Container restarts of the pod (for `restartPolicy: OnFailure`, where
/// failures show as restarts instead of failed pods).
pub fn restarts(pod: &Pod) -> i64 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |cs| cs.iter().map(|c| i64::from(c.restart_count)).sum())
}

/// When the pod's last container finished, if it reported that.
pub fn finished_s(pod: &Pod) -> Option<i64> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses
        .iter()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0.as_second())
        .max()
}

/// A new pod of `job` named `pod_name`, running `index` in Indexed mode.
pub fn from_template(job: &Job, pod_name: &str, index: Option<i32>) -> Pod {
    let job_name = name(&job.metadata);
    let template = job.spec.as_ref().map(|s| &s.template);
    let tm = template.and_then(|t| t.metadata.as_ref());
    let mut labels = tm.and_then(|m| m.labels.clone()).unwrap_or_default();
    let mut annotations = tm.and_then(|m| m.annotations.clone()).unwrap_or_default();
    let mut finalizers = tm.and_then(|m| m.finalizers.clone()).unwrap_or_default();
    finalizers.push(TRACKING_FINALIZER.to_string());
    let mut spec = template.and_then(|t| t.spec.clone()).unwrap_or_default();
    let generate_name = match index {
        Some(i) => {
            labels.insert(COMPLETION_INDEX.into(), i.to_string());
            annotations.insert(COMPLETION_INDEX.into(), i.to_string());
            spec.hostname = Some(format!("{job_name}-{i}"));
            spec.containers.iter_mut().for_each(add_index_env);
            spec.init_containers
                .iter_mut()
                .flatten()
                .for_each(add_index_env);
            format!("{job_name}-{i}-")
        }
        None => format!("{job_name}-"),
    };
    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name.to_string()),
            generate_name: Some(generate_name),
            namespace: Some(namespace(&job.metadata).to_string()),
            owner_references: Some(vec![owner_ref(job)]),
            labels: Some(labels).filter(|l| !l.is_empty()),
            annotations: Some(annotations).filter(|a| !a.is_empty()),
            finalizers: Some(finalizers),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// The name prefix of a new pod (its generateName).
pub fn name_prefix(job: &Job, index: Option<i32>) -> String {
    let job_name = name(&job.metadata);
    match index {
        Some(i) => format!("{job_name}-{i}-"),
        None => format!("{job_name}-"),
    }
}

/// `JOB_COMPLETION_INDEX` from the index annotation, unless the container
/// already sets it.
fn add_index_env(c: &mut Container) {
    let env = c.env.get_or_insert_with(Vec::new);
    if env.iter().any(|e| e.name == INDEX_ENV) {
        return;
    }
    env.push(EnvVar {
        name: INDEX_ENV.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: Some("v1".into()),
                field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
            }),
            ..EnvVarSource::default()
        }),
    });
}

/// Sort key: pods that sort first are deleted first when there are too
/// many (unscheduled, then not running, then not ready, youngest first).
pub fn deletion_rank(pod: &Pod) -> impl Ord {
    let assigned = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    (
        assigned,
        pod_phase(pod) == Some("Running"),
        pod_is_ready(pod),
        Reverse(created_s(&pod.metadata)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::JobSpec;
    use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};

    fn job() -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some("pi".into()),
                namespace: Some("d".into()),
                uid: Some("u".into()),
                ..ObjectMeta::default()
            },
            spec: Some(JobSpec {
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some([("app".to_string(), "pi".to_string())].into()),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "c".into(),
                            ..Container::default()
                        }],
                        ..PodSpec::default()
                    }),
                },
                ..JobSpec::default()
            }),
            status: None,
        }
    }

    #[test]
    fn indexed_pods_carry_their_index_everywhere() {
        let p = from_template(&job(), "pi-2-abcde", Some(2));
        let m = &p.metadata;
        assert_eq!(m.generate_name.as_deref(), Some("pi-2-"));
        assert_eq!(
            m.labels
                .as_ref()
                .and_then(|l| l.get(COMPLETION_INDEX))
                .map(String::as_str),
            Some("2")
        );
        assert_eq!(
            m.annotations
                .as_ref()
                .and_then(|a| a.get(COMPLETION_INDEX))
                .map(String::as_str),
            Some("2")
        );
        assert!(is_tracked(&p));
        let spec = p.spec.expect("a spec");
        assert_eq!(spec.hostname.as_deref(), Some("pi-2"));
        let env = spec.containers[0].env.clone().unwrap_or_default();
        let e = env
            .iter()
            .find(|e| e.name == INDEX_ENV)
            .expect("the index env");
        let path = e
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str());
        assert_eq!(
            path,
            Some("metadata.annotations['batch.kubernetes.io/job-completion-index']")
        );
        assert_eq!(
            m.owner_references.as_ref().map(|r| r[0].kind.as_str()),
            Some("Job")
        );
    }

    #[test]
    fn plain_pods_only_get_the_finalizer_and_owner() {
        let p = from_template(&job(), "pi-abcde", None);
        assert_eq!(p.metadata.generate_name.as_deref(), Some("pi-"));
        assert_eq!(p.metadata.annotations, None);
        assert_eq!(
            p.metadata.finalizers,
            Some(vec![TRACKING_FINALIZER.to_string()])
        );
        assert_eq!(p.spec.and_then(|s| s.hostname), None);
    }
}
