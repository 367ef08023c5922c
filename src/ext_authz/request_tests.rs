//! Parsing edge cases, one test per row of the contract.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};

use super::*;
use crate::config::ActionConfig;

fn parser() -> RequestParser {
    RequestParser::new("x-scope-orgid".into(), 16 * 1024, ActionConfig::default())
}

pub(crate) fn check_request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    action: Option<&str>,
) -> CheckRequest {
    let headers: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut context_extensions = HashMap::new();
    if let Some(a) = action {
        context_extensions.insert("action".to_string(), a.to_string());
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: method.into(),
                    path: path.into(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions,
            ..Default::default()
        }),
    }
}

fn parse(headers: &[(&str, &str)]) -> Result<ParsedCheck, DenyReason> {
    parser()
        .parse(&check_request("GET", "/api/search", headers, Some("read")))
        .1
}

fn deny(headers: &[(&str, &str)]) -> DenyReason {
    match parse(headers) {
        Ok(_) => panic!("accepted {headers:?}"),
        Err(r) => r,
    }
}

const T: (&str, &str) = ("x-scope-orgid", "team-a");

#[test]
fn missing_authorization_is_401() {
    assert_eq!(deny(&[T]), DenyReason::MissingCredentials);
    assert_eq!(deny(&[T]).http_status(), 401);
}

#[test]
fn empty_or_blank_bearer_is_401() {
    for v in ["", "   ", "Bearer", "Bearer ", "Bearer    "] {
        let r = deny(&[("authorization", v), T]);
        assert_eq!(r.http_status(), 401, "{v:?}: {r:?}");
    }
}

#[test]
fn other_schemes_and_bare_tokens_are_401() {
    for v in [
        "Basic dXNlcjpwYXNz",
        "Token abc",
        "abc.def.ghi",
        "Bearerabc",
    ] {
        let r = deny(&[("authorization", v), T]);
        assert_eq!(
            r,
            DenyReason::MalformedCredentials("the Authorization scheme must be Bearer"),
            "{v:?}"
        );
    }
}

#[test]
fn bearer_scheme_is_case_insensitive() {
    for v in ["bearer abc", "BEARER abc", "Bearer abc", "bEaReR\tabc"] {
        let p = parse(&[("authorization", v), T]).unwrap_or_else(|r| panic!("{v}: {r:?}"));
        assert_eq!(p.token.expose_secret(), "abc");
    }
}

#[test]
fn token_over_the_limit_is_401_without_review() {
    let long = format!("Bearer {}", "a".repeat(16 * 1024 + 1));
    assert_eq!(
        deny(&[("authorization", &long), T]),
        DenyReason::TokenTooLong { limit: 16 * 1024 }
    );
    let huge = format!("Bearer {}", "a".repeat(10 * 1024 * 1024));
    assert_eq!(deny(&[("authorization", &huge), T]).http_status(), 401);
    let at_limit = format!("Bearer {}", "a".repeat(16 * 1024));
    assert!(parse(&[("authorization", &at_limit), T]).is_ok());
}

#[test]
fn token_with_spaces_or_controls_is_401() {
    for v in [
        "Bearer a b",
        "Bearer a\u{1}b",
        "Bearer a,Bearer b",
        "Bearer é",
    ] {
        assert_eq!(deny(&[("authorization", v), T]).http_status(), 401, "{v:?}");
    }
}

const A: (&str, &str) = ("authorization", "Bearer abc");

#[test]
fn missing_or_empty_tenant_is_400() {
    assert_eq!(deny(&[A]).http_status(), 400);
    assert_eq!(deny(&[A, ("x-scope-orgid", "")]).http_status(), 400);
    assert_eq!(deny(&[A, ("x-scope-orgid", "  ")]).http_status(), 400);
}

