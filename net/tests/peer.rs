//! Peer RPC over real loopback TCP and over turmoil's simulated network:
//! round trips, deadlines, unreachable peers, and recovery after a
//! partition heals.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use keel_net::{peer_server, PeerClient, PeerError, PeerHandler, PeerMethod, Transport};
use tonic::Status;

/// Echoes the payload, prefixed with the method; "slow" sleeps first.
struct Echo;

#[tonic::async_trait]
impl PeerHandler for Echo {
    async fn handle(&self, method: PeerMethod, data: Vec<u8>) -> Result<Vec<u8>, Status> {
        if data == b"slow" {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        let mut out = format!("{method:?}:").into_bytes();
        out.extend(data);
        Ok(out)
    }
}

async fn serve(transport: Transport, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let incoming = transport.incoming(addr).await?;
    let local = incoming.local_addr()?;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(peer_server(Arc::new(Echo)))
            .serve_with_incoming(incoming),
    );
    Ok(local)
}

#[tokio::test]
async fn tcp_round_trip_deadline_and_unreachable() {
    let addr = serve(Transport::Tcp, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = PeerClient::new(Transport::Tcp);
    let out = client
        .call(
            &addr.to_string(),
            PeerMethod::Vote,
            b"hi".to_vec(),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(out, b"Vote:hi");

    let slow = client
        .call(
            &addr.to_string(),
            PeerMethod::Forward,
            b"slow".to_vec(),
            Duration::from_millis(200),
        )
        .await;
    assert!(matches!(slow, Err(PeerError::Timeout { .. })), "{slow:?}");

    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // Nothing listens there any more.
    let err = client
        .call(
            &dead.to_string(),
            PeerMethod::AppendEntries,
            vec![],
            Duration::from_secs(2),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, PeerError::Refused { .. }), "{err:?}");
}

#[cfg(feature = "turmoil")]
#[test]
fn simulated_round_trip_survives_a_partition() {
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(60))
        .build();
    sim.host("server", || async {
        serve(Transport::Sim, "0.0.0.0:2380".parse().unwrap()).await?;
        std::future::pending::<()>().await;
        Ok(())
    });
    sim.client("client", async {
        let client = PeerClient::new(Transport::Sim);
        let timeout = Duration::from_secs(1);
        let ok = client
            .call(
                "server:2380",
                PeerMethod::AppendEntries,
                b"a".to_vec(),
                timeout,
            )
            .await?;
        assert_eq!(ok, b"AppendEntries:a");

        turmoil::partition("client", "server");
        let cut = client
            .call(
                "server:2380",
                PeerMethod::AppendEntries,
                b"b".to_vec(),
                timeout,
            )
            .await;
        assert!(
            cut.is_err(),
            "a partitioned call must fail within its deadline"
        );

        turmoil::repair("client", "server");
        let mut healed = None;
        for _ in 0..20 {
            if let Ok(v) = client
                .call("server:2380", PeerMethod::Vote, b"c".to_vec(), timeout)
                .await
            {
                healed = Some(v);
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert_eq!(
            healed.as_deref(),
            Some(&b"Vote:c"[..]),
            "the channel reconnects after the partition heals"
        );
        Ok(())
    });
    sim.run().unwrap();
}
