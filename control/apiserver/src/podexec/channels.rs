//! Kubernetes' WebSocket channel protocols for exec and attach.
//!
//! Every message is one channel's data: binary protocols prefix the data
//! with the channel byte; `base64` ones send text, the channel as an ASCII
//! digit followed by the data in base64. Channels: 0 stdin, 1 stdout,
//! 2 stderr, 3 error, 4 resize (`{"Width":..,"Height":..}`). Versions:
//! - `channel.k8s.io` / `base64.channel.k8s.io` (v1): the error channel
//!   carries a plain message, and only on failure;
//! - `v4.channel.k8s.io` (+ base64): the error channel carries a metav1
//!   `Status` at the end: `Success`, or `Failure` with reason
//!   `NonZeroExitCode` and cause `ExitCode` holding the code;
//! - `v5.channel.k8s.io`: v4 plus channel 255, on which the client closes
//!   one of its streams (`[255, 0]`: end of stdin).

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use keel_proto::keelnode::agent_service_client::AgentServiceClient;
use keel_proto::keelnode::exec_input::Input;
use keel_proto::keelnode::exec_output::Output;
use keel_proto::keelnode::{ExecExit, ExecInput, ExecStart, TerminalSize};
use serde_json::{json, Value};
use tonic::transport::Channel;

use super::ExecCall;

pub const PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];

/// How long a TTY exec waits for the client's terminal size.
const TTY_SIZE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
pub const CLOSE: u8 = 255;

/// One negotiated channel protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proto {
    pub base64: bool,
    /// 1 (unversioned), 4 or 5.
    pub version: u8,
}

impl Proto {
    /// The protocol a subprotocol name stands for ("" = `channel.k8s.io`).
    pub fn of(name: &str) -> Proto {
        let base64 = name.contains("base64");
        let version = match name {
            n if n.starts_with("v5.") => 5,
            n if n.starts_with("v4.") => 4,
            _ => 1,
        };
        Proto { base64, version }
    }

    pub fn encode(self, channel: u8, data: &[u8]) -> Message {
        match self.base64 {
            false => {
                let mut frame = Vec::with_capacity(data.len() + 1);
                frame.push(channel);
                frame.extend_from_slice(data);
                Message::Binary(frame.into())
            }
            true => {
                let text = format!(
                    "{}{}",
                    char::from(b'0' + channel % 10),
                    base64::engine::general_purpose::STANDARD.encode(data)
                );
                Message::Text(text.into())
            }
        }
    }

    /// A client message as (channel, data); `None` for control messages or
    /// malformed ones (ignored, as the kubelet does).
    pub fn decode(self, msg: &Message) -> Option<(u8, Vec<u8>)> {
        match (msg, self.base64) {
            (Message::Binary(b), false) => {
                let (ch, data) = b.split_first()?;
                Some((*ch, data.to_vec()))
            }
            // Binary protocols take text frames as bytes too, as the
            // kubelet does (the Python client sends `str` input as text).
            (Message::Text(t), false) => {
                let (ch, data) = t.as_bytes().split_first()?;
                Some((*ch, data.to_vec()))
            }
            (Message::Text(t), true) => {
                let t = t.as_str();
                let ch = t.bytes().next()?.checked_sub(b'0')?;
                let data = base64::engine::general_purpose::STANDARD
                    .decode(&t[1..])
                    .ok()?;
                Some((ch, data))
            }
            _ => None,
        }
    }
}

/// What the error channel says at the end of a v4+ session.
pub fn exit_status(exit: &ExecExit) -> Value {
    if !exit.message.is_empty() {
        return json!({"metadata": {}, "status": "Failure", "reason": "InternalError",
            "code": 500, "message": exit.message});
    }
    if exit.code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
        "message": format!("command terminated with non-zero exit code: exit code {}", exit.code),
        "details": {"causes": [{"reason": "ExitCode", "message": exit.code.to_string()}]},
    })
}

fn failure(message: &str) -> ExecExit {
    ExecExit {
        code: -1,
        message: message.to_string(),
    }
}

/// A client frame as agent input, if it is one.
fn to_input(p: Proto, channel: u8, data: Vec<u8>) -> Option<Input> {
    match channel {
        STDIN => Some(Input::Stdin(data)),
        RESIZE => {
            let v: Value = serde_json::from_slice(&data).ok()?;
            let dim = |k: &str| v[k].as_u64().and_then(|n| u32::try_from(n).ok());
            Some(Input::Resize(TerminalSize {
                width: dim("Width")?,
                height: dim("Height")?,
            }))
        }
        CLOSE if p.version >= 5 && data.first() == Some(&STDIN) => Some(Input::CloseStdin(true)),
        _ => None,
    }
}

