//! `keel server`: etcd-style flags mapped onto the store's configuration.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use keel_store::{grpc, AutoCompaction, Store, StoreConfig, Transport};

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// This replica's name; must appear in --initial-cluster when given.
    #[arg(long, default_value = "default")]
    name: String,
    /// Where the store lives. Never wiped: a dir from another cluster,
    /// member or format version is refused.
    #[arg(long, default_value = "./keel-data")]
    data_dir: PathBuf,
    /// Address for etcd v3 gRPC clients: `host:port`, `http://host:port`
    /// (loopback only) or `https://host:port` (see --cert-file).
    #[arg(long, alias = "listen-client-urls", default_value = "127.0.0.1:2379")]
    listen_client: String,
    /// Address for raft peers: `host:port`, `http://host:port` (loopback
    /// only) or `https://host:port` (see --peer-cert-file).
    #[arg(long, alias = "listen-peer-urls", default_value = "127.0.0.1:2380")]
    listen_peer: String,
    /// Client address to publish in the member list (default: --listen-client).
    #[arg(long, alias = "advertise-client-urls")]
    advertise_client: Option<String>,
    /// Peer address others use (default: --listen-peer).
    #[arg(long, alias = "initial-advertise-peer-urls")]
    advertise_peer: Option<String>,
    /// Static bootstrap: `name1=http://host:port,name2=...` (1, 3 or 5
    /// replicas). Omitted: a single replica.
    #[arg(long)]
    initial_cluster: Option<String>,
    /// `new`: bootstrap the cluster of --initial-cluster. `existing`: join a
    /// running cluster as the member `member add` created for this
    /// replica's peer URL (--initial-cluster lists the running members and
    /// this one). Only matters for an empty data dir.
    #[arg(long, value_enum, default_value_t = ClusterState::New)]
    initial_cluster_state: ClusterState,
    /// Largest request accepted, in bytes (etcd: --max-request-bytes).
    #[arg(long, default_value_t = 1536 * 1024)]
    max_request_bytes: usize,
    /// Most operations in one txn branch (etcd: --max-txn-ops).
    #[arg(long, default_value_t = 128)]
    max_txn_ops: usize,
    /// Raft heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 100)]
    heartbeat_interval: u64,
    /// Raft election timeout in milliseconds.
    #[arg(long, default_value_t = 1000)]
    election_timeout: u64,
    /// Entries applied between snapshots (after which the log is purged).
    #[arg(long, default_value_t = 10_000)]
    snapshot_count: u64,
    /// Upper bound on any client request, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    request_timeout_ms: u64,
    /// Automatic compaction mode.
    #[arg(long, value_enum, default_value_t = CompactionMode::Periodic)]
    auto_compaction_mode: CompactionMode,
    /// Retention: revisions to keep (revision mode) or a duration such as
    /// `1h`, `30m`, `90s` (periodic mode). `0` disables compaction.
    /// Default: `5m` when the Kubernetes API is served (kube-apiserver
    /// compacts its etcd every 5 minutes), `0` with `--disable-api` (as
    /// etcd).
    #[arg(long)]
    auto_compaction_retention: Option<String>,
    /// Serve only the store (etcd v3 API), no Kubernetes API: for using
    /// keel as an etcd replacement, and for store-level tests whose
    /// revisions must match etcd's.
    #[arg(long)]
    disable_api: bool,
    /// Address for the Kubernetes API (https unless --insecure-http).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen_api: String,
    /// API URL written into `<data-dir>/kubeconfig` (default:
    /// https://<listen-api>).
    #[arg(long)]
    advertise_api: Option<String>,
    /// Serve the API over plain HTTP without authentication; allowed only on
    /// a loopback address (kubectl sends no token over http).
    #[arg(long)]
    insecure_http: bool,
    /// Extra DNS names or IPs for the API serving certificate (repeatable).
    #[arg(long)]
    tls_san: Vec<String>,
    /// Static bearer tokens accepted besides the admin token, in
    /// Kubernetes' format: `token,user,uid[,"groups"]` per line.
    #[arg(long)]
    token_auth_file: Option<PathBuf>,
    /// `iss` of service account tokens, and the issuer OIDC discovery
    /// (`/.well-known/openid-configuration`) names.
    #[arg(long, default_value = keel_apiserver::auth::sa_token::DEFAULT_ISSUER)]
    service_account_issuer: String,
    /// Audiences the API accepts in service account tokens (comma
    /// separated; new tokens carry them by default).
    #[arg(long, value_delimiter = ',', default_value = keel_apiserver::auth::sa_token::DEFAULT_ISSUER)]
    api_audiences: Vec<String>,
    /// Append an audit.k8s.io/v1 Event per request to this file (JSON
    /// lines), at the levels --audit-policy-file gives.
    #[arg(long)]
    audit_log_path: Option<PathBuf>,
    /// An audit.k8s.io/v1 Policy (YAML): the first matching rule sets a
    /// request's level (None, Metadata, Request, RequestResponse).
    /// Without one, every request is logged at Metadata.
    #[arg(long)]
    audit_policy_file: Option<PathBuf>,
    /// Service cluster IP range (IPv4 CIDR). Loopback by default: in
    /// loopback mode the service proxy listens on cluster IPs in the host
    /// network namespace. `.1` is the `kubernetes` Service's, `.10` the
    /// cluster DNS's.
    #[arg(long, default_value = "127.43.0.0/16")]
    service_cluster_ip_range: String,
    /// Upper bound on an API request other than a watch, in seconds.
    #[arg(long, default_value_t = 60)]
    api_request_timeout_s: u64,
    /// Range nodes' pod CIDRs (/24 each) come from. The default is
    /// loopback, so exec-mode pods on one machine never leave it.
    #[arg(long, default_value = "127.16.0.0/12")]
    cluster_cidr: String,
    /// Do not run the scheduler and controllers on this replica (run
    /// `keel controller-manager` elsewhere, or nothing).
    #[arg(long)]
    disable_controllers: bool,
    /// Quorum lost: restart this surviving replica as a one-member cluster
    /// of itself, keeping every key and the revision (the old store is
    /// moved aside, never deleted). Add members back afterwards. Harmless
    /// to leave on: an already one-member store is left as it is.
    #[arg(long)]
    force_new_cluster: bool,
    /// Create a new cluster with this replica as its first member (as
    /// without --initial-cluster), and once the API serves, write a server
    /// join token to `<data-dir>/token` (mode 0600) and print it. Restarts
    /// reuse the token while it is valid.
    #[arg(long, conflicts_with_all = ["join", "initial_cluster", "initial_cluster_state", "force_new_cluster"])]
    init: bool,
    /// Join the cluster whose API a replica serves at this URL
    /// (`https://host:6443`) as a new member, with --token. The cluster CA
    /// is checked against the token's fingerprint first. Later starts with
    /// the same data dir just start.
    #[arg(long, conflicts_with_all = ["initial_cluster", "initial_cluster_state", "force_new_cluster"])]
    join: Option<String>,
    /// The join token `keel server --init` printed (`K10...`). Without
    /// it, the KEEL_TOKEN environment variable (keeps it off the command
    /// line, e.g. a systemd EnvironmentFile).
    #[arg(long)]
    token: Option<String>,
    #[command(flatten)]
    manager: crate::controller_manager::ManagerArgs,
    #[command(flatten)]
    tls: crate::server_tls::TlsArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum ClusterState {
    New,
    Existing,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CompactionMode {
    Periodic,
    Revision,
}

/// Parses `--initial-cluster`. Joining (`existing`) accepts any size: it
/// lists the running members plus the new one.
pub(crate) fn parse_initial_cluster(
    s: &str,
    joining: bool,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let (name, url) = part
            .split_once('=')
            .with_context(|| format!("--initial-cluster entry {part:?} is not name=url"))?;
        let addr = strip_scheme(url);
        let addr = addr.as_str();
        if name.trim().is_empty() || addr.is_empty() {
            bail!("--initial-cluster entry {part:?} is not name=url");
        }
        if out.iter().any(|(n, _): &(String, String)| n == name.trim()) {
            bail!("--initial-cluster names {name:?} twice");
        }
        out.push((name.trim().to_string(), addr.to_string()));
    }
    if joining && out.len() < 2 {
        bail!("--initial-cluster-state existing needs --initial-cluster with the running members and this one");
    }
    if !joining && ![1, 3, 5].contains(&out.len()) {
        bail!(
            "--initial-cluster must list 1, 3 or 5 replicas, not {}",
            out.len()
        );
    }
    Ok(out)
}

