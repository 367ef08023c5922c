//! Traces of tenant-authz itself: a span per sampled Check, a child per authentication and per
//! tenant's authorization, exported over OTLP/gRPC. Off unless `traces.endpoint` is set.
//!
//! Built on the OpenTelemetry API directly rather than a `tracing` layer: a layer would build
//! every span and then drop most of them, while here the sampler decides first and an unsampled
//! Check gets no span, no context and no attribute at all (BENCHMARKS.md has the figures).
//!
//! **Parent.** A Check joins the request's trace through W3C `traceparent`, taken from
//! 1. the gRPC metadata of the Check call: Envoy's gRPC client injects the context of its own
//!    ext_authz span there when Envoy traces (HCM `tracing`), so tenant-authz's span sits under
//!    Envoy's `async envoy.service.auth.v3.Authorization.Check egress` span; else
//! 2. the client's `traceparent` among the HTTP headers of the CheckRequest, which is the
//!    request as the client sent it (Envoy injects its own context only later, in the router):
//!    the span is then a child of the client's span, next to the upstream's.
//!
//! Envoy's is the better parent when present: same trace, one level deeper, and its sampled
//! flag is Envoy's decision. Without a parent, `traces.sampling_ratio` decides (a root).
//! A parent's sampled flag is followed either way (parent-based sampling).
//!
//! **What a reader sees.** A Check answered wholly from the decision cache has no children and
//! `tenant_authz.cached = true`. Otherwise there is one `authenticate` span and one `authorize`
//! span per tenant, each with `tenant_authz.cache` = `hit` (from the cache), `miss` (this Check
//! ran the review) or `coalesced` (it waited for an identical review another Check ran), and
//! the outcome. No attribute carries the token or anything derived from it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use envoy_types::ext_authz::v3::pb::CheckRequest;
use opentelemetry::context::{Context, FutureExt as _};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt, TraceFlags, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    Sampler, SamplingDecision, SdkTracer, SdkTracerProvider, ShouldSample as _,
};
use opentelemetry_sdk::Resource;
use tonic::metadata::MetadataMap;

use crate::cache::Source;
use crate::config::TracesConfig;
use crate::error::Error;
use crate::model::{Action, Decision, Product, Tenant, Tenants};

/// Name of the Check span: the gRPC method, as OpenTelemetry's RPC conventions name it.
pub const CHECK_SPAN: &str = "envoy.service.auth.v3.Authorization/Check";
/// Name of the span of a token's authentication (identity cache or a TokenReview).
pub const AUTHENTICATE_SPAN: &str = "authenticate";
/// Name of the span of one tenant's authorization (decision cache or a SubjectAccessReview).
pub const AUTHORIZE_SPAN: &str = "authorize";

/// The tracer and its exporter. Exists only when `traces.endpoint` is set.
pub struct Traces {
    tracer: SdkTracer,
    provider: SdkTracerProvider,
    propagator: TraceContextPropagator,
    /// `None`: a client's own `traceparent` is followed, sampled flag included. `Some(ratio)`:
    /// its trace is joined, but sampled at `ratio` by trace id (`traces.follow_client_sampled`
    /// off), so a client cannot have every Check traced.
    client_ratio: Option<f64>,
}

