//! The CronJob controller (Kubernetes' `pkg/controller/cronjob`): starts a
//! Job from `spec.jobTemplate` at each time of `spec.schedule` (in
//! `spec.timeZone`, UTC when unset), keeps `status.active` in step with the
//! Jobs it owns, and deletes the oldest finished Jobs beyond
//! `successfulJobsHistoryLimit` / `failedJobsHistoryLimit`.
//!
//! Each reconcile asks one question of the clock: is a scheduled time due
//! that has not run? Only the most recent missed time runs (an outage
//! does not start a burst of Jobs), none when it is older than
//! `startingDeadlineSeconds`, and more than 100 missed times earn a
//! `TooManyMissedTimes` event. The Job's name is derived from the
//! scheduled time (`<cronjob>-<minutes since the epoch>`), so a retried
//! create after a crash finds the Job instead of starting a second one.
//! `concurrencyPolicy`: `Allow` starts regardless, `Forbid` skips a time
//! while a Job is active, `Replace` deletes the active Jobs first.
//!
//! The clock is injected ([`Clock`]) so tests can move time without
//! waiting; the manager runs it on the system clock.

mod schedule;

use std::sync::Arc;
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use keel_apimachinery::cron::{self, Schedule};
use kube::api::{Api, DeleteParams, PostParams, Preconditions, PropagationPolicy};

use crate::cache::{key_of, next_change, Caches, Change, Informer};
use crate::client::is_status;
use crate::events;
use crate::reconcile::{
    controller_key, controller_ref, created_s, enqueue_all, is_deleting, name, namespace,
    owner_ref, run_workers, uid, Reconciled, WorkQueue, RESYNC,
};

pub use schedule::{due, job_name, next_in, Due, TOO_MANY_MISSED};

const COMPONENT: &str = "cronjob-controller";
const WORKERS: usize = 2;
/// The annotation naming the time a Job was scheduled for.
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// The controller's notion of now.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(Timestamp::now)
}

struct Controller {
    client: kube::Client,
    cronjobs: Informer<CronJob>,
    jobs: Informer<Job>,
    clock: Clock,
}

/// Runs the CronJob controller on the system clock until dropped.
pub async fn run(client: kube::Client, caches: Caches) {
    run_with_clock(client, caches, system_clock()).await
}

/// Runs the CronJob controller reading time from `clock`.
pub async fn run_with_clock(client: kube::Client, caches: Caches, clock: Clock) {
    let ctl = Arc::new(Controller {
        cronjobs: caches.get::<CronJob>(),
        jobs: caches.get::<Job>(),
        client,
        clock,
    });
    let queue = WorkQueue::new();
    let changes = watch_changes(ctl.clone(), queue.clone());
    ctl.cronjobs.wait_synced().await;
    ctl.jobs.wait_synced().await;
    let workers = run_workers(queue, WORKERS, move |key| {
        let ctl = ctl.clone();
        async move { ctl.reconcile(&key).await }
    });
    tokio::join!(changes, workers);
}

/// Maps CronJob and Job changes to the CronJobs to reconcile.
async fn watch_changes(ctl: Arc<Controller>, queue: WorkQueue) {
    let mut cj_rx = ctl.cronjobs.subscribe();
    let mut job_rx = ctl.jobs.subscribe();
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            c = next_change(&mut cj_rx) => match c {
                Some(Change::Applied(cj) | Change::Deleted(cj)) => queue.add(&key_of(cj.as_ref())),
                Some(Change::Resync) => enqueue_all(&queue, &ctl.cronjobs),
                None => return,
            },
            c = next_change(&mut job_rx) => match c {
                Some(Change::Applied(j) | Change::Deleted(j)) => {
                    if let Some(key) = controller_key(&j.metadata, "CronJob") {
                        queue.add(&key);
                    }
                }
                Some(Change::Resync) => enqueue_all(&queue, &ctl.cronjobs),
                None => return,
            },
            _ = resync.tick() => enqueue_all(&queue, &ctl.cronjobs),
        }
    }
}

