//! Admission for keel-control: strict decoding, defaulting and validation of
//! Kubernetes objects kept as JSON.
//!
//! The API server runs these in Kubernetes' order: decode strictly (reject or
//! warn about unknown fields), apply defaults, then validate (create) or
//! validate against the stored object (update).

mod defaults;
mod strict;
pub(crate) mod validate;

/// Causes are part of the `Status` vocabulary; admission produces them.
pub use crate::status::Cause;
pub use defaults::apply_defaults;
pub use strict::unknown_fields;
pub use validate::{validate, validate_update};
