//! The Recreate strategy: every old pod is gone before a new one is
//! created, for workloads that cannot run two versions at once.

use std::collections::HashSet;

use super::{rs_replicas, rs_status_replicas, Controller, State};
use crate::reconcile::{controller_ref, namespace, pod_phase, uid};

impl Controller {
    /// One Recreate step: scale old ReplicaSets to 0, wait until their
    /// pods are gone, then create and scale up the new one.
    pub(super) async fn rollout_recreate(&self, st: &mut State) -> kube::Result<()> {
        self.sync_revision(st, false).await?;
        if self.scale_down_all_old(st).await? || self.old_pods_running(st) {
            return Ok(());
        }
        if st.new_rs.is_none() {
            self.sync_revision(st, true).await?;
            if st.created_new {
                return Ok(());
            }
        }
        if self.reconcile_new_rs(st).await? {
            return Ok(());
        }
        if super::status::is_complete(&st.d, st.d.status.as_ref()) {
            self.cleanup(st).await?;
        }
        Ok(())
    }

    async fn scale_down_all_old(&self, st: &mut State) -> kube::Result<bool> {
        let mut scaled = false;
        for rs in st.old.iter_mut() {
            if rs_replicas(rs) > 0 {
                scaled |= self.scale_rs(&st.d, rs, 0).await?;
            }
        }
        Ok(scaled)
    }

    /// Old ReplicaSets still report pods, or the pod cache still has a
    /// pod of one (terminating pods count: they may still be running).
    fn old_pods_running(&self, st: &State) -> bool {
        if st.old.iter().any(|rs| rs_status_replicas(rs) > 0) {
            return true;
        }
        let old_uids: HashSet<&str> = st.old.iter().map(|rs| uid(&rs.metadata)).collect();
        let running = self.pods.filter_in(namespace(&st.d.metadata), |p| {
            !matches!(pod_phase(p), Some("Succeeded" | "Failed"))
                && controller_ref(&p.metadata).is_some_and(|r| old_uids.contains(r.uid.as_str()))
        });
        !running.is_empty()
    }
}