impl Traces {
    /// The tracer for `config`, or `None` when no endpoint is set. Needs a Tokio runtime (the
    /// exporter's gRPC channel runs on it).
    pub fn from_config(config: &TracesConfig) -> Result<Option<Arc<Traces>>, Error> {
        let Some(endpoint) = &config.endpoint else {
            return Ok(None);
        };
        let invalid = |field: String, reason: String| Error::ConfigInvalid { field, reason };
        let mut metadata = MetadataMap::new();
        for (name, value) in &config.headers {
            let key = tonic::metadata::MetadataKey::from_bytes(name.as_bytes())
                .map_err(|e| invalid(format!("traces.headers.{name}"), e.to_string()))?;
            let value = value
                .parse()
                .map_err(|_| invalid(format!("traces.headers.{name}"), "not ASCII".into()))?;
            metadata.insert(key, value);
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .with_metadata(metadata)
            .build()
            .map_err(|e| Error::Traces(e.to_string()))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(sampler(config.sampling_ratio))
            .with_resource(
                Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build();
        tracing::info!(endpoint = %endpoint, sampling_ratio = config.sampling_ratio, "exporting traces over OTLP");
        let traces = Self::with_provider(provider);
        Ok(Some(Arc::new(if config.follow_client_sampled {
            traces
        } else {
            traces.deciding_for_clients(config.sampling_ratio)
        })))
    }

    /// Around a provider built elsewhere (tests and benchmarks with their own exporter).
    pub fn with_provider(provider: SdkTracerProvider) -> Self {
        Self {
            tracer: provider.tracer("tenant-authz"),
            provider,
            propagator: TraceContextPropagator::new(),
            client_ratio: None,
        }
    }

    /// A client's own `traceparent` (no Envoy parent) is joined but sampled at `ratio` by its
    /// trace id, whatever its sampled flag says.
    pub fn deciding_for_clients(mut self, ratio: f64) -> Self {
        self.client_ratio = Some(ratio);
        self
    }

    /// Starts the span of one Check if the sampler says so: `None` (no span, no context) for
    /// an unsampled one.
    pub fn start_check(&self, metadata: &MetadataMap, request: &CheckRequest) -> Option<CheckSpan> {
        let (parent, from) = self.parent(metadata, request);
        let mut span = self
            .tracer
            .span_builder(CHECK_SPAN)
            .with_kind(SpanKind::Server)
            .start_with_context(&self.tracer, &parent);
        if !span.is_recording() {
            return None;
        }
        span.set_attributes([
            KeyValue::new("rpc.system", "grpc"),
            KeyValue::new("rpc.service", "envoy.service.auth.v3.Authorization"),
            KeyValue::new("rpc.method", "Check"),
            KeyValue::new("tenant_authz.parent", from),
        ]);
        let cx = parent
            .with_span(span)
            .with_value(StepTracer(self.tracer.clone()));
        Some(CheckSpan { cx })
    }

    /// The parent context (Envoy's, else the client's, else none) and where it came from.
    fn parent(&self, metadata: &MetadataMap, request: &CheckRequest) -> (Context, &'static str) {
        let envoy = self
            .propagator
            .extract_with_context(&Context::new(), &MetadataExtractor(metadata));
        if envoy.span().span_context().is_valid() {
            return (envoy, "envoy");
        }
        let headers = request
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
            .map(|h| &h.headers);
        if let Some(headers) = headers.filter(|h| h.contains_key("traceparent")) {
            let client = self
                .propagator
                .extract_with_context(&Context::new(), &HeaderExtractor(headers));
            if client.span().span_context().is_valid() {
                return (self.decide_for_client(client), "client");
            }
        }
        (Context::new(), "none")
    }

    /// The client's context, with its sampled flag replaced by our own decision when clients
    /// are not followed: the same trace id gives the same answer (ratio by trace id).
    fn decide_for_client(&self, client: Context) -> Context {
        let Some(ratio) = self.client_ratio else {
            return client;
        };
        let sc = client.span().span_context().clone();
        let decision = Sampler::TraceIdRatioBased(ratio).should_sample(
            None,
            sc.trace_id(),
            CHECK_SPAN,
            &SpanKind::Server,
            &[],
            &[],
        );
        let flags = match decision.decision {
            SamplingDecision::RecordAndSample => TraceFlags::SAMPLED,
            _ => TraceFlags::default(),
        };
        Context::new().with_remote_span_context(SpanContext::new(
            sc.trace_id(),
            sc.span_id(),
            flags,
            true,
            sc.trace_state().clone(),
        ))
    }

    /// Exports what is queued and stops the exporter (at shutdown, after the drain).
    pub async fn shutdown(&self) {
        let provider = self.provider.clone();
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "trace exporter did not shut down cleanly"),
            Err(e) => tracing::warn!(error = %e, "trace exporter shutdown panicked"),
        }
    }
}

/// Parent-based: a Check with a `traceparent` follows its sampled flag; a root is sampled with
/// probability `ratio` (by trace id, so every process agrees about one trace).
pub fn sampler(ratio: f64) -> Sampler {
    Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
}

/// A sampled Check's span, with the context its steps find it in.
pub struct CheckSpan {
    cx: Context,
}

impl CheckSpan {
    /// Runs the Check with this span as the current context, then ends the span.
    pub async fn run<T>(self, check: impl Future<Output = T>) -> T {
        let out = check.with_context(self.cx.clone()).await;
        self.cx.span().end();
        out
    }
}

/// The tracer, found by the steps in the context of a sampled Check.
struct StepTracer(SdkTracer);

