//! Names outside the cluster zone go to upstream servers, through
//! hickory's forwarding zone handler (a caching `hickory-resolver` over UDP
//! with TCP fallback) mounted at the root of a hickory [`Catalog`].
//!
//! Upstreams are `--dns-upstream` addresses or, by default, the
//! `nameserver` lines of the host's `/etc/resolv.conf`, minus the cluster
//! DNS address itself (forwarding to ourselves would loop).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hickory_proto::rr::{LowerName, Name};
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverOpts};
use hickory_server::store::forwarder::{ForwardConfig, ForwardZoneHandler};
use hickory_server::zone_handler::Catalog;

/// Where the host's resolver configuration lives.
pub const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";
/// How long one upstream attempt may take.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// The `nameserver` addresses of a resolv.conf text, port 53, in order,
/// without those in `skip`. Malformed lines are ignored, as libc does.
pub fn nameservers(resolv_conf: &str, skip: &[IpAddr]) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            match words.next() {
                Some("nameserver") => words.next()?.parse::<IpAddr>().ok(),
                _ => None,
            }
        })
        .filter(|ip| !skip.contains(ip))
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// The upstreams to use: `configured` if any, else the host's
/// nameservers; `own` (the cluster DNS address) is never one of them.
pub fn upstreams(configured: &[SocketAddr], own: Option<SocketAddr>) -> Vec<SocketAddr> {
    let list = match configured.is_empty() {
        false => configured.to_vec(),
        true => {
            let text = std::fs::read_to_string(HOST_RESOLV_CONF).unwrap_or_default();
            nameservers(&text, &[])
        }
    };
    list.into_iter()
        .filter(|a| Some(*a) != own && !(own.is_some_and(|o| o.ip() == a.ip()) && a.port() == 53))
        .collect()
}

/// A catalog that forwards every name to `upstreams` (tried in order).
///
/// Errors: `upstreams` is empty, or the resolver cannot be built.
pub fn catalog(upstreams: &[SocketAddr]) -> anyhow::Result<Catalog> {
    anyhow::ensure!(!upstreams.is_empty(), "no upstream DNS server");
    let name_servers = upstreams
        .iter()
        .map(|a| {
            let conn = |mut c: ConnectionConfig| {
                c.port = a.port();
                c
            };
            NameServerConfig::new(
                a.ip(),
                true,
                vec![conn(ConnectionConfig::udp()), conn(ConnectionConfig::tcp())],
            )
        })
        .collect();
    let mut options = ResolverOpts::default();
    options.timeout = UPSTREAM_TIMEOUT;
    options.attempts = 2;
    let handler = ForwardZoneHandler::builder_tokio(ForwardConfig {
        name_servers,
        options: Some(options),
    })
    .build()
    .map_err(anyhow::Error::msg)
    .context("building the DNS forwarder")?;
    let mut catalog = Catalog::new();
    catalog.upsert(LowerName::new(&Name::root()), vec![Arc::new(handler)]);
    Ok(catalog)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_come_from_resolv_conf_lines() {
        let text = "# comment\nsearch example.test\nnameserver 127.0.0.53\nnameserver   ::1 \n\
                    nameserver bogus\noptions edns0\nnameserver 127.43.0.10\n";
        let own: IpAddr = "127.43.0.10".parse().unwrap();
        assert_eq!(
            nameservers(text, &[own]),
            vec![
                "127.0.0.53:53".parse::<SocketAddr>().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn configured_upstreams_skip_our_own_address() {
        let own: SocketAddr = "127.43.0.10:53".parse().unwrap();
        let configured = ["127.0.0.9:5353".parse().unwrap(), own];
        assert_eq!(
            upstreams(&configured, Some(own)),
            vec!["127.0.0.9:5353".parse::<SocketAddr>().unwrap()]
        );
        assert!(catalog(&[]).is_err());
    }
}
