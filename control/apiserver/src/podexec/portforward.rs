//! `pods/{name}/portforward`: each client connection becomes one
//! `AgentService.PortForward` call (one TCP connection from the agent to
//! the pod's IP and port).
//!
//! Two framings:
//! - WebSocket channels (`v4.channel.k8s.io`, `portforward.k8s.io`, ...;
//!   the Python client): the `ports` query lists the ports; port i gets data
//!   channel 2i and error channel 2i+1, and each channel's first server
//!   frame is the port number (16 bits, little-endian). One connection per
//!   port; the socket closes once every connection has ended.
//! - SPDY/3.1, plain or tunneled in WebSocket binary messages
//!   (`SPDY/3.1+portforward.k8s.io`; kubectl): the client opens an `error`
//!   and a `data` stream per connection (headers `streamtype`, `port`,
//!   `requestid`); the server answers each with SYN_REPLY, splices the data
//!   stream, writes any failure on the error stream, and ends both with FIN.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use bytes::Bytes;
use futures::{SinkExt, Stream, StreamExt};
use keel_proto::keelnode::agent_service_client::AgentServiceClient;
use keel_proto::keelnode::port_forward_input::Input;
use keel_proto::keelnode::{PortForwardInput, PortForwardOutput, PortForwardStart};
use tokio::sync::mpsc;
use tonic::transport::Channel;

use super::channels::Proto;
use super::spdy::{self, Frame};
use crate::status::{ApiError, ApiResult};

/// kubectl 1.31+: SPDY inside a WebSocket.
pub const TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

pub const PROTOCOLS: &[&str] = &[
    TUNNEL,
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "portforward.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];

/// Where connections go.
#[derive(Clone)]
pub struct Target {
    pub agent: AgentServiceClient<Channel>,
    pub namespace: String,
    pub pod: String,
    /// From the query; required for the channel framing only.
    pub ports: Vec<u16>,
}

/// The channel framing needs its ports up front.
pub fn check(protocol: &str, ports: &[u16]) -> ApiResult<()> {
    if protocol != TUNNEL && ports.is_empty() {
        return Err(ApiError::bad_request(
            "query parameter \"ports\" is required for a port-forward over WebSocket channels",
        ));
    }
    Ok(())
}

/// One open connection to the pod: bytes in, bytes out.
struct Conn {
    input: mpsc::Sender<PortForwardInput>,
    output: tonic::Streaming<PortForwardOutput>,
}

/// Opens a connection through the agent; `Err` is the message for the
/// client's error stream.
async fn dial(t: &Target, port: u16) -> Result<Conn, String> {
    let (tx, rx) = mpsc::channel(32);
    let start = PortForwardInput {
        input: Some(Input::Start(PortForwardStart {
            namespace: t.namespace.clone(),
            pod: t.pod.clone(),
            port: u32::from(port),
        })),
    };
    tx.send(start).await.map_err(|e| e.to_string())?;
    let mut agent = t.agent.clone();
    let resp = agent
        .port_forward(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| {
            format!(
                "error forwarding port {port} to pod {}: {}",
                t.pod,
                s.message()
            )
        })?;
    Ok(Conn {
        input: tx,
        output: resp.into_inner(),
    })
}

fn data_input(b: Vec<u8>) -> PortForwardInput {
    PortForwardInput {
        input: Some(Input::Data(b)),
    }
}

fn close_write() -> PortForwardInput {
    PortForwardInput {
        input: Some(Input::CloseWrite(true)),
    }
}

/// Serves an upgraded WebSocket with the negotiated protocol.
pub async fn serve_websocket(socket: WebSocket, protocol: String, target: Target) {
    let (sink, stream) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        let mut sink = sink;
        while let Some(m) = out_rx.recv().await {
            if sink.send(m).await.is_err() {
                return;
            }
        }
        let close = Message::Close(Some(CloseFrame {
            code: 1000,
            reason: "".into(),
        }));
        let _ = sink.send(close).await;
    });
    if protocol == TUNNEL {
        let incoming = stream
            .take_while(|m| futures::future::ready(!matches!(m, Ok(Message::Close(_)))))
            .filter_map(|m| {
                futures::future::ready(match m {
                    Ok(Message::Binary(b)) => Some(Ok(b)),
                    Ok(_) => None,
                    Err(e) => Some(Err(std::io::Error::other(e))),
                })
            });
        let (frames_tx, mut frames_rx) = mpsc::channel::<Bytes>(64);
        let out = out_tx.clone();
        let forward = tokio::spawn(async move {
            while let Some(f) = frames_rx.recv().await {
                if out.send(Message::Binary(f)).await.is_err() {
                    return;
                }
            }
        });
        spdy_session(Box::pin(incoming), frames_tx, target).await;
        let _ = forward.await;
    } else {
        channel_session(stream, Proto::of(&protocol), &out_tx, target).await;
    }
    drop(out_tx);
    let _ = writer.await;
}

