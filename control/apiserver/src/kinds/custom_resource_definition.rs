//! CustomResourceDefinitions (apiextensions.k8s.io/v1), printed only, with
//! the creation time as Kubernetes' generic table prints them.

use super::common::table::{created_at_cells, CREATED_AT_COLS};
use super::KindOps;

pub static CUSTOM_RESOURCE_DEFINITIONS: KindOps = KindOps::printed_only(
    "apiextensions.k8s.io",
    "customresourcedefinitions",
    CREATED_AT_COLS,
    created_at_cells,
);
