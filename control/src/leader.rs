//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's
//! leaderelection does: controllers and the scheduler run only on the
//! replica holding the lease, and another replica takes over within about
//! one lease duration after the holder stops renewing.
//!
//! Guarantees: at most one elector believes it leads at any instant,
//! provided clocks advance at similar rates (like Kubernetes, expiry is
//! judged by the *observer's* clock from when it last saw the record
//! change, never by comparing timestamps across machines), because every
//! acquire and renew is a compare-and-swap on the lease's revision and a
//! leader steps down when it has not renewed within the lease duration.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::meta;
use crate::resources;
use crate::storage::{Objects, Stored};

#[derive(Debug, Clone)]
pub struct ElectionConfig {
    pub namespace: String,
    pub name: String,
    /// Who this replica is (recorded as `spec.holderIdentity`).
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub lease_duration: Duration,
    /// How often the holder renews and others check.
    pub retry_period: Duration,
}

impl ElectionConfig {
    /// The controller-manager lease in `kube-system`: 15 s lease, 2 s retry
    /// (Kubernetes' defaults).
    pub fn controller_manager(identity: &str) -> ElectionConfig {
        ElectionConfig {
            namespace: "kube-system".into(),
            name: "keel-controller-manager".into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Starts electing; the receiver says whether this replica leads now. The
/// election stops (and leadership is given up) when every receiver is
/// dropped.
pub fn spawn(objects: Objects, cfg: ElectionConfig) -> watch::Receiver<bool> {
    assert!(
        cfg.retry_period < cfg.lease_duration,
        "renew faster than the lease expires"
    );
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut e = Elector {
            objects,
            cfg,
            observed: None,
            renewed_at: None,
        };
        while !tx.is_closed() {
            let leading = e.step().await;
            tx.send_if_modified(|v| std::mem::replace(v, leading) != leading);
            tokio::select! {
                _ = tokio::time::sleep(e.cfg.retry_period) => {}
                _ = tx.closed() => break,
            }
        }
        e.release().await;
    });
    rx
}

struct Elector {
    objects: Objects,
    cfg: ElectionConfig,
    /// The last record seen (its revision) and when, by this clock.
    observed: Option<(i64, Instant)>,
    /// When this replica last renewed successfully.
    renewed_at: Option<Instant>,
}

fn micro_time() -> String {
    let now = jiff::Timestamp::now();
    now.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()
}

impl Elector {
    fn key(&self) -> String {
        let info =
            resources::find("coordination.k8s.io", "v1", "leases").expect("leases are served");
        info.key(Some(&self.cfg.namespace), &self.cfg.name)
    }

    /// One round: acquire or renew. Returns whether this replica leads.
    async fn step(&mut self) -> bool {
        let cur = match self.objects.get(&self.key()).await {
            Ok(c) => c,
            Err(_) => return self.still_valid(),
        };
        let won = match cur {
            None => self.create().await,
            Some(s) => self.renew_or_take(s).await,
        };
        if won {
            self.renewed_at = Some(Instant::now());
        }
        won || self.still_valid()
    }

    /// Without a successful renewal, leadership lasts at most the lease
    /// duration from the last one (minus a retry, to be safe).
    fn still_valid(&self) -> bool {
        let limit = self
            .cfg
            .lease_duration
            .saturating_sub(self.cfg.retry_period);
        self.renewed_at.is_some_and(|t| t.elapsed() < limit)
    }

    async fn create(&mut self) -> bool {
        let now = micro_time();
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": self.cfg.name, "namespace": self.cfg.namespace,
                         "uid": uuid::Uuid::new_v4().to_string(),
                         "creationTimestamp": meta::now_rfc3339()},
            "spec": {"holderIdentity": self.cfg.identity,
                     "leaseDurationSeconds": self.cfg.lease_duration.as_secs().max(1),
                     "acquireTime": now, "renewTime": now, "leaseTransitions": 0}
        });
        matches!(self.objects.create(&self.key(), &lease).await, Ok(Some(_)))
    }

    async fn renew_or_take(&mut self, s: Stored) -> bool {
        let holder = s.obj["spec"]["holderIdentity"].as_str().unwrap_or("");
        let mine = holder == self.cfg.identity;
        let changed = self.observed.is_none_or(|(rev, _)| rev != s.mod_revision);
        if changed {
            self.observed = Some((s.mod_revision, Instant::now()));
        }
        let expired = self
            .observed
            .is_some_and(|(_, at)| at.elapsed() >= self.cfg.lease_duration);
        if !mine && !holder.is_empty() && !expired {
            self.renewed_at = None;
            return false;
        }
        let mut lease = s.obj.clone();
        let now = micro_time();
        lease["spec"]["renewTime"] = json!(now);
        lease["spec"]["leaseDurationSeconds"] = json!(self.cfg.lease_duration.as_secs().max(1));
        if !mine {
            let transitions = lease["spec"]["leaseTransitions"].as_i64().unwrap_or(0);
            lease["spec"]["holderIdentity"] = json!(self.cfg.identity);
            lease["spec"]["acquireTime"] = json!(now);
            lease["spec"]["leaseTransitions"] = json!(transitions + 1);
        }
        match self.objects.update(&s.key, &lease, s.mod_revision).await {
            Ok(Some(rev)) => {
                self.observed = Some((rev, Instant::now()));
                true
            }
            _ => false,
        }
    }

    /// Gives the lease up on a clean stop so a successor need not wait
    /// for it to expire (client-go's ReleaseOnCancel).
    async fn release(&mut self) {
        let Ok(Some(s)) = self.objects.get(&self.key()).await else {
            return;
        };
        if s.obj["spec"]["holderIdentity"] != self.cfg.identity {
            return;
        }
        let mut lease = s.obj.clone();
        lease["spec"]["holderIdentity"] = Value::Null;
        let _ = self.objects.update(&s.key, &lease, s.mod_revision).await;
    }
}
