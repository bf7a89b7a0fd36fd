//! Watch checker: a correct stream passes; each broken guarantee is caught and
//! named, without blaming the others.

use std::collections::BTreeSet;

use keel_chaos::watch::{
    check_watcher, check_watchers, CommittedLog, Event, Guarantee, KeyRange, ProgressNotify,
    WatchItem, WatcherLog,
};
use keel_chaos::Verdict;

/// rev 2 put a=1, rev 3 put b=1, rev 4 put a=2, rev 5 delete a, rev 6 put c=1.
fn log() -> CommittedLog {
    CommittedLog::new(vec![
        Event::put(2, "a", "1"),
        Event::put(3, "b", "1"),
        Event::put(4, "a", "2"),
        Event::delete(5, "a"),
        Event::put(6, "c", "1"),
    ])
    .unwrap()
}

/// Watches [a, c): keys a and b, not c.
fn range() -> KeyRange {
    KeyRange {
        key: "a".into(),
        range_end: "c".into(),
    }
}

fn ev(e: Event) -> WatchItem {
    WatchItem::Event(e)
}

fn progress(revision: i64, min_revision: Option<i64>) -> WatchItem {
    WatchItem::Progress(ProgressNotify {
        revision,
        requested_at: Some(1000),
        min_revision,
    })
}

fn resume(from_revision: i64) -> WatchItem {
    WatchItem::Resume { from_revision }
}

fn e2() -> WatchItem {
    ev(Event::put(2, "a", "1"))
}
fn e3() -> WatchItem {
    ev(Event::put(3, "b", "1"))
}
fn e4() -> WatchItem {
    ev(Event::put(4, "a", "2"))
}
fn e5() -> WatchItem {
    ev(Event::delete(5, "a"))
}

fn watcher(items: Vec<WatchItem>) -> WatcherLog {
    WatcherLog {
        name: "w".into(),
        range: range(),
        start_revision: 2,
        items,
    }
}

fn violated(items: Vec<WatchItem>) -> BTreeSet<Guarantee> {
    let w = watcher(items);
    let v = check_watcher(&log(), &w);
    for x in &v {
        println!("{x}");
    }
    v.into_iter().map(|x| x.guarantee).collect()
}

fn only(g: Guarantee) -> BTreeSet<Guarantee> {
    BTreeSet::from([g])
}

#[test]
fn complete_stream_with_progress_passes() {
    assert_eq!(
        violated(vec![e2(), e3(), e4(), e5(), progress(6, Some(6))]),
        BTreeSet::new()
    );
    // Progress interleaved, each after what it covers.
    assert_eq!(
        violated(vec![
            progress(1, Some(1)),
            e2(),
            progress(2, None),
            e3(),
            e4(),
            progress(4, Some(3)),
            e5()
        ]),
        BTreeSet::new()
    );
}

#[test]
fn resumed_stream_passes() {
    assert_eq!(
        violated(vec![
            e2(),
            e3(),
            resume(4),
            e4(),
            e5(),
            progress(6, Some(6))
        ]),
        BTreeSet::new()
    );
    // Resuming after a progress notification that covered the silent revision 6.
    assert_eq!(
        violated(vec![e2(), e3(), e4(), e5(), progress(6, None), resume(7)]),
        BTreeSet::new()
    );
}

#[test]
fn partial_stream_is_not_a_gap() {
    // The watcher simply has not seen 4 and 5 yet: nothing missing up to rev 3.
    assert_eq!(violated(vec![e2(), e3()]), BTreeSet::new());
    assert_eq!(violated(vec![]), BTreeSet::new());
}

#[test]
fn watch_from_a_later_revision() {
    let w = WatcherLog {
        start_revision: 4,
        ..watcher(vec![e4(), e5(), progress(6, Some(6))])
    };
    assert!(check_watcher(&log(), &w).is_empty());
}

#[test]
fn gap_breaks_reliable() {
    assert_eq!(violated(vec![e2(), e3(), e5()]), only(Guarantee::Reliable));
    let v = check_watcher(&log(), &watcher(vec![e2(), e3(), e5()]));
    assert!(
        v[0].message
            .contains("rev 4 put \"a\" = \"2\" was never delivered"),
        "{}",
        v[0]
    );
}

#[test]
fn duplicate_breaks_unique() {
    assert_eq!(
        violated(vec![e2(), e3(), e3(), e4()]),
        only(Guarantee::Unique)
    );
}

#[test]
fn out_of_order_breaks_ordered() {
    assert_eq!(
        violated(vec![e2(), e4(), e3(), e5()]),
        only(Guarantee::Ordered)
    );
}

#[test]
fn progress_going_back_breaks_ordered() {
    assert_eq!(
        violated(vec![e2(), e3(), e4(), progress(3, None)]),
        only(Guarantee::Ordered)
    );
}

#[test]
fn wrong_value_breaks_matches_log() {
    let wrong = ev(Event::put(4, "a", "WRONG"));
    assert_eq!(
        violated(vec![e2(), e3(), wrong, e5()]),
        only(Guarantee::MatchesLog)
    );
    let wrong_type = ev(Event::delete(4, "a"));
    assert_eq!(
        violated(vec![e2(), e3(), wrong_type, e5()]),
        only(Guarantee::MatchesLog)
    );
    let v = check_watcher(
        &log(),
        &watcher(vec![e2(), e3(), ev(Event::put(4, "a", "WRONG"))]),
    );
    assert!(
        v[0].message
            .contains("but committed was rev 4 put \"a\" = \"2\""),
        "{}",
        v[0]
    );
}

