//! The HorizontalPodAutoscaler controller (`autoscaling/v2`, Kubernetes'
//! `pkg/controller/podautoscaler`): every sync period, for each HPA, read
//! the target's scale subresource, compute the replicas each resource
//! metric asks for ([`replicas`]) from the metrics API ([`metrics`]), take
//! the largest, stabilize and rate-limit it ([`behavior`]), write the
//! scale, and report `status` (current/desired replicas, current metrics,
//! lastScaleTime) with the `AbleToScale`, `ScalingActive` and
//! `ScalingLimited` conditions and Kubernetes' reasons, plus Events
//! (`SuccessfulRescale`, `FailedGetScale`, `FailedGetResourceMetric`, ...).
//!
//! Supported metric types: `Resource` (cpu, memory; `Utilization` of the
//! pods' requests or `AverageValue`). Other types make `ScalingActive`
//! False with `FailedGetResourceMetric`-style reasons naming the type.
//!
//! Recommendation and rescale history is kept in memory per HPA, as in
//! Kubernetes: a new leader seeds it with the stored
//! `status.desiredReplicas`, so a failover never cuts a scale-down
//! stabilization window short.
//! A reconcile is idempotent: it writes the scale only when it differs
//! and the status only when it changed.

pub mod behavior;
pub mod metrics;
pub mod replicas;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition, HorizontalPodAutoscalerStatus,
    MetricSpec, MetricStatus, MetricValueStatus, ResourceMetricStatus,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::json;

use crate::cache::{key_of, next_change, Caches, Change, Informer};
use crate::events;
use crate::reconcile::{
    enqueue_all, is_deleting, name, namespace, run_workers, Reconciled, WorkQueue,
};
use crate::selector::LabelSelector;
use behavior::{Behavior, History};
use replicas::{Proposal, Target};

const COMPONENT: &str = "horizontal-pod-autoscaler";
const WORKERS: usize = 2;

/// The controller's knobs, named after kube-controller-manager's flags.
#[derive(Debug, Clone, Copy)]
pub struct HpaConfig {
    /// `--horizontal-pod-autoscaler-sync-period` (15 s).
    pub sync_period: Duration,
    /// `--horizontal-pod-autoscaler-downscale-stabilization` (5 min): the
    /// scale-down window of HPAs that do not set their own.
    pub downscale_stabilization: Duration,
    /// `--horizontal-pod-autoscaler-tolerance` (0.1).
    pub tolerance: f64,
    pub readiness: metrics::Readiness,
}

impl Default for HpaConfig {
    fn default() -> Self {
        HpaConfig {
            sync_period: Duration::from_secs(15),
            downscale_stabilization: Duration::from_secs(300),
            tolerance: replicas::TOLERANCE,
            readiness: metrics::Readiness {
                cpu_initialization_period: Duration::from_secs(300),
                initial_readiness_delay: Duration::from_secs(30),
            },
        }
    }
}

struct Controller {
    client: kube::Client,
    hpas: Informer<HorizontalPodAutoscaler>,
    pods: Informer<Pod>,
    cfg: HpaConfig,
    history: Mutex<HashMap<String, History>>,
}

/// Runs the HPA controller until dropped.
pub async fn run(client: kube::Client, caches: Caches, cfg: HpaConfig) {
    let ctl = Arc::new(Controller {
        hpas: caches.get::<HorizontalPodAutoscaler>(),
        pods: caches.get::<Pod>(),
        client,
        cfg,
        history: Mutex::new(HashMap::new()),
    });
    let queue = WorkQueue::new();
    let changes = watch_changes(ctl.clone(), queue.clone());
    ctl.hpas.wait_synced().await;
    ctl.pods.wait_synced().await;
    let workers = run_workers(queue, WORKERS, move |key| {
        let ctl = ctl.clone();
        async move { ctl.reconcile(&key).await }
    });
    tokio::join!(changes, workers);
}

/// HPA changes queue their HPA, and every HPA is queued once per sync
/// period (one timer for all, so requeues never pile up).
async fn watch_changes(ctl: Arc<Controller>, queue: WorkQueue) {
    let mut rx = ctl.hpas.subscribe();
    let mut sync = tokio::time::interval(ctl.cfg.sync_period);
    sync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            c = next_change(&mut rx) => match c {
                Some(Change::Applied(h) | Change::Deleted(h)) => queue.add(&key_of(h.as_ref())),
                Some(Change::Resync) => enqueue_all(&queue, &ctl.hpas),
                None => return,
            },
            _ = sync.tick() => enqueue_all(&queue, &ctl.hpas),
        }
    }
}

