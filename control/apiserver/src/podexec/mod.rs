//! `pods/{name}/exec`, `attach` and `portforward`: streaming subresources,
//! as kube-apiserver serves them by proxying to the kubelet. Here the API
//! server checks the request, opens the agent's bidi gRPC call
//! (`AgentService.Exec` / `PortForward`, found as for logs through the Node's
//! InternalIP and `daemonEndpoints.kubeletEndpoint.Port`), and only then
//! upgrades the client's connection and bridges it to that call.
//!
//! Transports (see [`channels`] and [`portforward`]):
//! - exec/attach: WebSocket with `v5.channel.k8s.io` (kubectl 1.30+),
//!   `v4.channel.k8s.io` (the Python client), and the older
//!   `channel.k8s.io` / `base64.channel.k8s.io` variants;
//! - portforward: WebSocket `v4.channel.k8s.io` / `portforward.k8s.io`
//!   (the Python client), SPDY/3.1 tunneled over a WebSocket
//!   (`SPDY/3.1+portforward.k8s.io`, kubectl 1.31+), and plain SPDY/3.1
//!   (`POST`, `Upgrade: SPDY/3.1`, older clients);
//! - exec/attach also over plain SPDY/3.1 with `v4.channel.k8s.io` /
//!   `v5.channel.k8s.io` ([`spdyexec`]; older clients, and kubectl when its
//!   WebSocket upgrade fails).
//!
//! Errors found by the API server are `Status` JSON answered before any
//! upgrade: pod not found 404; container not valid, pod without a node, a
//! request that is not an upgrade: 400; an unreachable agent 503. What the
//! agent refuses (container not running, command not found) arrives after
//! the upgrade as a `Failure` Status on the error channel.
//!
//! Authentication: the client is authenticated like every API request (the
//! server's bearer-token check). The call to the agent is mutual TLS, as
//! for logs ([`crate::agent_client`]): the API server presents its
//! `kube-apiserver-kubelet-client` certificate (`O=system:masters`) from
//! the cluster CA and checks the agent's serving certificate (signer
//! `kubernetes.io/kubelet-serving`) against the cluster CA and the Node's
//! InternalIP; the agent refuses any other client, so reaching the agent
//! port is not enough to exec into a pod. A server on plain HTTP
//! (`--insecure-http`, loopback only) and its agents (loopback only) talk
//! plaintext.

mod channels;
mod portforward;
mod spdy;
mod spdyexec;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::FromRequestParts;
use axum::http::{header, HeaderValue, Method, Request, Response, StatusCode};
use keel_apimachinery::resources::Sub;
use keel_proto::keelnode::agent_service_client::AgentServiceClient;
use keel_proto::keelnode::{exec_input, ExecInput, ExecStart, TerminalSize};
use serde_json::Value;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::api::{read, Api, Target};
use crate::status::{ApiError, ApiResult};

/// Whether a resource URL is one of the streaming pod subresources.
pub fn is_stream(t: &Target) -> bool {
    t.info.group.is_empty()
        && t.info.resource == "pods"
        && t.name.is_some()
        && matches!(t.sub, Some(Sub::Exec | Sub::Attach | Sub::PortForward))
}

/// Query parameters of a streaming request; `command` and `ports` repeat.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Params {
    pub command: Vec<String>,
    pub container: String,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
    pub ports: Vec<u16>,
}

impl Params {
    pub fn parse(query: Option<&str>) -> ApiResult<Params> {
        let mut p = Params::default();
        let flag = |k: &str, v: &str| -> ApiResult<bool> {
            match v {
                "true" | "1" | "" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(ApiError::bad_request(format!(
                    "query parameter {k:?} must be true or false, not {v:?}"
                ))),
            }
        };
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match k.as_ref() {
                "command" => p.command.push(v.into_owned()),
                "container" => p.container = v.into_owned(),
                "stdin" => p.stdin = flag(&k, &v)?,
                "stdout" => p.stdout = flag(&k, &v)?,
                "stderr" => p.stderr = flag(&k, &v)?,
                "tty" => p.tty = flag(&k, &v)?,
                "ports" | "port" => {
                    for s in v.split(',') {
                        let port = s.trim().parse::<u16>().ok().filter(|n| *n > 0);
                        p.ports.push(port.ok_or_else(|| {
                            ApiError::bad_request(format!("port {s:?} is not in 1-65535"))
                        })?);
                    }
                }
                _ => {}
            }
        }
        Ok(p)
    }
}

