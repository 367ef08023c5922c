//! End-to-end behind a real Envoy 1.40 ([`support::stack`]): the HTTP contract. Allowed
//! requests reach Tempo with one canonical tenant header and without the token; denials have
//! the documented status, challenge and body; the action comes from the listener or is
//! inferred.
mod support;

use support::fake_kube::Subject;
use support::stack::{
    assert_log_fields, bearer, raw_grpc_denied, raw_grpc_export, Stack, EXPORT_PATH,
    PAYMENTS_QUERY, SHOWCASE_INGEST, SHOWCASE_QUERY,
};

/// Allowed query over HTTP/1.1 and h2c: the upstream sees exactly one canonical tenant header
/// and no Authorization header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_allowed_reaches_tempo_with_tenant_and_without_token() {
    let s = Stack::new(1).await;
    let auth = bearer(&s.showcase_query);

    let r = s
        .get_as(s.query, "/api/search?tags=x", &auth, "showcase", false)
        .await;
    assert_eq!(r.status, 200, "h1: {r:?}\n{}", s.diag());
    assert_eq!(r.version, reqwest::Version::HTTP_11);
    assert_eq!(r.body, "ok");

    let r = s
        .get_as(s.query, "/api/search?tags=y", &auth, "showcase", true)
        .await;
    assert_eq!(r.status, 200, "h2c: {r:?}\n{}", s.diag());
    assert_eq!(r.version, reqwest::Version::HTTP_2);

    let reqs = s.requests();
    assert_eq!(reqs.len(), 2, "{reqs:#?}");
    for (req, (version, pq)) in reqs.iter().zip([
        ("HTTP/1.1", "/api/search?tags=x"),
        ("HTTP/2.0", "/api/search?tags=y"),
    ]) {
        assert_eq!(req.version, version, "{req:#?}");
        assert_eq!(req.method, "GET");
        assert_eq!(req.path_and_query, pq);
        assert_eq!(
            req.header_all("x-scope-orgid"),
            vec!["showcase"],
            "{req:#?}"
        );
        assert!(
            req.header_all("authorization").is_empty(),
            "the token must not reach Tempo ({version})"
        );
    }

    // Envoy's access log carries the decision from the dynamic metadata.
    let e = s.access_entry("/api/search?tags=x").await;
    assert_eq!(e["response_code"], 200, "{e}");
    assert_log_fields(
        &e,
        &[
            ("authz_decision", "allow"),
            ("authz_user", SHOWCASE_QUERY),
            ("authz_tenants", "showcase"),
            ("authz_action", "read"),
            ("authz_reason", "ok"),
        ],
        "h1",
    );
    let e = s.access_entry("/api/search?tags=y").await;
    assert_log_fields(
        &e,
        &[("protocol", "HTTP/2"), ("authz_decision", "allow")],
        "h2c",
    );
}

/// The tenant header upstream is set by tenant-authz with OVERWRITE_IF_EXISTS_OR_ADD: the client
/// already sent it, so an append would reach Tempo as two values. Exactly one value, the
/// canonical one, also for a cross-tenant query, over HTTP/1.1 and h2c.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tenant_header_is_overwritten_not_appended() {
    let s = Stack::new(2).await;
    s.fake
        .grant(Subject::User(SHOWCASE_QUERY.into()), "payments", "get");
    let auth = bearer(&s.showcase_query);

    for h2 in [false, true] {
        for (path, tenant, what) in [
            ("/api/search?one", "showcase", ""),
            ("/api/search?cross", "showcase|payments", " cross-tenant"),
        ] {
            // The client's own spelling of the header name.
            let headers = [("authorization", auth.as_str()), ("X-Scope-OrgID", tenant)];
            let r = s.get(s.query, path, &headers, h2).await;
            assert_eq!(r.status, 200, "h2={h2}{what} {r:?}\n{}", s.diag());
        }
    }

    let reqs = s.requests();
    assert_eq!(reqs.len(), 4, "{reqs:#?}");
    for req in &reqs {
        let expected = if req.path_and_query.ends_with("cross") {
            "showcase|payments"
        } else {
            "showcase"
        };
        assert_eq!(
            req.header_all("x-scope-orgid"),
            vec![expected],
            "exactly one canonical tenant header upstream: {req:#?}"
        );
        assert!(req.header_all("authorization").is_empty(), "{req:#?}");
    }
    let e = s.access_entry("/api/search?cross").await;
    assert_eq!(e["authz_tenants"], "showcase|payments", "{e}");
}

