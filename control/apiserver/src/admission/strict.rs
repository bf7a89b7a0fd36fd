//! Strict decoding: does a JSON object fit the k8s-openapi type of its
//! resource, and which of its fields does that type not know?
//!
//! Kubernetes answers both questions while decoding (`fieldValidation=Strict`
//! rejects unknown fields, `Warn` reports them). We get the unknown fields from
//! `serde_ignored`, and the path of a type error from [`PathDe`], a small
//! deserializer over `serde_json::Value` that remembers where it is: serde's
//! own errors say what went wrong but not where.

use std::fmt;

use k8s_openapi::api::{
    apps::v1 as apps, autoscaling::v1 as autoscaling_v1, autoscaling::v2 as autoscaling_v2,
    batch::v1 as batch, coordination::v1 as coordination, core::v1 as core,
    discovery::v1 as discovery, events::v1 as events, networking::v1 as networking,
    policy::v1 as policy,
};
use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, IntoDeserializer, Visitor};
use serde_json::Value;

/// Decodes `obj` into the k8s-openapi type for `(group, resource)`.
///
/// Ok holds the paths of the fields the type does not know, formatted like
/// Kubernetes (`spec.template.spec.containers[0].imagez`). Err holds a message
/// naming the field whose JSON does not fit the type, e.g.
/// `spec.replicas: invalid type: string "x", expected i32`, or says that the
/// resource is unknown.
pub fn unknown_fields(group: &str, resource: &str, obj: &Value) -> Result<Vec<String>, String> {
    match (group, resource) {
        ("", _) => core_kind(resource, obj),
        ("apps", _) => apps_kind(resource, obj),
        ("batch", "jobs") => decode::<batch::Job>(obj),
        ("batch", "cronjobs") => decode::<batch::CronJob>(obj),
        ("autoscaling", "horizontalpodautoscalers") => {
            decode::<autoscaling_v2::HorizontalPodAutoscaler>(obj)
        }
        ("autoscaling", "scale") => decode::<autoscaling_v1::Scale>(obj),
        ("coordination.k8s.io", "leases") => decode::<coordination::Lease>(obj),
        ("discovery.k8s.io", "endpointslices") => decode::<discovery::EndpointSlice>(obj),
        ("networking.k8s.io", "ingresses") => decode::<networking::Ingress>(obj),
        ("networking.k8s.io", "networkpolicies") => decode::<networking::NetworkPolicy>(obj),
        ("events.k8s.io", "events") => decode::<events::Event>(obj),
        ("policy", "poddisruptionbudgets") => decode::<policy::PodDisruptionBudget>(obj),
        ("policy", "evictions") => decode::<policy::Eviction>(obj),
        _ => Err(unknown_resource(group, resource)),
    }
}

fn unknown_resource(group: &str, resource: &str) -> String {
    format!("no decoder for resource {resource:?} in group {group:?}")
}

/// The core ("" group) resources, split out to keep the dispatch readable.
fn core_kind(resource: &str, obj: &Value) -> Result<Vec<String>, String> {
    match resource {
        "namespaces" => decode::<core::Namespace>(obj),
        "nodes" => decode::<core::Node>(obj),
        "pods" => decode::<core::Pod>(obj),
        "services" => decode::<core::Service>(obj),
        "endpoints" => decode::<core::Endpoints>(obj),
        "configmaps" => decode::<core::ConfigMap>(obj),
        "secrets" => decode::<core::Secret>(obj),
        "serviceaccounts" => decode::<core::ServiceAccount>(obj),
        "events" => decode::<core::Event>(obj),
        "persistentvolumes" => decode::<core::PersistentVolume>(obj),
        "persistentvolumeclaims" => decode::<core::PersistentVolumeClaim>(obj),
        "resourcequotas" => decode::<core::ResourceQuota>(obj),
        "limitranges" => decode::<core::LimitRange>(obj),
        "replicationcontrollers" => decode::<core::ReplicationController>(obj),
        _ => Err(unknown_resource("", resource)),
    }
}

fn apps_kind(resource: &str, obj: &Value) -> Result<Vec<String>, String> {
    match resource {
        "deployments" => decode::<apps::Deployment>(obj),
        "replicasets" => decode::<apps::ReplicaSet>(obj),
        "statefulsets" => decode::<apps::StatefulSet>(obj),
        "daemonsets" => decode::<apps::DaemonSet>(obj),
        _ => Err(unknown_resource("apps", resource)),
    }
}

