//! The spans of Checks, called directly on the gRPC adapter (no socket) over an in-memory
//! reviewer, exported to an in-memory exporter: names, attributes, parents, sampling.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::Authorization as _;
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry::Value;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use prometheus_client::registry::Registry;
use tonic::Request;

use super::*;
use crate::authorizer::{Authorizer, AuthorizerSettings};
use crate::config::{ActionConfig, CacheConfig};
use crate::ext_authz::request::tests::check_request;
use crate::ext_authz::{CheckService, RequestParser};
use crate::metrics::Metrics;
use crate::review::memory::MemoryReviewer;

const TOKEN: &str = "tok-secret-value-1234567890";
const ENVOY_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const ENVOY_SPAN: &str = "00f067aa0ba902b7";
const CLIENT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";

#[derive(Clone, Debug, Default)]
struct Collected(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Collected {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

impl Collected {
    fn take(&self) -> Vec<SpanData> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

struct Fixture {
    service: CheckService<MemoryReviewer>,
    authorizer: Arc<Authorizer<MemoryReviewer>>,
    spans: Collected,
}

fn traced(ratio: f64) -> Fixture {
    traced_with(ratio, |t| t)
}

fn traced_with(ratio: f64, configure: impl FnOnce(Traces) -> Traces) -> Fixture {
    let reviewer = MemoryReviewer::new();
    reviewer.add_token(TOKEN, "system:serviceaccount:obs:grafana");
    reviewer.grant("system:serviceaccount:obs:grafana", "a", Action::Read);
    reviewer.grant("system:serviceaccount:obs:grafana", "b", Action::Read);
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    let authorizer = Arc::new(Authorizer::new(
        reviewer,
        AuthorizerSettings {
            cache: CacheConfig::default(),
            decision_timeout: Duration::from_secs(1),
            max_concurrent_reviews: 8,
            max_reviews_per_check: 4,
        },
        metrics.clone(),
    ));
    let spans = Collected::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .with_sampler(sampler(ratio))
        .build();
    let parser = RequestParser::new("x-scope-orgid".into(), 16 * 1024, ActionConfig::default());
    let service = CheckService::new(authorizer.clone(), parser, metrics, "x-scope-orgid")
        .with_traces(Some(Arc::new(configure(Traces::with_provider(provider)))));
    Fixture {
        service,
        authorizer,
        spans,
    }
}

fn traceparent(trace: &str, span: &str, sampled: bool) -> String {
    format!("00-{trace}-{span}-{}", if sampled { "01" } else { "00" })
}

/// A Check for `tenants` with the client's headers `extra` and the gRPC metadata `envoy`.
async fn check(
    f: &Fixture,
    tenants: &str,
    extra: &[(&str, &str)],
    envoy: Option<&str>,
) -> CheckResponse {
    let bearer = format!("Bearer {TOKEN}");
    let mut headers = vec![
        ("authorization", bearer.as_str()),
        ("x-scope-orgid", tenants),
    ];
    headers.extend_from_slice(extra);
    let mut request = Request::new(check_request("GET", "/api/search", &headers, None));
    if let Some(tp) = envoy {
        request
            .metadata_mut()
            .insert("traceparent", tp.parse().unwrap());
    }
    f.service.check(request).await.unwrap().into_inner()
}

use envoy_types::ext_authz::v3::pb::CheckResponse;

fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn str_attr(span: &SpanData, key: &str) -> String {
    attr(span, key)
        .map(|v| v.as_str().into_owned())
        .unwrap_or_default()
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

#[tokio::test]
async fn check_joins_envoys_span_with_a_child_per_step() {
    let f = traced(0.0);
    check(
        &f,
        "a|b",
        &[],
        Some(&traceparent(ENVOY_TRACE, ENVOY_SPAN, true)),
    )
    .await;
    let spans = f.spans.take();
    let check_span = named(&spans, CHECK_SPAN)[0];
    assert_eq!(
        check_span.span_context.trace_id(),
        TraceId::from_hex(ENVOY_TRACE).unwrap()
    );
    assert_eq!(
        check_span.parent_span_id,
        SpanId::from_hex(ENVOY_SPAN).unwrap()
    );
    assert_eq!(str_attr(check_span, "tenant_authz.parent"), "envoy");
    assert_eq!(str_attr(check_span, "tenant_authz.decision"), "allow");
    assert_eq!(str_attr(check_span, "tenant_authz.action"), "read");
    assert_eq!(str_attr(check_span, "tenant_authz.product"), "tempo");
    assert_eq!(str_attr(check_span, "tenant_authz.tenants"), "a|b");
    assert_eq!(
        attr(check_span, "tenant_authz.tenant_count"),
        Some(&Value::I64(2))
    );
    assert_eq!(
        attr(check_span, "http.response.status_code"),
        Some(&Value::I64(200))
    );
    assert_eq!(
        attr(check_span, "tenant_authz.cached"),
        Some(&Value::Bool(false))
    );
    let id = check_span.span_context.span_id();
    let authn = named(&spans, AUTHENTICATE_SPAN);
    assert_eq!(authn.len(), 1);
    assert_eq!(authn[0].parent_span_id, id);
    assert_eq!(str_attr(authn[0], "tenant_authz.cache"), "miss");
    assert_eq!(str_attr(authn[0], "tenant_authz.outcome"), "authenticated");
    let mut authz: Vec<_> = named(&spans, AUTHORIZE_SPAN)
        .into_iter()
        .map(|s| {
            assert_eq!(s.parent_span_id, id);
            assert_eq!(str_attr(s, "tenant_authz.cache"), "miss");
            assert_eq!(str_attr(s, "tenant_authz.outcome"), "allowed");
            str_attr(s, "tenant_authz.tenant")
        })
        .collect();
    authz.sort();
    assert_eq!(authz, ["a", "b"]);
}

#[tokio::test]
async fn a_cached_check_has_no_children_and_says_cached() {
    let f = traced(1.0);
    check(&f, "a", &[], None).await;
    f.spans.take();
    check(&f, "a", &[], None).await;
    let spans = f.spans.take();
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(spans[0].name, CHECK_SPAN);
    assert_eq!(
        attr(&spans[0], "tenant_authz.cached"),
        Some(&Value::Bool(true))
    );
    assert_eq!(str_attr(&spans[0], "tenant_authz.parent"), "none");
    // A new tenant for a known token: the identity is a cache hit, the tenant a review.
    check(&f, "a|b", &[], None).await;
    let spans = f.spans.take();
    assert_eq!(
        str_attr(named(&spans, AUTHENTICATE_SPAN)[0], "tenant_authz.cache"),
        "hit"
    );
    let authz = named(&spans, AUTHORIZE_SPAN);
    let cache_of = |t: &str| {
        let s = authz
            .iter()
            .find(|s| str_attr(s, "tenant_authz.tenant") == t)
            .unwrap();
        str_attr(s, "tenant_authz.cache")
    };
    assert_eq!(cache_of("a"), "hit");
    assert_eq!(cache_of("b"), "miss");
}

#[tokio::test]
async fn envoys_traceparent_wins_over_the_clients() {
    let f = traced(0.0);
    let client = traceparent(CLIENT_TRACE, CLIENT_SPAN, true);
    check(
        &f,
        "a",
        &[("traceparent", &client)],
        Some(&traceparent(ENVOY_TRACE, ENVOY_SPAN, true)),
    )
    .await;
    let spans = f.spans.take();
    let s = named(&spans, CHECK_SPAN)[0];
    assert_eq!(s.parent_span_id, SpanId::from_hex(ENVOY_SPAN).unwrap());

    check(&f, "a", &[("traceparent", &client)], None).await;
    let spans = f.spans.take();
    let s = named(&spans, CHECK_SPAN)[0];
    assert_eq!(s.parent_span_id, SpanId::from_hex(CLIENT_SPAN).unwrap());
    assert_eq!(
        s.span_context.trace_id(),
        TraceId::from_hex(CLIENT_TRACE).unwrap()
    );
    assert_eq!(str_attr(s, "tenant_authz.parent"), "client");
}

/// `traces.follow_client_sampled: false` (the default from a config): the client's trace is
/// joined, but its sampled flag decides nothing; Envoy's still does.
#[tokio::test]
async fn a_clients_sampled_flag_decides_nothing_unless_followed() {
    let f = traced_with(0.0, |t| t.deciding_for_clients(0.0));
    let client = traceparent(CLIENT_TRACE, CLIENT_SPAN, true);
    check(&f, "a", &[("traceparent", &client)], None).await;
    assert!(
        f.spans.take().is_empty(),
        "ratio 0: the client's flag is ignored"
    );
    check(
        &f,
        "a",
        &[("traceparent", &client)],
        Some(&traceparent(ENVOY_TRACE, ENVOY_SPAN, true)),
    )
    .await;
    assert_eq!(
        named(&f.spans.take(), CHECK_SPAN).len(),
        1,
        "Envoy's flag rules"
    );

    let f = traced_with(0.0, |t| t.deciding_for_clients(1.0));
    let unsampled = traceparent(CLIENT_TRACE, CLIENT_SPAN, false);
    check(&f, "a", &[("traceparent", &unsampled)], None).await;
    let spans = f.spans.take();
    let s = named(&spans, CHECK_SPAN)[0];
    assert_eq!(s.parent_span_id, SpanId::from_hex(CLIENT_SPAN).unwrap());
    assert_eq!(
        s.span_context.trace_id(),
        TraceId::from_hex(CLIENT_TRACE).unwrap(),
        "the client's trace is joined"
    );
}

#[tokio::test]
async fn sampling_follows_the_parent_and_the_ratio_for_roots() {
    let f = traced(0.0);
    check(&f, "a", &[], None).await;
    assert!(f.spans.take().is_empty(), "ratio 0: no root is sampled");
    check(
        &f,
        "a",
        &[],
        Some(&traceparent(ENVOY_TRACE, ENVOY_SPAN, true)),
    )
    .await;
    assert_eq!(
        named(&f.spans.take(), CHECK_SPAN).len(),
        1,
        "a sampled parent is followed"
    );

    let f = traced(1.0);
    check(
        &f,
        "a",
        &[],
        Some(&traceparent(ENVOY_TRACE, ENVOY_SPAN, false)),
    )
    .await;
    assert!(
        f.spans.take().is_empty(),
        "an unsampled parent is followed too"
    );
    // A malformed traceparent is no parent: a root, sampled at ratio 1.
    check(&f, "a", &[], Some("00-zz-yy-01")).await;
    assert_eq!(str_attr(&f.spans.take()[0], "tenant_authz.parent"), "none");
}

#[tokio::test]
async fn denials_and_outages_are_in_the_span() {
    let f = traced(1.0);
    check(&f, "c", &[], None).await;
    let spans = f.spans.take();
    let s = named(&spans, CHECK_SPAN)[0];
    assert_eq!(str_attr(s, "tenant_authz.decision"), "deny");
    assert_eq!(str_attr(s, "tenant_authz.reason"), "forbidden");
    assert_eq!(attr(s, "http.response.status_code"), Some(&Value::I64(403)));
    assert_eq!(
        str_attr(named(&spans, AUTHORIZE_SPAN)[0], "tenant_authz.outcome"),
        "denied"
    );

    f.service_reviewer().set_down(true);
    check(&f, "b|d", &[], None).await;
    let spans = f.spans.take();
    let s = named(&spans, CHECK_SPAN)[0];
    assert_eq!(attr(s, "http.response.status_code"), Some(&Value::I64(503)));
    assert!(matches!(s.status, Status::Error { .. }));
    let failed = named(&spans, AUTHORIZE_SPAN);
    assert!(!failed.is_empty());
    for step in failed {
        assert_eq!(str_attr(step, "tenant_authz.outcome"), "failed");
        assert!(matches!(step.status, Status::Error { .. }));
    }
}

#[tokio::test]
async fn identical_concurrent_misses_show_one_review_and_the_coalesced_waiters() {
    let f = traced(1.0);
    f.service_reviewer().set_latency(Duration::from_millis(50));
    let (a, b) = tokio::join!(check(&f, "a", &[], None), check(&f, "a", &[], None));
    drop((a, b));
    let spans = f.spans.take();
    let mut caches: Vec<_> = named(&spans, AUTHENTICATE_SPAN)
        .iter()
        .map(|s| str_attr(s, "tenant_authz.cache"))
        .collect();
    caches.sort();
    assert_eq!(caches, ["coalesced", "miss"]);
    let coalesced = named(&spans, AUTHENTICATE_SPAN)
        .into_iter()
        .find(|s| str_attr(s, "tenant_authz.cache") == "coalesced")
        .unwrap();
    assert_eq!(
        attr(coalesced, "tenant_authz.coalesced"),
        Some(&Value::Bool(true))
    );
}

#[tokio::test]
async fn no_attribute_carries_the_token() {
    let f = traced(1.0);
    check(&f, "a|c", &[], None).await;
    check(&f, "a", &[], None).await;
    let spans = f.spans.take();
    assert!(spans.len() >= 4);
    for span in &spans {
        for kv in &span.attributes {
            let v = kv.value.as_str();
            assert!(!v.contains("tok-secret"), "{} = {v}", kv.key);
        }
    }
}

impl Fixture {
    fn service_reviewer(&self) -> &MemoryReviewer {
        self.authorizer.reviewer()
    }
}
