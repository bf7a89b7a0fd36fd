//! `keel up`: the embedded default. One process runs a single control
//! replica (store, API, scheduler, controllers) and N agents (exec
//! runtime by default), all state under `--data-dir`. Each agent runs
//! with its own node identity (`system:node:<name>`), not the admin's. Ctrl-C stops everything; running
//! `keel up` again on the same data dir resumes the same cluster.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::Args;

use crate::agent::{hostname, AgentArgs, DnsArgs, IngressArgs, RuntimeKind};
use crate::server::ServerArgs;

#[derive(Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// How many agents (nodes) to run in this process; more than one gives
    /// distinct node names `<host>-0`, `<host>-1`, ... for trying
    /// scheduling and failover on one machine.
    #[arg(long, default_value_t = 1)]
    agents: usize,
    /// Node name of the single agent, or the prefix of several (default:
    /// the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// Agents' node-lease renewal interval, in ms.
    #[arg(long, default_value_t = 10_000)]
    agent_heartbeat_interval_ms: u64,
    /// Agents' resource-metrics sampling interval, in ms (see `keel agent
    /// --metrics-interval-ms`).
    #[arg(long, default_value_t = 5_000)]
    agent_metrics_interval_ms: u64,
    /// Leave pods running when `keel up` stops (the next `keel up`
    /// re-adopts them); by default they are stopped with it.
    #[arg(long)]
    keep_pods_running: bool,
    /// The agents' container runtime: `exec` (supervised processes, built-in
    /// images), `docker` (the local Docker Engine's images) or `keel`, the
    /// default (isolated: namespaces, rootfs, cgroups; root only, else
    /// `exec`, saying why).
    #[arg(long, value_enum, default_value_t = RuntimeKind::Keel)]
    runtime: RuntimeKind,
    /// The first agent's node IP (its InternalIP, where it serves logs and,
    /// in loopback mode, NodePorts); agent i gets this address plus i, so
    /// each node of one machine has an address of its own. Must be a
    /// loopback address unless keel runs in a network namespace of its own.
    #[arg(long, default_value = "127.0.0.1")]
    node_ip: std::net::Ipv4Addr,
    /// The agents' Ingress routers (default: each on its node IP, ports 80
    /// and 443; an address given here is shared by every agent).
    #[command(flatten)]
    ingress: IngressArgs,
    /// The agents' cluster DNS (each agent serves it on the kube-dns
    /// address, sharing the port).
    #[command(flatten)]
    dns: DnsArgs,
    /// The agents' image stores (each under its own root dir unless
    /// --image-store is given), GC thresholds and allowed registries.
    #[command(flatten)]
    images: crate::image::AgentImageArgs,
    /// Run the agents without the Service proxy.
    #[arg(long)]
    disable_proxy: bool,
}

pub async fn run(a: UpArgs) -> anyhow::Result<()> {
    if a.agents > 64 {
        anyhow::bail!("--agents {} is more than 64", a.agents);
    }
    let data_dir = a.server.data_dir().to_path_buf();
    let started = SystemTime::now();
    let server = tokio::spawn(crate::server::run(a.server));
    let kubeconfig = data_dir.join("kubeconfig");
    tokio::select! {
        r = wait_fresh(&kubeconfig, started) => r?,
        _ = crate::server::shutdown_signal() => return finish(server).await,
    }
    let names = node_names(a.agents, a.node_name.clone());
    let ips = node_ips(a.node_ip, names.len())?;
    let admin = keel_node::agent::read_kubeconfig(&kubeconfig)?;
    let mut agents = Vec::new();
    let mut runtimes = Vec::new();
    for (name, ip) in names.iter().zip(ips) {
        let args = AgentArgs {
            kubeconfig: Some(
                node_kubeconfig(&data_dir, name, &admin.server)?
                    .unwrap_or_else(|| kubeconfig.clone()),
            ),
            join: Default::default(),
            server: vec![],
            node_name: Some(name.clone()),
            root_dir: data_dir.join("agents").join(name),
            runtime: a.runtime,
            image_dir: Some(data_dir.join("images")),
            listen_logs: std::net::SocketAddr::new(ip.into(), 0),
            node_ip: ip.into(),
            node_labels: vec![],
            heartbeat_interval_ms: a.agent_heartbeat_interval_ms,
            restart_backoff_base_ms: 10_000,
            metrics_interval_ms: a.agent_metrics_interval_ms,
            ingress: a.ingress.clone(),
            dns: a.dns.clone(),
            images: a.images.clone(),
            disable_proxy: a.disable_proxy,
            // Agents of one `keel up` share a network namespace, where
            // host-gw routes between them mean nothing: always loopback.
            network: keel_node::podnet::NetworkMode::Loopback,
        };
        let mut cfg = args.config(None).await?;
        cfg.ingress_identity = ingress_identity(&data_dir, name, &admin.server)?;
        runtimes.push(cfg.runtime.clone());
        agents.push(tokio::spawn(keel_node::agent::run(
            cfg,
            crate::server::shutdown_signal(),
        )));
    }
    print_usage(&kubeconfig, &names);
    for (name, agent) in names.iter().zip(agents) {
        match agent.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(node = %name, error = %e, "agent failed"),
            Err(e) => tracing::error!(node = %name, error = %e, "agent task failed"),
        }
    }
    if !a.keep_pods_running {
        for rt in runtimes {
            stop_containers(rt.as_ref()).await;
        }
    }
    finish(server).await
}

async fn finish(server: tokio::task::JoinHandle<anyhow::Result<()>>) -> anyhow::Result<()> {
    server.await.context("the control replica task failed")?
}

