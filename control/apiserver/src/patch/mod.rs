//! PATCH bodies: JSON Patch (RFC 6902), JSON merge patch (RFC 7386),
//! strategic merge patch (Kubernetes, per-field merge keys) and the
//! configuration of server-side apply.

pub mod apply;
mod merge_keys;
pub mod strategic;

use serde_json::Value;

use crate::status::{ApiError, ApiResult};

/// The patch types kubectl and client libraries send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    /// From a Content-Type header (parameters ignored). Err: 415.
    pub fn from_content_type(ct: &str) -> ApiResult<PatchType> {
        let base = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match base.as_str() {
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(PatchType::Apply),
            _ => Err(ApiError::unsupported_media_type(ct)),
        }
    }
}

/// Applies a JSON, merge or strategic patch to `original`. Apply
/// configurations go through [`apply`] instead.
pub fn patch(kind: &str, pt: PatchType, original: &Value, body: &[u8]) -> ApiResult<Value> {
    let p: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?;
    match pt {
        PatchType::Json => json_patch(original, p),
        PatchType::Merge => {
            if !p.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            let mut out = original.clone();
            json_patch::merge(&mut out, &p);
            Ok(out)
        }
        PatchType::Strategic => strategic::strategic_merge_patch(kind, original, &p)
            .map_err(|e| ApiError::bad_request(format!("invalid strategic merge patch: {e}"))),
        PatchType::Apply => Err(ApiError::internal("apply patches are not plain patches")),
    }
}

fn json_patch(original: &Value, p: Value) -> ApiResult<Value> {
    let ops: json_patch::Patch = serde_json::from_value(p).map_err(|e| {
        ApiError::bad_request(format!("the JSON patch is not a list of operations: {e}"))
    })?;
    // On a clone: a failed patch leaves the original untouched without
    // json-patch's own undo, which panics on some move/copy sequences.
    let mut out = original.clone();
    json_patch::patch_unsafe(&mut out, &ops).map_err(|e| {
        ApiError::new(
            422,
            "Invalid",
            format!("the JSON patch cannot be applied: {e}"),
        )
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn content_types() {
        assert_eq!(
            PatchType::from_content_type("application/merge-patch+json; charset=utf-8").unwrap(),
            PatchType::Merge
        );
        assert_eq!(
            PatchType::from_content_type("text/plain").unwrap_err().code,
            415
        );
    }

    #[test]
    fn merge_and_json_patches() {
        let o = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        let m = patch(
            "Pod",
            PatchType::Merge,
            &o,
            br#"{"metadata":{"labels":{"a":null,"c":"3"}}}"#,
        )
        .unwrap();
        assert_eq!(m["metadata"]["labels"], json!({"b": "2", "c": "3"}));
        let j = patch(
            "Pod",
            PatchType::Json,
            &o,
            br#"[{"op":"replace","path":"/metadata/labels/a","value":"9"}]"#,
        )
        .unwrap();
        assert_eq!(j["metadata"]["labels"]["a"], "9");
        let bad = patch(
            "Pod",
            PatchType::Json,
            &o,
            br#"[{"op":"remove","path":"/nope"}]"#,
        );
        assert_eq!(bad.unwrap_err().code, 422);
        assert_eq!(
            patch("Pod", PatchType::Merge, &o, b"[1]").unwrap_err().code,
            400
        );
        assert_eq!(
            patch("Pod", PatchType::Merge, &o, b"{").unwrap_err().code,
            400
        );
    }
}
