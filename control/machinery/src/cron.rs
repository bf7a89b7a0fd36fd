//! CronJob schedules: the one parser both the API server (validation of
//! `spec.schedule` and `spec.timeZone`) and the CronJob controller (when
//! to start a Job) use, so a schedule the API accepts is one the
//! controller can run.
//!
//! The syntax is what Kubernetes accepts (robfig/cron's standard parser):
//! five fields (minute, hour, day of month, month, day of week) with `*`,
//! `?`, lists, ranges, steps and three-letter month and weekday names; the
//! macros `@yearly`/`@annually`, `@monthly`, `@weekly`, `@daily`/
//! `@midnight`, `@hourly`; and `@every <duration>` (Go duration syntax,
//! e.g. `@every 1h30m`, rounded down to whole seconds, at least 1 s). A
//! day of month and a day of week that are both restricted match either
//! (Vixie cron). `TZ=`/`CRON_TZ=` prefixes are refused: the time zone
//! belongs in `spec.timeZone`. Evaluation is croner's, on jiff time zones
//! (the system IANA database), so daylight-saving gaps and folds are
//! handled: a wall-clock time skipped by a gap fires when the gap ends (Go's
//! robfig/cron skips it instead), a repeated one fires once.

use std::fmt;
use std::str::FromStr;

use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

/// A parsed schedule.
#[derive(Clone)]
pub struct Schedule {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Cron(Box<Cron>),
    /// `@every`: a fixed delay after the previous run, whole seconds.
    Every(SignedDuration),
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Cron(c) => write!(f, "Schedule({})", c.pattern),
            Kind::Every(d) => write!(f, "Schedule(@every {d:#})"),
        }
    }
}

const MONTHS: &[&str] = &[
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl Schedule {
    /// Parses `spec.schedule`; the error is the message for a 422.
    pub fn parse(s: &str) -> Result<Schedule, String> {
        let s = s.trim();
        if s.contains("TZ") {
            return Err("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into());
        }
        if let Some(d) = s.strip_prefix("@every ") {
            return every(d.trim()).map(|d| Schedule {
                kind: Kind::Every(d),
            });
        }
        let pattern = match s {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            _ if s.starts_with('@') => return Err(format!("unrecognized descriptor: {s}")),
            _ => s,
        };
        let fields: Vec<&str> = pattern.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "expected exactly 5 fields, found {}: {s}",
                fields.len()
            ));
        }
        let mut normalized = Vec::with_capacity(5);
        for (i, field) in fields.iter().enumerate() {
            normalized.push(field_syntax(field, i)?);
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .sloppy_ranges(true)
            .build();
        let cron = parser
            .parse(&normalized.join(" "))
            .map_err(|e| format!("{e}: {s}"))?;
        Ok(Schedule {
            kind: Kind::Cron(Box::new(cron)),
        })
    }

    /// The first scheduled time strictly after `t`, with wall-clock fields
    /// read in `tz`; `None` when the schedule never fires again (e.g.
    /// `0 0 30 2 *`).
    pub fn next_after(&self, t: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        match &self.kind {
            Kind::Every(d) => truncate_s(t).checked_add(*d).ok(),
            Kind::Cron(c) => c
                .find_next_occurrence(&t.to_zoned(tz.clone()), false)
                .ok()
                .map(|z| z.timestamp()),
        }
    }

    /// The latest scheduled time at or before `now` and strictly after
    /// `earliest` (the last run, or the CronJob's creation), if any.
    pub fn latest_between(
        &self,
        earliest: Timestamp,
        now: Timestamp,
        tz: &TimeZone,
    ) -> Option<Timestamp> {
        let t = match &self.kind {
            Kind::Every(d) => {
                let start = truncate_s(earliest);
                let periods = (now.duration_since(start).as_secs()) / d.as_secs().max(1);
                if periods < 1 {
                    return None;
                }
                start
                    .checked_add(SignedDuration::from_secs(periods * d.as_secs()))
                    .ok()?
            }
            Kind::Cron(c) => c
                .find_previous_occurrence(&now.to_zoned(tz.clone()), true)
                .ok()?
                .timestamp(),
        };
        (t > earliest && t <= now).then_some(t)
    }
}

/// `t` without its fraction of a second.
fn truncate_s(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// The delay of `@every`: a Go duration, whole seconds, at least one.
fn every(d: &str) -> Result<SignedDuration, String> {
    let parsed = SignedDuration::from_str(d)
        .map_err(|_| format!("failed to parse duration @every {d}: invalid duration"))?;
    Ok(SignedDuration::from_secs(parsed.as_secs().max(1)))
}

/// Checks field `index` against robfig/cron's grammar and returns it in
/// croner's spelling (`?` as `*`). Letters are allowed only as month or
/// weekday names in their own fields, which also keeps croner's
/// extensions (`L`, `W`, `#`) out.
fn field_syntax(field: &str, index: usize) -> Result<String, String> {
    let names: &[&str] = match index {
        3 => MONTHS,
        4 => WEEKDAYS,
        _ => &[],
    };
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '*' | '?' | ',' | '-' | '/');
    if let Some(c) = field.chars().find(|c| !allowed(*c)) {
        return Err(format!("invalid character {c:?} in field: {field}"));
    }
    for word in field.split(|c: char| !c.is_ascii_alphabetic()) {
        if !word.is_empty() && !names.contains(&word.to_ascii_lowercase().as_str()) {
            return Err(format!("failed to parse int from {word}: {field}"));
        }
    }
    for item in field.split(',') {
        if let Some((_, step)) = item.split_once('/') {
            if step.parse::<u32>().map_or(true, |s| s == 0) {
                return Err(format!(
                    "step of range should be a positive number: {field}"
                ));
            }
        }
    }
    Ok(field.replace('?', "*"))
}

