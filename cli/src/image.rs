//! `keel image import|ls|rm|pull`: the image store of an agent's
//! `--root-dir`, usable while that agent runs (the store is locked per
//! operation), and the agents' image flags.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use keel_node::image::pull::Credentials;
use keel_node::image::{import, leases, pull, AgentImages, GcPolicy, Store};

#[derive(Args, Debug)]
pub struct ImageArgs {
    /// The agent root directory whose store to use.
    #[arg(long, default_value = "./keel-agent", global = true)]
    root_dir: PathBuf,
    /// The store itself (default `<root-dir>/image-store`).
    #[arg(long, global = true)]
    image_store: Option<PathBuf>,
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(Subcommand, Debug)]
enum ImageCommand {
    /// Import a `docker save` archive or an OCI image-layout tar (gzip ok).
    Import { file: PathBuf },
    /// List images: REPOSITORY TAG DIGEST SIZE.
    Ls,
    /// Remove a tag (`name[:tag]`) or an image (`sha256:...`); refused while
    /// a container uses the image.
    Rm { reference: String },
    /// Pull from a registry (HTTPS; plain HTTP for loopback registries).
    /// Credentials: a Docker config JSON with `auths` (`--docker-config`).
    Pull {
        reference: String,
        #[arg(long)]
        docker_config: Option<PathBuf>,
    },
}

/// The agents' image-store flags (`keel agent`, `keel up`).
#[derive(Args, Debug, Clone)]
pub struct AgentImageArgs {
    /// The OCI image store (default `<root-dir>/image-store`).
    #[arg(long)]
    pub image_store: Option<PathBuf>,
    /// Image GC starts when disk usage (or the store's share of
    /// --image-store-capacity-bytes) exceeds this percentage...
    #[arg(long, default_value_t = 85)]
    pub image_gc_high_threshold: u8,
    /// ...and removes unused images, least recently used first, down to this.
    #[arg(long, default_value_t = 80)]
    pub image_gc_low_threshold: u8,
    /// Measure GC thresholds against this byte budget for the store instead
    /// of the whole disk.
    #[arg(long)]
    pub image_store_capacity_bytes: Option<u64>,
    /// Registry hosts the agent may pull from (comma-separated; default:
    /// any).
    #[arg(long, value_delimiter = ',')]
    pub allowed_registries: Vec<String>,
}

impl AgentImageArgs {
    /// The store of an agent on `root_dir`; `local_image_dir` is the exec
    /// runtime's image directory (its images are never looked up here).
    pub fn config(
        &self,
        root_dir: &std::path::Path,
        local_image_dir: Option<PathBuf>,
    ) -> anyhow::Result<AgentImages> {
        let path = self
            .image_store
            .clone()
            .unwrap_or_else(|| root_dir.join("image-store"));
        let store =
            Store::open(&path).with_context(|| format!("--image-store {}", path.display()))?;
        let gc = GcPolicy {
            high_threshold_percent: self.image_gc_high_threshold,
            low_threshold_percent: self.image_gc_low_threshold,
            capacity_bytes: self.image_store_capacity_bytes,
        };
        gc.validate()
            .context("--image-gc-high-threshold/--image-gc-low-threshold")?;
        Ok(AgentImages {
            store,
            gc,
            allowed_registries: self.allowed_registries.clone(),
            local_image_dir,
        })
    }
}

pub async fn run(a: ImageArgs) -> anyhow::Result<()> {
    let path = a
        .image_store
        .clone()
        .unwrap_or_else(|| a.root_dir.join("image-store"));
    let store = Store::open(&path).with_context(|| format!("image store {}", path.display()))?;
    let pods = a.root_dir.join("pods");
    match a.command {
        ImageCommand::Import { file } => {
            let s = store.clone();
            let f = file.clone();
            let imported = tokio::task::spawn_blocking(move || import::import(&s, &f))
                .await?
                .with_context(|| format!("import {}", file.display()))?;
            for i in imported {
                let names = match i.tags.is_empty() {
                    true => "<untagged>".to_string(),
                    false => i.tags.join(", "),
                };
                println!("imported {} {names}", i.digest);
            }
        }
        ImageCommand::Ls => {
            println!("{:<50} {:<16} {:<71} SIZE", "REPOSITORY", "TAG", "DIGEST");
            for row in store.list()? {
                println!(
                    "{:<50} {:<16} {:<71} {}",
                    row.repository,
                    row.tag,
                    row.digest,
                    human_size(row.size_bytes)
                );
            }
        }
        ImageCommand::Rm { reference } => {
            let lock = store.lock()?;
            let removed = store.remove(
                &lock,
                &reference,
                &leases::in_use_by_all(&store, Some(&pods)),
            )?;
            match removed.is_empty() {
                true => println!("untagged {reference}"),
                false => {
                    for d in removed {
                        println!("deleted {d}");
                    }
                }
            }
        }
        ImageCommand::Pull {
            reference,
            docker_config,
        } => {
            let mut creds = Credentials::default();
            if let Some(p) = docker_config {
                let json = std::fs::read(&p)
                    .with_context(|| format!("--docker-config {}", p.display()))?;
                creds.add_docker_config(&json)?;
            }
            let d = pull::pull(&store, &reference, &creds).await?;
            println!("pulled {reference} {d}");
        }
    }
    Ok(())
}

/// `12.3MB` style sizes (decimal units, as `docker images`).
fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    match i {
        0 => format!("{bytes}B"),
        _ => format!("{v:.1}{}", units[i]),
    }
}