/// `http://host:port` (or https, or bare) → `host:port`.
pub(crate) fn strip_scheme(url: &str) -> String {
    url.trim()
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string()
}

/// The retention when none is given. Without compaction every version of
/// every object stays in the store (and in its memory) forever: a cluster
/// rewrites node leases and pod statuses all the time, so the Kubernetes
/// API compacts, as kube-apiserver does its etcd (every 5 minutes, to the
/// revision of 5 minutes before). A store-only replica keeps etcd's
/// default (off): its client decides.
fn default_retention(disable_api: bool) -> &'static str {
    if disable_api {
        "0"
    } else {
        "5m"
    }
}

fn parse_retention(mode: CompactionMode, s: &str) -> anyhow::Result<AutoCompaction> {
    let s = s.trim();
    if s == "0" || s.is_empty() {
        return Ok(AutoCompaction::Off);
    }
    match mode {
        CompactionMode::Revision => {
            let n: i64 = s.parse().with_context(|| {
                format!("--auto-compaction-retention {s:?} is not a revision count")
            })?;
            Ok(AutoCompaction::Revisions(n))
        }
        CompactionMode::Periodic => {
            let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
            let n: u64 = num
                .parse()
                .with_context(|| format!("--auto-compaction-retention {s:?} is not a duration"))?;
            let secs = match unit {
                "" | "h" => n * 3600, // etcd: a bare number means hours
                "m" => n * 60,
                "s" => n,
                _ => bail!("--auto-compaction-retention {s:?}: unit must be h, m or s"),
            };
            Ok(AutoCompaction::Periodic(Duration::from_secs(secs)))
        }
    }
}

