//! Strategic-merge-patch metadata of the built-in Kubernetes kinds.
//!
//! Upstream reads `patchStrategy` / `patchMergeKey` struct tags off the Go
//! types in `k8s.io/api` at patch time. keel has no Go structs, so this module
//! restates those tags as a small graph of the structs that carry them: a
//! field path is walked from the kind's root to the struct holding the last
//! field, and that struct's tag decides. Walking types rather than matching
//! whole paths is what keeps one table correct for every place a struct is
//! embedded (a `PodSpec` under a Pod, a Deployment, or a CronJob's job
//! template) and keeps same-named fields apart (`ports` of a Service vs. of a
//! container). Anything the graph does not know is atomic, which is also what
//! upstream does for fields without tags.

/// How a list field is patched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// No `patchStrategy` tag: the patch's list replaces the original.
    Atomic,
    /// `patchStrategy:"merge"` with `patchMergeKey`: items are maps matched by
    /// the value of this key.
    MergeByKey(&'static str),
    /// `patchStrategy:"merge"` without a key: items are primitives merged as an
    /// ordered set.
    MergeSet,
}

/// How a map (struct) field is patched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapStrategy {
    /// The default: merge key by key.
    Merge,
    /// `patchStrategy:"replace"`: the patch's map replaces the original.
    Replace,
}

/// The Go structs whose fields carry patch tags, or lead to ones that do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Struct<'k> {
    /// The top of an object of the given kind.
    Root(&'k str),
    ObjectMeta,
    PodTemplateSpec,
    PodSpec,
    Container,
    PodStatus,
    /// Specs that embed a pod template (`spec.template`).
    TemplatedSpec,
    CronJobSpec,
    JobTemplateSpec,
    ServiceSpec,
    NodeSpec,
    NodeStatus,
    /// Statuses whose only tagged field is `conditions` keyed by `type`.
    ConditionsStatus,
    PodDisruptionBudgetSpec,
    Webhook,
    AdmissionPolicySpec,
    ResourceClaimStatus,
    CsiNodeSpec,
    /// A struct without tagged fields below it.
    Opaque,
}

/// Returns how the list at `path` (field names from the object's root, list
/// indices left out) of an object of kind `kind` is patched.
pub fn list_strategy(kind: &str, path: &[&str]) -> ListStrategy {
    match path.split_last() {
        Some((field, parents)) => list_field(resolve(kind, parents), field),
        None => ListStrategy::Atomic,
    }
}

/// Returns how the map at `path` of an object of kind `kind` is patched.
pub fn map_strategy(kind: &str, path: &[&str]) -> MapStrategy {
    match path.split_last() {
        Some((field, parents)) => map_field(resolve(kind, parents), field),
        None => MapStrategy::Merge,
    }
}

/// Walks `path` from the root of `kind` to the struct it names.
fn resolve<'k>(kind: &'k str, path: &[&str]) -> Struct<'k> {
    path.iter()
        .fold(Struct::Root(kind), |node, field| child(node, field))
}

/// The struct type of `field` within `node`.
fn child<'k>(node: Struct<'k>, field: &str) -> Struct<'k> {
    match (node, field) {
        (Struct::Root(kind), _) => root_child(kind, field),
        (Struct::PodTemplateSpec | Struct::JobTemplateSpec, "metadata") => Struct::ObjectMeta,
        (Struct::PodTemplateSpec, "spec") => Struct::PodSpec,
        (Struct::JobTemplateSpec, "spec") => Struct::TemplatedSpec,
        (Struct::CronJobSpec, "jobTemplate") => Struct::JobTemplateSpec,
        (Struct::TemplatedSpec, "template") => Struct::PodTemplateSpec,
        (Struct::PodSpec, "containers" | "initContainers" | "ephemeralContainers") => {
            Struct::Container
        }
        _ => Struct::Opaque,
    }
}

/// The struct type of a top-level field of `kind`. Every kind has standard
/// object metadata, so `metadata` resolves even for kinds not listed here.
fn root_child(kind: &str, field: &str) -> Struct<'static> {
    match field {
        "metadata" => Struct::ObjectMeta,
        "spec" => spec_of(kind),
        "status" => status_of(kind),
        "template" if kind == "PodTemplate" => Struct::PodTemplateSpec,
        "webhooks" if is_webhook_configuration(kind) => Struct::Webhook,
        _ => Struct::Opaque,
    }
}

