//! The node service's in-process client: what an agent reports (node and
//! pod status, events) is written as API requests on the agent's behalf.
//! The control-plane integration tests use it too, to write and read raw
//! JSON.
//!
//! Why not write through [`crate::storage::Objects`] directly: every object
//! written for an agent (a pod's status, an Event) must be admitted,
//! defaulted and validated exactly as if kubectl had sent it. Requests go
//! through [`crate::api::handle`], the same code path as the REST API, just
//! without a socket. Errors keep their Kubernetes `Status` code and reason.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request};
use futures::{Stream, StreamExt};
use serde_json::Value;

use crate::api::{self, Api};
use crate::auth::{forbidden, request_info, Authorizer, Decision, UserInfo};

/// A failed request: the `Status` the API server answered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ClientError {
    pub code: u16,
    pub reason: String,
    pub message: String,
}

impl ClientError {
    pub fn is_not_found(&self) -> bool {
        self.code == 404
    }
    pub fn is_conflict(&self) -> bool {
        self.code == 409
    }
    pub fn is_gone(&self) -> bool {
        self.code == 410
    }
    fn local(message: impl Into<String>) -> ClientError {
        ClientError {
            code: 500,
            reason: "InternalError".into(),
            message: message.into(),
        }
    }
}

pub type ClientResult<T> = Result<T, ClientError>;

/// One watch event: `ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK` or `ERROR`.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    pub kind: String,
    pub object: Value,
}

/// The REST path of a collection or object, e.g.
/// `path("apps/v1", "replicasets", Some("default"), Some("web"))` =
/// `/apis/apps/v1/namespaces/default/replicasets/web`.
pub fn path(group_version: &str, resource: &str, ns: Option<&str>, name: Option<&str>) -> String {
    let mut p = match group_version {
        "v1" => "/api/v1".to_string(),
        gv => format!("/apis/{gv}"),
    };
    if let Some(ns) = ns {
        p.push_str("/namespaces/");
        p.push_str(ns);
    }
    p.push('/');
    p.push_str(resource);
    if let Some(n) = name {
        p.push('/');
        p.push_str(n);
    }
    p
}

#[derive(Clone)]
pub struct Client {
    api: Arc<Api>,
    /// Recorded as the field manager of writes (Kubernetes takes it from
    /// the user agent when `fieldManager` is absent).
    user_agent: String,
    /// Who the requests act for, and the authorizer that decides on them
    /// first; None: a trusted in-process caller (the controllers).
    acting: Option<(UserInfo, Arc<dyn Authorizer>)>,
}

impl Client {
    pub fn new(api: Arc<Api>, user_agent: &str) -> Client {
        Client {
            api,
            user_agent: user_agent.to_string(),
            acting: None,
        }
    }

    /// This client acting for `user`: every request is authorized by
    /// `authz` exactly as the same REST request from `user` would be (403
    /// otherwise, worded as the API server words it) and admitted with
    /// `user` as the requester (NodeRestriction, escalation checks).
    pub fn acting_as(&self, user: UserInfo, authz: Arc<dyn Authorizer>) -> Client {
        Client {
            acting: Some((user, authz)),
            ..self.clone()
        }
    }

    /// Ok when this client may send `method uri` (always, for a trusted
    /// in-process client), without sending it: for a caller that serves
    /// the request from a shared source, e.g. the node pod router.
    /// Errors: 403 worded as for the request itself.
    pub async fn authorized(&self, method: Method, uri: &str) -> ClientResult<()> {
        match &self.acting {
            None => Ok(()),
            Some((user, authz)) => authorize(user, authz.as_ref(), &method, uri).await,
        }
    }

    pub fn api(&self) -> &Arc<Api> {
        &self.api
    }

    /// Sends one request; a 2xx answer's JSON body, or its `Status` as an error.
    pub async fn request(
        &self,
        method: Method,
        uri: &str,
        body: Option<&Value>,
        content_type: &str,
    ) -> ClientResult<Value> {
        let resp = self.send(method, uri, body, content_type).await?;
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .map_err(|e| ClientError::local(format!("reading the answer to {uri}: {e}")))?;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(v);
        }
        Err(ClientError {
            code: status.as_u16(),
            reason: v["reason"].as_str().unwrap_or("Unknown").to_string(),
            message: v["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned()),
        })
    }

