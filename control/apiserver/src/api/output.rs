//! Response shapes: lists, server-side Tables (what `kubectl get` prints),
//! and the selectors that narrow both.

use serde_json::{json, Value};

use super::{Query, Req};
use crate::meta;
use crate::resources::ResourceInfo;
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::{ApiError, ApiResult};
use crate::storage;
use crate::table;
use keel_proto::mvccpb::KeyValue;

/// Does the Accept header ask for a `meta.k8s.io` Table?
pub fn wants_table(r: &Req) -> bool {
    r.accept.contains("as=Table")
}

/// Label and field selectors of a list or watch.
pub struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    pub fn from_query(info: &ResourceInfo, q: &Query) -> ApiResult<Selectors> {
        let labels = match q.get("labelSelector") {
            Some(s) => LabelSelector::parse(s).map_err(|e| {
                ApiError::bad_request(format!("unable to parse labelSelector: {e}"))
            })?,
            None => LabelSelector::default(),
        };
        let fields = match q.get("fieldSelector") {
            Some(s) => FieldSelector::parse(info.resource, s).map_err(|e| {
                ApiError::bad_request(format!(
                    "Unable to find \"{}\" that match label selector \"{}\", field selector \"{}\": {e}",
                    info.resource,
                    q.get("labelSelector").map_or("", String::as_str),
                    s
                ))
            })?,
            None => FieldSelector::default(),
        };
        Ok(Selectors { labels, fields })
    }

    /// No selector: everything matches.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(meta::labels(obj)) && self.fields.matches(obj)
    }
}

/// A `<Kind>List`. Built by moving `items` in: `json!` would deep-copy
/// every object (it serializes its arguments by reference).
pub fn list_object(
    info: &ResourceInfo,
    items: Vec<Value>,
    rev: i64,
    cont: Option<String>,
) -> Value {
    let mut md = json!({"resourceVersion": rev.to_string()});
    if let Some(c) = cont {
        md["continue"] = json!(c);
    }
    let mut m = serde_json::Map::new();
    m.insert("kind".into(), Value::String(info.list_kind()));
    m.insert("apiVersion".into(), Value::String(info.api_version()));
    m.insert("metadata".into(), md);
    m.insert("items".into(), Value::Array(items));
    Value::Object(m)
}

/// The JSON of a `<Kind>List` of stored objects, the same document
/// [`list_object`] builds, written straight from the stored bytes (see
/// [`storage::write_object`]): no object is parsed into a tree.
pub fn list_bytes(
    info: &ResourceInfo,
    items: &[KeyValue],
    rev: i64,
    cont: Option<String>,
) -> ApiResult<Vec<u8>> {
    let mut md = json!({"resourceVersion": rev.to_string()});
    if let Some(c) = cont {
        md["continue"] = json!(c);
    }
    let head = json!({"kind": info.list_kind(), "apiVersion": info.api_version(), "metadata": md});
    let size: usize = items.iter().map(|kv| kv.value.len() + 40).sum();
    let mut out = Vec::with_capacity(size + 256);
    // `head` without its closing brace, then the items.
    serde_json::to_writer(&mut out, &head)
        .map_err(|e| ApiError::internal(format!("encoding a list: {e}")))?;
    out.pop();
    out.extend_from_slice(b",\"items\":[");
    for (i, kv) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        storage::write_object(&mut out, &kv.key, &kv.value, kv.mod_revision)?;
    }
    out.extend_from_slice(b"]}");
    Ok(out)
}

/// What a Table row carries as `object` (`includeObject`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn from_query(q: &Query) -> IncludeObject {
        match q.get("includeObject").map(String::as_str) {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

fn row_object(obj: &Value, include: IncludeObject) -> Option<Value> {
    match include {
        IncludeObject::None => None,
        IncludeObject::Object => Some(obj.clone()),
        IncludeObject::Metadata => Some(json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
        })),
    }
}

/// A `meta.k8s.io/v1` Table of `objs`; `columns` false leaves out the
/// column definitions (watch events after the first).
pub fn table(
    info: &ResourceInfo,
    objs: &[Value],
    rev: Option<i64>,
    cont: Option<String>,
    include: IncludeObject,
    columns: bool,
) -> Value {
    let now = jiff::Timestamp::now();
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let mut row = json!({"cells": table::row_cells(info.group, info.resource, o, now)});
            if let Some(obj) = row_object(o, include) {
                row["object"] = obj;
            }
            row
        })
        .collect();
    let mut md = json!({});
    if let Some(r) = rev {
        md["resourceVersion"] = json!(r.to_string());
    }
    if let Some(c) = cont {
        md["continue"] = json!(c);
    }
    let cols = if columns {
        table::column_definitions(info.group, info.resource)
    } else {
        vec![]
    };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": md,
        "columnDefinitions": cols,
        "rows": rows,
    })
}