/// Decodes into `T`, collecting ignored paths; the decoded value itself is
/// dropped because callers keep working on the JSON they were given.
fn decode<T: DeserializeOwned>(obj: &Value) -> Result<Vec<String>, String> {
    let mut unknown = Vec::new();
    let de = PathDe {
        value: obj,
        path: String::new(),
    };
    serde_ignored::deserialize::<_, _, T>(de, |path| unknown.push(format_path(&path)))
        .map(|_| unknown)
        .map_err(|e| e.to_string())
}

/// Formats a serde_ignored path the way Kubernetes prints field paths.
fn format_path(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", format_path(parent)),
        Path::Map { parent, key } => join(&format_path(parent), key),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => format_path(parent),
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// A decode error together with the field path where it arose.
#[derive(Debug)]
pub struct PathError {
    path: Option<String>,
    msg: String,
}

impl PathError {
    /// Attaches `path` unless a deeper one is already there: errors bubble up
    /// through every enclosing value, and the innermost path is the useful one.
    fn at(mut self, path: &str) -> Self {
        if self.path.is_none() && !path.is_empty() {
            self.path = Some(path.to_string());
        }
        self
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "{path}: {}", self.msg),
            None => f.write_str(&self.msg),
        }
    }
}

impl std::error::Error for PathError {}

impl de::Error for PathError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        PathError {
            path: None,
            msg: msg.to_string(),
        }
    }
}

fn from_json(e: serde_json::Error, path: &str) -> PathError {
    <PathError as de::Error>::custom(e).at(path)
}

/// Deserializer over a borrowed JSON value that knows its own field path.
/// Containers are walked here so children get their paths; scalars and enums
/// are handed to serde_json's own `&Value` deserializer.
struct PathDe<'a> {
    value: &'a Value,
    path: String,
}

macro_rules! forward_scalar {
    ($($method:ident)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
                match self.value {
                    Value::Array(_) | Value::Object(_) => self.deserialize_any(visitor),
                    value => value.$method(visitor).map_err(|e| from_json(e, &self.path)),
                }
            }
        )*
    };
}

