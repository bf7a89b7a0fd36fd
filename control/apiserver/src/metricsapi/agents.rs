//! Asking every node's agent for its usage (`AgentService.Stats`), in
//! parallel, each bounded by a timeout. An agent that cannot be reached or
//! has nothing to report yet is left out, as metrics-server leaves out a
//! node it failed to scrape: `kubectl top` then shows the others. Agents
//! are dialled as the API server ([`crate::agent_client`]).

use std::time::Duration;

use futures::future::join_all;
use keel_proto::keelnode::agent_service_client::AgentServiceClient;
use keel_proto::keelnode::{StatsRequest, StatsResponse};
use serde_json::Value;

use crate::agent_client::AgentTls;

/// How long one agent may take to answer.
const AGENT_TIMEOUT: Duration = Duration::from_secs(5);

/// `(node name, answer)` for every node whose agent answered.
pub async fn collect(tls: Option<&AgentTls>, nodes: &[Value]) -> Vec<(String, StatsResponse)> {
    let asks = nodes.iter().map(|n| async move {
        let name = n["metadata"]["name"].as_str()?.to_string();
        let url = crate::podlogs::agent_url(n)?;
        match tokio::time::timeout(AGENT_TIMEOUT, ask(tls, &url)).await {
            Ok(Ok(r)) => Some((name, r)),
            Ok(Err(e)) => {
                tracing::debug!(node = %name, error = %e, "metrics: agent stats failed");
                None
            }
            Err(_) => {
                tracing::debug!(node = %name, "metrics: agent stats timed out");
                None
            }
        }
    });
    join_all(asks).await.into_iter().flatten().collect()
}

async fn ask(tls: Option<&AgentTls>, url: &str) -> anyhow::Result<StatsResponse> {
    let channel = crate::agent_client::connect(tls, url)
        .await
        .map_err(anyhow::Error::msg)?;
    let r = AgentServiceClient::new(channel)
        .stats(StatsRequest {})
        .await?;
    Ok(r.into_inner())
}
