//! Reloading the static backend's identities and grants when the config file changes (polled,
//! which also follows Kubernetes ConfigMap symlink swaps) or on SIGHUP. A bad new file keeps the
//! running data, logs the error naming the field, and counts in a metric.

use std::sync::Arc;
use std::time::Duration;

use crate::authorizer::Authorizer;
use crate::config::{Backend, Config};
use crate::metrics::Metrics;
use crate::review::static_::StaticReviewer;

/// How often the file is compared with what was last loaded.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

pub async fn watch_static(
    running: Config,
    reviewer: Arc<StaticReviewer>,
    authorizer: Arc<Authorizer<Arc<StaticReviewer>>>,
    metrics: Arc<Metrics>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let Some(path) = running.source.clone() else {
        tracing::info!("static backend without a config file: nothing to reload");
        return;
    };
    let mut hup = signal(SignalKind::hangup()).ok();
    if hup.is_none() {
        tracing::warn!("cannot listen for SIGHUP; reloading on file changes only");
    }
    let mut last = tokio::fs::read(&path).await.ok();
    loop {
        let forced = tokio::select! {
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => true,
            () = tokio::time::sleep(POLL_INTERVAL) => false,
        };
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(error) => {
                if forced {
                    tracing::error!(path = %path.display(), %error, "config reload failed: cannot read the file; keeping the running config");
                    metrics.config_reloaded(false);
                }
                continue;
            }
        };
        if !forced && last.as_deref() == Some(bytes.as_slice()) {
            continue;
        }
        last = Some(bytes.clone());
        let loaded = std::str::from_utf8(&bytes)
            .map_err(|e| crate::Error::ConfigParse {
                path: path.clone(),
                field: "(file)".into(),
                message: e.to_string(),
            })
            .and_then(Config::from_yaml)
            .and_then(|c| c.validate().map(|()| c));
        match loaded {
            Ok(new) if new.backend != Backend::Static => {
                tracing::error!(path = %path.display(), "config reload failed: field backend: changing the backend needs a restart; keeping the running config");
                metrics.config_reloaded(false);
            }
            Ok(new) => {
                reviewer.replace(&new.static_);
                authorizer.invalidate_all();
                metrics.config_reloaded(true);
                tracing::info!(
                    path = %path.display(),
                    identities = new.static_.identities.len(),
                    grants = new.static_.grants.len(),
                    trigger = if forced { "SIGHUP" } else { "file change" },
                    "static identities and grants reloaded"
                );
                let mut unchanged = new.clone();
                unchanged.static_ = running.static_.clone();
                unchanged.source = running.source.clone();
                if unchanged != running {
                    tracing::warn!(
                        "only the static section is reloaded; restart to apply the other changes"
                    );
                }
            }
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "config reload failed; keeping the running config");
                metrics.config_reloaded(false);
            }
        }
    }
}
