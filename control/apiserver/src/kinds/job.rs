//! Jobs (batch/v1): counts, deadlines, completion mode, an optional manual
//! selector and a template that restarts OnFailure or Never (the JobSpec
//! rules CronJobs template too); the defaults; a job's selector, template
//! and completion mode are fixed; the STATUS, COMPLETIONS and DURATION row.

use super::common::decode::decode;
use super::common::defaults::{existing, is_empty_map, object_at, set_default};
use super::common::duration::human_secs;
use super::common::errs::{at_least, child, Errs};
use super::common::json::{at, get, int, spec};
use super::common::meta::NameRule;
use super::common::table::{
    age, container_cells, deleting, format_selector, has_condition, name, secs_between, ts, Col,
    AGE, CONTAINERS, IMAGES, NAME, SELECTOR,
};
use super::common::update::immutable;
use super::common::workload::selector_matches_template;
use super::pod::defaults::template;
use super::pod::validate::pod_template;
use super::{Admission, KindOps};
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use serde_json::{json, Value};

pub static JOBS: KindOps = KindOps {
    group: "batch",
    resource: "jobs",
    admission: Some(Admission {
        name_rule: NameRule::Subdomain,
        namespaced: true,
        strict: decode::<Job>,
        defaults: Some(defaults),
        validate: |e, obj| job_spec(e, spec(obj), "spec"),
        validate_update: Some(job_update),
    }),
    columns: COLUMNS,
    cells,
};

// ---- validation -------------------------------------------------------------

const JOB_RESTART: &[&str] = &["OnFailure", "Never"];

/// A JobSpec at `path` (`spec` or `spec.jobTemplate.spec`).
pub fn job_spec(e: &mut Errs, spec: &Value, path: &str) {
    for k in ["parallelism", "completions", "backoffLimit"] {
        at_least(e, spec, k, path, 0);
    }
    at_least(e, spec, "activeDeadlineSeconds", path, 1);
    at_least(e, spec, "ttlSecondsAfterFinished", path, 0);
    let mode = get(spec, "completionMode");
    e.one_of(
        &child(path, "completionMode"),
        mode,
        &["NonIndexed", "Indexed"],
    );
    if mode.and_then(Value::as_str) == Some("Indexed") && get(spec, "completions").is_none() {
        e.required(
            &child(path, "completions"),
            "when completion mode is Indexed",
        );
    }
    let manual = get(spec, "manualSelector") == Some(&Value::Bool(true));
    if manual || get(spec, "selector").is_some() {
        selector_matches_template(e, spec, path, "job");
    }
    pod_template(
        e,
        get(spec, "template"),
        &child(path, "template"),
        JOB_RESTART,
    );
}

/// A job's selector, template and completion mode are fixed at creation.
fn job_update(e: &mut Errs, new: &Value, old: &Value) {
    let (ns, os) = (spec(new), spec(old));
    for k in ["selector", "template", "completionMode"] {
        immutable(e, ns, os, k, &child("spec", k));
    }
}

// ---- defaults ----------------------------------------------------------------

fn defaults(obj: &mut Value) {
    generate_selector(obj);
    let template_labels = obj.pointer("/spec/template/metadata/labels").cloned();
    if let Some(labels) = template_labels.filter(|l| !is_empty_map(Some(l))) {
        if let Some(meta) = object_at(obj, "metadata") {
            if is_empty_map(meta.get("labels")) {
                meta["labels"] = labels;
            }
        }
    }
    if let Some(spec) = existing(obj, "spec") {
        job_spec_defaults(spec);
    }
}

/// The label on a Job's pods naming the Job's uid, which the generated
/// selector selects.
pub const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
/// The label on a Job's pods naming the Job.
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";