impl ServerArgs {
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }
}

pub async fn run(a: ServerArgs) -> anyhow::Result<()> {
    use crate::server_tls::Url;
    let listen_peer = Url::parse("--listen-peer-urls", &a.listen_peer)?;
    let listen_client = Url::parse("--listen-client-urls", &a.listen_client)?;
    let advertise_peer = match &a.advertise_peer {
        Some(s) => Url::parse("--initial-advertise-peer-urls", s)?,
        None => listen_peer.clone(),
    };
    let advertise_client = match &a.advertise_client {
        Some(s) => Url::parse("--advertise-client-urls", s)?,
        None => listen_client.clone(),
    };
    let peer_addr = advertise_peer.addr.clone();
    // Bare when plaintext (as before); the URL when TLS, so the member
    // list tells clients to use https.
    let client_addr = match advertise_client.https {
        true => advertise_client.url(),
        false => advertise_client.addr.clone(),
    };
    let mut cfg = StoreConfig::new(&a.name, &a.data_dir, &peer_addr, &client_addr);
    let joining = a.initial_cluster_state == ClusterState::Existing;
    match &a.initial_cluster {
        Some(ic) => cfg.initial_cluster = parse_initial_cluster(ic, joining)?,
        None if joining => bail!("--initial-cluster-state existing needs --initial-cluster"),
        None => {}
    }
    let raw_initial: Vec<(String, String)> = a
        .initial_cluster
        .as_deref()
        .unwrap_or("")
        .split(',')
        .filter_map(|p| p.split_once('='))
        .map(|(n, u)| (n.trim().to_string(), u.trim().to_string()))
        .collect();
    // Before TLS is configured: a join writes the peer certificate that
    // peer TLS then uses, and `--init` makes the CA that signs its own.
    let joined = match &a.join {
        Some(url) => Some(join_cluster(&a, url, &peer_addr).await?),
        None => None,
    };
    // Whom peer TLS accepts until the store follows the live membership. A
    // joiner must accept the members the join answered: with only itself
    // it refused every existing replica's certificate (unnoticed on
    // loopback, where all peers share the 127.0.0.1 SAN).
    let seed_members = match joined.as_ref().filter(|j| !j.initial_cluster.is_empty()) {
        Some(j) => j.initial_cluster.clone(),
        None if cfg.initial_cluster.is_empty() => vec![(a.name.clone(), peer_addr.clone())],
        None => cfg.initial_cluster.clone(),
    };
    if a.init {
        crate::server_token::seed_pki(&a.data_dir, &a.name, &[&advertise_peer, &listen_peer])?;
    }
    let tls = crate::server_tls::configure(
        &a.tls,
        &a.data_dir,
        &crate::server_tls::Urls {
            listen_peer: &listen_peer,
            advertise_peer: &advertise_peer,
            listen_client: &listen_client,
            advertise_client: &advertise_client,
            initial_cluster: &raw_initial,
        },
        seed_members,
    )?;
    crate::server_tls::reload_on_sighup(
        tls.peer.iter().chain(tls.client.iter()).cloned().collect(),
    );
    cfg.peer_tls = tls.peer.clone();
    if joining {
        cfg.initial_cluster_state = keel_store::InitialClusterState::Existing;
    }
    if a.force_new_cluster {
        keel_store::restore::force_new_cluster(&a.data_dir, &a.name, &peer_addr).await?;
        cfg.initial_cluster = vec![(a.name.clone(), peer_addr.clone())];
    }
    if let Some(j) = joined.as_ref().filter(|j| !j.initial_cluster.is_empty()) {
        cfg.initial_cluster = j.initial_cluster.clone();
        cfg.initial_cluster_state = keel_store::InitialClusterState::Existing;
    }
    cfg.max_request_bytes = a.max_request_bytes;
    cfg.max_txn_ops = a.max_txn_ops;
    cfg.heartbeat_ms = a.heartbeat_interval;
    cfg.election_timeout_ms = a.election_timeout;
    cfg.snapshot_logs = a.snapshot_count;
    cfg.request_timeout = Duration::from_millis(a.request_timeout_ms);
    let retention = a
        .auto_compaction_retention
        .as_deref()
        .unwrap_or(default_retention(a.disable_api));
    cfg.auto_compaction = parse_retention(a.auto_compaction_mode, retention)?;

    // Bind first so a port clash fails before anything is written.
    let peer_listener = grpc::bind(Transport::Tcp, &listen_peer.addr).await?;
    let client_listener = grpc::bind(Transport::Tcp, &listen_client.addr).await?;
    let api_listener = match a.disable_api {
        true => None,
        false => Some(keel_apiserver::server::bind(&a.listen_api, a.insecure_http).await?),
    };
    let api_cfg = api_config(&a)?;
    let manager = manager_config(&a)?;
    let store = Store::open(cfg).await?;
    if let Some(want) = joined.as_ref().and_then(|j| j.cluster_id) {
        if store.cluster_id() != want {
            bail!(
                "the store opened in cluster {:x}, but the join was into cluster {want:x}",
                store.cluster_id()
            );
        }
    }
    let _promotion = joined.as_ref().map(|j| {
        tracing::info!(peer_pki = ?j.pki, "joined; peer and serving certificates written");
        AbortOnDrop(tokio::spawn(crate::server_join::ensure_promoted(
            store.clone(),
        )))
    });
    tracing::info!(
        name = %a.name,
        member_id = format!("{:x}", store.member_id()),
        cluster_id = format!("{:x}", store.cluster_id()),
        client = %a.listen_client,
        peer = %a.listen_peer,
        "keel server started"
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let peer = match tls.peer.clone() {
        Some(t) => tokio::spawn(grpc::serve_peer_tls(
            store.clone(),
            peer_listener,
            t,
            stopped(stop_rx.clone()),
        )),
        None => tokio::spawn(grpc::serve_peer(
            store.clone(),
            peer_listener,
            stopped(stop_rx.clone()),
        )),
    };
    // Like etcd: serve clients once this member's client address is in the
    // replicated member list, so `member list` never shows it half-known.
    tokio::select! {
        _ = store.wait_published() => {}
        _ = store.wait_removed() => {
            let _ = stop_tx.send(true);
            bail!("this member ({:x}) was removed from the cluster; stopped", store.member_id());
        }
        _ = shutdown_signal() => {
            let _ = stop_tx.send(true);
            store.shutdown().await;
            return Ok(());
        }
    }
    tracing::info!("published to the cluster; serving clients");
    let client = match tls.client.clone() {
        Some(t) => tokio::spawn(grpc::serve_client_tls(
            store.clone(),
            client_listener,
            t,
            stopped(stop_rx.clone()),
        )),
        None => tokio::spawn(grpc::serve_client(
            store.clone(),
            client_listener,
            stopped(stop_rx.clone()),
        )),
    };
    // The API stops first, on its own signal: the store keeps serving its
    // peers until the API has drained (see `stop_serving`).
    let (api_stop_tx, api_stop_rx) = tokio::sync::watch::channel(false);
    let api = api_listener.map(|l| {
        tokio::spawn(keel_apiserver::server::serve(
            store.clone(),
            l,
            api_cfg,
            serving_hook(manager, a.init.then(|| a.data_dir.clone())),
            stopped(api_stop_rx),
        ))
    });
    let removed = tokio::select! {
        _ = shutdown_signal() => false,
        _ = store.wait_removed() => true,
    };
    tracing::info!("shutting down");
    let _ = api_stop_tx.send(true);
    stop_serving(&store, api, !removed).await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = client.await;
        let _ = peer.await;
    })
    .await;
    store.shutdown().await;
    if removed {
        bail!(
            "this member ({:x}) was removed from the cluster; stopped",
            store.member_id()
        );
    }
    Ok(())
}

