//! Validation, after Kubernetes' `pkg/apis/*/validation`: the essentials that
//! clients rely on being rejected, each reported at the field path
//! Kubernetes would use.
//!
//! Validation reads the JSON directly and never panics: a field of the wrong
//! JSON type is simply treated as absent (strict decoding reports it).
//! Fields that `apply_defaults` always fills (restartPolicy, protocol, ...) are
//! checked when present, so objects can be validated before or after
//! defaulting. Namespaced objects must carry `metadata.namespace`: the server
//! fills it from the URL before validating, as Kubernetes does.

use std::collections::{BTreeMap, HashSet};

use super::Cause;
use crate::quantity::quantity_nanos;
use serde_json::{Map, Value};

/// Create-time validation of `obj` as a `(group, resource)`; empty = valid.
pub fn validate(group: &str, resource: &str, obj: &Value) -> Vec<Cause> {
    let mut e = Errs::default();
    validate_into(&mut e, group, resource, obj);
    e.0
}

/// Collects causes, with constructors worded like Kubernetes' field errors.
#[derive(Default)]
struct Errs(Vec<Cause>);

impl Errs {
    fn push(&mut self, field: &str, reason: &str, message: String) {
        self.0.push(Cause {
            field: field.to_string(),
            reason: reason.to_string(),
            message,
        });
    }

    fn required(&mut self, field: &str, detail: &str) {
        let message = with_detail("Required value".to_string(), detail);
        self.push(field, "FieldValueRequired", message);
    }

    fn invalid(&mut self, field: &str, value: &Value, detail: &str) {
        let message = with_detail(format!("Invalid value: {}", show(value)), detail);
        self.push(field, "FieldValueInvalid", message);
    }

    fn duplicate(&mut self, field: &str, value: &Value) {
        let message = format!("Duplicate value: {}", show(value));
        self.push(field, "FieldValueDuplicate", message);
    }

    fn not_found(&mut self, field: &str, value: &Value) {
        let message = format!("Not found: {}", show(value));
        self.push(field, "FieldValueNotFound", message);
    }

    fn not_supported(&mut self, field: &str, value: &Value, supported: &[&str]) {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        let message = format!(
            "Unsupported value: {}: supported values: {}",
            show(value),
            list.join(", ")
        );
        self.push(field, "FieldValueNotSupported", message);
    }

    fn forbidden(&mut self, field: &str, detail: &str) {
        self.push(field, "FieldValueForbidden", format!("Forbidden: {detail}"));
    }

    fn too_long(&mut self, field: &str, max: usize) {
        let message = format!("Too long: may not be more than {max} bytes");
        self.push(field, "FieldValueTooLong", message);
    }

    /// Checks that a present string is one of `allowed`.
    fn one_of(&mut self, field: &str, value: Option<&Value>, allowed: &[&str]) {
        if let Some(v) = value.filter(|v| !v.is_null()) {
            if !v.as_str().is_some_and(|s| allowed.contains(&s)) {
                self.not_supported(field, v, allowed);
            }
        }
    }
}

fn with_detail(head: String, detail: &str) -> String {
    if detail.is_empty() {
        head
    } else {
        format!("{head}: {detail}")
    }
}

/// Renders a value the way Kubernetes quotes it in messages: strings quoted,
/// numbers bare, anything else as compact JSON.
fn show(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// `parent.key`, or just `key` at the root.
fn child(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// `parent[i]` for list elements.
fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// `parent[key]` for map entries, as Kubernetes prints them.
fn key(parent: &str, key: &str) -> String {
    format!("{parent}[{key}]")
}

fn get<'a>(v: &'a Value, k: &str) -> Option<&'a Value> {
    v.get(k).filter(|v| !v.is_null())
}

fn str_of<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

fn int_of(v: &Value, k: &str) -> Option<i64> {
    v.get(k).and_then(Value::as_i64)
}

fn list<'a>(v: &'a Value, k: &str) -> &'a [Value] {
    v.get(k)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn map<'a>(v: &'a Value, k: &str) -> Option<&'a Map<String, Value>> {
    v.get(k).and_then(Value::as_object)
}

/// A non-empty string field, or a Required cause.
fn required_str<'a>(e: &mut Errs, v: &'a Value, k: &str, path: &str) -> Option<&'a str> {
    match str_of(v, k).filter(|s| !s.is_empty()) {
        Some(s) => Some(s),
        None => {
            e.required(&child(path, k), "");
            None
        }
    }
}

/// Reports an integer field below `min` (when present).
fn at_least(e: &mut Errs, v: &Value, k: &str, path: &str, min: i64) {
    if let Some(n) = int_of(v, k) {
        if n < min {
            let detail = if min == 0 {
                "must be greater than or equal to 0".to_string()
            } else if min == 1 {
                "must be greater than 0".to_string()
            } else {
                format!("must be greater than or equal to {min}")
            };
            e.invalid(&child(path, k), &Value::from(n), &detail);
        }
    }
}

// ---- name syntax ----------------------------------------------------------

