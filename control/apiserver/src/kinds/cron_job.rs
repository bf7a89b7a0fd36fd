//! CronJobs (batch/v1): name length, the schedule (five cron fields or an
//! `@` macro, time zones in `timeZone`), concurrency and history, and the
//! templated JobSpec; the defaults; the SCHEDULE and LAST SCHEDULE row.

use super::common::decode::decode;
use super::common::defaults::{existing, set_default};
use super::common::errs::{at_least, Errs};
use super::common::json::{at, count, get, spec, str_of, text};
use super::common::meta::NameRule;
use super::common::table::{
    age, container_cells, format_selector, name, since, text_or, ts, Col, AGE, CONTAINERS, IMAGES,
    NAME, SELECTOR,
};
use super::job::job_spec;
use super::pod::defaults::template;
use super::{Admission, KindOps};
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::CronJob;
use serde_json::{json, Value};

pub static CRON_JOBS: KindOps = KindOps {
    group: "batch",
    resource: "cronjobs",
    admission: Some(Admission {
        name_rule: NameRule::Subdomain,
        namespaced: true,
        strict: decode::<CronJob>,
        defaults: Some(defaults),
        validate: |e, obj| cron_job(e, obj, spec(obj)),
        validate_update: None,
    }),
    columns: COLUMNS,
    cells,
};

fn cron_job(e: &mut Errs, obj: &Value, spec: &Value) {
    if let Some(name) = obj.pointer("/metadata/name").and_then(Value::as_str) {
        if name.len() > 52 {
            e.invalid(
                "metadata.name",
                &Value::from(name),
                "must be no more than 52 characters",
            );
        }
    }
    match str_of(spec, "schedule").filter(|s| !s.is_empty()) {
        None => e.required("spec.schedule", ""),
        Some(s) => {
            if let Err(msg) = cron_schedule(s) {
                e.invalid("spec.schedule", &Value::from(s), &msg);
            }
        }
    }
    time_zone(e, spec);
    let policy = get(spec, "concurrencyPolicy");
    e.one_of(
        "spec.concurrencyPolicy",
        policy,
        &["Allow", "Forbid", "Replace"],
    );
    for k in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        at_least(e, spec, k, "spec", 0);
    }
    let job = spec.pointer("/jobTemplate/spec").unwrap_or(&Value::Null);
    job_spec(e, job, "spec.jobTemplate.spec");
}

/// The schedule as the CronJob controller parses it (one parser, in
/// keel-apimachinery, so whatever is admitted can run).
fn cron_schedule(s: &str) -> Result<(), String> {
    keel_apimachinery::cron::Schedule::parse(s).map(|_| ())
}

/// `spec.timeZone`: an IANA name the controller can load.
fn time_zone(e: &mut Errs, spec: &Value) {
    if let Some(tz) = get(spec, "timeZone").filter(|v| !v.is_null()) {
        let checked = match tz.as_str() {
            Some(name) => keel_apimachinery::cron::time_zone(name).map(|_| ()),
            None => Err("must be a string".to_string()),
        };
        if let Err(msg) = checked {
            e.invalid("spec.timeZone", tz, &msg);
        }
    }
}

/// CronJob defaults; the job template only gets pod defaults, as upstream
/// (job defaults apply when the controller creates the Job).
fn defaults(obj: &mut Value) {
    let Some(spec) = existing(obj, "spec") else {
        return;
    };
    set_default(spec, "concurrencyPolicy", json!("Allow"));
    set_default(spec, "suspend", json!(false));
    set_default(spec, "successfulJobsHistoryLimit", json!(3));
    set_default(spec, "failedJobsHistoryLimit", json!(1));
    let job = existing(spec, "jobTemplate").and_then(|t| existing(t, "spec"));
    if let Some(job_spec) = job {
        template(job_spec);
    }
}