/// Kubernetes' `generateSelector` (the Job strategy's PrepareForCreate):
/// unless `spec.manualSelector` is true, the pods are labelled with the
/// Job's uid and name (new and legacy keys, labels the user set are kept)
/// and the selector selects the uid, so a Job's pods can only ever be its
/// own. Needs the uid, so it runs once the server has stamped one; on an
/// update of a stored Job it changes nothing (same uid, same labels).
fn generate_selector(obj: &mut Value) {
    let Some(uid) = obj.pointer("/metadata/uid").and_then(Value::as_str) else {
        return;
    };
    let uid = uid.to_string();
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let Some(spec) = existing(obj, "spec") else {
        return;
    };
    if get(spec, "manualSelector") == Some(&Value::Bool(true)) {
        return;
    }
    let labels = object_at(spec, "template")
        .and_then(|t| object_at(t, "metadata"))
        .and_then(|m| object_at(m, "labels"));
    if let Some(labels) = labels {
        if name.len() <= 63 {
            set_default(labels, "job-name", json!(name));
            set_default(labels, JOB_NAME, json!(name));
        }
        set_default(labels, "controller-uid", json!(uid));
        set_default(labels, CONTROLLER_UID, json!(uid));
    }
    let match_labels = object_at(spec, "selector").and_then(|s| object_at(s, "matchLabels"));
    if let Some(m) = match_labels {
        set_default(m, CONTROLLER_UID, json!(uid));
    }
}

fn job_spec_defaults(spec: &mut Value) {
    let unset = |v: Option<&Value>| v.is_none_or(Value::is_null);
    if unset(spec.get("completions")) && unset(spec.get("parallelism")) {
        spec["completions"] = json!(1);
    }
    set_default(spec, "parallelism", json!(1));
    let backoff = if unset(spec.get("backoffLimitPerIndex")) {
        json!(6)
    } else {
        json!(i32::MAX)
    };
    set_default(spec, "backoffLimit", backoff);
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    let replacement = if unset(spec.get("podFailurePolicy")) {
        "TerminatingOrFailed"
    } else {
        "Failed"
    };
    set_default(spec, "podReplacementPolicy", json!(replacement));
    template(spec);
}

// ---- table -------------------------------------------------------------------

const COLUMNS: &[Col] = &[
    NAME,
    Col("Status", "string", false, "Status of the job."),
    Col(
        "Completions",
        "string",
        false,
        "Succeeded pods of the completions wanted.",
    ),
    Col(
        "Duration",
        "string",
        false,
        "Time required to complete the job.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn cells(job: &Value, now: Timestamp) -> Vec<Value> {
    let [names, images] = container_cells(at(job, "spec.template.spec"));
    vec![
        name(job),
        json!(job_status(job)),
        json!(job_completions(job)),
        json!(job_duration(job, now)),
        age(job, now),
        names,
        images,
        json!(format_selector(at(job, "spec.selector"))),
    ]
}

fn job_status(job: &Value) -> &'static str {
    match () {
        _ if has_condition(job, "Complete") => "Complete",
        _ if has_condition(job, "Failed") => "Failed",
        _ if deleting(job) => "Terminating",
        _ if has_condition(job, "Suspended") => "Suspended",
        _ if has_condition(job, "FailureTarget") => "FailureTarget",
        _ if has_condition(job, "SuccessCriteriaMet") => "SuccessCriteriaMet",
        _ => "Running",
    }
}

/// `succeeded/completions`, `succeeded/1 of parallelism` for work queues.
fn job_completions(job: &Value) -> String {
    let done = int(job, "status.succeeded");
    match at(job, "spec.completions").and_then(Value::as_i64) {
        Some(c) => format!("{done}/{c}"),
        None => match int(job, "spec.parallelism") {
            p if p > 1 => format!("{done}/1 of {p}"),
            _ => format!("{done}/1"),
        },
    }
}

/// Start to completion, or start to now while running; "" before start.
fn job_duration(job: &Value, now: Timestamp) -> String {
    match (
        ts(job, "status.startTime"),
        ts(job, "status.completionTime"),
    ) {
        (None, _) => String::new(),
        (Some(start), None) => human_secs(secs_between(start, now)),
        (Some(start), Some(end)) => human_secs(secs_between(start, end)),
    }
}

#[cfg(test)]
mod admission_tests {
    use crate::admission::validate_update;
    use crate::kinds::common::testing::{bad, c, defaulted, fields, meta, ok, pod_template};
    use serde_json::json;