/// The API's half of a clean stop, after its stop signal was sent: it
/// refuses new connections and drains open ones while this replica, if it
/// leads and `hand_off`, hands leadership over (no election gap in a
/// rolling restart) and then applies up to the new leader's commit index.
/// Writes it took as leader are then answered (committed by the new
/// leader, or discarded) before its peer port closes; with the port closed
/// first they waited for entries that could no longer reach it and failed
/// with "raft stopped" or a timeout. Waits for the API at most
/// [`API_STOP_TIMEOUT`] (its drain is bounded below that).
async fn stop_serving(
    store: &Store,
    api: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    hand_off: bool,
) {
    let hand_over = async {
        if hand_off {
            store.hand_off_leadership().await;
            if let Err(e) = store.read_barrier().await {
                tracing::warn!(error = %e, "no read barrier after the leadership hand-off");
            }
        }
    };
    let api_done = async {
        let Some(api) = api else { return };
        match tokio::time::timeout(API_STOP_TIMEOUT, api).await {
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "the API server failed"),
            Ok(_) => {}
            Err(_) => tracing::warn!("the API server did not stop in time"),
        }
    };
    tokio::join!(hand_over, api_done);
}

/// Upper bound on the API's stop (its connection drain is 3 s).
const API_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `--join`: the join token, then membership and certificates from the
/// cluster (or nothing, for a data dir that has joined before).
async fn join_cluster(
    a: &ServerArgs,
    url: &str,
    peer_addr: &str,
) -> anyhow::Result<crate::server_join::Joined> {
    let text = match &a.token {
        Some(t) => t.clone(),
        None => std::env::var("KEEL_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
            .context("--join needs --token (or KEEL_TOKEN), as printed by `keel server --init`")?,
    };
    let token = keel_apiserver::auth::bootstrap_token::JoinToken::parse(&text)
        .map_err(|e| anyhow::anyhow!("--token: {e}"))?;
    let listen_host = a
        .listen_api
        .rsplit_once(':')
        .map_or(a.listen_api.as_str(), |(h, _)| h)
        .to_string();
    let mut api_hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if listen_host != "0.0.0.0" && !listen_host.is_empty() {
        api_hosts.push(listen_host);
    }
    api_hosts.extend(a.tls_san.iter().cloned());
    // The API serves the certificate issued here (see
    // `keel_apiserver::pki::joined_server_cert`), so it names what the
    // certificate a replica makes itself names: the advertised host and
    // the `kubernetes` Service's names and address, which pods dial.
    if let Some(host) = a.advertise_api.as_deref().and_then(url_host) {
        api_hosts.push(host);
    }
    api_hosts.extend(
        keel_apiserver::kubernetes_service::SERVICE_DNS_NAMES
            .iter()
            .map(|s| s.to_string()),
    );
    let range: keel_apiserver::api::services::ServiceRange = a
        .service_cluster_ip_range
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--service-cluster-ip-range: {e}"))?;
    api_hosts.push(range.api_service_ip().to_string());
    let mut seen = std::collections::HashSet::new();
    api_hosts.retain(|h| seen.insert(h.clone()));
    crate::server_join::Joiner {
        url: url.trim_end_matches('/'),
        token: &token,
        name: &a.name,
        data_dir: &a.data_dir,
        peer_addr,
        api_hosts,
    }
    .join()
    .await
}

/// The host of `https://host:port[/...]` (brackets of an IPv6 address
/// removed); `None` when there is none.
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    (!host.is_empty()).then(|| host.to_string())
}

