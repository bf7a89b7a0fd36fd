//! Admission for keel-control: strict decoding, defaulting and validation of
//! Kubernetes objects kept as JSON.
//!
//! The API server runs these in Kubernetes' order: decode strictly (reject or
//! warn about unknown fields), apply defaults, then validate (create) or
//! validate against the stored object (update).

mod defaults;
mod strict;
pub(crate) mod validate;

pub use defaults::apply_defaults;
pub use strict::unknown_fields;
pub use validate::{validate, validate_update};

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
