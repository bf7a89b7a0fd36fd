//! When a CronJob runs, after Kubernetes' `pkg/controller/cronjob/utils.go`:
//! the most recent scheduled time that has not run yet (only that one: a
//! CronJob that missed several runs during an outage starts one Job, not
//! one per missed time), how many were missed, and when to look again.
//! Pure functions of the CronJob, the schedule and the clock's `now`.

use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::CronJob;
use keel_apimachinery::cron::Schedule;

/// More missed times than this earn a `TooManyMissedTimes` event.
pub const TOO_MANY_MISSED: usize = 100;
/// Wakes this long after a scheduled time, so that it has surely come.
const NEXT_DELTA: Duration = Duration::from_millis(100);

/// The scheduled time to run now, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// The most recent unmet scheduled time at or before now.
    pub time: Option<Timestamp>,
    /// How many scheduled times passed unmet (counted up to
    /// [`TOO_MANY_MISSED`] + 1).
    pub missed: usize,
}

/// The time after which nothing has run: the last scheduled time, or the
/// CronJob's creation; with `deadline`, no earlier than
/// `startingDeadlineSeconds` ago (a run later than that is not started).
fn earliest(cj: &CronJob, now: Timestamp, deadline: bool) -> Timestamp {
    let status = cj.status.as_ref();
    let mut t = status
        .and_then(|s| s.last_schedule_time.as_ref())
        .or(cj.metadata.creation_timestamp.as_ref())
        .map_or(now, |t| t.0);
    let limit_s = cj.spec.as_ref().and_then(|s| s.starting_deadline_seconds);
    if let (true, Some(limit_s)) = (deadline, limit_s) {
        if let Ok(cutoff) = Timestamp::from_second(now.as_second() - limit_s) {
            t = t.max(cutoff);
        }
    }
    t
}

/// Kubernetes' `mostRecentScheduleTime` with the starting deadline.
pub fn due(cj: &CronJob, sched: &Schedule, tz: &TimeZone, now: Timestamp) -> Due {
    let from = earliest(cj, now, true);
    let time = sched.latest_between(from, now, tz);
    let mut missed = 0;
    let mut t = sched.next_after(from, tz);
    while let Some(at) = t.filter(|at| *at <= now) {
        missed += 1;
        if missed > TOO_MANY_MISSED {
            break;
        }
        t = sched.next_after(at, tz);
    }
    Due { time, missed }
}

/// How long until the next scheduled time after the last one due.
pub fn next_in(cj: &CronJob, sched: &Schedule, tz: &TimeZone, now: Timestamp) -> Option<Duration> {
    let from = earliest(cj, now, false);
    let base = sched.latest_between(from, now, tz).unwrap_or(from);
    let next = sched.next_after(base, tz)?;
    let wait = next.duration_since(now);
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO) + NEXT_DELTA)
}

/// The Job for scheduled time `t`: `<cronjob>-<minutes since the epoch>`,
/// the same for every attempt, so a retried create cannot run twice.
pub fn job_name(cronjob: &str, t: Timestamp) -> String {
    format!("{cronjob}-{}", t.as_second().div_euclid(60))
}

/// `t` in RFC 3339 in the CronJob's zone, as Go formats it (`Z` for UTC).
pub fn rfc3339_in(t: Timestamp, tz: &TimeZone) -> String {
    let z = t.to_zoned(tz.clone());
    if z.offset().seconds() == 0 {
        return format!("{}Z", z.strftime("%Y-%m-%dT%H:%M:%S"));
    }
    z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{CronJobSpec, CronJobStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("a test timestamp")
    }

    fn cronjob(created: &str, last: Option<&str>, deadline_s: Option<i64>) -> CronJob {
        CronJob {
            metadata: ObjectMeta {
                name: Some("hello".into()),
                creation_timestamp: Some(Time(ts(created))),
                ..Default::default()
            },
            spec: Some(CronJobSpec {
                schedule: "*/1 * * * *".into(),
                starting_deadline_seconds: deadline_s,
                ..Default::default()
            }),
            status: last.map(|l| CronJobStatus {
                last_schedule_time: Some(Time(ts(l))),
                ..Default::default()
            }),
        }
    }

    fn every_minute() -> Schedule {
        Schedule::parse("*/1 * * * *").unwrap()
    }

    #[test]
    fn nothing_is_due_before_the_first_time() {
        let cj = cronjob("2024-01-01T00:00:10Z", None, None);
        let d = due(
            &cj,
            &every_minute(),
            &TimeZone::UTC,
            ts("2024-01-01T00:00:50Z"),
        );
        assert_eq!(
            d,
            Due {
                time: None,
                missed: 0
            }
        );
        let wait = next_in(
            &cj,
            &every_minute(),
            &TimeZone::UTC,
            ts("2024-01-01T00:00:50Z"),
        );
        assert_eq!(wait, Some(Duration::from_millis(10_100)));
    }

    #[test]
    fn only_the_most_recent_missed_time_runs() {
        let cj = cronjob("2024-01-01T00:00:00Z", Some("2024-01-01T00:01:00Z"), None);
        let d = due(
            &cj,
            &every_minute(),
            &TimeZone::UTC,
            ts("2024-01-01T00:05:30Z"),
        );
        assert_eq!(d.time, Some(ts("2024-01-01T00:05:00Z")));
        assert_eq!(d.missed, 4);
        let wait = next_in(
            &cj,
            &every_minute(),
            &TimeZone::UTC,
            ts("2024-01-01T00:05:30Z"),
        );
        assert_eq!(wait, Some(Duration::from_millis(30_100)));
    }

    #[test]
    fn a_long_outage_counts_as_too_many_missed() {
        let cj = cronjob("2024-01-01T00:00:00Z", None, None);
        let d = due(
            &cj,
            &every_minute(),
            &TimeZone::UTC,
            ts("2024-01-01T05:00:00Z"),
        );
        assert_eq!(d.time, Some(ts("2024-01-01T05:00:00Z")));
        assert!(d.missed > TOO_MANY_MISSED);
    }

    #[test]
    fn the_starting_deadline_limits_how_far_back_to_look() {
        let cj = cronjob("2024-01-01T00:00:00Z", None, Some(200));
        let d = due(
            &cj,
            &every_minute(),
            &TimeZone::UTC,
            ts("2024-01-01T05:00:30Z"),
        );
        assert_eq!(d.time, Some(ts("2024-01-01T05:00:00Z")));
        assert_eq!(d.missed, 3, "only the times within the last 200 s");
        let d = due(
            &cj,
            &Schedule::parse("0 0 * * *").unwrap(),
            &TimeZone::UTC,
            ts("2024-01-01T05:00:00Z"),
        );
        assert_eq!(d.time, None, "midnight is more than 200 s ago");
    }

    #[test]
    fn names_and_annotations() {
        assert_eq!(
            job_name("hello", ts("2024-01-01T00:05:00Z")),
            "hello-28401125"
        );
        let paris = TimeZone::get("Europe/Paris").unwrap();
        assert_eq!(
            rfc3339_in(ts("2024-01-01T08:00:00Z"), &paris),
            "2024-01-01T09:00:00+01:00"
        );
        assert_eq!(
            rfc3339_in(ts("2024-01-01T08:00:00Z"), &TimeZone::UTC),
            "2024-01-01T08:00:00Z"
        );
    }
}
