//! `kubectl scale` on a Deployment, and pruning old ReplicaSets beyond
//! `revisionHistoryLimit`.
//!
//! Scaling outside a rollout resizes the one active ReplicaSet. During a
//! rollout the change is spread over the active ReplicaSets in proportion
//! to their sizes, as Kubernetes does: each ReplicaSet was sized for the
//! total in its `max-replicas` annotation, and is resized for the new
//! total (`replicas + maxSurge`); rounding leftovers go to the largest.
//! So scaling 10 → 20 halfway through a rollout doubles both halves, and
//! the rollout then continues from the new sizes.

use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::api::{DeleteParams, Preconditions};

use super::{
    annotation, revision::revision_of, rolling, rs_replicas, rs_status_replicas, Controller, State,
    DESIRED_REPLICAS, MAX_REPLICAS,
};
use crate::client::is_status;
use crate::reconcile::{created_s, is_deleting, name};

/// Kubernetes' default `revisionHistoryLimit`.
const DEFAULT_HISTORY: i64 = 10;

impl Controller {
    /// An active ReplicaSet was sized for another `spec.replicas` than the
    /// Deployment's current one (Kubernetes' `isScalingEvent`).
    pub(super) fn is_scaling_event(&self, st: &State) -> bool {
        let replicas = st.replicas().to_string();
        st.all().any(|rs| {
            rs_replicas(rs) > 0
                && annotation(&rs.metadata, DESIRED_REPLICAS).is_some_and(|d| d != replicas)
        })
    }

    /// Resizes the ReplicaSets to the Deployment's `spec.replicas`.
    pub(super) async fn scale(&self, st: &mut State) -> kube::Result<()> {
        let replicas = st.replicas();
        let active = st.all().filter(|rs| rs_replicas(rs) > 0).count();
        if active <= 1 {
            return self.scale_active_or_latest(st, replicas).await;
        }
        let saturated = st
            .new_rs
            .as_ref()
            .is_some_and(|rs| rs_replicas(rs) == replicas && rolling::available(rs) == replicas);
        if saturated {
            for rs in st.old.iter_mut() {
                if rs_replicas(rs) > 0 {
                    self.scale_rs(&st.d, rs, 0).await?;
                }
            }
            return Ok(());
        }
        self.scale_during_rollout(st, replicas).await
    }

    /// With at most one active ReplicaSet it simply takes all replicas;
    /// with none, the new (or newest) one does.
    async fn scale_active_or_latest(&self, st: &mut State, replicas: i64) -> kube::Result<()> {
        let old_len = st.old.len();
        let active = st.all().position(|rs| rs_replicas(rs) > 0);
        let target = match active {
            Some(i) if i < old_len => st.old.get_mut(i),
            Some(_) => st.new_rs.as_mut(),
            None if st.new_rs.is_some() => st.new_rs.as_mut(),
            None => st.old.last_mut(),
        };
        if let Some(rs) = target {
            self.scale_rs(&st.d, rs, replicas).await?;
        }
        Ok(())
    }

    /// Proportional scaling (see the module doc).
    async fn scale_during_rollout(&self, st: &mut State, replicas: i64) -> kube::Result<()> {
        let allowed = match replicas {
            0 => 0,
            r => r + rolling::max_surge(&st.d),
        };
        let status_replicas =
            st.d.status
                .as_ref()
                .map_or(0, |s| i64::from(s.replicas.unwrap_or(0)));
        let mut active: Vec<&mut ReplicaSet> = st
            .old
            .iter_mut()
            .chain(st.new_rs.iter_mut())
            .filter(|rs| rs_replicas(rs) > 0)
            .collect();
        let sizing: Vec<Sizing> = active.iter().map(|rs| Sizing::of(rs)).collect();
        let sizes = proportional_sizes(&sizing, allowed, status_replicas);
        for (rs, size) in active.iter_mut().zip(sizes) {
            self.scale_rs(&st.d, rs, size).await?;
        }
        Ok(())
    }

    /// Deletes the oldest fully scaled-down old ReplicaSets beyond
    /// `revisionHistoryLimit`, each pinned to the uid judged.
    pub(super) async fn cleanup(&self, st: &mut State) -> kube::Result<()> {
        let limit =
            st.d.spec
                .as_ref()
                .and_then(|s| s.revision_history_limit)
                .map_or(DEFAULT_HISTORY, i64::from)
                .max(0);
        let mut cleanable: Vec<&ReplicaSet> = st
            .old
            .iter()
            .filter(|rs| !is_deleting(&rs.metadata))
            .collect();
        let excess = cleanable.len() as i64 - limit;
        if excess <= 0 {
            return Ok(());
        }
        cleanable.sort_by_key(|rs| revision_of(rs));
        for rs in cleanable.into_iter().take(excess as usize) {
            if is_drained(rs) {
                self.delete_rs(rs).await?;
            }
        }
        Ok(())
    }

