//! Exec and attach over plain SPDY/3.1 (`POST`, `Upgrade: SPDY/3.1`,
//! `X-Stream-Protocol-Version: v4.channel.k8s.io` or `v5`): what clients
//! before kubectl 1.30, and kubectl 1.30+ when its WebSocket upgrade fails,
//! speak.
//!
//! The client opens one SPDY stream per channel, named by its `streamtype`
//! header: `error`, and `stdin`, `stdout`, `stderr`, `resize` as the query
//! asked (no `stderr` with a TTY). Once they all exist the command starts;
//! stdin's FIN is end of input, `resize` carries a sequence of
//! `{"Width":..,"Height":..}` objects, and at the end the error stream gets
//! the v4 `Status` (see [`super::channels::exit_status`]) and every stream
//! the server writes gets FIN.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use bytes::Bytes;
use keel_proto::keelnode::agent_service_client::AgentServiceClient;
use keel_proto::keelnode::exec_input::Input;
use keel_proto::keelnode::exec_output::Output;
use keel_proto::keelnode::{ExecExit, ExecInput, ExecStart, TerminalSize};
use tokio::sync::mpsc;
use tonic::transport::Channel;

use super::channels::exit_status;
use super::spdy::{self, Frame, Incoming};
use super::ExecCall;
use crate::status::{ApiError, ApiResult};

pub const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// How long the client has to open its streams.
const STREAMS_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a TTY exec waits for the first terminal size.
const TTY_SIZE_WAIT: Duration = Duration::from_secs(1);

/// The protocol to answer with, from `X-Stream-Protocol-Version`.
pub fn negotiate(req: &Request<Body>) -> ApiResult<&'static str> {
    let offered: Vec<String> = req
        .headers()
        .get_all("X-Stream-Protocol-Version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_string())
        .collect();
    PROTOCOLS
        .iter()
        .copied()
        .find(|p| offered.iter().any(|o| o == p))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "none of the offered stream protocols {offered:?} is supported over SPDY; use one of: {}",
                PROTOCOLS.join(", ")
            ))
        })
}

/// Answers 101 and runs the session once the connection is upgraded.
pub fn serve(
    mut req: Request<Body>,
    protocol: &'static str,
    agent: AgentServiceClient<Channel>,
    start: ExecStart,
) -> Response<Body> {
    spdy::on_upgrade(&mut req, move |incoming, frames_tx| {
        run(incoming, frames_tx, agent, start)
    });
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    h.insert(
        "X-Stream-Protocol-Version",
        HeaderValue::from_static(protocol),
    );
    resp
}

/// The stream kinds this request needs.
fn wanted(start: &ExecStart) -> Vec<&'static str> {
    let mut w = vec!["error"];
    if start.stdin {
        w.push("stdin");
    }
    if start.stdout {
        w.push("stdout");
    }
    if start.stderr {
        w.push("stderr");
    }
    if start.tty {
        w.push("resize");
    }
    w
}

/// Splits a resize stream's bytes into sizes; keeps an incomplete tail.
fn sizes(buf: &mut Vec<u8>) -> Vec<TerminalSize> {
    let mut out = Vec::new();
    let mut it = serde_json::Deserializer::from_slice(buf).into_iter::<serde_json::Value>();
    let mut used = 0;
    while let Some(Ok(v)) = it.next() {
        used = it.byte_offset();
        let dim = |k: &str| v[k].as_u64().and_then(|n| u32::try_from(n).ok());
        if let (Some(width), Some(height)) = (dim("Width"), dim("Height")) {
            out.push(TerminalSize { width, height });
        }
    }
    buf.drain(..used);
    out
}

