//! Start-up of the Kubernetes backend: its clients and reviewer, and what runs beside the
//! engine (the RBAC watches, the wait for the API, SIGHUP). The server only wires these in.

use std::sync::Arc;
use std::time::Duration;

use super::KubeReviewer;
use crate::authorizer::Invalidate;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::server::BackendReady;

/// The Kubernetes backend, connected but not yet started.
pub struct KubeBackend {
    reviewer: KubeReviewer,
    /// A second client for the watches, when `kubernetes.watch_rbac` is on.
    watch_client: Option<kube::Client>,
    watch_pods: bool,
}

impl KubeBackend {
    /// Builds the clients (kubeconfig or in-cluster) and the reviewer.
    pub async fn connect(config: &Config) -> Result<Self> {
        let backstop = config.decision_timeout + Duration::from_secs(1);
        let client = client(config, backstop).await?;
        // Watches idle between events: their client must not have the reviews' short read
        // timeout, but `watch_idle_timeout`, longer than the API server's bookmark period, so
        // a connection that died silently is noticed.
        let watch_client = if config.kubernetes.watch_rbac {
            Some(self::client(config, config.kubernetes.watch_idle_timeout).await?)
        } else {
            None
        };
        let reviewer = KubeReviewer::new(
            client,
            config.kubernetes.audiences.clone(),
            config.authorization.clone(),
        )
        .with_products(&config.products);
        Ok(Self {
            reviewer,
            watch_client,
            watch_pods: config.kubernetes.watch_pods,
        })
    }

    pub fn reviewer(&self) -> KubeReviewer {
        self.reviewer.clone()
    }

    /// Starts what runs beside the engine: the watches that drop decisions from `target`, the
    /// SIGHUP note, and the wait for the API that marks `ready`.
    pub fn spawn_beside(
        self,
        target: Arc<dyn Invalidate>,
        metrics: Arc<Metrics>,
        ready: BackendReady,
    ) {
        tokio::spawn(ignore_sighup());
        if let Some(client) = self.watch_client {
            super::watch::spawn(client, target, metrics, ready.readiness(), self.watch_pods);
        } else {
            tracing::info!("kubernetes.watch_rbac is off: revocations wait for the TTLs");
        }
        tokio::spawn(wait_for_api(self.reviewer, ready));
    }
}

/// A client from `kubernetes.kubeconfig`, or in-cluster / `$KUBECONFIG` when unset.
pub async fn client(config: &Config, read_timeout: Duration) -> Result<kube::Client> {
    let err = |e: &dyn std::fmt::Display| Error::KubeConfig(e.to_string());
    let mut kc = match &config.kubernetes.kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path).map_err(|e| err(&e))?;
            kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .map_err(|e| err(&e))?
        }
        None => kube::Config::infer().await.map_err(|e| err(&e))?,
    };
    // The decision deadline bounds every review and gives the clear 503 reason; the client's
    // own timeouts are only a backstop behind it, so they are set a little longer.
    let backstop = config.decision_timeout + Duration::from_secs(1);
    kc.connect_timeout = Some(backstop);
    kc.read_timeout = Some(read_timeout);
    // The read timer counts from each request, not from when its pooled connection went idle:
    // else a connection idle for most of `read_timeout` fails the next review at once (kube
    // 5.0's `Config::read_timeout` docs). A watch writes only its request, so this changes
    // nothing for the watches' idle timeout.
    kc.reset_reader_on_write = true;
    kc.write_timeout = Some(backstop);
    kube::Client::try_from(kc).map_err(|e| err(&e))
}

/// SIGHUP would end the process by default; with the Kubernetes backend there is nothing to
/// reload, so say so instead.
async fn ignore_sighup() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: nothing to reload with the kubernetes backend");
    }
}

/// Marks the backend ready once `GET /version` answers; retries until it does.
async fn wait_for_api(reviewer: KubeReviewer, ready: BackendReady) {
    let mut delay = Duration::from_millis(200);
    loop {
        match reviewer.reachable().await {
            Ok(version) => {
                tracing::info!(%version, "Kubernetes API reached");
                ready.mark_ready().await;
                return;
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?delay, "Kubernetes API not reachable yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
