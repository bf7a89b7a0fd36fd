//! Multi-master acceptance of the Kubernetes API: kube-rs clients against a
//! 3-replica keel control plane (real processes, SIGKILL), over https with
//! the cluster CA and admin token from the kubeconfig each replica writes.
//!
//! 1. A `kube::runtime::watcher` behind a load balancer survives the kill of
//!    the replica it was streaming from, missing and repeating nothing.
//! 2. A replica cut off from the quorum answers 503/504 quickly, never
//!    stale data, and serves again once a quorum is back.
//! 3. Watches on different replicas from one resourceVersion deliver the
//!    same event sequence.

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Config, ResourceExt};
use tokio::net::{TcpListener, TcpStream};
use util::Cluster;

const NS: &str = "default";

/// Waits for replica `i` to write its kubeconfig and returns its path.
fn kubeconfig(c: &Cluster, i: usize) -> PathBuf {
    let path = c.replicas[i].data_dir.join("kubeconfig");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "no kubeconfig from r{i}:\n{}",
            c.log(i)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    path
}

/// A kube client from a kubeconfig, optionally aimed at another URL (the
/// forwarder: same host, so the serving certificate still verifies).
/// kube's own retry of 503/504 is off: the tests look at what the server
/// answers.
async fn client(path: &PathBuf, url: Option<String>) -> Client {
    let deadline = Instant::now() + Duration::from_secs(10);
    let kc = loop {
        // The file may be caught mid-write: retry the parse briefly.
        match Kubeconfig::read_from(path) {
            Ok(kc) => break kc,
            Err(e) => assert!(Instant::now() < deadline, "kubeconfig {path:?}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig loads");
    if let Some(u) = url {
        cfg.cluster_url = u.parse().unwrap();
    }
    cfg.default_retry = false;
    cfg.connect_timeout = Some(Duration::from_secs(2));
    cfg.read_timeout = Some(Duration::from_secs(30));
    Client::try_from(cfg).expect("client builds")
}

fn get_req(path: &str) -> http::Request<Vec<u8>> {
    http::Request::get(path).body(vec![]).unwrap()
}

/// `/readyz` through `c`: Ok(()) on 200, else the HTTP code (0 when the
/// request itself failed).
async fn readyz(c: &Client) -> Result<(), u16> {
    match tokio::time::timeout(Duration::from_secs(10), c.request_text(get_req("/readyz"))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(kube::Error::Api(s))) => Err(s.code),
        _ => Err(0),
    }
}

async fn wait_ready(c: &Client, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = readyz(c).await;
        if r.is_ok() {
            return;
        }
        assert!(Instant::now() < deadline, "{what} never ready: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn cm(name: &str, n: i64) -> ConfigMap {
    let mut c = ConfigMap::default();
    c.metadata.name = Some(name.to_string());
    c.data = Some(BTreeMap::from([("n".to_string(), n.to_string())]));
    c
}

fn n_of(c: &ConfigMap) -> Option<i64> {
    c.data.as_ref()?.get("n")?.parse().ok()
}

fn rv_of(c: &ConfigMap) -> u64 {
    c.resource_version()
        .and_then(|s| s.parse().ok())
        .expect("a numeric resourceVersion")
}

fn code_of(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

const WRITE_DEADLINE: Duration = Duration::from_secs(20);
const CALL_TIMEOUT: Duration = Duration::from_secs(8);

/// Sets `data.n = n` on `name` exactly once (a compare-and-swap replace on
/// the resourceVersion just read), retrying through an election: a write
/// whose answer was lost is recognized by reading `n` back, so no state is
/// written twice.
async fn set_n(api: &Api<ConfigMap>, name: &str, n: i64) -> u64 {
    let deadline = Instant::now() + WRITE_DEADLINE;
    loop {
        assert!(Instant::now() < deadline, "set {name} n={n} kept failing");
        let cur = match tokio::time::timeout(CALL_TIMEOUT, api.get(name)).await {
            Ok(Ok(c)) => c,
            _ => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if n_of(&cur) == Some(n) {
            return rv_of(&cur);
        }
        let mut next = cm(name, n);
        next.metadata.resource_version = cur.metadata.resource_version.clone();
        match tokio::time::timeout(
            CALL_TIMEOUT,
            api.replace(name, &PostParams::default(), &next),
        )
        .await
        {
            Ok(Ok(c)) => return rv_of(&c),
            Ok(Err(e)) if code_of(&e) == Some(409) => {}
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Creates `name` exactly once, retrying through an election.
async fn create_once(api: &Api<ConfigMap>, name: &str, n: i64) -> u64 {
    let deadline = Instant::now() + WRITE_DEADLINE;
    loop {
        assert!(Instant::now() < deadline, "create {name} kept failing");
        match tokio::time::timeout(
            CALL_TIMEOUT,
            api.create(&PostParams::default(), &cm(name, n)),
        )
        .await
        {
            Ok(Ok(c)) => return rv_of(&c),
            Ok(Err(e)) if code_of(&e) == Some(409) => {
                // Created by an earlier attempt whose answer was lost.
                if let Ok(Ok(c)) = tokio::time::timeout(CALL_TIMEOUT, api.get(name)).await {
                    return rv_of(&c);
                }
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Deletes `name` exactly once, retrying through an election.
async fn delete_once(api: &Api<ConfigMap>, name: &str) {
    let deadline = Instant::now() + WRITE_DEADLINE;
    loop {
        assert!(Instant::now() < deadline, "delete {name} kept failing");
        match tokio::time::timeout(CALL_TIMEOUT, api.delete(name, &DeleteParams::default())).await {
            Ok(Ok(_)) => return,
            Ok(Err(e)) if code_of(&e) == Some(404) => return,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A TCP forwarder on 127.0.0.1 in front of one API replica, whose backend
/// can be switched: what a load balancer in front of an HA control plane
/// does. A connection lives as long as both of its sides do.
struct Forwarder {
    addr: SocketAddr,
    backend: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    async fn start(backend: &str) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let backend = Arc::new(Mutex::new(backend.to_string()));
        let b = backend.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let target = b.lock().unwrap().clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&target).await else {
                        return; // dropping `inbound` closes the client's side
                    };
                    let (mut ri, mut wi) = inbound.split();
                    let (mut ro, mut wo) = outbound.split();
                    tokio::select! {
                        _ = tokio::io::copy(&mut ri, &mut wo) => {}
                        _ = tokio::io::copy(&mut ro, &mut wi) => {}
                    }
                });
            }
        });
        Forwarder {
            addr,
            backend,
            task,
        }
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// New connections go to `backend`.
    fn switch(&self, backend: &str) {
        *self.backend.lock().unwrap() = backend.to_string();
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One `watcher::Event` as recorded by the test.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Init,
    InitApply(String, Option<i64>, u64),
    InitDone,
    Apply(String, Option<i64>, u64),
    Delete(String, Option<i64>, u64),
    Error(String),
}

type Log = Arc<Mutex<Vec<Seen>>>;

async fn wait_for(log: &Log, what: &str, within: Duration, done: impl Fn(&[Seen]) -> bool) {
    let deadline = Instant::now() + within;
    loop {
        if done(&log.lock().unwrap()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "watcher never saw {what}; it saw {:#?}",
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn saw_counter_at(log: &[Seen], want: u64) -> bool {
    log.iter().any(|s| {
        matches!(s, Seen::Apply(name, _, rv) | Seen::InitApply(name, _, rv)
            if name == "counter" && *rv >= want)
    })
}

/// Test 1. The watcher's client talks to replica 0 through the forwarder;
/// all writes go through replica 1. Midway replica 0 is SIGKILLed and the
/// forwarder switched to replica 1.
///
/// How kube 5's watcher reports the kill: the stream from replica 0 ends
/// (or fails, then ends); the watcher re-watches from the last
/// resourceVersion it saw (no re-list, so no `Init` events), and the new
/// replica catches up from its history: every state arrives once, as
/// `Apply`/`Delete`. Only a 410 Expired (a compacted resourceVersion, not
/// provoked here: compaction is off) makes it re-list, which is
/// `Init`, one `InitApply` per current object (possibly re-delivering a
/// state already seen, at the same resourceVersion) and `InitDone`. The
/// checks below accept such a re-list: a re-delivered state at the same
/// resourceVersion is skipped, anything else must be newer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watcher_survives_the_kill_of_its_replica() {
    let started = Instant::now();
    let mut cluster = Cluster::start(3, &[]);
    let kc0 = kubeconfig(&cluster, 0);
    let kc1 = kubeconfig(&cluster, 1);
    let fwd = Forwarder::start(&cluster.api_addr(0)).await;
    let via_lb = client(&kc0, Some(fwd.url())).await;
    let c1 = client(&kc1, None).await;
    wait_ready(&via_lb, "r0 through the forwarder").await;
    wait_ready(&c1, "r1").await;
    println!("cluster ready after {:?}", started.elapsed());

    let log: Log = Arc::default();
    let watch_task = {
        let log = log.clone();
        let api: Api<ConfigMap> = Api::namespaced(via_lb.clone(), NS);
        tokio::spawn(async move {
            let mut s = watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(ev) = s.next().await {
                let seen = match ev {
                    Ok(watcher::Event::Init) => Seen::Init,
                    Ok(watcher::Event::InitApply(c)) => {
                        Seen::InitApply(c.name_any(), n_of(&c), rv_of(&c))
                    }
                    Ok(watcher::Event::InitDone) => Seen::InitDone,
                    Ok(watcher::Event::Apply(c)) => Seen::Apply(c.name_any(), n_of(&c), rv_of(&c)),
                    Ok(watcher::Event::Delete(c)) => {
                        Seen::Delete(c.name_any(), n_of(&c), rv_of(&c))
                    }
                    Err(e) => Seen::Error(e.to_string()),
                };
                log.lock().unwrap().push(seen);
            }
        })
    };
    wait_for(&log, "InitDone", Duration::from_secs(10), |l| {
        l.contains(&Seen::InitDone)
    })
    .await;

    let api1: Api<ConfigMap> = Api::namespaced(c1.clone(), NS);
    const LAST: i64 = 20;
    let mut expected_rvs = vec![create_once(&api1, "counter", 0).await];
    let mut extras: BTreeMap<&str, bool> = BTreeMap::new();
    let mut killed_at = None;
    for i in 1..=LAST {
        expected_rvs.push(set_n(&api1, "counter", i).await);
        match i {
            3 => {
                create_once(&api1, "extra-a", i).await;
                extras.insert("extra-a", true);
            }
            5 => {
                // The watcher is streaming from replica 0.
                let rv = *expected_rvs.last().unwrap();
                wait_for(&log, "n=5 from r0", Duration::from_secs(10), |l| {
                    saw_counter_at(l, rv)
                })
                .await;
                create_once(&api1, "extra-b", i).await;
                extras.insert("extra-b", true);
            }
            8 => {
                delete_once(&api1, "extra-a").await;
                extras.insert("extra-a", false);
            }
            10 => {
                // No wait: events of the last writes may be in flight.
                println!("killing r0; the leader is r{}", cluster.leader().await);
                cluster.kill(0);
                fwd.switch(&cluster.api_addr(1));
                killed_at = Some(Instant::now());
                println!("r0 killed, forwarder switched to r1");
            }
            12 => {
                create_once(&api1, "extra-c", i).await;
                extras.insert("extra-c", true);
            }
            15 => {
                delete_once(&api1, "extra-b").await;
                extras.insert("extra-b", false);
            }
            18 => {
                create_once(&api1, "extra-d", i).await;
                extras.insert("extra-d", true);
            }
            _ => {}
        }
    }
    let writes_done = killed_at.unwrap().elapsed();

    let fresh = tokio::time::timeout(CALL_TIMEOUT, api1.get("counter"))
        .await
        .expect("GET answers")
        .expect("GET counter");
    let final_rv = rv_of(&fresh);
    assert_eq!(n_of(&fresh), Some(LAST));
    assert_eq!(final_rv, *expected_rvs.last().unwrap());
    wait_for(&log, "the last state", Duration::from_secs(15), |l| {
        saw_counter_at(l, final_rv)
    })
    .await;
    let caught_up = killed_at.unwrap().elapsed();
    watch_task.abort();
    let log = log.lock().unwrap().clone();
    let errors: Vec<_> = log
        .iter()
        .filter_map(|s| match s {
            Seen::Error(e) => Some(e.clone()),
            _ => None,
        })
        .collect();
    let inits = log.iter().filter(|s| **s == Seen::Init).count();
    println!(
        "kill -> last write {writes_done:?}, kill -> watcher saw the last state {caught_up:?}; \
         {} events, {inits} Init(s), watcher errors: {errors:?}",
        log.len()
    );

    // Per object: resourceVersions strictly increase; a re-list may
    // re-deliver the state last seen (same resourceVersion) as InitApply.
    // Live events (Apply/Delete) come from one revision-ordered stream that
    // resumed where it stopped, so they strictly increase across objects.
    let mut last_rv: BTreeMap<String, u64> = BTreeMap::new();
    let mut live_rv = 0u64;
    let mut counter_ns = vec![];
    let mut counter_rvs = vec![];
    let mut alive: BTreeMap<String, bool> = BTreeMap::new();
    let mut in_relist = false;
    let mut listed: BTreeSet<String> = BTreeSet::new();
    for s in &log {
        let (name, n, rv, live, exists) = match s {
            Seen::Init => {
                in_relist = true;
                listed.clear();
                continue;
            }
            Seen::InitDone => {
                // Anything not re-listed is gone.
                if in_relist {
                    for (name, a) in alive.iter_mut() {
                        if !listed.contains(name) {
                            *a = false;
                        }
                    }
                }
                in_relist = false;
                continue;
            }
            Seen::Error(_) => continue,
            Seen::InitApply(name, n, rv) => {
                listed.insert(name.clone());
                (name, n, *rv, false, true)
            }
            Seen::Apply(name, n, rv) => (name, n, *rv, true, true),
            Seen::Delete(name, n, rv) => (name, n, *rv, true, false),
        };
        let prev = last_rv.get(name).copied().unwrap_or(0);
        if !live && rv == prev {
            continue; // a re-list re-delivering the state already seen
        }
        assert!(
            rv > prev,
            "{name}: resourceVersion {rv} after {prev} ({s:?}) in {log:#?}"
        );
        if live {
            assert!(
                rv > live_rv,
                "live event {s:?} at {rv} after {live_rv} in {log:#?}"
            );
            live_rv = rv;
        }
        last_rv.insert(name.clone(), rv);
        alive.insert(name.clone(), exists);
        if name == "counter" {
            counter_ns.push(n.expect("counter has n"));
            counter_rvs.push(rv);
        }
    }
    assert!(
        counter_ns.windows(2).all(|w| w[0] < w[1]),
        "n not strictly increasing: {counter_ns:?}"
    );
    assert_eq!(counter_ns.last(), Some(&LAST), "{counter_ns:?}");
    if inits == 1 {
        // No re-list: resuming from the last resourceVersion loses nothing.
        assert_eq!(counter_ns, (0..=LAST).collect::<Vec<_>>());
        assert_eq!(counter_rvs, expected_rvs);
    }
    for (name, exists) in &extras {
        assert_eq!(alive.get(*name), Some(exists), "{name} in {log:#?}");
    }
    // The last state seen is what a fresh GET returns.
    assert_eq!(counter_rvs.last(), Some(&final_rv));
    // Through the switched forwarder the API serves the same object.
    let via: Api<ConfigMap> = Api::namespaced(via_lb, NS);
    let again = via.get("counter").await.expect("GET via the forwarder");
    assert_eq!((n_of(&again), rv_of(&again)), (Some(LAST), final_rv));
    println!("test 1 took {:?}", started.elapsed());
}

/// Test 2. Replica 0 alone (replicas 1 and 2 killed, whichever leads).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_without_quorum_answers_503_or_504() {
    without_quorum(false).await;
}

/// Test 2, with the lone replica the leader: the case where a stale
/// leader could believe it may still serve reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_without_quorum_answers_503_or_504() {
    without_quorum(true).await;
}

/// One replica alone (`leader`: the one that leads, else replica 0):
/// reads, writes and new watches fail fast with 503/504 (never the old
/// object, never a silently empty stream), `/readyz` is 503, and a watch
/// open before the cut ends; with one peer back it serves again.
async fn without_quorum(leader: bool) {
    let started = Instant::now();
    let mut cluster = Cluster::start(3, &[]);
    let mut clients = vec![];
    for i in 0..3 {
        let c = client(&kubeconfig(&cluster, i), None).await;
        wait_ready(&c, &format!("r{i}")).await;
        clients.push(c);
    }
    let lead = cluster.leader().await;
    let lone = if leader { lead } else { 0 };
    println!("leader r{lead}; r{lone} is cut off");
    let c0 = clients[lone].clone();
    let api0: Api<ConfigMap> = Api::namespaced(c0.clone(), NS);
    let made = api0
        .create(&PostParams::default(), &cm("before", 1))
        .await
        .expect("create with a quorum");
    let rv = rv_of(&made);
    let old_watch = raw_watch(c0.clone(), rv, Arc::default()).await;

    let others: Vec<usize> = (0..3).filter(|i| *i != lone).collect();
    for i in &others {
        cluster.kill(*i);
    }
    let cut_off = Instant::now();
    let old_watch = tokio::spawn(async move {
        let _ = old_watch.await;
        cut_off.elapsed()
    });

    // Each must answer a Status 503/504 within 15 s: a read, a write, a
    // list and a new watch from a resourceVersion, all at once.
    let bounded = Duration::from_secs(30);
    let timed = |name: &'static str, f: futures::future::BoxFuture<'static, kube::Result<()>>| async move {
        let t = Instant::now();
        let r = tokio::time::timeout(bounded, f).await;
        let took = t.elapsed();
        let r = r.unwrap_or_else(|_| panic!("{name} without quorum hangs"));
        println!(
            "{name} without quorum: {:?} after {took:?}",
            r.as_ref().map_err(code_of)
        );
        match r {
            Err(e) => assert!(
                matches!(code_of(&e), Some(503 | 504)),
                "{name} without quorum: {e:?}"
            ),
            Ok(()) => panic!("{name} without quorum succeeded (stale or unreplicated)"),
        }
        assert!(took < Duration::from_secs(15), "{name} took {took:?}");
    };
    let (a, b, l) = (api0.clone(), api0.clone(), api0.clone());
    let watch_path = format!("/api/v1/namespaces/{NS}/configmaps?watch=true&resourceVersion={rv}");
    let cw = c0.clone();
    tokio::join!(
        timed(
            "GET",
            Box::pin(async move { a.get("before").await.map(drop) })
        ),
        timed(
            "create",
            Box::pin(async move {
                b.create(&PostParams::default(), &cm("during", 2))
                    .await
                    .map(drop)
            })
        ),
        timed(
            "LIST",
            Box::pin(async move { l.list(&ListParams::default()).await.map(drop) })
        ),
        timed(
            "watch from a resourceVersion",
            Box::pin(async move { cw.request_stream(get_req(&watch_path)).await.map(drop) })
        ),
    );

    let t = Instant::now();
    let r = readyz(&c0).await;
    println!("/readyz without quorum: {r:?} after {:?}", t.elapsed());
    assert_eq!(r, Err(503));

    let ended = tokio::time::timeout(Duration::from_secs(15), old_watch)
        .await
        .expect("a watch open before the cut ends within 15 s")
        .unwrap();
    println!("the watch open before the cut ended {ended:?} after the cut");

    cluster.spawn(others[0]);
    let restarted = Instant::now();
    let deadline = restarted + Duration::from_secs(30);
    let back = loop {
        if let Ok(Ok(c)) = tokio::time::timeout(CALL_TIMEOUT, api0.get("before")).await {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "r{lone} does not serve within 30 s of r{}'s restart:\n{}",
            others[0],
            cluster.log(lone)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let recovered = restarted.elapsed();
    println!(
        "r{lone} serves GET 200 {recovered:?} after r{}'s restart ({:?} after being cut off)",
        others[0],
        cut_off.elapsed()
    );
    assert!(
        recovered < Duration::from_secs(20),
        "recovery took {recovered:?}"
    );
    assert_eq!((n_of(&back), rv_of(&back)), (Some(1), rv));
    assert_eq!(readyz(&c0).await, Ok(()));
    // Writes work again (the create that timed out may or may not have
    // committed once the quorum came back: both are correct).
    let mut upd = back.clone();
    upd.data = cm("before", 3).data;
    let upd = api0
        .replace("before", &PostParams::default(), &upd)
        .await
        .expect("write with a quorum again");
    assert!(rv_of(&upd) > rv);
    println!("test 2 took {:?}", started.elapsed());
}

/// One event of a raw watch stream: (type, name, resourceVersion).
type RawEvent = (String, String, u64);

/// Starts `?watch=true&resourceVersion=rv` on `c`; a task streams its
/// events into `out` and ends with the stream.
async fn raw_watch(
    c: Client,
    rv: u64,
    out: Arc<Mutex<Vec<RawEvent>>>,
) -> tokio::task::JoinHandle<()> {
    let path = format!("/api/v1/namespaces/{NS}/configmaps?watch=true&resourceVersion={rv}");
    let body = c
        .request_stream(get_req(&path))
        .await
        .expect("watch starts");
    tokio::spawn(read_events(Box::pin(body), out))
}

async fn read_events(
    body: std::pin::Pin<Box<dyn futures::AsyncBufRead + Send>>,
    out: Arc<Mutex<Vec<RawEvent>>>,
) {
    let mut lines = body.lines();
    while let Some(line) = lines.next().await {
        let Ok(line) = line else {
            return; // the stream broke: same as its end for the callers
        };
        let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON event per line");
        let o = &v["object"]["metadata"];
        out.lock().unwrap().push((
            v["type"].as_str().unwrap_or("?").to_string(),
            o["name"].as_str().unwrap_or("?").to_string(),
            o["resourceVersion"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
        ));
    }
}

/// Test 3. Raw watches on replicas 2 and 0 from one resourceVersion while
/// writing through replica 1 (the one on r0 starts midway, so it catches up
/// from history) deliver identical (type, name, resourceVersion) sequences:
/// the writes in order, at the revisions the writes answered (a delete's
/// revision is not in its answer: there only the order is checked).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watches_on_any_replica_deliver_the_same_sequence() {
    let started = Instant::now();
    let cluster = Cluster::start(3, &[]);
    let mut clients = vec![];
    for i in 0..3 {
        let c = client(&kubeconfig(&cluster, i), None).await;
        wait_ready(&c, &format!("r{i}")).await;
        clients.push(c);
    }
    let api1: Api<ConfigMap> = Api::namespaced(clients[1].clone(), NS);
    // Every namespace gets the cluster CA's ConfigMap from a controller,
    // at a moment of its own: start after it, so only the writes below are
    // in the streams.
    let deadline = Instant::now() + Duration::from_secs(30);
    while api1
        .get_opt("kube-root-ca.crt")
        .await
        .ok()
        .flatten()
        .is_none()
    {
        assert!(Instant::now() < deadline, "no kube-root-ca.crt in {NS}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let list = api1.list(&ListParams::default()).await.expect("list");
    let from: u64 = list
        .metadata
        .resource_version
        .as_deref()
        .and_then(|s| s.parse().ok())
        .expect("list resourceVersion");

    let on2: Arc<Mutex<Vec<RawEvent>>> = Arc::default();
    let on0: Arc<Mutex<Vec<RawEvent>>> = Arc::default();
    let w2 = raw_watch(clients[2].clone(), from, on2.clone()).await;
    let mut w0 = None;

    let mut written: Vec<(String, String, Option<u64>)> = vec![];
    let pp = PostParams::default();
    for i in 0..30i64 {
        let name = format!("cm-{}", i % 4);
        let ev = if i < 4 {
            let c = api1.create(&pp, &cm(&name, i)).await.expect("create");
            ("ADDED", rv_of(&c))
        } else if i % 7 == 0 {
            api1.delete(&name, &DeleteParams::default())
                .await
                .expect("delete");
            // The deletion's revision is not in the answer: checked as
            // increasing below.
            written.push(("DELETED".to_string(), name.clone(), None));
            let c = api1.create(&pp, &cm(&name, i)).await.expect("re-create");
            ("ADDED", rv_of(&c))
        } else {
            let mut c = api1.get(&name).await.expect("get");
            c.data = cm(&name, i).data;
            let c = api1.replace(&name, &pp, &c).await.expect("replace");
            ("MODIFIED", rv_of(&c))
        };
        written.push((ev.0.to_string(), name, Some(ev.1)));
        if i == 15 {
            w0 = Some(raw_watch(clients[0].clone(), from, on0.clone()).await);
        }
    }

    let deadline = Instant::now() + Duration::from_secs(15);
    while on2.lock().unwrap().len() < written.len() || on0.lock().unwrap().len() < written.len() {
        assert!(
            Instant::now() < deadline,
            "streams incomplete: r2 {} r0 {} of {}",
            on2.lock().unwrap().len(),
            on0.lock().unwrap().len(),
            written.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Anything extra would show up shortly after.
    tokio::time::sleep(Duration::from_millis(300)).await;
    w2.abort();
    w0.unwrap().abort();
    let on2 = on2.lock().unwrap().clone();
    let on0 = on0.lock().unwrap().clone();
    assert_eq!(on2, on0, "r2 and r0 streams differ");
    assert_eq!(on2.len(), written.len(), "extra events: {on2:?}");
    let seen: Vec<_> = on2
        .iter()
        .zip(&written)
        .map(|(s, w)| (s.0.clone(), s.1.clone(), w.2.map(|_| s.2)))
        .collect();
    assert_eq!(seen, written, "the streams are not the writes in order");
    assert!(on2.windows(2).all(|w| w[0].2 < w[1].2));
    println!(
        "{} identical events on r2 and r0; test 3 took {:?}",
        on2.len(),
        started.elapsed()
    );
}
