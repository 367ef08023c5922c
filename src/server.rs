//! Wiring: backend, engine, gRPC server, admin server, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::admin::{self, Readiness};
use crate::authorizer::{Authorizer, AuthorizerSettings, Invalidate};
use crate::config::{Backend, Config};
use crate::error::{Error, Result};
use crate::ext_authz::decision_log::DecisionLog;
use crate::ext_authz::{CheckService, RequestParser};
use crate::metrics::{CacheSizeCollector, Metrics};
use crate::review::kube::start::KubeBackend;
use crate::review::static_::StaticReviewer;
use crate::review::Reviewer;

/// A started tenant-authz: its bound addresses, and a handle to wait for its end.
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    task: JoinHandle<Result<()>>,
}

impl Running {
    /// Waits until the servers have shut down (after the shutdown future completed).
    pub async fn wait(self) -> Result<()> {
        match self.task.await {
            Ok(result) => result,
            Err(join) => Err(Error::Admin(std::io::Error::other(join.to_string()))),
        }
    }
}

/// Starts and serves until `shutdown` completes, then drains.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    start(config, shutdown).await?.wait().await
}

/// Binds both servers and starts serving; returns once they listen.
pub async fn start(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running> {
    config.validate()?;
    match config.backend {
        Backend::Kubernetes => {
            let backend = KubeBackend::connect(&config).await?;
            let reviewer = backend.reviewer();
            start_with(config, reviewer, shutdown, move |started| {
                let target: Arc<dyn Invalidate> = started.authorizer.clone();
                backend.spawn_beside(target, started.metrics, started.ready);
            })
            .await
        }
        Backend::Static => {
            let reviewer = Arc::new(StaticReviewer::new(&config.static_));
            tracing::info!(
                identities = config.static_.identities.len(),
                grants = config.static_.grants.len(),
                "static backend"
            );
            let watched = config.clone();
            let handle = reviewer.clone();
            start_with(config, reviewer, shutdown, move |started| {
                tokio::spawn(async move {
                    // The config is loaded: ready at once.
                    started.ready.mark_ready().await;
                    crate::reload::watch_static(
                        watched,
                        handle,
                        started.authorizer,
                        started.metrics,
                    )
                    .await;
                });
            })
            .await
        }
    }
}

/// Marks the backend ready: `/readyz` 200 and gRPC health SERVING (unless shutting down).
#[derive(Clone)]
pub struct BackendReady {
    readiness: Arc<Readiness>,
    health: HealthReporter,
}

/// gRPC health name of the ext_authz service.
const AUTHZ_SERVICE: &str = "envoy.service.auth.v3.Authorization";

impl BackendReady {
    /// The readiness state, for components that add a note to `/readyz`.
    pub fn readiness(&self) -> Arc<Readiness> {
        self.readiness.clone()
    }

    pub async fn mark_ready(&self) {
        self.readiness.set_backend_ready();
        if self.readiness.check().is_ok() {
            for name in ["", AUTHZ_SERVICE] {
                self.health
                    .set_service_status(name, ServingStatus::Serving)
                    .await;
            }
        }
    }
}

/// What a backend gets once the servers listen.
pub struct Started<R> {
    /// Marks the backend ready; until then `/readyz` is 503 and gRPC health NOT_SERVING.
    pub ready: BackendReady,
    pub authorizer: Arc<Authorizer<R>>,
    pub metrics: Arc<Metrics>,
}

/// Starts the servers around any reviewer; `on_start` runs once they listen.
pub async fn start_with<R: Reviewer>(
    config: Config,
    reviewer: R,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_start: impl FnOnce(Started<R>),
) -> Result<Running> {
    let mut registry = Registry::with_prefix("tenant_authz");
    let metrics = Arc::new(Metrics::register(&mut registry));
    let readiness = Arc::new(Readiness::for_backend(reviewer.name()));
    let authorizer = Arc::new(Authorizer::new(
        reviewer,
        AuthorizerSettings {
            cache: config.cache.clone(),
            decision_timeout: config.decision_timeout,
            max_concurrent_reviews: config.kubernetes.max_concurrent_reviews,
            max_reviews_per_check: config.kubernetes.max_reviews_per_check,
        },
        metrics.clone(),
    ));
    let for_backend = (authorizer.clone(), metrics.clone());
    let sizes = authorizer.clone();
    registry.register_collector(Box::new(CacheSizeCollector::new(move || {
        sizes.cache_sizes()
    })));
    let reporter = authorizer.clone();
    let debug = crate::debug::router(
        crate::telemetry::installed_filter(),
        Arc::new(move |user: Option<&str>| reporter.cache_report(user)),
    );
    let parser = RequestParser::from_config(&config);
    let traces = crate::traces::Traces::from_config(&config.traces)?;
    let service = CheckService::new(authorizer, parser, metrics, &config.tenant_header)
        .with_decision_log(DecisionLog::new(config.log.cached_allow_sample_ratio))
        .with_traces(traces.clone());

    let grpc_listener = bind(config.grpc_addr).await?;
    let admin_listener = bind(config.admin_addr).await?;
    let grpc_addr = local_addr(&grpc_listener, config.grpc_addr)?;
    let admin_addr = local_addr(&admin_listener, config.admin_addr)?;

    let (health, health_service) = tonic_health::server::health_reporter();
    for name in ["", AUTHZ_SERVICE] {
        health
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }

    // Phase 1 (signal): readiness and gRPC health go NOT_SERVING, serving continues for
    // `shutdown.delay`; phase 2: stop accepting and drain for at most `shutdown.grace`.
    let (drain_tx, drain_rx) = watch::channel(false);
    let grpc = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(health_service)
        .add_service(AuthorizationServer::new(service))
        // `tcp_nodelay` above is ignored for a supplied listener: set it on the incoming
        // stream, or every two-write denial waits ~40 ms for the peer's delayed ACK.
        .serve_with_incoming_shutdown(
            TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
            drained(drain_rx.clone()),
        );
    let admin = axum::serve(
        admin_listener,
        admin::router(readiness.clone(), Arc::new(registry))
            .merge(debug)
            .into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(drained(drain_rx));

    tracing::info!(%grpc_addr, %admin_addr, "tenant-authz listening");
    on_start(Started {
        ready: BackendReady {
            readiness: readiness.clone(),
            health: health.clone(),
        },
        authorizer: for_backend.0,
        metrics: for_backend.1,
    });
    let shutdown_cfg = config.shutdown.clone();
    let task = tokio::spawn(async move {
        let grpc = tokio::spawn(grpc);
        let admin = tokio::spawn(async move { admin.await });
        shutdown.await;
        tracing::info!(delay = ?shutdown_cfg.delay, grace = ?shutdown_cfg.grace, "shutting down");
        readiness.set_shutting_down();
        for name in ["", AUTHZ_SERVICE] {
            health
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        tokio::time::sleep(shutdown_cfg.delay).await;
        let _ = drain_tx.send(true);
        let drained = tokio::time::timeout(shutdown_cfg.grace, async {
            let g = grpc.await;
            let a = admin.await;
            (g, a)
        })
        .await;
        match drained {
            Ok((grpc, admin)) => {
                if let Ok(Err(e)) = grpc {
                    return Err(Error::Grpc(e));
                }
                if let Ok(Err(e)) = admin {
                    return Err(Error::Admin(e));
                }
                if let Some(traces) = &traces {
                    traces.shutdown().await;
                }
                tracing::info!("drained; bye");
            }
            Err(_) => {
                tracing::warn!(grace = ?shutdown_cfg.grace, "in-flight checks did not finish within the grace period")
            }
        }
        Ok(())
    });
    Ok(Running {
        grpc_addr,
        admin_addr,
        task,
    })
}

async fn drained(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|d| *d).await;
}

async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

fn local_addr(listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr> {
    listener
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::server::NamedService;

    #[test]
    fn health_name_is_the_ext_authz_service() {
        assert_eq!(
            AUTHZ_SERVICE,
            <AuthorizationServer<CheckService<crate::review::memory::MemoryReviewer>> as NamedService>::NAME
        );
    }
}