fn spec_of(kind: &str) -> Struct<'static> {
    match kind {
        "Pod" => Struct::PodSpec,
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "Job"
        | "ReplicationController" => Struct::TemplatedSpec,
        "CronJob" => Struct::CronJobSpec,
        "Service" => Struct::ServiceSpec,
        "Node" => Struct::NodeSpec,
        "PodDisruptionBudget" => Struct::PodDisruptionBudgetSpec,
        "ValidatingAdmissionPolicy" | "MutatingAdmissionPolicy" => Struct::AdmissionPolicySpec,
        "CSINode" => Struct::CsiNodeSpec,
        _ => Struct::Opaque,
    }
}

fn status_of(kind: &str) -> Struct<'static> {
    match kind {
        "Pod" => Struct::PodStatus,
        "Node" => Struct::NodeStatus,
        "ResourceClaim" => Struct::ResourceClaimStatus,
        "Deployment"
        | "ReplicaSet"
        | "StatefulSet"
        | "DaemonSet"
        | "Job"
        | "ReplicationController"
        | "Service"
        | "Namespace"
        | "PersistentVolumeClaim"
        | "HorizontalPodAutoscaler"
        | "PodDisruptionBudget"
        | "FlowSchema"
        | "PriorityLevelConfiguration"
        | "ServiceCIDR"
        | "StorageVersionMigration"
        | "DeviceTaintRule" => Struct::ConditionsStatus,
        _ => Struct::Opaque,
    }
}

fn is_webhook_configuration(kind: &str) -> bool {
    matches!(
        kind,
        "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration"
    )
}

/// The tag of list field `field` of struct `node`.
fn list_field(node: Struct<'_>, field: &str) -> ListStrategy {
    use ListStrategy::{Atomic, MergeByKey, MergeSet};
    match (node, field) {
        (Struct::Root(kind), _) => root_list(kind, field),
        (Struct::ObjectMeta, "finalizers") | (Struct::NodeSpec, "podCIDRs") => MergeSet,
        (Struct::ObjectMeta, "ownerReferences") | (Struct::ResourceClaimStatus, "reservedFor") => {
            MergeByKey("uid")
        }
        (Struct::PodSpec, _) => pod_spec_list(field),
        (Struct::Container, _) => container_list(field),
        (Struct::PodStatus, _) => pod_status_list(field),
        (Struct::ServiceSpec, "ports") => MergeByKey("port"),
        (Struct::NodeStatus, "conditions" | "addresses")
        | (Struct::ConditionsStatus, "conditions") => MergeByKey("type"),
        (Struct::Webhook, "matchConditions")
        | (Struct::AdmissionPolicySpec, "matchConditions" | "variables")
        | (Struct::CsiNodeSpec, "drivers") => MergeByKey("name"),
        _ => Atomic,
    }
}

/// Lists directly under an object's root.
fn root_list(kind: &str, field: &str) -> ListStrategy {
    match (kind, field) {
        ("ServiceAccount", "secrets") => ListStrategy::MergeByKey("name"),
        ("ComponentStatus", "conditions") => ListStrategy::MergeByKey("type"),
        (_, "webhooks") if is_webhook_configuration(kind) => ListStrategy::MergeByKey("name"),
        _ => ListStrategy::Atomic,
    }
}

fn pod_spec_list(field: &str) -> ListStrategy {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "imagePullSecrets"
        | "schedulingGates"
        | "resourceClaims" => ListStrategy::MergeByKey("name"),
        "hostAliases" => ListStrategy::MergeByKey("ip"),
        "topologySpreadConstraints" => ListStrategy::MergeByKey("topologyKey"),
        _ => ListStrategy::Atomic,
    }
}