/// How long the node certificates `keel up` issues are valid (a new one
/// is issued at every start).
const NODE_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Issues agent `name` its own identity, a client certificate for
/// `system:node:<name>` in `system:nodes` signed by the cluster CA, and
/// writes its kubeconfig to `<data-dir>/agents/<name>.kubeconfig` (0600).
/// None over plain HTTP (`--insecure-http`: no client certificates; every
/// request is the admin's).
fn node_kubeconfig(data_dir: &Path, name: &str, server: &str) -> anyhow::Result<Option<PathBuf>> {
    if !server.starts_with("https://") {
        return Ok(None);
    }
    let user = format!("{}{name}", keel_apiserver::auth::node::NODE_USER_PREFIX);
    let groups = [keel_apiserver::auth::node::NODES_GROUP.to_string()];
    let kc = keel_apiserver::pki::issue_user_kubeconfig(
        data_dir,
        &user,
        &groups,
        NODE_CERT_VALIDITY,
        Some(server),
    )
    .with_context(|| format!("issuing the node credential of {name}"))?;
    let dir = data_dir.join("agents");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let path = dir.join(format!("{name}.kubeconfig"));
    keel_apiserver::private_file::write(&path, kc.as_bytes())?;
    Ok(Some(path))
}

/// Issues agent `name`'s Ingress router its own identity: it reads every
/// Ingress and TLS Secret, which the node identity may not, and it must
/// not hold the admin's power either. A client certificate for
/// `system:keel:ingress-router:<name>` in `system:keel:ingress-routers`
/// (bound to the read-only `system:keel:ingress-router` ClusterRole),
/// also written to `<data-dir>/agents/<name>-ingress.kubeconfig` (0600)
/// for inspection. None over plain HTTP (every request is the admin's).
fn ingress_identity(
    data_dir: &Path,
    name: &str,
    server: &str,
) -> anyhow::Result<Option<keel_node::agent::rotation::NodeIdentity>> {
    use keel_apiserver::auth::bootstrap_policy::{INGRESS_ROUTERS_GROUP, INGRESS_ROUTER_ROLE};
    if !server.starts_with("https://") {
        return Ok(None);
    }
    let user = format!("{INGRESS_ROUTER_ROLE}:{name}");
    let kc = keel_apiserver::pki::issue_user_kubeconfig(
        data_dir,
        &user,
        &[INGRESS_ROUTERS_GROUP.to_string()],
        NODE_CERT_VALIDITY,
        Some(server),
    )
    .with_context(|| format!("issuing the ingress router credential of {name}"))?;
    let dir = data_dir.join("agents");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let path = dir.join(format!("{name}-ingress.kubeconfig"));
    keel_apiserver::private_file::write(&path, kc.as_bytes())?;
    let auth = keel_node::agent::kubeconfig::parse_kubeconfig(&kc)?;
    let (Some(cert), Some(key)) = (auth.client_cert_pem, auth.client_key_pem) else {
        anyhow::bail!("the ingress router kubeconfig of {name} has no client certificate");
    };
    Ok(Some(keel_node::agent::rotation::NodeIdentity::new(
        keel_node::agent::node_cert::NodeCert {
            cert_pem: String::from_utf8_lossy(&cert).into_owned(),
            key_pem: String::from_utf8_lossy(&key).into_owned(),
        },
        None,
    )))
}

/// `<host>` for one agent, `<host>-0` ... for several.
fn node_names(n: usize, prefix: Option<String>) -> Vec<String> {
    let base = prefix.unwrap_or_else(hostname);
    match n {
        1 => vec![base],
        _ => (0..n).map(|i| format!("{base}-{i}")).collect(),
    }
}

/// `first`, `first + 1`, ... for `n` agents; an error when the last one
/// would leave `first`'s /24 (so a range never wraps into another network).
fn node_ips(first: std::net::Ipv4Addr, n: usize) -> anyhow::Result<Vec<std::net::Ipv4Addr>> {
    let last_octet = usize::from(first.octets()[3]) + n.saturating_sub(1);
    if last_octet > 254 {
        anyhow::bail!("--node-ip {first} leaves no room for {n} agents in its /24");
    }
    let base = u32::from(first);
    Ok((0..n as u32).map(|i| (base + i).into()).collect())
}

/// Waits until the server has (re)written the kubeconfig in this run, so
/// agents never read a stale address from an earlier `keel up`.
async fn wait_fresh(path: &Path, since: SystemTime) -> anyhow::Result<()> {
    let since = since - Duration::from_secs(1);
    for _ in 0..1200 {
        let fresh = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= since);
        if fresh {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!(
        "the control replica did not write {} within 120 s (see the log above)",
        path.display()
    )
}

fn print_usage(kubeconfig: &Path, names: &[String]) {
    let abs: PathBuf = std::fs::canonicalize(kubeconfig).unwrap_or_else(|_| kubeconfig.into());
    eprintln!(
        "\nkeel is up: 1 control replica, {} agent(s) ({}).\n\n  export KUBECONFIG={}\n  kubectl get nodes\n  kubectl apply -f examples/echo.yaml\n\nCtrl-C stops everything; `keel up` again resumes the same cluster.\n",
        names.len(),
        names.join(", "),
        abs.display()
    );
}

async fn stop_containers(rt: &dyn keel_node::runtime::Runtime) {
    let Ok(all) = rt.list().await else {
        return;
    };
    for c in all.iter().filter(|c| c.state.is_running()) {
        if let Err(e) = rt.stop(&c.id, 5_000).await {
            tracing::warn!(container = %c.id, error = %e, "stopping a container failed");
        }
    }
}
