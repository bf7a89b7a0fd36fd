//! Container probes: exec, httpGet and tcpSocket.
//!
//! The exec runtime has no container namespaces, so an exec probe runs its
//! command as a host process with the container's environment (not through
//! the runtime), killed after `timeoutSeconds`. httpGet connects to `host`
//! (default: the pod IP) and succeeds on a 2xx/3xx status; HTTPS and gRPC
//! probes are not supported and always fail with a message saying so.
//! Counting follows Kubernetes: `successThreshold` consecutive successes make
//! the result true, `failureThreshold` consecutive failures make it false;
//! the first run is `initialDelaySeconds` after the container started, then
//! every `periodSeconds`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Which probe (for messages and event text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }
}

/// Where and how to probe one container instance.
#[derive(Debug, Clone)]
pub struct Target {
    pub pod_ip: String,
    pub env: Vec<(String, String)>,
    pub container: Container,
}

/// One probe of one container instance.
#[derive(Debug, Clone)]
pub struct ProbeState {
    pub kind: Kind,
    probe: Probe,
    next_due: Instant,
    successes: u32,
    failures: u32,
    /// `None` until a threshold is reached.
    pub result: Option<bool>,
}

impl ProbeState {
    pub fn new(kind: Kind, probe: Probe, started: Instant) -> Self {
        let delay = secs(probe.initial_delay_seconds, 0);
        ProbeState {
            kind,
            probe,
            next_due: started + delay,
            successes: 0,
            failures: 0,
            result: None,
        }
    }

    /// Runs the probe if it is due. Returns the failure message of a failed
    /// run (for the `Unhealthy` event); `self.result` holds the verdict.
    pub async fn tick(&mut self, target: &Target) -> Option<String> {
        let now = Instant::now();
        if now < self.next_due {
            return None;
        }
        self.next_due = now + secs(self.probe.period_seconds, 10);
        match run(&self.probe, target).await {
            Ok(()) => {
                self.failures = 0;
                self.successes += 1;
                if self.successes >= threshold(self.probe.success_threshold) {
                    self.result = Some(true);
                }
                None
            }
            Err(message) => {
                self.successes = 0;
                self.failures += 1;
                if self.failures >= threshold(self.probe.failure_threshold.or(Some(3))) {
                    self.result = Some(false);
                }
                Some(message)
            }
        }
    }

    /// After a verdict that triggered an action (a restart), count afresh.
    pub fn reset_counts(&mut self) {
        self.successes = 0;
        self.failures = 0;
    }
}

fn secs(v: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(v.and_then(|s| u64::try_from(s).ok()).unwrap_or(default))
}

fn threshold(v: Option<i32>) -> u32 {
    v.and_then(|t| u32::try_from(t).ok())
        .filter(|t| *t > 0)
        .unwrap_or(1)
}

/// Runs one probe attempt.
pub async fn run(probe: &Probe, target: &Target) -> Result<(), String> {
    let timeout = secs(probe.timeout_seconds, 1).max(Duration::from_secs(1));
    let attempt = async {
        if let Some(e) = &probe.exec {
            exec(e.command.as_deref().unwrap_or_default(), target).await
        } else if let Some(h) = &probe.http_get {
            http_get(h, target).await
        } else if let Some(t) = &probe.tcp_socket {
            let port = port_number(&t.port, &target.container)?;
            let host = t.host.clone().unwrap_or_else(|| target.pod_ip.clone());
            tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .map(drop)
                .map_err(|e| format!("dial tcp {host}:{port}: {e}"))
        } else {
            Err("unsupported probe type (only exec, httpGet and tcpSocket)".to_string())
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| format!("timeout after {}s", timeout.as_secs()))?
}

async fn exec(command: &[String], target: &Target) -> Result<(), String> {
    let Some((program, args)) = command.split_first() else {
        return Err("exec probe without a command".into());
    };
    let output = tokio::process::Command::new(program)
        .args(args)
        .env_clear()
        .env(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
        )
        .envs(target.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("exec {program}: {e}"))?;
    match output.status.success() {
        true => Ok(()),
        false => {
            let out = String::from_utf8_lossy(&output.stdout);
            Err(format!(
                "command {command:?} exited with {}: {}",
                output.status,
                out.trim()
            ))
        }
    }
}

async fn http_get(h: &HTTPGetAction, target: &Target) -> Result<(), String> {
    if h.scheme
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("https"))
    {
        return Err("HTTPS probes are not supported by keel".into());
    }
    let port = port_number(&h.port, &target.container)?;
    let host = h
        .host
        .clone()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| target.pod_ip.clone());
    let path = h
        .path
        .clone()
        .filter(|p| p.starts_with('/'))
        .unwrap_or_else(|| "/".into());
    let url = format!("http://{host}:{port}{path}");
    let mut stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("Get {url:?}: {e}"))?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.33\r\nConnection: close\r\n");
    for hdr in h.http_headers.iter().flatten() {
        req.push_str(&format!("{}: {}\r\n", hdr.name, hdr.value));
    }
    req.push_str("\r\n");
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| format!("Get {url:?}: {e}"))?;
    let mut head = vec![0u8; 64];
    let n = stream
        .read(&mut head)
        .await
        .map_err(|e| format!("Get {url:?}: {e}"))?;
    let line = String::from_utf8_lossy(&head[..n]);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("Get {url:?}: malformed HTTP response"))?;
    match (200..400).contains(&code) {
        true => Ok(()),
        false => Err(format!("HTTP probe failed with statuscode: {code}")),
    }
}

/// A probe port: a number, or the name of one of the container's ports.
pub fn port_number(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let n = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => match name.parse::<i32>() {
            Ok(n) => n,
            Err(_) => container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port)
                .ok_or_else(|| format!("port {name:?} not found in the container's ports"))?,
        },
    };
    u16::try_from(n)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port {n}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        let container: Container = serde_json::from_value(serde_json::json!({
            "name": "c", "ports": [{"name": "http", "containerPort": 8080}]
        }))
        .unwrap();
        Target {
            pod_ip: "127.0.0.1".into(),
            env: vec![("X".into(), "1".into())],
            container,
        }
    }

    #[test]
    fn named_ports_resolve() {
        let t = target();
        assert_eq!(
            port_number(&IntOrString::String("http".into()), &t.container),
            Ok(8080)
        );
        assert_eq!(port_number(&IntOrString::Int(81), &t.container), Ok(81));
        assert!(port_number(&IntOrString::String("nope".into()), &t.container).is_err());
    }

    #[tokio::test]
    async fn exec_probe_sees_env_and_thresholds_count() {
        let probe: Probe = serde_json::from_value(serde_json::json!({
            "exec": {"command": ["sh", "-c", "test \"$X\" = 1"]}, "periodSeconds": 1, "failureThreshold": 2
        }))
        .unwrap();
        let mut s = ProbeState::new(Kind::Liveness, probe, Instant::now());
        assert_eq!(s.tick(&target()).await, None);
        assert_eq!(s.result, Some(true));
        let mut bad = target();
        bad.env.clear();
        s.next_due = Instant::now();
        assert!(s.tick(&bad).await.is_some());
        assert_eq!(s.result, Some(true), "one failure is below the threshold");
        s.next_due = Instant::now();
        assert!(s.tick(&bad).await.is_some());
        assert_eq!(s.result, Some(false));
    }
}