/// Bridges an upgraded exec/attach socket to the agent's call until the
/// process exits (then the status goes out on the error channel and the
/// socket is closed) or the client goes away (then the agent's call is
/// dropped, which kills the process).
pub async fn bridge_exec(
    socket: WebSocket,
    protocol: String,
    agent: AgentServiceClient<Channel>,
    mut start: ExecStart,
) {
    let p = Proto::of(&protocol);
    let (mut sink, mut stream) = socket.split();
    let mut early = Vec::new();
    if start.tty {
        // kubectl sends its terminal's size first thing; a command started
        // before it arrives would see a 0x0 terminal. Clients that send no
        // size (the Python client) start after TTY_SIZE_WAIT.
        let deadline = tokio::time::sleep(TTY_SIZE_WAIT);
        tokio::pin!(deadline);
        while start.size.is_none() {
            let msg = tokio::select! {
                () = &mut deadline => break,
                m = stream.next() => m,
            };
            let Some(Ok(msg)) = msg else { return };
            if matches!(msg, Message::Close(_)) {
                return;
            }
            match p.decode(&msg).and_then(|(ch, data)| to_input(p, ch, data)) {
                Some(Input::Resize(size)) => start.size = Some(size),
                Some(other) => early.push(other),
                None => {}
            }
        }
    }
    let call = super::open_exec(agent, start).await;
    let ExecCall { input, mut output } = match call {
        Ok(call) => call,
        Err(e) => {
            let body = match p.version {
                v if v >= 4 => e.to_status().to_string(),
                _ => e.message.clone(),
            };
            let _ = sink.send(p.encode(ERROR, body.as_bytes())).await;
            let _ = sink.send(close_normal()).await;
            return;
        }
    };
    let reader = tokio::spawn(async move {
        for i in early {
            if input.send(ExecInput { input: Some(i) }).await.is_err() {
                return;
            }
        }
        while let Some(Ok(msg)) = stream.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
            let Some((channel, data)) = p.decode(&msg) else {
                continue;
            };
            if let Some(i) = to_input(p, channel, data) {
                if input.send(ExecInput { input: Some(i) }).await.is_err() {
                    break;
                }
            }
        }
    });
    let exit = loop {
        let frame = match output.message().await {
            Ok(Some(o)) => match o.output {
                Some(Output::Stdout(b)) => p.encode(STDOUT, &b),
                Some(Output::Stderr(b)) => p.encode(STDERR, &b),
                Some(Output::Exit(e)) => break e,
                None => continue,
            },
            Ok(None) => break failure("the node's agent ended the stream without an exit status"),
            Err(s) => break failure(&format!("error executing in container: {}", s.message())),
        };
        if sink.send(frame).await.is_err() {
            reader.abort();
            return;
        }
    };
    let status = match p.version {
        v if v >= 4 => Some(exit_status(&exit).to_string()),
        _ if !exit.message.is_empty() => Some(exit.message.clone()),
        _ if exit.code != 0 => Some(format!(
            "command terminated with non-zero exit code: exit code {}",
            exit.code
        )),
        _ => None,
    };
    if let Some(s) = status {
        let _ = sink.send(p.encode(ERROR, s.as_bytes())).await;
    }
    let _ = sink.send(close_normal()).await;
    reader.abort();
}

fn close_normal() -> Message {
    Message::Close(Some(CloseFrame {
        code: 1000,
        reason: "".into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_base64_framing_round_trip() {
        for name in PROTOCOLS {
            let p = Proto::of(name);
            let m = p.encode(STDOUT, b"hi\x00");
            assert_eq!(p.decode(&m), Some((STDOUT, b"hi\x00".to_vec())), "{name}");
        }
        assert_eq!(
            Proto::of("v4.base64.channel.k8s.io").encode(2, b"a"),
            Message::Text("2YQ==".into())
        );
        assert_eq!(Proto::of("v5.channel.k8s.io").version, 5);
        let text = Message::Text("\u{0}typed".into());
        assert_eq!(
            Proto::of("v4.channel.k8s.io").decode(&text),
            Some((STDIN, b"typed".to_vec()))
        );
        assert_eq!(Proto::of("").version, 1);
    }

    #[test]
    fn client_frames_become_agent_input() {
        let v5 = Proto::of("v5.channel.k8s.io");
        let v4 = Proto::of("v4.channel.k8s.io");
        assert_eq!(
            to_input(v5, STDIN, b"x".to_vec()),
            Some(Input::Stdin(b"x".to_vec()))
        );
        assert_eq!(
            to_input(v4, RESIZE, br#"{"Width":80,"Height":24}"#.to_vec()),
            Some(Input::Resize(TerminalSize {
                width: 80,
                height: 24
            }))
        );
        assert_eq!(to_input(v4, RESIZE, b"junk".to_vec()), None);
        assert_eq!(to_input(v5, CLOSE, vec![0]), Some(Input::CloseStdin(true)));
        assert_eq!(to_input(v4, CLOSE, vec![0]), None);
    }

    #[test]
    fn exit_codes_as_kubernetes_status() {
        let ok = exit_status(&ExecExit {
            code: 0,
            message: String::new(),
        });
        assert_eq!(ok["status"], "Success");
        let three = exit_status(&ExecExit {
            code: 3,
            message: String::new(),
        });
        assert_eq!(three["reason"], "NonZeroExitCode");
        assert_eq!(three["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(three["details"]["causes"][0]["message"], "3");
    }
}