#[test]
fn tenant_not_a_namespace_name_is_400_with_reason() {
    let sixty_four = "a".repeat(64);
    for bad in [
        "Team-A",
        "team_a",
        "team.a",
        "team/a",
        "../x",
        "team%2fa",
        "-team",
        "team-",
        &sixty_four,
    ] {
        match deny(&[A, ("x-scope-orgid", bad)]) {
            DenyReason::BadTenant(why) => assert!(why.contains("namespace name"), "{bad}: {why}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
}

#[test]
fn cross_tenant_value_parses_in_order() {
    let p = parse(&[A, ("x-scope-orgid", "a|b|c")]).unwrap();
    assert_eq!(p.tenants.canonical(), "a|b|c");
    assert_eq!(p.tenants.len(), 3);
}

#[test]
fn malformed_cross_tenant_values_are_400() {
    for bad in ["a|", "|a", "a||b", "|", "a|a", "a|b|a", "a,b", "a, b"] {
        assert_eq!(
            deny(&[A, ("x-scope-orgid", bad)]).http_status(),
            400,
            "{bad:?}"
        );
    }
}

#[test]
fn duplicated_raw_headers_are_rejected() {
    let mut req = check_request("GET", "/api/search", &[], Some("read"));
    let http = req
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
        .unwrap();
    let h = |k: &str, v: &str| HeaderValue {
        key: k.into(),
        value: String::new(),
        raw_value: v.as_bytes().to_vec(),
    };
    http.header_map = Some(HeaderMap {
        headers: vec![
            h("authorization", "Bearer abc"),
            h("x-scope-orgid", "a"),
            h("x-scope-orgid", "b"),
        ],
    });
    let r = parser().parse(&req).1.err().unwrap();
    assert_eq!(r.http_status(), 400, "{r:?}");
}

#[test]
fn identity_headers_from_the_client_are_ignored() {
    let p = parse(&[
        A,
        T,
        ("x-remote-user", "admin"),
        ("x-forwarded-user", "admin"),
        ("impersonate-user", "system:admin"),
        ("impersonate-group", "system:masters"),
    ])
    .unwrap();
    assert_eq!(p.token.expose_secret(), "abc");
}

#[test]
fn context_extension_action_wins() {
    let req = check_request("POST", "/v1/traces", &[A, T], Some("read"));
    assert_eq!(parser().parse(&req).0, Some(Action::Read));
    let req = check_request("GET", "/api/search", &[A, T], Some("write"));
    assert_eq!(parser().parse(&req).0, Some(Action::Write));
}

#[test]
fn unknown_context_extension_action_is_misconfigured() {
    let req = check_request("GET", "/api/search", &[A, T], Some("admin"));
    let (action, r) = parser().parse(&req);
    assert_eq!(action, None);
    assert_eq!(r.err().unwrap().http_status(), 500);
}

#[test]
fn action_is_inferred_without_query_string() {
    let p = parser();
    let infer = |m: &str, path: &str| p.parse(&check_request(m, path, &[A, T], None)).0.unwrap();
    assert_eq!(infer("POST", "/v1/traces?x=1"), Action::Write);
    assert_eq!(
        infer(
            "POST",
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
        ),
        Action::Write
    );
    assert_eq!(infer("POST", "/api/traces"), Action::Write);
    assert_eq!(infer("POST", "/api/v2/spans"), Action::Write);
    assert_eq!(infer("PUT", "/api/overrides?scope=api"), Action::Manage);
    assert_eq!(infer("DELETE", "/api/overrides"), Action::Manage);
    assert_eq!(infer("GET", "/api/overrides"), Action::Read);
    assert_eq!(infer("GET", "/api/search?q=%7B%7D"), Action::Read);
    assert_eq!(infer("POST", "/api/search"), Action::Read);
    assert_eq!(infer("GET", "/api/traces/abc"), Action::Read);
    assert_eq!(infer("POST", "/api/v2/traces/diff"), Action::Read);
    assert_eq!(
        infer("POST", "/tempopb.StreamingQuerier/Search"),
        Action::Read
    );
    // The query string cannot make a read into something else, nor a write into a read.
    assert_eq!(infer("GET", "/api/search?/v1/traces"), Action::Read);
    assert_eq!(infer("POST", "/v1/traces?/api/search"), Action::Write);
}

#[test]
fn path_spellings_cannot_disguise_a_write() {
    let p = parser();
    let infer = |path: &str| {
        p.parse(&check_request("POST", path, &[A, T], None))
            .0
            .unwrap()
    };
    for path in [
        "/v1/traces/",
        "//v1//traces",
        "/v1/./traces",
        "/api/../v1/traces",
        "/v1%2ftraces",
        "/v1/%74races",
    ] {
        assert_eq!(infer(path), Action::Write, "{path}");
    }
    for path in ["/api/overrides/", "/api//overrides", "/api/%6fverrides"] {
        assert_eq!(
            p.parse(&check_request("PATCH", path, &[A, T], None)).0,
            Some(Action::Manage),
            "{path}"
        );
    }
}

#[test]
fn no_http_attributes_is_not_a_panic() {
    let (_, r) = parser().parse(&CheckRequest { attributes: None });
    assert_eq!(r.err().unwrap().http_status(), 500);
}
