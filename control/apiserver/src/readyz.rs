//! `/readyz`: whether this replica should get traffic, as Kubernetes
//! reports it: one `[+]name ok` / `[-]name failed: reason` line per check,
//! then `readyz check passed|failed`. A passing replica answers just `ok`
//! unless `?verbose` is given; a failing one always lists every check and
//! answers 503. `?exclude=name` (repeatable) skips a check and
//! `/readyz/name` runs one alone (404 for a name that is no check), as in
//! Kubernetes.
//!
//! Checks, cheapest first:
//! - `ping`: the server answers.
//! - `etcd-member`: this replica is a voting member of the raft cluster;
//!   a learner still catching up, or a replica that was removed (or is not
//!   yet added), is not ready.
//! - `etcd-leader`: it knows a leader that a quorum follows (the store's
//!   check-quorum view: a leader cut off from its quorum reports none).
//! - `etcd`: a linearizable read completes within 2 s, so it has applied
//!   everything committed before the check.

use std::time::Duration;

use keel_store::Store;

/// One check's outcome: `Err` holds the reason shown after `failed:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub result: Result<(), String>,
}

/// The checks `/readyz` runs, in order.
pub const CHECKS: [&str; 4] = ["ping", "etcd-member", "etcd-leader", "etcd"];

/// How long the `etcd` check waits for a linearizable read.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// `etcd-member` from the replica's membership.
pub fn member_check(is_member: bool, is_learner: bool) -> Result<(), String> {
    if !is_member {
        Err("this replica is not a member of the cluster (removed, or not yet added)".into())
    } else if is_learner {
        Err("this replica is a learner: not promoted to voter yet".into())
    } else {
        Ok(())
    }
}

/// Runs the checks named in `only` (all when empty) minus `exclude`.
pub async fn run(store: &Store, only: &[String], exclude: &[String]) -> Vec<Check> {
    let wanted = |name: &str| {
        (only.is_empty() || only.iter().any(|o| o == name)) && !exclude.iter().any(|e| e == name)
    };
    let mut out = Vec::new();
    if wanted("ping") {
        out.push(Check {
            name: "ping",
            result: Ok(()),
        });
    }
    if wanted("etcd-member") {
        let id = store.member_id();
        out.push(Check {
            name: "etcd-member",
            result: member_check(store.is_member(), store.is_learner(id)),
        });
    }
    let leader = store.current_leader();
    if wanted("etcd-leader") {
        out.push(Check {
            name: "etcd-leader",
            result: match leader {
                Some(_) => Ok(()),
                None => Err("no leader that a quorum follows".into()),
            },
        });
    }
    if wanted("etcd") {
        let result = if leader.is_none() {
            Err("no leader: linearizable reads would fail".into())
        } else {
            match tokio::time::timeout(READ_TIMEOUT, store.read_barrier()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("linearizable read failed: {e}")),
                Err(_) => Err(format!(
                    "linearizable read did not complete within {READ_TIMEOUT:?}"
                )),
            }
        };
        out.push(Check {
            name: "etcd",
            result,
        });
    }
    out
}

/// The error for a `/readyz/name` that names no check (Kubernetes: 404).
pub fn unknown(only: &[String]) -> Option<String> {
    let bad = only.iter().find(|o| !CHECKS.contains(&o.as_str()))?;
    Some(format!(
        "no readyz check named {bad:?} (checks: {})",
        CHECKS.join(", ")
    ))
}

/// The HTTP code and body for `checks`.
pub fn render(checks: &[Check], verbose: bool) -> (u16, String) {
    let passed = checks.iter().all(|c| c.result.is_ok());
    if passed && !verbose {
        return (200, "ok".into());
    }
    let mut body = String::new();
    for c in checks {
        match &c.result {
            Ok(()) => body.push_str(&format!("[+]{} ok\n", c.name)),
            Err(why) => body.push_str(&format!("[-]{} failed: {why}\n", c.name)),
        }
    }
    if passed {
        body.push_str("readyz check passed\n");
        (200, body)
    } else {
        body.push_str("readyz check failed\n");
        (503, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_check_refuses_learners_and_non_members() {
        assert_eq!(member_check(true, false), Ok(()));
        assert!(member_check(true, true).unwrap_err().contains("learner"));
        assert!(member_check(false, true)
            .unwrap_err()
            .contains("not a member"));
    }

    #[test]
    fn renders_kubernetes_style() {
        let ok = |name| Check {
            name,
            result: Ok(()),
        };
        assert_eq!(render(&[ok("ping"), ok("etcd")], false), (200, "ok".into()));
        assert_eq!(
            render(&[ok("ping"), ok("etcd")], true),
            (200, "[+]ping ok\n[+]etcd ok\nreadyz check passed\n".into())
        );
        let bad = Check {
            name: "etcd-leader",
            result: Err("no leader".into()),
        };
        assert_eq!(
            render(&[ok("ping"), bad], false),
            (
                503,
                "[+]ping ok\n[-]etcd-leader failed: no leader\nreadyz check failed\n".into()
            )
        );
    }
}
