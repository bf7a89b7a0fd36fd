//! Pulling images from registries through `oci-client`.
//!
//! - A tag or a digest (`name@sha256:...`); a multi-arch index resolves to
//!   its linux/<host arch> manifest.
//! - Credentials come from `kubernetes.io/dockerconfigjson` Secrets
//!   (imagePullSecrets), matched by registry host; otherwise anonymous.
//! - HTTPS, except registries on loopback (`localhost`, 127.0.0.0/8, `::1`),
//!   which are reached over plain HTTP as Docker does for them.
//!
//! Every blob is verified against its digest before it enters the store,
//! and the image appears only once fully unpacked (see [`Store::install`]).

use std::collections::BTreeMap;

use base64::Engine as _;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde_json::Value;

use super::digest::Digest;
use super::import::{host_arch, pick_platform};
use super::reference;
use super::store::{NewImage, Store};
use super::{ImageError, Result};

/// Registry credentials: registry host → (username, password).
#[derive(Debug, Clone, Default)]
pub struct Credentials(BTreeMap<String, (String, String)>);

impl Credentials {
    /// Adds the `auths` of one `.dockerconfigjson` document; entries use
    /// `username`/`password` or a base64 `auth` of `user:pass`.
    pub fn add_docker_config(&mut self, json: &[u8]) -> Result<()> {
        let v: Value = serde_json::from_slice(json)
            .map_err(|e| ImageError::Corrupt(format!(".dockerconfigjson: {e}")))?;
        let Some(auths) = v["auths"].as_object() else {
            return Err(ImageError::Corrupt(
                ".dockerconfigjson has no \"auths\"".into(),
            ));
        };
        for (server, entry) in auths {
            let (user, pass) = match (entry["username"].as_str(), entry["password"].as_str()) {
                (Some(u), Some(p)) => (u.to_string(), p.to_string()),
                _ => {
                    let auth = entry["auth"].as_str().unwrap_or_default();
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(auth)
                        .ok()
                        .and_then(|b| String::from_utf8(b).ok())
                        .ok_or_else(|| {
                            ImageError::Corrupt(format!(
                                ".dockerconfigjson: the auth of {server} is not base64 user:password"
                            ))
                        })?;
                    let (u, p) = decoded.split_once(':').ok_or_else(|| {
                        ImageError::Corrupt(format!(
                            ".dockerconfigjson: the auth of {server} is not user:password"
                        ))
                    })?;
                    (u.to_string(), p.to_string())
                }
            };
            self.0.insert(host_of(server), (user, pass));
        }
        Ok(())
    }

    fn for_registry(&self, registry: &str) -> RegistryAuth {
        let host = host_of(registry);
        match self.0.get(&host) {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            None => RegistryAuth::Anonymous,
        }
    }
}

/// `https://index.docker.io/v1/` → `docker.io`; `127.0.0.1:5000` stays.
fn host_of(server: &str) -> String {
    let s = server
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = s.split('/').next().unwrap_or_default();
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        h => h.to_string(),
    }
}

const MANIFEST_TYPES: [&str; 4] = [
    OCI_IMAGE_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];

