//! The Job controller against an in-process API server. No agent runs
//! pods here: the tests play the kubelet, setting pod phases through the
//! status subresource to make pods succeed or fail.

#![recursion_limit = "256"]

use keel_control_tests as support;

use keel_controllers::cache::Caches;
use keel_controllers::job;
use serde_json::{json, Value};
use support::client::{path, Client};
use support::{bg, wait_for, with_in_process_client, Bg, TestServer};

const NS: &str = "default";
const TRACKING: &str = "batch.kubernetes.io/job-tracking";

async fn setup() -> (TestServer, Client, Bg) {
    let (server, c) = with_in_process_client("jobs-test").await;
    let caches = Caches::new(server.in_process("keel-controller-manager"));
    let ctl = bg(job::run(server.in_process("job-controller"), caches));
    (server, c, ctl)
}

fn job_path(name: Option<&str>) -> String {
    path("batch/v1", "jobs", Some(NS), name)
}

async fn create_job(c: &Client, name: &str, spec: Value) -> Value {
    let mut spec = spec;
    spec["template"] = json!({"spec": {"restartPolicy": "Never",
        "containers": [{"name": "main", "image": "busybox"}]}});
    let job = json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name}, "spec": spec});
    c.create(&job_path(None), &job).await.unwrap()
}

async fn get_job(c: &Client, name: &str) -> Option<Value> {
    c.get(&job_path(Some(name))).await.unwrap()
}

/// The pods of Job `name` (by its job-name label), terminating ones included.
async fn job_pods(c: &Client, name: &str) -> Vec<Value> {
    let uri = format!(
        "{}?labelSelector=batch.kubernetes.io%2Fjob-name%3D{name}",
        path("v1", "pods", Some(NS), None)
    );
    let l = c.list(&uri).await.unwrap();
    l["items"].as_array().cloned().unwrap_or_default()
}

fn is_live(p: &Value) -> bool {
    p["metadata"]["deletionTimestamp"].is_null()
        && !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
}

async fn live_pods(c: &Client, name: &str) -> Vec<Value> {
    job_pods(c, name)
        .await
        .into_iter()
        .filter(is_live)
        .collect()
}

