//! `keel member list|add|remove|promote`: the cluster's membership through
//! a replica's etcd port (the same Cluster API `etcdctl member` uses),
//! printed as a readable table.

use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};
use keel_proto::etcdserverpb::{
    cluster_client::ClusterClient, maintenance_client::MaintenanceClient, Member, MemberAddRequest,
    MemberListRequest, MemberPromoteRequest, MemberRemoveRequest, StatusRequest,
};
use tonic::transport::Channel;

#[derive(Args, Debug)]
pub struct MemberArgs {
    /// etcd client endpoints of the replicas, comma-separated; the first
    /// that answers is used.
    #[arg(long, global = true, default_value = "127.0.0.1:2379")]
    endpoints: String,
    #[command(flatten)]
    tls: ClientTlsArgs,
    #[command(subcommand)]
    command: MemberCommand,
}

/// etcdctl's client TLS flags, for a replica whose client port requires
/// TLS (an `https://` endpoint, or any endpoint once one is given).
#[derive(Args, Debug, Clone, Default)]
pub struct ClientTlsArgs {
    /// CA certificate that signed the replicas' serving certificates.
    #[arg(long, global = true)]
    cacert: Option<std::path::PathBuf>,
    /// Client certificate (e.g. from `keel certs issue --kind etcd-client`).
    #[arg(long, global = true)]
    cert: Option<std::path::PathBuf>,
    /// The client certificate's private key.
    #[arg(long, global = true)]
    key: Option<std::path::PathBuf>,
}

impl ClientTlsArgs {
    pub fn files(&self) -> keel_store::tls::ClientTlsFiles {
        keel_store::tls::ClientTlsFiles {
            cacert: self.cacert.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        }
    }
}

#[derive(Subcommand, Debug)]
enum MemberCommand {
    /// Table of members: ID, name, voter/learner, URLs, which one leads.
    List,
    /// Add a member; prints the flags to start it with.
    Add {
        /// The new replica's --name.
        name: String,
        /// The new replica's peer URL (http://host:port).
        #[arg(long)]
        peer_url: String,
        /// Add as a learner (promote it later with `keel member promote`).
        #[arg(long)]
        learner: bool,
    },
    /// Remove a member, by name or hex ID.
    Remove { member: String },
    /// Promote a learner that has caught up, by name or hex ID.
    Promote { member: String },
}

