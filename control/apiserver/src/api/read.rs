//! GET of one object and LIST with selectors and `limit`/`continue` paging.
//!
//! Guarantee: a paged list is read at one store revision; every page after
//! the first reads at the revision the first was read at, so a list never
//! shows an object twice or misses one that existed at that revision, even
//! while objects are being written. A continue token whose revision was
//! compacted is 410 Expired.

use std::sync::Arc;

use base64::Engine;
use serde_json::{json, Value};

use super::output::{self, IncludeObject, Selectors};
use super::{route, Api, Query, Reply, Req, Target};
use crate::status::{ApiError, ApiResult};
use crate::storage::{self, Stored};
use keel_proto::keelnode::LogsRequest;
use keel_proto::mvccpb::KeyValue;

pub async fn get(api: &Arc<Api>, t: &Target, r: &Req) -> ApiResult<Reply> {
    let stored = fetch(api, t).await?;
    if output::wants_table(r) {
        let include = IncludeObject::from_query(&r.query);
        let tbl = output::table(t.info, &[stored.obj], None, None, include, true);
        return Ok(Reply::ok(tbl));
    }
    Ok(Reply::ok(stored.obj))
}

/// The object a target names, or 404.
pub async fn fetch(api: &Api, t: &Target) -> ApiResult<Stored> {
    let name = t.name.as_deref().unwrap_or("");
    let key = t.info.key(t.namespace.as_deref(), name);
    api.objects
        .get(&key)
        .await?
        .ok_or_else(|| ApiError::not_found(t.info, name))
}

/// Where the next page starts: the revision of the first page and the key
/// after which to continue.
#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: i64,
    start: String,
}

fn encode_continue(rv: i64, key: &str) -> String {
    let tok = ContinueToken {
        rv,
        start: key.to_string(),
    };
    let bytes = serde_json::to_vec(&tok).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn decode_continue(s: &str, prefix: &str) -> ApiResult<(i64, String)> {
    let bad = || ApiError::bad_request(format!("continue key is not valid: {s:?}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| bad())?;
    let tok: ContinueToken = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if tok.rv <= 0 || !tok.start.starts_with(prefix) {
        return Err(bad());
    }
    Ok((tok.rv, tok.start))
}

/// One list result: matching objects (as stored, see
/// [`storage::write_object`]), the revision, and the next token.
pub struct Listed {
    pub items: Vec<KeyValue>,
    pub revision: i64,
    pub cont: Option<String>,
}

impl Listed {
    /// The objects as trees, each with its resourceVersion.
    pub fn objects(&self) -> ApiResult<Vec<Value>> {
        self.items
            .iter()
            .map(|kv| storage::decode(kv).map(|s| s.obj))
            .collect()
    }
}

/// Lists the objects under `prefix` matching `sel`, `limit` at a time
/// (0 = all), continuing from `cont`. Objects are parsed only when there
/// are selectors to match.
pub async fn list_objects(
    api: &Api,
    prefix: &str,
    sel: &Selectors,
    limit: i64,
    cont: Option<&str>,
) -> ApiResult<Listed> {
    let (mut rev, mut after) = match cont {
        Some(c) => {
            let (rv, start) = decode_continue(c, prefix)?;
            (rv, Some(start))
        }
        None => (0, None),
    };
    let chunk = if limit > 0 { limit.max(100) } else { 0 };
    let mut items = Vec::new();
    loop {
        let page = api
            .objects
            .list_raw(prefix, after.as_deref(), rev, chunk)
            .await
            .map_err(|e| expired_continue(e, cont.is_some()))?;
        rev = page.revision;
        let more = page.more_after.is_some();
        let n = page.kvs.len();
        for (i, kv) in page.kvs.into_iter().enumerate() {
            if !sel.is_empty() && !sel.matches(&storage::decode(&kv)?.obj) {
                continue;
            }
            items.push(kv);
            if limit > 0 && items.len() as i64 == limit {
                let rest = i + 1 < n || more;
                let last = items.last().map(|kv| String::from_utf8_lossy(&kv.key));
                let cont = last.filter(|_| rest).map(|k| encode_continue(rev, &k));
                return Ok(Listed {
                    items,
                    revision: rev,
                    cont,
                });
            }
        }
        match page.more_after {
            Some(k) => after = Some(k),
            None => break,
        }
    }
    Ok(Listed {
        items,
        revision: rev,
        cont: None,
    })
}

fn expired_continue(e: ApiError, continuing: bool) -> ApiError {
    if continuing && e.code == 410 {
        return ApiError::gone(
            "The provided continue parameter is too old to display a consistent list result. \
             You can start a new list without the continue parameter.",
        );
    }
    e
}

fn parse_limit(r: &Req) -> ApiResult<i64> {
    match r.query.get("limit") {
        None => Ok(0),
        Some(s) if s.is_empty() => Ok(0),
        Some(s) => s.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            ApiError::bad_request(format!("limit {s:?} is not a non-negative integer"))
        }),
    }
}

pub async fn list(api: &Arc<Api>, t: &Target, r: &Req) -> ApiResult<Reply> {
    let sel = Selectors::from_query(t.info, &r.query)?;
    let limit = parse_limit(r)?;
    let cont = r.query.get("continue").filter(|c| !c.is_empty());
    let prefix = t.info.prefix(t.namespace.as_deref());
    let listed = list_objects(api, &prefix, &sel, limit, cont.map(String::as_str)).await?;
    if output::wants_table(r) {
        let include = IncludeObject::from_query(&r.query);
        let tbl = output::table(
            t.info,
            &listed.objects()?,
            Some(listed.revision),
            listed.cont,
            include,
            true,
        );
        return Ok(Reply::ok(tbl));
    }
    let body = output::list_bytes(t.info, &listed.items, listed.revision, listed.cont)?;
    Ok(Reply::Raw { code: 200, body })
}

/// Pod logs come from the node agent that runs the pod.
pub async fn log(api: &Arc<Api>, t: &Target, r: &Req) -> ApiResult<Reply> {
    let pod = fetch(api, t).await?;
    let node = pod.obj["spec"]["nodeName"].as_str().unwrap_or("");
    let name = t.name.as_deref().unwrap_or("");
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name:?} has no node assigned yet: no logs to show"
        )));
    }
    let req = log_request(t.namespace.as_deref().unwrap_or(""), name, &r.query)?;
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
                format!("node {node:?} of pod {name:?} is not registered, so its logs cannot be fetched"),
            )
        })?;
    Ok(Reply::Stream(
        crate::podlogs::stream(api.cfg.agent_tls.as_deref(), &node_obj, req).await?,
    ))
}

