//! Shared fixtures for the integration and end-to-end tests.
#![allow(dead_code, unused_imports)]

pub mod authz;
pub mod envoy;
pub mod fake_kube;
pub mod otlp;
pub mod script;
pub mod stack;
pub mod tls;
pub mod upstream;
