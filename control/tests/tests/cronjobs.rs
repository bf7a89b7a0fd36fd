//! The CronJob controller against an in-process API server, on a clock the
//! test moves: no test waits for a schedule. After moving the clock the
//! test touches the CronJob (an annotation) so the controller looks again
//! at once. Jobs finish by the test writing their status (no Job
//! controller runs here).

#![recursion_limit = "256"]

use keel_control_tests as support;

use std::sync::{Arc, Mutex};

use jiff::{SignedDuration, Timestamp};
use keel_controllers::cache::Caches;
use keel_controllers::cronjob;
use serde_json::{json, Value};
use support::client::{path, Client};
use support::{bg, wait_for, with_in_process_client, Bg, TestServer};

const NS: &str = "default";

/// A clock the test moves.
#[derive(Clone)]
struct FakeClock(Arc<Mutex<Timestamp>>);

impl FakeClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap()
    }
    fn set(&self, t: Timestamp) {
        *self.0.lock().unwrap() = t;
    }
}

async fn setup() -> (TestServer, Client, FakeClock, Bg) {
    let (server, c) = with_in_process_client("cronjobs-test").await;
    let clock = FakeClock(Arc::new(Mutex::new(Timestamp::now())));
    let caches = Caches::new(server.in_process("keel-controller-manager"));
    let read = clock.clone();
    let ctl = bg(cronjob::run_with_clock(
        server.in_process("cronjob-controller"),
        caches,
        Arc::new(move || read.now()),
    ));
    (server, c, clock, ctl)
}

fn cj_path(name: Option<&str>) -> String {
    path("batch/v1", "cronjobs", Some(NS), name)
}

fn job_path(name: Option<&str>) -> String {
    path("batch/v1", "jobs", Some(NS), name)
}

async fn create_cronjob(c: &Client, name: &str, spec: Value) -> Value {
    let mut spec = spec;
    spec["jobTemplate"] = json!({"metadata": {"labels": {"cron": name}},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "main", "image": "busybox"}]}}}});
    let cj = json!({"apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": name}, "spec": spec});
    c.create(&cj_path(None), &cj).await.unwrap()
}

/// Makes the controller look at `name` now (after the clock moved).
async fn poke(c: &Client, name: &str) {
    let stamp = Timestamp::now().as_nanosecond().to_string();
    let patch = json!({"metadata": {"annotations": {"test/poke": stamp}}});
    c.merge_patch(&cj_path(Some(name)), &patch).await.unwrap();
}

async fn get_cj(c: &Client, name: &str) -> Value {
    c.get(&cj_path(Some(name)))
        .await
        .unwrap()
        .expect("the cronjob")
}

