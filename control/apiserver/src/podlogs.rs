//! The agent side of `GET pods/{name}/log`: the API server streams a
//! container's log from the agent running the pod, as kube-apiserver does
//! from the kubelet. The REST handler (`api/read.rs`) parses the request;
//! this module only finds the agent and opens its stream.
//!
//! The agent is found through the Node object: its InternalIP address and
//! `status.daemonEndpoints.kubeletEndpoint.Port` (the agent's log service,
//! `keelnode.AgentService`), dialled over TLS as the API server
//! ([`crate::agent_client`]). Errors keep Kubernetes' shape: a bad
//! container name is 400, an unreachable agent (or one whose certificate
//! does not verify) 503.

use axum::body::Body;
use axum::http::{header, HeaderValue, Response};
use bytes::Bytes;
use futures::StreamExt;
use keel_proto::keelnode::agent_service_client::AgentServiceClient;
use keel_proto::keelnode::LogsRequest;
use serde_json::Value;

use crate::status::{ApiError, ApiResult};

/// Where the node's agent serves logs: `http://<InternalIP>:<port>`.
pub fn agent_url(node: &Value) -> Option<String> {
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_i64()?;
    let addrs = node["status"]["addresses"].as_array()?;
    let ip = addrs
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())?;
    match ip.contains(':') {
        true => Some(format!("http://[{ip}]:{port}")),
        false => Some(format!("http://{ip}:{port}")),
    }
}

/// Opens the agent's log stream, as a `text/plain` response.
pub async fn stream(
    tls: Option<&crate::agent_client::AgentTls>,
    node: &Value,
    req: LogsRequest,
) -> ApiResult<Response<Body>> {
    let node_name = node["metadata"]["name"].as_str().unwrap_or_default();
    let unavailable = |why: String| {
        ApiError::new(
            503,
            "ServiceUnavailable",
            format!("the agent of node {node_name:?} cannot be reached for logs: {why}"),
        )
    };
    let url =
        agent_url(node).ok_or_else(|| unavailable("the node reports no agent endpoint".into()))?;
    let channel = crate::agent_client::connect(tls, &url)
        .await
        .map_err(unavailable)?;
    let pod = req.pod.clone();
    let answer = AgentServiceClient::new(channel)
        .logs(req)
        .await
        .map_err(|s| from_status(&pod, s))?;
    let chunks = answer.into_inner().map(|r| {
        r.map(|c| Bytes::from(c.data))
            .map_err(std::io::Error::other)
    });
    let mut resp = Response::new(Body::from_stream(chunks));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(resp)
}

fn from_status(pod: &str, s: tonic::Status) -> ApiError {
    let msg = s.message().to_string();
    match s.code() {
        tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => {
            ApiError::bad_request(msg)
        }
        tonic::Code::NotFound => ApiError::new(404, "NotFound", msg),
        _ => ApiError::new(
            503,
            "ServiceUnavailable",
            format!("logs of pod {pod:?}: {msg}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn agent_endpoint_from_node_status() {
        let n = json!({"status": {"addresses": [{"type": "Hostname", "address": "h"},
            {"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}});
        assert_eq!(agent_url(&n).as_deref(), Some("http://127.0.0.1:10250"));
        assert_eq!(agent_url(&json!({})), None);
    }
}