/// The Job's final condition type (`Complete` / `Failed`), if finished.
fn finished(job: &Job) -> Option<&str> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| c.type_.as_str())
}

fn in_active(st: &CronJobStatus, job_uid: &str) -> bool {
    st.active
        .iter()
        .flatten()
        .any(|r| r.uid.as_deref() == Some(job_uid))
}

fn remove_active(st: &mut CronJobStatus, job_uid: &str) {
    if let Some(a) = st.active.as_mut() {
        a.retain(|r| r.uid.as_deref() != Some(job_uid));
    }
}

fn job_ref(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        field_path: None,
    }
}

impl Controller {
    async fn reconcile(&self, key: &str) -> Reconciled<kube::Error> {
        let Some(cj) = self.cronjobs.get_key(key) else {
            return Ok(None);
        };
        let now = (self.clock)();
        let cj_uid = uid(&cj.metadata).to_string();
        let jobs: Vec<Arc<Job>> = self.jobs.filter_in(namespace(&cj.metadata), |j| {
            controller_ref(&j.metadata).is_some_and(|r| r.uid == cj_uid)
        });
        let mut st = cj.status.clone().unwrap_or_default();
        self.track_active(&cj, &jobs, &mut st).await?;
        let recheck = match is_deleting(&cj.metadata) {
            true => None,
            false => self.schedule(&cj, &mut st, now).await?,
        };
        self.clean_history(&cj, &jobs).await;
        if st != cj.status.clone().unwrap_or_default() {
            let api: Api<CronJob> = Api::namespaced(self.client.clone(), namespace(&cj.metadata));
            let mut updated = (*cj).clone();
            updated.status = Some(st);
            api.replace_status(name(&cj.metadata), &PostParams::default(), &updated)
                .await?;
        }
        Ok(recheck.map(|d| d.min(RESYNC)))
    }

    /// Brings `status.active` and `lastSuccessfulTime` in line with the
    /// Jobs (Kubernetes' first half of `syncCronJob`).
    async fn track_active(
        &self,
        cj: &CronJob,
        jobs: &[Arc<Job>],
        st: &mut CronJobStatus,
    ) -> kube::Result<()> {
        for j in jobs {
            let j_uid = uid(&j.metadata);
            let found = in_active(st, j_uid);
            match finished(j) {
                None if !found => {
                    let msg = format!(
                        "Saw a job that the controller did not create or forgot: {}",
                        name(&j.metadata)
                    );
                    self.event(cj, events::WARNING, "UnexpectedJob", msg);
                }
                None => {}
                Some(kind) => {
                    if found {
                        remove_active(st, j_uid);
                        let msg = format!(
                            "Saw completed job: {}, condition: {kind}",
                            name(&j.metadata)
                        );
                        self.event(cj, events::NORMAL, "SawCompletedJob", msg);
                    }
                    let done = j.status.as_ref().and_then(|s| s.completion_time.clone());
                    if let (Some(t), "Complete") = (done, kind) {
                        if st.last_successful_time.as_ref().is_none_or(|l| l.0 < t.0) {
                            st.last_successful_time = Some(t);
                        }
                    }
                }
            }
        }
        let known: Vec<&str> = jobs.iter().map(|j| uid(&j.metadata)).collect();
        let missing: Vec<ObjectReference> = st
            .active
            .iter()
            .flatten()
            .filter(|r| !known.contains(&r.uid.as_deref().unwrap_or_default()))
            .cloned()
            .collect();
        for r in missing {
            // The cache may lag a Job just created: ask the API.
            let api: Api<Job> = Api::namespaced(self.client.clone(), namespace(&cj.metadata));
            let job_name = r.name.clone().unwrap_or_default();
            let exists = api.get_opt(&job_name).await?;
            if exists.is_none_or(|j| j.metadata.uid != r.uid) {
                remove_active(st, r.uid.as_deref().unwrap_or_default());
                self.event(
                    cj,
                    events::NORMAL,
                    "MissingJob",
                    format!("Active job went missing: {job_name}"),
                );
            }
        }
        if st.active.as_ref().is_some_and(Vec::is_empty) {
            st.active = None;
        }
        Ok(())
    }

