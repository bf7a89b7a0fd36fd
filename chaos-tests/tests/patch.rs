//! Resolving unknown writes with the committed log makes the checker stronger.

mod support;

use keel_chaos::history::{OkResult, Outcome};
use keel_chaos::linearizability::{check_linearizability, LinearizabilityConfig};
use keel_chaos::patch::{resolve_unknown_writes, PatchStats};
use keel_chaos::watch::{CommittedLog, Event};
use keel_chaos::{check_all, CheckConfig, CheckInput, Verdict};
use support::H;

fn lin(h: &keel_chaos::history::History) -> Verdict {
    check_linearizability(h, &LinearizabilityConfig::default())
        .unwrap()
        .verdict()
}

#[test]
fn unknown_write_absent_from_the_log_becomes_fail() {
    // The read of "2" is only explainable if the unknown put happened; the log
    // says it did not, so the read saw a value that was never committed.
    let h = H::new()
        .put(1, 0, 1, "x", "1", 2)
        .put_info(2, 2, "x", "2")
        .cas_info(3, 3, "x", Some("1"), "3")
        .delete_info(4, 4, "y")
        .get(5, 10, 11, "x", Some("2"), 2)
        .build();
    let log = CommittedLog::new(vec![Event::put(2, "x", "1"), Event::put(3, "x", "3")]).unwrap();
    assert_eq!(lin(&h), Verdict::Pass);

    let (patched, stats) = resolve_unknown_writes(&h, &log);
    // The CAS happened at revision 3, but no op reported revision >= 3, so it
    // stays unknown; the put and the delete had no effect.
    assert_eq!(
        stats,
        PatchStats {
            happened_bounded: 0,
            happened: 1,
            never_happened: 2,
            unresolved: 0
        }
    );
    patched.validate().unwrap();
    assert_eq!(patched.ops[1].outcome, Outcome::Fail);
    assert_eq!(patched.ops[2].outcome, Outcome::Info);
    assert_eq!(patched.ops[3].outcome, Outcome::Fail);
    assert!(lin(&patched).is_fail());

    // check_all patches by default when given the log.
    let input = CheckInput {
        history: &h,
        committed: Some(&log),
        watchers: &[],
        final_read: None,
    };
    let report = check_all(&input, &CheckConfig::default()).unwrap();
    assert!(report.linearizability.is_fail(), "{report}");
    assert!(matches!(report.durability, Verdict::Unknown(_)));
    let unpatched = CheckConfig {
        resolve_unknown_writes: false,
        ..CheckConfig::default()
    };
    assert!(check_all(&input, &unpatched)
        .unwrap()
        .linearizability
        .is_pass());
}

#[test]
fn unknown_write_in_the_log_is_bounded_by_a_later_revision() {
    // The unknown put landed at revision 3; a read completing at 21 reported
    // revision 3, so the put took effect before 21. Reading "1" after that is stale.
    let h = H::new()
        .put(1, 0, 1, "x", "1", 2)
        .put_info(2, 2, "x", "2")
        .get(3, 20, 21, "y", None, 3)
        .get(3, 30, 31, "x", Some("1"), 3)
        .build();
    let log = CommittedLog::new(vec![Event::put(2, "x", "1"), Event::put(3, "x", "2")]).unwrap();
    assert_eq!(lin(&h), Verdict::Pass);
    let (patched, stats) = resolve_unknown_writes(&h, &log);
    assert_eq!(stats.happened_bounded, 1);
    assert_eq!(patched.ops[1].complete, Some(21));
    assert_eq!(
        patched.ops[1].outcome,
        Outcome::Ok(OkResult::Put { revision: 3 })
    );
    patched.validate().unwrap();
    assert!(lin(&patched).is_fail());
}

#[test]
fn unknown_delete_matched_by_an_unexplained_delete_event() {
    let h = H::new()
        .put(1, 0, 1, "x", "1", 2)
        .delete_info(2, 2, "x")
        .get(3, 20, 21, "x", None, 3)
        .build();
    let log = CommittedLog::new(vec![Event::put(2, "x", "1"), Event::delete(3, "x")]).unwrap();
    let (patched, stats) = resolve_unknown_writes(&h, &log);
    assert_eq!(stats.happened_bounded, 1);
    assert_eq!(
        patched.ops[1].outcome,
        Outcome::Ok(OkResult::Delete {
            deleted: true,
            revision: 3
        })
    );
    assert_eq!(lin(&patched), Verdict::Pass);
}
