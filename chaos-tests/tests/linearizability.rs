//! Hand-written histories for the linearizability checker: linearizable ones
//! must pass, each classic anomaly must fail with a report that names it.

mod support;

use keel_chaos::history::History;
use keel_chaos::linearizability::{
    check_linearizability, FailureWindow, KeyVerdict, LinearizabilityConfig, LinearizabilityReport,
    RevisionViolationKind,
};
use keel_chaos::Verdict;
use support::H;

fn check(h: &History) -> LinearizabilityReport {
    check_linearizability(h, &LinearizabilityConfig::default()).unwrap()
}

fn assert_pass(h: &History) {
    let r = check(h);
    assert_eq!(r.verdict(), Verdict::Pass, "{}", r.verdict());
}

/// Asserts `key` is not linearizable and there are no revision violations;
/// returns the failure window.
fn assert_not_linearizable(h: &History, key: &str) -> FailureWindow {
    let r = check(h);
    assert!(
        r.revisions.is_empty(),
        "unexpected revision violations: {:?}",
        r.revisions
    );
    let verdict = r.verdict();
    assert!(verdict.is_fail(), "expected a failure, got {verdict}");
    match r.keys.get(key) {
        Some(KeyVerdict::NotLinearizable { key: k, window }) => {
            assert_eq!(k, key);
            println!("{window}");
            (**window).clone()
        }
        other => panic!("expected {key:?} not linearizable, got {other:?}"),
    }
}

fn assert_revision_violation(h: &History, kind: RevisionViolationKind) -> String {
    let r = check(h);
    assert!(
        r.keys.values().all(|v| *v == KeyVerdict::Linearizable),
        "per-key search should pass here: {:?}",
        r.keys
    );
    assert!(
        r.revisions.iter().any(|v| v.kind == kind),
        "expected {kind:?}, got {:?}",
        r.revisions
    );
    match r.verdict() {
        Verdict::Fail(why) => why,
        v => panic!("expected a failure, got {v}"),
    }
}

// ---------------------------------------------------------------- passing

#[test]
fn concurrent_overlapping_writes_and_reads() {
    let h = H::new()
        .get(4, 0, 1, "x", None, 1) // before anything was written
        .put(1, 2, 10, "x", "1", 2)
        .put(2, 5, 15, "x", "2", 3) // overlaps put 1
        .get(3, 6, 12, "x", Some("2"), 3) // overlaps both: sees the later one already
        .get(4, 7, 9, "x", Some("1"), 2) // overlaps both: sees the first only
        .get(1, 16, 20, "x", Some("2"), 3)
        .put(1, 21, 30, "y", "a", 4)
        .get(2, 22, 25, "y", None, 3) // concurrent with the put: old value is fine
        .get(3, 31, 32, "y", Some("a"), 4)
        .build();
    assert_pass(&h);
}

#[test]
fn cas_success_and_failure() {
    let h = H::new()
        .put(1, 0, 1, "x", "a", 2)
        .cas(1, 2, 5, "x", Some("a"), "b", true, 3)
        .cas(2, 3, 6, "x", Some("a"), "c", false, 3) // lost the race: ok, not succeeded
        .get(3, 7, 8, "x", Some("b"), 3)
        .cas(3, 9, 10, "y", None, "new", true, 4) // create-if-absent
        .cas(3, 11, 12, "y", None, "again", false, 4)
        .delete(1, 13, 14, "y", true, 5)
        .delete(1, 15, 16, "y", false, 5) // nothing to delete: ok, not deleted
        .get(2, 17, 18, "y", None, 5)
        .build();
    assert_pass(&h);
}

#[test]
fn indeterminate_write_that_took_effect() {
    let h = H::new()
        .put(1, 0, 1, "x", "1", 2)
        .put_info(2, 2, "x", "2") // timed out, but happened
        .get(3, 10, 11, "x", Some("2"), 3)
        .get(3, 12, 13, "x", Some("2"), 3)
        .build();
    assert_pass(&h);
}

#[test]
fn indeterminate_write_that_never_took_effect() {
    let h = H::new()
        .put(1, 0, 1, "x", "1", 2)
        .put_info(2, 2, "x", "2")
        .cas_info(3, 3, "x", Some("nope"), "3") // compare could never match
        .delete_info(4, 4, "z")
        .get(5, 10, 11, "x", Some("1"), 2)
        .get(5, 20, 21, "x", Some("1"), 2)
        .build();
    assert_pass(&h);
}