/// Pulls `image` into `store` and returns its manifest digest. When the
/// store already holds that manifest, only the tag is (re)written.
pub async fn pull(store: &Store, image: &str, creds: &Credentials) -> Result<Digest> {
    // reqwest is built without a TLS provider of its own: keel uses ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let r = reference::parse(image)?;
    let fail = |reason: String| ImageError::Pull {
        image: image.to_string(),
        reason,
    };
    let registry = r.resolve_registry().to_string();
    let protocol = match reference::is_loopback_registry(&registry) {
        true => ClientProtocol::HttpsExcept(vec![registry.clone()]),
        false => ClientProtocol::Https,
    };
    let client = Client::new(ClientConfig {
        protocol,
        ..ClientConfig::default()
    });
    let auth = creds.for_registry(r.registry());
    let (mut bytes, mut digest) = client
        .pull_manifest_raw(&r, &auth, &MANIFEST_TYPES)
        .await
        .map_err(|e| fail(e.to_string()))?;
    check_digest(&bytes, &digest).map_err(|e| fail(e.to_string()))?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| fail(format!("manifest: {e}")))?;
    if v["manifests"].is_array() && v["layers"].is_null() {
        let entry = pick_platform(&v)
            .ok_or_else(|| fail(format!("no image for linux/{} in the index", host_arch())))?;
        let d = entry["digest"].as_str().unwrap_or_default().to_string();
        let by_digest = r.clone_with_digest(d.clone());
        (bytes, _) = client
            .pull_manifest_raw(&by_digest, &auth, &MANIFEST_TYPES)
            .await
            .map_err(|e| fail(e.to_string()))?;
        check_digest(&bytes, &d).map_err(|e| fail(e.to_string()))?;
        digest = d;
    }
    let manifest_digest = Digest::parse(&digest)?;
    let key = reference::key(&r);
    if store.record(&manifest_digest).is_ok() {
        let lock = store.lock()?;
        let mut tags = store.tags()?;
        tags.insert(key, manifest_digest.to_string());
        store.set_tags(&lock, &tags)?;
        return Ok(manifest_digest);
    }
    let m: Value = serde_json::from_slice(&bytes).map_err(|e| fail(format!("manifest: {e}")))?;
    let config_digest = m["config"]["digest"]
        .as_str()
        .ok_or_else(|| fail("manifest has no config".into()))?;
    let mut staging = store.staging()?;
    let config = fetch(&client, &r, config_digest, &staging).await?;
    let config_bytes = std::fs::read(&config).map_err(|e| ImageError::io("read config", e))?;
    check_digest(&config_bytes, config_digest).map_err(|e| fail(e.to_string()))?;
    let mut layers = Vec::new();
    for l in m["layers"].as_array().into_iter().flatten() {
        let d = l["digest"]
            .as_str()
            .ok_or_else(|| fail("a layer has no digest".into()))?;
        let want = Digest::parse(d)?;
        let downloaded = fetch(&client, &r, d, &staging).await?;
        let file = std::fs::File::open(&downloaded).map_err(|e| ImageError::io("open layer", e))?;
        layers.push(staging.blob(file, Some(&want), &format!("layer {d}"))?);
        let _ = std::fs::remove_file(&downloaded);
    }
    let store2 = store.clone();
    let image_new = NewImage {
        manifest: bytes.to_vec(),
        config: config_bytes,
        layers,
    };
    tokio::task::spawn_blocking(move || {
        let lock = store2.lock()?;
        store2.install(&lock, &staging, image_new, &[key])
    })
    .await
    .map_err(|e| fail(format!("install task: {e}")))?
}

fn check_digest(bytes: &[u8], expected: &str) -> Result<()> {
    let got = Digest::of(bytes);
    if got.as_str() != expected {
        return Err(ImageError::Corrupt(format!(
            "content is {got}, expected {expected}"
        )));
    }
    Ok(())
}

async fn fetch(
    client: &Client,
    r: &Reference,
    digest: &str,
    staging: &super::store::Staging,
) -> Result<std::path::PathBuf> {
    let d = Digest::parse(digest)?;
    let path = staging.dir().join(format!("dl-{}", d.hex()));
    let file = tokio::fs::File::create(&path)
        .await
        .map_err(|e| ImageError::io(format!("create {}", path.display()), e))?;
    client
        .pull_blob(r, digest, file)
        .await
        .map_err(|e| ImageError::Pull {
            image: r.whole(),
            reason: format!("blob {digest}: {e}"),
        })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_credentials_match_registries() {
        let mut c = Credentials::default();
        let json = serde_json::json!({"auths": {
            "https://index.docker.io/v1/": {"auth": base64::engine::general_purpose::STANDARD.encode("hub:pw")},
            "127.0.0.1:5000": {"username": "keel", "password": "s3cret"},
        }});
        c.add_docker_config(json.to_string().as_bytes()).unwrap();
        assert!(
            matches!(c.for_registry("docker.io"), RegistryAuth::Basic(u, p) if u == "hub" && p == "pw")
        );
        assert!(
            matches!(c.for_registry("127.0.0.1:5000"), RegistryAuth::Basic(u, _) if u == "keel")
        );
        assert!(matches!(
            c.for_registry("127.0.0.1:5001"),
            RegistryAuth::Anonymous
        ));
        let err = c
            .add_docker_config(br#"{"auths": {"x": {"auth": "!!"}}}"#)
            .unwrap_err();
        assert!(err.to_string().contains("not base64"), "{err}");
        let err = c.add_docker_config(b"{}").unwrap_err();
        assert!(err.to_string().contains("no \"auths\""), "{err}");
    }
}