/// Resolves `spec.timeZone` as Kubernetes does (an IANA name from the
/// system database; not `Local`, no path tricks); the error is the
/// message for a 422.
pub fn time_zone(name: &str) -> Result<TimeZone, String> {
    if name.is_empty() {
        return Err("timeZone must be nil or non-empty string".into());
    }
    if name.eq_ignore_ascii_case("local") {
        return Err(
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones"
                .into(),
        );
    }
    let part_ok = |p: &str| {
        p != "."
            && p != ".."
            && !p.starts_with('-')
            && (1..=14).contains(&p.len())
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'))
    };
    if !name.split('/').all(part_ok) {
        return Err(format!("unknown time zone {name}"));
    }
    TimeZone::get(name).map_err(|_| format!("unknown time zone {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("a test timestamp")
    }

    fn next(s: &str, after: &str, tz: &str) -> String {
        let tz = time_zone(tz).expect("a test zone");
        Schedule::parse(s)
            .expect("a valid schedule")
            .next_after(ts(after), &tz)
            .map(|t| t.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn accepts_what_kubernetes_accepts() {
        for s in [
            "*/5 * * * *",
            "0 9-17 * jan-jun mon-fri",
            "0 0 ? * SUN",
            "5/15 * * * *",
            "@hourly",
            "@daily",
            "@midnight",
            "@weekly",
            "@monthly",
            "@yearly",
            "@annually",
            "@every 1h30m",
            "@every 90s",
        ] {
            assert!(Schedule::parse(s).is_ok(), "{s} should parse");
        }
    }

    #[test]
    fn refuses_the_rest() {
        for s in [
            "",
            "* * *",
            "* * * * * *",
            "61 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * L * *",
            "* * * * 5#3",
            "* * * mon *",
            "*/0 * * * *",
            "5-1 * * * *",
            "@fortnightly",
            "@every soon",
            "TZ=UTC * * * * *",
            "CRON_TZ=UTC 0 * * * *",
        ] {
            assert!(Schedule::parse(s).is_err(), "{s:?} should be refused");
        }
    }

    #[test]
    fn next_times_follow_the_fields() {
        assert_eq!(
            next("*/15 * * * *", "2024-01-01T10:07:30Z", "UTC"),
            "2024-01-01T10:15:00Z"
        );
        assert_eq!(
            next("@hourly", "2024-01-01T10:00:00Z", "UTC"),
            "2024-01-01T11:00:00Z"
        );
        // 2024-01-01 is a Monday: weekdays only skips to Monday next week.
        assert_eq!(
            next("0 9 * * mon-fri", "2024-01-05T10:00:00Z", "UTC"),
            "2024-01-08T09:00:00Z"
        );
        // Both days restricted: either matches (the 1st, or a Sunday).
        assert_eq!(
            next("0 0 1 * sun", "2024-01-02T00:00:00Z", "UTC"),
            "2024-01-07T00:00:00Z"
        );
        assert_eq!(
            next("@every 90s", "2024-01-01T00:00:00.5Z", "UTC"),
            "2024-01-01T00:01:30Z"
        );
    }

    #[test]
    fn time_zones_shift_the_wall_clock() {
        assert_eq!(
            next("0 9 * * *", "2024-01-01T00:00:00Z", "Asia/Tokyo"),
            "2024-01-02T00:00:00Z"
        );
        // 02:30 does not exist in Paris on 2024-03-31 (spring forward):
        // it fires as the gap ends, 03:00 CEST.
        assert_eq!(
            next("30 2 * * *", "2024-03-30T02:00:00Z", "Europe/Paris"),
            "2024-03-31T01:00:00Z"
        );
        assert_eq!(
            next("30 2 * * *", "2024-03-31T01:00:00Z", "Europe/Paris"),
            "2024-04-01T00:30:00Z"
        );
    }

    #[test]
    fn the_latest_missed_time_is_found() {
        let utc = TimeZone::UTC;
        let s = Schedule::parse("*/10 * * * *").unwrap();
        let t = s.latest_between(ts("2024-01-01T00:00:00Z"), ts("2024-01-01T01:05:00Z"), &utc);
        assert_eq!(t, Some(ts("2024-01-01T01:00:00Z")));
        let none = s.latest_between(ts("2024-01-01T01:00:00Z"), ts("2024-01-01T01:05:00Z"), &utc);
        assert_eq!(none, None);
        let every = Schedule::parse("@every 1h").unwrap();
        let t = every.latest_between(ts("2024-01-01T00:00:10Z"), ts("2024-01-01T03:30:00Z"), &utc);
        assert_eq!(t, Some(ts("2024-01-01T03:00:10Z")));
    }

    #[test]
    fn a_schedule_that_never_fires_finds_nothing() {
        let utc = TimeZone::UTC;
        let s = Schedule::parse("0 0 30 2 *").expect("valid syntax");
        assert_eq!(s.next_after(ts("2024-01-01T00:00:00Z"), &utc), None);
        let t = s.latest_between(ts("2024-01-01T00:00:00Z"), ts("2026-01-01T00:00:00Z"), &utc);
        assert_eq!(t, None);
    }

    #[test]
    fn time_zone_names() {
        assert!(time_zone("Europe/Paris").is_ok());
        assert!(time_zone("UTC").is_ok());
        for bad in [
            "",
            "Local",
            "Mars/Olympus",
            "../etc/passwd",
            "Europe/-Paris",
        ] {
            assert!(time_zone(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
