//! Kubernetes `Status` errors. Every failure the API returns is one of
//! these, with the HTTP code kubectl decides on and a message that names
//! the problem; a client mistake is never a 500.

use keel_store::StoreError;
use serde_json::{json, Value};

use crate::resources::ResourceInfo;

/// One reason an object was rejected, shaped like Kubernetes' `StatusCause`
/// so the server can put it straight into a `Status` of reason `Invalid`.
///
/// `message` is the error body Kubernetes prints after the field, e.g.
/// `Invalid value: "Foo": a lowercase RFC 1123 label must ...`; the full
/// human line is `format!("{field}: {message}")`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Cause {
    /// Field path, e.g. `spec.template.spec.containers[1].name`.
    pub field: String,
    /// Kubernetes CauseType, e.g. `FieldValueRequired`, `FieldValueInvalid`.
    pub reason: String,
    /// Error body as Kubernetes words it.
    pub message: String,
}

/// An error answered as a `Status` object.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, info: &ResourceInfo, name: &str) -> ApiError {
        let mut d = json!({"name": name, "group": info.group, "kind": info.resource});
        if name.is_empty() {
            d.as_object_mut().map(|m| m.remove("name"));
        }
        self.details = Some(d);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn not_found(info: &ResourceInfo, name: &str) -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{}\" not found", info.qualified(), name),
        )
        .with_details(info, name)
    }

    /// A URL that names no resource keel serves.
    pub fn no_route() -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// A `preconditions.uid` (or a Binding's uid) names another instance
    /// of the object than the stored one.
    pub fn uid_precondition(want: &str, have: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!("Precondition failed: UID in precondition: {want}, UID in object meta: {have}"),
        )
    }

    pub fn already_exists(info: &ResourceInfo, name: &str) -> ApiError {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} \"{}\" already exists", info.qualified(), name),
        )
        .with_details(info, name)
    }

    pub fn conflict(info: &ResourceInfo, name: &str) -> ApiError {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                info.qualified(),
                name
            ),
        )
        .with_details(info, name)
    }

    /// 422 with one cause per invalid field, printed by kubectl as
    /// `The Deployment "x" is invalid: spec.replicas: Invalid value: ...`.
    pub fn invalid(info: &ResourceInfo, name: &str, causes: &[Cause]) -> ApiError {
        let text: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let mut e = ApiError::new(
            422,
            "Invalid",
            format!("{} \"{}\" is invalid: {}", info.kind, name, text.join(", ")),
        );
        e.details = Some(json!({
            "name": name, "group": info.group, "kind": info.kind,
            "causes": causes.iter().map(|c| json!({
                "reason": c.reason, "message": c.message, "field": c.field
            })).collect::<Vec<_>>()
        }));
        e
    }

    pub fn method_not_allowed(what: &str) -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({what})"),
        )
    }

    pub fn unsupported_media_type(ct: &str) -> ApiError {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct:?})"),
        )
    }

    pub fn gone(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn too_large(limit_bytes: usize) -> ApiError {
        ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("the request body is larger than the limit of {limit_bytes} bytes"),
        )
    }

    pub fn timeout(what: &str) -> ApiError {
        ApiError::new(504, "Timeout", format!("the request timed out: {what}"))
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(403, "Forbidden", message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "InternalError", message)
    }

    /// The `Status` JSON body.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

/// Store failures: a replica without quorum answers 503/504, never stale
/// data; a compacted revision is 410 Expired.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NoLeader => ApiError::new(
                503,
                "ServiceUnavailable",
                "the store has no leader: this replica cannot reach a quorum",
            ),
            StoreError::Timeout | StoreError::LeaderChanged => {
                ApiError::timeout("the store did not answer in time (no quorum?)")
            }
            StoreError::Compacted { compact_revision } => ApiError::gone(format!(
                "too old resource version (compacted at {compact_revision})"
            )),
            StoreError::FutureRevision => ApiError::new(
                504,
                "Timeout",
                "Too large resource version: the store has not reached it",
            ),
            StoreError::RequestTooLarge => ApiError::too_large(0),
            other => ApiError::internal(other.to_string()),
        }
    }
}

/// The `Success` status that some deletes answer with.
pub fn success_status(info: &ResourceInfo, name: &str, uid: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": {"name": name, "group": info.group, "kind": info.resource, "uid": uid}
    })
}
