//! The configuration model: one struct with defaults, loaded from YAML (`load.rs`), overridden by
//! flags and `TENANT_AUTHZ_*` environment variables (see `cli.rs`), checked by `validate()`
//! (`validate.rs`) with errors that name the field. The sections live in their own files; the
//! route tables are data in `crate::routes`.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod load;
mod products;
mod sections;
mod static_;
mod traces;
mod validate;

pub use crate::routes::{ActionConfig, ActionRule, RuleAction};
pub use products::{ProductConfig, ProductsConfig};
pub use sections::{CacheConfig, KubernetesConfig, SarConfig, SarMapping, ShutdownConfig, Verbs};
pub use static_::{StaticConfig, StaticGrant, StaticIdentity};
pub use traces::{parse_headers as parse_trace_headers, TracesConfig};
pub use validate::MAX_CACHE_TTL;

/// Everything tenant-authz can be told. Every field has a default, so no file is needed.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the ext_authz gRPC server (Envoy's `Authorization/Check` and gRPC health).
    pub grpc_addr: SocketAddr,
    /// Address of the admin HTTP server: `/healthz`, `/readyz`, `/metrics`, `/debug/*`.
    pub admin_addr: SocketAddr,
    /// Logs: format and the decision log's sampling of cached allows.
    pub log: LogConfig,
    /// Before `log.format`: read (and warned about) when `log.format` is not set, never written.
    #[serde(skip_serializing)]
    pub log_format: Option<LogFormat>,
    /// Before `log.cached_allow_sample_ratio`: as `log_format`.
    #[serde(skip_serializing)]
    pub log_cached_allow_sample_ratio: Option<f64>,
    /// Where identities and grants come from.
    pub backend: Backend,
    /// Request header naming the tenant(s); Tempo's is `x-scope-orgid`.
    pub tenant_header: String,
    /// Bearer tokens longer than this are refused (401) without an API call.
    pub max_token_bytes: usize,
    /// Deadline of one decision, below Envoy's ext_authz timeout (2 s in our Envoy configs).
    #[serde(with = "humantime_serde")]
    pub decision_timeout: Duration,
    pub shutdown: ShutdownConfig,
    pub kubernetes: KubernetesConfig,
    pub authorization: SarConfig,
    pub cache: CacheConfig,
    /// Tempo's action table (the other products' are under `products`).
    pub actions: ActionConfig,
    /// Which product a request is for, and each other product's SAR resource and table.
    pub products: ProductsConfig,
    /// tenant-authz's own spans over OTLP (off unless `traces.endpoint` is set).
    pub traces: TracesConfig,
    /// Identities and grants of the static backend (`backend: static`).
    #[serde(rename = "static", skip_serializing_if = "StaticConfig::is_empty")]
    pub static_: StaticConfig,
    /// The file this configuration was read from (watched for reloads); not a config field.
    #[serde(skip)]
    pub source: Option<std::path::PathBuf>,
    /// Old keys the file used (`log_format`, ...), for a warning at start-up; not a config field.
    #[serde(skip)]
    pub deprecated: Vec<&'static str>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            grpc_addr: SocketAddr::from(([0, 0, 0, 0], 9001)),
            admin_addr: SocketAddr::from(([0, 0, 0, 0], 9090)),
            log: LogConfig::default(),
            log_format: None,
            log_cached_allow_sample_ratio: None,
            backend: Backend::Kubernetes,
            tenant_header: "x-scope-orgid".into(),
            max_token_bytes: 16 * 1024,
            decision_timeout: Duration::from_millis(1500),
            shutdown: ShutdownConfig::default(),
            kubernetes: KubernetesConfig::default(),
            authorization: SarConfig::default(),
            cache: CacheConfig::default(),
            actions: ActionConfig::default(),
            products: ProductsConfig::default(),
            traces: TracesConfig::default(),
            static_: StaticConfig::default(),
            source: None,
            deprecated: Vec::new(),
        }
    }
}

/// The `log` section.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// Share of cached allows that get an `info` line in the decision log (0.0..=1.0); the
    /// others are at `debug`. Every other decision is always logged.
    pub cached_allow_sample_ratio: f64,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            cached_allow_sample_ratio: 0.0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Config {
    /// What start-up should warn about in a valid config: old keys, and settings that work
    /// but cost (e.g. a watch idle timeout below the API server's bookmark period).
    pub fn warnings(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .deprecated
            .iter()
            .map(|key| format!("the config file uses an old key, {key}; it still works, rename it"))
            .collect();
        let idle = self.kubernetes.watch_idle_timeout;
        if self.backend == Backend::Kubernetes
            && self.kubernetes.watch_rbac
            && idle < std::time::Duration::from_secs(65)
        {
            out.push(format!(
                "kubernetes.watch_idle_timeout is {}, below the API server's bookmark period \
                 (1 min): a quiet watch will be taken as dead and relisted every {}",
                humantime::format_duration(idle),
                humantime::format_duration(idle)
            ));
        }
        out
    }

    /// Moves the keys of before the `log` section into it and records them in `deprecated`.
    /// Both spellings of one setting in the same file (`new_format`, `new_ratio`: whether the
    /// file sets `log.format`, `log.cached_allow_sample_ratio`) is an error naming both.
    pub(crate) fn fold_old_log_keys(
        &mut self,
        new_format: bool,
        new_ratio: bool,
    ) -> Result<(), crate::error::Error> {
        let used = &mut self.deprecated;
        let clash = |old: &str, new: &str| crate::error::Error::ConfigInvalid {
            field: old.into(),
            reason: format!("replaced by {new}; set only {new}"),
        };
        if let Some(format) = self.log_format.take() {
            if new_format {
                return Err(clash("log_format", "log.format"));
            }
            self.log.format = format;
            used.push("log_format (now log.format)");
        }
        if let Some(ratio) = self.log_cached_allow_sample_ratio.take() {
            if new_ratio {
                return Err(clash(
                    "log_cached_allow_sample_ratio",
                    "log.cached_allow_sample_ratio",
                ));
            }
            self.log.cached_allow_sample_ratio = ratio;
            used.push("log_cached_allow_sample_ratio (now log.cached_allow_sample_ratio)");
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// TokenReview + SubjectAccessReview against the Kubernetes API (`KUBECONFIG` or in-cluster).
    Kubernetes,
    /// Identities and grants from the `static` section of this file, reloaded when it changes:
    /// for the demo, development, and Tempo outside Kubernetes.
    Static,
}

#[cfg(test)]
mod tests;
