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
                tenants = Some(p.tenants.canonical().to_owned());
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
                request_id: request_id(req),
                route: decision_log::route(req),
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

/// Envoy's request id (`x-request-id`, else the attribute id), bounded: logs carry it as a
/// field instead of a span per Check, which would cost about as much as a cached decision.
fn request_id(req: &CheckRequest) -> &str {
    let id = req
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
        .map(|h| {
            h.headers
                .get("x-request-id")
                .map(String::as_str)
                .unwrap_or(h.id.as_str())
        })
        .unwrap_or("");
    truncate_id(id)
}

/// Request ids come from the client side; bound what reaches the logs.
fn truncate_id(id: &str) -> &str {
    let mut end = id.len().min(64);
    while !id.is_char_boundary(end) {
        end -= 1;
    }
    &id[..end]
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
