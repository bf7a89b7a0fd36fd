//! What keel knows about each resource kind, one module per kind: the
//! k8s-openapi type it strictly decodes into, its defaults, its validation
//! on create and on update, and its table columns and cells, with the unit
//! tests of each next to them. What several kinds share (the cause
//! collector, name and metadata rules, the pod spec, table helpers) lives in
//! [`common`] and in the kind that owns it ([`pod`] for the pod spec every
//! workload templates).
//!
//! [`of`] is the one place that maps a `(group, resource)` to its kind:
//! admission ([`crate::admission`]) and the table printer ([`crate::table`])
//! dispatch through it. Adding a kind means writing its module and one line
//! in [`KINDS`] (and, when it is served, its row in
//! `keel_apimachinery::resources::RESOURCES`).
//!
//! Every rule reads the stored JSON and never panics: a field of the wrong
//! JSON type is treated as absent, and strict decoding reports it.

pub mod common;

mod certificate_signing_request;
mod config_map;
mod controller_revision;
mod cron_job;
mod custom_resource_definition;
mod daemon_set;
mod deployment;
mod endpoint_slice;
mod endpoints;
mod event;
mod eviction;
mod horizontal_pod_autoscaler;
mod ingress;
mod ingress_class;
mod job;
mod lease;
mod limit_range;
mod namespace;
mod network_policy;
mod node;
mod persistent_volume;
mod persistent_volume_claim;
mod pod;
mod pod_disruption_budget;
mod pod_template;
mod priority_class;
mod replica_set;
mod replication_controller;
mod resource_quota;
mod role;
mod role_binding;
mod runtime_class;
mod scale;
mod secret;
mod service;
mod service_account;
mod stateful_set;
pub(crate) mod storage_class;
mod webhook_configuration;

use common::errs::Errs;
use common::meta::NameRule;
use common::table::{CellFn, Col};
use serde_json::Value;

/// Everything the API server does with one resource kind. Every kind is
/// printed; most are admitted too, every served resource among them (a test
/// holds `RESOURCES` to that).
pub struct KindOps {
    /// API group, "" for the core group.
    pub group: &'static str,
    /// Plural lowercase resource name, the URL segment.
    pub resource: &'static str,
    /// None for kinds keel only prints: it serves none of them, but the
    /// printer knows their columns.
    pub admission: Option<Admission>,
    /// Table columns (meta.k8s.io/v1 TableColumnDefinition), in order.
    pub columns: &'static [Col],
    /// The cells of one row, one per column and in column order, formatted
    /// as kubectl shows them.
    pub cells: CellFn,
}

impl KindOps {
    /// A kind keel only prints: it serves none, so it admits none.
    pub const fn printed_only(
        group: &'static str,
        resource: &'static str,
        columns: &'static [Col],
        cells: CellFn,
    ) -> KindOps {
        KindOps {
            group,
            resource,
            admission: None,
            columns,
            cells,
        }
    }
}

/// How one kind is admitted. The API server runs the steps in Kubernetes'
/// order: decode strictly, apply defaults, then validate (create) or
/// validate against the stored object (update).
pub struct Admission {
    /// The syntax `metadata.name` must follow.
    pub name_rule: NameRule,
    /// Whether objects live in a namespace: `metadata.namespace` is then
    /// required (the server fills it from the URL first), else forbidden.
    pub namespaced: bool,
    /// Decodes into the kind's k8s-openapi type. Ok holds the paths of the
    /// fields the type does not know; Err names the field whose JSON does
    /// not fit the type.
    pub strict: fn(&Value) -> Result<Vec<String>, String>,
    /// Fills missing (or null) fields in place, idempotently; given only
    /// JSON objects. None: the kind has no defaults.
    pub defaults: Option<fn(&mut Value)>,
    /// Create-time rules beyond the metadata, given a JSON object.
    pub validate: fn(&mut Errs, &Value),
    /// Update-only rules (fields that may not change), given `(new, old)`
    /// after `validate(new)` and the metadata identity rules have run; either
    /// may be JSON of any type.
    pub validate_update: Option<fn(&mut Errs, &Value, &Value)>,
}

