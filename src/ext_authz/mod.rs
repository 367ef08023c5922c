//! Envoy's `envoy.service.auth.v3.Authorization`: parse, decide, respond, record. A thin adapter.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;

use envoy_types::ext_authz::v3::pb::{Authorization, CheckRequest, CheckResponse};
use tonic::{Request, Response, Status};

use crate::authorizer::Authorizer;
use crate::metrics::Metrics;
use crate::model::{Decision, DenyReason};

use crate::review::Reviewer;
use decision_log::DecisionLog;

pub mod decision_log;
pub mod request;
pub mod response;

pub use request::{normalize_path, ParsedCheck, RequestParser};

/// The gRPC service. Holds only shared handles to the engine, the parser and the metrics.
pub struct CheckService<R> {
    authorizer: Arc<Authorizer<R>>,
    parser: Arc<RequestParser>,
    metrics: Arc<Metrics>,
    tenant_header: Arc<str>,
    log: DecisionLog,
    /// tenant-authz's own traces; `None` (the default) costs nothing per Check.
    traces: Option<Arc<crate::traces::Traces>>,
}

impl<R> Clone for CheckService<R> {
    fn clone(&self) -> Self {
        Self {
            authorizer: self.authorizer.clone(),
            parser: self.parser.clone(),
            metrics: self.metrics.clone(),
            tenant_header: self.tenant_header.clone(),
            log: self.log,
            traces: self.traces.clone(),
        }
    }
}

impl<R: Reviewer> CheckService<R> {
    pub fn new(
        authorizer: Arc<Authorizer<R>>,
        parser: RequestParser,
        metrics: Arc<Metrics>,
        tenant_header: &str,
    ) -> Self {
        Self {
            authorizer,
            parser: Arc::new(parser),
            metrics,
            tenant_header: tenant_header.into(),
            log: DecisionLog::default(),
            traces: None,
        }
    }

    /// Logs a share of cached allows at `info` (`log.cached_allow_sample_ratio`).
    pub fn with_decision_log(mut self, log: DecisionLog) -> Self {
        self.log = log;
        self
    }

    /// Traces each sampled Check (see `crate::traces`).
    pub fn with_traces(mut self, traces: Option<Arc<crate::traces::Traces>>) -> Self {
        self.traces = traces;
        self
    }

    /// Decides one CheckRequest. Never fails: every outcome is a CheckResponse (a gRPC error
    /// would hand the decision to Envoy's `failure_mode_allow`).
    pub async fn decide(&self, req: &CheckRequest) -> CheckResponse {
        let started = Instant::now();
        let (action, parsed) = self.parser.parse(req);
        let reviewed = parsed.is_ok();
        let traced = self.traces.is_some();
        // The decision moves the tenants into an allow; a denial's log line needs them too.
        let (mut tenants, mut product) = (None, None);
        let decision = match parsed {
            Ok(p) => {
                if traced {
                    crate::traces::record_request(p.product, &p.tenants);
                }
                tenants = Some(p.tenants.canonical_shared());
                product = Some(p.product);
                // A panic must still be a denied CheckResponse: as a gRPC error it would hand
                // the decision to Envoy's failure_mode_allow.
                let check = self
                    .authorizer
                    .check_in(&p.token, p.tenants, p.product, p.action);
                match AssertUnwindSafe(check).catch_unwind().await {
                    Ok(decision) => decision,
                    Err(_) => {
                        tracing::error!("decision panicked; denying");
                        Decision::deny(DenyReason::Unavailable("internal error".into()))
                    }
                }
            }
            Err(reason) => Decision::deny(reason),
        };
        let elapsed = started.elapsed();
        if traced {
            crate::traces::record_decision(&decision, action);
        }
        self.metrics
            .check_answered(&decision, action, reviewed, elapsed);
        self.log.write(
            &decision,
            &decision_log::Context {
                req,
                tenants: tenants.as_deref(),
                product,
                action,
                latency: elapsed,
            },
        );
        response::build(&decision, action, &self.tenant_header)
    }
}

#[tonic::async_trait]
impl<R: Reviewer> Authorization for CheckService<R> {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let span = self
            .traces
            .as_ref()
            .and_then(|t| t.start_check(request.metadata(), request.get_ref()));
        let req = request.into_inner();
        Ok(Response::new(match span {
            None => self.decide(&req).await,
            Some(span) => span.run(self.decide(&req)).await,
        }))
    }
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
