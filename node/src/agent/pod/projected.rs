//! Projected (and downwardAPI) volumes: files from several sources in one
//! directory, the way the kubelet writes them.
//!
//! Sources: `serviceAccountToken` (a TokenRequest for the pod's service
//! account, bound to the pod by name and uid, with the source's audience
//! and `expirationSeconds`), `configMap` and `secret` (keys or `items`,
//! `optional` honoured), `downwardAPI` (`fieldRef`, `resourceFieldRef`).
//! Modes: an item's `mode`, else the volume's `defaultMode`, else 0644.
//!
//! Files are published with [`super::atomic`]: readers see the previous
//! set or the new one, never a mix or a partial token. A volume with token
//! sources is written again when the earliest token reaches 80 % of its
//! lifetime, or after 24 h, whichever comes first (the kubelet's rule), so
//! a running pod always holds a valid token.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    DownwardAPIVolumeFile, KeyToPath, Pod, ServiceAccount, VolumeProjection,
};

use super::atomic::{self, File};
use super::env::{self, Addresses};
use super::objects::{FetchError, Objects};

/// Kubernetes' default for a token source without `expirationSeconds`.
const DEFAULT_TOKEN_EXPIRATION_S: i64 = 3600;
/// The longest a token is kept before it is requested again.
const MAX_TOKEN_AGE: Duration = Duration::from_secs(24 * 3600);

/// Who issues service account tokens for pods.
pub trait Tokens {
    /// A token for `pod`'s service account, bound to `pod`, for `audience`
    /// (None: the API's own), valid `expiration_s` seconds.
    fn request(
        &self,
        pod: &Pod,
        audience: Option<&str>,
        expiration_s: i64,
    ) -> impl std::future::Future<Output = Result<String, String>> + Send;
}

/// TokenRequest through the API (`POST .../serviceaccounts/{sa}/token`
/// with a Pod `boundObjectRef`); None when the agent has no API client.
impl Tokens for Option<kube::Client> {
    async fn request(
        &self,
        pod: &Pod,
        audience: Option<&str>,
        expiration_s: i64,
    ) -> Result<String, String> {
        let client = self
            .as_ref()
            .ok_or("no API client to request a service account token with")?;
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.as_deref())
            .filter(|s| !s.is_empty())
            .unwrap_or("default");
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: audience.map(|a| vec![a.to_string()]).unwrap_or_default(),
                expiration_seconds: Some(expiration_s),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                }),
            },
            ..TokenRequest::default()
        };
        let api: kube::Api<ServiceAccount> = kube::Api::namespaced(client.clone(), ns);
        let answer = api
            .create_token_request(account, &Default::default(), &request)
            .await
            .map_err(|e| format!("token for service account {ns}/{account}: {e}"))?;
        answer
            .status
            .map(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| format!("token for service account {ns}/{account}: empty answer"))
    }
}

/// What a projection needs besides the volume itself.
pub struct Projection<'a, T: Tokens> {
    pub pod: &'a Pod,
    pub addrs: &'a Addresses,
    pub tokens: &'a T,
}

/// Writes the `sources` into `dir`; returns when the volume must be
/// written again (its tokens near expiry), None without token sources.
pub async fn write<T: Tokens>(
    sources: &[VolumeProjection],
    default_mode: Option<i32>,
    dir: &Path,
    objs: &mut Objects<'_>,
    p: &Projection<'_, T>,
) -> Result<Option<Instant>, String> {
    let mut files = BTreeMap::new();
    let mut refresh_at: Option<Instant> = None;
    let mode_of = |m: Option<i32>| m.or(default_mode).unwrap_or(0o644);
    for source in sources {
        if let Some(t) = &source.service_account_token {
            let expiration_s = t.expiration_seconds.unwrap_or(DEFAULT_TOKEN_EXPIRATION_S);
            let token = p
                .tokens
                .request(
                    p.pod,
                    t.audience.as_deref().filter(|a| !a.is_empty()),
                    expiration_s,
                )
                .await?;
            add(&mut files, &t.path, token.into_bytes(), mode_of(None))?;
            let at = Instant::now() + refresh_after(expiration_s);
            refresh_at = Some(refresh_at.map_or(at, |r| r.min(at)));
        }
        if let Some(c) = &source.config_map {
            let data = objs.config_map(&c.name).await;
            keys(&mut files, data, c.items.as_deref(), c.optional, &mode_of)
                .map_err(|e| format!("configMap {:?}: {e}", c.name))?;
        }
        if let Some(s) = &source.secret {
            let data = objs.secret(&s.name).await;
            keys(&mut files, data, s.items.as_deref(), s.optional, &mode_of)
                .map_err(|e| format!("secret {:?}: {e}", s.name))?;
        }
        if let Some(d) = &source.downward_api {
            downward(&mut files, d.items.as_deref().unwrap_or(&[]), p, &mode_of)?;
        }
    }
    atomic::publish(dir, &files).map_err(|e| format!("write {}: {e}", dir.display()))?;
    Ok(refresh_at)
}

