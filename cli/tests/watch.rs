//! Watch guarantees on a 3-replica cluster: 100 watchers on overlapping
//! prefixes see identical, gap-free, revision-ordered event sequences under
//! concurrent writers, also when the replica serving some of them is killed
//! and they resume on another one from their last revision.

mod util;

use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_proto::etcdserverpb::{
    kv_client::KvClient, watch_client::WatchClient, watch_request::RequestUnion,
    DeleteRangeRequest, PutRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest,
};
use tokio::sync::{mpsc, watch};
use util::{channel, Cluster};

/// (revision, key, is_put, value)
type Ev = (i64, Vec<u8>, bool, Vec<u8>);

const PREFIXES: [&str; 5] = ["w/", "w/a", "w/a/1", "w/b", "w/c/"];

fn prefix_end(p: &str) -> Vec<u8> {
    let mut e = p.as_bytes().to_vec();
    *e.last_mut().unwrap() += 1;
    e
}

/// Watches `prefix` from `start`, resuming on the next endpoint after any
/// failure, until a progress response at or past the final revision.
async fn follow(
    endpoints: Vec<String>,
    first: usize,
    prefix: &str,
    start: i64,
    mut done: watch::Receiver<i64>,
) -> (Vec<Ev>, usize) {
    let mut events: Vec<Ev> = Vec::new();
    let mut ep = first;
    let mut resumes = 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        assert!(
            Instant::now() < deadline,
            "watcher on {prefix} never finished"
        );
        let next = events.last().map_or(start, |e| e.0 + 1);
        match session(&endpoints[ep], prefix, next, &mut events, &mut done).await {
            Ok(()) => return (events, resumes),
            Err(_) => {
                resumes += 1;
                ep = (ep + 1) % endpoints.len();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn session(
    endpoint: &str,
    prefix: &str,
    start: i64,
    events: &mut Vec<Ev>,
    done: &mut watch::Receiver<i64>,
) -> Result<(), String> {
    let mut client = WatchClient::new(channel(endpoint).await);
    let (tx, rx) = mpsc::channel(8);
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: prefix.into(),
            range_end: prefix_end(prefix),
            start_revision: start,
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut stream = client
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let mut tick = tokio::time::interval(Duration::from_millis(300));
    loop {
        tokio::select! {
            msg = stream.message() => {
                let Some(resp) = msg.map_err(|e| e.to_string())? else { return Err("stream closed".into()) };
                assert!(!resp.canceled, "watch cancelled: {}", resp.cancel_reason);
                if resp.watch_id == -1 {
                    let final_rev = *done.borrow();
                    if final_rev > 0 && resp.header.unwrap().revision >= final_rev {
                        return Ok(());
                    }
                }
                for e in resp.events {
                    let kv = e.kv.unwrap();
                    events.push((kv.mod_revision, kv.key, e.r#type == 0, kv.value));
                }
            }
            _ = tick.tick() => {
                if *done.borrow() > 0 {
                    let req = WatchRequest { request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})) };
                    if tx.send(req).await.is_err() { return Err("send".into()); }
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_watchers_agree_and_survive_replica_kill() {
    let mut c = Cluster::start(3, &["--disable-api"]);
    c.wait_ready().await;
    let start = c.put_retry(1, "w/start", "0").await + 1;
    let endpoints: Vec<String> = (0..3).map(|i| c.endpoint(i)).collect();
    let (done_tx, done_rx) = watch::channel(0i64);

    let mut watchers = Vec::new();
    for i in 0..100 {
        let prefix = PREFIXES[i % PREFIXES.len()];
        let eps = endpoints.clone();
        let done = done_rx.clone();
        watchers.push((
            prefix,
            tokio::spawn(async move { follow(eps, i % 3, prefix, start, done).await }),
        ));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Concurrent writers over keys in and across the prefixes.
    let keys = [
        "w/a/1/x", "w/a/1/y", "w/a/2", "w/b/1", "w/b/2", "w/c/1", "w/d",
    ];
    let written = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for wid in 0..3usize {
        let eps = endpoints.clone();
        let written = written.clone();
        writers.push(tokio::spawn(async move {
            for n in 0..80usize {
                let key = keys[(wid * 7 + n) % keys.len()];
                // Writers avoid replica 0, which gets killed midway.
                let mut kv = KvClient::new(channel(&eps[1 + (n % 2)]).await);
                let r = if n % 5 == 4 {
                    // Deleting a missing key writes nothing; count only real deletes.
                    match kv
                        .delete_range(DeleteRangeRequest {
                            key: key.into(),
                            ..Default::default()
                        })
                        .await
                    {
                        Ok(r) if r.get_ref().deleted == 0 => continue,
                        other => other.map(|_| ()),
                    }
                } else {
                    let req = PutRequest {
                        key: key.into(),
                        value: format!("{wid}-{n}").into(),
                        ..Default::default()
                    };
                    kv.put(req).await.map(|_| ())
                };
                if r.is_ok() {
                    written.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    // Kill the replica serving a third of the watchers while writes flow.
    while written.load(std::sync::atomic::Ordering::Relaxed) < 100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.kill(0);
    for w in writers {
        w.await.unwrap();
    }
    let final_rev = c.put_retry(1, "w/end", "1").await;
    done_tx.send(final_rev).unwrap();

    // Ground truth: the store's own history, read by a fresh watcher.
    let (truth_all, _) = follow(endpoints[1..].to_vec(), 0, "w/", start, done_rx.clone()).await;
    assert_eq!(truth_all.last().unwrap().0, final_rev);
    let mut resumed = 0;
    for (prefix, h) in watchers {
        let (got, resumes) = h.await.unwrap();
        resumed += usize::from(resumes > 0);
        let want: Vec<Ev> = truth_all
            .iter()
            .filter(|e| e.1.starts_with(prefix.as_bytes()))
            .cloned()
            .collect();
        assert!(
            got.windows(2).all(|w| w[0].0 < w[1].0),
            "revisions not strictly increasing on {prefix}"
        );
        assert_eq!(
            got.len(),
            want.len(),
            "watcher on {prefix}: wrong event count"
        );
        assert_eq!(got, want, "watcher on {prefix} saw a different sequence");
    }
    assert!(
        resumed >= 30,
        "watchers on the killed replica should have resumed elsewhere ({resumed})"
    );
    // History holds every acknowledged write (plus w/start and w/end).
    assert!(truth_all.len() > written.load(std::sync::atomic::Ordering::Relaxed));
}
