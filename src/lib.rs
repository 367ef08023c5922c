//! tenant-authz: an Envoy ext_authz server that authorizes multi-tenant Grafana Tempo traffic
//! with Kubernetes TokenReview and SubjectAccessReview.
//!
//! A Check reads as a straight line: [`ext_authz::request`] parses it, [`authorizer`] decides
//! it through [`cache`] and a [`review::Reviewer`], [`ext_authz::response`] answers it.

pub mod admin;
pub mod authorizer;
pub mod cache;
pub mod cli;
pub mod config;
pub mod debug;
pub mod error;
pub mod explain;
pub mod ext_authz;
pub mod metrics;
pub mod model;
pub mod reload;
pub mod review;
pub mod routes;
pub mod server;
pub mod telemetry;
pub mod traces;

pub use config::Config;
pub use error::{Error, Result};
pub use server::{run, start, Running};
