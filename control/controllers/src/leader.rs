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

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

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

/// Starts electing through `client`; the receiver says whether this
/// replica leads now. The election stops (and leadership is given up)
/// when every receiver is dropped.
pub fn spawn(client: kube::Client, cfg: ElectionConfig) -> watch::Receiver<bool> {
    assert!(
        cfg.retry_period < cfg.lease_duration,
        "renew faster than the lease expires"
    );
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut e = Elector {
            leases: Api::namespaced(client, &cfg.namespace),
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
    leases: Api<Lease>,
    cfg: ElectionConfig,
    /// The last record seen (its resourceVersion) and when, by this clock.
    observed: Option<(String, Instant)>,
    /// When this replica last renewed successfully.
    renewed_at: Option<Instant>,
}

fn micro_now() -> MicroTime {
    MicroTime(Timestamp::now())
}

fn lease_duration_s(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

impl Elector {
    /// One round: acquire or renew. Returns whether this replica leads.
    async fn step(&mut self) -> bool {
        let cur = match self.leases.get_opt(&self.cfg.name).await {
            Ok(c) => c,
            Err(_) => return self.still_valid(),
        };
        let won = match cur {
            None => self.create().await,
            Some(lease) => self.renew_or_take(lease).await,
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
        let now = micro_now();
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.cfg.name.clone()),
                namespace: Some(self.cfg.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.cfg.identity.clone()),
                lease_duration_seconds: Some(lease_duration_s(self.cfg.lease_duration)),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        self.leases
            .create(&PostParams::default(), &lease)
            .await
            .is_ok()
    }

    async fn renew_or_take(&mut self, mut lease: Lease) -> bool {
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let mine = holder == self.cfg.identity;
        let changed = self.observed.as_ref().is_none_or(|(seen, _)| *seen != rv);
        if changed {
            self.observed = Some((rv, Instant::now()));
        }
        let expired = self
            .observed
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() >= self.cfg.lease_duration);
        if !mine && !holder.is_empty() && !expired {
            self.renewed_at = None;
            return false;
        }
        let now = micro_now();
        spec.renew_time = Some(now.clone());
        spec.lease_duration_seconds = Some(lease_duration_s(self.cfg.lease_duration));
        if !mine {
            spec.holder_identity = Some(self.cfg.identity.clone());
            spec.acquire_time = Some(now);
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        // The PUT carries the resourceVersion read: a compare-and-swap, so
        // two replicas can never both take an expired lease.
        match self
            .leases
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                let rv = written.metadata.resource_version.unwrap_or_default();
                self.observed = Some((rv, Instant::now()));
                true
            }
            Err(_) => false,
        }
    }

    /// Gives the lease up on a clean stop so a successor need not wait
    /// for it to expire (client-go's ReleaseOnCancel).
    async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.leases.get_opt(&self.cfg.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        let _ = self
            .leases
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await;
    }
}
