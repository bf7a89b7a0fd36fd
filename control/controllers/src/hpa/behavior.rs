//! `spec.behavior`: stabilization windows and scaling policies, as
//! Kubernetes' HPA controller applies them
//! (`normalizeDesiredReplicasWithBehaviors`). Pure over an explicit clock,
//! so the documented examples are table tests.
//!
//! Stabilization: the recommendation applied is the *highest* of the
//! recommendations within the scale-down window (so a brief dip does not
//! remove pods) and the *lowest* within the scale-up window. Policies then
//! cap how much may change per period, counting the changes already made
//! in that period; `selectPolicy` picks the policy allowing the most
//! change (`Max`), the least (`Min`), or none (`Disabled`). Finally the
//! result stays within `[minReplicas, maxReplicas]`.
//!
//! Without `spec.behavior` the documented defaults apply: scale up at most
//! `max(4 pods, 100%)` per 15 s with no window; scale down at most 100% per
//! 15 s after the controller's downscale stabilization window
//! (`--horizontal-pod-autoscaler-downscale-stabilization`, 5 min).

use std::time::{Duration, Instant};

use k8s_openapi::api::autoscaling::v2::{HPAScalingRules, HorizontalPodAutoscalerBehavior};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    Max,
    Min,
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    Pods,
    Percent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub kind: PolicyKind,
    pub value: i32,
    pub period: Duration,
}

/// One direction's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub window: Duration,
    pub select: Select,
    pub policies: Vec<Policy>,
}

impl Rules {
    fn longest_period(&self) -> Duration {
        self.policies
            .iter()
            .map(|p| p.period)
            .max()
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behavior {
    pub up: Rules,
    pub down: Rules,
}

fn policy(kind: PolicyKind, value: i32, period_s: u64) -> Policy {
    Policy {
        kind,
        value,
        period: Duration::from_secs(period_s),
    }
}

impl Behavior {
    /// The HPA's behavior, each unset part replaced by its default.
    pub fn from_spec(
        spec: Option<&HorizontalPodAutoscalerBehavior>,
        down_window: Duration,
    ) -> Behavior {
        let up_default = Rules {
            window: Duration::ZERO,
            select: Select::Max,
            policies: vec![
                policy(PolicyKind::Pods, 4, 15),
                policy(PolicyKind::Percent, 100, 15),
            ],
        };
        let down_default = Rules {
            window: down_window,
            select: Select::Max,
            policies: vec![policy(PolicyKind::Percent, 100, 15)],
        };
        Behavior {
            up: rules(spec.and_then(|b| b.scale_up.as_ref()), up_default),
            down: rules(spec.and_then(|b| b.scale_down.as_ref()), down_default),
        }
    }
}

fn rules(spec: Option<&HPAScalingRules>, default: Rules) -> Rules {
    let Some(s) = spec else {
        return default;
    };
    let policies: Vec<Policy> = s
        .policies
        .iter()
        .flatten()
        .map(|p| Policy {
            kind: if p.type_ == "Percent" {
                PolicyKind::Percent
            } else {
                PolicyKind::Pods
            },
            value: p.value,
            period: Duration::from_secs(u64::try_from(p.period_seconds).unwrap_or(0)),
        })
        .collect();
    Rules {
        window: s.stabilization_window_seconds.map_or(default.window, |w| {
            Duration::from_secs(u64::try_from(w).unwrap_or(0))
        }),
        select: match s.select_policy.as_deref() {
            Some("Min") => Select::Min,
            Some("Disabled") => Select::Disabled,
            _ => Select::Max,
        },
        policies: if policies.is_empty() {
            default.policies
        } else {
            policies
        },
    }
}

/// What normalization decided, with the condition reasons Kubernetes sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub replicas: i32,
    /// `AbleToScale` reason and message.
    pub able_reason: &'static str,
    pub able_message: &'static str,
    /// `ScalingLimited`: true when the result differs from the stabilized
    /// recommendation.
    pub limited: bool,
    pub limited_reason: &'static str,
    pub limited_message: &'static str,
}

/// Per-HPA memory of recommendations and rescales (the controller keeps
/// one per HPA, in memory, as Kubernetes does).
#[derive(Debug, Default, Clone)]
pub struct History {
    recommendations: Vec<(Instant, i32)>,
    up_events: Vec<(Instant, i32)>,
    down_events: Vec<(Instant, i32)>,
}

fn changed_within(events: &[(Instant, i32)], now: Instant, period: Duration) -> i32 {
    events
        .iter()
        .filter(|(t, _)| now.saturating_duration_since(*t) < period)
        .map(|(_, n)| n)
        .sum()
}

impl History {
    /// A history that remembers `desired` as recommended at `now` (the
    /// last desired count a previous leader stored), as Kubernetes seeds
    /// it; nothing for 0 (a new HPA).
    pub fn seeded(now: Instant, desired: i32) -> History {
        History {
            recommendations: if desired > 0 {
                vec![(now, desired)]
            } else {
                vec![]
            },
            ..History::default()
        }
    }