/// The Jobs of CronJob `name` (by the template's label), sorted by name.
async fn jobs_of(c: &Client, name: &str) -> Vec<Value> {
    let uri = format!("{}?labelSelector=cron%3D{name}", job_path(None));
    let l = c.list(&uri).await.unwrap();
    let mut items = l["items"].as_array().cloned().unwrap_or_default();
    items.retain(|j| j["metadata"]["deletionTimestamp"].is_null());
    items.sort_by_key(|j| {
        j["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    });
    items
}

fn names(jobs: &[Value]) -> Vec<String> {
    jobs.iter()
        .map(|j| {
            j["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// The Job name for the latest minute boundary at or before `t`.
fn minute_job(cj: &str, t: Timestamp) -> String {
    format!("{cj}-{}", t.as_second().div_euclid(60))
}

/// The first minute boundary strictly after `t`.
fn next_minute(t: Timestamp) -> Timestamp {
    Timestamp::from_second((t.as_second().div_euclid(60) + 1) * 60).unwrap()
}

/// Waits for exactly the Jobs `want` of CronJob `name`.
async fn wait_jobs(c: &Client, name: &str, want: &[String]) -> Vec<Value> {
    wait_for(&format!("jobs {want:?}"), 10, || async {
        let js = jobs_of(c, name).await;
        (names(&js) == want).then_some(js)
    })
    .await
}

/// Plays the Job controller: the Job finished as `type_` now.
async fn finish_job(c: &Client, job: &str, type_: &str) {
    let now = Timestamp::now().to_string();
    let mut status = json!({"conditions": [{"type": type_, "status": "True",
        "lastProbeTime": now, "lastTransitionTime": now, "reason": "Test", "message": "done"}],
        "startTime": now});
    if type_ == "Complete" {
        status["completionTime"] = json!(now);
    }
    let uri = job_path(Some(job)) + "/status";
    c.merge_patch(&uri, &json!({ "status": status }))
        .await
        .unwrap();
}

async fn events_for(c: &Client, name: &str, reason: &str) -> Vec<Value> {
    let l = c.list(&path("v1", "events", Some(NS), None)).await.unwrap();
    l["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["involvedObject"]["name"] == name && e["reason"] == reason)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_on_schedule_tracks_jobs_and_starts_only_the_latest_missed_time() {
    let (_server, c, clock, _ctl) = setup().await;
    let cj = create_cronjob(&c, "hello", json!({"schedule": "*/1 * * * *"})).await;
    let cj_uid = cj["metadata"]["uid"].as_str().unwrap().to_string();
    poke(&c, "hello").await;
    assert!(
        jobs_of(&c, "hello").await.is_empty(),
        "nothing before the first minute"
    );

    let t1 = next_minute(Timestamp::now());
    clock.set(t1 + SignedDuration::from_secs(5));
    poke(&c, "hello").await;
    let first = minute_job("hello", t1);
    let js = wait_jobs(&c, "hello", std::slice::from_ref(&first)).await;
    let m = &js[0]["metadata"];
    assert_eq!(m["ownerReferences"][0]["kind"], "CronJob");
    assert_eq!(m["ownerReferences"][0]["uid"], cj_uid.as_str());
    assert_eq!(m["ownerReferences"][0]["controller"], true);
    assert_eq!(
        m["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"],
        t1.to_string()
    );
    assert_eq!(
        js[0]["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox"
    );
    let s = wait_for("active and lastScheduleTime", 10, || async {
        let s = get_cj(&c, "hello").await["status"].clone();
        (s["active"][0]["name"] == first.as_str()).then_some(s)
    })
    .await;
    assert_eq!(s["lastScheduleTime"], t1.to_string());
    assert_eq!(s["active"][0]["kind"], "Job");
    assert_eq!(s["active"][0]["apiVersion"], "batch/v1");

    // Looking again at the same time starts nothing new.
    poke(&c, "hello").await;
    finish_job(&c, &first, "Complete").await;
    wait_for("active emptied, lastSuccessfulTime set", 10, || async {
        let s = get_cj(&c, "hello").await["status"].clone();
        (s["active"].is_null() && s["lastSuccessfulTime"].is_string()).then_some(())
    })
    .await;
    assert_eq!(
        names(&jobs_of(&c, "hello").await),
        std::slice::from_ref(&first)
    );

    // An outage of five minutes: one Job, for the most recent time.
    let t6 = t1 + SignedDuration::from_secs(5 * 60);
    clock.set(t6 + SignedDuration::from_secs(30));
    poke(&c, "hello").await;
    let latest = minute_job("hello", t6);
    wait_jobs(&c, "hello", &[first.clone(), latest.clone()]).await;
    assert!(events_for(&c, "hello", "TooManyMissedTimes")
        .await
        .is_empty());

    // More than 100 missed times: still one Job, and a warning.
    let far = t6 + SignedDuration::from_secs(200 * 60);
    clock.set(far + SignedDuration::from_secs(1));
    poke(&c, "hello").await;
    wait_jobs(&c, "hello", &[first, latest, minute_job("hello", far)]).await;
    wait_for("a TooManyMissedTimes event", 10, || async {
        let ev = events_for(&c, "hello", "TooManyMissedTimes").await;
        (ev.len() == 1 && ev[0]["type"] == "Warning").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_policies_forbid_and_replace() {
    let (_server, c, clock, _ctl) = setup().await;
    create_cronjob(
        &c,
        "forbid",
        json!({"schedule": "* * * * *", "concurrencyPolicy": "Forbid"}),
    )
    .await;
    create_cronjob(
        &c,
        "replace",
        json!({"schedule": "* * * * *", "concurrencyPolicy": "Replace"}),
    )
    .await;
    let t1 = next_minute(Timestamp::now());
    clock.set(t1 + SignedDuration::from_secs(1));
    poke(&c, "forbid").await;
    poke(&c, "replace").await;
    let f1 = minute_job("forbid", t1);
    let r1 = minute_job("replace", t1);
    wait_jobs(&c, "forbid", std::slice::from_ref(&f1)).await;
    wait_jobs(&c, "replace", std::slice::from_ref(&r1)).await;
    for cj in ["forbid", "replace"] {
        wait_for("the job active", 10, || async {
            (get_cj(&c, cj).await["status"]["active"].as_array()?.len() == 1).then_some(())
        })
        .await;
    }

    let t2 = t1 + SignedDuration::from_secs(60);
    clock.set(t2 + SignedDuration::from_secs(1));
    poke(&c, "forbid").await;
    poke(&c, "replace").await;
    let r2 = minute_job("replace", t2);
    wait_jobs(&c, "replace", std::slice::from_ref(&r2)).await;
    let s = wait_for("replace tracks the new job only", 10, || async {
        let s = get_cj(&c, "replace").await["status"].clone();
        (s["active"].as_array()?.len() == 1 && s["active"][0]["name"] == r2.as_str()).then_some(s)
    })
    .await;
    assert_eq!(s["lastScheduleTime"], t2.to_string());
    wait_for("JobAlreadyActive for forbid", 10, || async {
        (!events_for(&c, "forbid", "JobAlreadyActive")
            .await
            .is_empty())
        .then_some(())
    })
    .await;
    assert_eq!(
        names(&jobs_of(&c, "forbid").await),
        std::slice::from_ref(&f1)
    );

    // Once the running job finished, the skipped time (still the latest,
    // and no startingDeadlineSeconds) starts, as in Kubernetes.
    finish_job(&c, &f1, "Complete").await;
    wait_jobs(&c, "forbid", &[f1, minute_job("forbid", t2)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_suspend_history_and_time_zone() {
    let (_server, c, clock, _ctl) = setup().await;
    create_cronjob(
        &c,
        "late",
        json!({"schedule": "* * * * *", "startingDeadlineSeconds": 10}),
    )
    .await;
    create_cronjob(
        &c,
        "paused",
        json!({"schedule": "* * * * *", "suspend": true}),
    )
    .await;
    create_cronjob(
        &c,
        "hist",
        json!({"schedule": "* * * * *", "successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 1}),
    )
    .await;
    create_cronjob(
        &c,
        "tokyo",
        json!({"schedule": "0 9 * * *", "timeZone": "Asia/Tokyo"}),
    )
    .await;

    // 30 s past the minute with a 10 s starting deadline: too late to start.
    let t1 = next_minute(Timestamp::now());
    clock.set(t1 + SignedDuration::from_secs(30));
    for cj in ["late", "paused", "hist"] {
        poke(&c, cj).await;
    }
    let h1 = minute_job("hist", t1);
    wait_jobs(&c, "hist", std::slice::from_ref(&h1)).await;
    assert!(jobs_of(&c, "late").await.is_empty());
    assert!(jobs_of(&c, "paused").await.is_empty());

    // Within the deadline it starts.
    let t2 = t1 + SignedDuration::from_secs(60);
    clock.set(t2 + SignedDuration::from_secs(5));
    poke(&c, "late").await;
    wait_jobs(&c, "late", &[minute_job("late", t2)]).await;

    // History: one successful and one failed job are kept, the oldest go.
    finish_job(&c, &h1, "Complete").await;
    poke(&c, "hist").await;
    let h2 = minute_job("hist", t2);
    wait_jobs(&c, "hist", &[h1.clone(), h2.clone()]).await;
    finish_job(&c, &h2, "Complete").await;
    wait_jobs(&c, "hist", std::slice::from_ref(&h2)).await;
    // Events are recorded in the background, after the deletion itself.
    wait_for("the SuccessfulDelete event", 30, || async {
        let events = events_for(&c, "hist", "SuccessfulDelete").await;
        events
            .iter()
            .any(|e| e["message"] == format!("Deleted job {h1}"))
            .then_some(())
    })
    .await;
    assert!(jobs_of(&c, "paused").await.is_empty());

    // 09:00 in Tokyo is 00:00 UTC.
    let midnight =
        Timestamp::from_second((clock.now().as_second().div_euclid(86_400) + 1) * 86_400).unwrap();
    clock.set(midnight + SignedDuration::from_secs(2));
    poke(&c, "tokyo").await;
    let js = wait_jobs(&c, "tokyo", &[minute_job("tokyo", midnight)]).await;
    let stamp =
        &js[0]["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"];
    assert!(
        stamp.as_str().unwrap().ends_with("T09:00:00+09:00"),
        "{stamp}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schedules_and_time_zones_are_refused() {
    let (_server, c) = with_in_process_client("cronjobs-test").await;
    let tpl = json!({"spec": {"template": {"spec": {"restartPolicy": "Never",
        "containers": [{"name": "main", "image": "busybox"}]}}}});
    let cases = [
        (json!({"schedule": "not a schedule"}), "spec.schedule"),
        (json!({"schedule": "@every"}), "spec.schedule"),
        (json!({"schedule": "* * * * * *"}), "spec.schedule"),
        (
            json!({"schedule": "* * * * *", "timeZone": "Mars/Olympus"}),
            "spec.timeZone",
        ),
    ];
    for (spec, field) in cases {
        let mut spec = spec;
        spec["jobTemplate"] = tpl.clone();
        let cj = json!({"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "bad"}, "spec": spec});
        let err = c.create(&cj_path(None), &cj).await.unwrap_err();
        assert_eq!(err.code, 422, "{spec}: {err}");
        assert!(err.message.contains(field), "{spec}: {err}");
    }
    let ok = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "ok"},
        "spec": {"schedule": "@every 1h30m", "timeZone": "Europe/Paris", "jobTemplate": tpl}});
    c.create(&cj_path(None), &ok).await.unwrap();
}