/// The options of a log request (`pods/{name}/log`), read from the query.
pub fn log_request(ns: &str, pod: &str, q: &Query) -> ApiResult<LogsRequest> {
    let int = |k: &str, default: i64| -> ApiResult<i64> {
        match q.get(k) {
            None => Ok(default),
            Some(s) => s.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                ApiError::bad_request(format!("{k} {s:?} must be a non-negative integer"))
            }),
        }
    };
    Ok(LogsRequest {
        namespace: ns.to_string(),
        pod: pod.to_string(),
        container: q.get("container").cloned().unwrap_or_default(),
        follow: route::flag(q, "follow"),
        tail_lines: int("tailLines", -1)?,
        previous: route::flag(q, "previous"),
        timestamps: route::flag(q, "timestamps"),
        limit_bytes: int("limitBytes", 0)?,
        since_seconds: int("sinceSeconds", 0)?,
    })
}

/// The body of a `kind: List` used by deletecollection.
pub fn plain_list(t: &Target, items: Vec<Value>, rev: i64) -> Value {
    let mut l = output::list_object(t.info, items, rev, None);
    l["metadata"] = json!({"resourceVersion": rev.to_string()});
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let t = encode_continue(42, "/registry/pods/default/x");
        assert_eq!(
            decode_continue(&t, "/registry/pods/").unwrap(),
            (42, "/registry/pods/default/x".to_string())
        );
        assert_eq!(
            decode_continue("!!", "/registry/pods/").unwrap_err().code,
            400
        );
        assert_eq!(
            decode_continue(&t, "/registry/secrets/").unwrap_err().code,
            400
        );
    }

    #[test]
    fn bad_log_options_are_400() {
        let mut q = Query::new();
        q.insert("tailLines".into(), "-3".into());
        assert_eq!(log_request("d", "p", &q).unwrap_err().code, 400);
        q.insert("tailLines".into(), "3".into());
        q.insert("follow".into(), "true".into());
        let r = log_request("d", "p", &q).unwrap();
        assert!(r.follow);
        assert_eq!(r.tail_lines, 3);
    }
}