    /// The replica count to apply, given the metrics' `desired` count.
    #[allow(clippy::too_many_arguments)]
    pub fn normalize(
        &mut self,
        now: Instant,
        b: &Behavior,
        current: i32,
        desired: i32,
        min: i32,
        max: i32,
    ) -> Decision {
        let stabilized = self.stabilize(now, b, current, desired);
        let (able_reason, able_message) = if stabilized == desired {
            ("ReadyForNewScale", "recommended size matches current size")
        } else if desired >= current {
            (
                "ScaleUpStabilized",
                "recent recommendations were lower than current one, applying the lowest recent recommendation",
            )
        } else {
            (
                "ScaleDownStabilized",
                "recent recommendations were higher than current one, applying the highest recent recommendation",
            )
        };
        let (replicas, limited_reason, limited_message) =
            self.rate_limit(now, b, current, stabilized, min, max);
        Decision {
            replicas,
            able_reason,
            able_message,
            limited: replicas != stabilized,
            limited_reason,
            limited_message,
        }
    }

    fn stabilize(&mut self, now: Instant, b: &Behavior, current: i32, desired: i32) -> i32 {
        let mut up = desired;
        let mut down = desired;
        for &(t, rec) in &self.recommendations {
            let age = now.saturating_duration_since(t);
            if age < b.up.window {
                up = up.min(rec);
            }
            if age < b.down.window {
                down = down.max(rec);
            }
        }
        let keep = b.up.window.max(b.down.window);
        self.recommendations
            .retain(|(t, _)| now.saturating_duration_since(*t) < keep);
        self.recommendations.push((now, desired));
        current.max(up).min(down)
    }

    fn rate_limit(
        &self,
        now: Instant,
        b: &Behavior,
        current: i32,
        desired: i32,
        min: i32,
        max: i32,
    ) -> (i32, &'static str, &'static str) {
        if desired > current {
            let limit = self.up_limit(now, &b.up, current).max(current);
            let (allowed, reason, message) = if max > limit {
                (
                    limit,
                    "ScaleUpLimit",
                    "the desired replica count is increasing faster than the maximum scale rate",
                )
            } else {
                (
                    max,
                    "TooManyReplicas",
                    "the desired replica count is more than the maximum replica count",
                )
            };
            if desired > allowed {
                return (allowed, reason, message);
            }
        } else if desired < current {
            let limit = self.down_limit(now, &b.down, current).min(current);
            let (allowed, reason, message) = if min < limit {
                (
                    limit,
                    "ScaleDownLimit",
                    "the desired replica count is decreasing faster than the maximum scale rate",
                )
            } else {
                (
                    min,
                    "TooFewReplicas",
                    "the desired replica count is less than the minimum replica count",
                )
            };
            if desired < allowed {
                return (allowed, reason, message);
            }
        }
        (
            desired,
            "DesiredWithinRange",
            "the desired count is within the acceptable range",
        )
    }

    fn period_start(&self, now: Instant, current: i32, period: Duration) -> i32 {
        current - changed_within(&self.up_events, now, period)
            + changed_within(&self.down_events, now, period)
    }