/// The channel framing; see the module docs.
async fn channel_session<S>(mut stream: S, p: Proto, out: &mpsc::Sender<Message>, target: Target)
where
    S: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    let mut inputs: Vec<Option<mpsc::Sender<PortForwardInput>>> = Vec::new();
    let mut pumps = tokio::task::JoinSet::new();
    for (i, port) in target.ports.iter().copied().enumerate() {
        let (data_ch, err_ch) = ((2 * i) as u8, (2 * i + 1) as u8);
        for ch in [data_ch, err_ch] {
            let _ = out.send(p.encode(ch, &port.to_le_bytes())).await;
        }
        match dial(&target, port).await {
            Err(msg) => {
                let _ = out.send(p.encode(err_ch, msg.as_bytes())).await;
                inputs.push(None);
            }
            Ok(Conn { input, mut output }) => {
                inputs.push(Some(input));
                let out = out.clone();
                pumps.spawn(async move {
                    while let Ok(Some(d)) = output.message().await {
                        if out.send(p.encode(data_ch, &d.data)).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
    }
    let read = async {
        while let Some(Ok(msg)) = stream.next().await {
            if matches!(msg, Message::Close(_)) {
                return;
            }
            let Some((ch, data)) = p.decode(&msg) else {
                continue;
            };
            let i = usize::from(ch / 2);
            if ch % 2 != 0 || data.is_empty() {
                continue;
            }
            if let Some(Some(tx)) = inputs.get(i) {
                if tx.send(data_input(data)).await.is_err() {
                    inputs[i] = None;
                }
            }
        }
    };
    // The session ends when the client leaves or every connection ended.
    tokio::select! {
        () = read => {}
        () = async { while pumps.join_next().await.is_some() {} } => {}
    }
}

/// Serves a plain SPDY/3.1 upgrade (`POST`, `Upgrade: SPDY/3.1`).
pub fn serve_spdy(mut req: Request<Body>, target: Target) -> ApiResult<Response<Body>> {
    spdy::on_upgrade(&mut req, move |incoming, frames_tx| {
        spdy_session(incoming, frames_tx, target)
    });
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    h.insert(
        "X-Stream-Protocol-Version",
        HeaderValue::from_static("portforward.k8s.io"),
    );
    Ok(resp)
}

/// A connection's two streams, as they arrive.
#[derive(Default)]
struct Pair {
    error: Option<u32>,
    data: Option<u32>,
    port: u16,
}

/// Runs one SPDY session: answers streams, pairs them by request id,
/// splices each pair to a connection through the agent.
async fn spdy_session(incoming: spdy::Incoming, out: mpsc::Sender<Bytes>, target: Target) {
    let mut reader = spdy::Reader::new(incoming);
    let mut writer = spdy::Writer::default();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut conns: HashMap<u32, mpsc::Sender<PortForwardInput>> = HashMap::new();
    loop {
        let frame = match reader.next().await {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, pod = %target.pod, "port-forward session ended");
                return;
            }
        };
        match frame {
            Frame::SynStream {
                stream, headers, ..
            } => {
                if out.send(writer.syn_reply(stream)).await.is_err() {
                    return;
                }
                let get = |k: &str| {
                    headers
                        .iter()
                        .find(|(n, _)| n == k)
                        .map(|(_, v)| v.as_str())
                        .unwrap_or("")
                };
                let kind = get("streamtype");
                let port = get("port").parse::<u16>().ok().filter(|p| *p > 0);
                let request = match get("requestid") {
                    "" if kind == "data" => stream.saturating_sub(2).to_string(),
                    "" => stream.to_string(),
                    id => id.to_string(),
                };
                let Some(port) = port else {
                    let msg = format!("invalid port {:?}", get("port"));
                    let _ = out.send(spdy::data(stream, false, msg.as_bytes())).await;
                    let _ = out.send(spdy::data(stream, true, b"")).await;
                    continue;
                };
                let pair = pairs.entry(request.clone()).or_default();
                pair.port = port;
                match kind {
                    "error" => pair.error = Some(stream),
                    "data" => pair.data = Some(stream),
                    _ => {
                        let _ = out.send(spdy::rst_stream(stream, 1)).await;
                        continue;
                    }
                }
                if let Some(Pair {
                    error: Some(error),
                    data: Some(data),
                    port,
                }) = pairs.get(&request)
                {
                    let (tx, rx) = mpsc::channel(32);
                    conns.insert(*data, tx);
                    tokio::spawn(splice(
                        target.clone(),
                        *port,
                        *error,
                        *data,
                        out.clone(),
                        rx,
                    ));
                    pairs.remove(&request);
                }
            }
            Frame::Data { stream, fin, data } => {
                if let Some(tx) = conns.get(&stream) {
                    if !data.is_empty() && tx.send(data_input(data.to_vec())).await.is_err() {
                        conns.remove(&stream);
                        continue;
                    }
                    if fin {
                        let _ = tx.send(close_write()).await;
                        conns.remove(&stream);
                    }
                }
            }
            Frame::RstStream { stream, .. } => {
                conns.remove(&stream);
            }
            Frame::Ping(id) => {
                if out.send(spdy::ping(id)).await.is_err() {
                    return;
                }
            }
            Frame::GoAway => return,
            Frame::Other => {}
        }
    }
}

/// One connection: client data stream ⇄ agent; failures on the error
/// stream; both streams end with FIN.
async fn splice(
    target: Target,
    port: u16,
    error: u32,
    data: u32,
    out: mpsc::Sender<Bytes>,
    mut from_client: mpsc::Receiver<PortForwardInput>,
) {
    match dial(&target, port).await {
        Err(msg) => {
            let _ = out.send(spdy::data(error, false, msg.as_bytes())).await;
        }
        Ok(Conn { input, mut output }) => {
            tokio::spawn(async move {
                while let Some(m) = from_client.recv().await {
                    if input.send(m).await.is_err() {
                        return;
                    }
                }
            });
            while let Ok(Some(d)) = output.message().await {
                if out.send(spdy::data(data, false, &d.data)).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = out.send(spdy::data(data, true, b"")).await;
    let _ = out.send(spdy::data(error, true, b"")).await;
}
