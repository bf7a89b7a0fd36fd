//! `keel snapshot save|status|restore`: etcdctl/etcdutl's backup commands
//! for keel's store.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use keel_store::snapshot_file::{self, SnapshotFile, SnapshotStatus};

#[derive(Args, Debug)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    command: SnapshotCommand,
}

#[derive(Subcommand, Debug)]
enum SnapshotCommand {
    /// Stream a consistent snapshot from a replica into FILE (the first of
    /// --endpoints that answers).
    Save {
        file: PathBuf,
        /// Client endpoints (etcd v3 API), comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379")]
        endpoints: Vec<String>,
        #[command(flatten)]
        tls: crate::member::ClientTlsArgs,
    },
    /// Verify FILE and print its hash, revision, key count and size.
    Status {
        file: PathBuf,
        #[arg(short = 'w', long = "write-out", value_enum, default_value_t = Format::Table)]
        write_out: Format,
    },
    /// Create a data dir for a member of a NEW cluster from FILE (all keys
    /// and the revision kept). Start each member with `keel server` and
    /// the same --name, --data-dir and --initial-cluster.
    Restore {
        file: PathBuf,
        /// Must be absent or empty.
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        name: String,
        /// `name1=http://host:port,...` of the new cluster (1, 3 or 5).
        #[arg(long)]
        initial_cluster: Option<String>,
        /// This member's peer URL; must match its --initial-cluster entry.
        #[arg(long)]
        initial_advertise_peer_urls: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Table,
    Json,
}

pub async fn run(a: SnapshotArgs) -> anyhow::Result<()> {
    match a.command {
        SnapshotCommand::Save {
            file,
            endpoints,
            tls,
        } => {
            let st = snapshot_file::save(&endpoints, &file, &tls.files()).await?;
            println!(
                "Snapshot saved at {} (revision {}, {} bytes)",
                file.display(),
                st.revision,
                st.total_size
            );
        }
        SnapshotCommand::Status { file, write_out } => {
            let snap = SnapshotFile::read(&file)?;
            let st = snap.status();
            match write_out {
                Format::Table => print!("{}", status_table(&st)),
                Format::Json => println!(
                    "{}",
                    serde_json::json!({
                        "hash": st.hash,
                        "revision": st.revision,
                        "totalKey": st.total_keys,
                        "totalSize": st.total_size,
                        "sha256": snap.sha256,
                    })
                ),
            }
        }
        SnapshotCommand::Restore {
            file,
            data_dir,
            name,
            initial_cluster,
            initial_advertise_peer_urls,
        } => {
            let peer = initial_advertise_peer_urls
                .as_deref()
                .map(crate::server::strip_scheme);
            let cluster = match &initial_cluster {
                Some(ic) => crate::server::parse_initial_cluster(ic, false)?,
                None => {
                    let p = peer.clone().context(
                        "give --initial-cluster, or --initial-advertise-peer-urls for a one-member cluster",
                    )?;
                    vec![(name.clone(), p)]
                }
            };
            if let Some(p) = &peer {
                let listed = cluster.iter().find(|(n, _)| n == &name).map(|(_, a)| a);
                if listed.is_some_and(|l| l != p) {
                    anyhow::bail!(
                        "--initial-advertise-peer-urls {p} differs from {name}'s entry in --initial-cluster ({})",
                        listed.map(String::as_str).unwrap_or_default()
                    );
                }
            }
            let r = keel_store::restore::restore(&file, &data_dir, &name, cluster).await?;
            println!(
                "restored {} into {} as member {:x} of new cluster {:x} at revision {}",
                file.display(),
                data_dir.display(),
                r.member_id,
                r.cluster_id,
                r.revision
            );
        }
    }
    Ok(())
}

/// etcdutl's `snapshot status -w table` layout.
fn status_table(st: &SnapshotStatus) -> String {
    let cells = [
        format!("{:x}", st.hash),
        st.revision.to_string(),
        st.total_keys.to_string(),
        human_size(st.total_size),
    ];
    let heads = ["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"];
    let widths: Vec<usize> = heads
        .iter()
        .zip(&cells)
        .map(|(h, c)| h.len().max(c.len()) + 2)
        .collect();
    let rule = widths
        .iter()
        .map(|w| "-".repeat(*w))
        .collect::<Vec<_>>()
        .join("+");
    let row = |vals: &[String]| {
        vals.iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:^w$}"))
            .collect::<Vec<_>>()
            .join("|")
    };
    let heads: Vec<String> = heads.iter().map(|s| s.to_string()).collect();
    format!(
        "+{rule}+\n|{}|\n+{rule}+\n|{}|\n+{rule}+\n",
        row(&heads),
        row(&cells)
    )
}

fn human_size(b: u64) -> String {
    match b {
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} kB", b as f64 / (1u64 << 10) as f64),
        b => format!("{b} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_etcdutl_layout() {
        let t = status_table(&SnapshotStatus {
            hash: 0xfe01cf57,
            revision: 10,
            total_keys: 7,
            total_size: 2 * 1024 * 1024,
        });
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 5);
        assert!(lines[1].contains("HASH") && lines[1].contains("TOTAL SIZE"));
        assert!(lines[3].contains("fe01cf57") && lines[3].contains("2.0 MB"));
        assert!(lines.iter().all(|l| l.len() == lines[0].len()));
    }
}