    async fn delete_rs(&self, rs: &ReplicaSet) -> kube::Result<()> {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: rs.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.rs_api(rs).delete(name(&rs.metadata), &params).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// No replicas wanted or running, and the status describes the current spec.
fn is_drained(rs: &ReplicaSet) -> bool {
    let generation = rs.metadata.generation.unwrap_or(0);
    let observed = rs
        .status
        .as_ref()
        .and_then(|s| s.observed_generation)
        .unwrap_or(0);
    rs_status_replicas(rs) == 0 && rs_replicas(rs) == 0 && generation <= observed
}

/// What proportional scaling needs of one active ReplicaSet.
#[derive(Debug, Clone)]
struct Sizing {
    replicas: i64,
    /// The total it was sized for (`deployment.kubernetes.io/max-replicas`).
    sized_for: Option<i64>,
    /// Creation order: (seconds, name).
    age: (i64, String),
}

impl Sizing {
    fn of(rs: &ReplicaSet) -> Sizing {
        Sizing {
            replicas: rs_replicas(rs),
            sized_for: annotation(&rs.metadata, MAX_REPLICAS).and_then(|v| v.parse().ok()),
            age: (
                created_s(&rs.metadata).unwrap_or(0),
                name(&rs.metadata).to_string(),
            ),
        }
    }
}

/// New sizes (in input order) for active ReplicaSets whose total should
/// become `allowed` (Kubernetes' `scale` with `getProportion`): each gets
/// its share `round(replicas * allowed / sized_for)`, bounded by what is
/// left to add or remove; what rounding leaves over goes to the largest
/// (ties: the newest when adding, the oldest when removing). `fallback`
/// (the Deployment's status.replicas) stands in for a missing annotation.
fn proportional_sizes(rss: &[Sizing], allowed: i64, fallback: i64) -> Vec<i64> {
    let total: i64 = rss.iter().map(|r| r.replicas).sum();
    let to_add = allowed - total;
    let mut sizes: Vec<i64> = rss.iter().map(|r| r.replicas).collect();
    if to_add == 0 || rss.is_empty() {
        return sizes;
    }
    let mut order: Vec<usize> = (0..rss.len()).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (&rss[a], &rss[b]);
        let by_age = match to_add > 0 {
            true => rb.age.cmp(&ra.age),
            false => ra.age.cmp(&rb.age),
        };
        rb.replicas.cmp(&ra.replicas).then(by_age)
    });
    let mut added = 0;
    for &i in &order {
        let left = to_add - added;
        if left == 0 {
            break;
        }
        let share = fraction(&rss[i], allowed, fallback);
        let share = match to_add > 0 {
            true => share.min(left),
            false => share.max(left),
        };
        sizes[i] += share;
        added += share;
    }
    let largest = order[0];
    sizes[largest] = (sizes[largest] + to_add - added).max(0);
    debug_assert!(sizes.iter().all(|s| *s >= 0));
    sizes
}

/// How many replicas `rs` gains (or loses) when the total becomes `allowed`.
fn fraction(rs: &Sizing, allowed: i64, fallback: i64) -> i64 {
    if allowed == 0 {
        return -rs.replicas;
    }
    let sized_for = rs.sized_for.unwrap_or(fallback);
    if sized_for <= 0 {
        return 0;
    }
    let scaled = (rs.replicas * allowed) as f64 / sized_for as f64;
    scaled.round() as i64 - rs.replicas
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(replicas: i64, sized_for: i64, created: i64) -> Sizing {
        Sizing {
            replicas,
            sized_for: Some(sized_for),
            age: (created, format!("rs-{created}")),
        }
    }

    #[test]
    fn scaling_mid_rollout_keeps_the_proportions() {
        // 10 replicas + surge 3 = 13, split 8 old / 5 new; scale to 20 (+5 surge).
        let rss = [rs(8, 13, 1), rs(5, 13, 2)];
        assert_eq!(proportional_sizes(&rss, 25, 13), vec![15, 10]);
        // And back down to 5 (+2 surge): both shrink, total 7.
        let rss = [rs(15, 25, 1), rs(10, 25, 2)];
        let down = proportional_sizes(&rss, 7, 25);
        assert_eq!(down.iter().sum::<i64>(), 7);
        assert_eq!(down, vec![4, 3]);
    }

    #[test]
    fn rounding_leftovers_go_to_the_largest() {
        // Three equal ReplicaSets sized for 3, total becomes 4: one gets the extra.
        let rss = [rs(1, 3, 1), rs(1, 3, 2), rs(1, 3, 3)];
        let up = proportional_sizes(&rss, 4, 3);
        assert_eq!(up.iter().sum::<i64>(), 4);
        assert_eq!(up, vec![1, 1, 2], "ties go to the newest when adding");
        let down = proportional_sizes(&rss, 2, 3);
        assert_eq!(down.iter().sum::<i64>(), 2);
        assert_eq!(down, vec![0, 1, 1], "ties go to the oldest when removing");
    }

    #[test]
    fn scaling_to_zero_empties_everything() {
        let rss = [rs(3, 5, 1), rs(2, 5, 2)];
        assert_eq!(proportional_sizes(&rss, 0, 5), vec![0, 0]);
    }

    #[test]
    fn a_missing_annotation_falls_back_to_the_status() {
        let mut a = rs(2, 0, 1);
        a.sized_for = None;
        let rss = [a, rs(2, 4, 2)];
        assert_eq!(proportional_sizes(&rss, 8, 4), vec![4, 4]);
    }
}