const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric \
characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  \
or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character \
(e.g. 'example.com', regex used for validation is \
'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters \
or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. \
'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const QUALIFIED_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or \
'.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  \
or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of \
alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric \
character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is \
'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, \
'-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation \
is '[-._a-zA-Z0-9]+')";

fn too_long_msg(max: usize) -> String {
    format!("must be no more than {max} characters")
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?` of at most 63 characters.
fn dns1123_label(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > 63 {
        out.push(too_long_msg(63));
    }
    if !label_chars(s, |c| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        out.push(LABEL_MSG.to_string());
    }
    out
}

/// Dot-separated RFC 1123 labels, at most 253 characters.
fn dns1123_subdomain(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > 253 {
        out.push(too_long_msg(253));
    }
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !s.split('.').all(|part| label_chars(part, alnum)) {
        out.push(SUBDOMAIN_MSG.to_string());
    }
    out
}

/// RFC 1035 label: like an RFC 1123 label, but starting with a letter.
fn dns1035_label(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > 63 {
        out.push(too_long_msg(63));
    }
    let starts_alpha = s.starts_with(|c: char| c.is_ascii_lowercase());
    if !starts_alpha || !label_chars(s, |c| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        out.push(DNS1035_MSG.to_string());
    }
    out
}

/// Non-empty, `edge` characters at both ends, `edge` or '-' in between.
fn label_chars(s: &str, edge: impl Fn(char) -> bool) -> bool {
    let ok_inner = s.chars().all(|c| edge(c) || c == '-');
    ok_inner && s.starts_with(&edge) && s.ends_with(&edge)
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, the name part of label keys.
fn name_part_ok(s: &str) -> bool {
    let edge = |c: char| c.is_ascii_alphanumeric();
    let inner = |c: char| edge(c) || matches!(c, '-' | '_' | '.');
    !s.is_empty() && s.chars().all(inner) && s.starts_with(edge) && s.ends_with(edge)
}

/// Label and annotation keys: optional DNS-subdomain prefix, `/`, name part.
fn qualified_name(s: &str) -> Vec<String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let mut out = Vec::new();
    if let Some(p) = prefix {
        if p.is_empty() {
            out.push("prefix part must be non-empty".to_string());
        } else {
            out.extend(
                dns1123_subdomain(p)
                    .into_iter()
                    .map(|m| format!("prefix part {m}")),
            );
        }
    }
    if name.is_empty() {
        out.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        out.push(format!("name part {}", too_long_msg(63)));
    }
    if !name.is_empty() && !name_part_ok(name) {
        out.push(QUALIFIED_MSG.to_string());
    }
    out
}

fn label_value(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > 63 {
        out.push(too_long_msg(63));
    }
    if !s.is_empty() && !name_part_ok(s) {
        out.push(LABEL_VALUE_MSG.to_string());
    }
    out
}

/// IANA service names (named ports): at most 15 lowercase alphanumerics or
/// '-', at least one letter, no leading/trailing or doubled '-'.
fn iana_svc_name(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > 15 {
        out.push(too_long_msg(15));
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        out.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into());
    }
    if s.contains("--") {
        out.push("must not contain consecutive hyphens".into());
    }
    if !s.chars().any(|c| c.is_ascii_lowercase()) {
        out.push("must contain at least one letter (a-z)".into());
    }
    if s.starts_with('-') || s.ends_with('-') {
        out.push("must not begin or end with a hyphen".into());
    }
    out
}

/// ConfigMap and Secret keys double as file names, hence the dot rules.
fn config_key(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > 253 {
        out.push(too_long_msg(253));
    }
    let chars_ok = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
    if s.is_empty() || !chars_ok {
        out.push(CONFIG_KEY_MSG.to_string());
    }
    if s == "." {
        out.push("must not be '.'".into());
    } else if s == ".." {
        out.push("must not be '..'".into());
    } else if s.starts_with("..") {
        out.push("must not start with '..'".into());
    }
    out
}

/// Reports every message of a syntax check against one field.
fn syntax(e: &mut Errs, field: &str, value: &str, msgs: Vec<String>) {
    for m in msgs {
        e.invalid(field, &Value::from(value), &m);
    }
}

fn valid_ip(s: &str) -> bool {
    s.parse::<std::net::IpAddr>().is_ok()
}

fn valid_cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    let Ok(ip) = ip.parse::<std::net::IpAddr>() else {
        return false;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    bits.parse::<u8>().is_ok_and(|b| b <= max)
}

// ---- metadata, labels, selectors -------------------------------------------

/// Which syntax an object's name must follow.
#[derive(Clone, Copy)]
enum NameRule {
    Subdomain,
    Label,
    Dns1035,
    /// Any name usable as one URL path segment.
    PathSegment,
}

const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

fn name_msgs(rule: NameRule, name: &str) -> Vec<String> {
    match rule {
        NameRule::Subdomain => dns1123_subdomain(name),
        NameRule::Label => dns1123_label(name),
        NameRule::Dns1035 => dns1035_label(name),
        NameRule::PathSegment => path_segment(name),
    }
}

fn path_segment(name: &str) -> Vec<String> {
    if name == "." || name == ".." {
        return vec![format!("may not be '{name}'")];
    }
    match name.chars().find(|c| *c == '/' || *c == '%') {
        Some(c) => vec![format!("may not contain '{c}'")],
        None => vec![],
    }
}

fn object_meta(e: &mut Errs, obj: &Value, rule: NameRule, namespaced: bool) {
    let null = Value::Null;
    let meta = obj.get("metadata").unwrap_or(&null);
    match str_of(meta, "name").filter(|n| !n.is_empty()) {
        Some(name) => syntax(e, "metadata.name", name, name_msgs(rule, name)),
        None => e.required("metadata.name", "name or generateName is required"),
    }
    let namespace = str_of(meta, "namespace").filter(|n| !n.is_empty());
    match (namespaced, namespace) {
        (true, Some(ns)) => syntax(e, "metadata.namespace", ns, dns1123_label(ns)),
        (true, None) => e.required("metadata.namespace", ""),
        (false, Some(_)) => e.forbidden("metadata.namespace", "not allowed on this type"),
        (false, None) => {}
    }
    labels(e, map(meta, "labels"), "metadata.labels");
    annotations(e, map(meta, "annotations"), "metadata.annotations");
    owner_references(e, list(meta, "ownerReferences"));
    for (i, f) in list(meta, "finalizers").iter().enumerate() {
        let name = f.as_str().unwrap_or_default();
        syntax(
            e,
            &index("metadata.finalizers", i),
            name,
            qualified_name(name),
        );
    }
}

fn labels(e: &mut Errs, labels: Option<&Map<String, Value>>, path: &str) {
    for (k, v) in labels.into_iter().flatten() {
        syntax(e, path, k, qualified_name(k));
        let value = v.as_str().unwrap_or_default();
        syntax(e, &key(path, k), value, label_value(value));
    }
}

fn annotations(e: &mut Errs, annotations: Option<&Map<String, Value>>, path: &str) {
    let mut total = 0;
    for (k, v) in annotations.into_iter().flatten() {
        syntax(e, path, k, qualified_name(&k.to_lowercase()));
        total += k.len() + v.as_str().map_or(0, str::len);
    }
    if total > MAX_ANNOTATIONS_BYTES {
        e.too_long(path, MAX_ANNOTATIONS_BYTES);
    }
}

fn owner_references(e: &mut Errs, refs: &[Value]) {
    for (i, r) in refs.iter().enumerate() {
        let path = index("metadata.ownerReferences", i);
        for k in ["apiVersion", "kind", "name", "uid"] {
            required_str(e, r, k, &path);
        }
    }
}

/// A metav1.LabelSelector: valid keys/values and well-formed expressions.
fn label_selector(e: &mut Errs, sel: &Value, path: &str) {
    labels(e, map(sel, "matchLabels"), &child(path, "matchLabels"));
    for (i, expr) in list(sel, "matchExpressions").iter().enumerate() {
        let p = index(&child(path, "matchExpressions"), i);
        let k = str_of(expr, "key").unwrap_or_default();
        syntax(e, &child(&p, "key"), k, qualified_name(k));
        let op = get(expr, "operator").cloned().unwrap_or(Value::from(""));
        let n_values = list(expr, "values").len();
        match op.as_str().unwrap_or_default() {
            "In" | "NotIn" if n_values == 0 => e.required(
                &child(&p, "values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            ),
            "Exists" | "DoesNotExist" if n_values > 0 => e.forbidden(
                &child(&p, "values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            ),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            _ => e.not_supported(
                &child(&p, "operator"),
                &op,
                &["In", "NotIn", "Exists", "DoesNotExist"],
            ),
        }
    }
}

fn selector_is_empty(sel: &Value) -> bool {
    map(sel, "matchLabels").is_none_or(Map::is_empty) && list(sel, "matchExpressions").is_empty()
}

/// Does a LabelSelector select an object with these labels?
fn selector_matches(sel: &Value, labels: &BTreeMap<&str, &str>) -> bool {
    let by_labels = map(sel, "matchLabels")
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k.as_str()).copied() == v.as_str());
    by_labels
        && list(sel, "matchExpressions")
            .iter()
            .all(|x| expression_matches(x, labels))
}

fn expression_matches(expr: &Value, labels: &BTreeMap<&str, &str>) -> bool {
    let value = labels.get(str_of(expr, "key").unwrap_or_default()).copied();
    let in_values = |v: &str| list(expr, "values").iter().any(|x| x.as_str() == Some(v));
    match str_of(expr, "operator").unwrap_or_default() {
        "In" => value.is_some_and(in_values),
        "NotIn" => !value.is_some_and(in_values),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        _ => false,
    }
}

fn string_map(m: Option<&Map<String, Value>>) -> BTreeMap<&str, &str> {
    m.into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
        .collect()
}

/// Validates a ResourceList: every quantity well-formed and non-negative.
fn resource_list(e: &mut Errs, list: Option<&Map<String, Value>>, path: &str) {
    for (name, q) in list.into_iter().flatten() {
        let field = key(path, name);
        match q.as_str().and_then(quantity_nanos) {
            None => e.invalid(
                &field,
                q,
                "quantities must match the regular expression \
                 '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
            ),
            Some(n) if n < 0 => e.invalid(&field, q, "must be greater than or equal to 0"),
            Some(_) => {}
        }
    }
}

/// Requests may not exceed limits, resource by resource.
fn requests_within_limits(e: &mut Errs, resources: &Value, path: &str) {
    let limits = map(resources, "limits");
    let requests_path = child(path, "requests");
    for (name, req) in map(resources, "requests").into_iter().flatten() {
        let limit = limits.and_then(|l| l.get(name));
        let Some(limit_q) = limit.and_then(Value::as_str) else {
            continue;
        };
        let (Some(r), Some(l)) = (
            req.as_str().and_then(quantity_nanos),
            quantity_nanos(limit_q),
        ) else {
            continue;
        };
        if r > l {
            let detail = format!("must be less than or equal to {name} limit of {limit_q}");
            e.invalid(&key(&requests_path, name), req, &detail);
        }
    }
}

/// Int-or-string fields that take a count or a percentage (maxSurge, ...).
/// Returns whether the value is zero, for the "not both zero" rules.
fn int_or_percent(e: &mut Errs, v: Option<&Value>, path: &str) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Number(n)) => {
            let n = n.as_i64().unwrap_or(-1);
            if n < 0 {
                e.invalid(path, &Value::from(n), "must be greater than or equal to 0");
            }
            n == 0
        }
        Some(Value::String(s)) => match s.strip_suffix('%').map(str::parse::<u32>) {
            Some(Ok(p)) => p == 0,
            _ => {
                e.invalid(
                    path,
                    &Value::from(s.as_str()),
                    "a valid percent string must be a \
                    numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used \
                    for validation is '[0-9]+%')",
                );
                false
            }
        },
        Some(other) => {
            e.invalid(path, other, "must be an integer or percentage");
            false
        }
    }
}

/// Percent values above 100% make no sense for "unavailable" budgets.
fn at_most_100_percent(e: &mut Errs, v: Option<&Value>, path: &str) {
    let pct = v.and_then(Value::as_str).and_then(|s| s.strip_suffix('%'));
    if let Some(p) = pct.and_then(|p| p.parse::<u32>().ok()).filter(|p| *p > 100) {
        let value = Value::from(format!("{p}%"));
        e.invalid(path, &value, "must not be greater than 100%");
    }
}

// ---- pods -------------------------------------------------------------------

const PROTOCOLS: &[&str] = &["TCP", "UDP", "SCTP"];
const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];

/// Validates a PodSpec at `path` (`spec`, `spec.template.spec`, ...).
fn pod_spec(e: &mut Errs, spec: &Value, path: &str) {
    let volumes = pod_volumes(e, spec, path);
    if list(spec, "containers").is_empty() {
        e.required(&child(path, "containers"), "");
    }
    let mut names = HashSet::new();
    for key in ["containers", "initContainers", "ephemeralContainers"] {
        for (i, c) in list(spec, key).iter().enumerate() {
            let p = index(&child(path, key), i);
            container(e, c, &p, &mut names, &volumes);
        }
    }
    pod_policies(e, spec, path);
    tolerations(e, list(spec, "tolerations"), &child(path, "tolerations"));
    labels(e, map(spec, "nodeSelector"), &child(path, "nodeSelector"));
    if get(spec, "hostNetwork") == Some(&Value::Bool(true)) {
        host_network_ports(e, spec, path);
    }
}

/// Enumerated and numeric pod-level fields.
fn pod_policies(e: &mut Errs, spec: &Value, path: &str) {
    let restart = get(spec, "restartPolicy");
    e.one_of(&child(path, "restartPolicy"), restart, RESTART_POLICIES);
    let dns = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
    e.one_of(&child(path, "dnsPolicy"), get(spec, "dnsPolicy"), &dns);
    if str_of(spec, "dnsPolicy") == Some("None") && get(spec, "dnsConfig").is_none() {
        e.required(
            &child(path, "dnsConfig"),
            "must provide `dnsConfig` when `dnsPolicy` is None",
        );
    }
    at_least(e, spec, "terminationGracePeriodSeconds", path, 0);
    at_least(e, spec, "activeDeadlineSeconds", path, 1);
    for k in ["hostname", "subdomain"] {
        if let Some(s) = str_of(spec, k).filter(|s| !s.is_empty()) {
            syntax(e, &child(path, k), s, dns1123_label(s));
        }
    }
    if let Some(sa) = str_of(spec, "serviceAccountName").filter(|s| !s.is_empty()) {
        syntax(
            e,
            &child(path, "serviceAccountName"),
            sa,
            dns1123_subdomain(sa),
        );
    }
}

/// Volume names must be unique labels, each with exactly one source.
/// Returns the names, for checking volumeMounts.
fn pod_volumes(e: &mut Errs, spec: &Value, path: &str) -> HashSet<String> {
    let mut names = HashSet::new();
    for (i, v) in list(spec, "volumes").iter().enumerate() {
        let p = index(&child(path, "volumes"), i);
        if let Some(name) = required_str(e, v, "name", &p) {
            syntax(e, &child(&p, "name"), name, dns1123_label(name));
            if !names.insert(name.to_string()) {
                e.duplicate(&child(&p, "name"), &Value::from(name));
            }
        }
        let sources = v.as_object().map_or(0, |m| {
            m.iter()
                .filter(|(k, v)| *k != "name" && !v.is_null())
                .count()
        });
        match sources {
            0 => e.required(&p, "must specify a volume type"),
            1 => {}
            _ => e.forbidden(&p, "may not specify more than 1 volume type"),
        }
    }
    names
}

fn container(
    e: &mut Errs,
    c: &Value,
    path: &str,
    names: &mut HashSet<String>,
    volumes: &HashSet<String>,
) {
    if let Some(name) = required_str(e, c, "name", path) {
        syntax(e, &child(path, "name"), name, dns1123_label(name));
        if !names.insert(name.to_string()) {
            e.duplicate(&child(path, "name"), &Value::from(name));
        }
    }
    required_str(e, c, "image", path);
    let pull = ["Always", "IfNotPresent", "Never"];
    e.one_of(
        &child(path, "imagePullPolicy"),
        get(c, "imagePullPolicy"),
        &pull,
    );
    let tmp = ["File", "FallbackToLogsOnError"];
    let tmp_path = child(path, "terminationMessagePolicy");
    e.one_of(&tmp_path, get(c, "terminationMessagePolicy"), &tmp);
    container_ports(e, list(c, "ports"), &child(path, "ports"));
    volume_mounts(
        e,
        list(c, "volumeMounts"),
        &child(path, "volumeMounts"),
        volumes,
    );
    env(e, list(c, "env"), &child(path, "env"));
    if let Some(res) = get(c, "resources") {
        let rp = child(path, "resources");
        resource_list(e, map(res, "limits"), &child(&rp, "limits"));
        resource_list(e, map(res, "requests"), &child(&rp, "requests"));
        requests_within_limits(e, res, &rp);
    }
}

fn container_ports(e: &mut Errs, ports: &[Value], path: &str) {
    let mut names = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = index(path, i);
        if let Some(name) = str_of(p, "name").filter(|n| !n.is_empty()) {
            syntax(e, &child(&pp, "name"), name, iana_svc_name(name));
            if !names.insert(name) {
                e.duplicate(&child(&pp, "name"), &Value::from(name));
            }
        }
        match get(p, "containerPort") {
            None => e.required(&child(&pp, "containerPort"), ""),
            Some(v) => port_number(e, v, &child(&pp, "containerPort")),
        }
        if let Some(v) = get(p, "hostPort").filter(|v| v.as_i64() != Some(0)) {
            port_number(e, v, &child(&pp, "hostPort"));
        }
        e.one_of(&child(&pp, "protocol"), get(p, "protocol"), PROTOCOLS);
    }
}

fn port_number(e: &mut Errs, v: &Value, path: &str) {
    if !v.as_i64().is_some_and(|n| (1..=65535).contains(&n)) {
        e.invalid(path, v, "must be between 1 and 65535, inclusive");
    }
}

/// Host networking shares the node's ports: hostPort must equal containerPort.
fn host_network_ports(e: &mut Errs, spec: &Value, path: &str) {
    for (i, c) in list(spec, "containers").iter().enumerate() {
        for (j, p) in list(c, "ports").iter().enumerate() {
            let host = get(p, "hostPort").filter(|h| h.as_i64() != Some(0));
            if let Some(h) = host.filter(|h| Some(*h) != get(p, "containerPort")) {
                let pp = index(&child(&index(&child(path, "containers"), i), "ports"), j);
                e.invalid(
                    &child(&pp, "hostPort"),
                    h,
                    "must match `containerPort` when `hostNetwork` is true",
                );
            }
        }
    }
}

fn volume_mounts(e: &mut Errs, mounts: &[Value], path: &str, volumes: &HashSet<String>) {
    let mut paths = HashSet::new();
    for (i, m) in mounts.iter().enumerate() {
        let mp = index(path, i);
        if let Some(name) = required_str(e, m, "name", &mp) {
            if !volumes.contains(name) {
                e.not_found(&child(&mp, "name"), &Value::from(name));
            }
        }
        if let Some(p) = required_str(e, m, "mountPath", &mp) {
            if !paths.insert(p) {
                e.invalid(&child(&mp, "mountPath"), &Value::from(p), "must be unique");
            }
        }
    }
}

/// Environment variable names: any printable ASCII but '=' (relaxed rule).
fn env(e: &mut Errs, vars: &[Value], path: &str) {
    for (i, v) in vars.iter().enumerate() {
        let p = index(path, i);
        let Some(name) = required_str(e, v, "name", &p) else {
            continue;
        };
        if !name.chars().all(|c| (' '..='~').contains(&c) && c != '=') {
            e.invalid(
                &child(&p, "name"),
                &Value::from(name),
                "a valid environment variable name must consist only of printable ASCII \
                 characters other than '='",
            );
        }
    }
}

fn tolerations(e: &mut Errs, tols: &[Value], path: &str) {
    for (i, t) in tols.iter().enumerate() {
        let p = index(path, i);
        if let Some(k) = str_of(t, "key").filter(|k| !k.is_empty()) {
            syntax(e, &child(&p, "key"), k, qualified_name(k));
        }
        let op = get(t, "operator");
        e.one_of(&child(&p, "operator"), op, &["Exists", "Equal"]);
        let has_value = str_of(t, "value").is_some_and(|v| !v.is_empty());
        if op.and_then(Value::as_str) == Some("Exists") && has_value {
            e.invalid(
                &child(&p, "operator"),
                &Value::from("Exists"),
                "value must be empty when `operator` is 'Exists'",
            );
        }
        let effects = ["NoSchedule", "PreferNoSchedule", "NoExecute"];
        let effect = get(t, "effect").filter(|v| v.as_str() != Some(""));
        e.one_of(&child(&p, "effect"), effect, &effects);
    }
}

/// A PodTemplateSpec: labels, pod spec, and the restart policies the owning
/// controller can honour.
fn pod_template(e: &mut Errs, tpl: Option<&Value>, path: &str, restart: &[&str]) {
    let null = Value::Null;
    let tpl = tpl.unwrap_or(&null);
    let meta = tpl.get("metadata").unwrap_or(&null);
    labels(e, map(meta, "labels"), &child(path, "metadata.labels"));
    annotations(
        e,
        map(meta, "annotations"),
        &child(path, "metadata.annotations"),
    );
    let spec = tpl.get("spec").unwrap_or(&null);
    let spec_path = child(path, "spec");
    pod_spec(e, spec, &spec_path);
    if let Some(rp) = get(spec, "restartPolicy") {
        let known = rp.as_str().filter(|r| RESTART_POLICIES.contains(r));
        if known.is_some_and(|r| !restart.contains(&r)) {
            e.not_supported(&child(&spec_path, "restartPolicy"), rp, restart);
        }
    }
}

// ---- workloads --------------------------------------------------------------

const ALWAYS: &[&str] = &["Always"];
const JOB_RESTART: &[&str] = &["OnFailure", "Never"];

/// Selector present, non-empty, well-formed, and selecting the template's
/// labels: otherwise the controller would never see the pods it creates.
fn selector_matches_template(e: &mut Errs, spec: &Value, path: &str, kind: &str) {
    let sel_path = child(path, "selector");
    let Some(sel) = get(spec, "selector") else {
        e.required(&sel_path, "");
        return;
    };
    if selector_is_empty(sel) {
        let detail = format!("empty selector is invalid for {kind}");
        e.invalid(&sel_path, &Value::from(""), &detail);
        return;
    }
    label_selector(e, sel, &sel_path);
    template_labels_match(e, spec, path, |l| selector_matches(sel, l));
}

fn template_labels_match(
    e: &mut Errs,
    spec: &Value,
    path: &str,
    matches: impl Fn(&BTreeMap<&str, &str>) -> bool,
) {
    let tpl_labels = spec.pointer("/template/metadata/labels");
    let labels = string_map(tpl_labels.and_then(Value::as_object));
    if !matches(&labels) {
        let shown = tpl_labels.cloned().unwrap_or(Value::Object(Map::new()));
        e.invalid(
            &child(path, "template.metadata.labels"),
            &shown,
            "`selector` does not match template `labels`",
        );
    }
}

/// Shared by Deployment, ReplicaSet, StatefulSet and DaemonSet.
fn replicated(e: &mut Errs, spec: &Value, kind: &str) {
    at_least(e, spec, "replicas", "spec", 0);
    at_least(e, spec, "minReadySeconds", "spec", 0);
    at_least(e, spec, "revisionHistoryLimit", "spec", 0);
    selector_matches_template(e, spec, "spec", kind);
    pod_template(e, get(spec, "template"), "spec.template", ALWAYS);
}

fn deployment(e: &mut Errs, spec: &Value) {
    replicated(e, spec, "deployment");
    if let (Some(pd), Some(mr)) = (
        int_of(spec, "progressDeadlineSeconds"),
        int_of(spec, "minReadySeconds"),
    ) {
        if pd <= mr {
            e.invalid(
                "spec.progressDeadlineSeconds",
                &Value::from(pd),
                "must be greater than minReadySeconds",
            );
        }
    }
    let Some(strategy) = get(spec, "strategy") else {
        return;
    };
    let ty = get(strategy, "type");
    e.one_of("spec.strategy.type", ty, &["Recreate", "RollingUpdate"]);
    let ru = get(strategy, "rollingUpdate");
    if ty.and_then(Value::as_str) == Some("Recreate") && ru.is_some() {
        e.forbidden(
            "spec.strategy.rollingUpdate",
            "may not be specified when strategy `type` is 'Recreate'",
        );
    }
    if let Some(ru) = ru {
        rolling_update(e, ru, "spec.strategy.rollingUpdate");
    }
}

/// maxSurge/maxUnavailable: valid, not both zero (no progress possible).
fn rolling_update(e: &mut Errs, ru: &Value, path: &str) {
    let unavailable_path = child(path, "maxUnavailable");
    let unavailable = get(ru, "maxUnavailable");
    let zero_unavailable = int_or_percent(e, unavailable, &unavailable_path);
    at_most_100_percent(e, unavailable, &unavailable_path);
    let zero_surge = int_or_percent(e, get(ru, "maxSurge"), &child(path, "maxSurge"));
    if zero_unavailable && zero_surge {
        let v = unavailable.cloned().unwrap_or(Value::Null);
        e.invalid(&unavailable_path, &v, "may not be 0 when `maxSurge` is 0");
    }
}

fn stateful_set(e: &mut Errs, spec: &Value) {
    replicated(e, spec, "statefulset");
    let pmp = get(spec, "podManagementPolicy");
    e.one_of(
        "spec.podManagementPolicy",
        pmp,
        &["OrderedReady", "Parallel"],
    );
    if let Some(us) = get(spec, "updateStrategy") {
        let ty = get(us, "type");
        e.one_of(
            "spec.updateStrategy.type",
            ty,
            &["RollingUpdate", "OnDelete"],
        );
        if let Some(ru) = get(us, "rollingUpdate") {
            at_least(e, ru, "partition", "spec.updateStrategy.rollingUpdate", 0);
        }
    }
    if let Some(policy) = get(spec, "persistentVolumeClaimRetentionPolicy") {
        let p = "spec.persistentVolumeClaimRetentionPolicy";
        for k in ["whenDeleted", "whenScaled"] {
            e.one_of(&child(p, k), get(policy, k), &["Retain", "Delete"]);
        }
    }
    if let Some(name) = str_of(spec, "serviceName").filter(|s| !s.is_empty()) {
        syntax(e, "spec.serviceName", name, dns1123_label(name));
    }
    for (i, claim) in list(spec, "volumeClaimTemplates").iter().enumerate() {
        let p = index("spec.volumeClaimTemplates", i);
        let name = claim.pointer("/metadata/name").and_then(Value::as_str);
        match name.filter(|n| !n.is_empty()) {
            Some(n) => syntax(e, &child(&p, "metadata.name"), n, dns1123_subdomain(n)),
            None => e.required(&child(&p, "metadata.name"), ""),
        }
        pvc_spec(
            e,
            claim.get("spec").unwrap_or(&Value::Null),
            &child(&p, "spec"),
        );
    }
}

fn daemon_set(e: &mut Errs, spec: &Value) {
    replicated(e, spec, "daemonset");
    let Some(us) = get(spec, "updateStrategy") else {
        return;
    };
    let ty = get(us, "type");
    e.one_of(
        "spec.updateStrategy.type",
        ty,
        &["RollingUpdate", "OnDelete"],
    );
    if let Some(ru) = get(us, "rollingUpdate") {
        rolling_update(e, ru, "spec.updateStrategy.rollingUpdate");
    }
}

/// ReplicationControllers select by a plain label map.
fn replication_controller(e: &mut Errs, spec: &Value) {
    at_least(e, spec, "replicas", "spec", 0);
    at_least(e, spec, "minReadySeconds", "spec", 0);
    let selector = map(spec, "selector").filter(|m| !m.is_empty());
    let Some(selector) = selector else {
        e.required("spec.selector", "");
        pod_template(e, get(spec, "template"), "spec.template", ALWAYS);
        return;
    };
    labels(e, Some(selector), "spec.selector");
    let wanted = string_map(Some(selector));
    template_labels_match(e, spec, "spec", |l| {
        wanted.iter().all(|(k, v)| l.get(k) == Some(v))
    });
    if get(spec, "template").is_none() {
        e.required("spec.template", "");
        return;
    }
    pod_template(e, get(spec, "template"), "spec.template", ALWAYS);
}

/// A JobSpec at `path` (`spec` or `spec.jobTemplate.spec`).
fn job_spec(e: &mut Errs, spec: &Value, path: &str) {
    for k in ["parallelism", "completions", "backoffLimit"] {
        at_least(e, spec, k, path, 0);
    }
    at_least(e, spec, "activeDeadlineSeconds", path, 1);
    at_least(e, spec, "ttlSecondsAfterFinished", path, 0);
    let mode = get(spec, "completionMode");
    e.one_of(
        &child(path, "completionMode"),
        mode,
        &["NonIndexed", "Indexed"],
    );
    if mode.and_then(Value::as_str) == Some("Indexed") && get(spec, "completions").is_none() {
        e.required(
            &child(path, "completions"),
            "when completion mode is Indexed",
        );
    }
    let manual = get(spec, "manualSelector") == Some(&Value::Bool(true));
    if manual || get(spec, "selector").is_some() {
        selector_matches_template(e, spec, path, "job");
    }
    pod_template(
        e,
        get(spec, "template"),
        &child(path, "template"),
        JOB_RESTART,
    );
}

fn cron_job(e: &mut Errs, obj: &Value, spec: &Value) {
    if let Some(name) = obj.pointer("/metadata/name").and_then(Value::as_str) {
        if name.len() > 52 {
            e.invalid(
                "metadata.name",
                &Value::from(name),
                "must be no more than 52 characters",
            );
        }
    }
    match str_of(spec, "schedule").filter(|s| !s.is_empty()) {
        None => e.required("spec.schedule", ""),
        Some(s) => {
            if let Err(msg) = cron_schedule(s) {
                e.invalid("spec.schedule", &Value::from(s), &msg);
            }
        }
    }
    let policy = get(spec, "concurrencyPolicy");
    e.one_of(
        "spec.concurrencyPolicy",
        policy,
        &["Allow", "Forbid", "Replace"],
    );
    for k in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        at_least(e, spec, k, "spec", 0);
    }
    let job = spec.pointer("/jobTemplate/spec").unwrap_or(&Value::Null);
    job_spec(e, job, "spec.jobTemplate.spec");
}

/// Standard five-field cron syntax (or an `@` macro), which is what the
/// CronJob controller's parser accepts; time zones belong in `timeZone`.
fn cron_schedule(s: &str) -> Result<(), String> {
    if s.contains("TZ=") {
        return Err("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into());
    }
    if let Some(m) = s.strip_prefix('@') {
        let macros = [
            "yearly", "annually", "monthly", "weekly", "daily", "midnight", "hourly",
        ];
        return if macros.contains(&m) || m.starts_with("every ") {
            Ok(())
        } else {
            Err(format!("unrecognized descriptor: {s}"))
        };
    }
    let fields: Vec<&str> = s.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: {s}",
            fields.len()
        ));
    }
    const MONTHS: &[&str] = &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    let bounds: [(u32, u32, &[&str]); 5] = [
        (0, 59, &[]),
        (0, 23, &[]),
        (1, 31, &[]),
        (1, 12, MONTHS),
        (0, 7, DAYS),
    ];
    for (field, (lo, hi, names)) in fields.iter().zip(bounds) {
        cron_field(field, lo, hi, names).map_err(|m| format!("{m}: {field}"))?;
    }
    Ok(())
}

fn cron_field(field: &str, lo: u32, hi: u32, names: &[&str]) -> Result<(), String> {
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, st)) => (r, Some(st)),
            None => (item, None),
        };
        if let Some(st) = step {
            st.parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or("invalid step")?;
        }
        if range == "*" || range == "?" {
            continue;
        }
        let (a, b) = range.split_once('-').unwrap_or((range, range));
        let a = cron_value(a, lo, names)
            .filter(|v| *v <= hi)
            .ok_or("value out of range")?;
        let b = cron_value(b, lo, names)
            .filter(|v| *v <= hi)
            .ok_or("value out of range")?;
        if a > b {
            return Err("beginning of range after end".into());
        }
    }
    Ok(())
}

fn cron_value(s: &str, lo: u32, names: &[&str]) -> Option<u32> {
    let lower = s.to_ascii_lowercase();
    if let Some(i) = names.iter().position(|n| *n == lower) {
        return u32::try_from(i).ok().map(|i| i + lo);
    }
    s.parse::<u32>().ok().filter(|v| *v >= lo)
}

// ---- services and endpoints -------------------------------------------------

const SERVICE_TYPES: &[&str] = &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];

fn service(e: &mut Errs, spec: &Value) {
    let ty = str_of(spec, "type").unwrap_or("ClusterIP");
    e.one_of("spec.type", get(spec, "type"), SERVICE_TYPES);
    let headless = str_of(spec, "clusterIP") == Some("None");
    let ports = list(spec, "ports");
    if ports.is_empty() && !headless && ty != "ExternalName" {
        e.required("spec.ports", "");
    }
    service_ports(e, ports, ty);
    if ty == "ExternalName" {
        match str_of(spec, "externalName").filter(|s| !s.is_empty()) {
            None => e.required("spec.externalName", ""),
            Some(n) => syntax(
                e,
                "spec.externalName",
                n,
                dns1123_subdomain(n.trim_end_matches('.')),
            ),
        }
    }
    service_ips(e, spec);
    service_policies(e, spec, ty);
    labels(e, map(spec, "selector"), "spec.selector");
}

fn service_ports(e: &mut Errs, ports: &[Value], ty: &str) {
    let mut names = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = index("spec.ports", i);
        match str_of(p, "name").filter(|n| !n.is_empty()) {
            Some(name) => {
                syntax(e, &child(&pp, "name"), name, dns1123_label(name));
                if !names.insert(name) {
                    e.duplicate(&child(&pp, "name"), &Value::from(name));
                }
            }
            None if ports.len() > 1 => e.required(&child(&pp, "name"), ""),
            None => {}
        }
        match get(p, "port") {
            None => e.required(&child(&pp, "port"), ""),
            Some(v) => port_number(e, v, &child(&pp, "port")),
        }
        e.one_of(&child(&pp, "protocol"), get(p, "protocol"), PROTOCOLS);
        if let Some(tp) = get(p, "targetPort") {
            target_port(e, tp, &child(&pp, "targetPort"));
        }
        let node_port = get(p, "nodePort").filter(|v| v.as_i64() != Some(0));
        if let Some(np) = node_port {
            if ty == "ClusterIP" || ty == "ExternalName" {
                let detail = format!("may not be used when `type` is '{ty}'");
                e.forbidden(&child(&pp, "nodePort"), &detail);
            } else {
                port_number(e, np, &child(&pp, "nodePort"));
            }
        }
    }
}

/// targetPort is a port number or the name of a container port.
fn target_port(e: &mut Errs, tp: &Value, path: &str) {
    match tp {
        Value::String(s) => syntax(e, path, s, iana_svc_name(s)),
        v => port_number(e, v, path),
    }
}

fn service_ips(e: &mut Errs, spec: &Value) {
    if let Some(ip) = str_of(spec, "clusterIP").filter(|s| !s.is_empty() && *s != "None") {
        if !valid_ip(ip) {
            e.invalid(
                "spec.clusterIP",
                &Value::from(ip),
                "must be a valid IP address",
            );
        }
    }
    for (i, ip) in list(spec, "clusterIPs").iter().enumerate() {
        let s = ip.as_str().unwrap_or_default();
        if s != "None" && !valid_ip(s) {
            e.invalid(
                &index("spec.clusterIPs", i),
                ip,
                "must be a valid IP address",
            );
        }
    }
    for (i, ip) in list(spec, "externalIPs").iter().enumerate() {
        if !ip.as_str().is_some_and(valid_ip) {
            e.invalid(
                &index("spec.externalIPs", i),
                ip,
                "must be a valid IP address",
            );
        }
    }
}

fn service_policies(e: &mut Errs, spec: &Value, ty: &str) {
    let affinity = get(spec, "sessionAffinity");
    e.one_of("spec.sessionAffinity", affinity, &["None", "ClientIP"]);
    let families = ["SingleStack", "PreferDualStack", "RequireDualStack"];
    e.one_of(
        "spec.ipFamilyPolicy",
        get(spec, "ipFamilyPolicy"),
        &families,
    );
    for (i, f) in list(spec, "ipFamilies").iter().enumerate() {
        e.one_of(&index("spec.ipFamilies", i), Some(f), &["IPv4", "IPv6"]);
    }
    let internal = get(spec, "internalTrafficPolicy");
    e.one_of(
        "spec.internalTrafficPolicy",
        internal,
        &["Cluster", "Local"],
    );
    let external = get(spec, "externalTrafficPolicy").filter(|v| v.as_str() != Some(""));
    e.one_of(
        "spec.externalTrafficPolicy",
        external,
        &["Cluster", "Local"],
    );
    if external.is_some() && ty != "NodePort" && ty != "LoadBalancer" {
        e.invalid(
            "spec.externalTrafficPolicy",
            external.unwrap_or(&Value::Null),
            "may only be set for externally-accessible services",
        );
    }
}

fn endpoints(e: &mut Errs, obj: &Value) {
    for (i, subset) in list(obj, "subsets").iter().enumerate() {
        let sp = index("subsets", i);
        for key in ["addresses", "notReadyAddresses"] {
            for (j, a) in list(subset, key).iter().enumerate() {
                let ap = index(&child(&sp, key), j);
                if let Some(ip) = required_str(e, a, "ip", &ap) {
                    if !valid_ip(ip) {
                        e.invalid(
                            &child(&ap, "ip"),
                            &Value::from(ip),
                            "must be a valid IP address",
                        );
                    }
                }
            }
        }
        endpoint_ports(e, list(subset, "ports"), &child(&sp, "ports"));
    }
}

/// Ports of Endpoints and EndpointSlices: named when several, unique names.
fn endpoint_ports(e: &mut Errs, ports: &[Value], path: &str) {
    let mut names = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = index(path, i);
        let name = str_of(p, "name").unwrap_or_default();
        if name.is_empty() && ports.len() > 1 {
            e.required(&child(&pp, "name"), "");
        }
        if !name.is_empty() {
            syntax(e, &child(&pp, "name"), name, dns1123_label(name));
        }
        if !names.insert(name) {
            e.duplicate(&child(&pp, "name"), &Value::from(name));
        }
        if let Some(v) = get(p, "port") {
            port_number(e, v, &child(&pp, "port"));
        }
        e.one_of(&child(&pp, "protocol"), get(p, "protocol"), PROTOCOLS);
    }
}

fn endpoint_slice(e: &mut Errs, obj: &Value) {
    let ty = get(obj, "addressType");
    match ty {
        None => e.required("addressType", ""),
        Some(_) => e.one_of("addressType", ty, &["IPv4", "IPv6", "FQDN"]),
    }
    let endpoints = list(obj, "endpoints");
    if endpoints.len() > 1000 {
        e.too_long("endpoints", 1000);
    }
    let ty = ty.and_then(Value::as_str).unwrap_or_default();
    for (i, ep) in endpoints.iter().enumerate() {
        let p = index("endpoints", i);
        let addrs = list(ep, "addresses");
        if addrs.is_empty() || addrs.len() > 100 {
            e.invalid(
                &child(&p, "addresses"),
                &Value::from(addrs.len()),
                "must contain between 1 and 100 addresses",
            );
        }
        for (j, a) in addrs.iter().enumerate() {
            let s = a.as_str().unwrap_or_default();
            let ok = match ty {
                "IPv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
                "IPv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
                _ => dns1123_subdomain(s).is_empty(),
            };
            if !ok {
                let detail = format!("must be a valid {ty} address");
                e.invalid(&index(&child(&p, "addresses"), j), a, &detail);
            }
        }
    }
    endpoint_ports(e, list(obj, "ports"), "ports");
}

// ---- config and secrets -----------------------------------------------------

const MAX_CONFIG_BYTES: usize = 1024 * 1024;

/// Data keys are file names when mounted; the total has to fit in etcd.
fn config_map(e: &mut Errs, obj: &Value) {
    let mut total = 0;
    for section in ["data", "binaryData"] {
        for (k, v) in map(obj, section).into_iter().flatten() {
            syntax(e, &key(section, k), k, config_key(k));
            total += v.as_str().map_or(0, str::len);
        }
    }
    let binary = map(obj, "binaryData");
    for k in map(obj, "data").into_iter().flatten().map(|(k, _)| k) {
        if binary.is_some_and(|b| b.contains_key(k)) {
            e.invalid(
                &key("data", k),
                &Value::from(k.as_str()),
                "duplicate of key present in binaryData",
            );
        }
    }
    if total > MAX_CONFIG_BYTES {
        e.too_long("", MAX_CONFIG_BYTES);
    }
}

fn secret(e: &mut Errs, obj: &Value) {
    let mut total = 0;
    for section in ["data", "stringData"] {
        for (k, v) in map(obj, section).into_iter().flatten() {
            syntax(e, &key(section, k), k, config_key(k));
            let len = v.as_str().map_or(0, str::len);
            // `data` is base64: count decoded bytes.
            total += if section == "data" { len / 4 * 3 } else { len };
        }
    }
    if total > MAX_CONFIG_BYTES {
        e.too_long("data", MAX_CONFIG_BYTES);
    }
    secret_type_keys(e, obj);
}

/// Built-in secret types promise certain keys to their consumers.
fn secret_type_keys(e: &mut Errs, obj: &Value) {
    let has = |k: &str| {
        ["data", "stringData"]
            .iter()
            .any(|s| map(obj, s).is_some_and(|m| m.contains_key(k)))
    };
    let needed: &[&str] = match str_of(obj, "type").unwrap_or_default() {
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/ssh-auth" => &["ssh-privatekey"],
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        "kubernetes.io/service-account-token" => {
            let ann = obj.pointer("/metadata/annotations/kubernetes.io~1service-account.name");
            if ann.and_then(Value::as_str).is_none_or(str::is_empty) {
                e.required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                    "",
                );
            }
            &[]
        }
        _ => &[],
    };
    for k in needed.iter().filter(|k| !has(k)) {
        e.required(&key("data", k), "");
    }
}

// ---- storage, quota, limits -------------------------------------------------

const ACCESS_MODES: &[&str] = &[
    "ReadWriteOnce",
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOncePod",
];

fn access_modes(e: &mut Errs, spec: &Value, path: &str) {
    let modes = list(spec, "accessModes");
    let p = child(path, "accessModes");
    if modes.is_empty() {
        e.required(&p, "at least 1 access mode is required");
    }
    for m in modes {
        e.one_of(&p, Some(m), ACCESS_MODES);
    }
}

fn pvc_spec(e: &mut Errs, spec: &Value, path: &str) {
    access_modes(e, spec, path);
    let requests = spec
        .pointer("/resources/requests")
        .and_then(Value::as_object);
    let rp = child(path, "resources.requests");
    if !requests.is_some_and(|r| r.contains_key("storage")) {
        e.required(&key(&child(path, "resources"), "storage"), "");
    }
    resource_list(e, requests, &rp);
    e.one_of(
        &child(path, "volumeMode"),
        get(spec, "volumeMode"),
        &["Block", "Filesystem"],
    );
    if let Some(sel) = get(spec, "selector") {
        label_selector(e, sel, &child(path, "selector"));
    }
}

/// Everything in a PV spec that is not one of these is its volume source.
const PV_NON_SOURCE: &[&str] = &[
    "accessModes",
    "capacity",
    "claimRef",
    "mountOptions",
    "nodeAffinity",
    "persistentVolumeReclaimPolicy",
    "storageClassName",
    "volumeMode",
    "volumeAttributesClassName",
];

fn persistent_volume(e: &mut Errs, spec: &Value) {
    access_modes(e, spec, "spec");
    let capacity = map(spec, "capacity");
    if !capacity.is_some_and(|c| c.contains_key("storage")) {
        e.required("spec.capacity[storage]", "");
    }
    resource_list(e, capacity, "spec.capacity");
    let policy = get(spec, "persistentVolumeReclaimPolicy");
    let policies = ["Retain", "Recycle", "Delete"];
    e.one_of("spec.persistentVolumeReclaimPolicy", policy, &policies);
    e.one_of(
        "spec.volumeMode",
        get(spec, "volumeMode"),
        &["Block", "Filesystem"],
    );
    let sources = spec.as_object().map_or(0, |m| {
        m.iter()
            .filter(|(k, v)| !PV_NON_SOURCE.contains(&k.as_str()) && !v.is_null())
            .count()
    });
    match sources {
        0 => e.required("spec", "must specify a volume type"),
        1 => {}
        _ => e.forbidden("spec", "may not specify more than 1 volume type"),
    }
}

fn resource_quota(e: &mut Errs, spec: &Value) {
    resource_list(e, map(spec, "hard"), "spec.hard");
    let scopes = [
        "Terminating",
        "NotTerminating",
        "BestEffort",
        "NotBestEffort",
        "PriorityClass",
        "CrossNamespacePodAffinity",
        "VolumeAttributesClass",
    ];
    for (i, s) in list(spec, "scopes").iter().enumerate() {
        e.one_of(&index("spec.scopes", i), Some(s), &scopes);
    }
}

fn limit_range(e: &mut Errs, spec: &Value) {
    for (i, item) in list(spec, "limits").iter().enumerate() {
        let p = index("spec.limits", i);
        let ty = get(item, "type");
        match ty {
            None => e.required(&child(&p, "type"), ""),
            Some(_) => e.one_of(
                &child(&p, "type"),
                ty,
                &["Pod", "Container", "PersistentVolumeClaim"],
            ),
        }
        for k in [
            "max",
            "min",
            "default",
            "defaultRequest",
            "maxLimitRequestRatio",
        ] {
            resource_list(e, map(item, k), &child(&p, k));
        }
        min_below_max(e, item, &p);
    }
}

/// A limit range whose min exceeds its max admits nothing.
fn min_below_max(e: &mut Errs, item: &Value, path: &str) {
    let max = map(item, "max");
    for (name, min) in map(item, "min").into_iter().flatten() {
        let max_q = max.and_then(|m| m.get(name)).and_then(Value::as_str);
        let (Some(lo), Some(hi)) = (
            min.as_str().and_then(quantity_nanos),
            max_q.and_then(quantity_nanos),
        ) else {
            continue;
        };
        if lo > hi {
            let detail = format!(
                "min value {} is greater than max value {}",
                min.as_str().unwrap_or_default(),
                max_q.unwrap_or_default()
            );
            e.invalid(&key(&child(path, "min"), name), min, &detail);
        }
    }
}

// ---- coordination, autoscaling, policy -------------------------------------

fn lease(e: &mut Errs, spec: &Value) {
    at_least(e, spec, "leaseDurationSeconds", "spec", 1);
    at_least(e, spec, "leaseTransitions", "spec", 0);
    if get(spec, "preferredHolder").is_some() && get(spec, "strategy").is_none() {
        e.forbidden(
            "spec.preferredHolder",
            "may only be specified if `strategy` is defined",
        );
    }
}

fn hpa(e: &mut Errs, spec: &Value) {
    let target = spec.get("scaleTargetRef").unwrap_or(&Value::Null);
    required_str(e, target, "kind", "spec.scaleTargetRef");
    if let Some(name) = required_str(e, target, "name", "spec.scaleTargetRef") {
        syntax(e, "spec.scaleTargetRef.name", name, path_segment(name));
    }
    at_least(e, spec, "minReplicas", "spec", 1);
    let max = int_of(spec, "maxReplicas");
    match max {
        None => e.required("spec.maxReplicas", ""),
        Some(m) if m < 1 => e.invalid(
            "spec.maxReplicas",
            &Value::from(m),
            "must be greater than 0",
        ),
        Some(m) => {
            if int_of(spec, "minReplicas").is_some_and(|min| min > m) {
                e.invalid(
                    "spec.maxReplicas",
                    &Value::from(m),
                    "must be greater than or equal to `minReplicas`",
                );
            }
        }
    }
    let types = [
        "Object",
        "Pods",
        "Resource",
        "ContainerResource",
        "External",
    ];
    for (i, m) in list(spec, "metrics").iter().enumerate() {
        let p = index("spec.metrics", i);
        match get(m, "type") {
            None => e.required(&child(&p, "type"), ""),
            ty => e.one_of(&child(&p, "type"), ty, &types),
        }
    }
}

/// A budget is either a floor (minAvailable) or a ceiling (maxUnavailable).
fn pdb(e: &mut Errs, spec: &Value) {
    let min = get(spec, "minAvailable");
    let max = get(spec, "maxUnavailable");
    if min.is_some() && max.is_some() {
        e.invalid(
            "spec",
            &Value::from("object"),
            "minAvailable and maxUnavailable cannot be both set",
        );
    }
    int_or_percent(e, min, "spec.minAvailable");
    at_most_100_percent(e, min, "spec.minAvailable");
    int_or_percent(e, max, "spec.maxUnavailable");
    at_most_100_percent(e, max, "spec.maxUnavailable");
    if let Some(sel) = get(spec, "selector") {
        label_selector(e, sel, "spec.selector");
    }
    let policies = ["IfHealthyBudget", "AlwaysAllow"];
    e.one_of(
        "spec.unhealthyPodEvictionPolicy",
        get(spec, "unhealthyPodEvictionPolicy"),
        &policies,
    );
}

// ---- networking --------------------------------------------------------------

fn ingress(e: &mut Errs, spec: &Value) {
    if let Some(class) = str_of(spec, "ingressClassName") {
        syntax(e, "spec.ingressClassName", class, dns1123_subdomain(class));
    }
    if let Some(b) = get(spec, "defaultBackend") {
        ingress_backend(e, b, "spec.defaultBackend");
    }
    let rules = list(spec, "rules");
    if rules.is_empty() && get(spec, "defaultBackend").is_none() {
        e.invalid(
            "spec",
            &Value::from("object"),
            "either `defaultBackend` or `rules` must be specified",
        );
    }
    for (i, rule) in rules.iter().enumerate() {
        let p = index("spec.rules", i);
        if let Some(host) = str_of(rule, "host").filter(|h| !h.is_empty()) {
            let bare = host.strip_prefix("*.").unwrap_or(host);
            syntax(e, &child(&p, "host"), host, dns1123_subdomain(bare));
        }
        for (j, path) in rule
            .pointer("/http/paths")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            ingress_path(e, path, &index(&child(&p, "http.paths"), j));
        }
    }
    for (i, tls) in list(spec, "tls").iter().enumerate() {
        for (j, h) in list(tls, "hosts").iter().enumerate() {
            let host = h.as_str().unwrap_or_default();
            let bare = host.strip_prefix("*.").unwrap_or(host);
            syntax(
                e,
                &index(&child(&index("spec.tls", i), "hosts"), j),
                host,
                dns1123_subdomain(bare),
            );
        }
    }
}

fn ingress_path(e: &mut Errs, path: &Value, p: &str) {
    let ty = get(path, "pathType");
    match ty {
        None => e.required(&child(p, "pathType"), "pathType must be specified"),
        Some(_) => e.one_of(
            &child(p, "pathType"),
            ty,
            &["Exact", "Prefix", "ImplementationSpecific"],
        ),
    }
    let prefix_like = matches!(ty.and_then(Value::as_str), Some("Exact" | "Prefix"));
    if let Some(s) = str_of(path, "path") {
        if (prefix_like || !s.is_empty()) && !s.starts_with('/') {
            e.invalid(
                &child(p, "path"),
                &Value::from(s),
                "must be an absolute path",
            );
        }
    } else if prefix_like {
        e.invalid(
            &child(p, "path"),
            &Value::from(""),
            "must be an absolute path",
        );
    }
    match get(path, "backend") {
        Some(b) => ingress_backend(e, b, &child(p, "backend")),
        None => e.required(&child(p, "backend"), ""),
    }
}

/// Exactly one of service or resource; a service needs a name and a port
/// given by number or by name.
fn ingress_backend(e: &mut Errs, b: &Value, path: &str) {
    let service = get(b, "service");
    match (service, get(b, "resource")) {
        (Some(_), Some(_)) => e.invalid(
            path,
            &Value::from("object"),
            "cannot set both resource and service backends",
        ),
        (None, None) => e.invalid(
            path,
            &Value::from("object"),
            "resource or service backend is required",
        ),
        _ => {}
    }
    let Some(svc) = service else {
        return;
    };
    let sp = child(path, "service");
    if let Some(name) = required_str(e, svc, "name", &sp) {
        syntax(e, &child(&sp, "name"), name, dns1035_label(name));
    }
    let port = svc.get("port").unwrap_or(&Value::Null);
    let pp = child(&sp, "port");
    match (
        get(port, "number"),
        str_of(port, "name").filter(|n| !n.is_empty()),
    ) {
        (Some(_), Some(_)) => e.invalid(
            &pp,
            &Value::from("object"),
            "cannot set both port name & port number",
        ),
        (Some(n), None) => port_number(e, n, &child(&pp, "number")),
        (None, Some(n)) => syntax(e, &child(&pp, "name"), n, iana_svc_name(n)),
        (None, None) => e.required(&pp, "port name or number is required"),
    }
}

fn network_policy(e: &mut Errs, spec: &Value) {
    match get(spec, "podSelector") {
        Some(sel) => label_selector(e, sel, "spec.podSelector"),
        None => e.required("spec.podSelector", ""),
    }
    for (i, t) in list(spec, "policyTypes").iter().enumerate() {
        e.one_of(
            &index("spec.policyTypes", i),
            Some(t),
            &["Ingress", "Egress"],
        );
    }
    for (dir, peers) in [("ingress", "from"), ("egress", "to")] {
        for (i, rule) in list(spec, dir).iter().enumerate() {
            let rp = index(&child("spec", dir), i);
            network_policy_ports(e, list(rule, "ports"), &child(&rp, "ports"));
            for (j, peer) in list(rule, peers).iter().enumerate() {
                network_policy_peer(e, peer, &index(&child(&rp, peers), j));
            }
        }
    }
}

fn network_policy_ports(e: &mut Errs, ports: &[Value], path: &str) {
    for (i, p) in ports.iter().enumerate() {
        let pp = index(path, i);
        e.one_of(&child(&pp, "protocol"), get(p, "protocol"), PROTOCOLS);
        if let Some(port) = get(p, "port") {
            target_port(e, port, &child(&pp, "port"));
        }
        if let Some(end) = int_of(p, "endPort") {
            let start = int_of(p, "port");
            if start.is_none_or(|s| end < s) {
                e.invalid(
                    &child(&pp, "endPort"),
                    &Value::from(end),
                    "must be greater than or equal to `port`",
                );
            }
        }
    }
}

fn network_policy_peer(e: &mut Errs, peer: &Value, path: &str) {
    let set = ["podSelector", "namespaceSelector", "ipBlock"]
        .iter()
        .filter(|k| get(peer, k).is_some())
        .count();
    if set == 0 {
        e.required(path, "must specify a peer");
    }
    if let Some(block) = get(peer, "ipBlock") {
        if get(peer, "podSelector").is_some() || get(peer, "namespaceSelector").is_some() {
            e.forbidden(path, "may not specify both ipBlock and another peer");
        }
        let cidr = str_of(block, "cidr").unwrap_or_default();
        if !valid_cidr(cidr) {
            e.invalid(
                &child(path, "ipBlock.cidr"),
                &Value::from(cidr),
                "must be a valid CIDR",
            );
        }
        for (i, x) in list(block, "except").iter().enumerate() {
            if !x.as_str().is_some_and(valid_cidr) {
                e.invalid(
                    &index(&child(path, "ipBlock.except"), i),
                    x,
                    "must be a valid CIDR",
                );
            }
        }
    }
    for k in ["podSelector", "namespaceSelector"] {
        if let Some(sel) = get(peer, k) {
            label_selector(e, sel, &child(path, k));
        }
    }
}

// ---- events, nodes, namespaces, subresources ---------------------------------

/// Legacy core events only need to point at something in their namespace.
fn core_event(e: &mut Errs, obj: &Value) {
    let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str);
    let involved = obj
        .pointer("/involvedObject/namespace")
        .and_then(Value::as_str);
    if let (Some(ns), Some(inv)) = (ns, involved.filter(|s| !s.is_empty())) {
        if ns != inv {
            e.invalid(
                "involvedObject.namespace",
                &Value::from(inv),
                "does not match event.namespace",
            );
        }
    }
    e.one_of(
        "type",
        get(obj, "type").filter(|t| t.as_str() != Some("")),
        &["Normal", "Warning"],
    );
}

/// events.k8s.io events must say who reported what, and when.
fn events_event(e: &mut Errs, obj: &Value) {
    if get(obj, "eventTime").is_none() {
        e.required("eventTime", "");
    }
    if let Some(c) = required_str(e, obj, "reportingController", "") {
        syntax(e, "reportingController", c, qualified_name(c));
    }
    required_str(e, obj, "reportingInstance", "");
    for k in ["action", "reason"] {
        if let Some(s) = required_str(e, obj, k, "") {
            if s.len() > 128 {
                e.too_long(k, 128);
            }
        }
    }
    match get(obj, "type") {
        None => e.required("type", ""),
        ty => e.one_of("type", ty, &["Normal", "Warning"]),
    }
    if str_of(obj, "note").is_some_and(|n| n.len() > 1024) {
        e.too_long("note", 1024);
    }
}

fn node(e: &mut Errs, spec: &Value) {
    if let Some(cidr) = str_of(spec, "podCIDR").filter(|s| !s.is_empty()) {
        if !valid_cidr(cidr) {
            e.invalid("spec.podCIDR", &Value::from(cidr), "must be a valid CIDR");
        }
    }
    for (i, c) in list(spec, "podCIDRs").iter().enumerate() {
        if !c.as_str().is_some_and(valid_cidr) {
            e.invalid(&index("spec.podCIDRs", i), c, "must be a valid CIDR");
        }
    }
    for (i, t) in list(spec, "taints").iter().enumerate() {
        let p = index("spec.taints", i);
        match str_of(t, "key").filter(|k| !k.is_empty()) {
            Some(k) => syntax(e, &child(&p, "key"), k, qualified_name(k)),
            None => e.required(&child(&p, "key"), ""),
        }
        match get(t, "effect") {
            None => e.required(&child(&p, "effect"), ""),
            ef => e.one_of(
                &child(&p, "effect"),
                ef,
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            ),
        }
    }
}

fn namespace(e: &mut Errs, obj: &Value) {
    for (i, f) in list(obj.get("spec").unwrap_or(&Value::Null), "finalizers")
        .iter()
        .enumerate()
    {
        let name = f.as_str().unwrap_or_default();
        syntax(e, &index("spec.finalizers", i), name, qualified_name(name));
    }
}

fn service_account(e: &mut Errs, obj: &Value) {
    for (i, s) in list(obj, "secrets").iter().enumerate() {
        if let Some(name) = str_of(s, "name").filter(|n| !n.is_empty()) {
            syntax(
                e,
                &child(&index("secrets", i), "name"),
                name,
                dns1123_subdomain(name),
            );
        }
    }
}

// ---- dispatch ------------------------------------------------------------------

/// How a resource's metadata is checked.
fn meta_rule(group: &str, resource: &str) -> Option<(NameRule, bool)> {
    use NameRule::*;
    let rule = match (group, resource) {
        ("", "namespaces") => (Label, false),
        ("", "nodes" | "persistentvolumes") => (Subdomain, false),
        ("", "services") => (Dns1035, true),
        ("", "events") | ("events.k8s.io", "events") => (Subdomain, true),
        ("", "pods" | "endpoints" | "configmaps" | "secrets" | "serviceaccounts")
        | ("", "persistentvolumeclaims" | "resourcequotas" | "limitranges")
        | ("", "replicationcontrollers")
        | ("apps", "deployments" | "replicasets" | "statefulsets" | "daemonsets")
        | ("batch", "jobs" | "cronjobs")
        | ("autoscaling", "horizontalpodautoscalers")
        | ("coordination.k8s.io", "leases")
        | ("discovery.k8s.io", "endpointslices")
        | ("networking.k8s.io", "ingresses" | "networkpolicies")
        | ("policy", "poddisruptionbudgets") => (Subdomain, true),
        ("autoscaling", "scale") | ("policy", "evictions") => (PathSegment, true),
        _ => return None,
    };
    Some(rule)
}

fn validate_into(e: &mut Errs, group: &str, resource: &str, obj: &Value) {
    let Some((rule, namespaced)) = meta_rule(group, resource) else {
        e.invalid(
            "",
            &Value::from(format!("{group}/{resource}")),
            "no validation for this resource",
        );
        return;
    };
    if !obj.is_object() {
        e.invalid("", obj, "must be an object");
        return;
    }
    object_meta(e, obj, rule, namespaced);
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    match (group, resource) {
        ("", _) => core_spec(e, resource, obj, spec),
        ("apps", "deployments") => deployment(e, spec),
        ("apps", "replicasets") => replicated(e, spec, "replicaset"),
        ("apps", "statefulsets") => stateful_set(e, spec),
        ("apps", "daemonsets") => daemon_set(e, spec),
        ("batch", "jobs") => job_spec(e, spec, "spec"),
        ("batch", "cronjobs") => cron_job(e, obj, spec),
        ("autoscaling", "horizontalpodautoscalers") => hpa(e, spec),
        ("autoscaling", "scale") => at_least(e, spec, "replicas", "spec", 0),
        ("coordination.k8s.io", "leases") => lease(e, spec),
        ("discovery.k8s.io", "endpointslices") => endpoint_slice(e, obj),
        ("networking.k8s.io", "ingresses") => ingress(e, spec),
        ("networking.k8s.io", "networkpolicies") => network_policy(e, spec),
        ("events.k8s.io", "events") => events_event(e, obj),
        ("policy", "poddisruptionbudgets") => pdb(e, spec),
        _ => {}
    }
}

fn core_spec(e: &mut Errs, resource: &str, obj: &Value, spec: &Value) {
    match resource {
        "pods" => pod_spec(e, spec, "spec"),
        "services" => service(e, spec),
        "endpoints" => endpoints(e, obj),
        "configmaps" => config_map(e, obj),
        "secrets" => secret(e, obj),
        "serviceaccounts" => service_account(e, obj),
        "events" => core_event(e, obj),
        "namespaces" => namespace(e, obj),
        "nodes" => node(e, spec),
        "persistentvolumes" => persistent_volume(e, spec),
        "persistentvolumeclaims" => pvc_spec(e, spec, "spec"),
        "resourcequotas" => resource_quota(e, spec),
        "limitranges" => limit_range(e, spec),
        "replicationcontrollers" => replication_controller(e, spec),
        _ => {}
    }
}

// ---- updates ---------------------------------------------------------------------

/// Update-time validation: `validate(new)` plus the fields Kubernetes will
/// not let change once set. Immutable-field causes are FieldValueInvalid with
/// a message ending in "field is immutable".
pub fn validate_update(group: &str, resource: &str, new: &Value, old: &Value) -> Vec<Cause> {
    let mut e = Errs::default();
    validate_into(&mut e, group, resource, new);
    meta_update(&mut e, new, old);
    let (ns, os) = (
        new.get("spec").unwrap_or(&Value::Null),
        old.get("spec").unwrap_or(&Value::Null),
    );
    match (group, resource) {
        ("", "pods") => pod_update(&mut e, ns, os),
        ("", "services") => service_update(&mut e, ns, os),
        ("", "persistentvolumeclaims") => pvc_update(&mut e, ns, os),
        ("", "configmaps") => immutable_data(&mut e, new, old, &["data", "binaryData"]),
        ("", "secrets") => {
            immutable_data(&mut e, new, old, &["data", "stringData"]);
            immutable(&mut e, new, old, "type", "type");
        }
        ("", "nodes") => set_once(&mut e, ns, os, "podCIDR", "spec.podCIDR"),
        ("apps", "deployments" | "replicasets" | "daemonsets") => {
            immutable(&mut e, ns, os, "selector", "spec.selector");
        }
        ("apps", "statefulsets") => stateful_set_update(&mut e, ns, os),
        ("batch", "jobs") => {
            for k in ["selector", "template", "completionMode"] {
                immutable(&mut e, ns, os, k, &child("spec", k));
            }
        }
        ("discovery.k8s.io", "endpointslices") => {
            immutable(&mut e, new, old, "addressType", "addressType");
        }
        _ => {}
    }
    e.0
}

fn immutable_msg(e: &mut Errs, path: &str, value: Option<&Value>) {
    e.invalid(path, value.unwrap_or(&Value::Null), "field is immutable");
}

/// `new[k]` must equal `old[k]`.
fn immutable(e: &mut Errs, new: &Value, old: &Value, k: &str, path: &str) {
    if get(new, k) != get(old, k) {
        immutable_msg(e, path, get(new, k));
    }
}

/// Once `old[k]` is set it may not change; unset-to-set is allowed.
fn set_once(e: &mut Errs, new: &Value, old: &Value, k: &str, path: &str) {
    let was = str_of(old, k).filter(|s| !s.is_empty());
    if was.is_some() && str_of(new, k) != was {
        immutable_msg(e, path, get(new, k));
    }
}

/// Identity in metadata. uid and creationTimestamp are compared only when
/// the update carries them, since the server copies them from the old object.
fn meta_update(e: &mut Errs, new: &Value, old: &Value) {
    let null = Value::Null;
    let (nm, om) = (
        new.get("metadata").unwrap_or(&null),
        old.get("metadata").unwrap_or(&null),
    );
    for k in ["name", "namespace", "uid", "creationTimestamp"] {
        let n = str_of(nm, k).filter(|s| !s.is_empty());
        let o = str_of(om, k).filter(|s| !s.is_empty());
        if n.is_some() && n != o {
            immutable_msg(e, &child("metadata", k), get(nm, k));
        }
    }
}

/// Reports every top-level key of two spec objects that differs, after the
/// caller has removed the fields it allows to change.
fn diff_keys(e: &mut Errs, new: &Value, old: &Value, path: &str) {
    let empty = Map::new();
    let (n, o) = (
        new.as_object().unwrap_or(&empty),
        old.as_object().unwrap_or(&empty),
    );
    let keys: std::collections::BTreeSet<&String> = n.keys().chain(o.keys()).collect();
    for k in keys {
        let (nv, ov) = (
            n.get(k).filter(|v| !v.is_null()),
            o.get(k).filter(|v| !v.is_null()),
        );
        if nv != ov {
            immutable_msg(e, &child(path, k), nv);
        }
    }
}

fn without(v: &Value, keys: &[&str]) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        for k in keys {
            m.remove(*k);
        }
    }
    v
}

/// Pods are immutable except container images, activeDeadlineSeconds,
/// terminationGracePeriodSeconds, and added tolerations.
fn pod_update(e: &mut Errs, new: &Value, old: &Value) {
    let mutable = [
        "activeDeadlineSeconds",
        "terminationGracePeriodSeconds",
        "tolerations",
    ];
    let strip = |spec: &Value| {
        let mut s = without(spec, &mutable);
        for key in ["containers", "initContainers"] {
            let items = s.get_mut(key).and_then(Value::as_array_mut);
            for c in items.into_iter().flatten() {
                if let Some(m) = c.as_object_mut() {
                    m.remove("image");
                }
            }
        }
        s
    };
    diff_keys(e, &strip(new), &strip(old), "spec");
    let kept = list(new, "tolerations");
    if !list(old, "tolerations").iter().all(|t| kept.contains(t)) {
        e.forbidden(
            "spec.tolerations",
            "existing toleration can not be modified except its tolerationSeconds",
        );
    }
}

/// An allocated cluster IP is for life; an update that omits it is left to
/// the server, which copies it from the stored object.
fn service_update(e: &mut Errs, new: &Value, old: &Value) {
    if str_of(new, "type") == Some("ExternalName") {
        return;
    }
    set_once_if_given(e, new, old, "clusterIP", "spec.clusterIP");
    let given = !list(new, "clusterIPs").is_empty();
    if given
        && !list(old, "clusterIPs").is_empty()
        && list(new, "clusterIPs") != list(old, "clusterIPs")
    {
        immutable_msg(e, "spec.clusterIPs", get(new, "clusterIPs"));
    }
}

fn set_once_if_given(e: &mut Errs, new: &Value, old: &Value, k: &str, path: &str) {
    if str_of(new, k).is_some_and(|s| !s.is_empty()) {
        set_once(e, new, old, k, path);
    }
}

/// PVC specs are fixed except storage requests, which may only grow; the
/// volume name may be set once, by binding.
fn pvc_update(e: &mut Errs, new: &Value, old: &Value) {
    let mut mutable = vec!["resources", "volumeAttributesClassName"];
    if str_of(old, "volumeName").is_none_or(str::is_empty) {
        mutable.push("volumeName");
    }
    diff_keys(e, &without(new, &mutable), &without(old, &mutable), "spec");
    let limits = |v: &Value| v.pointer("/resources/limits").cloned();
    if limits(new) != limits(old) {
        immutable_msg(e, "spec.resources.limits", new.pointer("/resources/limits"));
    }
    let storage = |v: &Value| {
        v.pointer("/resources/requests/storage")
            .and_then(Value::as_str)
            .and_then(quantity_nanos)
    };
    if let (Some(n), Some(o)) = (storage(new), storage(old)) {
        if n < o {
            e.forbidden(
                "spec.resources.requests.storage",
                "field can not be less than previous value",
            );
        }
    }
}

/// StatefulSets may only change replicas, ordinals, template, updateStrategy,
/// revisionHistoryLimit, persistentVolumeClaimRetentionPolicy and minReadySeconds.
fn stateful_set_update(e: &mut Errs, new: &Value, old: &Value) {
    let mutable = [
        "replicas",
        "ordinals",
        "template",
        "updateStrategy",
        "revisionHistoryLimit",
        "persistentVolumeClaimRetentionPolicy",
        "minReadySeconds",
    ];
    diff_keys(e, &without(new, &mutable), &without(old, &mutable), "spec");
}

/// ConfigMaps and Secrets marked immutable keep their data and the mark.
fn immutable_data(e: &mut Errs, new: &Value, old: &Value, sections: &[&str]) {
    if get(old, "immutable") != Some(&Value::Bool(true)) {
        return;
    }
    if get(new, "immutable") != Some(&Value::Bool(true)) {
        e.forbidden("immutable", "field is immutable when `immutable` is set");
    }
    for k in sections {
        if get(new, k) != get(old, k) {
            e.forbidden(k, "field is immutable when `immutable` is set");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(causes: &[Cause]) -> Vec<String> {
        causes
            .iter()
            .map(|c| format!("{} {}", c.field, c.reason))
            .collect()
    }

    /// Asserts `obj` is valid.
    fn ok(group: &str, resource: &str, obj: &Value) {
        let causes = validate(group, resource, obj);
        assert!(causes.is_empty(), "{group}/{resource}: {causes:?}");
    }

    /// Asserts validation reports exactly one cause at `field` with `reason`.
    fn bad(group: &str, resource: &str, obj: &Value, field: &str, reason: &str) -> Cause {
        let causes = validate(group, resource, obj);
        let hits: Vec<&Cause> = causes
            .iter()
            .filter(|c| c.field == field && c.reason == reason)
            .collect();
        assert_eq!(
            hits.len(),
            1,
            "want {field} {reason}, got {:?}",
            fields(&causes)
        );
        hits[0].clone()
    }

    fn meta(name: &str) -> Value {
        json!({"name": name, "namespace": "default"})
    }

    fn pod(spec: Value) -> Value {
        json!({"metadata": meta("p"), "spec": spec})
    }

    fn c(name: &str) -> Value {
        json!({"name": name, "image": "nginx"})
    }

    fn deployment(selector: Value, labels: Value) -> Value {
        json!({"metadata": meta("d"), "spec": {"replicas": 1, "selector": selector,
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [c("a")]}}}})
    }

    #[test]
    fn name_rules() {
        ok("", "pods", &pod(json!({"containers": [c("a")]})));
        bad(
            "",
            "pods",
            &json!({"metadata": {"namespace": "d"}, "spec": {"containers": [c("a")]}}),
            "metadata.name",
            "FieldValueRequired",
        );
        bad(
            "",
            "pods",
            &json!({"metadata": meta("Bad_Name"), "spec": {"containers": [c("a")]}}),
            "metadata.name",
            "FieldValueInvalid",
        );
        ok("", "namespaces", &json!({"metadata": {"name": "team-a"}}));
        bad(
            "",
            "namespaces",
            &json!({"metadata": {"name": "a.b"}}),
            "metadata.name",
            "FieldValueInvalid",
        );
        bad(
            "",
            "namespaces",
            &json!({"metadata": {"name": "a", "namespace": "x"}}),
            "metadata.namespace",
            "FieldValueForbidden",
        );
        let svc = |n: &str| json!({"metadata": meta(n), "spec": {"ports": [{"port": 80}]}});
        ok("", "services", &svc("web"));
        bad(
            "",
            "services",
            &svc("1web"),
            "metadata.name",
            "FieldValueInvalid",
        );
        bad(
            "",
            "configmaps",
            &json!({"metadata": {"name": "x"}}),
            "metadata.namespace",
            "FieldValueRequired",
        );
    }

    #[test]
    fn label_and_annotation_rules() {
        let mut p = pod(json!({"containers": [c("a")]}));
        p["metadata"]["labels"] = json!({"app.kubernetes.io/name": "web", "ok": ""});
        p["metadata"]["annotations"] = json!({"example.com/Note": "anything at all"});
        ok("", "pods", &p);
        p["metadata"]["labels"] = json!({"bad key!": "v"});
        bad("", "pods", &p, "metadata.labels", "FieldValueInvalid");
        p["metadata"]["labels"] = json!({"k": "-bad"});
        bad("", "pods", &p, "metadata.labels[k]", "FieldValueInvalid");
        p["metadata"]["labels"] = json!({"k": "x".repeat(64)});
        bad("", "pods", &p, "metadata.labels[k]", "FieldValueInvalid");
        p["metadata"]["labels"] = json!({});
        p["metadata"]["annotations"] = json!({"a": "x".repeat(MAX_ANNOTATIONS_BYTES)});
        bad("", "pods", &p, "metadata.annotations", "FieldValueTooLong");
    }

    #[test]
    fn pod_containers() {
        bad(
            "",
            "pods",
            &pod(json!({"containers": []})),
            "spec.containers",
            "FieldValueRequired",
        );
        let dup = pod(json!({"containers": [c("a")], "initContainers": [c("a")]}));
        bad(
            "",
            "pods",
            &dup,
            "spec.initContainers[0].name",
            "FieldValueDuplicate",
        );
        let noimg = pod(json!({"containers": [c("a"), {"name": "b"}]}));
        bad(
            "",
            "pods",
            &noimg,
            "spec.containers[1].image",
            "FieldValueRequired",
        );
        let badname = pod(json!({"containers": [c("A")]}));
        bad(
            "",
            "pods",
            &badname,
            "spec.containers[0].name",
            "FieldValueInvalid",
        );
    }

    #[test]
    fn pod_ports() {
        let ports =
            |p: Value| pod(json!({"containers": [{"name": "a", "image": "x", "ports": p}]}));
        ok(
            "",
            "pods",
            &ports(
                json!([{"containerPort": 80, "name": "http", "protocol": "TCP"},
            {"containerPort": 81, "name": "metrics"}]),
            ),
        );
        bad(
            "",
            "pods",
            &ports(json!([{"containerPort": 0}])),
            "spec.containers[0].ports[0].containerPort",
            "FieldValueInvalid",
        );
        bad(
            "",
            "pods",
            &ports(json!([{"containerPort": 70000}])),
            "spec.containers[0].ports[0].containerPort",
            "FieldValueInvalid",
        );
        bad(
            "",
            "pods",
            &ports(json!([{"containerPort": 1, "name": "h"}, {"containerPort": 2, "name": "h"}])),
            "spec.containers[0].ports[1].name",
            "FieldValueDuplicate",
        );
        bad(
            "",
            "pods",
            &ports(json!([{"containerPort": 1, "protocol": "HTTP"}])),
            "spec.containers[0].ports[0].protocol",
            "FieldValueNotSupported",
        );
    }

    #[test]
    fn pod_policies_and_volumes() {
        bad(
            "",
            "pods",
            &pod(json!({"containers": [c("a")], "restartPolicy": "Sometimes"})),
            "spec.restartPolicy",
            "FieldValueNotSupported",
        );
        let vols = |mount: &str| {
            pod(json!({"volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [{"name": "a", "image": "x", "volumeMounts": [{"name": mount, "mountPath": "/d"}]}]}))
        };
        ok("", "pods", &vols("data"));
        bad(
            "",
            "pods",
            &vols("nope"),
            "spec.containers[0].volumeMounts[0].name",
            "FieldValueNotFound",
        );
        let dup = pod(json!({"containers": [c("a")], "volumes": [
            {"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}]}));
        bad(
            "",
            "pods",
            &dup,
            "spec.volumes[1].name",
            "FieldValueDuplicate",
        );
        let two = pod(json!({"containers": [c("a")], "volumes": [
            {"name": "v", "emptyDir": {}, "hostPath": {"path": "/"}}]}));
        bad("", "pods", &two, "spec.volumes[0]", "FieldValueForbidden");
    }

    #[test]
    fn pod_resources() {
        let res =
            |r: Value| pod(json!({"containers": [{"name": "a", "image": "x", "resources": r}]}));
        ok(
            "",
            "pods",
            &res(json!({"requests": {"cpu": "500m", "memory": "1Gi"},
            "limits": {"cpu": "0.5", "memory": "1073741824"}})),
        );
        let cause = bad(
            "",
            "pods",
            &res(json!({"requests": {"cpu": "2"}, "limits": {"cpu": "1"}})),
            "spec.containers[0].resources.requests[cpu]",
            "FieldValueInvalid",
        );
        assert_eq!(
            cause.message,
            "Invalid value: \"2\": must be less than or equal to cpu limit of 1"
        );
        bad(
            "",
            "pods",
            &res(json!({"limits": {"cpu": "lots"}})),
            "spec.containers[0].resources.limits[cpu]",
            "FieldValueInvalid",
        );
        bad(
            "",
            "pods",
            &res(json!({"requests": {"cpu": "-1"}})),
            "spec.containers[0].resources.requests[cpu]",
            "FieldValueInvalid",
        );
    }

    #[test]
    fn workload_selectors() {
        ok(
            "apps",
            "deployments",
            &deployment(
                json!({"matchLabels": {"app": "a"}}),
                json!({"app": "a", "x": "y"}),
            ),
        );
        let d = deployment(json!({"matchLabels": {"app": "a"}}), json!({"app": "b"}));
        let cause = bad(
            "apps",
            "deployments",
            &d,
            "spec.template.metadata.labels",
            "FieldValueInvalid",
        );
        assert!(
            cause.message.contains("does not match template"),
            "{}",
            cause.message
        );
        bad(
            "apps",
            "deployments",
            &deployment(json!({}), json!({"app": "a"})),
            "spec.selector",
            "FieldValueInvalid",
        );
        let mut d = deployment(json!({"matchLabels": {"app": "a"}}), json!({"app": "a"}));
        d["spec"].as_object_mut().unwrap().remove("selector");
        bad(
            "apps",
            "deployments",
            &d,
            "spec.selector",
            "FieldValueRequired",
        );
        let expr = deployment(
            json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["a"]}]}),
            json!({"app": "a"}),
        );
        ok("apps", "deployments", &expr);
        let expr = deployment(
            json!({"matchExpressions": [{"key": "app", "operator": "In"}]}),
            json!({"app": "a"}),
        );
        bad(
            "apps",
            "deployments",
            &expr,
            "spec.selector.matchExpressions[0].values",
            "FieldValueRequired",
        );
    }

    #[test]
    fn workload_fields() {
        let mut d = deployment(json!({"matchLabels": {"app": "a"}}), json!({"app": "a"}));
        d["spec"]["replicas"] = json!(-1);
        bad(
            "apps",
            "deployments",
            &d,
            "spec.replicas",
            "FieldValueInvalid",
        );
        d["spec"]["replicas"] = json!(1);
        d["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        bad(
            "apps",
            "deployments",
            &d,
            "spec.template.spec.restartPolicy",
            "FieldValueNotSupported",
        );
        d["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
        d["spec"]["template"]["spec"]["containers"][0]["name"] = json!("B");
        bad(
            "apps",
            "deployments",
            &d,
            "spec.template.spec.containers[0].name",
            "FieldValueInvalid",
        );
        d["spec"]["template"]["spec"]["containers"][0]["name"] = json!("b");
        d["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}});
        bad(
            "apps",
            "deployments",
            &d,
            "spec.strategy.rollingUpdate.maxUnavailable",
            "FieldValueInvalid",
        );
        d["spec"]["strategy"] =
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "x"}});
        bad(
            "apps",
            "deployments",
            &d,
            "spec.strategy.rollingUpdate.maxSurge",
            "FieldValueInvalid",
        );
        d["spec"]["strategy"] = json!({"type": "Recreate"});
        ok("apps", "deployments", &d);
    }

    #[test]
    fn other_workloads() {
        let rs = deployment(json!({"matchLabels": {"app": "a"}}), json!({"app": "a"}));
        ok("apps", "replicasets", &rs);
        ok("apps", "daemonsets", &rs);
        let mut ss = rs.clone();
        ss["spec"]["podManagementPolicy"] = json!("Parallel");
        ok("apps", "statefulsets", &ss);
        ss["spec"]["podManagementPolicy"] = json!("Random");
        bad(
            "apps",
            "statefulsets",
            &ss,
            "spec.podManagementPolicy",
            "FieldValueNotSupported",
        );
        let rc = json!({"metadata": meta("r"), "spec": {"selector": {"app": "a"},
            "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [c("a")]}}}});
        ok("", "replicationcontrollers", &rc);
        let mut rc2 = rc.clone();
        rc2["spec"]["selector"] = json!({"app": "z"});
        bad(
            "",
            "replicationcontrollers",
            &rc2,
            "spec.template.metadata.labels",
            "FieldValueInvalid",
        );
    }

    #[test]
    fn jobs_and_cron_jobs() {
        let tpl = json!({"metadata": {"labels": {"j": "1"}}, "spec": {"restartPolicy": "Never", "containers": [c("a")]}});
        let job = json!({"metadata": meta("j"), "spec": {"template": tpl}});
        ok("batch", "jobs", &job);
        let mut always = job.clone();
        always["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
        bad(
            "batch",
            "jobs",
            &always,
            "spec.template.spec.restartPolicy",
            "FieldValueNotSupported",
        );
        let mut neg = job.clone();
        neg["spec"]["backoffLimit"] = json!(-1);
        bad(
            "batch",
            "jobs",
            &neg,
            "spec.backoffLimit",
            "FieldValueInvalid",
        );
        let cron = |s: &str| json!({"metadata": meta("c"), "spec": {"schedule": s, "jobTemplate": {"spec": {"template": tpl}}}});
        ok("batch", "cronjobs", &cron("*/5 * * * *"));
        ok("batch", "cronjobs", &cron("0 9-17 * jan-jun mon-fri"));
        ok("batch", "cronjobs", &cron("@hourly"));
        bad(
            "batch",
            "cronjobs",
            &cron(""),
            "spec.schedule",
            "FieldValueRequired",
        );
        bad(
            "batch",
            "cronjobs",
            &cron("* * *"),
            "spec.schedule",
            "FieldValueInvalid",
        );
        bad(
            "batch",
            "cronjobs",
            &cron("61 * * * *"),
            "spec.schedule",
            "FieldValueInvalid",
        );
        bad(
            "batch",
            "cronjobs",
            &cron("TZ=UTC * * * * *"),
            "spec.schedule",
            "FieldValueInvalid",
        );
    }

    #[test]
    fn services() {
        let svc = |spec: Value| json!({"metadata": meta("s"), "spec": spec});
        ok(
            "",
            "services",
            &svc(
                json!({"ports": [{"name": "a", "port": 80, "targetPort": "http"},
            {"name": "b", "port": 81, "targetPort": 8081}]}),
            ),
        );
        ok("", "services", &svc(json!({"clusterIP": "None"})));
        ok(
            "",
            "services",
            &svc(json!({"type": "ExternalName", "externalName": "db.example.com"})),
        );
        bad(
            "",
            "services",
            &svc(json!({})),
            "spec.ports",
            "FieldValueRequired",
        );
        bad(
            "",
            "services",
            &svc(json!({"ports": [{"port": 80}, {"name": "b", "port": 81}]})),
            "spec.ports[0].name",
            "FieldValueRequired",
        );
        bad(
            "",
            "services",
            &svc(json!({"ports": [{"name": "a", "port": 80}, {"name": "a", "port": 81}]})),
            "spec.ports[1].name",
            "FieldValueDuplicate",
        );
        bad(
            "",
            "services",
            &svc(json!({"ports": [{"port": 0}]})),
            "spec.ports[0].port",
            "FieldValueInvalid",
        );
        bad(
            "",
            "services",
            &svc(json!({"type": "Fancy", "ports": [{"port": 1}]})),
            "spec.type",
            "FieldValueNotSupported",
        );
        bad(
            "",
            "services",
            &svc(json!({"ports": [{"port": 1, "targetPort": "Not_OK"}]})),
            "spec.ports[0].targetPort",
            "FieldValueInvalid",
        );
        bad(
            "",
            "services",
            &svc(json!({"ports": [{"port": 1, "nodePort": 30000}]})),
            "spec.ports[0].nodePort",
            "FieldValueForbidden",
        );
        bad(
            "",
            "services",
            &svc(json!({"type": "ExternalName"})),
            "spec.externalName",
            "FieldValueRequired",
        );
    }

    #[test]
    fn config_maps_and_secrets() {
        let cm = |data: Value| json!({"metadata": meta("c"), "data": data});
        ok(
            "",
            "configmaps",
            &cm(json!({"app.properties": "x", "KEY_1": "y"})),
        );
        bad(
            "",
            "configmaps",
            &cm(json!({"bad/key": "x"})),
            "data[bad/key]",
            "FieldValueInvalid",
        );
        bad(
            "",
            "configmaps",
            &cm(json!({"..x": "x"})),
            "data[..x]",
            "FieldValueInvalid",
        );
        bad(
            "",
            "configmaps",
            &cm(json!({"a": "x".repeat(MAX_CONFIG_BYTES + 1)})),
            "",
            "FieldValueTooLong",
        );
        let secret = json!({"metadata": meta("s"), "type": "kubernetes.io/tls", "data": {"tls.crt": "eA=="}});
        bad(
            "",
            "secrets",
            &secret,
            "data[tls.key]",
            "FieldValueRequired",
        );
        ok(
            "",
            "secrets",
            &json!({"metadata": meta("s"), "type": "Opaque", "data": {"k": "eA=="}}),
        );
    }

    #[test]
    fn misc_resources() {
        let lease = |d: i64| json!({"metadata": meta("l"), "spec": {"leaseDurationSeconds": d}});
        ok("coordination.k8s.io", "leases", &lease(15));
        bad(
            "coordination.k8s.io",
            "leases",
            &lease(0),
            "spec.leaseDurationSeconds",
            "FieldValueInvalid",
        );
        let hpa = |min: i64, max: i64| {
            json!({"metadata": meta("h"), "spec": {"minReplicas": min, "maxReplicas": max,
            "scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"}}})
        };
        ok("autoscaling", "horizontalpodautoscalers", &hpa(1, 3));
        bad(
            "autoscaling",
            "horizontalpodautoscalers",
            &hpa(4, 3),
            "spec.maxReplicas",
            "FieldValueInvalid",
        );
        bad(
            "autoscaling",
            "horizontalpodautoscalers",
            &hpa(0, 3),
            "spec.minReplicas",
            "FieldValueInvalid",
        );
        let pdb = |spec: Value| json!({"metadata": meta("p"), "spec": spec});
        ok(
            "policy",
            "poddisruptionbudgets",
            &pdb(json!({"minAvailable": "50%"})),
        );
        bad(
            "policy",
            "poddisruptionbudgets",
            &pdb(json!({"minAvailable": 1, "maxUnavailable": 1})),
            "spec",
            "FieldValueInvalid",
        );
        let pvc = |spec: Value| json!({"metadata": meta("c"), "spec": spec});
        ok(
            "",
            "persistentvolumeclaims",
            &pvc(json!({"accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}}})),
        );
        bad(
            "",
            "persistentvolumeclaims",
            &pvc(json!({"accessModes": ["ReadWriteOnce"]})),
            "spec.resources[storage]",
            "FieldValueRequired",
        );
        let ing = json!({"metadata": meta("i"), "spec": {"rules": [{"host": "*.example.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}});
        ok("networking.k8s.io", "ingresses", &ing);
        let mut ing2 = ing.clone();
        ing2["spec"]["rules"][0]["http"]["paths"][0]["path"] = json!("rel");
        bad(
            "networking.k8s.io",
            "ingresses",
            &ing2,
            "spec.rules[0].http.paths[0].path",
            "FieldValueInvalid",
        );
        let np = json!({"metadata": meta("n"), "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]}});
        bad(
            "networking.k8s.io",
            "networkpolicies",
            &np,
            "spec.ingress[0].from[0].ipBlock.cidr",
            "FieldValueInvalid",
        );
        let ev = json!({"metadata": meta("e"), "eventTime": "2024-01-01T00:00:00.000000Z", "reportingController": "k8s.io/x",
            "reportingInstance": "i", "action": "A", "reason": "R", "type": "Normal"});
        ok("events.k8s.io", "events", &ev);
        let mut ev2 = ev.clone();
        ev2["type"] = json!("Bad");
        bad(
            "events.k8s.io",
            "events",
            &ev2,
            "type",
            "FieldValueNotSupported",
        );
        let es = json!({"metadata": meta("e"), "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}],
            "ports": [{"port": 80}]});
        ok("discovery.k8s.io", "endpointslices", &es);
        let ep = json!({"metadata": meta("e"), "subsets": [{"addresses": [{"ip": "nope"}]}]});
        bad(
            "",
            "endpoints",
            &ep,
            "subsets[0].addresses[0].ip",
            "FieldValueInvalid",
        );
        ok(
            "autoscaling",
            "scale",
            &json!({"metadata": meta("web"), "spec": {"replicas": 2}}),
        );
        bad(
            "autoscaling",
            "scale",
            &json!({"metadata": meta("web"), "spec": {"replicas": -2}}),
            "spec.replicas",
            "FieldValueInvalid",
        );
        ok("policy", "evictions", &json!({"metadata": meta("p")}));
    }

    #[test]
    fn unknown_resource_and_odd_input() {
        assert!(!validate("x", "y", &json!({})).is_empty());
        for v in [
            json!(null),
            json!(1),
            json!({"metadata": 5, "spec": []}),
            json!({"spec": {"containers": "x"}}),
        ] {
            for (g, r) in [
                ("", "pods"),
                ("apps", "deployments"),
                ("", "services"),
                ("batch", "cronjobs"),
            ] {
                assert!(!validate(g, r, &v).is_empty());
                let _ = validate_update(g, r, &v, &json!([]));
            }
        }
    }

    #[test]
    fn pod_update_rules() {
        let old = pod(
            json!({"containers": [c("a")], "tolerations": [{"key": "k", "operator": "Exists"}]}),
        );
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("nginx:2");
        new["spec"]["tolerations"] =
            json!([{"key": "k", "operator": "Exists"}, {"key": "j", "operator": "Exists"}]);
        new["spec"]["activeDeadlineSeconds"] = json!(10);
        assert!(validate_update("", "pods", &new, &old).is_empty());
        new["spec"]["restartPolicy"] = json!("Never");
        let causes = validate_update("", "pods", &new, &old);
        assert_eq!(
            fields(&causes),
            vec!["spec.restartPolicy FieldValueInvalid"]
        );
        assert!(causes[0].message.ends_with("field is immutable"));
        let mut removed = old.clone();
        removed["spec"]["tolerations"] = json!([]);
        assert_eq!(
            fields(&validate_update("", "pods", &removed, &old)),
            vec!["spec.tolerations FieldValueForbidden"]
        );
    }

    #[test]
    fn workload_update_rules() {
        let old = deployment(json!({"matchLabels": {"app": "a"}}), json!({"app": "a"}));
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(5);
        assert!(validate_update("apps", "deployments", &new, &old).is_empty());
        new["spec"]["selector"] = json!({"matchLabels": {"app": "a", "b": "c"}});
        new["spec"]["template"]["metadata"]["labels"]["b"] = json!("c");
        assert_eq!(
            fields(&validate_update("apps", "deployments", &new, &old)),
            vec!["spec.selector FieldValueInvalid"]
        );
        let mut ss = old.clone();
        ss["spec"]["serviceName"] = json!("x");
        assert_eq!(
            fields(&validate_update("apps", "statefulsets", &ss, &old)),
            vec!["spec.serviceName FieldValueInvalid"]
        );
        let tpl = json!({"metadata": {"labels": {"j": "1"}}, "spec": {"restartPolicy": "Never", "containers": [c("a")]}});
        let job = json!({"metadata": meta("j"), "spec": {"template": tpl}});
        let mut job2 = job.clone();
        job2["spec"]["template"]["spec"]["containers"][0]["image"] = json!("other");
        assert_eq!(
            fields(&validate_update("batch", "jobs", &job2, &job)),
            vec!["spec.template FieldValueInvalid"]
        );
    }

    #[test]
    fn service_and_pvc_update_rules() {
        let old = json!({"metadata": meta("s"), "spec": {"clusterIP": "10.0.0.5", "ports": [{"port": 80}]}});
        let mut new = old.clone();
        new["spec"]["ports"][0]["port"] = json!(81);
        assert!(validate_update("", "services", &new, &old).is_empty());
        new["spec"]["clusterIP"] = json!("10.0.0.6");
        assert_eq!(
            fields(&validate_update("", "services", &new, &old)),
            vec!["spec.clusterIP FieldValueInvalid"]
        );
        new["spec"].as_object_mut().unwrap().remove("clusterIP");
        assert!(validate_update("", "services", &new, &old).is_empty());
        let pvc = |size: &str, class: &str| {
            json!({"metadata": meta("c"), "spec": {"accessModes": ["ReadWriteOnce"],
            "storageClassName": class, "resources": {"requests": {"storage": size}}}})
        };
        assert!(validate_update(
            "",
            "persistentvolumeclaims",
            &pvc("2Gi", "a"),
            &pvc("1Gi", "a")
        )
        .is_empty());
        assert_eq!(
            fields(&validate_update(
                "",
                "persistentvolumeclaims",
                &pvc("1Gi", "a"),
                &pvc("2Gi", "a")
            )),
            vec!["spec.resources.requests.storage FieldValueForbidden"]
        );
        assert_eq!(
            fields(&validate_update(
                "",
                "persistentvolumeclaims",
                &pvc("1Gi", "b"),
                &pvc("1Gi", "a")
            )),
            vec!["spec.storageClassName FieldValueInvalid"]
        );
    }

    #[test]
    fn config_and_meta_update_rules() {
        let cm =
            |v: &str, imm: bool| json!({"metadata": meta("c"), "immutable": imm, "data": {"k": v}});
        assert!(validate_update("", "configmaps", &cm("2", false), &cm("1", false)).is_empty());
        assert_eq!(
            fields(&validate_update(
                "",
                "configmaps",
                &cm("2", true),
                &cm("1", true)
            )),
            vec!["data FieldValueForbidden"]
        );
        let s = |t: &str| json!({"metadata": meta("s"), "type": t});
        assert_eq!(
            fields(&validate_update("", "secrets", &s("a/b"), &s("Opaque"))),
            vec!["type FieldValueInvalid"]
        );
        let mut renamed = cm("1", false);
        renamed["metadata"]["name"] = json!("other");
        assert_eq!(
            fields(&validate_update(
                "",
                "configmaps",
                &renamed,
                &cm("1", false)
            )),
            vec!["metadata.name FieldValueInvalid"]
        );
    }

    #[test]
    fn defaulted_objects_stay_valid() {
        let tpl = json!({"metadata": {"labels": {"app": "a"}},
            "spec": {"containers": [{"name": "a", "image": "x", "ports": [{"containerPort": 80}],
                "resources": {"limits": {"cpu": "1"}}, "livenessProbe": {"httpGet": {"port": 80}}}],
                "volumes": [{"name": "v"}]}});
        let sel = json!({"matchLabels": {"app": "a"}});
        let cases = [
            (
                "",
                "pods",
                json!({"metadata": meta("p"), "spec": tpl["spec"].clone()}),
            ),
            (
                "apps",
                "deployments",
                json!({"metadata": meta("d"), "spec": {"selector": sel, "template": tpl}}),
            ),
            (
                "apps",
                "statefulsets",
                json!({"metadata": meta("s"), "spec": {"selector": sel, "template": tpl}}),
            ),
            (
                "apps",
                "daemonsets",
                json!({"metadata": meta("d"), "spec": {"selector": sel, "template": tpl}}),
            ),
            (
                "",
                "services",
                json!({"metadata": meta("s"), "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}),
            ),
            ("", "namespaces", json!({"metadata": {"name": "n"}})),
            (
                "",
                "secrets",
                json!({"metadata": meta("s"), "stringData": {"a": "b"}}),
            ),
        ];
        for (g, r, mut obj) in cases {
            super::super::apply_defaults(g, r, &mut obj);
            ok(g, r, &obj);
        }
    }
}
