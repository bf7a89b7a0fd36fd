//! Durability checker: acknowledged writes survive or are superseded; lost ones fail.

mod support;

use std::collections::BTreeMap;

use keel_chaos::durability::{check_durability, DurabilityViolation, FinalRead};
use keel_chaos::history::History;
use support::H;

fn final_read(revision: i64, kv: &[(&str, Option<&str>)]) -> FinalRead {
    FinalRead {
        revision,
        values: kv
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn violations(h: &History, read: &FinalRead) -> Vec<DurabilityViolation> {
    let v = check_durability(h, read).unwrap().violations;
    for x in &v {
        println!("{x}");
    }
    v
}

#[test]
fn last_acknowledged_write_present() {
    let h = H::new()
        .put(1, 0, 1, "x", "1", 2)
        .put(1, 2, 3, "x", "2", 3)
        .build();
    assert!(violations(&h, &final_read(3, &[("x", Some("2"))])).is_empty());
}

#[test]
fn concurrent_acknowledged_writes_either_may_win() {
    let h = H::new()
        .put(1, 0, 10, "x", "1", 2)
        .put(2, 5, 15, "x", "2", 3)
        .build();
    assert!(violations(&h, &final_read(3, &[("x", Some("1"))])).is_empty());
    assert!(violations(&h, &final_read(3, &[("x", Some("2"))])).is_empty());
}

#[test]
fn superseded_by_unknown_write_or_delete() {
    let h = H::new()
        .put(1, 0, 1, "x", "1", 2)
        .put_info(2, 2, "x", "2")
        .build();
    assert!(violations(&h, &final_read(3, &[("x", Some("2"))])).is_empty());
    assert!(violations(&h, &final_read(3, &[("x", Some("1"))])).is_empty());
    let h = H::new()
        .put(1, 0, 1, "x", "1", 2)
        .delete(1, 2, 3, "x", true, 3)
        .build();
    assert!(violations(&h, &final_read(3, &[])).is_empty());
    let h = H::new()
        .put(1, 0, 1, "x", "1", 2)
        .delete_info(2, 2, "x")
        .build();
    assert!(violations(&h, &final_read(3, &[("x", None)])).is_empty());
}

#[test]
fn lost_acknowledged_write_fails() {
    let h = H::new().put(1, 0, 1, "x", "1", 2).build();
    let v = violations(&h, &final_read(2, &[]));
    assert!(
        matches!(&v[..], [DurabilityViolation::LostWrite { key, last_acknowledged, .. }]
            if key == "x" && last_acknowledged.len() == 1 && last_acknowledged[0].id == 1),
        "{v:?}"
    );
    assert!(v[0].to_string().contains("lost write on key \"x\""));
}

#[test]
fn rollback_to_an_older_value_fails() {
    let h = H::new()
        .put(1, 0, 1, "x", "1", 2)
        .put(1, 2, 3, "x", "2", 3)
        .build();
    let v = violations(&h, &final_read(3, &[("x", Some("1"))]));
    assert!(
        matches!(&v[..], [DurabilityViolation::LostWrite { last_acknowledged, .. }] if last_acknowledged[0].id == 2),
        "{v:?}"
    );
}

#[test]
fn failed_ops_do_not_supersede() {
    let h = H::new()
        .put(1, 0, 1, "x", "1", 2)
        .put_fail(1, 2, 3, "x", "2")
        .cas(1, 4, 5, "x", Some("0"), "3", false, 2)
        .build();
    assert!(violations(&h, &final_read(2, &[("x", Some("1"))])).is_empty());
    assert_eq!(violations(&h, &final_read(2, &[("x", Some("2"))])).len(), 1);
    assert_eq!(violations(&h, &final_read(2, &[("x", Some("3"))])).len(), 1);
}

#[test]
fn phantom_value_fails() {
    let h = H::new().put(1, 0, 1, "x", "1", 2).build();
    let v = violations(&h, &final_read(2, &[("x", Some("1")), ("y", Some("boo"))]));
    assert!(
        matches!(&v[..], [DurabilityViolation::PhantomValue { key, .. }] if key == "y"),
        "{v:?}"
    );
}

#[test]
fn final_revision_below_an_acknowledged_write_fails() {
    let h = H::new().put(1, 0, 1, "x", "1", 5).build();
    let v = violations(&h, &final_read(4, &[("x", Some("1"))]));
    assert!(
        matches!(
            &v[..],
            [DurabilityViolation::RevisionRegressed {
                final_revision: 4,
                ..
            }]
        ),
        "{v:?}"
    );
}
