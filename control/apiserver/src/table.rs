//! Server-side printing: the `meta.k8s.io/v1` Table columns and cells that
//! human-readable `kubectl get` asks for (`Accept: …;as=Table;…`).
//!
//! kubectl prints whatever the server puts in the cells, so the server has to
//! format them exactly as Kubernetes' own printers do (ages like `3h12m`,
//! `<none>`, pod STATUS reasons, `80:30080/TCP` ports). The real server always
//! renders the wide columns and marks them `priority: 1`; kubectl hides them
//! unless `-o wide`. This module mirrors Kubernetes 1.33's printers
//! (`pkg/printers/internalversion`) resource by resource: each resource has a
//! column table and a cell function over the stored JSON object. Every read
//! tolerates missing or mistyped fields, because stored objects come from
//! users and controllers of varying care.
//!
//! Depends on the sibling `selector` module for selector columns.

use super::selector::LabelSelector;
use jiff::Timestamp;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

/// One column: name, JSON-schema type, wide-only, description.
struct Col(&'static str, &'static str, bool, &'static str);

/// Cells of one row, in column order.
type CellFn = fn(&Value, Timestamp) -> Vec<Value>;

/// Column definitions (meta.k8s.io/v1 TableColumnDefinition JSON: name, type,
/// format, description, priority) for `resource` (plural lowercase, e.g.
/// "pods", "deployments"; group not needed: names are unique except
/// "events", and both event APIs print the same).
pub fn column_definitions(resource: &str) -> Vec<Value> {
    printer(resource)
        .0
        .iter()
        .map(|Col(name, ty, wide, desc)| {
            // kubectl's `get all` prefixes `kind/` only on a column whose
            // format is "name".
            let format = if *name == "Name" { "name" } else { "" };
            json!({"name": name, "type": ty, "format": format,
                   "description": desc, "priority": i32::from(*wide)})
        })
        .collect()
}

/// The cells of one row for `obj` (a stored object as JSON), in column
/// order, formatted as kubectl shows them (ages like "6s", "5m", "3h12m",
/// "2d"; "<none>"; numbers as JSON numbers where Kubernetes prints an
/// integer).
pub fn row_cells(resource: &str, obj: &Value, now: Timestamp) -> Vec<Value> {
    (printer(resource).1)(obj, now)
}

/// kubectl's HumanDuration age format: about two significant units
/// ("90s", "5m30s", "45m", "3h12m", "20h", "2d5h", "40d", "3y20d").
pub fn human_age(d: Duration) -> String {
    human_secs(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// HumanDuration over signed whole seconds: a timestamp a little in the
/// future (clock skew up to 1s) reads "0s", further out "<invalid>".
fn human_secs(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let s = secs.max(0);
    let (m, h) = (s / 60, s / 3600);
    let d = h / 24;
    let y = d / 365;
    match () {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 => two_units(m, "m", s % 60, "s"),
        _ if m < 180 => format!("{m}m"),
        _ if h < 8 => two_units(h, "h", m % 60, "m"),
        _ if h < 48 => format!("{h}h"),
        _ if h < 24 * 8 => two_units(d, "d", h % 24, "h"),
        _ if h < 24 * 365 * 2 => format!("{d}d"),
        _ if h < 24 * 365 * 8 => two_units(y, "y", d % 365, "d"),
        _ => format!("{y}y"),
    }
}

/// "5m30s", or just "5m" when the smaller unit is zero.
fn two_units(big: i64, bu: &str, small: i64, su: &str) -> String {
    if small == 0 {
        format!("{big}{bu}")
    } else {
        format!("{big}{bu}{small}{su}")
    }
}

/// The printer for a resource: its columns and its cell function.
fn printer(resource: &str) -> (&'static [Col], CellFn) {
    match resource {
        "pods" => (POD_COLS, pod_cells),
        "nodes" => (NODE_COLS, node_cells),
        "namespaces" => (NAMESPACE_COLS, namespace_cells),
        "services" => (SERVICE_COLS, service_cells),
        "endpoints" => (ENDPOINTS_COLS, endpoints_cells),
        "endpointslices" => (ENDPOINTSLICE_COLS, endpointslice_cells),
        "configmaps" => (CONFIGMAP_COLS, configmap_cells),
        "secrets" => (SECRET_COLS, secret_cells),
        "serviceaccounts" => (SERVICEACCOUNT_COLS, serviceaccount_cells),
        "events" => (EVENT_COLS, event_cells),
        "persistentvolumes" => (PV_COLS, pv_cells),
        "persistentvolumeclaims" => (PVC_COLS, pvc_cells),
        "resourcequotas" => (QUOTA_COLS, quota_cells),
        "deployments" => (DEPLOYMENT_COLS, deployment_cells),
        "replicasets" => (REPLICASET_COLS, replicaset_cells),
        "replicationcontrollers" => (RC_COLS, rc_cells),
        "statefulsets" => (STATEFULSET_COLS, statefulset_cells),
        "daemonsets" => (DAEMONSET_COLS, daemonset_cells),
        "jobs" => (JOB_COLS, job_cells),
        "cronjobs" => (CRONJOB_COLS, cronjob_cells),
        "horizontalpodautoscalers" => (HPA_COLS, hpa_cells),
        "leases" => (LEASE_COLS, lease_cells),
        "ingresses" => (INGRESS_COLS, ingress_cells),
        "ingressclasses" => (INGRESSCLASS_COLS, ingressclass_cells),
        "networkpolicies" => (NETPOL_COLS, netpol_cells),
        "poddisruptionbudgets" => (PDB_COLS, pdb_cells),
        "podtemplates" => (PODTEMPLATE_COLS, podtemplate_cells),
        "storageclasses" => (STORAGECLASS_COLS, storageclass_cells),
        "priorityclasses" => (PRIORITYCLASS_COLS, priorityclass_cells),
        "runtimeclasses" => (RUNTIMECLASS_COLS, runtimeclass_cells),
        "controllerrevisions" => (REVISION_COLS, revision_cells),
        "rolebindings" | "clusterrolebindings" => (BINDING_COLS, binding_cells),
        "mutatingwebhookconfigurations" | "validatingwebhookconfigurations" => {
            (WEBHOOK_COLS, webhook_cells)
        }
        // Kubernetes has no printer for these; its generic table shows the
        // creation time itself rather than an age.
        "limitranges" | "roles" | "clusterroles" | "customresourcedefinitions" => {
            (CREATED_AT_COLS, created_at_cells)
        }
        _ => (DEFAULT_COLS, default_cells),
    }
}

// ----- column tables ----------------------------------------------------------

const NAME: Col = Col(
    "Name",
    "string",
    false,
    "Name must be unique within a namespace.",
);
const AGE: Col = Col("Age", "string", false, "Time since the object was created.");
const CONTAINERS: Col = Col(
    "Containers",
    "string",
    true,
    "Names of each container in the template.",
);
const IMAGES: Col = Col(
    "Images",
    "string",
    true,
    "Images referenced by each container in the template.",
);
const SELECTOR: Col = Col(
    "Selector",
    "string",
    true,
    "Label selector of the pods this object manages.",
);

const DEFAULT_COLS: &[Col] = &[NAME, AGE];
const CREATED_AT_COLS: &[Col] = &[
    NAME,
    Col("Created At", "date", false, "Time the object was created."),
];

const POD_COLS: &[Col] = &[
    NAME,
    Col(
        "Ready",
        "string",
        false,
        "The aggregate readiness state of this pod for accepting traffic.",
    ),
    Col(
        "Status",
        "string",
        false,
        "The aggregate status of the containers in this pod.",
    ),
    Col(
        "Restarts",
        "string",
        false,
        "Container restarts in this pod and when the last one happened.",
    ),
    AGE,
    Col("IP", "string", true, "The pod's IP address."),
    Col("Node", "string", true, "The node the pod is bound to."),
    Col(
        "Nominated Node",
        "string",
        true,
        "The node the scheduler nominated for preemption.",
    ),
    Col(
        "Readiness Gates",
        "string",
        true,
        "Readiness gate conditions that are true, of all gates.",
    ),
];

const NODE_COLS: &[Col] = &[
    NAME,
    Col("Status", "string", false, "The status of the node"),
    Col("Roles", "string", false, "The roles of the node"),
    AGE,
    Col(
        "Version",
        "string",
        false,
        "Kubelet version reported by the node.",
    ),
    Col(
        "Internal-IP",
        "string",
        true,
        "The node's internal address.",
    ),
    Col(
        "External-IP",
        "string",
        true,
        "The node's external address.",
    ),
    Col("OS-Image", "string", true, "OS image reported by the node."),
    Col(
        "Kernel-Version",
        "string",
        true,
        "Kernel version reported by the node.",
    ),
    Col(
        "Container-Runtime",
        "string",
        true,
        "Container runtime version reported by the node.",
    ),
];

const NAMESPACE_COLS: &[Col] = &[
    NAME,
    Col("Status", "string", false, "The status of the namespace"),
    AGE,
];

const SERVICE_COLS: &[Col] = &[
    NAME,
    Col("Type", "string", false, "How the service is exposed."),
    Col("Cluster-IP", "string", false, "The service's cluster IP."),
    Col(
        "External-IP",
        "string",
        false,
        "External addresses of the service.",
    ),
    Col("Port(s)", "string", false, "Ports the service exposes."),
    AGE,
    Col("Selector", "string", true, "Pods this service routes to."),
];

const ENDPOINTS_COLS: &[Col] = &[
    NAME,
    Col(
        "Endpoints",
        "string",
        false,
        "Addresses and ports of the endpoints.",
    ),
    AGE,
];

const ENDPOINTSLICE_COLS: &[Col] = &[
    NAME,
    Col(
        "AddressType",
        "string",
        false,
        "Type of address carried by this slice.",
    ),
    Col("Ports", "string", false, "Ports exposed by this slice."),
    Col("Endpoints", "string", false, "Addresses of the endpoints."),
    AGE,
];

const CONFIGMAP_COLS: &[Col] = &[
    NAME,
    Col("Data", "string", false, "Number of data entries."),
    AGE,
];

const SECRET_COLS: &[Col] = &[
    NAME,
    Col("Type", "string", false, "The secret type."),
    Col("Data", "string", false, "Number of data entries."),
    AGE,
];

const SERVICEACCOUNT_COLS: &[Col] = &[
    NAME,
    Col("Secrets", "string", false, "Number of referenced secrets."),
    AGE,
];

const EVENT_COLS: &[Col] = &[
    Col(
        "Last Seen",
        "string",
        false,
        "Time since the event was last seen.",
    ),
    Col("Type", "string", false, "Event type (Normal, Warning)."),
    Col("Reason", "string", false, "Short machine-readable reason."),
    Col("Object", "string", false, "The object the event is about."),
    Col("Subobject", "string", true, "Field path within the object."),
    Col(
        "Source",
        "string",
        true,
        "Component that reported the event.",
    ),
    Col("Message", "string", false, "Human-readable description."),
    Col(
        "First Seen",
        "string",
        true,
        "Time since the event was first seen.",
    ),
    Col("Count", "string", true, "Times the event occurred."),
    Col("Name", "string", true, "Name of the event object."),
];

const PV_COLS: &[Col] = &[
    NAME,
    Col(
        "Capacity",
        "string",
        false,
        "Storage capacity of the volume.",
    ),
    Col(
        "Access Modes",
        "string",
        false,
        "How the volume can be mounted.",
    ),
    Col(
        "Reclaim Policy",
        "string",
        false,
        "What happens to the volume when released.",
    ),
    Col("Status", "string", false, "Phase of the volume."),
    Col("Claim", "string", false, "The claim bound to the volume."),
    Col("StorageClass", "string", false, "StorageClass of the pv"),
    Col(
        "VolumeAttributesClass",
        "string",
        false,
        "VolumeAttributesClass of the pv",
    ),
    Col("Reason", "string", false, "Reason for the current phase."),
    AGE,
    Col("VolumeMode", "string", true, "Filesystem or Block."),
];

const PVC_COLS: &[Col] = &[
    NAME,
    Col("Status", "string", false, "Phase of the claim."),
    Col("Volume", "string", false, "The volume bound to the claim."),
    Col("Capacity", "string", false, "Capacity of the bound volume."),
    Col(
        "Access Modes",
        "string",
        false,
        "Access modes of the bound volume.",
    ),
    Col("StorageClass", "string", false, "StorageClass of the pvc"),
    Col(
        "VolumeAttributesClass",
        "string",
        false,
        "VolumeAttributesClass of the pvc",
    ),
    AGE,
    Col("VolumeMode", "string", true, "Filesystem or Block."),
];

const QUOTA_COLS: &[Col] = &[
    NAME,
    Col("Request", "string", false, "Used and hard request quotas."),
    Col("Limit", "string", false, "Used and hard limit quotas."),
    AGE,
];

const DEPLOYMENT_COLS: &[Col] = &[
    NAME,
    Col(
        "Ready",
        "string",
        false,
        "Number of the pod with ready state",
    ),
    Col(
        "Up-to-date",
        "string",
        false,
        "Pods running the latest template.",
    ),
    Col("Available", "string", false, "Pods available to users."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

const REPLICASET_COLS: &[Col] = &[
    NAME,
    Col("Desired", "integer", false, "Desired number of pods."),
    Col("Current", "integer", false, "Pods that exist."),
    Col("Ready", "integer", false, "Pods that are ready."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

const RC_COLS: &[Col] = REPLICASET_COLS;

const STATEFULSET_COLS: &[Col] = &[
    NAME,
    Col(
        "Ready",
        "string",
        false,
        "Number of the pod with ready state",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
];

const DAEMONSET_COLS: &[Col] = &[
    NAME,
    Col(
        "Desired",
        "integer",
        false,
        "Nodes that should run the daemon pod.",
    ),
    Col(
        "Current",
        "integer",
        false,
        "Nodes running at least one daemon pod.",
    ),
    Col(
        "Ready",
        "integer",
        false,
        "Nodes whose daemon pod is ready.",
    ),
    Col(
        "Up-to-date",
        "integer",
        false,
        "Nodes running the latest template.",
    ),
    Col(
        "Available",
        "integer",
        false,
        "Nodes whose daemon pod is available.",
    ),
    Col(
        "Node Selector",
        "string",
        false,
        "Node selector of the pod template.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

const JOB_COLS: &[Col] = &[
    NAME,
    Col("Status", "string", false, "Status of the job."),
    Col(
        "Completions",
        "string",
        false,
        "Succeeded pods of the completions wanted.",
    ),
    Col(
        "Duration",
        "string",
        false,
        "Time required to complete the job.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

const CRONJOB_COLS: &[Col] = &[
    NAME,
    Col("Schedule", "string", false, "The cron schedule."),
    Col("Timezone", "string", false, "Time zone of the schedule."),
    Col(
        "Suspend",
        "boolean",
        false,
        "Whether new runs are suspended.",
    ),
    Col("Active", "integer", false, "Jobs currently running."),
    Col(
        "Last Schedule",
        "string",
        false,
        "Time since the last scheduled run.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

const HPA_COLS: &[Col] = &[
    NAME,
    Col("Reference", "string", false, "The scaled object."),
    Col(
        "Targets",
        "string",
        false,
        "Current and target metric values.",
    ),
    Col("MinPods", "string", false, "Lower replica limit."),
    Col("MaxPods", "string", false, "Upper replica limit."),
    Col("Replicas", "string", false, "Current replicas."),
    AGE,
];

const LEASE_COLS: &[Col] = &[
    NAME,
    Col("Holder", "string", false, "Identity of the lease holder."),
    AGE,
];

const INGRESS_COLS: &[Col] = &[
    NAME,
    Col(
        "Class",
        "string",
        false,
        "The IngressClass that handles this ingress.",
    ),
    Col(
        "Hosts",
        "string",
        false,
        "Hosts that incoming requests are matched against.",
    ),
    Col("Address", "string", false, "Load-balancer ingress points."),
    Col("Ports", "string", false, "Ports the ingress listens on."),
    AGE,
];

const INGRESSCLASS_COLS: &[Col] = &[
    NAME,
    Col(
        "Controller",
        "string",
        false,
        "Controller that handles this class.",
    ),
    Col(
        "Parameters",
        "string",
        false,
        "Reference to class parameters.",
    ),
    AGE,
];

const NETPOL_COLS: &[Col] = &[
    NAME,
    Col(
        "Pod-Selector",
        "string",
        false,
        "Pods the policy applies to.",
    ),
    AGE,
];

const PDB_COLS: &[Col] = &[
    NAME,
    Col(
        "Min Available",
        "string",
        false,
        "The minimum number of pods that must be available.",
    ),
    Col(
        "Max Unavailable",
        "string",
        false,
        "The maximum number of pods that may be unavailable.",
    ),
    Col(
        "Allowed Disruptions",
        "integer",
        false,
        "Calculated number of pods that may be disrupted at this time.",
    ),
    AGE,
];

const PODTEMPLATE_COLS: &[Col] = &[
    NAME,
    Col(
        "Containers",
        "string",
        false,
        "Names of each container in the template.",
    ),
    Col(
        "Images",
        "string",
        false,
        "Images referenced by each container in the template.",
    ),
    Col(
        "Pod Labels",
        "string",
        false,
        "The labels for the pod template.",
    ),
];

const STORAGECLASS_COLS: &[Col] = &[
    NAME,
    Col(
        "Provisioner",
        "string",
        false,
        "Volume plugin that provisions volumes.",
    ),
    Col(
        "ReclaimPolicy",
        "string",
        false,
        "Reclaim policy of provisioned volumes.",
    ),
    Col(
        "VolumeBindingMode",
        "string",
        false,
        "When volumes are bound.",
    ),
    Col(
        "AllowVolumeExpansion",
        "string",
        false,
        "Whether volumes may grow.",
    ),
    AGE,
];

const PRIORITYCLASS_COLS: &[Col] = &[
    NAME,
    Col("Value", "integer", false, "Priority value."),
    Col(
        "Global-Default",
        "boolean",
        false,
        "Whether this is the default class.",
    ),
    AGE,
    Col(
        "PreemptionPolicy",
        "string",
        true,
        "Whether pods of this class preempt others.",
    ),
];

const RUNTIMECLASS_COLS: &[Col] = &[
    NAME,
    Col("Handler", "string", false, "CRI handler of the class."),
    AGE,
];

const REVISION_COLS: &[Col] = &[
    NAME,
    Col("Controller", "string", false, "Controller of the object"),
    Col("Revision", "string", false, "Revision number."),
    AGE,
];

const BINDING_COLS: &[Col] = &[
    NAME,
    Col("Role", "string", false, "The role granted."),
    AGE,
    Col("Users", "string", true, "Users in the binding"),
    Col("Groups", "string", true, "Groups in the binding"),
    Col(
        "ServiceAccounts",
        "string",
        true,
        "ServiceAccounts in the binding",
    ),
];

const WEBHOOK_COLS: &[Col] = &[
    NAME,
    Col(
        "Webhooks",
        "integer",
        false,
        "Number of webhooks in this configuration.",
    ),
    AGE,
];

// ----- JSON and time helpers --------------------------------------------------

/// Walks a dotted path; any missing step yields None.
fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, seg| v.get(seg))
}

/// A string field, "" when missing or not a string.
fn text<'a>(v: &'a Value, path: &str) -> &'a str {
    at(v, path).and_then(Value::as_str).unwrap_or("")
}

/// An integer field, 0 when missing (Go's zero value).
fn int(v: &Value, path: &str) -> i64 {
    at(v, path).and_then(Value::as_i64).unwrap_or(0)
}

/// A list field, empty when missing.
fn list<'a>(v: &'a Value, path: &str) -> &'a [Value] {
    at(v, path)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Number of entries of a map or list field.
fn count(v: &Value, path: &str) -> i64 {
    let n = match at(v, path) {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    };
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `s`, or "<none>" when empty.
fn or_none(s: &str) -> String {
    if s.is_empty() { "<none>" } else { s }.to_string()
}

/// A quantity or int-or-string as Kubernetes prints it (JSON strings as-is,
/// numbers in decimal).
fn scalar(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn ts(v: &Value, path: &str) -> Option<Timestamp> {
    text(v, path).parse().ok()
}

/// Whole seconds from `t` to `now`, truncated toward zero as Go does.
fn secs_between(t: Timestamp, now: Timestamp) -> i64 {
    let nanos = now.as_nanosecond() - t.as_nanosecond();
    i64::try_from(nanos / 1_000_000_000).unwrap_or(i64::MAX)
}

/// Age of a timestamp, "<unknown>" when absent, like translateTimestampSince.
fn since(t: Option<Timestamp>, now: Timestamp) -> String {
    t.map_or_else(|| "<unknown>".into(), |t| human_secs(secs_between(t, now)))
}

fn name(obj: &Value) -> Value {
    json!(text(obj, "metadata.name"))
}

fn age(obj: &Value, now: Timestamp) -> Value {
    json!(since(ts(obj, "metadata.creationTimestamp"), now))
}

fn deleting(obj: &Value) -> bool {
    at(obj, "metadata.deletionTimestamp").is_some_and(|v| !v.is_null())
}

/// `k=v,k2=v2` sorted by key, "<none>" when empty (labels.FormatLabels).
fn format_labels(map: Option<&Value>) -> String {
    let Some(map) = map.and_then(Value::as_object) else {
        return "<none>".into();
    };
    let mut pairs: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    pairs.sort();
    or_none(&pairs.join(","))
}

/// A metav1.LabelSelector as metav1.FormatLabelSelector prints it.
fn format_selector(sel: Option<&Value>) -> String {
    match LabelSelector::from_json(sel.unwrap_or(&Value::Null)) {
        Ok(s) => or_none(&s.to_string()),
        Err(_) => "<error>".into(),
    }
}

/// Container names and images of a pod spec, each comma-joined.
fn container_cells(spec: Option<&Value>) -> [Value; 2] {
    let containers = spec.map_or(&[][..], |s| list(s, "containers"));
    let pick = |field: &str| -> Value {
        let items: Vec<&str> = containers.iter().map(|c| text(c, field)).collect();
        json!(items.join(","))
    };
    [pick("name"), pick("image")]
}

/// Desired replicas; the API server defaults an omitted `spec.replicas` to 1.
fn desired_replicas(obj: &Value) -> i64 {
    at(obj, "spec.replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

/// `a,b,c + N more...` for lists Kubernetes truncates to `max` items.
fn truncated(items: &[String], max: usize, empty: &str) -> String {
    if items.is_empty() {
        return empty.to_string();
    }
    let shown = items[..items.len().min(max)].join(",");
    if items.len() > max {
        format!("{shown} + {} more...", items.len() - max)
    } else {
        shown
    }
}

// ----- generic ---------------------------------------------------------------------

fn default_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(obj), age(obj, now)]
}

/// RFC 3339 creation time in UTC, as Kubernetes' generic table prints it
/// (Go's zero time when unset).
fn created_at_cells(obj: &Value, _now: Timestamp) -> Vec<Value> {
    let created = ts(obj, "metadata.creationTimestamp").map_or_else(
        || "0001-01-01T00:00:00Z".to_string(),
        |t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    );
    vec![name(obj), json!(created)]
}

// ----- pods ---------------------------------------------------------------------------

/// Restart count and most recent restart time over a set of containers.
#[derive(Default, Clone, Copy)]
struct Restarts {
    count: i64,
    last: Option<Timestamp>,
}

impl Restarts {
    fn add(&mut self, status: &Value) {
        self.count += int(status, "restartCount");
        if let Some(t) = ts(status, "lastState.terminated.finishedAt") {
            self.last = Some(self.last.map_or(t, |l| l.max(t)));
        }
    }
}

/// What the pod row shows besides plain fields.
struct PodSummary {
    ready: i64,
    total: i64,
    reason: String,
    restarts: Restarts,
}

fn pod_cells(pod: &Value, now: Timestamp) -> Vec<Value> {
    let s = pod_summary(pod);
    let restarts = match s.restarts.last {
        Some(t) if s.restarts.count != 0 => {
            format!("{} ({} ago)", s.restarts.count, since(Some(t), now))
        }
        _ => s.restarts.count.to_string(),
    };
    let ip = list(pod, "status.podIPs")
        .first()
        .map(|p| text(p, "ip"))
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| text(pod, "status.podIP"));
    vec![
        name(pod),
        json!(format!("{}/{}", s.ready, s.total)),
        json!(s.reason),
        json!(restarts),
        age(pod, now),
        json!(or_none(ip)),
        json!(or_none(text(pod, "spec.nodeName"))),
        json!(or_none(text(pod, "status.nominatedNodeName"))),
        json!(readiness_gates(pod)),
    ]
}

/// The pod STATUS column, READY counts and restarts, following Kubernetes'
/// printPod: phase or status reason, then init containers, then regular
/// containers (last one wins), then Terminating.
fn pod_summary(pod: &Value) -> PodSummary {
    let phase = text(pod, "status.phase");
    let mut reason = match text(pod, "status.reason") {
        "" => phase.to_string(),
        r => r.to_string(),
    };
    if list(pod, "status.conditions")
        .iter()
        .any(|c| text(c, "type") == "PodScheduled" && text(c, "reason") == "SchedulingGated")
    {
        reason = "SchedulingGated".into();
    }
    let sidecars = sidecar_names(pod);
    let mut s = PodSummary {
        ready: 0,
        total: count(pod, "spec.containers") + i64::try_from(sidecars.len()).unwrap_or(0),
        reason,
        restarts: Restarts::default(),
    };
    let (initializing, all, sidecar) = init_containers(pod, &sidecars, &mut s);
    if !initializing || has_condition(pod, "Initialized") {
        s.restarts = sidecar;
        main_containers(pod, &mut s);
    } else {
        s.restarts = all;
    }
    if deleting(pod) && text(pod, "status.reason") == "NodeLost" {
        s.reason = "Unknown".into();
    } else if deleting(pod) && !matches!(phase, "Failed" | "Succeeded") {
        s.reason = "Terminating".into();
    }
    s
}

/// Init containers with `restartPolicy: Always` are sidecars: they count
/// towards READY and keep running after initialization.
fn sidecar_names(pod: &Value) -> Vec<&str> {
    list(pod, "spec.initContainers")
        .iter()
        .filter(|c| text(c, "restartPolicy") == "Always")
        .map(|c| text(c, "name"))
        .collect()
}

/// Whether the first condition of type `ty` is True (how Kubernetes reads
/// pod, job and readiness-gate conditions).
fn has_condition(obj: &Value, ty: &str) -> bool {
    list(obj, "status.conditions")
        .iter()
        .find(|c| text(c, "type") == ty)
        .is_some_and(|c| text(c, "status") == "True")
}

/// Walks init container statuses until the first one still in the way and
/// names it (`Init:0/1`, `Init:CrashLoopBackOff`, `Init:ExitCode:1`).
/// Returns whether the pod is still initializing plus restarts over all init
/// containers and over sidecars only.
fn init_containers(
    pod: &Value,
    sidecars: &[&str],
    s: &mut PodSummary,
) -> (bool, Restarts, Restarts) {
    let (mut all, mut side) = (Restarts::default(), Restarts::default());
    let total_init = count(pod, "spec.initContainers");
    for (i, c) in list(pod, "status.initContainerStatuses").iter().enumerate() {
        let is_sidecar = sidecars.contains(&text(c, "name"));
        all.add(c);
        if is_sidecar {
            side.add(c);
        }
        let terminated = at(c, "state.terminated").filter(|t| t.is_object());
        if terminated.is_some_and(|t| int(t, "exitCode") == 0) {
            continue;
        }
        if is_sidecar && at(c, "started").and_then(Value::as_bool) == Some(true) {
            if at(c, "ready").and_then(Value::as_bool) == Some(true) {
                s.ready += 1;
            }
            continue;
        }
        let waiting = text(c, "state.waiting.reason");
        s.reason = match terminated {
            Some(t) => format!("Init:{}", terminated_reason(t)),
            None if !waiting.is_empty() && waiting != "PodInitializing" => {
                format!("Init:{waiting}")
            }
            None => format!("Init:{i}/{total_init}"),
        };
        return (true, all, side);
    }
    (false, all, side)
}

/// A terminated state's reason, or `Signal:N` / `ExitCode:N` without one.
fn terminated_reason(t: &Value) -> String {
    match (text(t, "reason"), int(t, "signal")) {
        ("", 0) => format!("ExitCode:{}", int(t, "exitCode")),
        ("", sig) => format!("Signal:{sig}"),
        (r, _) => r.to_string(),
    }
}

/// Regular containers, last to first so the first container's state wins;
/// a pod whose containers completed but one still runs reads Running or
/// NotReady rather than Completed.
fn main_containers(pod: &Value, s: &mut PodSummary) {
    let mut has_running = false;
    let mut error_reason = String::new();
    for c in list(pod, "status.containerStatuses").iter().rev() {
        s.restarts.add(c);
        let waiting = text(c, "state.waiting.reason");
        let terminated = at(c, "state.terminated").filter(|t| t.is_object());
        let running = at(c, "state.running").is_some_and(Value::is_object);
        if !waiting.is_empty() {
            s.reason = waiting.to_string();
        } else if let Some(t) = terminated {
            s.reason = terminated_reason(t);
            if int(t, "exitCode") != 0 {
                error_reason.clone_from(&s.reason);
            }
        } else if running && at(c, "ready").and_then(Value::as_bool) == Some(true) {
            has_running = true;
            s.ready += 1;
        }
    }
    if s.reason == "Completed" {
        if has_running && has_condition(pod, "Ready") {
            s.reason = "Running".into();
        } else if !error_reason.is_empty() {
            s.reason = error_reason;
        } else if has_running {
            s.reason = "NotReady".into();
        }
    }
}

/// `true/total` readiness gates, "<none>" without gates.
fn readiness_gates(pod: &Value) -> String {
    let gates = list(pod, "spec.readinessGates");
    if gates.is_empty() {
        return "<none>".into();
    }
    let passed = gates
        .iter()
        .filter(|g| has_condition(pod, text(g, "conditionType")))
        .count();
    format!("{passed}/{}", gates.len())
}

// ----- nodes, namespaces ---------------------------------------------------------------

fn node_cells(node: &Value, now: Timestamp) -> Vec<Value> {
    let info = |f: &str| -> Value {
        match text(node, &format!("status.nodeInfo.{f}")) {
            "" => json!("<unknown>"),
            v => json!(v),
        }
    };
    vec![
        name(node),
        json!(node_status(node)),
        json!(node_roles(node)),
        age(node, now),
        json!(text(node, "status.nodeInfo.kubeletVersion")),
        json!(node_address(node, "InternalIP")),
        json!(node_address(node, "ExternalIP")),
        info("osImage"),
        info("kernelVersion"),
        info("containerRuntimeVersion"),
    ]
}

/// Ready / NotReady / Unknown, plus SchedulingDisabled when cordoned.
fn node_status(node: &Value) -> String {
    let ready = list(node, "status.conditions")
        .iter()
        .rev()
        .find(|c| text(c, "type") == "Ready");
    let mut status = match ready {
        Some(c) if text(c, "status") == "True" => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if at(node, "spec.unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    status
}

/// Roles from `node-role.kubernetes.io/<role>` and `kubernetes.io/role`.
fn node_roles(node: &Value) -> String {
    let Some(labels) = at(node, "metadata.labels").and_then(Value::as_object) else {
        return "<none>".into();
    };
    let roles: BTreeSet<&str> = labels
        .iter()
        .filter_map(|(k, v)| match k.strip_prefix("node-role.kubernetes.io/") {
            Some(role) if !role.is_empty() => Some(role),
            _ if k == "kubernetes.io/role" => v.as_str().filter(|r| !r.is_empty()),
            _ => None,
        })
        .collect();
    or_none(&roles.into_iter().collect::<Vec<_>>().join(","))
}

fn node_address(node: &Value, ty: &str) -> String {
    list(node, "status.addresses")
        .iter()
        .find(|a| text(a, "type") == ty)
        .map_or_else(|| "<none>".into(), |a| text(a, "address").to_string())
}

fn namespace_cells(ns: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(ns), json!(text(ns, "status.phase")), age(ns, now)]
}

// ----- services and endpoints -------------------------------------------------------

fn service_cells(svc: &Value, now: Timestamp) -> Vec<Value> {
    // The API server defaults an omitted type to ClusterIP.
    let ty = match text(svc, "spec.type") {
        "" => "ClusterIP",
        t => t,
    };
    let cluster_ip = list(svc, "spec.clusterIPs")
        .first()
        .and_then(Value::as_str)
        .unwrap_or_else(|| text(svc, "spec.clusterIP"));
    vec![
        name(svc),
        json!(ty),
        json!(or_none(cluster_ip)),
        json!(external_ip(svc, ty)),
        json!(or_none(&service_ports(svc))),
        age(svc, now),
        json!(format_labels(at(svc, "spec.selector"))),
    ]
}

/// EXTERNAL-IP: external IPs, load-balancer ingress (or `<pending>`), or
/// the ExternalName target.
fn external_ip(svc: &Value, ty: &str) -> String {
    let external: Vec<&str> = list(svc, "spec.externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match ty {
        "ClusterIP" | "NodePort" => or_none(&external.join(",")),
        "LoadBalancer" => {
            let mut all = lb_ingress(list(svc, "status.loadBalancer.ingress"));
            all.extend(external.iter().map(|s| s.to_string()));
            if all.is_empty() {
                "<pending>".into()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => text(svc, "spec.externalName").to_string(),
        _ => "<unknown>".into(),
    }
}

/// Load-balancer ingress IPs (else hostnames), sorted and de-duplicated.
fn lb_ingress(ingress: &[Value]) -> Vec<String> {
    let set: BTreeSet<&str> = ingress
        .iter()
        .map(|i| match text(i, "ip") {
            "" => text(i, "hostname"),
            ip => ip,
        })
        .filter(|s| !s.is_empty())
        .collect();
    set.into_iter().map(str::to_string).collect()
}

/// `80/TCP,443:30443/TCP`.
fn service_ports(svc: &Value) -> String {
    let ports: Vec<String> = list(svc, "spec.ports")
        .iter()
        .map(|p| {
            let proto = match text(p, "protocol") {
                "" => "TCP",
                pr => pr,
            };
            match int(p, "nodePort") {
                n if n > 0 => format!("{}:{n}/{proto}", int(p, "port")),
                _ => format!("{}/{proto}", int(p, "port")),
            }
        })
        .collect();
    ports.join(",")
}

fn endpoints_cells(ep: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(ep), json!(format_endpoints(ep)), age(ep, now)]
}

/// First three `ip:port` pairs (bare IPs for port-less subsets) and a
/// `+ N more...` tail.
fn format_endpoints(ep: &Value) -> String {
    let subsets = list(ep, "subsets");
    if subsets.is_empty() {
        return "<none>".into();
    }
    let mut items = Vec::new();
    for ss in subsets {
        let addrs: Vec<&str> = list(ss, "addresses")
            .iter()
            .map(|a| text(a, "ip"))
            .collect();
        let ports = list(ss, "ports");
        if ports.is_empty() {
            items.extend(addrs.iter().map(|a| a.to_string()));
        }
        for p in ports {
            items.extend(addrs.iter().map(|a| join_host_port(a, int(p, "port"))));
        }
    }
    truncated(&items, 3, "")
}

fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn endpointslice_cells(es: &Value, now: Timestamp) -> Vec<Value> {
    let ports: Vec<String> = list(es, "ports")
        .iter()
        .map(
            |p| match (at(p, "port").and_then(Value::as_i64), text(p, "name")) {
                (Some(n), _) => n.to_string(),
                (None, "") => "*".into(),
                (None, n) => n.to_string(),
            },
        )
        .collect();
    let addrs: Vec<String> = list(es, "endpoints")
        .iter()
        .flat_map(|e| list(e, "addresses").iter().filter_map(Value::as_str))
        .map(str::to_string)
        .collect();
    vec![
        name(es),
        json!(text(es, "addressType")),
        json!(truncated(&ports, 3, "<unset>")),
        json!(truncated(&addrs, 3, "<unset>")),
        age(es, now),
    ]
}

// ----- config and identity -------------------------------------------------------------

fn configmap_cells(cm: &Value, now: Timestamp) -> Vec<Value> {
    let n = count(cm, "data") + count(cm, "binaryData");
    vec![name(cm), json!(n), age(cm, now)]
}

fn secret_cells(s: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(s),
        json!(text(s, "type")),
        json!(count(s, "data")),
        age(s, now),
    ]
}

fn serviceaccount_cells(sa: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(sa), json!(count(sa, "secrets")), age(sa, now)]
}

fn lease_cells(l: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(l), json!(text(l, "spec.holderIdentity")), age(l, now)]
}

// ----- events --------------------------------------------------------------------------

/// LAST SEEN TYPE REASON OBJECT [SUBOBJECT SOURCE] MESSAGE [FIRST SEEN COUNT
/// NAME], from core/v1 fields with the fallbacks Kubernetes uses (eventTime,
/// series, reportingController). events.k8s.io/v1 field names (`regarding`,
/// `note`, `deprecated*`) are read too, so either stored shape prints.
fn event_cells(ev: &Value, now: Timestamp) -> Vec<Value> {
    let first = match ts(ev, "firstTimestamp").or_else(|| ts(ev, "deprecatedFirstTimestamp")) {
        Some(t) => since(Some(t), now),
        None => since(ts(ev, "eventTime"), now),
    };
    let mut last = match ts(ev, "lastTimestamp").or_else(|| ts(ev, "deprecatedLastTimestamp")) {
        Some(t) => since(Some(t), now),
        None => first.clone(),
    };
    let mut n = int(ev, "count").max(int(ev, "deprecatedCount"));
    if at(ev, "series").is_some_and(Value::is_object) {
        last = since(ts(ev, "series.lastObservedTime"), now);
        n = int(ev, "series.count");
    } else if n == 0 {
        n = 1;
    }
    vec![
        json!(last),
        json!(text(ev, "type")),
        json!(text(ev, "reason")),
        json!(event_object(ev)),
        json!(either(
            ev,
            "involvedObject.fieldPath",
            "regarding.fieldPath"
        )),
        json!(event_source(ev)),
        json!(either(ev, "message", "note").trim()),
        json!(first),
        json!(n),
        name(ev),
    ]
}

/// The core/v1 field, else its events.k8s.io/v1 counterpart.
fn either<'a>(ev: &'a Value, core: &str, new: &str) -> &'a str {
    match text(ev, core) {
        "" => text(ev, new),
        v => v,
    }
}

/// `kind/name` in lower-case kind, or just the kind.
fn event_object(ev: &Value) -> String {
    let kind = either(ev, "involvedObject.kind", "regarding.kind").to_lowercase();
    match either(ev, "involvedObject.name", "regarding.name") {
        "" => kind,
        n => format!("{kind}/{n}"),
    }
}

/// `component, host`, with the reporting controller/instance as fallbacks.
fn event_source(ev: &Value) -> String {
    let first_of = |paths: [&str; 3]| {
        paths
            .iter()
            .map(|p| text(ev, p))
            .find(|v| !v.is_empty())
            .unwrap_or("")
    };
    let component = first_of([
        "source.component",
        "deprecatedSource.component",
        "reportingController",
    ]);
    match first_of(["source.host", "deprecatedSource.host", "reportingInstance"]) {
        "" => component.to_string(),
        host => format!("{component}, {host}"),
    }
}

// ----- storage -----------------------------------------------------------------------------

/// `RWO,ROX,RWX,RWOP` in that fixed order.
fn access_modes(modes: &[Value]) -> String {
    let has = |m: &str| modes.iter().any(|v| v.as_str() == Some(m));
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(m, _)| has(m))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

/// The beta annotation still overrides `spec.storageClassName`.
fn storage_class(obj: &Value) -> String {
    let annotation = at(obj, "metadata.annotations")
        .and_then(|a| a.get("volume.beta.kubernetes.io/storage-class"))
        .and_then(Value::as_str);
    annotation
        .unwrap_or_else(|| text(obj, "spec.storageClassName"))
        .to_string()
}

fn text_or(obj: &Value, path: &str, default: &str) -> String {
    match text(obj, path) {
        "" => default.to_string(),
        v => v.to_string(),
    }
}

fn pv_cells(pv: &Value, now: Timestamp) -> Vec<Value> {
    let claim = match at(pv, "spec.claimRef") {
        Some(c) if c.is_object() => format!("{}/{}", text(c, "namespace"), text(c, "name")),
        _ => String::new(),
    };
    let phase = if deleting(pv) {
        "Terminating"
    } else {
        text(pv, "status.phase")
    };
    vec![
        name(pv),
        json!(scalar(at(pv, "spec.capacity.storage")).unwrap_or_else(|| "0".into())),
        json!(access_modes(list(pv, "spec.accessModes"))),
        json!(text(pv, "spec.persistentVolumeReclaimPolicy")),
        json!(phase),
        json!(claim),
        json!(storage_class(pv)),
        json!(text_or(pv, "spec.volumeAttributesClassName", "<unset>")),
        json!(text(pv, "status.reason")),
        age(pv, now),
        json!(text_or(pv, "spec.volumeMode", "<unset>")),
    ]
}

fn pvc_cells(pvc: &Value, now: Timestamp) -> Vec<Value> {
    let phase = if deleting(pvc) {
        "Terminating"
    } else {
        text(pvc, "status.phase")
    };
    let volume = text(pvc, "spec.volumeName");
    // Capacity and modes are only meaningful once bound.
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (
            scalar(at(pvc, "status.capacity.storage")).unwrap_or_else(|| "0".into()),
            access_modes(list(pvc, "status.accessModes")),
        )
    };
    vec![
        name(pvc),
        json!(phase),
        json!(volume),
        json!(capacity),
        json!(modes),
        json!(storage_class(pvc)),
        json!(text_or(pvc, "spec.volumeAttributesClassName", "<unset>")),
        age(pvc, now),
        json!(text_or(pvc, "spec.volumeMode", "<unset>")),
    ]
}

fn storageclass_cells(sc: &Value, now: Timestamp) -> Vec<Value> {
    let annotations = at(sc, "metadata.annotations");
    let is_default = [
        "storageclass.kubernetes.io/is-default-class",
        "storageclass.beta.kubernetes.io/is-default-class",
    ]
    .iter()
    .any(|k| annotations.and_then(|a| a.get(k)).and_then(Value::as_str) == Some("true"));
    let mut n = text(sc, "metadata.name").to_string();
    if is_default {
        n.push_str(" (default)");
    }
    let expand = at(sc, "allowVolumeExpansion").and_then(Value::as_bool) == Some(true);
    vec![
        json!(n),
        json!(text(sc, "provisioner")),
        json!(text_or(sc, "reclaimPolicy", "Delete")),
        json!(text_or(sc, "volumeBindingMode", "Immediate")),
        json!(expand),
        age(sc, now),
    ]
}

fn quota_cells(q: &Value, now: Timestamp) -> Vec<Value> {
    let (mut requests, mut limits) = (Vec::new(), Vec::new());
    if let Some(hard) = at(q, "status.hard").and_then(Value::as_object) {
        let mut names: Vec<&String> = hard.keys().collect();
        names.sort();
        for r in names {
            let used =
                scalar(at(q, "status.used").and_then(|u| u.get(r))).unwrap_or_else(|| "0".into());
            let limit = scalar(hard.get(r)).unwrap_or_else(|| "0".into());
            let item = format!("{r}: {used}/{limit}");
            if r.starts_with("limits.") {
                limits.push(item);
            } else {
                requests.push(item);
            }
        }
    }
    vec![
        name(q),
        json!(requests.join(", ")),
        json!(limits.join(", ")),
        age(q, now),
    ]
}

// ----- workloads ---------------------------------------------------------------------------

fn deployment_cells(d: &Value, now: Timestamp) -> Vec<Value> {
    let selector = match LabelSelector::from_json(at(d, "spec.selector").unwrap_or(&Value::Null)) {
        Ok(s) => s.to_string(),
        Err(_) => "<invalid>".into(),
    };
    let [names, images] = container_cells(at(d, "spec.template.spec"));
    vec![
        name(d),
        json!(format!(
            "{}/{}",
            int(d, "status.readyReplicas"),
            desired_replicas(d)
        )),
        json!(int(d, "status.updatedReplicas")),
        json!(int(d, "status.availableReplicas")),
        age(d, now),
        names,
        images,
        json!(selector),
    ]
}

fn replicaset_cells(rs: &Value, now: Timestamp) -> Vec<Value> {
    let [names, images] = container_cells(at(rs, "spec.template.spec"));
    vec![
        name(rs),
        json!(desired_replicas(rs)),
        json!(int(rs, "status.replicas")),
        json!(int(rs, "status.readyReplicas")),
        age(rs, now),
        names,
        images,
        json!(format_selector(at(rs, "spec.selector"))),
    ]
}

/// ReplicationControllers select with a plain label map.
fn rc_cells(rc: &Value, now: Timestamp) -> Vec<Value> {
    let mut cells = replicaset_cells(rc, now);
    if let Some(last) = cells.last_mut() {
        *last = json!(format_labels(at(rc, "spec.selector")));
    }
    cells
}

fn statefulset_cells(ss: &Value, now: Timestamp) -> Vec<Value> {
    let [names, images] = container_cells(at(ss, "spec.template.spec"));
    vec![
        name(ss),
        json!(format!(
            "{}/{}",
            int(ss, "status.readyReplicas"),
            desired_replicas(ss)
        )),
        age(ss, now),
        names,
        images,
    ]
}

fn daemonset_cells(ds: &Value, now: Timestamp) -> Vec<Value> {
    let [names, images] = container_cells(at(ds, "spec.template.spec"));
    vec![
        name(ds),
        json!(int(ds, "status.desiredNumberScheduled")),
        json!(int(ds, "status.currentNumberScheduled")),
        json!(int(ds, "status.numberReady")),
        json!(int(ds, "status.updatedNumberScheduled")),
        json!(int(ds, "status.numberAvailable")),
        json!(format_labels(at(ds, "spec.template.spec.nodeSelector"))),
        age(ds, now),
        names,
        images,
        json!(format_selector(at(ds, "spec.selector"))),
    ]
}

fn job_cells(job: &Value, now: Timestamp) -> Vec<Value> {
    let [names, images] = container_cells(at(job, "spec.template.spec"));
    vec![
        name(job),
        json!(job_status(job)),
        json!(job_completions(job)),
        json!(job_duration(job, now)),
        age(job, now),
        names,
        images,
        json!(format_selector(at(job, "spec.selector"))),
    ]
}

fn job_status(job: &Value) -> &'static str {
    match () {
        _ if has_condition(job, "Complete") => "Complete",
        _ if has_condition(job, "Failed") => "Failed",
        _ if deleting(job) => "Terminating",
        _ if has_condition(job, "Suspended") => "Suspended",
        _ if has_condition(job, "FailureTarget") => "FailureTarget",
        _ if has_condition(job, "SuccessCriteriaMet") => "SuccessCriteriaMet",
        _ => "Running",
    }
}

/// `succeeded/completions`, `succeeded/1 of parallelism` for work queues.
fn job_completions(job: &Value) -> String {
    let done = int(job, "status.succeeded");
    match at(job, "spec.completions").and_then(Value::as_i64) {
        Some(c) => format!("{done}/{c}"),
        None => match int(job, "spec.parallelism") {
            p if p > 1 => format!("{done}/1 of {p}"),
            _ => format!("{done}/1"),
        },
    }
}

/// Start to completion, or start to now while running; "" before start.
fn job_duration(job: &Value, now: Timestamp) -> String {
    match (
        ts(job, "status.startTime"),
        ts(job, "status.completionTime"),
    ) {
        (None, _) => String::new(),
        (Some(start), None) => human_secs(secs_between(start, now)),
        (Some(start), Some(end)) => human_secs(secs_between(start, end)),
    }
}

fn cronjob_cells(cj: &Value, now: Timestamp) -> Vec<Value> {
    let last = match ts(cj, "status.lastScheduleTime") {
        Some(t) => since(Some(t), now),
        None if at(cj, "status.lastScheduleTime").is_some_and(|v| !v.is_null()) => {
            "<unknown>".into()
        }
        None => "<none>".into(),
    };
    let suspend = match at(cj, "spec.suspend").and_then(Value::as_bool) {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    };
    let job_spec = at(cj, "spec.jobTemplate.spec");
    let [names, images] = container_cells(job_spec.and_then(|s| at(s, "template.spec")));
    vec![
        name(cj),
        json!(text(cj, "spec.schedule")),
        json!(text_or(cj, "spec.timeZone", "<none>")),
        json!(suspend),
        json!(count(cj, "status.active")),
        json!(last),
        age(cj, now),
        names,
        images,
        json!(format_selector(job_spec.and_then(|s| s.get("selector")))),
    ]
}

fn podtemplate_cells(pt: &Value, _now: Timestamp) -> Vec<Value> {
    let [names, images] = container_cells(at(pt, "template.spec"));
    vec![
        name(pt),
        names,
        images,
        json!(format_labels(at(pt, "template.metadata.labels"))),
    ]
}

fn revision_cells(cr: &Value, now: Timestamp) -> Vec<Value> {
    let owner = list(cr, "metadata.ownerReferences")
        .iter()
        .find(|o| at(o, "controller").and_then(Value::as_bool) == Some(true));
    let controller = owner.map_or_else(
        || "<none>".to_string(),
        |o| {
            let group = text(o, "apiVersion")
                .rsplit_once('/')
                .map_or("", |(g, _)| g);
            let kind = match group {
                "" => text(o, "kind").to_string(),
                g => format!("{}.{g}", text(o, "kind")),
            };
            format!("{}/{}", kind.to_lowercase(), text(o, "name"))
        },
    );
    vec![
        name(cr),
        json!(controller),
        json!(int(cr, "revision")),
        age(cr, now),
    ]
}

// ----- autoscaling and policy ----------------------------------------------------------

fn hpa_cells(hpa: &Value, now: Timestamp) -> Vec<Value> {
    let reference = format!(
        "{}/{}",
        text(hpa, "spec.scaleTargetRef.kind"),
        text(hpa, "spec.scaleTargetRef.name")
    );
    let min = at(hpa, "spec.minReplicas")
        .and_then(Value::as_i64)
        .map_or_else(|| "<unset>".into(), |n| n.to_string());
    vec![
        name(hpa),
        json!(reference),
        json!(hpa_targets(hpa)),
        json!(min),
        json!(int(hpa, "spec.maxReplicas")),
        json!(int(hpa, "status.currentReplicas")),
        age(hpa, now),
    ]
}

/// autoscaling/v2 metrics as `cpu: 40%/80%`, `1k/2k (avg)`, at most two.
fn hpa_targets(hpa: &Value) -> String {
    let specs = list(hpa, "spec.metrics");
    if specs.is_empty() {
        return hpa_v1_target(hpa);
    }
    let statuses = list(hpa, "status.currentMetrics");
    let items: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| hpa_metric(spec, statuses.get(i)))
        .collect();
    let shown = items[..items.len().min(2)].join(", ");
    if items.len() > 2 {
        format!("{shown} + {} more...", items.len() - 2)
    } else {
        shown
    }
}

/// autoscaling/v1 objects carry only a CPU utilization target.
fn hpa_v1_target(hpa: &Value) -> String {
    match at(hpa, "spec.targetCPUUtilizationPercentage").and_then(Value::as_i64) {
        None => "<none>".into(),
        Some(t) => {
            let cur = at(hpa, "status.currentCPUUtilizationPercentage")
                .and_then(Value::as_i64)
                .map_or_else(|| "<unknown>".into(), |c| format!("{c}%"));
            format!("cpu: {cur}/{t}%")
        }
    }
}

fn hpa_metric(spec: &Value, status: Option<&Value>) -> String {
    let source = |ty: &str| -> &str {
        match ty {
            "Resource" => "resource",
            "ContainerResource" => "containerResource",
            "Pods" => "pods",
            "Object" => "object",
            _ => "external",
        }
    };
    let ty = text(spec, "type");
    if !matches!(
        ty,
        "Resource" | "ContainerResource" | "Pods" | "Object" | "External"
    ) {
        return "<unknown type>".into();
    }
    let key = source(ty);
    let target = at(spec, &format!("{key}.target")).unwrap_or(&Value::Null);
    let current = status.and_then(|s| at(s, &format!("{key}.current")));
    let cur = |field: &str| {
        scalar(current.and_then(|c| c.get(field))).unwrap_or_else(|| "<unknown>".into())
    };
    let avg = scalar(target.get("averageValue"));
    match (ty, avg) {
        ("Resource" | "ContainerResource", Some(avg)) => {
            format!(
                "{}: {}/{avg}",
                text(spec, &format!("{key}.name")),
                cur("averageValue")
            )
        }
        ("Resource" | "ContainerResource", None) => {
            let pct =
                |v: Option<String>, d: &str| v.map_or_else(|| d.to_string(), |v| format!("{v}%"));
            let c = pct(
                scalar(current.and_then(|c| c.get("averageUtilization"))),
                "<unknown>",
            );
            let t = pct(scalar(target.get("averageUtilization")), "<auto>");
            format!("{}: {c}/{t}", text(spec, &format!("{key}.name")))
        }
        ("Pods", avg) => format!("{}/{}", cur("averageValue"), avg.unwrap_or_default()),
        (_, Some(avg)) => format!("{}/{avg} (avg)", cur("averageValue")),
        (_, None) => {
            let value = scalar(target.get("value")).unwrap_or_default();
            format!("{}/{value}", cur("value"))
        }
    }
}

fn pdb_cells(pdb: &Value, now: Timestamp) -> Vec<Value> {
    let field = |p: &str| scalar(at(pdb, p)).unwrap_or_else(|| "N/A".into());
    vec![
        name(pdb),
        json!(field("spec.minAvailable")),
        json!(field("spec.maxUnavailable")),
        json!(int(pdb, "status.disruptionsAllowed")),
        age(pdb, now),
    ]
}

fn priorityclass_cells(pc: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(pc),
        json!(int(pc, "value")),
        json!(at(pc, "globalDefault")
            .and_then(Value::as_bool)
            .unwrap_or(false)),
        age(pc, now),
        json!(text(pc, "preemptionPolicy")),
    ]
}

fn runtimeclass_cells(rc: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(rc), json!(text(rc, "handler")), age(rc, now)]
}

fn webhook_cells(w: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(w), json!(count(w, "webhooks")), age(w, now)]
}

/// ROLE as `Kind/name`; wide columns list users, groups and
/// `namespace/name` service accounts.
fn binding_cells(b: &Value, now: Timestamp) -> Vec<Value> {
    let subjects = list(b, "subjects");
    let of_kind = |kind: &str| -> Value {
        let names: Vec<String> = subjects
            .iter()
            .filter(|s| text(s, "kind") == kind)
            .map(|s| match kind {
                "ServiceAccount" => format!("{}/{}", text(s, "namespace"), text(s, "name")),
                _ => text(s, "name").to_string(),
            })
            .collect();
        json!(names.join(", "))
    };
    vec![
        name(b),
        json!(format!(
            "{}/{}",
            text(b, "roleRef.kind"),
            text(b, "roleRef.name")
        )),
        age(b, now),
        of_kind("User"),
        of_kind("Group"),
        of_kind("ServiceAccount"),
    ]
}

// ----- networking -----------------------------------------------------------------------

fn ingress_cells(ing: &Value, now: Timestamp) -> Vec<Value> {
    let ports = if list(ing, "spec.tls").is_empty() {
        "80"
    } else {
        "80, 443"
    };
    vec![
        name(ing),
        json!(text_or(ing, "spec.ingressClassName", "<none>")),
        json!(ingress_hosts(list(ing, "spec.rules"))),
        json!(lb_ingress(list(ing, "status.loadBalancer.ingress")).join(",")),
        json!(ports),
        age(ing, now),
    ]
}

/// The first three rule hosts, `*` when no rule names one, and a
/// `+ N more...` tail counted over rules, as Kubernetes prints it.
fn ingress_hosts(rules: &[Value]) -> String {
    let mut hosts = Vec::new();
    let mut more = false;
    for r in rules {
        if hosts.len() == 3 {
            more = true;
            break;
        }
        match text(r, "host") {
            "" => {}
            h => hosts.push(h),
        }
    }
    if hosts.is_empty() {
        return "*".into();
    }
    let shown = hosts.join(",");
    if more {
        format!("{shown} + {} more...", rules.len().saturating_sub(3))
    } else {
        shown
    }
}

fn ingressclass_cells(ic: &Value, now: Timestamp) -> Vec<Value> {
    let params = match at(ic, "spec.parameters") {
        Some(p) if p.is_object() => {
            let group = match text(p, "apiGroup") {
                "" => String::new(),
                g => format!(".{g}"),
            };
            format!("{}{group}/{}", text(p, "kind"), text(p, "name"))
        }
        _ => "<none>".into(),
    };
    vec![
        name(ic),
        json!(text(ic, "spec.controller")),
        json!(params),
        age(ic, now),
    ]
}

fn netpol_cells(np: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(np),
        json!(format_selector(at(np, "spec.podSelector"))),
        age(np, now),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-11-22T12:00:00Z"
            .parse()
            .unwrap_or(Timestamp::UNIX_EPOCH)
    }

    /// An ISO timestamp `secs` before `now()`.
    fn ago(secs: i64) -> String {
        let t = Timestamp::from_second(now().as_second() - secs).unwrap_or(Timestamp::UNIX_EPOCH);
        t.to_string()
    }

    fn meta(name: &str) -> Value {
        json!({"name": name, "namespace": "default", "creationTimestamp": ago(6)})
    }

    fn cell(resource: &str, obj: &Value, col: &str) -> Value {
        let cols = column_definitions(resource);
        let i = cols
            .iter()
            .position(|c| c["name"] == col)
            .unwrap_or(usize::MAX);
        row_cells(resource, obj, now())
            .get(i)
            .cloned()
            .unwrap_or(Value::Null)
    }

    fn running_pod() -> Value {
        json!({
            "metadata": meta("x"),
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "nginx"}]},
            "status": {
                "phase": "Running", "podIP": "10.0.0.166",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0,
                                        "state": {"running": {"startedAt": ago(6)}}}]
            }
        })
    }

    fn with_container_state(state: Value, ready: bool) -> Value {
        let mut p = running_pod();
        p["status"]["containerStatuses"][0]["state"] = state;
        p["status"]["containerStatuses"][0]["ready"] = json!(ready);
        p
    }

    #[test]
    fn human_age_matches_kubectl() {
        let cases = [
            (0, "0s"),
            (6, "6s"),
            (119, "119s"),
            (120, "2m"),
            (330, "5m30s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600 + 12 * 60, "3h12m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (48 * 3600, "2d"),
            (53 * 3600, "2d5h"),
            (8 * 86400, "8d"),
            (730 * 86400, "2y"),
            (750 * 86400, "2y20d"),
            (9 * 365 * 86400, "9y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_age(Duration::from_secs(secs)), want, "{secs}s");
        }
        assert_eq!(
            human_age(Duration::MAX),
            format!("{}y", i64::MAX / 86400 / 365)
        );
        assert_eq!(human_secs(-1), "0s");
        assert_eq!(human_secs(-5), "<invalid>");
    }

    #[test]
    fn pod_columns_and_running_row() {
        let cols = column_definitions("pods");
        assert_eq!(
            cols[0],
            json!({"name": "Name", "type": "string", "format": "name",
                                   "description": "Name must be unique within a namespace.", "priority": 0})
        );
        let wide: Vec<&Value> = cols
            .iter()
            .filter(|c| c["priority"] == 1)
            .map(|c| &c["name"])
            .collect();
        assert_eq!(wide, ["IP", "Node", "Nominated Node", "Readiness Gates"]);
        let row = row_cells("pods", &running_pod(), now());
        assert_eq!(
            row,
            vec![
                json!("x"),
                json!("1/1"),
                json!("Running"),
                json!("0"),
                json!("6s"),
                json!("10.0.0.166"),
                json!("n1"),
                json!("<none>"),
                json!("<none>")
            ]
        );
    }

    #[test]
    fn pod_status_reasons() {
        let pending = json!({"metadata": meta("p"), "spec": {"containers": [{"name": "c"}]},
                             "status": {"phase": "Pending"}});
        assert_eq!(cell("pods", &pending, "Status"), "Pending");
        assert_eq!(cell("pods", &pending, "Ready"), "0/1");
        assert_eq!(cell("pods", &pending, "IP"), "<none>");

        let creating =
            with_container_state(json!({"waiting": {"reason": "ContainerCreating"}}), false);
        assert_eq!(cell("pods", &creating, "Status"), "ContainerCreating");
        assert_eq!(cell("pods", &creating, "Ready"), "0/1");

        let crash = with_container_state(json!({"waiting": {"reason": "CrashLoopBackOff"}}), false);
        assert_eq!(cell("pods", &crash, "Status"), "CrashLoopBackOff");

        let mut done = with_container_state(
            json!({"terminated": {"exitCode": 0, "reason": "Completed"}}),
            false,
        );
        done["status"]["phase"] = json!("Succeeded");
        assert_eq!(cell("pods", &done, "Status"), "Completed");

        let failed = with_container_state(json!({"terminated": {"exitCode": 137}}), false);
        assert_eq!(cell("pods", &failed, "Status"), "ExitCode:137");
        let killed =
            with_container_state(json!({"terminated": {"exitCode": 1, "signal": 9}}), false);
        assert_eq!(cell("pods", &killed, "Status"), "Signal:9");

        let mut terminating = running_pod();
        terminating["metadata"]["deletionTimestamp"] = json!(ago(1));
        assert_eq!(cell("pods", &terminating, "Status"), "Terminating");
        terminating["status"]["reason"] = json!("NodeLost");
        assert_eq!(cell("pods", &terminating, "Status"), "Unknown");
        done["metadata"]["deletionTimestamp"] = json!(ago(1));
        assert_eq!(cell("pods", &done, "Status"), "Completed");
    }

    #[test]
    fn pod_completed_container_with_running_sibling() {
        let mut p = running_pod();
        p["spec"]["containers"] = json!([{"name": "a"}, {"name": "b"}]);
        p["status"]["containerStatuses"] = json!([
            {"name": "a", "ready": false, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            {"name": "b", "ready": true, "state": {"running": {}}}
        ]);
        assert_eq!(cell("pods", &p, "Status"), "Running");
        assert_eq!(cell("pods", &p, "Ready"), "1/2");
        p["status"]["conditions"] = json!([]);
        assert_eq!(cell("pods", &p, "Status"), "NotReady");
    }

    #[test]
    fn pod_init_containers() {
        let mut p = json!({
            "metadata": meta("i"),
            "spec": {"initContainers": [{"name": "init"}], "containers": [{"name": "c"}]},
            "status": {"phase": "Pending",
                       "initContainerStatuses": [{"name": "init", "restartCount": 0,
                                                  "state": {"running": {}}}],
                       "containerStatuses": [{"name": "c", "state": {"waiting": {"reason": "PodInitializing"}}}]}
        });
        assert_eq!(cell("pods", &p, "Status"), "Init:0/1");
        p["status"]["initContainerStatuses"][0]["state"] =
            json!({"waiting": {"reason": "CrashLoopBackOff"}});
        assert_eq!(cell("pods", &p, "Status"), "Init:CrashLoopBackOff");
        p["status"]["initContainerStatuses"][0]["state"] = json!({"terminated": {"exitCode": 2}});
        assert_eq!(cell("pods", &p, "Status"), "Init:ExitCode:2");
        p["status"]["initContainerStatuses"][0]["state"] = json!({"terminated": {"exitCode": 0}});
        assert_eq!(cell("pods", &p, "Status"), "PodInitializing");
    }

    #[test]
    fn pod_sidecar_counts_towards_ready() {
        let p = json!({
            "metadata": meta("s"),
            "spec": {"initContainers": [{"name": "side", "restartPolicy": "Always"}],
                     "containers": [{"name": "c"}]},
            "status": {"phase": "Running",
                       "conditions": [{"type": "Initialized", "status": "True"}],
                       "initContainerStatuses": [{"name": "side", "started": true, "ready": true,
                                                  "restartCount": 2, "state": {"running": {}}}],
                       "containerStatuses": [{"name": "c", "ready": true, "restartCount": 1,
                                              "state": {"running": {}}}]}
        });
        assert_eq!(cell("pods", &p, "Ready"), "2/2");
        assert_eq!(cell("pods", &p, "Status"), "Running");
        assert_eq!(cell("pods", &p, "Restarts"), "3");
    }

    #[test]
    fn pod_restarts_with_last_restart_age() {
        let mut p = running_pod();
        p["status"]["containerStatuses"][0]["restartCount"] = json!(5);
        p["status"]["containerStatuses"][0]["lastState"] =
            json!({"terminated": {"exitCode": 1, "finishedAt": ago(300)}});
        assert_eq!(cell("pods", &p, "Restarts"), "5 (5m ago)");
    }

    #[test]
    fn pod_wide_columns() {
        let mut p = running_pod();
        p["status"]["podIPs"] = json!([{"ip": "fd00::1"}]);
        p["status"]["nominatedNodeName"] = json!("n2");
        p["spec"]["readinessGates"] = json!([{"conditionType": "g1"}, {"conditionType": "g2"}]);
        p["status"]["conditions"] =
            json!([{"type": "g1", "status": "True"}, {"type": "Ready", "status": "True"}]);
        assert_eq!(cell("pods", &p, "IP"), "fd00::1");
        assert_eq!(cell("pods", &p, "Nominated Node"), "n2");
        assert_eq!(cell("pods", &p, "Readiness Gates"), "1/2");
    }

    #[test]
    fn deployment_row() {
        let d = json!({
            "metadata": meta("web"),
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"spec": {"containers": [{"name": "a", "image": "nginx:1"},
                                                          {"name": "b", "image": "busybox"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
        });
        assert_eq!(
            row_cells("deployments", &d, now()),
            vec![
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("6s"),
                json!("a,b"),
                json!("nginx:1,busybox"),
                json!("app=web")
            ]
        );
        let bare = json!({"metadata": {"name": "b"}});
        assert_eq!(
            row_cells("deployments", &bare, now()),
            vec![
                json!("b"),
                json!("0/1"),
                json!(0),
                json!(0),
                json!("<unknown>"),
                json!(""),
                json!(""),
                json!("")
            ]
        );
    }

    #[test]
    fn replicaset_statefulset_daemonset_rc_rows() {
        let rs = json!({"metadata": meta("rs"), "spec": {"replicas": 2, "selector": {}},
                        "status": {"replicas": 2, "readyReplicas": 1}});
        assert_eq!(
            &row_cells("replicasets", &rs, now())[..5],
            &[json!("rs"), json!(2), json!(2), json!(1), json!("6s")]
        );
        assert_eq!(cell("replicasets", &rs, "Selector"), "<none>");
        let rc = json!({"metadata": meta("rc"), "spec": {"replicas": 1, "selector": {"b": "2", "a": "1"}}});
        assert_eq!(cell("replicationcontrollers", &rc, "Selector"), "a=1,b=2");
        let ss = json!({"metadata": meta("db"), "spec": {"replicas": 3}, "status": {"readyReplicas": 3}});
        assert_eq!(cell("statefulsets", &ss, "Ready"), "3/3");
        let ds = json!({"metadata": meta("ds"),
                        "spec": {"template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}}}},
                        "status": {"desiredNumberScheduled": 2, "numberReady": 1}});
        assert_eq!(cell("daemonsets", &ds, "Desired"), 2);
        assert_eq!(cell("daemonsets", &ds, "Ready"), 1);
        assert_eq!(
            cell("daemonsets", &ds, "Node Selector"),
            "kubernetes.io/os=linux"
        );
    }

    #[test]
    fn service_rows() {
        let svc = json!({
            "metadata": meta("web"),
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                     "ports": [{"port": 80, "protocol": "TCP"},
                               {"port": 443, "nodePort": 30443, "protocol": "TCP"}],
                     "selector": {"app": "web"}}
        });
        assert_eq!(
            row_cells("services", &svc, now()),
            vec![
                json!("web"),
                json!("NodePort"),
                json!("10.96.0.10"),
                json!("<none>"),
                json!("80/TCP,443:30443/TCP"),
                json!("6s"),
                json!("app=web")
            ]
        );
        let lb = json!({"metadata": meta("lb"), "spec": {"type": "LoadBalancer", "ports": [{"port": 53, "protocol": "UDP"}]}});
        assert_eq!(cell("services", &lb, "External-IP"), "<pending>");
        assert_eq!(cell("services", &lb, "Cluster-IP"), "<none>");
        assert_eq!(cell("services", &lb, "Port(s)"), "53/UDP");
        let mut lb2 = lb.clone();
        lb2["status"] =
            json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}, {"hostname": "a.example"}]}});
        assert_eq!(cell("services", &lb2, "External-IP"), "1.2.3.4,a.example");
        let ext = json!({"metadata": meta("e"), "spec": {"type": "ExternalName", "externalName": "db.example"}});
        assert_eq!(cell("services", &ext, "External-IP"), "db.example");
        assert_eq!(cell("services", &ext, "Port(s)"), "<none>");
        assert_eq!(cell("services", &ext, "Selector"), "<none>");
    }

    #[test]
    fn endpoints_and_slices() {
        let ep = json!({"metadata": meta("web"), "subsets": [{
            "addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "10.0.0.3"}, {"ip": "fd00::4"}],
            "ports": [{"port": 80}]}]});
        assert_eq!(
            cell("endpoints", &ep, "Endpoints"),
            "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 1 more..."
        );
        let none = json!({"metadata": meta("x")});
        assert_eq!(cell("endpoints", &none, "Endpoints"), "<none>");
        let es = json!({"metadata": meta("web-abc"), "addressType": "IPv4",
                        "ports": [{"port": 80, "name": "http"}, {"name": "x"}],
                        "endpoints": [{"addresses": ["10.0.0.1"]}]});
        assert_eq!(
            row_cells("endpointslices", &es, now()),
            vec![
                json!("web-abc"),
                json!("IPv4"),
                json!("80,x"),
                json!("10.0.0.1"),
                json!("6s")
            ]
        );
        assert_eq!(cell("endpointslices", &none, "Endpoints"), "<unset>");
    }

    #[test]
    fn node_rows() {
        let node = json!({
            "metadata": {"name": "n1", "creationTimestamp": ago(3 * 86400),
                         "labels": {"node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "worker"}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": "192.168.1.5"}],
                       "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian"}}
        });
        assert_eq!(
            row_cells("nodes", &node, now()),
            vec![
                json!("n1"),
                json!("Ready,SchedulingDisabled"),
                json!("control-plane,worker"),
                json!("3d"),
                json!("v1.33.0"),
                json!("192.168.1.5"),
                json!("<none>"),
                json!("Debian"),
                json!("<unknown>"),
                json!("<unknown>")
            ]
        );
        let bare = json!({"metadata": {"name": "n2"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        assert_eq!(cell("nodes", &bare, "Status"), "NotReady");
        assert_eq!(cell("nodes", &bare, "Roles"), "<none>");
        assert_eq!(cell("nodes", &json!({}), "Status"), "Unknown");
    }

    #[test]
    fn config_and_identity_rows() {
        let cm = json!({"metadata": meta("c"), "data": {"a": "1"}, "binaryData": {"b": "AA=="}});
        assert_eq!(
            row_cells("configmaps", &cm, now()),
            vec![json!("c"), json!(2), json!("6s")]
        );
        let s = json!({"metadata": meta("s"), "type": "Opaque", "data": {"k": "dg=="}});
        assert_eq!(
            row_cells("secrets", &s, now()),
            vec![json!("s"), json!("Opaque"), json!(1), json!("6s")]
        );
        let sa = json!({"metadata": meta("default")});
        assert_eq!(
            row_cells("serviceaccounts", &sa, now()),
            vec![json!("default"), json!(0), json!("6s")]
        );
        let ns = json!({"metadata": meta("kube-system"), "status": {"phase": "Active"}});
        assert_eq!(
            row_cells("namespaces", &ns, now()),
            vec![json!("kube-system"), json!("Active"), json!("6s")]
        );
        let lease = json!({"metadata": meta("l"), "spec": {"holderIdentity": "node-1"}});
        assert_eq!(cell("leases", &lease, "Holder"), "node-1");
    }

    #[test]
    fn event_rows() {
        let ev = json!({
            "metadata": meta("x.123"), "type": "Normal", "reason": "Scheduled",
            "message": "Successfully assigned default/x to n1 ", "count": 0,
            "involvedObject": {"kind": "Pod", "name": "x", "fieldPath": "spec.containers{c}"},
            "source": {"component": "default-scheduler"},
            "firstTimestamp": ago(300), "lastTimestamp": ago(60)
        });
        assert_eq!(
            row_cells("events", &ev, now()),
            vec![
                json!("60s"),
                json!("Normal"),
                json!("Scheduled"),
                json!("pod/x"),
                json!("spec.containers{c}"),
                json!("default-scheduler"),
                json!("Successfully assigned default/x to n1"),
                json!("5m"),
                json!(1),
                json!("x.123")
            ]
        );
        let cols = column_definitions("events");
        assert_eq!(cols[0]["name"], "Last Seen");
        assert_eq!(
            cols[9],
            json!({"name": "Name", "type": "string", "format": "name",
                                   "description": "Name of the event object.", "priority": 1})
        );
        let series = json!({"eventTime": ago(120), "series": {"count": 4, "lastObservedTime": ago(10)},
                            "reportingController": "kubelet", "reportingInstance": "n1"});
        let row = row_cells("events", &series, now());
        assert_eq!(row[0], "10s");
        assert_eq!(row[5], "kubelet, n1");
        assert_eq!(row[7], "2m");
        assert_eq!(row[8], 4);
        let v1 = json!({"regarding": {"kind": "Deployment", "name": "web"}, "note": "Scaled up",
                        "deprecatedCount": 3, "deprecatedFirstTimestamp": ago(600),
                        "deprecatedLastTimestamp": ago(30), "deprecatedSource": {"component": "dc"}});
        let row = row_cells("events", &v1, now());
        assert_eq!(row[0], "30s");
        assert_eq!(row[3], "deployment/web");
        assert_eq!(row[5], "dc");
        assert_eq!(row[6], "Scaled up");
        assert_eq!(row[7], "10m");
        assert_eq!(row[8], 3);
    }

    #[test]
    fn job_and_cronjob_rows() {
        let job = json!({
            "metadata": meta("pi"), "spec": {"completions": 1, "selector": {"matchLabels": {"job": "pi"}}},
            "status": {"succeeded": 1, "startTime": ago(100), "completionTime": ago(70),
                       "conditions": [{"type": "Complete", "status": "True"}]}
        });
        assert_eq!(
            &row_cells("jobs", &job, now())[..5],
            &[
                json!("pi"),
                json!("Complete"),
                json!("1/1"),
                json!("30s"),
                json!("6s")
            ]
        );
        assert_eq!(cell("jobs", &job, "Selector"), "job=pi");
        let running = json!({"metadata": meta("q"), "spec": {"parallelism": 3}, "status": {"startTime": ago(200)}});
        assert_eq!(cell("jobs", &running, "Status"), "Running");
        assert_eq!(cell("jobs", &running, "Completions"), "0/1 of 3");
        assert_eq!(cell("jobs", &running, "Duration"), "3m20s");
        let cj = json!({"metadata": meta("c"), "spec": {"schedule": "*/5 * * * *", "suspend": false},
                        "status": {"active": [{"name": "c-1"}], "lastScheduleTime": ago(180)}});
        assert_eq!(
            &row_cells("cronjobs", &cj, now())[..7],
            &[
                json!("c"),
                json!("*/5 * * * *"),
                json!("<none>"),
                json!("False"),
                json!(1),
                json!("3m"),
                json!("6s")
            ]
        );
        let bare = json!({"metadata": meta("d")});
        assert_eq!(cell("cronjobs", &bare, "Last Schedule"), "<none>");
        assert_eq!(cell("cronjobs", &bare, "Suspend"), "<unset>");
    }

    #[test]
    fn storage_rows() {
        let pv = json!({"metadata": meta("pv1"),
                        "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
                                 "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "fast",
                                 "claimRef": {"namespace": "default", "name": "data"}},
                        "status": {"phase": "Bound"}});
        assert_eq!(
            row_cells("persistentvolumes", &pv, now()),
            vec![
                json!("pv1"),
                json!("10Gi"),
                json!("RWO,RWX"),
                json!("Retain"),
                json!("Bound"),
                json!("default/data"),
                json!("fast"),
                json!("<unset>"),
                json!(""),
                json!("6s"),
                json!("<unset>")
            ]
        );
        let pvc = json!({"metadata": meta("data"), "spec": {"volumeName": "pv1", "storageClassName": "fast"},
                         "status": {"phase": "Bound", "capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"]}});
        assert_eq!(
            &row_cells("persistentvolumeclaims", &pvc, now())[..6],
            &[
                json!("data"),
                json!("Bound"),
                json!("pv1"),
                json!("10Gi"),
                json!("RWO"),
                json!("fast")
            ]
        );
        let q = json!({"metadata": meta("q"), "status": {
            "hard": {"pods": "10", "limits.cpu": "2", "requests.cpu": "1"},
            "used": {"pods": "3", "requests.cpu": "500m"}}});
        assert_eq!(
            cell("resourcequotas", &q, "Request"),
            "pods: 3/10, requests.cpu: 500m/1"
        );
        assert_eq!(cell("resourcequotas", &q, "Limit"), "limits.cpu: 0/2");
    }

    #[test]
    fn networking_and_policy_rows() {
        let ing = json!({"metadata": meta("i"),
                         "spec": {"ingressClassName": "nginx", "tls": [{}],
                                  "rules": [{"host": "a.example"}, {}, {"host": "b.example"}, {"host": "c"}, {"host": "d"}]},
                         "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}});
        assert_eq!(
            row_cells("ingresses", &ing, now()),
            vec![
                json!("i"),
                json!("nginx"),
                json!("a.example,b.example,c + 2 more..."),
                json!("1.2.3.4"),
                json!("80, 443"),
                json!("6s")
            ]
        );
        let np = json!({"metadata": meta("deny"), "spec": {"podSelector": {}}});
        assert_eq!(cell("networkpolicies", &np, "Pod-Selector"), "<none>");
        let pdb = json!({"metadata": meta("p"), "spec": {"minAvailable": "50%"}, "status": {"disruptionsAllowed": 1}});
        assert_eq!(
            row_cells("poddisruptionbudgets", &pdb, now()),
            vec![
                json!("p"),
                json!("50%"),
                json!("N/A"),
                json!(1),
                json!("6s")
            ]
        );
        let hpa = json!({"metadata": meta("h"),
                         "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1, "maxReplicas": 5,
                                  "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                                               "target": {"type": "Utilization", "averageUtilization": 80}}}]},
                         "status": {"currentReplicas": 2,
                                    "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu",
                                                        "current": {"averageUtilization": 40}}}]}});
        assert_eq!(
            row_cells("horizontalpodautoscalers", &hpa, now()),
            vec![
                json!("h"),
                json!("Deployment/web"),
                json!("cpu: 40%/80%"),
                json!("1"),
                json!(5),
                json!(2),
                json!("6s")
            ]
        );
    }

    #[test]
    fn generic_tables() {
        let obj =
            json!({"metadata": {"name": "thing", "creationTimestamp": "2026-11-22T11:00:00Z"}});
        assert_eq!(
            row_cells("widgets", &obj, now()),
            vec![json!("thing"), json!("60m")]
        );
        let cols = column_definitions("widgets");
        assert_eq!(cols.len(), 2);
        assert_eq!(cols[0]["format"], "name");
        assert_eq!(
            row_cells("limitranges", &obj, now()),
            vec![json!("thing"), json!("2026-11-22T11:00:00Z")]
        );
        assert_eq!(column_definitions("clusterroles")[1]["type"], "date");
    }

    #[test]
    fn every_printer_survives_junk_and_matches_its_columns() {
        let resources = [
            "pods",
            "nodes",
            "namespaces",
            "services",
            "endpoints",
            "endpointslices",
            "configmaps",
            "secrets",
            "serviceaccounts",
            "events",
            "persistentvolumes",
            "persistentvolumeclaims",
            "resourcequotas",
            "limitranges",
            "deployments",
            "replicasets",
            "replicationcontrollers",
            "statefulsets",
            "daemonsets",
            "jobs",
            "cronjobs",
            "horizontalpodautoscalers",
            "leases",
            "ingresses",
            "ingressclasses",
            "networkpolicies",
            "poddisruptionbudgets",
            "podtemplates",
            "storageclasses",
            "priorityclasses",
            "runtimeclasses",
            "controllerrevisions",
            "rolebindings",
            "clusterrolebindings",
            "mutatingwebhookconfigurations",
            "unknown",
        ];
        let junk = [
            json!(null),
            json!({}),
            json!([]),
            json!("x"),
            json!({"metadata": {"name": 5, "creationTimestamp": "garbage", "labels": "no"},
                   "spec": {"containers": "no", "replicas": "3", "selector": {"matchLabels": {"a": 1}},
                            "ports": [{"port": "x"}], "metrics": [{"type": "Pods"}]},
                   "status": {"containerStatuses": [null, {"state": {"terminated": null}}],
                              "conditions": "x", "hard": {"a": null}},
                   "subsets": [{"addresses": [{}], "ports": [{}]}], "series": {}}),
        ];
        for r in resources {
            let n = column_definitions(r).len();
            assert!(
                column_definitions(r)
                    .iter()
                    .any(|c| c["name"] == "Name" && c["format"] == "name"),
                "{r}"
            );
            for j in &junk {
                assert_eq!(row_cells(r, j, now()).len(), n, "{r} {j}");
            }
        }
    }

    #[test]
    fn controller_revision_and_bindings() {
        let cr = json!({"metadata": {"name": "web-5d", "creationTimestamp": ago(6), "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "controller": true}]}, "revision": 2});
        assert_eq!(
            row_cells("controllerrevisions", &cr, now()),
            vec![
                json!("web-5d"),
                json!("statefulset.apps/web"),
                json!(2),
                json!("6s")
            ]
        );
        let rb = json!({"metadata": meta("rb"), "roleRef": {"kind": "ClusterRole", "name": "view"},
                        "subjects": [{"kind": "User", "name": "alice"},
                                     {"kind": "ServiceAccount", "name": "sa", "namespace": "ns"}]});
        assert_eq!(
            row_cells("rolebindings", &rb, now()),
            vec![
                json!("rb"),
                json!("ClusterRole/view"),
                json!("6s"),
                json!("alice"),
                json!(""),
                json!("ns/sa")
            ]
        );
    }
}