/// How the client asked to upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Transport {
    /// A WebSocket with the subprotocol chosen from the client's offer.
    WebSocket(String),
    /// A plain SPDY/3.1 upgrade (`POST`).
    Spdy,
}

/// Picks the transport, or 400 naming what is supported.
fn transport(req: &Request<Body>, sub: Sub) -> ApiResult<Transport> {
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let supported: &[&str] = match sub {
        Sub::PortForward => portforward::PROTOCOLS,
        _ => channels::PROTOCOLS,
    };
    if upgrade == "websocket" {
        let offered: Vec<String> = req
            .headers()
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if offered.is_empty() {
            // No subprotocol: the original channel protocol.
            return Ok(Transport::WebSocket(String::new()));
        }
        return offered
            .into_iter()
            .find(|p| supported.contains(&p.as_str()))
            .map(Transport::WebSocket)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "none of the offered WebSocket subprotocols is supported; use one of: {}",
                    supported.join(", ")
                ))
            });
    }
    if upgrade.starts_with("spdy/3.1") {
        return Ok(Transport::Spdy);
    }
    Err(ApiError::bad_request(format!(
        "Upgrade request required: pods/{} streams over a WebSocket ({})",
        sub.name(),
        supported.join(", ")
    )))
}

/// Serves one streaming request; see the module docs.
pub async fn serve(api: &Arc<Api>, t: Target, mut req: Request<Body>) -> ApiResult<Response<Body>> {
    let sub = t.sub.unwrap_or(Sub::Exec);
    if req.method() != Method::GET && req.method() != Method::POST {
        return Err(ApiError::method_not_allowed(&format!(
            "{} pods/{}",
            req.method(),
            sub.name()
        )));
    }
    let params = Params::parse(req.uri().query())?;
    let transport = transport(&req, sub)?;
    let pod = read::fetch(api, &t).await?.obj;
    let name = t.name.clone().unwrap_or_default();
    let namespace = t.namespace.clone().unwrap_or_default();
    let node = pod["spec"]["nodeName"].as_str().unwrap_or("");
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    match sub {
        Sub::PortForward => {
            let agent = connect_agent(api, node, &name).await?;
            let target = portforward::Target {
                agent,
                namespace,
                pod: name,
                ports: params.ports.clone(),
            };
            match transport {
                Transport::WebSocket(protocol) => {
                    let ws = websocket(&mut req).await?;
                    portforward::check(&protocol, &target.ports)?;
                    let chosen = protocol.clone();
                    Ok(respond(ws, &chosen, move |socket| {
                        portforward::serve_websocket(socket, protocol, target)
                    }))
                }
                Transport::Spdy => portforward::serve_spdy(req, target),
            }
        }
        _ => {
            let container = pick_container(&pod, &name, &params.container)?;
            check_phase(&pod, &name)?;
            if !(params.stdin || params.stdout || params.stderr) {
                return Err(ApiError::bad_request(
                    "you must specify at least 1 of stdin, stdout, stderr",
                ));
            }
            if sub == Sub::Exec && params.command.is_empty() {
                return Err(ApiError::bad_request(
                    "you must specify at least one command for the container",
                ));
            }
            let agent = connect_agent(api, node, &name).await?;
            let start = ExecStart {
                namespace,
                pod: name,
                container,
                command: params.command.clone(),
                stdin: params.stdin,
                stdout: params.stdout,
                // A terminal has one output stream.
                stderr: params.stderr && !params.tty,
                tty: params.tty,
                attach: sub == Sub::Attach,
                size: None::<TerminalSize>,
            };
            let protocol = match transport {
                Transport::WebSocket(p) => p,
                Transport::Spdy => {
                    let proto = spdyexec::negotiate(&req)?;
                    return Ok(spdyexec::serve(req, proto, agent, start));
                }
            };
            let ws = websocket(&mut req).await?;
            // The agent is called after the upgrade: its refusals
            // (container not running, command not found) go out on the
            // error channel, as the kubelet's do (kubectl would answer an
            // HTTP error here by retrying over SPDY, hiding the message).
            let chosen = protocol.clone();
            Ok(respond(ws, &chosen, move |socket| {
                channels::bridge_exec(socket, protocol, agent, start)
            }))
        }
    }
}