    /// Starts the Job that is due, if any; when to look again.
    async fn schedule(
        &self,
        cj: &CronJob,
        st: &mut CronJobStatus,
        now: Timestamp,
    ) -> kube::Result<Option<Duration>> {
        let spec = cj.spec.clone().unwrap_or_default();
        let tz = match spec.time_zone.as_deref().map(cron::time_zone) {
            None => TimeZone::UTC,
            Some(Ok(tz)) => tz,
            Some(Err(msg)) => {
                self.event(cj, events::WARNING, "UnknownTimeZone", msg);
                return Ok(None);
            }
        };
        if spec.suspend == Some(true) {
            return Ok(None);
        }
        let sched = match Schedule::parse(&spec.schedule) {
            Ok(s) => s,
            Err(msg) => {
                let msg = format!("unparseable schedule: {:?} : {msg}", spec.schedule);
                self.event(cj, events::WARNING, "UnparseableSchedule", msg);
                return Ok(None);
            }
        };
        let mut view = cj.clone();
        view.status = Some(st.clone());
        let d = due(&view, &sched, &tz, now);
        if d.missed > TOO_MANY_MISSED {
            let msg = "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew";
            self.event(cj, events::WARNING, "TooManyMissedTimes", msg.into());
        }
        let next = next_in(&view, &sched, &tz, now);
        let Some(t) = d.time else {
            return Ok(next);
        };
        let too_late = spec
            .starting_deadline_seconds
            .is_some_and(|s| t.as_second() + s < now.as_second());
        if too_late {
            let msg = format!("Missed scheduled time to start a job: {t}");
            self.event(cj, events::WARNING, "MissSchedule", msg);
            return Ok(next);
        }
        let job_name = job_name(name(&cj.metadata), t);
        let already = st
            .active
            .iter()
            .flatten()
            .any(|r| r.name.as_deref() == Some(&job_name))
            || st.last_schedule_time.as_ref().is_some_and(|l| l.0 == t);
        if already {
            return Ok(next);
        }
        let active = st.active.clone().unwrap_or_default();
        match spec.concurrency_policy.as_deref() {
            Some("Forbid") if !active.is_empty() => {
                let msg = "Not starting job because prior execution is running and concurrency policy is Forbid";
                self.event(cj, events::NORMAL, "JobAlreadyActive", msg.into());
                return Ok(next);
            }
            Some("Replace") => {
                for r in &active {
                    self.delete_job(cj, r.name.as_deref().unwrap_or_default(), r.uid.clone())
                        .await?;
                    remove_active(st, r.uid.as_deref().unwrap_or_default());
                }
            }
            _ => {}
        }
        let Some(job) = self.create_job(cj, &job_name, t, &tz).await? else {
            return Ok(next);
        };
        st.active.get_or_insert_with(Vec::new).push(job_ref(&job));
        st.last_schedule_time = Some(Time(t));
        view.status = Some(st.clone());
        Ok(next_in(&view, &sched, &tz, now))
    }