    async fn send(
        &self,
        method: Method,
        uri: &str,
        body: Option<&Value>,
        content_type: &str,
    ) -> ClientResult<axum::http::Response<Body>> {
        let body = match body {
            Some(v) => Body::from(v.to_string()),
            None => Body::empty(),
        };
        if let Some((user, authz)) = &self.acting {
            authorize(user, authz.as_ref(), &method, uri).await?;
        }
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::ACCEPT, "application/json")
            .header(header::CONTENT_TYPE, content_type)
            .header(header::USER_AGENT, &self.user_agent)
            .body(body)
            .map_err(|e| ClientError::local(format!("bad request {uri}: {e}")))?;
        if let Some((user, _)) = &self.acting {
            req.extensions_mut().insert(user.clone());
        }
        Ok(api::handle(self.api.clone(), req).await)
    }

    /// The object, or `None` when it does not exist.
    pub async fn get(&self, uri: &str) -> ClientResult<Option<Value>> {
        match self.request(Method::GET, uri, None, "").await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn list(&self, uri: &str) -> ClientResult<Value> {
        self.request(Method::GET, uri, None, "").await
    }

    pub async fn create(&self, collection: &str, obj: &Value) -> ClientResult<Value> {
        self.request(Method::POST, collection, Some(obj), "application/json")
            .await
    }

    /// PUT: fails with 409 when `obj`'s resourceVersion is stale.
    pub async fn update(&self, uri: &str, obj: &Value) -> ClientResult<Value> {
        self.request(Method::PUT, uri, Some(obj), "application/json")
            .await
    }

    /// A JSON merge patch (RFC 7386).
    pub async fn merge_patch(&self, uri: &str, patch: &Value) -> ClientResult<Value> {
        self.request(
            Method::PATCH,
            uri,
            Some(patch),
            "application/merge-patch+json",
        )
        .await
    }

    /// Deletes with `options` (a DeleteOptions body, or none). `Ok(false)`
    /// when the object was already gone.
    pub async fn delete(&self, uri: &str, options: Option<&Value>) -> ClientResult<bool> {
        let ct = if options.is_some() {
            "application/json"
        } else {
            ""
        };
        match self.request(Method::DELETE, uri, options, ct).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Watches `collection` from `resource_version` (exclusive). `query`
    /// adds selectors, e.g. `fieldSelector=spec.nodeName%3Dn1`. The stream
    /// ends when the server ends the watch; a compacted revision arrives as
    /// an `ERROR` event with a 410 Status.
    pub async fn watch(
        &self,
        collection: &str,
        query: &str,
        resource_version: &str,
    ) -> ClientResult<impl Stream<Item = WatchEvent> + Send + 'static> {
        let sep = if query.is_empty() { "" } else { "&" };
        let uri = format!(
            "{collection}?watch=true&allowWatchBookmarks=true&resourceVersion={resource_version}{sep}{query}"
        );
        let resp = self.send(Method::GET, &uri, None, "").await?;
        if !resp.status().is_success() {
            let code = resp.status().as_u16();
            let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap_or_default();
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Err(ClientError {
                code,
                reason: v["reason"].as_str().unwrap_or("Unknown").to_string(),
                message: v["message"].as_str().unwrap_or_default().to_string(),
            });
        }
        Ok(lines(resp.into_body()).filter_map(|line| async move {
            let v: Value = serde_json::from_slice(&line).ok()?;
            Some(WatchEvent {
                kind: v["type"].as_str().unwrap_or_default().to_string(),
                object: v["object"].clone(),
            })
        }))
    }
}

/// The authorizer's decision on `method uri` by `user`, as a 403
/// ClientError when it does not allow the request.
async fn authorize(
    user: &UserInfo,
    authz: &dyn Authorizer,
    method: &Method,
    uri: &str,
) -> ClientResult<()> {
    let parsed: axum::http::Uri = uri
        .parse()
        .map_err(|e| ClientError::local(format!("bad request {uri}: {e}")))?;
    let attrs = request_info::attributes(user, method, parsed.path(), parsed.query());
    let reason = match authz.authorize(&attrs).await {
        Ok(Decision::Allow) => return Ok(()),
        Ok(Decision::NoOpinion(reason)) => reason,
        Err(e) => {
            return Err(ClientError {
                code: e.code,
                reason: e.reason.to_string(),
                message: e.message,
            })
        }
    };
    let e = forbidden::error(&attrs, &reason);
    Err(ClientError {
        code: e.code,
        reason: e.reason.to_string(),
        message: e.message,
    })
}

/// Splits a streamed body into newline-terminated lines.
fn lines(body: Body) -> impl Stream<Item = Vec<u8>> + Send + 'static {
    let frames = body.into_data_stream();
    futures::stream::unfold(
        (frames, Vec::<u8>::new(), false),
        |(mut frames, mut buf, mut done)| async move {
            loop {
                if let Some(i) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=i).collect();
                    return Some((line, (frames, buf, done)));
                }
                if done {
                    if buf.is_empty() {
                        return None;
                    }
                    let line = std::mem::take(&mut buf);
                    return Some((line, (frames, buf, done)));
                }
                match frames.next().await {
                    Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                    Some(Err(_)) | None => done = true,
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            path("apps/v1", "replicasets", Some("default"), Some("web")),
            "/apis/apps/v1/namespaces/default/replicasets/web"
        );
        assert_eq!(path("v1", "nodes", None, None), "/api/v1/nodes");
        assert_eq!(
            path("v1", "pods", Some("a"), None),
            "/api/v1/namespaces/a/pods"
        );
    }
}