/// The denial contract as the client sees it through Envoy: status, challenge, body; the
/// upstream sees none of it; the access log records the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_statuses_through_envoy() {
    let mut s = Stack::new(3).await;
    let unknown = s.minter.token("showcase", "query"); // never registered
    let q = bearer(&s.showcase_query);
    let unk = bearer(&unknown);
    let pq = bearer(&s.payments_query);

    struct Case<'a> {
        tag: &'a str,
        headers: Vec<(&'a str, &'a str)>,
        status: u16,
        reason: &'a str,
        body_has: &'a [&'a str],
        challenge: bool,
    }
    let cases = [
        Case {
            tag: "no-token",
            headers: vec![("x-scope-orgid", "showcase")],
            status: 401,
            reason: "missing_credentials",
            body_has: &["missing credentials", "Bearer"],
            challenge: true,
        },
        Case {
            tag: "basic",
            headers: vec![
                ("authorization", "Basic dXNlcjpwYXNzd29yZA=="),
                ("x-scope-orgid", "showcase"),
            ],
            status: 401,
            reason: "malformed_credentials",
            body_has: &["malformed credentials", "Bearer"],
            challenge: true,
        },
        Case {
            tag: "unknown-token",
            headers: vec![("authorization", &unk), ("x-scope-orgid", "showcase")],
            status: 401,
            reason: "unauthenticated",
            body_has: &["token not accepted", "token lookup failed"],
            challenge: true,
        },
        Case {
            tag: "bad-tenant",
            headers: vec![("authorization", &q), ("x-scope-orgid", "Team-A")],
            status: 400,
            reason: "bad_tenant",
            body_has: &["bad tenant", "namespace name", "contains 'T'"],
            challenge: false,
        },
        Case {
            tag: "no-tenant",
            headers: vec![("authorization", &q)],
            status: 400,
            reason: "bad_tenant",
            body_has: &["bad tenant", "x-scope-orgid"],
            challenge: false,
        },
        Case {
            tag: "other-tenant",
            headers: vec![("authorization", &q), ("x-scope-orgid", "payments")],
            status: 403,
            reason: "forbidden",
            body_has: &[SHOWCASE_QUERY, "tenant \"payments\"", "read"],
            challenge: false,
        },
        Case {
            tag: "payments-sa-on-showcase",
            headers: vec![("authorization", &pq), ("x-scope-orgid", "showcase")],
            status: 403,
            reason: "forbidden",
            body_has: &[PAYMENTS_QUERY, "tenant \"showcase\"", "\"get\""],
            challenge: false,
        },
        Case {
            tag: "cross-one-denied",
            headers: vec![
                ("authorization", &q),
                ("x-scope-orgid", "showcase|payments"),
            ],
            status: 403,
            reason: "forbidden",
            body_has: &["tenant \"payments\""],
            challenge: false,
        },
        Case {
            tag: "two-tenant-headers",
            headers: vec![
                ("authorization", &q),
                ("x-scope-orgid", "showcase"),
                ("x-scope-orgid", "payments"),
            ],
            status: 400,
            reason: "bad_tenant",
            body_has: &["bad tenant", "more than once"],
            challenge: false,
        },
    ];

    for h2 in [false, true] {
        for c in &cases {
            let path = format!("/api/search?case={}&h2={h2}", c.tag);
            let r = s.get(s.query, &path, &c.headers, h2).await;
            assert_eq!(r.status, c.status, "{}: {r:?}\n{}", c.tag, s.diag());
            for needle in c.body_has {
                assert!(
                    r.body.contains(needle),
                    "{}: body {:?} should mention {needle:?}",
                    c.tag,
                    r.body
                );
            }
            assert!(r.body.ends_with('\n'), "{}: {:?}", c.tag, r.body);
            assert!(
                r.header("content-type")
                    .is_some_and(|ct| ct.starts_with("text/plain")),
                "{}: {r:?}",
                c.tag
            );
            let challenge = r.header("www-authenticate");
            if c.challenge {
                assert!(
                    challenge.is_some_and(|v| v.starts_with("Bearer")),
                    "{}: 401 needs a Bearer challenge: {r:?}",
                    c.tag
                );
            } else {
                assert!(challenge.is_none(), "{}: {r:?}", c.tag);
            }
            let e = s.access_entry(&path).await;
            assert_eq!(e["response_code"], c.status, "{}: {e}", c.tag);
            assert_log_fields(
                &e,
                &[
                    ("authz_decision", "deny"),
                    ("authz_reason", c.reason),
                    ("response_flags", "UAEX"),
                ],
                c.tag,
            );
            assert!(e["upstream_host"].is_null(), "{}: {e}", c.tag);
        }
    }

    assert!(
        s.requests().is_empty(),
        "the upstream must see no denied request: {:#?}",
        s.requests()
    );

    // The unknown token is remembered as rejected (negative cache): the same answer again.
    let r = s
        .get_as(
            s.query,
            "/api/search?case=unknown-again",
            &unk,
            "showcase",
            false,
        )
        .await;
    assert_eq!(r.status, 401);
}

