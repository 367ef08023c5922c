//! The benchmark's baseline: a null ext_authz server. It answers every
//! `envoy.service.auth.v3.Authorization/Check` with `CheckResponse { status: OK }` without
//! looking at the request, and serves gRPC health (SERVING) so Envoy's health checks pass.
//!
//! Everything around the Check is what tenant-authz uses (src/main.rs, src/server.rs): the
//! `#[tokio::main]` multi-thread runtime with the default worker count, tonic's server with
//! `tcp_nodelay` and a 30 s HTTP/2 keep-alive, the health service and the Authorization
//! service on one router. So `./scripts/bench` compares tenant-authz with the physical limit
//! of an ext_authz server on the same machine.
//!
//! ```text
//! target/release/examples/null_authz --grpc-addr 127.0.0.1:9001
//! ```
//! It stops on SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse,
};
use envoy_types::pb::google::rpc;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;

/// gRPC health name of the ext_authz service (as tenant-authz reports it).
const AUTHZ_SERVICE: &str = "envoy.service.auth.v3.Authorization";

struct NullAuthz;

#[tonic::async_trait]
impl Authorization for NullAuthz {
    async fn check(
        &self,
        _request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        Ok(Response::new(CheckResponse {
            status: Some(rpc::Status {
                code: 0,
                ..Default::default()
            }),
            ..Default::default()
        }))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut addr: SocketAddr = "127.0.0.1:9001".parse()?;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--grpc-addr" => {
                addr = args.next().ok_or("--grpc-addr needs a value")?.parse()?;
            }
            "-h" | "--help" => {
                println!("usage: null_authz [--grpc-addr ADDR]   (default 127.0.0.1:9001)");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in ["", AUTHZ_SERVICE] {
        health
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }
    eprintln!("null_authz listening on {}", listener.local_addr()?);
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(health_service)
        .add_service(AuthorizationServer::new(NullAuthz))
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown(),
        )
        .await?;
    Ok(())
}

async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}