/// Every kind keel knows, served or only printed, in the order of
/// `RESOURCES` and then the rest. `(group, resource)` is unique.
pub static KINDS: &[&KindOps] = &[
    &pod::PODS,
    &replication_controller::REPLICATION_CONTROLLERS,
    &service::SERVICES,
    &namespace::NAMESPACES,
    &node::NODES,
    &endpoints::ENDPOINTS,
    &config_map::CONFIG_MAPS,
    &secret::SECRETS,
    &service_account::SERVICE_ACCOUNTS,
    &event::CORE_EVENTS,
    &persistent_volume::PERSISTENT_VOLUMES,
    &persistent_volume_claim::PERSISTENT_VOLUME_CLAIMS,
    &resource_quota::RESOURCE_QUOTAS,
    &limit_range::LIMIT_RANGES,
    &deployment::DEPLOYMENTS,
    &replica_set::REPLICA_SETS,
    &stateful_set::STATEFUL_SETS,
    &daemon_set::DAEMON_SETS,
    &job::JOBS,
    &cron_job::CRON_JOBS,
    &horizontal_pod_autoscaler::HORIZONTAL_POD_AUTOSCALERS,
    &lease::LEASES,
    &endpoint_slice::ENDPOINT_SLICES,
    &ingress::INGRESSES,
    &network_policy::NETWORK_POLICIES,
    &event::EVENTS,
    &pod_disruption_budget::POD_DISRUPTION_BUDGETS,
    &scale::SCALE,
    &eviction::EVICTIONS,
    &pod_template::POD_TEMPLATES,
    &controller_revision::CONTROLLER_REVISIONS,
    &ingress_class::INGRESS_CLASSES,
    &storage_class::STORAGE_CLASSES,
    &priority_class::PRIORITY_CLASSES,
    &runtime_class::RUNTIME_CLASSES,
    &role::ROLES,
    &role::CLUSTER_ROLES,
    &role_binding::ROLE_BINDINGS,
    &role_binding::CLUSTER_ROLE_BINDINGS,
    &certificate_signing_request::CERTIFICATE_SIGNING_REQUESTS,
    &webhook_configuration::MUTATING_WEBHOOK_CONFIGURATIONS,
    &webhook_configuration::VALIDATING_WEBHOOK_CONFIGURATIONS,
    &custom_resource_definition::CUSTOM_RESOURCE_DEFINITIONS,
];

/// The kind served as `(group, resource)`, or None when keel knows no such
/// kind.
pub fn of(group: &str, resource: &str) -> Option<&'static KindOps> {
    KINDS
        .iter()
        .copied()
        .find(|k| k.group == group && k.resource == resource)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::RESOURCES;

    #[test]
    fn each_kind_is_listed_once() {
        for (i, a) in KINDS.iter().enumerate() {
            for b in &KINDS[i + 1..] {
                assert!(
                    (a.group, a.resource) != (b.group, b.resource),
                    "{}/{} twice",
                    a.group,
                    a.resource
                );
            }
        }
    }

    #[test]
    fn every_served_resource_is_admitted_as_the_registry_scopes_it() {
        for r in RESOURCES {
            let kind = of(r.group, r.resource);
            let admission = kind.and_then(|k| k.admission.as_ref());
            let Some(admission) = admission else {
                panic!("{}/{} has no admission", r.group, r.resource);
            };
            assert_eq!(admission.namespaced, r.namespaced, "{}", r.resource);
        }
    }

    #[test]
    fn every_kind_has_a_name_column() {
        for k in KINDS {
            assert!(
                k.columns.iter().any(|c| c.0 == "Name"),
                "{}/{}",
                k.group,
                k.resource
            );
        }
    }
}