impl<'de> Deserializer<'de> for PathDe<'de> {
    type Error = PathError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        let path = self.path.clone();
        let result = match self.value {
            Value::Array(items) => visitor.visit_seq(SeqDe {
                iter: items.iter().enumerate(),
                path: self.path,
            }),
            Value::Object(map) => visitor.visit_map(MapDe {
                iter: map.iter(),
                pending: None,
                path: self.path,
            }),
            value => value
                .deserialize_any(visitor)
                .map_err(|e| from_json(e, &path)),
        };
        result.map_err(|e| e.at(&path))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        let path = self.path.clone();
        match self.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
        .map_err(|e| e.at(&path))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, PathError> {
        let path = self.path.clone();
        visitor.visit_newtype_struct(self).map_err(|e| e.at(&path))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, PathError> {
        self.value
            .deserialize_enum(name, variants, visitor)
            .map_err(|e| from_json(e, &self.path))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        let fits = matches!(self.value, Value::Array(_));
        self.expect_container(fits, visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        let fits = matches!(self.value, Value::Object(_));
        self.expect_container(fits, visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, PathError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, PathError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, PathError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, PathError> {
        self.value
            .deserialize_unit_struct(name, visitor)
            .map_err(|e| from_json(e, &self.path))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, PathError> {
        visitor.visit_unit()
    }

    forward_scalar! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char deserialize_str
        deserialize_string deserialize_bytes deserialize_byte_buf deserialize_unit
        deserialize_identifier
    }
}

impl<'de> PathDe<'de> {
    /// Walks a container of the expected JSON kind; anything else gets the
    /// visitor's own "invalid type" error, tagged with this path.
    fn expect_container<V: Visitor<'de>>(
        self,
        fits: bool,
        visitor: V,
    ) -> Result<V::Value, PathError> {
        if fits {
            return self.deserialize_any(visitor);
        }
        let path = self.path.clone();
        self.value
            .deserialize_any(visitor)
            .map_err(|e| from_json(e, &path))
    }
}

struct SeqDe<'a> {
    iter: std::iter::Enumerate<std::slice::Iter<'a, Value>>,
    path: String,
}

impl<'de> de::SeqAccess<'de> for SeqDe<'de> {
    type Error = PathError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, PathError> {
        match self.iter.next() {
            None => Ok(None),
            Some((index, value)) => {
                let path = format!("{}[{index}]", self.path);
                seed.deserialize(PathDe { value, path }).map(Some)
            }
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct MapDe<'a> {
    iter: serde_json::map::Iter<'a>,
    pending: Option<(&'a String, &'a Value)>,
    path: String,
}

impl<'de> de::MapAccess<'de> for MapDe<'de> {
    type Error = PathError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, PathError> {
        let Some((key, value)) = self.iter.next() else {
            return Ok(None);
        };
        self.pending = Some((key, value));
        let key_de: de::value::StrDeserializer<'_, PathError> = key.as_str().into_deserializer();
        seed.deserialize(key_de).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, PathError> {
        let Some((key, value)) = self.pending.take() else {
            return Err(de::Error::custom("map value requested before its key"));
        };
        let path = join(&self.path, key);
        seed.deserialize(PathDe { value, path })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(container: Value) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [container]}
                }
            }
        })
    }

    #[test]
    fn known_object_has_no_unknown_fields() {
        let obj = deployment(json!({"name": "c", "image": "nginx"}));
        assert_eq!(unknown_fields("apps", "deployments", &obj), Ok(vec![]));
    }

    #[test]
    fn unknown_field_in_nested_list_has_indexed_path() {
        let obj = deployment(json!({"name": "c", "imagez": "nginx"}));
        assert_eq!(
            unknown_fields("apps", "deployments", &obj),
            Ok(vec!["spec.template.spec.containers[0].imagez".to_string()])
        );
    }

    #[test]
    fn unknown_fields_at_several_depths() {
        let mut obj = deployment(json!({"name": "c", "image": "x",
            "ports": [{"containerPort": 80}, {"containerPort": 81, "bogus": 1}]}));
        obj["spec"]["replicaz"] = json!(3);
        obj["extra"] = json!({"a": 1});
        let mut got = unknown_fields("apps", "deployments", &obj).unwrap();
        got.sort();
        assert_eq!(
            got,
            vec![
                "extra",
                "spec.replicaz",
                "spec.template.spec.containers[0].ports[1].bogus"
            ]
        );
    }

    #[test]
    fn unknown_field_inside_map_value() {
        let obj = json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "x",
                "resources": {"limits": {"cpu": "1"}}}],
                "overhead": {"cpu": "1"},
                "volumes": [{"name": "v", "configMap": {"name": "c",
                    "items": [{"key": "k", "path": "p", "nope": true}]}}]}
        });
        assert_eq!(
            unknown_fields("", "pods", &obj),
            Ok(vec!["spec.volumes[0].configMap.items[0].nope".to_string()])
        );
    }

    #[test]
    fn type_error_names_field() {
        let mut obj = deployment(json!({"name": "c", "image": "x"}));
        obj["spec"]["replicas"] = json!("x");
        assert_eq!(
            unknown_fields("apps", "deployments", &obj),
            Err(r#"spec.replicas: invalid type: string "x", expected i32"#.to_string())
        );
    }

    #[test]
    fn type_error_in_list_names_indexed_field() {
        let obj =
            deployment(json!({"name": "c", "image": "x", "ports": [{"containerPort": "80"}]}));
        let err = unknown_fields("apps", "deployments", &obj).unwrap_err();
        assert!(
            err.starts_with(
                "spec.template.spec.containers[0].ports[0].containerPort: invalid type"
            ),
            "{err}"
        );
    }

    #[test]
    fn wrong_container_kind_and_map_value_type() {
        let obj = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": {"name": "c"}}});
        let err = unknown_fields("", "pods", &obj).unwrap_err();
        assert!(
            err.starts_with("spec.containers: invalid type: map"),
            "{err}"
        );
        let obj = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"app": 5}}});
        let err = unknown_fields("", "pods", &obj).unwrap_err();
        assert_eq!(
            err,
            "metadata.labels.app: invalid type: integer `5`, expected a string"
        );
    }

    #[test]
    fn special_types_decode() {
        let obj = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s",
            "creationTimestamp": "2024-01-01T00:00:00Z"},
            "data": {"k": "aGVsbG8="}, "type": "Opaque"});
        assert_eq!(unknown_fields("", "secrets", &obj), Ok(vec![]));
        let obj = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"ports": [{"port": 80, "targetPort": "http"}, {"port": 81, "targetPort": 8080}]}});
        assert_eq!(unknown_fields("", "services", &obj), Ok(vec![]));
        let obj = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "data": {"k": "!!notbase64"}});
        assert!(unknown_fields("", "secrets", &obj)
            .unwrap_err()
            .starts_with("data.k:"));
    }

    #[test]
    fn every_listed_resource_decodes_a_minimal_object() {
        let cases = [
            ("", "namespaces", "v1", "Namespace"),
            ("", "nodes", "v1", "Node"),
            ("", "pods", "v1", "Pod"),
            ("", "services", "v1", "Service"),
            ("", "endpoints", "v1", "Endpoints"),
            ("", "configmaps", "v1", "ConfigMap"),
            ("", "secrets", "v1", "Secret"),
            ("", "serviceaccounts", "v1", "ServiceAccount"),
            ("", "persistentvolumes", "v1", "PersistentVolume"),
            ("", "persistentvolumeclaims", "v1", "PersistentVolumeClaim"),
            ("", "resourcequotas", "v1", "ResourceQuota"),
            ("", "limitranges", "v1", "LimitRange"),
            ("", "replicationcontrollers", "v1", "ReplicationController"),
            ("apps", "replicasets", "apps/v1", "ReplicaSet"),
            ("apps", "statefulsets", "apps/v1", "StatefulSet"),
            ("apps", "daemonsets", "apps/v1", "DaemonSet"),
            ("batch", "jobs", "batch/v1", "Job"),
            ("batch", "cronjobs", "batch/v1", "CronJob"),
            (
                "autoscaling",
                "horizontalpodautoscalers",
                "autoscaling/v2",
                "HorizontalPodAutoscaler",
            ),
            ("autoscaling", "scale", "autoscaling/v1", "Scale"),
            (
                "coordination.k8s.io",
                "leases",
                "coordination.k8s.io/v1",
                "Lease",
            ),
            (
                "networking.k8s.io",
                "ingresses",
                "networking.k8s.io/v1",
                "Ingress",
            ),
            (
                "networking.k8s.io",
                "networkpolicies",
                "networking.k8s.io/v1",
                "NetworkPolicy",
            ),
            (
                "policy",
                "poddisruptionbudgets",
                "policy/v1",
                "PodDisruptionBudget",
            ),
            ("policy", "evictions", "policy/v1", "Eviction"),
        ];
        for (group, resource, api_version, kind) in cases {
            let obj = json!({"apiVersion": api_version, "kind": kind,
                "metadata": {"name": "x"}, "zzz": 1});
            assert_eq!(
                unknown_fields(group, resource, &obj),
                Ok(vec!["zzz".to_string()]),
                "{group}/{resource}"
            );
        }
    }

    #[test]
    fn resources_with_required_top_level_fields() {
        let ev = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"},
            "involvedObject": {"kind": "Pod"}});
        assert_eq!(unknown_fields("", "events", &ev), Ok(vec![]));
        let ev = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e"}, "eventTime": "2024-01-01T00:00:00.000000Z"});
        assert_eq!(unknown_fields("events.k8s.io", "events", &ev), Ok(vec![]));
        let es = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "e"}, "addressType": "IPv4", "endpoints": []});
        assert_eq!(
            unknown_fields("discovery.k8s.io", "endpointslices", &es),
            Ok(vec![])
        );
    }

    #[test]
    fn unknown_resource_is_an_error() {
        assert!(unknown_fields("apps", "widgets", &json!({})).is_err());
        assert!(unknown_fields("nope.io", "pods", &json!({})).is_err());
    }

    #[test]
    fn non_object_input_is_an_error_not_a_panic() {
        for v in [json!(null), json!(1), json!("x"), json!([1, 2])] {
            assert!(unknown_fields("", "pods", &v).is_err());
        }
    }
}