/// A downwardAPI volume's files (the same items a projection carries).
pub fn downward_files<T: Tokens>(
    items: &[DownwardAPIVolumeFile],
    default_mode: Option<i32>,
    p: &Projection<'_, T>,
) -> Result<BTreeMap<String, File>, String> {
    let mut files = BTreeMap::new();
    downward(&mut files, items, p, &|m: Option<i32>| {
        m.or(default_mode).unwrap_or(0o644)
    })?;
    Ok(files)
}

/// 80 % of the lifetime, at most [`MAX_TOKEN_AGE`].
fn refresh_after(expiration_s: i64) -> Duration {
    let lifetime = Duration::from_secs(u64::try_from(expiration_s).unwrap_or(0));
    lifetime.mul_f64(0.8).min(MAX_TOKEN_AGE)
}

fn add(
    files: &mut BTreeMap<String, File>,
    path: &str,
    bytes: Vec<u8>,
    mode: i32,
) -> Result<(), String> {
    if !atomic::valid_path(path) {
        return Err(format!(
            "path {path:?} must be relative, without '..' and not start with '..'"
        ));
    }
    files.insert(path.to_string(), File { bytes, mode });
    Ok(())
}

fn keys(
    files: &mut BTreeMap<String, File>,
    data: Result<super::objects::Data, FetchError>,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    mode_of: &dyn Fn(Option<i32>) -> i32,
) -> Result<(), String> {
    let data = match data {
        Ok(d) => d,
        Err(FetchError::Missing(_)) if optional.unwrap_or(false) => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    match items {
        None => {
            for (k, v) in data {
                add(files, &k, v.into_bytes(), mode_of(None))?;
            }
        }
        Some(items) => {
            for i in items {
                match data.get(&i.key) {
                    Some(v) => add(files, &i.path, v.clone().into_bytes(), mode_of(i.mode))?,
                    None if optional.unwrap_or(false) => {}
                    None => return Err(format!("key {:?} not found", i.key)),
                }
            }
        }
    }
    Ok(())
}

fn downward<T: Tokens>(
    files: &mut BTreeMap<String, File>,
    items: &[DownwardAPIVolumeFile],
    p: &Projection<'_, T>,
    mode_of: &dyn Fn(Option<i32>) -> i32,
) -> Result<(), String> {
    for item in items {
        let value = if let Some(f) = &item.field_ref {
            match f.field_path.as_str() {
                // Whole maps are `key="value"` lines, sorted.
                "metadata.labels" => map_lines(p.pod.metadata.labels.as_ref()),
                "metadata.annotations" => map_lines(p.pod.metadata.annotations.as_ref()),
                path => env::field_value(p.pod, path, p.addrs)
                    .map_err(|e| format!("downwardAPI {:?}: {e}", item.path))?,
            }
        } else if let Some(r) = &item.resource_field_ref {
            let spec = p.pod.spec.as_ref();
            let container = spec
                .into_iter()
                .flat_map(|s| {
                    s.containers
                        .iter()
                        .chain(s.init_containers.iter().flatten())
                })
                .find(|c| Some(c.name.as_str()) == r.container_name.as_deref())
                .ok_or_else(|| {
                    format!(
                        "downwardAPI {:?}: no container {:?}",
                        item.path,
                        r.container_name.as_deref().unwrap_or_default()
                    )
                })?;
            env::resource_value(container, &r.resource)
        } else {
            return Err(format!(
                "downwardAPI {:?}: needs fieldRef or resourceFieldRef",
                item.path
            ));
        };
        add(files, &item.path, value.into_bytes(), mode_of(item.mode))?;
    }
    Ok(())
}

fn map_lines(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v:?}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out numbered tokens and remembers what was asked.
    struct Counter(std::sync::Mutex<Vec<(Option<String>, i64)>>);

    impl Tokens for Counter {
        async fn request(
            &self,
            _pod: &Pod,
            audience: Option<&str>,
            expiration_s: i64,
        ) -> Result<String, String> {
            let mut asked = self.0.lock().unwrap();
            asked.push((audience.map(str::to_string), expiration_s));
            Ok(format!("token-{}", asked.len()))
        }
    }

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "team", "uid": "u1", "labels": {"a": "1", "b": "x y"}},
            "spec": {"serviceAccountName": "sa", "containers": [{"name": "c"}]}
        }))
        .unwrap()
    }

    #[test]
    fn refresh_comes_at_80_percent_or_a_day() {
        assert_eq!(refresh_after(3600), Duration::from_secs(2880));
        assert_eq!(refresh_after(10 * 24 * 3600), MAX_TOKEN_AGE);
    }

    #[tokio::test]
    async fn tokens_and_downward_items_become_files() {
        let dir = tempfile::tempdir().unwrap();
        let sources: Vec<VolumeProjection> = serde_json::from_value(serde_json::json!([
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
            {"serviceAccountToken": {"path": "vault/token", "audience": "vault", "expirationSeconds": 600}},
            {"downwardAPI": {"items": [
                {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}},
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}, "mode": 0o600}
            ]}}
        ]))
        .unwrap();
        let client =
            crate::agent::client::ControlClient::new(vec!["http://127.0.0.1:1".into()], None, None)
                .unwrap();
        let mut objs = Objects::new(&client, "team");
        let tokens = Counter(Default::default());
        let addrs = Addresses {
            pod_ip: "10.0.0.2".into(),
            host_ip: "127.0.0.1".into(),
        };
        let pod = pod();
        let p = Projection {
            pod: &pod,
            addrs: &addrs,
            tokens: &tokens,
        };
        let before = Instant::now();
        let refresh = write(&sources, Some(0o640), dir.path(), &mut objs, &p)
            .await
            .unwrap()
            .unwrap();
        // The 600 s token decides: 80 % of it.
        assert!(refresh >= before + Duration::from_secs(480));
        assert!(refresh <= Instant::now() + Duration::from_secs(480));
        let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).unwrap();
        assert_eq!(read("token"), "token-1");
        assert_eq!(read("vault/token"), "token-2");
        assert_eq!(read("namespace"), "team");
        assert_eq!(read("labels"), "a=\"1\"\nb=\"x y\"\n");
        assert_eq!(
            *tokens.0.lock().unwrap(),
            vec![(None, 3607), (Some("vault".into()), 600)]
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| {
            std::fs::metadata(dir.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!((mode("token"), mode("labels")), (0o640, 0o600));

        // Written again: new tokens replace the old ones in place.
        write(&sources, Some(0o640), dir.path(), &mut objs, &p)
            .await
            .unwrap();
        assert_eq!(read("token"), "token-3");
    }

    #[tokio::test]
    async fn a_missing_config_map_fails_unless_optional() {
        let dir = tempfile::tempdir().unwrap();
        let client =
            crate::agent::client::ControlClient::new(vec!["http://127.0.0.1:1".into()], None, None)
                .unwrap();
        let mut objs = Objects::new(&client, "team");
        objs.insert_for_test(
            "ConfigMap",
            "cm",
            [("k".to_string(), "v".to_string())].into(),
        );
        let tokens = Counter(Default::default());
        let addrs = Addresses {
            pod_ip: String::new(),
            host_ip: String::new(),
        };
        let pod = pod();
        let p = Projection {
            pod: &pod,
            addrs: &addrs,
            tokens: &tokens,
        };
        let sources: Vec<VolumeProjection> = serde_json::from_value(serde_json::json!([
            {"configMap": {"name": "cm", "items": [{"key": "k", "path": "ca.crt"}]}},
            {"configMap": {"name": "cm", "items": [{"key": "nope", "path": "x"}], "optional": true}}
        ]))
        .unwrap();
        assert_eq!(
            write(&sources, None, dir.path(), &mut objs, &p).await,
            Ok(None)
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("ca.crt")).unwrap(),
            "v"
        );
        let bad: Vec<VolumeProjection> = serde_json::from_value(serde_json::json!([
            {"configMap": {"name": "cm", "items": [{"key": "nope", "path": "x"}]}}
        ]))
        .unwrap();
        let err = write(&bad, None, dir.path(), &mut objs, &p)
            .await
            .unwrap_err();
        assert!(err.contains("nope"), "{err}");
        let escape: Vec<VolumeProjection> = serde_json::from_value(serde_json::json!([
            {"configMap": {"name": "cm", "items": [{"key": "k", "path": "../x"}]}}
        ]))
        .unwrap();
        let err = write(&escape, None, dir.path(), &mut objs, &p)
            .await
            .unwrap_err();
        assert!(err.contains("../x"), "{err}");
    }
}
