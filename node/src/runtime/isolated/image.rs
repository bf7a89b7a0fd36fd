//! What an isolated container runs and on which root: an image-store
//! rootfs (`spec.image_root`), a local image directory with a `rootfs/`
//! subdirectory, or (built-in images, `keel/host`, local images without a
//! rootfs) the host's userland.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::plan::RootSource;
use crate::runtime::images::{ImageRef, ImageResolver, ProcessSpec};
use crate::runtime::{ContainerSpec, ImageRoot, Result, RuntimeError};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `image.json` of a local rootfs image (same fields as for exec images,
/// plus `user`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LocalConfig {
    #[serde(default)]
    entrypoint: Vec<String>,
    #[serde(default)]
    cmd: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

/// The process, its root, and the image's `User`.
pub struct Resolved {
    pub process: ProcessSpec,
    pub root: RootSource,
    pub image_user: Option<String>,
}

pub fn resolve(
    spec: &ContainerSpec,
    resolver: &ImageResolver,
    keel_binary: &Path,
    image_dir: Option<&Path>,
) -> Result<Resolved> {
    if let Some(root) = &spec.image_root {
        return rootfs_image(spec, root);
    }
    let r = ImageRef::parse(&spec.image)?;
    let local = image_dir
        .map(|d| d.join(&r.name).join(&r.tag))
        .filter(|d| !r.name.contains("..") && d.is_dir());
    if let Some(dir) = &local {
        if dir.join("rootfs").is_dir() {
            let root = local_rootfs(dir, &spec.image)?;
            return rootfs_image(spec, &root);
        }
    }
    let process = resolver.resolve(spec)?;
    let mut extra = vec![keel_binary.to_path_buf()];
    extra.extend(local);
    Ok(Resolved {
        process,
        root: RootSource::Host {
            etc: r.name == "keel/host",
            extra,
        },
        image_user: None,
    })
}

fn local_rootfs(dir: &Path, image: &str) -> Result<ImageRoot> {
    let bad = |reason: String| RuntimeError::ImagePull {
        image: image.to_string(),
        reason,
    };
    let config_path = dir.join("image.json");
    let config: LocalConfig = match std::fs::read(&config_path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| bad(format!("{}: {e}", config_path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => LocalConfig::default(),
        Err(e) => return Err(bad(format!("{}: {e}", config_path.display()))),
    };
    Ok(ImageRoot {
        digest: String::new(),
        rootfs: dir.join("rootfs"),
        entrypoint: config.entrypoint,
        cmd: config.cmd,
        env: config.env.into_iter().collect(),
        working_dir: config.working_dir,
        user: config.user,
    })
}

/// Kubernetes rules: `command` replaces the entrypoint, `args` the cmd.
/// Environment: `PATH`, `HOSTNAME`, the image's env, then the spec's.
fn rootfs_image(spec: &ContainerSpec, root: &ImageRoot) -> Result<Resolved> {
    let mut argv = if spec.command.is_empty() {
        root.entrypoint.clone()
    } else {
        spec.command.clone()
    };
    if spec.command.is_empty() && spec.args.is_empty() {
        argv.extend(root.cmd.iter().cloned());
    } else {
        argv.extend(spec.args.iter().cloned());
    }
    if argv.is_empty() {
        return Err(RuntimeError::InvalidSpec(format!(
            "image {} has no entrypoint: the container needs a command",
            spec.image
        )));
    }
    let program = argv.remove(0);
    let mut env = vec![
        ("PATH".to_string(), DEFAULT_PATH.to_string()),
        ("HOSTNAME".to_string(), spec.pod_name.clone()),
    ];
    env.extend(root.env.iter().cloned());
    env.extend(spec.env.iter().cloned());
    let working_dir = spec
        .working_dir
        .clone()
        .or_else(|| root.working_dir.as_ref().map(PathBuf::from))
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("/"));
    Ok(Resolved {
        process: ProcessSpec {
            program,
            args: argv,
            env,
            working_dir,
            log_path: spec.log_path.clone(),
        },
        root: RootSource::Image {
            lower: root.rootfs.clone(),
        },
        image_user: root.user.clone(),
    })
}
