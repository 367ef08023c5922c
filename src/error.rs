//! Errors of the library. Client-facing denials are `model::DenyReason`, not errors.

use std::net::SocketAddr;
use std::path::PathBuf;

/// What can stop tenant-authz from starting or serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config file {path}: {source}")]
    ConfigRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path:?}: field {field}: {message}")]
    ConfigParse {
        path: PathBuf,
        field: String,
        message: String,
    },
    #[error("config: field {field}: {reason}")]
    ConfigInvalid { field: String, reason: String },
    #[error("cannot set up the Kubernetes client (set KUBECONFIG or run in a pod): {0}")]
    KubeConfig(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("admin server failed: {0}")]
    Admin(std::io::Error),
    #[error("cannot set up the OTLP trace exporter: {0}")]
    Traces(String),
}

impl Error {
    /// Bounded label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::ConfigRead { .. } => "config_read",
            Error::ConfigParse { .. } => "config_parse",
            Error::ConfigInvalid { .. } => "config_invalid",
            Error::KubeConfig(_) => "kube_config",
            Error::Bind { .. } => "bind",
            Error::Grpc(_) => "grpc",
            Error::Admin(_) => "admin",
            Error::Traces(_) => "traces",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