#[test]
fn indeterminate_write_that_took_effect_late() {
    // Long after the client gave up, the write lands: reads see the old value,
    // then the new one.
    let h = H::new()
        .put(1, 0, 1, "x", "1", 2)
        .put_info(2, 2, "x", "2")
        .get(3, 10, 11, "x", Some("1"), 2)
        .get(3, 100, 101, "x", Some("2"), 3)
        .build();
    assert_pass(&h);
}

#[test]
fn failed_ops_and_unknown_reads_are_ignored() {
    let h = H::new()
        .put(1, 0, 1, "x", "1", 2)
        .put_fail(2, 2, 3, "x", "never") // certainly did not happen
        .get_info(3, 4, "x")
        .get(4, 10, 11, "x", Some("1"), 2)
        .build();
    assert_pass(&h);
}

#[test]
fn serializable_reads_may_be_stale() {
    let h = H::new()
        .put(1, 0, 1, "x", "1", 2)
        .put(1, 2, 3, "x", "2", 3)
        .get_serializable(2, 10, 11, "x", Some("1"), 2) // stale, and its revision too
        .build();
    assert_pass(&h);
}

// ---------------------------------------------------------------- failing

#[test]
fn stale_read_after_completed_write() {
    let h = H::new()
        .put(1, 0, 10, "x", "1", 2)
        .put(2, 20, 30, "x", "2", 3)
        .get(3, 40, 50, "x", Some("1"), 3)
        .build();
    let w = assert_not_linearizable(&h, "x");
    assert_eq!(
        w.stuck.id, 3,
        "the stale read is the op that cannot be placed"
    );
    assert_eq!(w.linearized, 2);
    assert_eq!(w.state.as_deref(), Some("2"));
    let text = w.to_string();
    assert!(
        text.contains("it read \"1\" but the register holds \"2\""),
        "{text}"
    );
    assert!(text.contains("get \"x\" -> ok \"1\" rev=3"), "{text}");
}

#[test]
fn read_of_a_value_never_written() {
    let h = H::new()
        .put(1, 0, 10, "x", "1", 2)
        .get(2, 5, 15, "x", Some("ghost"), 2)
        .build();
    let w = assert_not_linearizable(&h, "x");
    assert_eq!(w.stuck.id, 2);
    assert!(w.to_string().contains("it read \"ghost\""), "{w}");
}

#[test]
fn lost_update_two_cas_from_the_same_value() {
    let h = H::new()
        .put(1, 0, 1, "x", "0", 2)
        .cas(1, 2, 10, "x", Some("0"), "a", true, 3)
        .cas(2, 3, 11, "x", Some("0"), "b", true, 4)
        .build();
    let w = assert_not_linearizable(&h, "x");
    let text = w.to_string();
    assert!(text.contains("compare against \"0\" succeeded"), "{text}");
}

#[test]
fn read_going_back_in_time() {
    // Once a read saw "2", a later read cannot see "1" again.
    let h = H::new()
        .put(1, 0, 1, "x", "1", 2)
        .put(2, 2, 100, "x", "2", 3)
        .get(3, 3, 4, "x", Some("2"), 3)
        .get(3, 5, 6, "x", Some("1"), 3)
        .build();
    let w = assert_not_linearizable(&h, "x");
    assert_eq!(w.stuck.id, 4);
}

#[test]
fn read_going_back_in_time_after_an_unknown_write() {
    let h = H::new()
        .put(1, 0, 1, "x", "1", 2)
        .put_info(2, 2, "x", "2")
        .get(3, 10, 11, "x", Some("2"), 3)
        .get(3, 12, 13, "x", Some("1"), 3)
        .build();
    assert_not_linearizable(&h, "x");
}

#[test]
fn wrong_delete_and_failed_cas_outcomes() {
    let h = H::new()
        .put(1, 0, 1, "x", "1", 2)
        .delete(1, 2, 3, "x", false, 2) // the key was there
        .build();
    assert_not_linearizable(&h, "x");
    let h = H::new()
        .put(1, 0, 1, "x", "1", 2)
        .cas(1, 2, 3, "x", Some("1"), "2", false, 2) // compare should have matched
        .build();
    assert_not_linearizable(&h, "x");
}