async fn websocket(req: &mut Request<Body>) -> ApiResult<WebSocketUpgrade> {
    let (mut parts, body) = std::mem::take(req).into_parts();
    let ws = WebSocketUpgrade::from_request_parts(&mut parts, &()).await;
    *req = Request::from_parts(parts, body);
    ws.map_err(|rej| ApiError::bad_request(format!("bad WebSocket upgrade: {}", rej.body_text())))
}

/// The 101 answer; `run` gets the socket once the upgrade completes.
fn respond<F, Fut>(ws: WebSocketUpgrade, protocol: &str, run: F) -> Response<Body>
where
    F: FnOnce(axum::extract::ws::WebSocket) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let ws = match protocol.is_empty() {
        true => ws,
        false => ws.protocols([protocol.to_string()]),
    };
    let mut resp = ws
        .on_failed_upgrade(|e| tracing::debug!(error = %e, "stream upgrade failed"))
        .on_upgrade(run);
    // axum answers the offered protocol only when it matches; say it
    // explicitly, since clients check it.
    if let (false, Ok(v)) = (protocol.is_empty(), HeaderValue::from_str(protocol)) {
        resp.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, v);
    }
    debug_assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    resp
}

/// The container a request names: the only one when none is named (as
/// kube-apiserver does), else 400 naming the choices.
fn pick_container(pod: &Value, name: &str, asked: &str) -> ApiResult<String> {
    let names = |key: &str| -> Vec<String> {
        pod["spec"][key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect()
    };
    let apps = names("containers");
    let all: Vec<String> = apps
        .iter()
        .cloned()
        .chain(names("initContainers"))
        .chain(names("ephemeralContainers"))
        .collect();
    if asked.is_empty() {
        return match apps.as_slice() {
            [only] => Ok(only.clone()),
            _ => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                apps.join(" ")
            ))),
        };
    }
    match all.iter().any(|c| c == asked) {
        true => Ok(asked.to_string()),
        false => Err(ApiError::bad_request(format!(
            "container {asked} is not valid for pod {name}"
        ))),
    }
}

fn check_phase(pod: &Value, name: &str) -> ApiResult<()> {
    match pod["status"]["phase"].as_str() {
        Some(phase @ ("Succeeded" | "Failed")) => Err(ApiError::bad_request(format!(
            "cannot exec into a container in a completed pod {name}; current phase is {phase}"
        ))),
        _ => Ok(()),
    }
}