async fn run(
    incoming: Incoming,
    out: mpsc::Sender<Bytes>,
    agent: AgentServiceClient<Channel>,
    mut start: ExecStart,
) {
    let mut reader = spdy::Reader::new(incoming);
    let mut writer = spdy::Writer::default();
    let want = wanted(&start);
    let mut ids: HashMap<&'static str, u32> = HashMap::new();
    let mut resize_buf = Vec::new();
    let mut stdin_early: Vec<Input> = Vec::new();
    let size_deadline = tokio::time::Instant::now() + STREAMS_TIMEOUT;
    // Phase 1: the client's streams (and, with a TTY, its first size).
    loop {
        let streams_done = want.iter().all(|k| ids.contains_key(k));
        let size_done = !start.tty || start.size.is_some();
        if streams_done && size_done {
            break;
        }
        let limit = match streams_done {
            true => TTY_SIZE_WAIT,
            false => size_deadline.saturating_duration_since(tokio::time::Instant::now()),
        };
        let frame = match tokio::time::timeout(limit, reader.next()).await {
            Ok(Ok(Some(f))) => f,
            Err(_) if streams_done => break,
            _ => return,
        };
        match frame {
            Frame::SynStream {
                stream, headers, ..
            } => {
                if out.send(writer.syn_reply(stream)).await.is_err() {
                    return;
                }
                let kind = headers
                    .iter()
                    .find(|(n, _)| n == "streamtype")
                    .map(|(_, v)| v.as_str())
                    .unwrap_or("");
                if let Some(k) = want.iter().find(|w| **w == kind) {
                    ids.insert(k, stream);
                }
            }
            Frame::Data { stream, fin, data } => {
                if Some(&stream) == ids.get("resize") {
                    resize_buf.extend_from_slice(&data);
                    if let Some(s) = sizes(&mut resize_buf).pop() {
                        start.size = Some(s);
                    }
                } else if Some(&stream) == ids.get("stdin") {
                    if !data.is_empty() {
                        stdin_early.push(Input::Stdin(data.to_vec()));
                    }
                    if fin {
                        stdin_early.push(Input::CloseStdin(true));
                    }
                }
            }
            Frame::Ping(id) => {
                let _ = out.send(spdy::ping(id)).await;
            }
            Frame::RstStream { .. } | Frame::GoAway => return,
            Frame::Other => {}
        }
    }
    let id = |k: &str| ids.get(k).copied();
    let error_id = id("error").unwrap_or(0);
    let call = super::open_exec(agent, start).await;
    let ExecCall { input, mut output } = match call {
        Ok(c) => c,
        Err(e) => {
            let body = e.to_status().to_string();
            finish(&out, error_id, body.as_bytes(), &ids).await;
            return;
        }
    };
    // Phase 3: client → agent in a task, agent → client here.
    let (stdin_id, resize_id) = (id("stdin"), id("resize"));
    let pings = out.clone();
    let client = tokio::spawn(async move {
        for i in stdin_early {
            if input.send(ExecInput { input: Some(i) }).await.is_err() {
                return;
            }
        }
        while let Ok(Some(frame)) = reader.next().await {
            let items = match frame {
                Frame::Data { stream, fin, data } if Some(stream) == stdin_id => {
                    let mut v = Vec::new();
                    if !data.is_empty() {
                        v.push(Input::Stdin(data.to_vec()));
                    }
                    if fin {
                        v.push(Input::CloseStdin(true));
                    }
                    v
                }
                Frame::Data { stream, data, .. } if Some(stream) == resize_id => {
                    resize_buf.extend_from_slice(&data);
                    sizes(&mut resize_buf)
                        .into_iter()
                        .map(Input::Resize)
                        .collect()
                }
                Frame::Ping(id) => {
                    let _ = pings.send(spdy::ping(id)).await;
                    continue;
                }
                Frame::GoAway => return,
                _ => continue,
            };
            for i in items {
                if input.send(ExecInput { input: Some(i) }).await.is_err() {
                    return;
                }
            }
        }
    });
    let exit = loop {
        let (stream, data) = match output.message().await {
            Ok(Some(o)) => match o.output {
                Some(Output::Stdout(b)) => (id("stdout"), b),
                Some(Output::Stderr(b)) => (id("stderr"), b),
                Some(Output::Exit(e)) => break e,
                None => continue,
            },
            Ok(None) => break failure("the node's agent ended the stream without an exit status"),
            Err(s) => break failure(&format!("error executing in container: {}", s.message())),
        };
        if let Some(stream) = stream {
            if out.send(spdy::data(stream, false, &data)).await.is_err() {
                client.abort();
                return;
            }
        }
    };
    let body = exit_status(&exit).to_string();
    finish(&out, error_id, body.as_bytes(), &ids).await;
    client.abort();
}

fn failure(message: &str) -> ExecExit {
    ExecExit {
        code: -1,
        message: message.to_string(),
    }
}

/// Writes the status on the error stream, then FIN on every stream the
/// server writes.
async fn finish(out: &mpsc::Sender<Bytes>, error_id: u32, status: &[u8], ids: &HashMap<&str, u32>) {
    if error_id != 0 {
        let _ = out.send(spdy::data(error_id, false, status)).await;
    }
    for k in ["stdout", "stderr", "error"] {
        if let Some(id) = ids.get(k) {
            let _ = out.send(spdy::data(*id, true, b"")).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_objects_split_anywhere() {
        let mut buf = br#"{"Width":80,"Height":24}{"Width":1"#.to_vec();
        assert_eq!(
            sizes(&mut buf),
            [TerminalSize {
                width: 80,
                height: 24
            }]
        );
        buf.extend_from_slice(br#"00,"Height":30}"#);
        assert_eq!(
            sizes(&mut buf),
            [TerminalSize {
                width: 100,
                height: 30
            }]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn streams_follow_the_query() {
        let start = ExecStart {
            stdin: true,
            stdout: true,
            tty: true,
            ..Default::default()
        };
        assert_eq!(wanted(&start), ["error", "stdin", "stdout", "resize"]);
    }
}
