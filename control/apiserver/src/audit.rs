//! The audit log (`--audit-log-path`, `--audit-policy-file`): one JSON line
//! per request, an audit.k8s.io/v1 `Event` at stage `ResponseComplete`,
//! at the level the first matching rule of an audit.k8s.io/v1 `Policy`
//! gives it — `None` (not logged), `Metadata` (who, what, when, the
//! outcome), `Request` (plus the request body) or `RequestResponse` (plus
//! the response body). Streams (watches, exec, logs) log metadata only.
//!
//! Errors: an unreadable policy stops the server at start; a failed
//! write is logged and never fails the request.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{Attributes, UserInfo};

/// How much of a request is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum Level {
    None,
    Metadata,
    Request,
    RequestResponse,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct GroupResources {
    group: String,
    resources: Vec<String>,
    resource_names: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PolicyRule {
    level: Level,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    user_groups: Vec<String>,
    #[serde(default)]
    verbs: Vec<String>,
    #[serde(default)]
    resources: Vec<GroupResources>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    non_resource_urls: Vec<String>,
    #[serde(default)]
    omit_stages: Vec<String>,
}

/// audit.k8s.io/v1 Policy: rules in order, the first match decides.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    #[serde(default)]
    rules: Vec<PolicyRule>,
    #[serde(default)]
    omit_stages: Vec<String>,
}

fn listed(list: &[String], x: &str) -> bool {
    list.is_empty() || list.iter().any(|v| v == "*" || v == x)
}