fn pod_name(p: &Value) -> String {
    p["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Plays the kubelet: the pod ends in `phase`, its container with `code`.
async fn finish_pod(c: &Client, pod: &str, phase: &str, code: i32) {
    let status = json!({"status": {"phase": phase, "containerStatuses": [{
        "name": "main", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": code, "reason": phase}}}]}});
    let uri = path("v1", "pods", Some(NS), Some(pod)) + "/status";
    c.merge_patch(&uri, &status).await.unwrap();
}

fn condition<'a>(job: &'a Value, type_: &str) -> Option<&'a Value> {
    job["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == "True")
}

/// Waits for Job `name` to have condition `type_` True; the Job.
async fn wait_condition(c: &Client, name: &str, type_: &str, secs: u64) -> Value {
    wait_for(&format!("job {name} {type_}"), secs, || async {
        let j = get_job(c, name).await?;
        condition(&j, type_).is_some().then_some(j)
    })
    .await
}

/// Waits for `n` live pods of Job `name`.
async fn wait_live(c: &Client, name: &str, n: usize) -> Vec<Value> {
    wait_for(&format!("{n} live pods of {name}"), 10, || async {
        let ps = live_pods(c, name).await;
        (ps.len() == n).then_some(ps)
    })
    .await
}

fn assert_condition_fields(cond: &Value) {
    for k in [
        "type",
        "status",
        "reason",
        "message",
        "lastProbeTime",
        "lastTransitionTime",
    ] {
        assert!(!cond[k].is_null(), "condition field {k} missing: {cond}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_run_parallel_pods_and_count_each_once() {
    let (_server, c, _ctl) = setup().await;
    let created = create_job(&c, "pi", json!({"completions": 3, "parallelism": 2})).await;
    let uid = created["metadata"]["uid"].as_str().unwrap().to_string();
    assert_eq!(
        created["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
        uid.as_str()
    );

    let first = wait_live(&c, "pi", 2).await;
    for p in &first {
        let m = &p["metadata"];
        assert!(pod_name(p).starts_with("pi-"));
        assert_eq!(
            m["labels"]["batch.kubernetes.io/controller-uid"],
            uid.as_str()
        );
        assert_eq!(m["labels"]["controller-uid"], uid.as_str());
        assert_eq!(m["labels"]["job-name"], "pi");
        assert_eq!(m["ownerReferences"][0]["kind"], "Job");
        assert_eq!(m["ownerReferences"][0]["controller"], true);
        assert!(m["finalizers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == TRACKING));
    }
    wait_for("active 2, ready 0, startTime", 10, || async {
        let s = get_job(&c, "pi").await?["status"].clone();
        (s["active"] == 2 && s["ready"] == 0 && s["startTime"].is_string()).then_some(())
    })
    .await;

    finish_pod(&c, &pod_name(&first[0]), "Succeeded", 0).await;
    wait_for("a succeeded count and a replacement", 10, || async {
        let j = get_job(&c, "pi").await?;
        let live = live_pods(&c, "pi").await;
        (j["status"]["succeeded"] == 1 && live.len() == 2).then_some(())
    })
    .await;
    // Two left to finish, only one more pod needed: parallelism shrinks to what remains.
    for p in live_pods(&c, "pi").await {
        finish_pod(&c, &pod_name(&p), "Succeeded", 0).await;
    }
    let job = wait_condition(&c, "pi", "Complete", 10).await;
    let s = &job["status"];
    assert_eq!(s["succeeded"], 3, "{s}");
    assert!(s["failed"].is_null(), "{s}");
    assert!(s["active"].is_null() || s["active"] == 0, "{s}");
    assert!(s["completionTime"].is_string());
    assert_eq!(s["uncountedTerminatedPods"], json!({}));
    assert_condition_fields(condition(&job, "Complete").unwrap());
    assert!(condition(&job, "SuccessCriteriaMet").is_some());
    // Every pod was released: no finalizer is left behind.
    wait_for("finalizers removed", 10, || async {
        let ps = job_pods(&c, "pi").await;
        ps.iter()
            .all(|p| p["metadata"]["finalizers"].is_null())
            .then_some(())
    })
    .await;
    assert_eq!(
        job_pods(&c, "pi").await.len(),
        3,
        "never more pods than completions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_beyond_the_backoff_limit_fail_the_job() {
    let (_server, c, _ctl) = setup().await;
    create_job(&c, "fail", json!({"backoffLimit": 1})).await;
    let p = wait_live(&c, "fail", 1).await;
    finish_pod(&c, &pod_name(&p[0]), "Failed", 1).await;
    // The back-off is measured from a container finish time; none is reported here.
    let p = wait_for("a replacement", 10, || async {
        let ps = live_pods(&c, "fail").await;
        (ps.len() == 1 && pod_name(&ps[0]) != pod_name(&p[0])).then(|| ps[0].clone())
    })
    .await;
    finish_pod(&c, &pod_name(&p), "Failed", 1).await;
    let job = wait_condition(&c, "fail", "Failed", 10).await;
    let cond = condition(&job, "Failed").unwrap();
    assert_eq!(cond["reason"], "BackoffLimitExceeded");
    assert_condition_fields(cond);
    assert_eq!(job["status"]["failed"], 2);
    assert!(job["status"]["completionTime"].is_null());
    assert_eq!(job_pods(&c, "fail").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexed_jobs_run_every_index_to_success() {
    let (_server, c, _ctl) = setup().await;
    create_job(
        &c,
        "idx",
        json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed"}),
    )
    .await;
    let ps = wait_live(&c, "idx", 3).await;
    let index_of = |p: &Value| {
        p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let mut indexes: Vec<String> = ps.iter().map(index_of).collect();
    indexes.sort();
    assert_eq!(indexes, ["0", "1", "2"]);
    for p in &ps {
        let i = index_of(p);
        assert_eq!(
            p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"],
            i.as_str()
        );
        assert_eq!(p["spec"]["hostname"], format!("idx-{i}"));
        assert!(pod_name(p).starts_with(&format!("idx-{i}-")));
        let env = p["spec"]["containers"][0]["env"].as_array().unwrap();
        assert!(env.iter().any(|e| e["name"] == "JOB_COMPLETION_INDEX"
            && e["valueFrom"]["fieldRef"]["fieldPath"]
                == "metadata.annotations['batch.kubernetes.io/job-completion-index']"));
    }
    for p in &ps {
        let (phase, code) = if index_of(p) == "1" {
            ("Failed", 1)
        } else {
            ("Succeeded", 0)
        };
        finish_pod(&c, &pod_name(p), phase, code).await;
    }
    let again = wait_for("index 1 again", 10, || async {
        let j = get_job(&c, "idx").await?;
        let live = live_pods(&c, "idx").await;
        (j["status"]["completedIndexes"] == "0,2" && live.len() == 1 && index_of(&live[0]) == "1")
            .then(|| live[0].clone())
    })
    .await;
    finish_pod(&c, &pod_name(&again), "Succeeded", 0).await;
    let job = wait_condition(&c, "idx", "Complete", 10).await;
    assert_eq!(job["status"]["completedIndexes"], "0-2");
    assert_eq!(job["status"]["succeeded"], 3);
    assert_eq!(job["status"]["failed"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_failure_policy_ignores_or_fails_the_job() {
    let (_server, c, _ctl) = setup().await;
    let policy = json!({"rules": [
        {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
        {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [3]}},
    ]});
    create_job(
        &c,
        "pfp",
        json!({"backoffLimit": 0, "podFailurePolicy": policy}),
    )
    .await;
    let p = wait_live(&c, "pfp", 1).await;
    // Exit 3 is ignored: not counted, even with backoffLimit 0, and replaced.
    finish_pod(&c, &pod_name(&p[0]), "Failed", 3).await;
    let p2 = wait_for("a replacement for the ignored failure", 10, || async {
        let ps = live_pods(&c, "pfp").await;
        (ps.len() == 1 && pod_name(&ps[0]) != pod_name(&p[0])).then(|| ps[0].clone())
    })
    .await;
    let j = get_job(&c, "pfp").await.unwrap();
    assert!(condition(&j, "Failed").is_none());
    assert!(j["status"]["failed"].is_null(), "{}", j["status"]);
    finish_pod(&c, &pod_name(&p2), "Failed", 42).await;
    let job = wait_condition(&c, "pfp", "Failed", 10).await;
    let cond = condition(&job, "Failed").unwrap();
    assert_eq!(cond["reason"], "PodFailurePolicy");
    assert!(
        cond["message"].as_str().unwrap().contains("exit code 42"),
        "{cond}"
    );
    assert!(condition(&job, "FailureTarget").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_deletes_pods_and_resume_restarts_them() {
    let (_server, c, _ctl) = setup().await;
    create_job(
        &c,
        "sus",
        json!({"parallelism": 2, "completions": 4, "suspend": true}),
    )
    .await;
    let job = wait_condition(&c, "sus", "Suspended", 10).await;
    let cond = condition(&job, "Suspended").unwrap();
    assert_eq!(cond["reason"], "JobSuspended");
    assert!(live_pods(&c, "sus").await.is_empty());

    c.merge_patch(&job_path(Some("sus")), &json!({"spec": {"suspend": false}}))
        .await
        .unwrap();
    wait_live(&c, "sus", 2).await;
    wait_for("the Suspended condition False, JobResumed", 10, || async {
        let j = get_job(&c, "sus").await?;
        let cond = j["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Suspended")?
            .clone();
        (cond["status"] == "False" && cond["reason"] == "JobResumed").then_some(())
    })
    .await;

    c.merge_patch(&job_path(Some("sus")), &json!({"spec": {"suspend": true}}))
        .await
        .unwrap();
    wait_for("pods gone on suspend", 10, || async {
        (job_pods(&c, "sus").await.is_empty()).then_some(())
    })
    .await;
    let j = wait_condition(&c, "sus", "Suspended", 10).await;
    assert!(
        j["status"]["failed"].is_null(),
        "stopped pods are not failures"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_fail_and_ttl_deletes_finished_jobs() {
    let (_server, c, _ctl) = setup().await;
    create_job(&c, "slow", json!({"activeDeadlineSeconds": 1})).await;
    wait_live(&c, "slow", 1).await;
    let job = wait_condition(&c, "slow", "Failed", 10).await;
    assert_eq!(
        condition(&job, "Failed").unwrap()["reason"],
        "DeadlineExceeded"
    );
    wait_for("the running pod deleted", 10, || async {
        live_pods(&c, "slow").await.is_empty().then_some(())
    })
    .await;

    create_job(&c, "brief", json!({"ttlSecondsAfterFinished": 1})).await;
    let p = wait_live(&c, "brief", 1).await;
    finish_pod(&c, &pod_name(&p[0]), "Succeeded", 0).await;
    wait_condition(&c, "brief", "Complete", 30).await;
    wait_for("the finished job deleted after its TTL", 10, || async {
        get_job(&c, "brief").await.is_none().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_queue_jobs_stop_starting_pods_after_a_success() {
    let (_server, c, _ctl) = setup().await;
    let created = create_job(&c, "queue", json!({"parallelism": 2})).await;
    assert!(created["spec"]["completions"].is_null());
    let ps = wait_live(&c, "queue", 2).await;
    finish_pod(&c, &pod_name(&ps[0]), "Succeeded", 0).await;
    wait_for("succeeded 1", 10, || async {
        (get_job(&c, "queue").await?["status"]["succeeded"] == 1).then_some(())
    })
    .await;
    assert_eq!(
        live_pods(&c, "queue").await.len(),
        1,
        "no new pod after a success"
    );
    finish_pod(&c, &pod_name(&ps[1]), "Succeeded", 0).await;
    let job = wait_condition(&c, "queue", "Complete", 10).await;
    assert_eq!(job["status"]["succeeded"], 2);
}

/// A tracked pod that no Job controls any more (orphaned, as
/// `--cascade=orphan` leaves it, and out of the selector) loses the
/// tracking finalizer, so it can still be deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphaned_pod_loses_the_tracking_finalizer() {
    let (_server, c, _ctl) = setup().await;
    create_job(&c, "orph", json!({"backoffLimit": 3})).await;
    let p = wait_live(&c, "orph", 1).await;
    let pod = pod_name(&p[0]);
    let finalizers = p[0]["metadata"]["finalizers"].to_string();
    assert!(
        finalizers.contains("batch.kubernetes.io/job-tracking"),
        "{finalizers}"
    );
    let uri = path("v1", "pods", Some(NS), Some(&pod));
    c.merge_patch(
        &uri,
        &json!({"metadata": {"ownerReferences": null, "labels": null}}),
    )
    .await
    .unwrap();
    wait_for("the finalizer to go", 10, || async {
        let p = c.get(&uri).await.unwrap()?;
        let f = p["metadata"]["finalizers"].to_string();
        (!f.contains("batch.kubernetes.io/job-tracking")).then_some(())
    })
    .await;
    c.delete(&uri, None).await.unwrap();
    wait_for("the pod to be deleted", 10, || async {
        c.get(&uri).await.unwrap().is_none().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_running_pod_counts_once_as_failed() {
    let (_server, c, _ctl) = setup().await;
    create_job(&c, "del", json!({"backoffLimit": 3})).await;
    let p = wait_live(&c, "del", 1).await;
    let victim = pod_name(&p[0]);
    c.delete(&path("v1", "pods", Some(NS), Some(&victim)), None)
        .await
        .unwrap();
    wait_for("counted, released and replaced", 10, || async {
        let j = get_job(&c, "del").await?;
        let ps = job_pods(&c, "del").await;
        let gone = ps.iter().all(|p| pod_name(p) != victim);
        let live = ps.iter().filter(|p| is_live(p)).count();
        (j["status"]["failed"] == 1 && gone && live == 1).then_some(())
    })
    .await;
    // Later syncs do not count it again.
    let p = live_pods(&c, "del").await;
    finish_pod(&c, &pod_name(&p[0]), "Succeeded", 0).await;
    let job = wait_condition(&c, "del", "Complete", 10).await;
    assert_eq!(job["status"]["failed"], 1);
    assert_eq!(job["status"]["succeeded"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_counts_are_refused_naming_the_field() {
    let (_server, c) = with_in_process_client("jobs-test").await;
    for field in ["completions", "parallelism", "backoffLimit"] {
        let job = json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "neg"},
            "spec": {field: -1, "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "main", "image": "busybox"}]}}}});
        let err = c.create(&job_path(None), &job).await.unwrap_err();
        assert_eq!(err.code, 422, "{field}: {err}");
        assert!(
            err.message.contains(&format!("spec.{field}")),
            "{field}: {err}"
        );
    }
    assert!(get_job(&c, "neg").await.is_none(), "nothing written");
}