/// What starts once the API serves: the controller manager (unless
/// disabled) and, with `--init`, the server join token.
fn serving_hook(
    manager: Option<keel_controllers::manager::ManagerConfig>,
    init_token_dir: Option<PathBuf>,
) -> Option<keel_apiserver::server::OnServing> {
    if manager.is_none() && init_token_dir.is_none() {
        return None;
    }
    Some(Box::new(move |local| {
        let manager = manager.map(|cfg| AbortOnDrop(on_serving(cfg)(local.clone())));
        tokio::spawn(async move {
            if let Some(dir) = init_token_dir {
                let client = keel_controllers::client::in_process(local, "keel-server-init");
                crate::server_token::ensure_and_print(client, dir).await;
            }
            // Aborting this task drops `manager`, which stops it.
            if let Some(mut m) = manager {
                let _ = (&mut m.0).await;
            }
        })
    }))
}

/// Starts the controller manager on the in-process API once it serves.
fn on_serving(cfg: keel_controllers::manager::ManagerConfig) -> keel_apiserver::server::OnServing {
    Box::new(move |local| {
        let clients: keel_controllers::manager::Clients = std::sync::Arc::new(move |name| {
            keel_controllers::client::in_process(local.clone(), name)
        });
        keel_controllers::manager::spawn(clients, cfg)
    })
}