/// One metric's outcome.
struct Computed {
    proposal: Proposal,
    status: MetricStatus,
    /// How Kubernetes names it in messages.
    name: String,
}

/// Sets condition `type_` (keeping its transition time unless the status flips).
fn set_condition(
    conds: &mut Vec<HorizontalPodAutoscalerCondition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
) {
    let status = if status { "True" } else { "False" };
    let now = Some(Time(Timestamp::now()));
    match conds.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now;
            }
            c.status = status.into();
            c.reason = Some(reason.into());
            c.message = Some(message.into());
        }
        None => conds.push(HorizontalPodAutoscalerCondition {
            type_: type_.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_transition_time: now,
        }),
    }
}

/// The API resource of a scale target, from the resource registry.
fn target_resource(api_version: &str, kind: &str) -> Option<ApiResource> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let info = crate::resources::RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.kind == kind)?;
    Some(ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, kind),
        info.resource,
    ))
}

/// The API's own message for an API error (what kubectl would print),
/// the error itself otherwise.
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

fn quantity_of(resource: &str, milli: i64) -> Quantity {
    if resource == "cpu" {
        Quantity(format!("{milli}m"))
    } else if milli % 1000 == 0 {
        Quantity(format!("{}", milli / 1000))
    } else {
        Quantity(format!("{milli}m"))
    }
}

impl Controller {
    async fn reconcile(&self, key: &str) -> Reconciled {
        let Some(hpa) = self.hpas.get_key(key) else {
            self.history_lock().remove(key);
            return Ok(None);
        };
        if is_deleting(&hpa.metadata) {
            return Ok(None);
        }
        self.sync(key, &hpa).await?;
        Ok(None)
    }

    fn history_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, History>> {
        self.history
            .lock()
            .expect("the HPA history lock is never poisoned")
    }

    async fn event(
        &self,
        hpa: &HorizontalPodAutoscaler,
        warning: bool,
        reason: &str,
        message: &str,
    ) {
        let t = if warning {
            events::WARNING
        } else {
            events::NORMAL
        };
        events::record(
            &self.client,
            &events::object_ref(hpa),
            t,
            reason,
            message,
            COMPONENT,
        )
        .await;
    }