#[test]
fn only_the_bad_key_fails() {
    let h = H::new()
        .put(1, 0, 1, "good", "1", 2)
        .get(1, 2, 3, "good", Some("1"), 2)
        .put(2, 0, 1, "bad", "1", 3)
        .get(2, 4, 5, "bad", None, 3)
        .build();
    let r = check(&h);
    assert_eq!(r.keys["good"], KeyVerdict::Linearizable);
    assert!(matches!(r.keys["bad"], KeyVerdict::NotLinearizable { .. }));
}

// ---------------------------------------------------------------- revisions

#[test]
fn write_revision_lower_than_a_completed_write() {
    let why = assert_revision_violation(
        &H::new()
            .put(1, 0, 1, "x", "1", 5)
            .put(2, 2, 3, "y", "1", 4)
            .build(),
        RevisionViolationKind::NotMonotonic,
    );
    assert!(why.contains("revision went backwards"), "{why}");
    assert!(why.contains("rev=5") && why.contains("rev=4"), "{why}");
}

#[test]
fn write_revision_equal_to_a_completed_write() {
    assert_revision_violation(
        &H::new()
            .put(1, 0, 1, "x", "1", 5)
            .put(2, 2, 3, "y", "1", 5)
            .build(),
        RevisionViolationKind::NotMonotonic,
    );
}

#[test]
fn concurrent_writes_with_the_same_revision() {
    let why = assert_revision_violation(
        &H::new()
            .put(1, 0, 10, "x", "1", 3)
            .put(2, 1, 11, "y", "1", 3)
            .build(),
        RevisionViolationKind::DuplicateRevision,
    );
    assert!(why.contains("share a revision"), "{why}");
}

#[test]
fn linearizable_read_revision_below_a_completed_write() {
    assert_revision_violation(
        &H::new()
            .put(1, 0, 1, "x", "1", 5)
            .get(2, 2, 3, "y", None, 4)
            .build(),
        RevisionViolationKind::NotMonotonic,
    );
    // A serializable read may lag.
    assert_pass(
        &H::new()
            .put(1, 0, 1, "x", "1", 5)
            .get_serializable(2, 2, 3, "y", None, 4)
            .build(),
    );
}

#[test]
fn read_revision_going_back_across_keys() {
    assert_revision_violation(
        &H::new()
            .put(1, 0, 1, "x", "1", 5)
            .get(2, 2, 3, "y", None, 6)
            .get(2, 4, 5, "z", None, 5)
            .build(),
        RevisionViolationKind::NotMonotonic,
    );
}

#[test]
fn read_sees_a_write_from_above_its_revision() {
    let why = assert_revision_violation(
        &H::new()
            .put(1, 0, 10, "x", "1", 5)
            .get(2, 1, 2, "x", Some("1"), 4)
            .build(),
        RevisionViolationKind::ReadBelowObservedWrite,
    );
    assert!(why.contains("from its future"), "{why}");
}

#[test]
fn concurrent_revisions_in_any_order_pass() {
    // Overlapping ops may get revisions in either order.
    assert_pass(
        &H::new()
            .put(1, 0, 10, "x", "1", 3)
            .put(2, 1, 11, "y", "1", 2)
            .get(3, 2, 5, "z", None, 1)
            .build(),
    );
}

// ---------------------------------------------------------------- budget

#[test]
fn exhausted_budget_is_unknown_not_pass() {
    let mut h = H::new();
    for i in 0..6u64 {
        h.put(i + 1, i, 100, "x", &format!("v{i}"), i as i64 + 2);
    }
    h.get(100, 101, 102, "x", Some("v0"), 8);
    let h = h.build();
    let r = check_linearizability(
        &h,
        &LinearizabilityConfig {
            max_steps_per_key: 10,
        },
    )
    .unwrap();
    assert!(matches!(r.keys["x"], KeyVerdict::Unknown { .. }));
    assert!(
        matches!(r.verdict(), Verdict::Unknown(_)),
        "{}",
        r.verdict()
    );
    assert!(!r.verdict().is_pass());
    // With the default budget the same history is decided: v0 can be last.
    assert_pass(&h);
}