    /// Creates the Job for scheduled time `t`; `None` when a Job of that
    /// name exists that this CronJob does not control, or already tracks.
    async fn create_job(
        &self,
        cj: &CronJob,
        job_name: &str,
        t: Timestamp,
        tz: &TimeZone,
    ) -> kube::Result<Option<Job>> {
        let template = cj.spec.as_ref().map(|s| &s.job_template);
        let tm = template.and_then(|t| t.metadata.as_ref());
        let mut annotations = tm.and_then(|m| m.annotations.clone()).unwrap_or_default();
        annotations.insert(SCHEDULED_TIMESTAMP.into(), schedule::rfc3339_in(t, tz));
        let job = Job {
            metadata: ObjectMeta {
                name: Some(job_name.to_string()),
                namespace: Some(namespace(&cj.metadata).to_string()),
                labels: tm.and_then(|m| m.labels.clone()),
                annotations: Some(annotations),
                owner_references: Some(vec![owner_ref(cj)]),
                ..ObjectMeta::default()
            },
            spec: template.and_then(|t| t.spec.clone()),
            status: None,
        };
        let api: Api<Job> = Api::namespaced(self.client.clone(), namespace(&cj.metadata));
        match api.create(&PostParams::default(), &job).await {
            Ok(created) => {
                self.event(
                    cj,
                    events::NORMAL,
                    "SuccessfulCreate",
                    format!("Created job {job_name}"),
                );
                Ok(Some(created))
            }
            Err(e) if is_status(&e, 409) => {
                let Some(existing) = api.get_opt(job_name).await? else {
                    return Ok(None);
                };
                let ours = controller_ref(&existing.metadata)
                    .is_some_and(|r| Some(&r.uid) == cj.metadata.uid.as_ref());
                let tracked = cj
                    .status
                    .as_ref()
                    .is_some_and(|s| in_active(s, uid(&existing.metadata)));
                Ok((ours && !tracked).then_some(existing))
            }
            Err(e) => {
                self.event(
                    cj,
                    events::WARNING,
                    "FailedCreate",
                    format!("Error creating job: {e}"),
                );
                Err(e)
            }
        }
    }

    /// Deletes a Job and, in the background, its pods.
    async fn delete_job(
        &self,
        cj: &CronJob,
        job_name: &str,
        job_uid: Option<String>,
    ) -> kube::Result<()> {
        let api: Api<Job> = Api::namespaced(self.client.clone(), namespace(&cj.metadata));
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            preconditions: Some(Preconditions {
                uid: job_uid,
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(job_name, &params).await {
            Ok(_) => {
                self.event(
                    cj,
                    events::NORMAL,
                    "SuccessfulDelete",
                    format!("Deleted job {job_name}"),
                );
                Ok(())
            }
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes the oldest finished Jobs beyond the history limits (best
    /// effort: a failure is retried on the next reconcile).
    async fn clean_history(&self, cj: &CronJob, jobs: &[Arc<Job>]) {
        let spec = cj.spec.as_ref();
        let limits = [
            (
                "Complete",
                spec.and_then(|s| s.successful_jobs_history_limit),
            ),
            ("Failed", spec.and_then(|s| s.failed_jobs_history_limit)),
        ];
        for (kind, limit) in limits {
            let Some(limit) = limit.and_then(|l| usize::try_from(l).ok()) else {
                continue;
            };
            let mut done: Vec<&Job> = jobs
                .iter()
                .map(Arc::as_ref)
                .filter(|j| finished(j) == Some(kind) && !is_deleting(&j.metadata))
                .collect();
            if done.len() <= limit {
                continue;
            }
            done.sort_by_key(|j| {
                let start = j.status.as_ref().and_then(|s| s.start_time.as_ref());
                (
                    start.map(|t| t.0.as_second()).or(created_s(&j.metadata)),
                    name(&j.metadata).to_string(),
                )
            });
            let excess = done.len() - limit;
            for j in &done[..excess] {
                if let Err(e) = self
                    .delete_job(cj, name(&j.metadata), j.metadata.uid.clone())
                    .await
                {
                    tracing::debug!(error = %e, "deleting an old job failed");
                }
            }
        }
    }

    /// Records an Event about `cj` in the background (best effort).
    fn event(&self, cj: &CronJob, kind: &'static str, reason: &'static str, message: String) {
        let (client, involved) = (self.client.clone(), events::object_ref(cj));
        tokio::spawn(async move {
            events::record(&client, &involved, kind, reason, &message, COMPONENT).await;
        });
    }
}
