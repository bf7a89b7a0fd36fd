//! The Job controller (Kubernetes' `pkg/controller/job`): runs pods from a
//! Job's template until `completions` of them succeeded (or, without
//! `completions`, until one succeeded and the rest finished: a work
//! queue), at most `parallelism` at a time, and fails the Job when its
//! failures exceed `backoffLimit`, when it runs past
//! `activeDeadlineSeconds`, or when a `podFailurePolicy` rule says so.
//! Indexed Jobs run each index in `0..completions` once to success.
//! Suspending deletes the running pods; a finished Job with
//! `ttlSecondsAfterFinished` is deleted (background propagation) that long
//! after it finished.
//!
//! Why the finalizer: a pod must be counted exactly once in
//! `status.succeeded` / `status.failed` even if it is deleted right after
//! it finished, or if the controller restarts halfway. As in Kubernetes,
//! every pod carries `batch.kubernetes.io/job-tracking`; a finished pod
//! is first recorded by uid in `status.uncountedTerminatedPods` (a
//! status write pinned to the Job's resourceVersion), then its finalizer
//! is removed, then it is moved from the uncounted lists into the counts.
//! A crash between any two steps resumes from what the API says. Until
//! the pod cache shows a removal, the pod is remembered as released so a
//! stale cache cannot count it again.
//!
//! `restartPolicy: OnFailure`: a failing container restarts in place and
//! the pod never fails, so, as Kubernetes does, the container restarts
//! of the active pods count toward `backoffLimit` too. A failed pod is
//! replaced after a back-off of 10 s doubling per failure (at most 6 min),
//! measured from the finish time of the latest failed pod when its
//! containers report one.

mod failure_policy;
mod indexed;
mod pods;
mod status;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::join_all;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{Job, JobSpec, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{
    Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions, PropagationPolicy,
};
use serde_json::{json, Value};

use crate::cache::{key_of, next_change, Caches, Change, Informer};
use crate::client::is_status;
use crate::events;
use crate::meta;
use crate::reconcile::{
    claim, controller_key, controller_ref, enqueue_all, is_deleting, name, namespace, pod_is_ready,
    run_workers, selector_of, uid, Expectations, Reconciled, WorkQueue, RESYNC,
};

pub use indexed::COMPLETION_INDEX;
pub use pods::TRACKING_FINALIZER;

use failure_policy::Verdict;

const COMPONENT: &str = "job-controller";
/// At most this many pod creations or deletions per sync.
const BURST: usize = 500;
const WORKERS: usize = 4;
const BACKOFF_BASE_S: i64 = 10;
const BACKOFF_MAX_S: i64 = 360;
/// Wakes a little after a deadline, so the deadline has surely passed.
const SLACK: Duration = Duration::from_millis(100);

struct Controller {
    client: kube::Client,
    jobs: Informer<Job>,
    pods: Informer<Pod>,
    expectations: Expectations,
    /// Uids of pods whose tracking finalizer was removed here and whose
    /// cached copy may still show it.
    released: Mutex<HashSet<String>>,
}

/// Runs the Job controller until the future is dropped, reading through
/// the shared `caches` and writing through `client`.
pub async fn run(client: kube::Client, caches: Caches) {
    let ctl = Arc::new(Controller {
        jobs: caches.get::<Job>(),
        pods: caches.get::<Pod>(),
        client,
        expectations: Expectations::default(),
        released: Mutex::default(),
    });
    let queue = WorkQueue::new();
    let orphans = WorkQueue::new();
    let changes = watch_changes(ctl.clone(), queue.clone(), orphans.clone());
    ctl.jobs.wait_synced().await;
    ctl.pods.wait_synced().await;
    let c = ctl.clone();
    let workers = run_workers(queue, WORKERS, move |key| {
        let ctl = c.clone();
        async move { ctl.reconcile(&key).await }
    });
    let orphan_workers = run_workers(orphans, 1, move |key| {
        let ctl = ctl.clone();
        async move { ctl.release_orphan(&key).await }
    });
    tokio::join!(changes, workers, orphan_workers);
}

/// Maps Job and pod changes to the Jobs to reconcile, and pods whose Job
/// is gone to the orphan queue.
async fn watch_changes(ctl: Arc<Controller>, queue: WorkQueue, orphans: WorkQueue) {
    let mut job_rx = ctl.jobs.subscribe();
    let mut pod_rx = ctl.pods.subscribe();
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            c = next_change(&mut job_rx) => match c {
                Some(Change::Applied(j) | Change::Deleted(j)) => queue.add(&key_of(j.as_ref())),
                Some(Change::Resync) => enqueue_all(&queue, &ctl.jobs),
                None => return,
            },
            c = next_change(&mut pod_rx) => match c {
                Some(Change::Applied(p)) => ctl.pod_changed(&queue, &orphans, &p, false),
                Some(Change::Deleted(p)) => ctl.pod_changed(&queue, &orphans, &p, true),
                Some(Change::Resync) => enqueue_all(&queue, &ctl.jobs),
                None => return,
            },
            _ = resync.tick() => {
                enqueue_all(&queue, &ctl.jobs);
                for p in ctl.pods.filter(pods::is_tracked) {
                    ctl.check_orphan(&orphans, &p);
                }
            }
        }
    }
}

