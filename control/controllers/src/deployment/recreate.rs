//! The Recreate strategy: every old pod is gone before a new one is
//! created, for workloads that cannot run two versions at once.

use std::collections::HashSet;

use super::{Controller, State};
use crate::client::ClientResult;
use crate::meta;
use crate::reconcile::{controller_ref, int_at, namespace};

impl Controller {
    /// One Recreate step: scale old ReplicaSets to 0, wait until their
    /// pods are gone, then create and scale up the new one.
    pub(super) async fn rollout_recreate(&self, st: &mut State) -> ClientResult<()> {
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
        if super::status::is_complete(&st.d, &st.d["status"]) {
            self.cleanup(st).await?;
        }
        Ok(())
    }

    async fn scale_down_all_old(&self, st: &mut State) -> ClientResult<bool> {
        let mut scaled = false;
        for rs in st.old.iter_mut() {
            if int_at(rs, "/spec/replicas") > 0 {
                scaled |= self.scale_rs(&st.d, rs, 0).await?;
            }
        }
        Ok(scaled)
    }

    /// Old ReplicaSets still report pods, or the pod cache still has a
    /// pod of one (terminating pods count: they may still be running).
    fn old_pods_running(&self, st: &State) -> bool {
        if st.old.iter().any(|rs| int_at(rs, "/status/replicas") > 0) {
            return true;
        }
        let old_uids: HashSet<&str> = st.old.iter().map(meta::uid).collect();
        let ns = namespace(&st.d);
        !self
            .pods
            .filter(|p| {
                namespace(p) == ns
                    && !matches!(
                        p["status"]["phase"].as_str(),
                        Some("Succeeded") | Some("Failed")
                    )
                    && controller_ref(p)
                        .and_then(|r| r["uid"].as_str())
                        .is_some_and(|u| old_uids.contains(u))
            })
            .is_empty()
    }
}