fn api_config(a: &ServerArgs) -> anyhow::Result<keel_apiserver::server::ServeConfig> {
    let extra_tokens = match &a.token_auth_file {
        Some(p) => keel_apiserver::pki::read_token_file(p)?,
        None => vec![],
    };
    Ok(keel_apiserver::server::ServeConfig {
        data_dir: a.data_dir.clone(),
        advertise_url: a.advertise_api.clone(),
        insecure_http: a.insecure_http,
        tls_sans: a.tls_san.clone(),
        extra_tokens,
        api: keel_apiserver::api::ApiConfig {
            request_timeout: Duration::from_secs(a.api_request_timeout_s.max(1)),
            service_range: a
                .service_cluster_ip_range
                .parse()
                .map_err(|e: String| anyhow::anyhow!("--service-cluster-ip-range: {e}"))?,
            service_account_issuer: a.service_account_issuer.clone(),
            api_audiences: a.api_audiences.clone(),
            ..Default::default()
        },
        pod_cidrs: keel_apiserver::nodeservice::PodCidrs::parse(&a.cluster_cidr)
            .map_err(|e| anyhow::anyhow!("--cluster-cidr: {e}"))?,
        audit: audit_config(a)?,
    })
}

fn audit_config(a: &ServerArgs) -> anyhow::Result<Option<keel_apiserver::server::AuditConfig>> {
    let Some(log_path) = a.audit_log_path.clone() else {
        if a.audit_policy_file.is_some() {
            anyhow::bail!("--audit-policy-file needs --audit-log-path");
        }
        return Ok(None);
    };
    let policy = match &a.audit_policy_file {
        Some(p) => keel_apiserver::audit::Policy::load(p)?,
        None => keel_apiserver::audit::Policy::metadata_for_all(),
    };
    Ok(Some(keel_apiserver::server::AuditConfig {
        log_path,
        policy,
    }))
}