/// OTLP/HTTP on the ingest listener needs `create` (write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_listener_requires_write() {
    let s = Stack::new(4).await;

    let r = s
        .otlp_http(s.ingest, "/v1/traces", &s.showcase_ingest, "showcase")
        .await;
    assert_eq!(r.status, 200, "{r:?}\n{}", s.diag());
    let reqs = s.requests();
    assert_eq!(reqs.len(), 1, "{reqs:#?}");
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].path, "/v1/traces");
    assert_eq!(reqs[0].header_all("x-scope-orgid"), vec!["showcase"]);
    assert!(reqs[0].header_all("authorization").is_empty());
    let e = s.access_entry("/v1/traces").await;
    assert_log_fields(
        &e,
        &[("authz_action", "write"), ("authz_user", SHOWCASE_INGEST)],
        "ingest SA",
    );

    s.upstream.clear();
    let r = s
        .otlp_http(s.ingest, "/v1/traces?q=1", &s.showcase_query, "showcase")
        .await;
    assert_eq!(r.status, 403, "{r:?}\n{}", s.diag());
    assert!(r.body.contains("may not write"), "{}", r.body);
    assert!(r.body.contains("\"create\""), "{}", r.body);

    // A read on the ingest listener is still a write: the query SA gets 403 for GET too.
    let auth = bearer(&s.showcase_query);
    let r = s
        .get_as(s.ingest, "/api/search", &auth, "showcase", false)
        .await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(s.requests().is_empty(), "{:#?}", s.requests());
}

/// Without context extensions tenant-authz infers the action from method + path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inferred_action_on_a_listener_without_context_extensions() {
    let s = Stack::new(6).await;
    let q = bearer(&s.showcase_query);
    let qh = [("authorization", q.as_str()), ("x-scope-orgid", "showcase")];

    let r = s.get(s.infer, "/api/search?tags=a", &qh, false).await;
    assert_eq!(r.status, 200, "{r:?}\n{}", s.diag());

    let r = s
        .otlp_http(s.infer, "/v1/traces", &s.showcase_query, "showcase")
        .await;
    assert_eq!(r.status, 403, "POST /v1/traces is a write: {r:?}");
    assert!(r.body.contains("may not write"), "{}", r.body);

    let what = "gRPC Export is a write";
    raw_grpc_denied(
        s.infer,
        Some(&s.showcase_query),
        "showcase",
        what,
        tonic::Code::PermissionDenied,
    )
    .await;

    let r = s
        .send(s.infer, "PUT", "/api/overrides", &qh, false, b"{}".to_vec())
        .await;
    assert_eq!(r.status, 403, "PUT /api/overrides is manage: {r:?}");
    assert!(r.body.contains("may not manage"), "{}", r.body);
    assert!(r.body.contains("\"update\""), "{}", r.body);

    let r = s
        .send(s.infer, "POST", "/api/search", &qh, true, Vec::new())
        .await;
    assert_eq!(r.status, 200, "POST /api/search is a read: {r:?}");

    let r = s
        .otlp_http(s.infer, "/v1/traces?x=1", &s.showcase_ingest, "showcase")
        .await;
    assert_eq!(r.status, 200, "ingest SA writes: {r:?}\n{}", s.diag());

    let raw = raw_grpc_export(s.infer, Some(&s.showcase_ingest), "showcase").await;
    assert!(raw.is_ok(), "ingest SA gRPC export: {raw:?}");

    let i = bearer(&s.showcase_ingest);
    let r = s
        .get_as(s.infer, "/api/search", &i, "showcase", false)
        .await;
    assert_eq!(r.status, 403, "ingest SA may not read: {r:?}");
    assert!(r.body.contains("may not read"), "{}", r.body);

    let seen: Vec<(String, String)> = s
        .requests()
        .iter()
        .map(|r| (r.method.clone(), r.path_and_query.clone()))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("GET".to_string(), "/api/search?tags=a".to_string()),
            ("POST".to_string(), "/api/search".to_string()),
            ("POST".to_string(), "/v1/traces?x=1".to_string()),
            ("POST".to_string(), EXPORT_PATH.to_string()),
        ]
    );
    let e = s.access_entry("/v1/traces?x=1").await;
    assert_eq!(e["authz_action"], "write", "{e}");
    let e = s.access_entry("/api/overrides").await;
    assert_eq!(e["authz_reason"], "forbidden", "{e}");
}