#[test]
fn progress_before_events_delivered_breaks_bookmarkable() {
    assert_eq!(
        violated(vec![e2(), e3(), progress(4, None), e4(), e5()]),
        only(Guarantee::Bookmarkable)
    );
}

#[test]
fn progress_below_min_revision_breaks_bookmarkable() {
    // Revision 6 (key c) was acknowledged before the progress request.
    assert_eq!(
        violated(vec![e2(), e3(), e4(), e5(), progress(5, Some(6))]),
        only(Guarantee::Bookmarkable)
    );
    let v = check_watcher(
        &log(),
        &watcher(vec![e2(), e3(), e4(), e5(), progress(5, Some(6))]),
    );
    assert!(v[0].message.contains("below 6"), "{}", v[0]);
}

#[test]
fn resume_skipping_an_event_breaks_resumable() {
    let v = violated(vec![e2(), e3(), resume(4), e5()]);
    assert!(v.contains(&Guarantee::Resumable), "{v:?}");
    // The gap is also a Reliable violation; nothing else is blamed.
    assert_eq!(
        v,
        BTreeSet::from([Guarantee::Resumable, Guarantee::Reliable])
    );
}

#[test]
fn resume_restarting_below_the_resume_point_breaks_resumable() {
    let v = violated(vec![e2(), resume(3), e2(), e3()]);
    assert!(v.contains(&Guarantee::Resumable), "{v:?}");
}

#[test]
fn event_outside_range_or_before_start_breaks_filter() {
    assert_eq!(
        violated(vec![e2(), e3(), e4(), e5(), ev(Event::put(6, "c", "1"))]),
        only(Guarantee::Filter)
    );
    let w = WatcherLog {
        start_revision: 3,
        ..watcher(vec![e2(), e3()])
    };
    let v: Vec<Guarantee> = check_watcher(&log(), &w)
        .into_iter()
        .map(|v| v.guarantee)
        .collect();
    assert_eq!(v, vec![Guarantee::Filter]);
}

#[test]
fn uncommitted_event_breaks_matches_log() {
    assert!(violated(vec![e2(), ev(Event::put(3, "a", "x"))]).contains(&Guarantee::MatchesLog));
}

#[test]
fn split_revision_breaks_atomic() {
    // A transaction wrote a and b at revision 7.
    let log = CommittedLog::new(vec![Event::put(7, "a", "t"), Event::put(7, "b", "t")]).unwrap();
    let ok = WatcherLog {
        name: "w".into(),
        range: KeyRange::from_key("\0"),
        start_revision: 7,
        items: vec![
            ev(Event::put(7, "a", "t")),
            ev(Event::put(7, "b", "t")),
            progress(7, Some(7)),
        ],
    };
    assert!(check_watcher(&log, &ok).is_empty());
    let split = WatcherLog {
        items: vec![
            ev(Event::put(7, "a", "t")),
            resume(7),
            ev(Event::put(7, "b", "t")),
        ],
        ..ok.clone()
    };
    let v: BTreeSet<Guarantee> = check_watcher(&log, &split)
        .into_iter()
        .map(|v| v.guarantee)
        .collect();
    assert!(v.contains(&Guarantee::Atomic), "{v:?}");
}

#[test]
fn report_names_the_watcher_and_fails_the_verdict() {
    let good = watcher(vec![e2(), e3()]);
    let bad = WatcherLog {
        name: "bad".into(),
        ..watcher(vec![e2(), e3(), e3()])
    };
    let report = check_watchers(&log(), &[good, bad]);
    assert_eq!(report.violated("w"), BTreeSet::new());
    assert_eq!(report.violated("bad"), only(Guarantee::Unique));
    match report.verdict() {
        Verdict::Fail(why) => assert!(
            why.contains("watcher \"bad\": Unique violated at item 2"),
            "{why}"
        ),
        v => panic!("{v}"),
    }
}

#[test]
fn committed_log_from_history() {
    use keel_chaos::history::{Call, History, OkResult, Operation, Outcome};
    let op = |id, call, outcome| Operation {
        id,
        process: id,
        invoke: 0,
        complete: Some(1),
        call,
        outcome,
    };
    let h = History::new(vec![
        op(
            1,
            Call::Put {
                key: "a".into(),
                value: "1".into(),
            },
            Outcome::Ok(OkResult::Put { revision: 2 }),
        ),
        op(
            2,
            Call::Cas {
                key: "a".into(),
                expected: Some("1".into()),
                new: "2".into(),
            },
            Outcome::Ok(OkResult::Cas {
                succeeded: true,
                revision: 3,
            }),
        ),
        op(
            3,
            Call::Cas {
                key: "a".into(),
                expected: None,
                new: "x".into(),
            },
            Outcome::Ok(OkResult::Cas {
                succeeded: false,
                revision: 3,
            }),
        ),
        op(
            4,
            Call::Delete { key: "a".into() },
            Outcome::Ok(OkResult::Delete {
                deleted: true,
                revision: 4,
            }),
        ),
        op(
            5,
            Call::Delete { key: "b".into() },
            Outcome::Ok(OkResult::Delete {
                deleted: false,
                revision: 4,
            }),
        ),
    ]);
    let log = CommittedLog::from_history(&h).unwrap();
    assert_eq!(
        log.events(),
        &[
            Event::put(2, "a", "1"),
            Event::put(3, "a", "2"),
            Event::delete(4, "a")
        ]
    );
}