fn container_list(field: &str) -> ListStrategy {
    match field {
        "ports" => ListStrategy::MergeByKey("containerPort"),
        "env" => ListStrategy::MergeByKey("name"),
        "volumeMounts" => ListStrategy::MergeByKey("mountPath"),
        "volumeDevices" => ListStrategy::MergeByKey("devicePath"),
        _ => ListStrategy::Atomic,
    }
}

fn pod_status_list(field: &str) -> ListStrategy {
    match field {
        "conditions" => ListStrategy::MergeByKey("type"),
        "podIPs" | "hostIPs" => ListStrategy::MergeByKey("ip"),
        "resourceClaimStatuses" => ListStrategy::MergeByKey("name"),
        _ => ListStrategy::Atomic,
    }
}

/// The tag of map field `field` of struct `node`.
fn map_field(node: Struct<'_>, field: &str) -> MapStrategy {
    match (node, field) {
        (Struct::PodDisruptionBudgetSpec, "selector") => MapStrategy::Replace,
        _ => MapStrategy::Merge,
    }
}

#[cfg(test)]
mod tests {
    use super::ListStrategy::{Atomic, MergeByKey, MergeSet};
    use super::*;

    #[test]
    fn pod_spec_is_found_under_every_workload() {
        let cases: &[(&str, &[&str])] = &[
            ("Pod", &["spec", "containers"]),
            ("PodTemplate", &["template", "spec", "containers"]),
            ("Deployment", &["spec", "template", "spec", "containers"]),
            ("ReplicaSet", &["spec", "template", "spec", "containers"]),
            ("StatefulSet", &["spec", "template", "spec", "containers"]),
            ("DaemonSet", &["spec", "template", "spec", "containers"]),
            ("Job", &["spec", "template", "spec", "containers"]),
            (
                "ReplicationController",
                &["spec", "template", "spec", "containers"],
            ),
            (
                "CronJob",
                &[
                    "spec",
                    "jobTemplate",
                    "spec",
                    "template",
                    "spec",
                    "containers",
                ],
            ),
        ];
        for (kind, path) in cases {
            assert_eq!(list_strategy(kind, path), MergeByKey("name"), "{kind}");
        }
    }

    #[test]
    fn same_field_name_differs_by_place() {
        assert_eq!(
            list_strategy("Service", &["spec", "ports"]),
            MergeByKey("port")
        );
        assert_eq!(
            list_strategy("Pod", &["spec", "containers", "ports"]),
            MergeByKey("containerPort")
        );
        assert_eq!(list_strategy("Pod", &["spec", "ports"]), Atomic);
        assert_eq!(
            list_strategy("Node", &["status", "addresses"]),
            MergeByKey("type")
        );
    }

    #[test]
    fn metadata_lists_merge_for_any_kind() {
        for kind in ["ConfigMap", "Deployment", "SomethingUnknown"] {
            assert_eq!(list_strategy(kind, &["metadata", "finalizers"]), MergeSet);
            assert_eq!(
                list_strategy(kind, &["metadata", "ownerReferences"]),
                MergeByKey("uid")
            );
        }
        assert_eq!(
            list_strategy(
                "Deployment",
                &["spec", "template", "metadata", "finalizers"]
            ),
            MergeSet
        );
    }

    #[test]
    fn untagged_lists_are_atomic() {
        assert_eq!(
            list_strategy("Pod", &["spec", "containers", "args"]),
            Atomic
        );
        assert_eq!(list_strategy("Node", &["spec", "taints"]), Atomic);
        assert_eq!(
            list_strategy("StatefulSet", &["spec", "volumeClaimTemplates"]),
            Atomic
        );
        assert_eq!(list_strategy("Pod", &["spec", "tolerations"]), Atomic);
        assert_eq!(list_strategy("Widget", &["spec", "items"]), Atomic);
        assert_eq!(list_strategy("Pod", &[]), Atomic);
    }

    #[test]
    fn replace_maps() {
        assert_eq!(
            map_strategy("PodDisruptionBudget", &["spec", "selector"]),
            MapStrategy::Replace
        );
        assert_eq!(
            map_strategy("Deployment", &["spec", "selector"]),
            MapStrategy::Merge
        );
        assert_eq!(map_strategy("Deployment", &[]), MapStrategy::Merge);
    }
}
