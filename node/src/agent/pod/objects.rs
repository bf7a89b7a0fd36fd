//! ConfigMaps and Secrets read through the control plane, cached for one
//! use (a container start or a volume setup) so one object is fetched once;
//! PersistentVolumeClaims and their volumes, read fresh each time (binding
//! changes them).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Secret};
use serde::de::DeserializeOwned;

use crate::agent::client::ControlClient;

/// A ConfigMap's or Secret's data, decoded to text.
pub type Data = BTreeMap<String, String>;

/// Why an object could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// It does not exist.
    Missing(String),
    /// The control plane could not be asked; retry later.
    Unavailable(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Missing(m) | FetchError::Unavailable(m) => f.write_str(m),
        }
    }
}

/// Per-use cache of fetched objects.
pub struct Objects<'a> {
    client: &'a ControlClient,
    namespace: String,
    cache: BTreeMap<(&'static str, String), Data>,
}

impl<'a> Objects<'a> {
    pub fn new(client: &'a ControlClient, namespace: &str) -> Self {
        Objects {
            client,
            namespace: namespace.to_string(),
            cache: BTreeMap::new(),
        }
    }

    pub async fn config_map(&mut self, name: &str) -> Result<Data, FetchError> {
        self.get("ConfigMap", name).await
    }

    pub async fn secret(&mut self, name: &str) -> Result<Data, FetchError> {
        self.get("Secret", name).await
    }

    /// The pod's namespace's claim `name`.
    pub async fn claim(&self, name: &str) -> Result<PersistentVolumeClaim, FetchError> {
        self.typed("PersistentVolumeClaim", name).await
    }

    /// The (cluster-scoped) PersistentVolume `name`.
    pub async fn volume(&self, name: &str) -> Result<PersistentVolume, FetchError> {
        self.typed("PersistentVolume", name).await
    }

    /// Seeds the cache, so tests need no control plane.
    #[cfg(test)]
    pub fn insert_for_test(&mut self, kind: &'static str, name: &str, data: Data) {
        self.cache.insert((kind, name.to_string()), data);
    }

    async fn typed<T: DeserializeOwned>(&self, kind: &str, name: &str) -> Result<T, FetchError> {
        let what = format!("{} {:?}", kind.to_lowercase(), name);
        let value = self
            .client
            .get_object(kind, &self.namespace, name)
            .await
            .map_err(|s| FetchError::Unavailable(format!("{what}: {}", s.message())))?
            .ok_or_else(|| FetchError::Missing(format!("{what} not found")))?;
        serde_json::from_value(value).map_err(|e| FetchError::Unavailable(format!("{what}: {e}")))
    }

    async fn get(&mut self, kind: &'static str, name: &str) -> Result<Data, FetchError> {
        if let Some(d) = self.cache.get(&(kind, name.to_string())) {
            return Ok(d.clone());
        }
        let what = format!("{} {:?}", kind.to_lowercase(), name);
        let value = self
            .client
            .get_object(kind, &self.namespace, name)
            .await
            .map_err(|s| FetchError::Unavailable(format!("{what}: {}", s.message())))?
            .ok_or_else(|| FetchError::Missing(format!("{what} not found")))?;
        let data =
            decode(kind, value).map_err(|e| FetchError::Unavailable(format!("{what}: {e}")))?;
        self.cache.insert((kind, name.to_string()), data.clone());
        Ok(data)
    }
}

/// ConfigMap `data` + `binaryData`, or Secret `data` (base64 in JSON) +
/// `stringData`; binary values are converted lossily to UTF-8.
fn decode(kind: &str, value: serde_json::Value) -> Result<Data, serde_json::Error> {
    let mut out = Data::new();
    if kind == "Secret" {
        let s: Secret = serde_json::from_value(value)?;
        for (k, v) in s.data.unwrap_or_default() {
            out.insert(k, String::from_utf8_lossy(&v.0).into_owned());
        }
        out.extend(s.string_data.unwrap_or_default());
    } else {
        let c: ConfigMap = serde_json::from_value(value)?;
        for (k, v) in c.binary_data.unwrap_or_default() {
            out.insert(k, String::from_utf8_lossy(&v.0).into_owned());
        }
        out.extend(c.data.unwrap_or_default());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_base64_decoded() {
        let v = serde_json::json!({"metadata": {"name": "s"}, "data": {"k": "aGVsbG8="}});
        assert_eq!(decode("Secret", v).unwrap()["k"], "hello");
        let v = serde_json::json!({"metadata": {"name": "c"}, "data": {"k": "plain"}});
        assert_eq!(decode("ConfigMap", v).unwrap()["k"], "plain");
    }
}