impl PolicyRule {
    fn matches(&self, a: &Attributes) -> bool {
        if !self.users.is_empty() && !self.users.contains(&a.user.name) {
            return false;
        }
        if !self.user_groups.is_empty()
            && !a.user.groups.iter().any(|g| self.user_groups.contains(g))
        {
            return false;
        }
        if !listed(&self.verbs, &a.verb) {
            return false;
        }
        let scoped = !self.resources.is_empty()
            || !self.namespaces.is_empty()
            || !self.non_resource_urls.is_empty();
        if !scoped {
            return true;
        }
        if !a.resource_request {
            return self.non_resource_urls.iter().any(|u| {
                *u == a.path || u.strip_suffix('*').is_some_and(|p| a.path.starts_with(p))
            });
        }
        if !self.namespaces.is_empty() && !self.namespaces.contains(&a.namespace) {
            return false;
        }
        if self.resources.is_empty() {
            return !self.namespaces.is_empty();
        }
        let combined = if a.subresource.is_empty() {
            a.resource.clone()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        self.resources.iter().any(|g| {
            g.group == a.api_group
                && (g.resources.is_empty()
                    || g.resources.iter().any(|r| {
                        *r == "*"
                            || *r == combined
                            || *r == format!("{}/*", a.resource)
                            || (r.starts_with("*/")
                                && !a.subresource.is_empty()
                                && r[2..] == a.subresource)
                    }))
                && (g.resource_names.is_empty() || g.resource_names.contains(&a.name))
        })
    }
}

impl Policy {
    /// Reads a YAML or JSON Policy file.
    pub fn load(path: &Path) -> anyhow::Result<Policy> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--audit-policy-file {}: {e}", path.display()))?;
        Policy::parse(&text)
            .map_err(|e| anyhow::anyhow!("--audit-policy-file {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Policy> {
        let v: Value = serde_saphyr::from_str(text)?;
        let kind = v["kind"].as_str().unwrap_or("");
        if kind != "Policy" {
            anyhow::bail!("expected kind Policy (audit.k8s.io/v1), got {kind:?}");
        }
        Ok(serde_json::from_value(v)?)
    }

    /// Every request at Metadata (what `--audit-log-path` alone logs).
    pub fn metadata_for_all() -> Policy {
        Policy {
            rules: vec![PolicyRule {
                level: Level::Metadata,
                users: vec![],
                user_groups: vec![],
                verbs: vec![],
                resources: vec![],
                namespaces: vec![],
                non_resource_urls: vec![],
                omit_stages: vec![],
            }],
            omit_stages: vec![],
        }
    }

    /// The level of one request (None when no rule matches or its rule
    /// omits the ResponseComplete stage).
    pub fn level(&self, a: &Attributes) -> Level {
        if self.omit_stages.iter().any(|s| s == "ResponseComplete") {
            return Level::None;
        }
        match self.rules.iter().find(|r| r.matches(a)) {
            Some(r) if r.omit_stages.iter().any(|s| s == "ResponseComplete") => Level::None,
            Some(r) => r.level,
            None => Level::None,
        }
    }
}

/// The policy and the open log file.
pub struct Audit {
    policy: Policy,
    out: Mutex<std::fs::File>,
}

/// One request as the audit log records it.
pub struct Record<'a> {
    pub attrs: &'a Attributes,
    /// The authenticated user when it impersonated `attrs.user`.
    pub impersonator: Option<&'a UserInfo>,
    pub uri: &'a str,
    pub source_ip: String,
    pub user_agent: &'a str,
    pub code: u16,
    pub request_body: Option<&'a [u8]>,
    pub response_body: Option<&'a [u8]>,
    pub received: jiff::Timestamp,
}

fn user_json(u: &UserInfo) -> Value {
    u.to_json()
}

/// A JSON or Kubernetes-protobuf body as JSON (None for anything else).
fn body_json(b: Option<&[u8]>) -> Option<Value> {
    let b = b.filter(|b| !b.is_empty())?;
    serde_json::from_slice::<Value>(b)
        .ok()
        .or_else(|| crate::protobuf::decode_protobuf(b).ok())
}

impl Audit {
    /// Opens (appends to) `path`.
    pub fn open(path: &Path, policy: Policy) -> anyhow::Result<Audit> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| anyhow::anyhow!("--audit-log-path {}: {e}", path.display()))?;
        Ok(Audit {
            policy,
            out: Mutex::new(f),
        })
    }

    pub fn level(&self, a: &Attributes) -> Level {
        self.policy.level(a)
    }

    /// Appends the event for `r` at `level` (nothing at None).
    pub fn log(&self, level: Level, r: &Record<'_>) {
        if level == Level::None {
            return;
        }
        let a = r.attrs;
        let mut ev = json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": format!("{level:?}"),
            "auditID": uuid::Uuid::new_v4().to_string(),
            "stage": "ResponseComplete",
            "requestURI": r.uri,
            "verb": a.verb,
            "user": user_json(r.impersonator.unwrap_or(&a.user)),
            "sourceIPs": [r.source_ip],
            "userAgent": r.user_agent,
            "responseStatus": {"metadata": {}, "code": r.code},
            "requestReceivedTimestamp": r.received.to_string(),
            "stageTimestamp": jiff::Timestamp::now().to_string(),
        });
        if r.impersonator.is_some() {
            ev["impersonatedUser"] = user_json(&a.user);
        }
        if a.resource_request {
            let mut obj = json!({"resource": a.resource, "apiVersion": a.api_version});
            for (k, v) in [
                ("namespace", &a.namespace),
                ("name", &a.name),
                ("apiGroup", &a.api_group),
                ("subresource", &a.subresource),
            ] {
                if !v.is_empty() {
                    obj[k] = json!(v);
                }
            }
            ev["objectRef"] = obj;
        }
        if level >= Level::Request {
            if let Some(b) = body_json(r.request_body) {
                ev["requestObject"] = b;
            }
        }
        if level >= Level::RequestResponse {
            if let Some(b) = body_json(r.response_body) {
                ev["responseObject"] = b;
            }
        }
        let mut line = ev.to_string();
        line.push('\n');
        let mut f = match self.out.lock() {
            Ok(f) => f,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Err(e) = f.write_all(line.as_bytes()) {
            tracing::warn!(error = %e, "writing the audit log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: None
  nonResourceURLs: ["/healthz*", "/version"]
- level: RequestResponse
  resources:
  - group: ""
    resources: ["secrets"]
- level: Request
  namespaces: ["prod"]
- level: Metadata
  userGroups: ["system:authenticated"]
"#;

    fn at(verb: &str, resource: &str, ns: &str) -> Attributes {
        Attributes {
            user: UserInfo::authenticated("alice", "", &[]),
            verb: verb.into(),
            resource_request: true,
            resource: resource.into(),
            namespace: ns.into(),
            ..Default::default()
        }
    }

    #[test]
    fn first_matching_rule_decides() {
        let p = Policy::parse(POLICY).unwrap();
        assert_eq!(
            p.level(&at("get", "secrets", "default")),
            Level::RequestResponse
        );
        assert_eq!(p.level(&at("list", "pods", "prod")), Level::Request);
        assert_eq!(p.level(&at("list", "pods", "default")), Level::Metadata);
        let health = Attributes {
            user: UserInfo::anonymous(),
            verb: "get".into(),
            path: "/healthz".into(),
            ..Default::default()
        };
        assert_eq!(p.level(&health), Level::None);
        assert!(Policy::parse("kind: ConfigMap").is_err());
    }
}
