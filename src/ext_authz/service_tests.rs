//! The gRPC adapter called directly (no socket) over an in-memory reviewer.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::HttpResponse;
use prometheus_client::registry::Registry;

use super::request::tests::check_request;
use super::*;
use crate::authorizer::AuthorizerSettings;
use crate::config::{ActionConfig, CacheConfig};
use crate::model::Action;
use crate::review::memory::MemoryReviewer;

fn service() -> CheckService<MemoryReviewer> {
    let reviewer = MemoryReviewer::new();
    reviewer.add_token("tok", "alice");
    reviewer.grant("alice", "a", Action::Read);
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    let authorizer = Arc::new(Authorizer::new(
        reviewer,
        AuthorizerSettings {
            cache: CacheConfig::default(),
            decision_timeout: Duration::from_secs(1),
            max_concurrent_reviews: 4,
            max_reviews_per_check: 4,
        },
        metrics.clone(),
    ));
    let parser = RequestParser::new("x-scope-orgid".into(), 16 * 1024, ActionConfig::default());
    CheckService::new(authorizer, parser, metrics, "x-scope-orgid")
}

async fn call(headers: &[(&str, &str)], action: Option<&str>) -> CheckResponse {
    service()
        .check(Request::new(check_request(
            "GET",
            "/api/search",
            headers,
            action,
        )))
        .await
        .expect("never a gRPC error")
        .into_inner()
}

fn http(r: &CheckResponse) -> i32 {
    match &r.http_response {
        Some(HttpResponse::OkResponse(_)) => 200,
        Some(HttpResponse::DeniedResponse(d)) => d.status.as_ref().unwrap().code,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn allowed_check_is_ok_with_tenant_header() {
    let r = call(
        &[("authorization", "Bearer tok"), ("x-scope-orgid", "a")],
        Some("read"),
    )
    .await;
    assert_eq!(r.status.as_ref().unwrap().code, 0);
    assert_eq!(http(&r), 200);
}

#[tokio::test]
async fn every_denial_is_a_denied_response_not_a_grpc_error() {
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>, i32);
    let cases: [Case; 5] = [
        (&[("x-scope-orgid", "a")], Some("read"), 401),
        (&[("authorization", "Bearer tok")], Some("read"), 400),
        (
            &[("authorization", "Bearer nope"), ("x-scope-orgid", "a")],
            Some("read"),
            401,
        ),
        (
            &[("authorization", "Bearer tok"), ("x-scope-orgid", "b")],
            Some("read"),
            403,
        ),
        (
            &[("authorization", "Bearer tok"), ("x-scope-orgid", "a")],
            Some("delete"),
            500,
        ),
    ];
    for (headers, action, status) in cases {
        let r = call(headers, action).await;
        assert_ne!(r.status.as_ref().unwrap().code, 0, "{headers:?}");
        assert_eq!(http(&r), status, "{headers:?}");
    }
}

#[tokio::test]
async fn outage_is_a_503_response() {
    let s = service();
    s.authorizer.reviewer().set_down(true);
    let r = s
        .check(Request::new(check_request(
            "GET",
            "/",
            &[("authorization", "Bearer tok"), ("x-scope-orgid", "a")],
            Some("read"),
        )))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(http(&r), 503);
    assert_eq!(r.status.unwrap().code, 14);
}