    #[test]
    fn jobs() {
        let tpl = json!({"metadata": {"labels": {"j": "1"}}, "spec": {"restartPolicy": "Never", "containers": [c("a")]}});
        let job = json!({"metadata": meta("j"), "spec": {"template": tpl}});
        ok("batch", "jobs", &job);
        let mut always = job.clone();
        always["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
        bad(
            "batch",
            "jobs",
            &always,
            "spec.template.spec.restartPolicy",
            "FieldValueNotSupported",
        );
        let mut neg = job.clone();
        neg["spec"]["backoffLimit"] = json!(-1);
        bad(
            "batch",
            "jobs",
            &neg,
            "spec.backoffLimit",
            "FieldValueInvalid",
        );
    }

    #[test]
    fn job_update_rules() {
        let tpl = json!({"metadata": {"labels": {"j": "1"}}, "spec": {"restartPolicy": "Never", "containers": [c("a")]}});
        let job = json!({"metadata": meta("j"), "spec": {"template": tpl}});
        let mut job2 = job.clone();
        job2["spec"]["template"]["spec"]["containers"][0]["image"] = json!("other");
        assert_eq!(
            fields(&validate_update("batch", "jobs", &job2, &job)),
            vec!["spec.template FieldValueInvalid"]
        );
    }

    #[test]
    fn job_defaults() {
        let j = defaulted(
            "batch",
            "jobs",
            json!({"spec": {"template":
            pod_template(json!([{"name": "c", "image": "x"}]))}}),
        );
        let spec = &j["spec"];
        assert_eq!(spec["parallelism"], 1);
        assert_eq!(spec["completions"], 1);
        assert_eq!(spec["backoffLimit"], 6);
        assert_eq!(spec["completionMode"], "NonIndexed");
        assert_eq!(spec["suspend"], false);
        assert_eq!(spec["podReplacementPolicy"], "TerminatingOrFailed");
        assert_eq!(j["metadata"]["labels"], json!({"app": "a"}));
        let j = defaulted("batch", "jobs", json!({"spec": {"parallelism": 3}}));
        assert!(j["spec"].get("completions").is_none());
    }

    #[test]
    fn job_selectors_are_generated_from_the_uid() {
        let tpl = json!({"metadata": {"labels": {"app": "a"}},
            "spec": {"restartPolicy": "Never", "containers": [c("a")]}});
        let mut m = meta("pi");
        m["uid"] = json!("u-1");
        let j = defaulted(
            "batch",
            "jobs",
            json!({"metadata": m, "spec": {"template": tpl}}),
        );
        assert_eq!(
            j["spec"]["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}})
        );
        let labels = &j["spec"]["template"]["metadata"]["labels"];
        assert_eq!(labels["batch.kubernetes.io/job-name"], "pi");
        assert_eq!(labels["job-name"], "pi");
        assert_eq!(labels["controller-uid"], "u-1");
        assert_eq!(labels["app"], "a");
        ok("batch", "jobs", &j);
        let mut manual = j.clone();
        manual["spec"]["manualSelector"] = json!(true);
        manual["spec"]["selector"] = json!({"matchLabels": {"app": "a"}});
        assert_eq!(
            defaulted("batch", "jobs", manual.clone())["spec"]["selector"],
            manual["spec"]["selector"]
        );
    }
}

#[cfg(test)]
mod table_tests {
    use crate::kinds::common::testing::{ago, cell, dated_meta as meta, now, row_cells};
    use serde_json::json;

    #[test]
    fn job_rows() {
        let job = json!({
            "metadata": meta("pi"), "spec": {"completions": 1, "selector": {"matchLabels": {"job": "pi"}}},
            "status": {"succeeded": 1, "startTime": ago(100), "completionTime": ago(70),
                       "conditions": [{"type": "Complete", "status": "True"}]}
        });
        assert_eq!(
            &row_cells("jobs", &job, now())[..5],
            &[
                json!("pi"),
                json!("Complete"),
                json!("1/1"),
                json!("30s"),
                json!("6s")
            ]
        );
        assert_eq!(cell("jobs", &job, "Selector"), "job=pi");
        let running = json!({"metadata": meta("q"), "spec": {"parallelism": 3}, "status": {"startTime": ago(200)}});
        assert_eq!(cell("jobs", &running, "Status"), "Running");
        assert_eq!(cell("jobs", &running, "Completions"), "0/1 of 3");
        assert_eq!(cell("jobs", &running, "Duration"), "3m20s");
    }
}
