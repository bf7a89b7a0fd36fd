//! Objects keel stores but some of its nodes cannot act on, said where a
//! user looks: a NetworkPolicy created while any node runs its pods in
//! loopback mode (pods share the agent's network namespace, so no packet
//! filter can tell them apart) is answered with a `Warning` header, which
//! kubectl prints, and gets a Warning Event `NotEnforced`, which `kubectl
//! describe networkpolicy` shows.
//!
//! Nodes say their mode in the [`pod_network::ANNOTATION`] annotation;
//! nodes without it are not counted. Best effort: a failed node read or
//! Event write is logged and never fails the create.

use std::sync::Arc;

use keel_apimachinery::pod_network;
use serde_json::Value;

use super::{Api, Target};
use crate::client::Client;
use crate::events;

/// The Event's reason and the component that reports it.
const REASON: &str = "NotEnforced";
const COMPONENT: &str = "keel-apiserver";

/// Warnings for the object `obj` just created at `t`; records the Event
/// too when there are any.
pub async fn on_create(api: &Arc<Api>, t: &Target, obj: &Value) -> Vec<String> {
    if t.info.group != "networking.k8s.io" || t.info.resource != "networkpolicies" {
        return Vec::new();
    }
    let nodes = keel_apimachinery::resources::find("", "v1", "nodes").map(|n| n.prefix(None));
    let nodes = match nodes {
        Some(prefix) => api.objects.list_local(&prefix).await,
        None => return Vec::new(),
    };
    let nodes = match nodes {
        Ok(nodes) => nodes,
        Err(e) => {
            tracing::warn!(error = %e.message, "cannot read Nodes to tell whether NetworkPolicies are enforced");
            return Vec::new();
        }
    };
    let loopback = loopback_nodes(&nodes);
    if loopback.is_empty() {
        return Vec::new();
    }
    let message = message(&loopback);
    let client = Client::new(api.clone(), COMPONENT);
    let involved = events::object_ref(obj);
    let event_message = message.clone();
    spawn_event(client, involved, event_message);
    vec![message]
}

/// Records the Event in the background. A plain function, not inline in
/// [`on_create`]: recording is itself an API create, so awaiting it there
/// would make the create future contain itself.
fn spawn_event(client: Client, involved: Value, message: String) {
    tokio::spawn(async move {
        let (ty, component) = (events::WARNING, COMPONENT);
        events::record(&client, &involved, ty, REASON, &message, component).await;
    });
}

/// Names of the nodes that announce loopback mode, sorted.
fn loopback_nodes(nodes: &[Value]) -> Vec<String> {
    let mut names: Vec<String> = nodes
        .iter()
        .filter(|n| {
            n["metadata"]["annotations"][pod_network::ANNOTATION].as_str()
                == Some(pod_network::LOOPBACK)
        })
        .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// The warning, naming up to five of the nodes.
fn message(nodes: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut list = nodes
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if nodes.len() > SHOWN {
        list.push_str(&format!(" and {} more", nodes.len() - SHOWN));
    }
    format!(
        "NetworkPolicy is not enforced on nodes in loopback pod-network mode ({list}): their pods share the node's network namespace; run those agents with --network netns to enforce it"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, mode: Option<&str>) -> Value {
        let mut n = json!({"metadata": {"name": name, "annotations": {}}});
        if let Some(m) = mode {
            n["metadata"]["annotations"][pod_network::ANNOTATION] = json!(m);
        }
        n
    }

    #[test]
    fn only_nodes_announcing_loopback_are_named() {
        let nodes = [
            node("b", Some("loopback")),
            node("c", Some("netns")),
            node("d", None),
            node("a", Some("loopback")),
        ];
        assert_eq!(loopback_nodes(&nodes), ["a", "b"]);
        let none = [node("c", Some("netns"))];
        assert!(loopback_nodes(&none).is_empty());
    }

    #[test]
    fn the_message_names_a_few_nodes_and_counts_the_rest() {
        let names: Vec<String> = (0..7).map(|i| format!("n{i}")).collect();
        let m = message(&names);
        assert!(m.contains("(n0, n1, n2, n3, n4 and 2 more)"), "{m}");
        assert!(m.contains("--network netns"), "{m}");
    }
}
