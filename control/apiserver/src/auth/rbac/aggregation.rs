//! The ClusterRole aggregation controller: an aggregated ClusterRole's
//! stored `rules` become the union of the rules of every ClusterRole its
//! `aggregationRule` selects, so `kubectl get clusterrole admin -o yaml`
//! shows what the role grants. Runs on every replica; the writes are
//! compare-and-swap, so replicas racing write the same result once.

use std::time::Duration;

use serde_json::{json, Value};

use super::resolve::rules_of;
use super::Rule;
use crate::kinds::common::label_selector::{selector_matches, string_map};
use crate::storage::Objects;

/// The rules `role` aggregates (None when it has no aggregationRule).
pub fn aggregated(role: &Value, all: &[Value]) -> Option<Vec<Rule>> {
    let selectors = role["aggregationRule"]["clusterRoleSelectors"].as_array()?;
    let me = role["metadata"]["name"].as_str();
    let mut out: Vec<Rule> = Vec::new();
    for other in all {
        if other["metadata"]["name"].as_str() == me {
            continue;
        }
        let labels = string_map(other["metadata"]["labels"].as_object());
        if selectors.iter().any(|s| selector_matches(s, &labels)) {
            for r in rules_of(other) {
                if !out.contains(&r) {
                    out.push(r);
                }
            }
        }
    }
    Some(out)
}

/// One pass: rewrites the aggregated roles whose rules are stale.
/// Returns whether it wrote anything (aggregated roles that aggregate
/// others, as admin aggregates edit, settle over more than one pass).
pub async fn reconcile(objects: &Objects) -> bool {
    let prefix = super::resolve::info("clusterroles").prefix(None);
    let Ok(all) = objects.list_local(&prefix).await else {
        return false;
    };
    let mut wrote = false;
    for role in &all {
        let Some(want) = aggregated(role, &all) else {
            continue;
        };
        if rules_of(role) == want {
            continue;
        }
        let name = role["metadata"]["name"].as_str().unwrap_or("");
        let key = format!("{prefix}{name}");
        let Ok(Some(cur)) = objects.get(&key).await else {
            continue;
        };
        let mut next = cur.obj.clone();
        next["rules"] = json!(want);
        match objects.update(&key, &next, cur.mod_revision).await {
            Ok(_) => wrote = true,
            Err(e) => tracing::debug!(role = name, error = %e.message, "aggregating a ClusterRole"),
        }
    }
    wrote
}

/// Passes until nothing changes (bounded): run before serving, so the
/// default aggregated roles are complete and no write follows the start.
pub async fn settle(objects: &Objects) {
    for _ in 0..8 {
        if !reconcile(objects).await {
            return;
        }
    }
}

/// Reconciles every `period` until aborted.
pub async fn run(objects: Objects, period: Duration) {
    loop {
        settle(&objects).await;
        tokio::time::sleep(period).await;
    }
}
