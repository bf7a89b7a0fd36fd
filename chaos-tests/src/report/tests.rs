use super::*;
use crate::history::{Call, OkResult, Operation, Outcome};
use crate::sim::FaultSpan;

fn put(id: u64, process: u64, t: (u64, u64), value: &str, revision: i64) -> Operation {
    Operation {
        id,
        process,
        invoke: t.0,
        complete: Some(t.1),
        call: Call::Put {
            key: "k0".into(),
            value: value.into(),
        },
        outcome: Outcome::Ok(OkResult::Put { revision }),
    }
}

fn get(id: u64, process: u64, t: (u64, u64), value: Option<&str>, revision: i64) -> Operation {
    Operation {
        id,
        process,
        invoke: t.0,
        complete: Some(t.1),
        call: Call::Get {
            key: "k0".into(),
            linearizable: true,
        },
        outcome: Outcome::Ok(OkResult::Get {
            value: value.map(Into::into),
            revision,
        }),
    }
}

const MS: u64 = 1_000_000;

/// A stale read: `a` was written and acknowledged, then a later read (by
/// another process) still sees the old value. Plus unrelated ok ops.
fn stale_read_seed() -> SeedResult {
    let ops = vec![
        put(0, 0, (10 * MS, 20 * MS), "old", 2),
        put(1, 1, (30 * MS, 40 * MS), "new", 3),
        get(2, 0, (50 * MS, 60 * MS), Some("old"), 3),
        put(3, 2, (70 * MS, 80 * MS), "later", 4),
    ];
    let mut r = result_from_history(7, History::new(ops));
    r.fault_spans = vec![FaultSpan {
        start: 35 * MS,
        end: Some(65 * MS),
        label: "partition [r0]|[r1,r2] <script>".into(),
    }];
    r.leader_changes = vec![
        crate::sim::LeaderChange {
            at: 0,
            leader: Some("r0".into()),
        },
        crate::sim::LeaderChange {
            at: 45 * MS,
            leader: Some("r1".into()),
        },
    ];
    r
}

/// A passing run: a history-only result says Unknown for what a file lacks,
/// so the fixture fills in the verdicts a full run would have had.
fn healthy_seed() -> SeedResult {
    let mut r = result_from_history(
        8,
        History::new(vec![
            put(0, 0, (MS, 2 * MS), "a", 2),
            get(1, 1, (3 * MS, 4 * MS), Some("a"), 2),
        ]),
    );
    r.liveness = Verdict::Pass;
    r.report.as_mut().unwrap().durability = Verdict::Pass;
    assert!(r.passed());
    r
}

#[test]
fn failing_seed_highlights_window_and_offending_ops() {
    let bad = stale_read_seed();
    assert!(bad.report.as_ref().unwrap().linearizability.is_fail());
    let f = find(&bad);
    assert_eq!(f.windows.len(), 1, "{f:?}");
    let w = &f.windows[0];
    // The stale read and the write it missed are in the window; the
    // later, unrelated put is not.
    assert!(
        f.offending.contains(&1) && f.offending.contains(&2),
        "{f:?}"
    );
    assert!(!f.offending.contains(&3), "{f:?}");
    // Framed: from the write the read missed to the read.
    assert_eq!((w.start, w.end), (30 * MS, 60 * MS), "{w:?}");

    let html = render(
        "t",
        &[
            SeedPage {
                result: &bad,
                replay: "keel chaos --seeds 1 --first-seed 7".into(),
            },
            SeedPage {
                result: &healthy_seed(),
                replay: "keel chaos --seeds 1 --first-seed 8".into(),
            },
        ],
    );
    assert_eq!(html.matches("class=\"fail-window\"").count(), 1);
    assert!(html.contains("class=\"op ok offending\" data-op=\"2\""));
    assert!(html.contains("class=\"op ok\" data-op=\"3\""));
    assert!(html.contains("<tr class=\"offending-op\" data-op=\"2\">"));
    assert!(html.contains("id=\"seed-7\" data-passed=\"false\""));
    assert!(html.contains("id=\"seed-8\" data-passed=\"true\""));
    assert!(html.contains("href=\"#seed-8\""));
    assert!(html.contains("keel chaos --seeds 1 --first-seed 7"));
    assert!(html.contains("class=\"nemesis\""));
    assert_eq!(html.matches("class=\"leader-change\"").count(), 2);
    assert!(html.contains("45.0 ms: leader r1"));
    // Run text is escaped, and nothing is fetched from elsewhere.
    assert!(html.contains("&lt;script&gt;"));
    let without_ns = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    assert!(!without_ns.contains("http://") && !without_ns.contains("https://"));
    assert!(!html.contains(" src=") && !html.contains("<link"));
}

#[test]
fn passing_seed_has_no_highlight() {
    let ok = healthy_seed();
    assert!(find(&ok).windows.is_empty());
    let html = render(
        "t",
        &[SeedPage {
            result: &ok,
            replay: "r".into(),
        }],
    );
    assert!(!html.contains("class=\"fail-window\""));
    assert!(html.contains("latency by operation"));
}

#[test]
fn load_names_the_corrupt_line() {
    let good = "# seed 3\n{\"id\":0,\"process\":0,\"invoke\":1,\"complete\":2,\"call\":{\"type\":\"put\",\"key\":\"k\",\"value\":\"v\"},\"outcome\":{\"ok\":{\"type\":\"put\",\"revision\":2}}}\n";
    let seeds = load_failures(good.as_bytes()).unwrap();
    assert_eq!(seeds.len(), 1);
    assert_eq!(seeds[0].0, 3);
    assert_eq!(seeds[0].1.ops.len(), 1);

    let corrupt = format!("{good}{{\"id\": 1, \"proc\n");
    let e = load_failures(corrupt.as_bytes()).unwrap_err();
    assert!(e.to_string().starts_with("line 3:"), "{e}");
    let header = "# seed x\n";
    let e = load_failures(header.as_bytes()).unwrap_err();
    assert!(e.to_string().contains("line 1"), "{e}");
    assert!(matches!(load_failures(&b"\n"[..]), Err(LoadError::Empty)));
}

#[test]
fn watch_violations_are_listed_and_marked() {
    use crate::watch::{check_watchers, CommittedLog, Event, KeyRange, WatchItem, WatcherLog};
    let committed = CommittedLog::new(vec![
        Event::put(2, "k0", "a"),
        Event::put(3, "k0", "b"),
        Event::put(4, "k0", "c"),
    ])
    .unwrap();
    // Revision 3 is skipped; then the events go backwards.
    let w = WatcherLog {
        name: "all-keys".into(),
        range: KeyRange::prefix("k").unwrap(),
        start_revision: 1,
        items: vec![
            WatchItem::Event(Event::put(2, "k0", "a")),
            WatchItem::Event(Event::put(4, "k0", "c")),
            WatchItem::Event(Event::put(2, "k0", "a")),
        ],
    };
    let mut r = healthy_seed();
    r.report.as_mut().unwrap().watch =
        check_watchers(&committed, std::slice::from_ref(&w)).verdict();
    r.committed = Some(committed);
    r.watchers = vec![w];
    assert!(!r.passed());
    let f = find(&r);
    assert!(!f.watch.is_empty());
    let html = render(
        "t",
        &[SeedPage {
            result: &r,
            replay: "r".into(),
        }],
    );
    assert!(html.contains("<li class=\"watch-violation\">watcher &quot;all-keys&quot;"));
    assert!(html.contains("class=\"watch-lanes\""));
    assert!(
        html.contains("class=\"wev offending\""),
        "the out-of-order event is marked"
    );
}