    fn up_limit(&self, now: Instant, r: &Rules, current: i32) -> i32 {
        let proposals = r.policies.iter().map(|p| {
            let start = self.period_start(now, current, p.period);
            match p.kind {
                PolicyKind::Pods => start + p.value,
                PolicyKind::Percent => {
                    (f64::from(start) * (1.0 + f64::from(p.value) / 100.0)).ceil() as i32
                }
            }
        });
        match r.select {
            Select::Disabled => current,
            Select::Min => proposals.min().unwrap_or(current),
            Select::Max => proposals.max().unwrap_or(current),
        }
    }

    fn down_limit(&self, now: Instant, r: &Rules, current: i32) -> i32 {
        let proposals = r.policies.iter().map(|p| {
            let start = self.period_start(now, current, p.period);
            match p.kind {
                PolicyKind::Pods => start - p.value,
                PolicyKind::Percent => {
                    (f64::from(start) * (1.0 - f64::from(p.value) / 100.0)) as i32
                }
            }
        });
        match r.select {
            Select::Disabled => current,
            // The least change when scaling down is the highest count.
            Select::Min => proposals.max().unwrap_or(current),
            Select::Max => proposals.min().unwrap_or(current),
        }
    }

    /// Remembers a rescale from `from` to `to` for the policies' periods.
    pub fn record_scale(&mut self, now: Instant, b: &Behavior, from: i32, to: i32) {
        let (events, keep) = if to > from {
            (&mut self.up_events, b.up.longest_period())
        } else {
            (&mut self.down_events, b.down.longest_period())
        };
        events.retain(|(t, _)| now.saturating_duration_since(*t) < keep);
        events.push((now, (to - from).abs()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::autoscaling::v2::HPAScalingPolicy;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn defaults(down_window_s: u64) -> Behavior {
        Behavior::from_spec(None, secs(down_window_s))
    }

    #[test]
    fn default_scale_up_is_max_of_four_pods_and_double() {
        let b = defaults(300);
        let now = Instant::now();
        // (current, desired, max, expected)
        let table = [
            (1, 10, 100, 5),
            (10, 50, 100, 20),
            (2, 3, 100, 3),
            (3, 50, 10, 7),
            (8, 50, 10, 10),
        ];
        for (current, desired, max, want) in table {
            let mut h = History::default();
            let d = h.normalize(now, &b, current, desired, 1, max);
            assert_eq!(d.replicas, want, "{current} -> {desired} (max {max})");
        }
        let mut h = History::default();
        let d = h.normalize(now, &b, 1, 10, 1, 100);
        assert!(d.limited);
        assert_eq!(d.limited_reason, "ScaleUpLimit");
        let d = History::default().normalize(now, &b, 8, 50, 1, 10);
        assert_eq!(d.limited_reason, "TooManyReplicas");
    }

    #[test]
    fn scale_down_waits_for_the_stabilization_window() {
        let b = defaults(60);
        let t0 = Instant::now();
        let mut h = History::default();
        // Load: 5 wanted at t0; then the load goes, 1 wanted.
        assert_eq!(h.normalize(t0, &b, 5, 5, 1, 10).replicas, 5);
        let d = h.normalize(t0 + secs(30), &b, 5, 1, 1, 10);
        assert_eq!(d.replicas, 5, "the t0 recommendation still holds");
        assert_eq!(d.able_reason, "ScaleDownStabilized");
        let d = h.normalize(t0 + secs(61), &b, 5, 1, 1, 10);
        assert_eq!(d.replicas, 1, "the window has passed");
        assert_eq!(d.able_reason, "ReadyForNewScale");
    }

    #[test]
    fn a_seeded_history_holds_the_previous_leaders_count() {
        let b = defaults(60);
        let t0 = Instant::now();
        let mut h = History::seeded(t0, 4);
        assert_eq!(h.normalize(t0 + secs(1), &b, 4, 1, 1, 10).replicas, 4);
        assert_eq!(h.normalize(t0 + secs(61), &b, 4, 1, 1, 10).replicas, 1);
        let mut fresh = History::seeded(t0, 0);
        assert_eq!(fresh.normalize(t0, &b, 4, 1, 1, 10).replicas, 1);
    }

    #[test]
    fn min_replicas_bound_scale_down() {
        let b = defaults(0);
        let d = History::default().normalize(Instant::now(), &b, 4, 0, 2, 10);
        assert_eq!(d.replicas, 2);
        assert_eq!(d.limited_reason, "TooFewReplicas");
    }

    #[test]
    fn policies_count_changes_already_made_in_the_period() {
        // The docs' example: scale down at most 4 pods per minute, or 10%.
        let spec = HorizontalPodAutoscalerBehavior {
            scale_down: Some(HPAScalingRules {
                stabilization_window_seconds: Some(0),
                select_policy: Some("Max".into()),
                policies: Some(vec![
                    HPAScalingPolicy {
                        type_: "Pods".into(),
                        value: 4,
                        period_seconds: 60,
                    },
                    HPAScalingPolicy {
                        type_: "Percent".into(),
                        value: 10,
                        period_seconds: 60,
                    },
                ]),
                tolerance: None,
            }),
            scale_up: None,
        };
        let b = Behavior::from_spec(Some(&spec), secs(300));
        let t0 = Instant::now();
        let mut h = History::default();
        // 80 -> 1 wanted: Percent allows 72, Pods 76; Max picks the larger change.
        let d = h.normalize(t0, &b, 80, 1, 1, 100);
        assert_eq!(d.replicas, 72);
        assert_eq!(d.limited_reason, "ScaleDownLimit");
        h.record_scale(t0, &b, 80, 72);
        // Within the same minute the period started at 80: no more room.
        assert_eq!(h.normalize(t0 + secs(10), &b, 72, 1, 1, 100).replicas, 72);
        // A minute later the period starts at 72: 10% => 64 (ceil of 64.8 down).
        assert_eq!(h.normalize(t0 + secs(61), &b, 72, 1, 1, 100).replicas, 64);
    }

    #[test]
    fn select_policy_min_and_disabled() {
        let mut spec = HorizontalPodAutoscalerBehavior {
            scale_up: Some(HPAScalingRules {
                stabilization_window_seconds: Some(0),
                select_policy: Some("Min".into()),
                policies: Some(vec![
                    HPAScalingPolicy {
                        type_: "Pods".into(),
                        value: 1,
                        period_seconds: 15,
                    },
                    HPAScalingPolicy {
                        type_: "Percent".into(),
                        value: 100,
                        period_seconds: 15,
                    },
                ]),
                tolerance: None,
            }),
            scale_down: None,
        };
        let now = Instant::now();
        let b = Behavior::from_spec(Some(&spec), secs(0));
        assert_eq!(
            History::default().normalize(now, &b, 4, 10, 1, 20).replicas,
            5
        );
        if let Some(up) = spec.scale_up.as_mut() {
            up.select_policy = Some("Disabled".into());
        }
        let b = Behavior::from_spec(Some(&spec), secs(0));
        assert_eq!(
            History::default().normalize(now, &b, 4, 10, 1, 20).replicas,
            4
        );
    }

    #[test]
    fn scale_up_window_takes_the_lowest_recent_recommendation() {
        let spec = HorizontalPodAutoscalerBehavior {
            scale_up: Some(HPAScalingRules {
                stabilization_window_seconds: Some(30),
                select_policy: None,
                policies: None,
                tolerance: None,
            }),
            scale_down: None,
        };
        let b = Behavior::from_spec(Some(&spec), secs(0));
        let t0 = Instant::now();
        let mut h = History::default();
        assert_eq!(h.normalize(t0, &b, 2, 2, 1, 10).replicas, 2);
        let d = h.normalize(t0 + secs(10), &b, 2, 6, 1, 10);
        assert_eq!(d.replicas, 2);
        assert_eq!(d.able_reason, "ScaleUpStabilized");
        assert_eq!(h.normalize(t0 + secs(31), &b, 2, 6, 1, 10).replicas, 6);
    }
}