fn manager_config(
    a: &ServerArgs,
) -> anyhow::Result<Option<keel_controllers::manager::ManagerConfig>> {
    if a.disable_controllers {
        return Ok(None);
    }
    let mut m = a.manager.config(&a.name)?;
    // The bootstrap writes the cluster CA here before the API serves.
    let pki = a.data_dir.join("pki");
    m.signing = Some(a.manager.signing(pki.join("ca.crt"), pki.join("ca.key"))?);
    Ok(Some(m))
}

pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_cluster_parsing() {
        let c = parse_initial_cluster(
            "a=http://127.0.0.1:1,b=http://127.0.0.1:2,c=127.0.0.1:3",
            false,
        )
        .unwrap();
        assert_eq!(c[2], ("c".to_string(), "127.0.0.1:3".to_string()));
        assert!(parse_initial_cluster("a=http://x:1,b=http://x:2", false)
            .unwrap_err()
            .to_string()
            .contains("1, 3 or 5"));
        assert!(parse_initial_cluster("a", false)
            .unwrap_err()
            .to_string()
            .contains("not name=url"));
        assert!(parse_initial_cluster("a=x:1,a=x:2,b=x:3", false)
            .unwrap_err()
            .to_string()
            .contains("twice"));
    }

    #[test]
    fn url_host_strips_scheme_port_and_brackets() {
        assert_eq!(
            url_host("https://api.example:6443").as_deref(),
            Some("api.example")
        );
        assert_eq!(url_host("https://[::1]:6443/x").as_deref(), Some("::1"));
        assert_eq!(url_host("10.0.0.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(url_host("https://:6443"), None);
    }

    #[test]
    fn retention_parsing() {
        assert!(matches!(
            parse_retention(CompactionMode::Periodic, "0").unwrap(),
            AutoCompaction::Off
        ));
        assert!(matches!(
            parse_retention(CompactionMode::Periodic, "90s").unwrap(),
            AutoCompaction::Periodic(d) if d == Duration::from_secs(90)
        ));
        assert!(matches!(
            parse_retention(CompactionMode::Revision, "1000").unwrap(),
            AutoCompaction::Revisions(1000)
        ));
        assert!(parse_retention(CompactionMode::Periodic, "5d").is_err());
        assert!(matches!(
            parse_retention(CompactionMode::Periodic, default_retention(false)).unwrap(),
            AutoCompaction::Periodic(d) if d == Duration::from_secs(300)
        ));
        assert!(matches!(
            parse_retention(CompactionMode::Periodic, default_retention(true)).unwrap(),
            AutoCompaction::Off
        ));
    }
}
