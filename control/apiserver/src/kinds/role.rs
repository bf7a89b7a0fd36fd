//! Roles and ClusterRoles (rbac.authorization.k8s.io/v1), printed only,
//! with the creation time as Kubernetes' generic table prints them.

use super::common::table::{created_at_cells, CREATED_AT_COLS};
use super::KindOps;

pub static ROLES: KindOps = KindOps::printed_only(
    "rbac.authorization.k8s.io",
    "roles",
    CREATED_AT_COLS,
    created_at_cells,
);

pub static CLUSTER_ROLES: KindOps = KindOps::printed_only(
    "rbac.authorization.k8s.io",
    "clusterroles",
    CREATED_AT_COLS,
    created_at_cells,
);
