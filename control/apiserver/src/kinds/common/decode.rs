//! Strict decoding: does a JSON object fit the k8s-openapi type of its kind,
//! and which of its fields does that type not know?
//!
//! Kubernetes answers both questions while decoding (`fieldValidation=Strict`
//! rejects unknown fields, `Warn` reports them). We get the unknown fields from
//! `serde_ignored`, and the path of a type error from [`PathDe`], a small
//! deserializer over `serde_json::Value` that remembers where it is: serde's
//! own errors say what went wrong but not where.

use std::fmt;

use super::errs::child;
use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, IntoDeserializer, Visitor};
use serde_json::Value;

/// Decodes into `T`, collecting ignored paths formatted like Kubernetes
/// (`spec.template.spec.containers[0].imagez`); an error names the field
/// whose JSON does not fit, e.g.
/// `spec.replicas: invalid type: string "x", expected i32`; the decoded value itself is
/// dropped because callers keep working on the JSON they were given.
pub fn decode<T: DeserializeOwned>(obj: &Value) -> Result<Vec<String>, String> {
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
        Path::Map { parent, key } => child(&format_path(parent), key),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => format_path(parent),
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
        let path = child(&self.path, key);
        seed.deserialize(PathDe { value, path })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

#[cfg(test)]
mod tests {
    use crate::admission::unknown_fields;
    use serde_json::{json, Value};

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
}