/// The gRPC client of the agent running the pod.
async fn connect_agent(api: &Api, node: &str, pod: &str) -> ApiResult<AgentServiceClient<Channel>> {
    let nodes = crate::resources::find("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("nodes are not a known resource"))?;
    let node_obj = api
        .objects
        .get(&nodes.key(None, node))
        .await?
        .map(|s| s.obj)
        .ok_or_else(|| {
            ApiError::new(
                503,
                "ServiceUnavailable",
                format!("node {node:?} of pod {pod:?} is not registered"),
            )
        })?;
    let unavailable = |why: String| {
        ApiError::new(
            503,
            "ServiceUnavailable",
            format!("the agent of node {node:?} cannot be reached: {why}"),
        )
    };
    let url = crate::podlogs::agent_url(&node_obj)
        .ok_or_else(|| unavailable("the node reports no agent endpoint".into()))?;
    let channel = crate::agent_client::connect(api.cfg.agent_tls.as_deref(), &url)
        .await
        .map_err(unavailable)?;
    Ok(AgentServiceClient::new(channel))
}

/// An open `Exec` call: input to send, output to read.
pub(crate) struct ExecCall {
    pub input: mpsc::Sender<ExecInput>,
    pub output: tonic::Streaming<keel_proto::keelnode::ExecOutput>,
}

/// Starts the agent's `Exec` and waits for its answer (a refusal is an
/// error here, not a broken stream later).
pub(crate) async fn open_exec(
    mut agent: AgentServiceClient<Channel>,
    start: ExecStart,
) -> ApiResult<ExecCall> {
    let (tx, rx) = mpsc::channel(32);
    let first = ExecInput {
        input: Some(exec_input::Input::Start(start)),
    };
    tx.send(first)
        .await
        .map_err(|_| ApiError::internal("exec input closed"))?;
    let resp = agent
        .exec(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(from_agent)?;
    Ok(ExecCall {
        input: tx,
        output: resp.into_inner(),
    })
}

/// An agent's refusal, in Kubernetes' terms.
pub(crate) fn from_agent(s: tonic::Status) -> ApiError {
    let msg = s.message().to_string();
    match s.code() {
        tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition | tonic::Code::NotFound => {
            ApiError::bad_request(msg)
        }
        tonic::Code::Unimplemented => ApiError::new(501, "NotImplemented", msg),
        tonic::Code::Internal => ApiError::internal(msg),
        _ => ApiError::new(503, "ServiceUnavailable", msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn params_repeat_commands_and_split_ports() {
        let p = Params::parse(Some(
            "command=sh&command=-c&command=echo%20hi&container=c&stdin=true&stdout=1&tty=false&ports=80,8080&ports=9",
        ))
        .unwrap();
        assert_eq!(p.command, ["sh", "-c", "echo hi"]);
        assert_eq!(p.container, "c");
        assert!(p.stdin && p.stdout && !p.stderr && !p.tty);
        assert_eq!(p.ports, [80, 8080, 9]);
        assert_eq!(Params::parse(Some("ports=0")).unwrap_err().code, 400);
        assert_eq!(Params::parse(Some("ports=x")).unwrap_err().code, 400);
        assert_eq!(Params::parse(Some("tty=maybe")).unwrap_err().code, 400);
    }

    #[test]
    fn container_choice_names_the_options() {
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}],
            "initContainers": [{"name": "i"}]}});
        let e = pick_container(&pod, "p", "").unwrap_err();
        assert_eq!(e.code, 400);
        assert!(e.message.contains("choose one of: [a b]"), "{}", e.message);
        let e = pick_container(&pod, "p", "zz").unwrap_err();
        assert!(
            e.message.contains("container zz is not valid for pod p"),
            "{}",
            e.message
        );
        assert_eq!(pick_container(&pod, "p", "i").unwrap(), "i");
        let one = json!({"spec": {"containers": [{"name": "only"}]}});
        assert_eq!(pick_container(&one, "p", "").unwrap(), "only");
    }

    #[test]
    fn transport_negotiation() {
        let req = |upgrade: &str, protos: &str| {
            let mut b = Request::builder().header(header::UPGRADE, upgrade);
            if !protos.is_empty() {
                b = b.header(header::SEC_WEBSOCKET_PROTOCOL, protos);
            }
            b.body(Body::empty()).unwrap()
        };
        let ws = |p: &str| Transport::WebSocket(p.to_string());
        assert_eq!(
            transport(
                &req("websocket", "v5.channel.k8s.io, v4.channel.k8s.io"),
                Sub::Exec
            )
            .unwrap(),
            ws("v5.channel.k8s.io")
        );
        assert_eq!(
            transport(&req("websocket", "v9.x, v4.channel.k8s.io"), Sub::Exec).unwrap(),
            ws("v4.channel.k8s.io")
        );
        assert_eq!(
            transport(
                &req("websocket", "SPDY/3.1+portforward.k8s.io"),
                Sub::PortForward
            )
            .unwrap(),
            ws("SPDY/3.1+portforward.k8s.io")
        );
        assert_eq!(
            transport(&req("SPDY/3.1", ""), Sub::PortForward).unwrap(),
            Transport::Spdy
        );
        assert_eq!(
            transport(&req("SPDY/3.1", ""), Sub::Exec).unwrap(),
            Transport::Spdy
        );
        assert_eq!(transport(&req("", ""), Sub::Exec).unwrap_err().code, 400);
        assert_eq!(
            transport(&req("websocket", "nope"), Sub::Exec)
                .unwrap_err()
                .code,
            400
        );
    }
}