const COLUMNS: &[Col] = &[
    NAME,
    Col("Schedule", "string", false, "The cron schedule."),
    Col("Timezone", "string", false, "Time zone of the schedule."),
    Col(
        "Suspend",
        "boolean",
        false,
        "Whether new runs are suspended.",
    ),
    Col("Active", "integer", false, "Jobs currently running."),
    Col(
        "Last Schedule",
        "string",
        false,
        "Time since the last scheduled run.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn cells(cj: &Value, now: Timestamp) -> Vec<Value> {
    let last = match ts(cj, "status.lastScheduleTime") {
        Some(t) => since(Some(t), now),
        None if at(cj, "status.lastScheduleTime").is_some_and(|v| !v.is_null()) => {
            "<unknown>".into()
        }
        None => "<none>".into(),
    };
    let suspend = match at(cj, "spec.suspend").and_then(Value::as_bool) {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    };
    let job_spec = at(cj, "spec.jobTemplate.spec");
    let [names, images] = container_cells(job_spec.and_then(|s| at(s, "template.spec")));
    vec![
        name(cj),
        json!(text(cj, "spec.schedule")),
        json!(text_or(cj, "spec.timeZone", "<none>")),
        json!(suspend),
        json!(count(cj, "status.active")),
        json!(last),
        age(cj, now),
        names,
        images,
        json!(format_selector(job_spec.and_then(|s| s.get("selector")))),
    ]
}

#[cfg(test)]
mod admission_tests {
    use crate::kinds::common::testing::{bad, c, defaulted, meta, ok, pod_template};
    use serde_json::json;

    #[test]
    fn cron_jobs() {
        let tpl = json!({"metadata": {"labels": {"j": "1"}}, "spec": {"restartPolicy": "Never", "containers": [c("a")]}});
        let cron = |s: &str| json!({"metadata": meta("c"), "spec": {"schedule": s, "jobTemplate": {"spec": {"template": tpl}}}});
        ok("batch", "cronjobs", &cron("*/5 * * * *"));
        ok("batch", "cronjobs", &cron("0 9-17 * jan-jun mon-fri"));
        ok("batch", "cronjobs", &cron("@hourly"));
        bad(
            "batch",
            "cronjobs",
            &cron(""),
            "spec.schedule",
            "FieldValueRequired",
        );
        bad(
            "batch",
            "cronjobs",
            &cron("* * *"),
            "spec.schedule",
            "FieldValueInvalid",
        );
        bad(
            "batch",
            "cronjobs",
            &cron("61 * * * *"),
            "spec.schedule",
            "FieldValueInvalid",
        );
        bad(
            "batch",
            "cronjobs",
            &cron("TZ=UTC * * * * *"),
            "spec.schedule",
            "FieldValueInvalid",
        );
    }

    #[test]
    fn cron_job_defaults() {
        let c = defaulted(
            "batch",
            "cronjobs",
            json!({"spec": {"schedule": "* * * * *",
            "jobTemplate": {"spec": {"template": pod_template(json!([{"name": "c", "image": "x"}]))}}}}),
        );
        let spec = &c["spec"];
        assert_eq!(spec["concurrencyPolicy"], "Allow");
        assert_eq!(spec["suspend"], false);
        assert_eq!(spec["successfulJobsHistoryLimit"], 3);
        assert_eq!(spec["failedJobsHistoryLimit"], 1);
        assert_eq!(
            spec["jobTemplate"]["spec"]["template"]["spec"]["dnsPolicy"],
            "ClusterFirst"
        );
        assert!(spec["jobTemplate"]["spec"].get("backoffLimit").is_none());
    }
}

#[cfg(test)]
mod table_tests {
    use crate::kinds::common::testing::{ago, cell, dated_meta as meta, now, row_cells};
    use serde_json::json;

    #[test]
    fn cron_job_rows() {
        let cj = json!({"metadata": meta("c"), "spec": {"schedule": "*/5 * * * *", "suspend": false},
                        "status": {"active": [{"name": "c-1"}], "lastScheduleTime": ago(180)}});
        assert_eq!(
            &row_cells("cronjobs", &cj, now())[..7],
            &[
                json!("c"),
                json!("*/5 * * * *"),
                json!("<none>"),
                json!("False"),
                json!(1),
                json!("3m"),
                json!("6s")
            ]
        );
        let bare = json!({"metadata": meta("d")});
        assert_eq!(cell("cronjobs", &bare, "Last Schedule"), "<none>");
        assert_eq!(cell("cronjobs", &bare, "Suspend"), "<unset>");
    }
}