fn job_selector(job: &Job) -> Option<crate::selector::LabelSelector> {
    job.spec.as_ref()?.selector.as_ref().and_then(selector_of)
}

impl Controller {
    fn released(&self) -> MutexGuard<'_, HashSet<String>> {
        self.released
            .lock()
            .expect("the released-pods lock is never poisoned")
    }

    /// A pod changed: its Job must look, or, for an orphan, every Job
    /// that could adopt it.
    fn pod_changed(&self, queue: &WorkQueue, orphans: &WorkQueue, pod: &Pod, deleted: bool) {
        let m = &pod.metadata;
        if deleted || !pods::is_tracked(pod) {
            self.released().remove(uid(m));
        }
        let gone = deleted || is_deleting(m);
        if let Some(key) = controller_key(m, "Job") {
            self.expectations.observe(&key, name(m), gone);
            if !deleted {
                self.check_orphan(orphans, pod);
            }
            queue.add(&key);
            return;
        }
        // No Job controls it (orphaned with --cascade=orphan, or released
        // by a selector change): nothing will count it, so the tracking
        // finalizer must go, or the pod could never be deleted.
        if !deleted && pods::is_tracked(pod) {
            orphans.add(&key_of(pod));
        }
        if gone || controller_ref(m).is_some() {
            return;
        }
        let adopters = self.jobs.filter_in(namespace(m), |j| {
            !status::is_finished(j)
                && job_selector(j).is_some_and(|s| s.matches_labels(m.labels.as_ref()))
        });
        for j in adopters {
            queue.add(&key_of(j.as_ref()));
        }
    }

    /// Queues a tracked pod whose controlling Job is not in the cache.
    fn check_orphan(&self, orphans: &WorkQueue, pod: &Pod) {
        let Some(r) = controller_ref(&pod.metadata).filter(|r| r.kind == "Job") else {
            return;
        };
        let cached = self.jobs.get(pod.metadata.namespace.as_deref(), &r.name);
        if pods::is_tracked(pod) && cached.is_none_or(|j| uid(&j.metadata) != r.uid) {
            orphans.add(&key_of(pod));
        }
    }

    /// Removes the tracking finalizer of a pod no Job controls: its Job is
    /// gone (asked of the API, not the cache) or it has no Job controller
    /// at all, so it can be deleted.
    async fn release_orphan(&self, key: &str) -> Reconciled<kube::Error> {
        let Some(pod) = self.pods.get_key(key) else {
            return Ok(None);
        };
        if !pods::is_tracked(&pod) {
            return Ok(None);
        }
        if let Some(r) = controller_ref(&pod.metadata).filter(|r| r.kind == "Job") {
            let jobs: Api<Job> = Api::namespaced(self.client.clone(), namespace(&pod.metadata));
            if let Some(j) = jobs.get_opt(&r.name).await? {
                if uid(&j.metadata) == r.uid {
                    return Ok(None);
                }
            }
        }
        self.release(&pod).await.map(|_| None)
    }

    async fn reconcile(&self, key: &str) -> Reconciled<kube::Error> {
        let Some(job) = self.jobs.get_key(key) else {
            self.expectations.forget(key);
            return Ok(None);
        };
        let Some(selector) = job_selector(&job) else {
            return Ok(None);
        };
        let candidates = self.pods.filter_in(namespace(&job.metadata), |_| true);
        let owned = claim(&self.client, job.as_ref(), &selector, candidates).await?;
        if status::is_finished(&job) || is_deleting(&job.metadata) {
            for p in owned.iter().filter(|p| pods::is_tracked(p)) {
                self.release(p).await?;
            }
            return self.expire(&job).await;
        }
        let owned: Vec<&Pod> = owned.iter().map(Arc::as_ref).collect();
        self.sync(key, &job, &owned).await
    }

    /// One step of a running Job: count what finished, decide whether the
    /// Job is done, start or stop pods, write the status.
    async fn sync(&self, key: &str, job: &Job, owned: &[&Pod]) -> Reconciled<kube::Error> {
        let now = Timestamp::now();
        let spec = job.spec.clone().unwrap_or_default();
        let tally = self.count(job, &spec, owned).await?;
        let mut st = tally.status.clone();
        let active: Vec<&Pod> = owned
            .iter()
            .copied()
            .filter(|p| pods::is_active(p))
            .collect();
        let suspended = spec.suspend == Some(true);
        let mut recheck: Option<Duration> = None;
        let mut active_after = active.len();
        match self.outcome(&spec, &tally, &active, suspended, now) {
            Some(finish) => {
                self.delete_pods(key, job, &active).await?;
                active_after = 0;
                self.finish(job, &mut st, &finish, now);
            }
            None if suspended => {
                self.delete_pods(key, job, &active).await?;
                active_after = 0;
                if !status::is_suspended(job.status.as_ref()) {
                    status::set_condition(
                        &mut st,
                        status::SUSPENDED,
                        "True",
                        "JobSuspended",
                        "Job suspended",
                        now,
                    );
                    self.event(job, events::NORMAL, "Suspended", "Job suspended".into());
                }
            }
            None => {
                if status::is_suspended(job.status.as_ref()) {
                    status::set_condition(
                        &mut st,
                        status::SUSPENDED,
                        "False",
                        "JobResumed",
                        "Job resumed",
                        now,
                    );
                    st.start_time = Some(Time(now));
                    self.event(job, events::NORMAL, "Resumed", "Job resumed".into());
                }
                let start = st.start_time.get_or_insert(Time(now)).0;
                recheck = deadline_in(&spec, start, now);
                if self.expectations.satisfied(key) {
                    let (n, wait) = self
                        .manage(key, job, &spec, &tally, &active, owned, now)
                        .await?;
                    active_after = n;
                    recheck = min_some(recheck, wait);
                }
            }
        }
        st.active = Some(count_i32(active_after));
        st.ready = Some(count_i32(
            active
                .iter()
                .filter(|p| pod_is_ready(p))
                .count()
                .min(active_after),
        ));
        if status::differs(tally.job.status.as_ref(), &st) {
            self.put_status(&tally.job, st).await?;
        }
        Ok(recheck.map(|d| d + SLACK))
    }

    /// Counts the pods that finished since the last sync, through the
    /// uncounted lists and the finalizers (see the module documentation).
    async fn count(&self, job: &Job, spec: &JobSpec, owned: &[&Pod]) -> kube::Result<Tally> {
        let indexed = spec.completion_mode.as_deref() == Some("Indexed");
        let completions = spec.completions.unwrap_or(0);
        let mut st = job.status.clone().unwrap_or_default();
        let unc = st.uncounted_terminated_pods.clone().unwrap_or_default();
        let mut unc_s: BTreeSet<String> = unc.succeeded.into_iter().flatten().collect();
        let mut unc_f: BTreeSet<String> = unc.failed.into_iter().flatten().collect();
        let mut completed =
            indexed::parse(st.completed_indexes.as_deref().unwrap_or(""), completions);
        let policy = spec.pod_failure_policy.as_ref();
        let released = self.released().clone();
        let mut fail_job = None;
        let mut ignored: Vec<&Pod> = Vec::new();
        let mut newly = false;
        for p in owned.iter().copied().filter(|p| pods::is_tracked(p)) {
            let u = uid(&p.metadata).to_string();
            if released.contains(&u) {
                continue;
            }
            if unc_f.contains(&u) {
                // Judged before a restart: a FailJob verdict must not be lost.
                if let Verdict::FailJob(msg) = failure_policy::judge(policy, p) {
                    fail_job.get_or_insert(msg);
                }
                continue;
            }
            if unc_s.contains(&u) {
                continue;
            }
            if pods::is_succeeded(p) {
                if indexed {
                    completed.extend(indexed::pod_index(p, completions));
                }
                unc_s.insert(u);
                newly = true;
            } else if pods::is_failed(p) {
                match failure_policy::judge(policy, p) {
                    Verdict::Ignore => ignored.push(p),
                    Verdict::FailJob(msg) => {
                        fail_job.get_or_insert(msg);
                        unc_f.insert(u);
                        newly = true;
                    }
                    Verdict::Count => {
                        unc_f.insert(u);
                        newly = true;
                    }
                }
            }
        }
        let mut current = job.clone();
        if indexed {
            st.completed_indexes = Some(indexed::format(&completed));
        }
        if newly {
            st.uncounted_terminated_pods = Some(UncountedTerminatedPods {
                succeeded: Some(unc_s.iter().cloned().collect()),
                failed: Some(unc_f.iter().cloned().collect()),
            });
            current = self.put_status(job, st.clone()).await?;
        }
        let finished = owned.iter().copied().filter(|p| {
            let u = uid(&p.metadata);
            pods::is_tracked(p) && !released.contains(u) && (unc_s.contains(u) || unc_f.contains(u))
        });
        for p in finished.chain(ignored.iter().copied()) {
            self.release(p).await?;
        }
        let succeeded = match indexed {
            true => count_i32(completed.len()),
            false => st.succeeded.unwrap_or(0) + count_i32(unc_s.len()),
        };
        st.succeeded = Some(succeeded);
        st.failed = Some(st.failed.unwrap_or(0) + count_i32(unc_f.len()));
        st.uncounted_terminated_pods = Some(UncountedTerminatedPods::default());
        Ok(Tally {
            job: current,
            status: st,
            completed,
            fail_job,
        })
    }

    /// Whether the Job is finished now, and how.
    fn outcome(
        &self,
        spec: &JobSpec,
        tally: &Tally,
        active: &[&Pod],
        suspended: bool,
        now: Timestamp,
    ) -> Option<Finish> {
        if let Some(msg) = &tally.fail_job {
            return Some(Finish::failed("PodFailurePolicy", msg));
        }
        let on_failure = spec
            .template
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            == Some("OnFailure");
        let restarts: i64 = match on_failure {
            true => active.iter().map(|p| pods::restarts(p)).sum(),
            false => 0,
        };
        let failed = i64::from(tally.status.failed.unwrap_or(0));
        if failed + restarts > i64::from(spec.backoff_limit.unwrap_or(6)) {
            return Some(Finish::failed(
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ));
        }
        let start = tally.status.start_time.as_ref().map(|t| t.0);
        if !suspended && start.is_some_and(|s| deadline_in(spec, s, now) == Some(Duration::ZERO)) {
            return Some(Finish::failed(
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            ));
        }
        let succeeded = tally.status.succeeded.unwrap_or(0);
        let complete = match (spec.completion_mode.as_deref(), spec.completions) {
            (Some("Indexed"), Some(c)) => count_i32(tally.completed.len()) >= c,
            (_, Some(c)) => succeeded >= c,
            (_, None) => succeeded > 0 && active.is_empty(),
        };
        complete.then(|| Finish {
            failed: false,
            reason: "CompletionsReached",
            message: "Reached expected number of succeeded pods".into(),
        })
    }

    /// Sets the final conditions (and completionTime on success).
    fn finish(&self, job: &Job, st: &mut JobStatus, f: &Finish, now: Timestamp) {
        let (target, last) = match f.failed {
            true => (status::FAILURE_TARGET, status::FAILED),
            false => (status::SUCCESS_CRITERIA_MET, status::COMPLETE),
        };
        status::set_condition(st, target, "True", f.reason, &f.message, now);
        status::set_condition(st, last, "True", f.reason, &f.message, now);
        if f.failed {
            self.event(job, events::WARNING, f.reason, f.message.clone());
        } else {
            st.completion_time = Some(Time(now));
            self.event(job, events::NORMAL, "Completed", "Job completed".into());
        }
    }

    /// Starts or stops pods toward the wanted number; the active count
    /// afterwards and when to look again (a back-off after failures).
    #[allow(clippy::too_many_arguments)]
    async fn manage(
        &self,
        key: &str,
        job: &Job,
        spec: &JobSpec,
        tally: &Tally,
        active: &[&Pod],
        owned: &[&Pod],
        now: Timestamp,
    ) -> kube::Result<(usize, Option<Duration>)> {
        let parallelism = usize::try_from(spec.parallelism.unwrap_or(1)).unwrap_or(0);
        let succeeded = tally.status.succeeded.unwrap_or(0);
        let (surplus, starts): (Vec<&Pod>, Vec<Option<i32>>) =
            if spec.completion_mode.as_deref() == Some("Indexed") {
                indexed_plan(spec, &tally.completed, active, parallelism)
            } else {
                let want = match spec.completions {
                    Some(c) => parallelism.min(usize::try_from(c - succeeded).unwrap_or(0)),
                    // A work queue after a success: leave what runs running.
                    None if succeeded > 0 => active.len().min(parallelism),
                    None => parallelism,
                };
                let mut ranked = active.to_vec();
                ranked.sort_by_cached_key(|p| pods::deletion_rank(p));
                let extra = ranked.len().saturating_sub(want);
                ranked.truncate(extra);
                // At most one sync's worth: `parallelism` may be 2^31.
                (
                    ranked,
                    vec![None; want.saturating_sub(active.len()).min(BURST)],
                )
            };
        let surplus: Vec<&Pod> = surplus.into_iter().take(BURST).collect();
        self.delete_pods(key, job, &surplus).await?;
        let mut n = active.len() - surplus.len();
        if starts.is_empty() {
            return Ok((n, None));
        }
        if let Some(wait) = backoff_in(tally.status.failed.unwrap_or(0), owned, now) {
            return Ok((n, Some(wait)));
        }
        let starts: Vec<Option<i32>> = starts.into_iter().take(BURST).collect();
        n += self.create_pods(key, job, &starts).await?;
        Ok((n, None))
    }

    /// Creates one pod per entry (its index in Indexed mode) in batches of
    /// 1, 2, 4, ... (Kubernetes' slow start); how many were created.
    async fn create_pods(
        &self,
        key: &str,
        job: &Job,
        starts: &[Option<i32>],
    ) -> kube::Result<usize> {
        let mut done = 0;
        let mut batch = 1;
        while done < starts.len() {
            let chunk = &starts[done..(done + batch).min(starts.len())];
            let results = join_all(chunk.iter().map(|i| self.create_pod(key, job, *i))).await;
            results.into_iter().collect::<kube::Result<Vec<()>>>()?;
            done += chunk.len();
            batch *= 2;
        }
        Ok(done)
    }

    async fn create_pod(&self, key: &str, job: &Job, index: Option<i32>) -> kube::Result<()> {
        let pod_name = meta::generated_name(&pods::name_prefix(job, index));
        let pod = pods::from_template(job, &pod_name, index);
        self.expectations.expect_create(key, &pod_name);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace(&job.metadata));
        if let Err(e) = api.create(&PostParams::default(), &pod).await {
            self.expectations.observe(key, &pod_name, true);
            self.event(
                job,
                events::WARNING,
                "FailedCreate",
                format!("Error creating: {e}"),
            );
            return Err(e);
        }
        self.event(
            job,
            events::NORMAL,
            "SuccessfulCreate",
            format!("Created pod: {pod_name}"),
        );
        Ok(())
    }

    /// Deletes `victims` after releasing their finalizer (a pod the Job
    /// stops itself is not a failure to count), each pinned to its uid.
    async fn delete_pods(&self, key: &str, job: &Job, victims: &[&Pod]) -> kube::Result<()> {
        for p in victims {
            self.release(p).await?;
        }
        let deletes = victims.iter().map(|p| async move {
            let pod_name = name(&p.metadata).to_string();
            self.expectations.expect_delete(key, &pod_name);
            let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace(&p.metadata));
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: p.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&pod_name, &params).await {
                Ok(_) => {
                    self.event(
                        job,
                        events::NORMAL,
                        "SuccessfulDelete",
                        format!("Deleted pod: {pod_name}"),
                    );
                    Ok(())
                }
                Err(e) => {
                    self.expectations.observe(key, &pod_name, true);
                    if is_status(&e, 404) {
                        Ok(())
                    } else {
                        Err(e)
                    }
                }
            }
        });
        join_all(deletes).await.into_iter().collect()
    }

    /// Removes the tracking finalizer from `pod` (pinned to the version
    /// read, so a concurrent change makes it 409 and it is redone).
    async fn release(&self, pod: &Pod) -> kube::Result<()> {
        let m = &pod.metadata;
        if !pods::is_tracked(pod) || self.released().contains(uid(m)) {
            return Ok(());
        }
        let rest: Vec<&String> = m
            .finalizers
            .iter()
            .flatten()
            .filter(|f| *f != TRACKING_FINALIZER)
            .collect();
        let patch = json!({"metadata": {
            "finalizers": if rest.is_empty() { Value::Null } else { json!(rest) },
            "resourceVersion": m.resource_version,
            "uid": m.uid,
        }});
        self.released().insert(uid(m).to_string());
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace(m));
        match api
            .patch(name(m), &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => {
                self.released().remove(uid(m));
                Err(e)
            }
        }
    }

    /// Writes `st` as the status of `job` (as cached: a stale copy gets
    /// 409 and the sync is redone); the Job as written.
    async fn put_status(&self, job: &Job, st: JobStatus) -> kube::Result<Job> {
        let api: Api<Job> = Api::namespaced(self.client.clone(), namespace(&job.metadata));
        let mut updated = job.clone();
        updated.status = Some(status::canonical(&st));
        api.replace_status(name(&job.metadata), &PostParams::default(), &updated)
            .await
    }

    /// ttlSecondsAfterFinished: deletes the finished Job once it is due.
    async fn expire(&self, job: &Job) -> Reconciled<kube::Error> {
        let ttl = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished);
        let (Some(ttl), Some(at)) = (ttl, status::finished_at(job)) else {
            return Ok(None);
        };
        if !status::is_finished(job) || is_deleting(&job.metadata) {
            return Ok(None);
        }
        let left_s = at.as_second() + i64::from(ttl) - Timestamp::now().as_second();
        if left_s > 0 {
            return Ok(Some(Duration::from_secs(left_s.unsigned_abs()) + SLACK));
        }
        let api: Api<Job> = Api::namespaced(self.client.clone(), namespace(&job.metadata));
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            preconditions: Some(Preconditions {
                uid: job.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(name(&job.metadata), &params).await {
            Ok(_) => Ok(None),
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Records an Event about `job` in the background (best effort).
    fn event(&self, job: &Job, kind: &'static str, reason: &'static str, message: String) {
        let (client, involved) = (self.client.clone(), events::object_ref(job));
        tokio::spawn(async move {
            events::record(&client, &involved, kind, reason, &message, COMPONENT).await;
        });
    }
}

/// What counting found.
struct Tally {
    /// The Job as last written (its resourceVersion pins the next write).
    job: Job,
    /// The status with every finished pod counted.
    status: JobStatus,
    /// Completed indexes (Indexed mode).
    completed: BTreeSet<i32>,
    /// A FailJob rule matched: the message.
    fail_job: Option<String>,
}

/// How a Job finished.
struct Finish {
    failed: bool,
    reason: &'static str,
    message: String,
}

impl Finish {
    fn failed(reason: &'static str, message: &str) -> Finish {
        Finish {
            failed: true,
            reason,
            message: message.to_string(),
        }
    }
}

/// Indexed mode: the pods to delete (no valid index, a second pod for an
/// index, an index already completed, or above parallelism) and the
/// indexes to start.
fn indexed_plan<'a>(
    spec: &JobSpec,
    completed: &BTreeSet<i32>,
    active: &[&'a Pod],
    parallelism: usize,
) -> (Vec<&'a Pod>, Vec<Option<i32>>) {
    let completions = spec.completions.unwrap_or(0);
    let mut by_index: BTreeMap<i32, &Pod> = BTreeMap::new();
    let mut surplus = Vec::new();
    let mut ranked = active.to_vec();
    ranked.sort_by_cached_key(|p| std::cmp::Reverse(pods::deletion_rank(p)));
    for p in ranked {
        match indexed::pod_index(p, completions) {
            Some(i) if !completed.contains(&i) && !by_index.contains_key(&i) => {
                by_index.insert(i, p);
            }
            _ => surplus.push(p),
        }
    }
    while by_index.len() > parallelism {
        if let Some((_, p)) = by_index.pop_last() {
            surplus.push(p);
        }
    }
    let running: BTreeSet<i32> = by_index.keys().copied().collect();
    // At most one sync's worth: `parallelism` may be 2^31.
    let room = (parallelism - running.len()).min(BURST);
    let starts = indexed::to_start(completions, completed, &running, room);
    (surplus, starts.into_iter().map(Some).collect())
}

/// How long until `activeDeadlineSeconds` passes (zero once it has).
fn deadline_in(spec: &JobSpec, start: Timestamp, now: Timestamp) -> Option<Duration> {
    let limit_s = spec.active_deadline_seconds?;
    let left_s = start.as_second() + limit_s - now.as_second();
    Some(Duration::from_secs(left_s.max(0).unsigned_abs()))
}

/// How long new pods must wait after `failed` failures: 10 s doubling per
/// failure, capped at 6 min, from the latest failed pod's finish time.
fn backoff_in(failed: i32, owned: &[&Pod], now: Timestamp) -> Option<Duration> {
    if failed <= 0 {
        return None;
    }
    let last_s = owned
        .iter()
        .filter(|p| pods::is_failed(p))
        .filter_map(|p| pods::finished_s(p))
        .max()?;
    let delay_s = BACKOFF_BASE_S
        .saturating_mul(1i64 << (failed - 1).min(16))
        .min(BACKOFF_MAX_S);
    let left_s = last_s + delay_s - now.as_second();
    (left_s > 0).then(|| Duration::from_secs(left_s.unsigned_abs()))
}

fn min_some(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A count as the API's int32, saturating.
fn count_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn indexed_pod(i: i32) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(format!("p{i}")),
                annotations: Some([(COMPLETION_INDEX.to_string(), i.to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn indexed_plans_fill_missing_indexes_and_drop_duplicates() {
        let spec = JobSpec {
            completions: Some(5),
            ..Default::default()
        };
        let completed: BTreeSet<i32> = [0].into_iter().collect();
        let (a, b, c) = (indexed_pod(1), indexed_pod(1), indexed_pod(0));
        let (surplus, starts) = indexed_plan(&spec, &completed, &[&a, &b, &c], 3);
        assert_eq!(surplus.len(), 2, "a duplicate of 1 and a completed 0");
        assert_eq!(starts, vec![Some(2), Some(3)]);
    }

    #[test]
    fn backoff_doubles_from_the_last_failure() {
        let now: Timestamp = "2024-01-01T00:00:05Z".parse().unwrap();
        let finished: Timestamp = "2024-01-01T00:00:00Z".parse().unwrap();
        let failed = Pod {
            status: Some(PodStatus {
                phase: Some("Failed".into()),
                container_statuses: Some(vec![ContainerStatus {
                    state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            finished_at: Some(Time(finished)),
                            exit_code: 1,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(backoff_in(1, &[&failed], now), Some(Duration::from_secs(5)));
        assert_eq!(
            backoff_in(2, &[&failed], now),
            Some(Duration::from_secs(15))
        );
        assert_eq!(backoff_in(0, &[&failed], now), None);
        assert_eq!(backoff_in(1, &[], now), None);
    }
}