    async fn sync(&self, key: &str, hpa: &HorizontalPodAutoscaler) -> kube::Result<()> {
        let ns = namespace(&hpa.metadata).to_string();
        let Some(spec) = hpa.spec.as_ref() else {
            return Ok(());
        };
        let old = hpa.status.clone().unwrap_or_default();
        let mut status = HorizontalPodAutoscalerStatus {
            conditions: Some(old.conditions.clone().unwrap_or_default()),
            current_metrics: old.current_metrics.clone(),
            current_replicas: old.current_replicas,
            desired_replicas: old.desired_replicas,
            last_scale_time: old.last_scale_time.clone(),
            observed_generation: hpa.metadata.generation,
        };
        let mut conds = status.conditions.take().unwrap_or_default();
        let target = &spec.scale_target_ref;
        let api_version = target
            .api_version
            .clone()
            .unwrap_or_else(|| "apps/v1".into());
        let scale_api = target_resource(&api_version, &target.kind)
            .map(|ar| Api::<DynamicObject>::namespaced_with(self.client.clone(), &ns, &ar));
        let scale = match &scale_api {
            Some(api) => api
                .get_scale(&target.name)
                .await
                .map_err(|e| api_message(&e)),
            None => Err(format!(
                "the server could not find the requested resource ({api_version}, Kind={})",
                target.kind
            )),
        };
        let scale = match scale {
            Ok(s) => s,
            Err(e) => {
                let msg =
                    format!("the HPA controller was unable to get the target's current scale: {e}");
                set_condition(&mut conds, "AbleToScale", false, "FailedGetScale", &msg);
                self.event(hpa, true, "FailedGetScale", &e).await;
                status.conditions = Some(conds);
                return self.write_status(hpa, &old, status).await;
            }
        };
        let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        status.current_replicas = Some(scale.status.as_ref().map_or(current, |s| s.replicas));
        let min = spec.min_replicas.unwrap_or(1);
        let max = spec.max_replicas;
        let mut reason = String::new();
        let desired = if current == 0 && min != 0 {
            set_condition(
                &mut conds,
                "ScalingActive",
                false,
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero",
            );
            0
        } else if current > max {
            reason = "Current number of replicas above Spec.MaxReplicas".into();
            max
        } else if current < min {
            reason = "Current number of replicas below Spec.MinReplicas".into();
            min
        } else {
            let selector = scale
                .status
                .as_ref()
                .and_then(|s| s.selector.clone())
                .unwrap_or_default();
            match self.compute(hpa, &ns, &selector, current).await {
                Err((why, msg)) => {
                    set_condition(
                        &mut conds,
                        "ScalingActive",
                        false,
                        why,
                        &format!("the HPA was unable to compute the replica count: {msg}"),
                    );
                    self.event(hpa, true, why, &msg).await;
                    status.desired_replicas = current;
                    status.conditions = Some(conds);
                    return self.write_status(hpa, &old, status).await;
                }
                Ok(computed) => {
                    // The first metric asking for the most replicas names the reason.
                    let mut best = computed
                        .first()
                        .expect("compute returns at least one metric");
                    for c in &computed[1..] {
                        if c.proposal.replicas > best.proposal.replicas {
                            best = c;
                        }
                    }
                    set_condition(
                        &mut conds,
                        "ScalingActive",
                        true,
                        "ValidMetricFound",
                        &format!(
                            "the HPA was able to successfully calculate a replica count from {}",
                            best.name
                        ),
                    );
                    let behavior = Behavior::from_spec(
                        spec.behavior.as_ref(),
                        self.cfg.downscale_stabilization,
                    );
                    let decision = self
                        .history_lock()
                        .entry(key.to_string())
                        .or_insert_with(|| History::seeded(Instant::now(), old.desired_replicas))
                        .normalize(
                            Instant::now(),
                            &behavior,
                            current,
                            best.proposal.replicas,
                            min,
                            max,
                        );
                    set_condition(
                        &mut conds,
                        "AbleToScale",
                        true,
                        decision.able_reason,
                        decision.able_message,
                    );
                    set_condition(
                        &mut conds,
                        "ScalingLimited",
                        decision.limited,
                        decision.limited_reason,
                        decision.limited_message,
                    );
                    reason = if decision.replicas > current {
                        format!("{} above target", best.name)
                    } else {
                        "All metrics below target".into()
                    };
                    status.current_metrics = Some(computed.into_iter().map(|c| c.status).collect());
                    decision.replicas
                }
            }
        };
        status.desired_replicas = desired;
        if desired != current {
            let api = scale_api.expect("a scale was read through this api");
            let patch = Patch::Merge(json!({"spec": {"replicas": desired}}));
            match api
                .patch_scale(&target.name, &PatchParams::default(), &patch)
                .await
            {
                Ok(_) => {
                    set_condition(
                        &mut conds,
                        "AbleToScale",
                        true,
                        "SucceededRescale",
                        &format!(
                            "the HPA controller was able to update the target scale to {desired}"
                        ),
                    );
                    let behavior = Behavior::from_spec(
                        spec.behavior.as_ref(),
                        self.cfg.downscale_stabilization,
                    );
                    self.history_lock()
                        .entry(key.to_string())
                        .or_default()
                        .record_scale(Instant::now(), &behavior, current, desired);
                    status.last_scale_time = Some(Time(Timestamp::now()));
                    tracing::info!(hpa = %key, from = current, to = desired, %reason, "rescaled");
                    self.event(
                        hpa,
                        false,
                        "SuccessfulRescale",
                        &format!("New size: {desired}; reason: {reason}"),
                    )
                    .await;
                }
                Err(e) => {
                    set_condition(
                        &mut conds,
                        "AbleToScale",
                        false,
                        "FailedUpdateScale",
                        &format!(
                            "the HPA controller was unable to update the target scale: {}",
                            api_message(&e)
                        ),
                    );
                    self.event(
                        hpa,
                        true,
                        "FailedRescale",
                        &format!(
                            "New size: {desired}; reason: {reason}; error: {}",
                            api_message(&e)
                        ),
                    )
                    .await;
                    status.desired_replicas = current;
                }
            }
        }
        status.conditions = Some(conds);
        self.write_status(hpa, &old, status).await
    }