/// Records what the Check asks, on the current Check span if it is sampled.
pub fn record_request(product: Product, tenants: &Tenants) {
    Context::map_current(|cx| {
        let span = cx.span();
        if span.is_recording() {
            span.set_attribute(KeyValue::new("tenant_authz.product", product.as_str()));
            span.set_attribute(KeyValue::new(
                "tenant_authz.tenant_count",
                i64::try_from(tenants.len()).unwrap_or(i64::MAX),
            ));
            span.set_attribute(KeyValue::new(
                "tenant_authz.tenants",
                tenants.canonical().to_string(),
            ));
        }
    })
}

/// Records the decision on the current Check span if it is sampled.
pub fn record_decision(decision: &Decision, action: Option<Action>) {
    Context::map_current(|cx| {
        let span = cx.span();
        if !span.is_recording() {
            return;
        }
        span.set_attribute(KeyValue::new(
            "tenant_authz.action",
            action.map_or("unknown", Action::as_str),
        ));
        match decision {
            Decision::Allow { user, cached, .. } => {
                span.set_attribute(KeyValue::new("tenant_authz.decision", "allow"));
                span.set_attribute(KeyValue::new("http.response.status_code", 200_i64));
                span.set_attribute(KeyValue::new("tenant_authz.user", user.to_string()));
                span.set_attribute(KeyValue::new("tenant_authz.cached", *cached));
            }
            Decision::Deny { reason, cached } => {
                let status = reason.http_status();
                span.set_attribute(KeyValue::new("tenant_authz.decision", "deny"));
                span.set_attribute(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status),
                ));
                span.set_attribute(KeyValue::new("tenant_authz.reason", reason.kind()));
                span.set_attribute(KeyValue::new("tenant_authz.cached", *cached));
                if status >= 500 {
                    span.set_status(Status::error(reason.kind()));
                }
            }
        }
    })
}

/// The span of one step (authentication, or one tenant's authorization) of a sampled Check;
/// empty, and free, otherwise.
pub struct StepSpan {
    span: Option<opentelemetry_sdk::trace::Span>,
}

impl StepSpan {
    /// A token's authentication.
    pub fn authenticate() -> Self {
        Self::start(AUTHENTICATE_SPAN, None)
    }

    /// One tenant's authorization.
    pub fn authorize(tenant: &Tenant) -> Self {
        Self::start(AUTHORIZE_SPAN, Some(tenant))
    }

    fn start(name: &'static str, tenant: Option<&Tenant>) -> Self {
        let span = Context::map_current(|cx| {
            let tracer = cx.get::<StepTracer>()?;
            let mut span = tracer.0.start_with_context(name, cx);
            if let Some(tenant) = tenant {
                span.set_attribute(KeyValue::new(
                    "tenant_authz.tenant",
                    tenant.as_str().to_string(),
                ));
            }
            Some(span)
        });
        Self { span }
    }

    /// Ends the step with where its answer came from and what it was (`allowed`, `denied`,
    /// `authenticated`, `unauthenticated`), or the review's failure.
    pub fn finish(mut self, source: Source, outcome: Result<&'static str, &'static str>) {
        let Some(mut span) = self.span.take() else {
            return;
        };
        let cache = match source {
            Source::Hit => "hit",
            Source::Loaded => "miss",
            Source::Coalesced => "coalesced",
        };
        span.set_attributes([
            KeyValue::new("tenant_authz.cache", cache),
            KeyValue::new("tenant_authz.cached", source == Source::Hit),
            KeyValue::new("tenant_authz.coalesced", source == Source::Coalesced),
        ]);
        match outcome {
            Ok(outcome) => span.set_attribute(KeyValue::new("tenant_authz.outcome", outcome)),
            Err(failure) => {
                span.set_attribute(KeyValue::new("tenant_authz.outcome", "failed"));
                span.set_status(Status::error(failure));
            }
        }
        span.end();
    }
}

impl Drop for StepSpan {
    /// A step dropped before it finished: the decision deadline passed (or the Check was
    /// cancelled) while it waited.
    fn drop(&mut self) {
        if let Some(span) = &mut self.span {
            span.set_attribute(KeyValue::new("tenant_authz.outcome", "abandoned"));
            span.set_status(Status::error(
                "the decision deadline passed before an answer",
            ));
            span.end();
        }
    }
}

/// W3C context from the gRPC metadata of the Check call (what Envoy injects).
struct MetadataExtractor<'a>(&'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// W3C context from the client's request headers in the CheckRequest (lowercase keys).
struct HeaderExtractor<'a>(&'a HashMap<String, String>);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
#[path = "traces_tests.rs"]
mod tests;
