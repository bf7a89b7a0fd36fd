//! Getting a container's image before it starts (the kubelet's image
//! manager): built-in and local-directory images need nothing; any other
//! reference is looked up in the agent's image store and pulled according
//! to `imagePullPolicy` (default: `Always` for `:latest` or no tag,
//! otherwise `IfNotPresent`), with the pod's `imagePullSecrets`.
//!
//! Events: `Pulling`, `Pulled`, `Failed`. Failures become waiting reasons:
//! `ErrImagePull` (then `ImagePullBackOff`, see the container run),
//! `ErrImageNeverPull`, `InvalidImageName`. Before returning an image the
//! container's lease is written under the store lock, so `keel image rm`
//! and GC keep it.

use std::path::Path;
use std::time::Instant;

use k8s_openapi::api::core::v1::Container;

use super::container::PodCtx;
use super::objects::Objects;
use crate::agent::events::Kind as EventKind;
use crate::image::pull::Credentials;
use crate::image::{gc, leases, pull, reference, AgentImages, ImageError};
use crate::runtime::images::ImageRef;
use crate::runtime::ImageRoot;

/// Why a container's image is not available: (waiting reason, message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: &'static str,
    pub message: String,
}

const BUILTIN: [&str; 3] = ["keel/echo", "keel/pause", "keel/host"];

/// `Ok(None)` when the image is not a store image (built-in, local
/// directory, no store, or the docker runtime, which has its own).
pub async fn ensure(pc: &PodCtx<'_>, container: &Container) -> Result<Option<ImageRoot>, Failure> {
    let Some(images) = pc.ctx.cfg.images.clone() else {
        return Ok(None);
    };
    if pc.ctx.runtime().name() == "docker" {
        return Ok(None);
    }
    let image = container.image.clone().unwrap_or_default();
    if is_builtin_or_local(&image, images.local_image_dir.as_deref()) {
        return Ok(None);
    }
    let invalid = |e: ImageError| Failure {
        reason: "InvalidImageName",
        message: format!("Failed to apply default image tag {image:?}: {e}"),
    };
    let r = reference::parse(&image).map_err(invalid)?;
    let policy = container
        .image_pull_policy
        .clone()
        .unwrap_or_else(|| default_policy(&r).to_string());
    let store = images.store.clone();
    let lookup_ref = r.clone();
    let present = blocking(move || store.lookup(&lookup_ref))
        .await
        .map_err(|e| pull_failure(&image, e))?;
    let digest = match (policy.as_str(), present) {
        ("Never", None) => {
            return Err(Failure {
                reason: "ErrImageNeverPull",
                message: format!(
                    "Container image {image:?} is not present with pull policy of Never"
                ),
            })
        }
        ("Never" | "IfNotPresent", Some(d)) => {
            pc.event(
                &container.name,
                EventKind::Normal,
                "Pulled",
                &format!("Container image {image:?} already present on machine"),
            );
            d
        }
        _ => pull_now(pc, container, &images, &image, &r).await?,
    };
    let pod_dir = pc.pod_dir.to_path_buf();
    let pods_dir = pc.ctx.cfg.root_dir.join("pods");
    let name = container.name.clone();
    let pod = format!(
        "{}/{}",
        pc.pod.metadata.namespace.as_deref().unwrap_or("default"),
        pc.pod.metadata.name.as_deref().unwrap_or_default()
    );
    let store = images.store.clone();
    let policy = images.gc;
    blocking(move || {
        let lock = store.lock()?;
        leases::write(&pod_dir, &name, digest.as_str(), &pod)?;
        let root = store.image_root(&digest)?;
        if let Err(e) = gc::collect(
            &store,
            &lock,
            &policy,
            &leases::in_use_by_all(&store, Some(&pods_dir)),
        ) {
            tracing::warn!(error = %e, "image garbage collection failed");
        }
        Ok(root)
    })
    .await
    .map(Some)
    .map_err(|e| pull_failure(&image, e))
}

async fn pull_now(
    pc: &PodCtx<'_>,
    container: &Container,
    images: &AgentImages,
    image: &str,
    r: &oci_client::Reference,
) -> Result<crate::image::digest::Digest, Failure> {
    if !images.registry_allowed(r.registry()) {
        return Err(Failure {
            reason: "ErrImagePull",
            message: format!(
                "registry {} is not in this agent's --allowed-registries ({})",
                r.registry(),
                images.allowed_registries.join(",")
            ),
        });
    }
    pc.event(
        &container.name,
        EventKind::Normal,
        "Pulling",
        &format!("Pulling image {image:?}"),
    );
    let creds = pull_secrets(pc).await;
    let started = Instant::now();
    match pull::pull(&images.store, image, &creds).await {
        Ok(d) => {
            let size = images.store.record(&d).map(|r| r.size_bytes).unwrap_or(0);
            pc.event(
                &container.name,
                EventKind::Normal,
                "Pulled",
                &format!(
                    "Successfully pulled image {image:?} in {}ms. Image size: {size} bytes.",
                    started.elapsed().as_millis()
                ),
            );
            Ok(d)
        }
        Err(e) => Err(pull_failure(image, e)),
    }
}

fn pull_failure(image: &str, e: ImageError) -> Failure {
    let reason = match e {
        ImageError::Pull { reason, .. } => reason,
        other => other.to_string(),
    };
    Failure {
        reason: "ErrImagePull",
        message: format!("Failed to pull image {image:?}: {reason}"),
    }
}

/// Credentials of the pod's `imagePullSecrets` (`.dockerconfigjson`);
/// a missing or malformed secret is logged and skipped, as the kubelet does.
async fn pull_secrets(pc: &PodCtx<'_>) -> Credentials {
    let mut creds = Credentials::default();
    let names = pc
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.clone())
        .unwrap_or_default();
    let mut objs = Objects::new(
        &pc.ctx.client,
        pc.pod.metadata.namespace.as_deref().unwrap_or("default"),
    );
    for n in names {
        match objs.secret(&n.name).await {
            Ok(data) => match data.get(".dockerconfigjson") {
                Some(json) => {
                    if let Err(e) = creds.add_docker_config(json.as_bytes()) {
                        tracing::warn!(secret = %n.name, error = %e, "unusable imagePullSecret");
                    }
                }
                None => {
                    tracing::warn!(secret = %n.name, "imagePullSecret has no .dockerconfigjson")
                }
            },
            Err(e) => tracing::warn!(secret = %n.name, error = %e, "imagePullSecret unavailable"),
        }
    }
    creds
}

/// The kubelet's default: `Always` for `:latest` or no tag, else `IfNotPresent`.
fn default_policy(r: &oci_client::Reference) -> &'static str {
    match (r.digest(), r.tag()) {
        (Some(_), _) => "IfNotPresent",
        (None, None | Some("latest")) => "Always",
        _ => "IfNotPresent",
    }
}

fn is_builtin_or_local(image: &str, local_dir: Option<&Path>) -> bool {
    let Ok(r) = ImageRef::parse(image) else {
        return false;
    };
    if BUILTIN.contains(&r.name.as_str()) {
        return true;
    }
    let Some(root) = local_dir else { return false };
    let dir = root.join(&r.name).join(&r.tag);
    dir.join("image.json").is_file() || dir.join("entrypoint").is_file()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::image::Result<T> + Send + 'static,
) -> crate::image::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ImageError::Corrupt(format!("image task failed: {e}")))?
}