    /// Proposals of every metric; `Err((reason, message))` when none could be computed.
    async fn compute(
        &self,
        hpa: &HorizontalPodAutoscaler,
        ns: &str,
        selector: &str,
        current: i32,
    ) -> Result<Vec<Computed>, (&'static str, String)> {
        let parsed = LabelSelector::parse(selector).map_err(|e| {
            (
                "InvalidSelector",
                format!(
                    "couldn't convert selector into a corresponding internal selector object: {e}"
                ),
            )
        })?;
        if selector.is_empty() || parsed.is_empty() {
            return Err((
                "InvalidSelector",
                "the scale target has no selector: refusing to autoscale every pod of the namespace".into(),
            ));
        }
        let pods = self
            .pods
            .filter_in(ns, |p| parsed.matches_labels(p.metadata.labels.as_ref()));
        let pod_metrics = metrics::pod_metrics(&self.client, ns, selector)
            .await
            .map_err(|e| {
                (
                    "FailedGetResourceMetric",
                    format!(
                        "unable to get metrics from the metrics API: {}",
                        api_message(&e)
                    ),
                )
            })?;
        let default_metrics;
        let specs: &[MetricSpec] = match hpa.spec.as_ref().and_then(|s| s.metrics.as_deref()) {
            Some(m) if !m.is_empty() => m,
            _ => {
                default_metrics = vec![serde_json::from_value::<MetricSpec>(json!({"type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}))
                .expect("the default metric is a valid MetricSpec")];
                &default_metrics
            }
        };
        let now = Timestamp::now();
        let mut out = Vec::new();
        let mut last_err = ("FailedGetResourceMetric", String::from("no metrics"));
        for spec in specs {
            let Some(res) = spec.resource.as_ref().filter(|_| spec.type_ == "Resource") else {
                last_err = (
                    "InvalidMetricSourceType",
                    format!(
                        "metric type {:?} is not supported (keel serves Resource metrics only)",
                        spec.type_
                    ),
                );
                continue;
            };
            let t = &res.target;
            let target = match (
                t.type_.as_str(),
                t.average_utilization,
                t.average_value.as_ref(),
            ) {
                ("Utilization", Some(u), _) => Target::Utilization(u),
                ("AverageValue", _, Some(v)) => match metrics::milli(&v.0) {
                    Some(m) if m > 0 => Target::AverageValueMilli(m),
                    _ => {
                        last_err = (
                            "InvalidMetricSourceType",
                            format!("invalid averageValue {:?}", v.0),
                        );
                        continue;
                    }
                },
                _ => {
                    last_err = (
                        "InvalidMetricSourceType",
                        format!("invalid target {:?} for resource {}", t.type_, res.name),
                    );
                    continue;
                }
            };
            let samples = metrics::samples(&pods, &pod_metrics, &res.name, now, self.cfg.readiness);
            match replicas::replicas(current, &samples, target, &res.name, self.cfg.tolerance) {
                Ok(p) => {
                    let name = match target {
                        Target::Utilization(_) => {
                            format!("{} resource utilization (percentage of request)", res.name)
                        }
                        Target::AverageValueMilli(_) => format!("{} resource", res.name),
                    };
                    let status = MetricStatus {
                        type_: "Resource".into(),
                        resource: Some(ResourceMetricStatus {
                            name: res.name.clone(),
                            current: MetricValueStatus {
                                average_utilization: p.utilization,
                                average_value: Some(quantity_of(&res.name, p.average_milli)),
                                value: None,
                            },
                        }),
                        ..Default::default()
                    };
                    out.push(Computed {
                        proposal: p,
                        status,
                        name,
                    });
                }
                Err(e) => {
                    last_err = (
                        "FailedGetResourceMetric",
                        format!("failed to get {} utilization: {e}", res.name),
                    );
                }
            }
        }
        if out.is_empty() {
            return Err(last_err);
        }
        Ok(out)
    }

    /// Writes `status` unless it equals what is stored.
    async fn write_status(
        &self,
        hpa: &HorizontalPodAutoscaler,
        old: &HorizontalPodAutoscalerStatus,
        status: HorizontalPodAutoscalerStatus,
    ) -> kube::Result<()> {
        if &status == old {
            return Ok(());
        }
        let api: Api<HorizontalPodAutoscaler> =
            Api::namespaced(self.client.clone(), namespace(&hpa.metadata));
        let patch = Patch::Merge(json!({"status": status}));
        api.patch_status(name(&hpa.metadata), &PatchParams::default(), &patch)
            .await?;
        Ok(())
    }
}
