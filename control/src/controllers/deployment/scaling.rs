//! `kubectl scale` on a Deployment, and pruning old ReplicaSets beyond
//! `revisionHistoryLimit`.
//!
//! Scaling outside a rollout resizes the one active ReplicaSet. During a
//! rollout keel does not scale proportionally like Kubernetes: pods added
//! go to the new ReplicaSet (it is where the rollout is heading anyway),
//! and pods removed come from the newest old ReplicaSets first, then the
//! new one. The rollout steps then continue from the new total.

use super::{revision::revision_of, rolling, Controller, State, DESIRED_REPLICAS};
use crate::client::ClientResult;
use crate::controllers::int_at;
use crate::meta;

impl Controller {
    /// An active ReplicaSet was sized for another `spec.replicas` than the
    /// Deployment's current one (Kubernetes' `isScalingEvent`).
    pub(super) fn is_scaling_event(&self, st: &State) -> bool {
        let replicas = st.replicas().to_string();
        st.all().any(|rs| {
            int_at(rs, "/spec/replicas") > 0
                && super::annotation(rs, DESIRED_REPLICAS).is_some_and(|d| d != replicas)
        })
    }

    /// Resizes the ReplicaSets to the Deployment's `spec.replicas`.
    pub(super) async fn scale(&self, st: &mut State) -> ClientResult<()> {
        let replicas = st.replicas();
        let active = st
            .all()
            .filter(|rs| int_at(rs, "/spec/replicas") > 0)
            .count();
        if active <= 1 {
            return self.scale_active_or_latest(st, replicas).await;
        }
        let saturated = st.new_rs.as_ref().is_some_and(|rs| {
            int_at(rs, "/spec/replicas") == replicas && rolling::available(rs) == replicas
        });
        if saturated {
            for rs in st.old.iter_mut() {
                if int_at(rs, "/spec/replicas") > 0 {
                    self.scale_rs(&st.d, rs, 0).await?;
                }
            }
            return Ok(());
        }
        self.scale_during_rollout(st, replicas).await
    }

    /// With at most one active ReplicaSet it simply takes all replicas;
    /// with none, the new (or newest) one does.
    async fn scale_active_or_latest(&self, st: &mut State, replicas: i64) -> ClientResult<()> {
        let d = st.d.clone();
        let old_len = st.old.len();
        let active = st.all().position(|rs| int_at(rs, "/spec/replicas") > 0);
        let target = match active {
            Some(i) if i < old_len => st.old.get_mut(i),
            Some(_) => st.new_rs.as_mut(),
            None if st.new_rs.is_some() => st.new_rs.as_mut(),
            None => st.old.last_mut(),
        };
        if let Some(rs) = target {
            self.scale_rs(&d, rs, replicas).await?;
        }
        Ok(())
    }

    /// See the module doc: additions to the new ReplicaSet, removals from
    /// the newest old ones first.
    async fn scale_during_rollout(&self, st: &mut State, replicas: i64) -> ClientResult<()> {
        let allowed = match replicas {
            0 => 0,
            r => r + rolling::max_surge(&st.d),
        };
        let total: i64 = st.all().map(|rs| int_at(rs, "/spec/replicas")).sum();
        let mut delta = allowed - total;
        let d = st.d.clone();
        if delta > 0 {
            if let Some(rs) = st.new_rs.as_mut() {
                let cur = int_at(rs, "/spec/replicas");
                let grown = (cur + delta).min(replicas).max(cur);
                self.scale_rs(&d, rs, grown).await?;
            }
        }
        for rs in st.old.iter_mut().rev().chain(st.new_rs.iter_mut()) {
            let cur = int_at(rs, "/spec/replicas");
            let n = match delta < 0 {
                true => cur.min(-delta),
                false => 0,
            };
            delta += n;
            // Also refreshes the desired-replicas annotation of the rest.
            if cur > 0 || n > 0 {
                self.scale_rs(&d, rs, cur - n).await?;
            }
        }
        Ok(())
    }

    /// Deletes the oldest fully scaled-down old ReplicaSets beyond
    /// `revisionHistoryLimit`.
    pub(super) async fn cleanup(&self, st: &mut State) -> ClientResult<()> {
        let limit = st.d["spec"]["revisionHistoryLimit"]
            .as_i64()
            .unwrap_or(10)
            .max(0);
        let mut cleanable: Vec<&serde_json::Value> =
            st.old.iter().filter(|rs| !meta::is_deleting(rs)).collect();
        let excess = cleanable.len() as i64 - limit;
        if excess <= 0 {
            return Ok(());
        }
        cleanable.sort_by_key(|rs| revision_of(rs));
        for rs in cleanable.into_iter().take(excess as usize) {
            let drained = int_at(rs, "/status/replicas") == 0
                && int_at(rs, "/spec/replicas") == 0
                && int_at(rs, "/metadata/generation") <= int_at(rs, "/status/observedGeneration");
            if drained {
                self.client.delete(&super::rs_path(rs), None).await?;
            }
        }
        Ok(())
    }
}
