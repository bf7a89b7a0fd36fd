//! Simulated clients: a workload of put, get, delete and compare-and-set
//! against random replicas, each operation recorded with its invoke and
//! complete times; an operation whose outcome is unknown is recorded as
//! indeterminate (Jepsen's `info`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use keel_proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    kv_client::KvClient,
    request_op::Request,
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use keel_store::Transport;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

use super::cluster::client_addr;
use crate::history::{Call, OkResult, Outcome, Time};
use crate::recorder::Recorder;

thread_local! {
    static LAST: std::cell::Cell<Time> = const { std::cell::Cell::new(0) };
    static EPOCH: std::time::Instant = std::time::Instant::now();
}

/// Nanoseconds since the run started (simulated time inside a simulation,
/// the monotonic clock otherwise), made strictly increasing: many events
/// share one simulated tick, and their order in the (single-threaded) run
/// is their real order.
pub fn now() -> Time {
    let sim = match turmoil::sim_elapsed() {
        Some(d) => d.as_nanos() as Time,
        None => EPOCH.with(|e| e.elapsed().as_nanos() as Time),
    };
    LAST.with(|l| {
        let t = sim.max(l.get() + 1);
        l.set(t);
        t
    })
}

/// Starts a new run's clock.
pub fn reset_clock() {
    LAST.with(|l| l.set(0));
}

#[derive(Debug, Clone)]
pub struct Workload {
    pub clients: usize,
    pub ops_per_client: usize,
    pub keys: usize,
    pub op_timeout: Duration,
}

/// Where the cluster's client endpoints are and how to reach them.
#[derive(Debug, Clone)]
pub struct Target {
    pub addrs: Vec<String>,
    pub transport: Transport,
}

impl Target {
    /// The simulated replicas `r0..r{n-1}`.
    pub fn sim(replicas: usize) -> Self {
        Target {
            addrs: (0..replicas).map(client_addr).collect(),
            transport: Transport::Sim,
        }
    }

    pub fn replicas(&self) -> usize {
        self.addrs.len()
    }
}

/// One channel per replica, reused across operations.
pub struct Channels {
    target: Target,
    cache: HashMap<usize, Channel>,
}

impl Channels {
    pub fn new(target: Target) -> Self {
        Channels {
            target,
            cache: HashMap::new(),
        }
    }

    pub fn kv(&mut self, i: usize) -> KvClient<Channel> {
        KvClient::new(self.channel(i))
    }

    pub fn channel(&mut self, i: usize) -> Channel {
        let i = i % self.target.replicas();
        let target = &self.target;
        self.cache
            .entry(i)
            .or_insert_with(|| {
                target
                    .transport
                    .channel(&target.addrs[i])
                    .expect("valid address")
            })
            .clone()
    }
}

/// Runs client `id`'s share of the workload.
pub async fn run_workload_client(
    id: u64,
    seed: u64,
    target: Target,
    w: Workload,
    rec: Rc<RefCell<Recorder>>,
    shared: Rc<super::watcher::Shared>,
) -> turmoil::Result {
    let mut rng = StdRng::seed_from_u64(seed ^ (id.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    let replicas = target.replicas();
    let mut chans = Channels::new(target);
    for n in 0..w.ops_per_client {
        let key = format!("k{}", rng.gen_range(0..w.keys));
        let value = format!("{id}-{n}");
        let call = match rng.gen_range(0..10) {
            0..=2 => Call::Put { key, value },
            3..=5 => Call::Get {
                key,
                linearizable: true,
            },
            6 => Call::Get {
                key,
                linearizable: false,
            },
            7 => Call::Delete { key },
            _ => {
                let expected = if rng.gen_bool(0.3) {
                    None
                } else {
                    Some(format!(
                        "{}-{}",
                        rng.gen_range(0..w.clients),
                        rng.gen_range(0..=n)
                    ))
                };
                Call::Cas {
                    key,
                    expected,
                    new: value,
                }
            }
        };
        let mut kv = chans.kv(rng.gen_range(0..replicas));
        let op = rec.borrow_mut().invoke(id, now(), call.clone())?;
        let outcome = match tokio::time::timeout(w.op_timeout, execute(&mut kv, &call)).await {
            Ok(Ok(r)) => {
                shared.max_seen.set(shared.max_seen.get().max(r.revision()));
                shared.ok_ops.set(shared.ok_ops.get() + 1);
                Outcome::Ok(r)
            }
            Ok(Err(status)) if certainly_not_applied(&status) => Outcome::Fail,
            _ => Outcome::Info,
        };
        rec.borrow_mut().complete(op, now(), outcome)?;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..20))).await;
    }
    Ok(())
}

/// Errors that prove the request changed nothing. Everything else (a
/// timeout, a lost connection, "leader changed") may have been applied.
fn certainly_not_applied(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::InvalidArgument
            | tonic::Code::OutOfRange
            | tonic::Code::NotFound
            | tonic::Code::FailedPrecondition
    ) || status.message().contains("no leader")
}

/// Performs `call` and translates the response.
pub async fn execute(kv: &mut KvClient<Channel>, call: &Call) -> Result<OkResult, tonic::Status> {
    match call {
        Call::Put { key, value } => {
            let r = kv
                .put(PutRequest {
                    key: key.clone().into(),
                    value: value.clone().into(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok(OkResult::Put {
                revision: header_rev(&r.header),
            })
        }
        Call::Get { key, linearizable } => {
            let r = kv
                .range(RangeRequest {
                    key: key.clone().into(),
                    serializable: !linearizable,
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok(OkResult::Get {
                value: r
                    .kvs
                    .first()
                    .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()),
                revision: header_rev(&r.header),
            })
        }
        Call::Delete { key } => {
            let r = kv
                .delete_range(DeleteRangeRequest {
                    key: key.clone().into(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok(OkResult::Delete {
                deleted: r.deleted > 0,
                revision: header_rev(&r.header),
            })
        }
        Call::Cas { key, expected, new } => {
            let compare = match expected {
                Some(v) => Compare {
                    key: key.clone().into(),
                    target: CompareTarget::Value as i32,
                    result: CompareResult::Equal as i32,
                    target_union: Some(TargetUnion::Value(v.clone().into())),
                    range_end: vec![],
                },
                None => Compare {
                    key: key.clone().into(),
                    target: CompareTarget::Version as i32,
                    result: CompareResult::Equal as i32,
                    target_union: Some(TargetUnion::Version(0)),
                    range_end: vec![],
                },
            };
            let r = kv
                .txn(TxnRequest {
                    compare: vec![compare],
                    success: vec![RequestOp {
                        request: Some(Request::RequestPut(PutRequest {
                            key: key.clone().into(),
                            value: new.clone().into(),
                            ..Default::default()
                        })),
                    }],
                    failure: vec![],
                })
                .await?
                .into_inner();
            Ok(OkResult::Cas {
                succeeded: r.succeeded,
                revision: header_rev(&r.header),
            })
        }
    }
}

fn header_rev(h: &Option<keel_proto::etcdserverpb::ResponseHeader>) -> i64 {
    h.as_ref().map_or(0, |h| h.revision)
}