pub async fn run(a: MemberArgs) -> anyhow::Result<()> {
    let (endpoint, ch) = connect(&a.endpoints, &a.tls).await?;
    let dial = keel_store::tls::Dial::from_files(&a.tls.files());
    // With TLS 1.3 a refused client certificate shows only at the first
    // RPC, so RPC failures are explained like dial failures.
    let status_error = |s: tonic::Status| status_error(&endpoint, dial, s);
    let mut cluster = ClusterClient::new(ch.clone());
    match a.command {
        MemberCommand::List => {
            let members = list(&mut cluster).await.map_err(status_error)?;
            let leader = MaintenanceClient::new(ch)
                .status(StatusRequest {})
                .await
                .map(|s| s.into_inner().leader)
                .unwrap_or(0);
            print!("{}", table(&members, leader));
        }
        MemberCommand::Add {
            name,
            peer_url,
            learner,
        } => {
            let r = cluster
                .member_add(MemberAddRequest {
                    peer_ur_ls: vec![peer_url.clone()],
                    is_learner: learner,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let id = r.member.map(|m| m.id).unwrap_or(0);
            let initial: Vec<String> = r
                .members
                .iter()
                .flat_map(|m| {
                    let n = if m.id == id {
                        name.clone()
                    } else {
                        m.name.clone()
                    };
                    m.peer_ur_ls.iter().map(move |u| format!("{n}={u}"))
                })
                .collect();
            println!("added member {name} ({id:x}) through {endpoint}");
            println!("start it with:");
            println!(
                "  keel server --name {name} --listen-peer {} --initial-cluster-state existing --initial-cluster {}",
                peer_url
                    .trim_start_matches("http://")
                    .trim_start_matches("https://"),
                initial.join(",")
            );
        }
        MemberCommand::Remove { member } => {
            let id = resolve(&mut cluster, &member, status_error).await?;
            cluster
                .member_remove(MemberRemoveRequest { id })
                .await
                .map_err(status_error)?;
            println!("removed member {member} ({id:x})");
        }
        MemberCommand::Promote { member } => {
            let id = resolve(&mut cluster, &member, status_error).await?;
            cluster
                .member_promote(MemberPromoteRequest { id })
                .await
                .map_err(status_error)?;
            println!("promoted member {member} ({id:x})");
        }
    }
    Ok(())
}

/// An RPC failure: etcd's error message as the server sent it, or for a
/// transport failure the readable cause naming the endpoint, e.g. the TLS
/// handshake the server refused.
fn status_error(endpoint: &str, dial: keel_store::tls::Dial, s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", keel_store::tls::explain_status(endpoint, &s, dial))
}

async fn connect(endpoints: &str, tls: &ClientTlsArgs) -> anyhow::Result<(String, Channel)> {
    let tls = tls.files().client_config()?;
    let mut errors = Vec::new();
    for ep in endpoints
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let connected = keel_store::tls::connect_etcd_client(
            ep,
            tls.clone(),
            Duration::from_secs(2),
            Duration::from_secs(15),
        )
        .await;
        match connected {
            Ok(ch) => return Ok((ep.to_string(), ch)),
            Err(e) if e.starts_with("TLS handshake with ") => errors.push(e),
            Err(e) => errors.push(format!("{ep}: {e}")),
        }
    }
    bail!("no endpoint answered: {}", errors.join("; "))
}

async fn list(c: &mut ClusterClient<Channel>) -> Result<Vec<Member>, tonic::Status> {
    Ok(c.member_list(MemberListRequest { linearizable: true })
        .await?
        .into_inner()
        .members)
}

/// A member by name, or by its hex ID.
async fn resolve(
    c: &mut ClusterClient<Channel>,
    member: &str,
    status_error: impl Fn(tonic::Status) -> anyhow::Error,
) -> anyhow::Result<u64> {
    let members = list(c).await.map_err(status_error)?;
    if let Some(m) = members.iter().find(|m| m.name == member) {
        return Ok(m.id);
    }
    match u64::from_str_radix(member, 16) {
        Ok(id) if members.iter().any(|m| m.id == id) => Ok(id),
        _ => bail!("no member named {member:?} or with that hex ID"),
    }
}

/// The `member list` table (column widths fit the content).
fn table(members: &[Member], leader: u64) -> String {
    let mut rows = vec![[
        "ID".to_string(),
        "NAME".into(),
        "STATUS".into(),
        "PEER-URL".into(),
        "CLIENT-URL".into(),
        "LEADER".into(),
    ]];
    for m in members {
        rows.push([
            format!("{:x}", m.id),
            if m.name.is_empty() {
                "(unstarted)".into()
            } else {
                m.name.clone()
            },
            if m.is_learner { "learner" } else { "voter" }.into(),
            m.peer_ur_ls.join(","),
            m.client_ur_ls.join(","),
            if m.id == leader { "*" } else { "" }.into(),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_marks_learners_unstarted_and_the_leader() {
        let m = |id, name: &str, learner| Member {
            id,
            name: name.into(),
            peer_ur_ls: vec![format!("http://127.0.0.1:{id}")],
            client_ur_ls: vec![],
            is_learner: learner,
        };
        let t = table(&[m(10, "r0", false), m(11, "", true)], 10);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("ID  NAME"), "{t}");
        assert!(lines[1].contains("r0") && lines[1].contains("voter") && lines[1].ends_with('*'));
        assert!(lines[2].contains("(unstarted)") && lines[2].contains("learner"));
        assert!(!lines[2].ends_with('*'));
    }
}
