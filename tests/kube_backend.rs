//! The Check contract against the Kubernetes backend: the real binary, the real kube client,
//! real TLS, and a fake API server the test starts (with fault modes and call counting).

mod support;

use std::time::{Duration, Instant};

use support::authz::{check_request, denied_body, http_status, AuthzProcess};
use support::fake_kube::{FakeKube, FakeUser, Fault, ReviewKind, Subject};

const QUERY: &str = "token-showcase-query-0123456789abcdef";
const INGEST: &str = "token-showcase-ingest-0123456789abcdef";
const QUERY_USER: &str = "system:serviceaccount:showcase:query";

async fn fake() -> FakeKube {
    let fake = FakeKube::start().await;
    fake.add_token(
        QUERY,
        FakeUser::service_account("showcase", "query").with_pod("grafana-0"),
    );
    fake.add_token(INGEST, FakeUser::service_account("showcase", "ingest"));
    fake.grant(Subject::User(QUERY_USER.into()), "showcase", "get");
    fake.grant(
        Subject::User("system:serviceaccount:showcase:ingest".into()),
        "showcase",
        "create",
    );
    fake
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn check(
    authz: &AuthzProcess,
    token: Option<&str>,
    tenant: &str,
    action: Option<&str>,
    method: &str,
    path: &str,
) -> envoy_types::pb::envoy::service::auth::v3::CheckResponse {
    let auth = token.map(bearer);
    let mut headers = vec![("x-scope-orgid", tenant)];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    authz
        .client()
        .await
        .check(check_request(method, path, &headers, action))
        .await
        .expect("Check must never be a gRPC error")
        .into_inner()
}

/// An OTLP push (`write`) to `showcase` with `token`.
async fn push(
    authz: &AuthzProcess,
    token: &str,
) -> envoy_types::pb::envoy::service::auth::v3::CheckResponse {
    check(
        authz,
        Some(token),
        "showcase",
        Some("write"),
        "POST",
        "/v1/traces",
    )
    .await
}

async fn read(authz: &AuthzProcess, token: &str, tenant: &str) -> u16 {
    http_status(
        &check(
            authz,
            Some(token),
            tenant,
            Some("read"),
            "GET",
            "/api/search",
        )
        .await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_review_and_sar_carry_what_rbac_needs() {
    let fake = fake().await;
    let authz = AuthzProcess::start(fake.kubeconfig_path(), &["--audiences", "tempo,api"]).await;
    assert_eq!(read(&authz, QUERY, "showcase").await, 200);

    let trs = fake.received_token_reviews();
    assert_eq!(trs.len(), 1);
    assert_eq!(trs[0]["spec"]["token"], QUERY);
    assert_eq!(
        trs[0]["spec"]["audiences"],
        serde_json::json!(["tempo", "api"])
    );

    let sars = fake.received_subject_access_reviews();
    assert_eq!(sars.len(), 1);
    let spec = &sars[0]["spec"];
    assert_eq!(spec["user"], QUERY_USER);
    assert!(spec["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(spec["groups"]
        .as_array()
        .unwrap()
        .contains(&"system:serviceaccounts:showcase".into()));
    assert_eq!(
        spec["extra"]["authentication.kubernetes.io/pod-name"],
        serde_json::json!(["grafana-0"])
    );
    let ra = &spec["resourceAttributes"];
    assert_eq!(ra["namespace"], "showcase");
    assert_eq!(ra["verb"], "get");
    assert_eq!(ra["group"], "tempo.grafana.com");
    assert_eq!(ra["resource"], "traces");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sar_verb_follows_the_action() {
    let fake = fake().await;
    let authz = AuthzProcess::start(fake.kubeconfig_path(), &[]).await;
    let write = push(&authz, INGEST).await;
    assert_eq!(http_status(&write), 200);
    let read = check(
        &authz,
        Some(INGEST),
        "showcase",
        Some("read"),
        "GET",
        "/api/search",
    )
    .await;
    assert_eq!(http_status(&read), 403);
    let manage = check(
        &authz,
        Some(QUERY),
        "showcase",
        None,
        "PUT",
        "/api/overrides",
    )
    .await;
    assert_eq!(http_status(&manage), 403);
    let verbs: Vec<String> = fake
        .received_subject_access_reviews()
        .iter()
        .map(|s| {
            s["spec"]["resourceAttributes"]["verb"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(verbs, ["create", "get", "update"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_identical_requests_cost_one_token_review_and_one_sar() {
    let fake = fake().await;
    let authz = AuthzProcess::start(fake.kubeconfig_path(), &[]).await;
    for _ in 0..20 {
        assert_eq!(read(&authz, QUERY, "showcase").await, 200);
    }
    assert_eq!(fake.token_reviews(), 1);
    assert_eq!(fake.subject_access_reviews(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_tenants_cost_one_token_review_and_three_sars() {
    let fake = fake().await;
    fake.grant(
        Subject::Group("system:serviceaccounts:showcase".into()),
        "payments",
        "get",
    );
    fake.grant(
        Subject::Group("system:serviceaccounts:showcase".into()),
        "billing",
        "get",
    );
    let authz = AuthzProcess::start(fake.kubeconfig_path(), &[]).await;
    assert_eq!(read(&authz, QUERY, "showcase|payments|billing").await, 200);
    assert_eq!(fake.token_reviews(), 1);
    assert_eq!(fake.subject_access_reviews(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_based_rolebinding_allows() {
    let fake = fake().await;
    fake.grant(
        Subject::Group("system:serviceaccounts:showcase".into()),
        "payments",
        "get",
    );
    let authz = AuthzProcess::start(fake.kubeconfig_path(), &[]).await;
    assert_eq!(read(&authz, QUERY, "payments").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_tenant_denied_when_one_tenant_denied() {
    let fake = fake().await;
    let authz = AuthzProcess::start(fake.kubeconfig_path(), &[]).await;
    let r = check(
        &authz,
        Some(QUERY),
        "showcase|payments",
        Some("read"),
        "GET",
        "/api/search",
    )
    .await;
    assert_eq!(http_status(&r), 403);
    let body = denied_body(&r);
    assert!(body.contains("\"payments\""), "{body}");
    assert!(body.contains(QUERY_USER), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_token_is_401_and_cached_briefly() {
    let fake = fake().await;
    let authz = AuthzProcess::start(fake.kubeconfig_path(), &[]).await;
    for _ in 0..3 {
        let r = check(
            &authz,
            Some("not-a-known-token"),
            "showcase",
            Some("read"),
            "GET",
            "/",
        )
        .await;
        assert_eq!(http_status(&r), 401);
    }
    assert_eq!(fake.token_reviews(), 1);
    assert_eq!(fake.subject_access_reviews(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_make_no_api_call() {
    let fake = fake().await;
    let authz = AuthzProcess::start(fake.kubeconfig_path(), &[]).await;
    let long = "a".repeat(17 * 1024);
    for (token, tenant, status) in [
        (None, "showcase", 401),
        (Some(long.as_str()), "showcase", 401),
        (Some(QUERY), "Team-A", 400),
        (Some(QUERY), "a||b", 400),
        (Some(QUERY), "a,b", 400),
    ] {
        let r = check(&authz, token, tenant, Some("read"), "GET", "/api/search").await;
        assert_eq!(http_status(&r), status, "{tenant}");
    }
    assert_eq!(fake.token_reviews() + fake.subject_access_reviews(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_cold_requests_are_coalesced() {
    let fake = fake().await;
    fake.set_latency(Duration::from_millis(200));
    let authz = AuthzProcess::start(fake.kubeconfig_path(), &[]).await;
    let client = authz.client().await;
    let auth = bearer(QUERY);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let mut c = client.clone();
        let req = check_request(
            "GET",
            "/api/search",
            &[("authorization", &auth), ("x-scope-orgid", "showcase")],
            Some("read"),
        );
        tasks.push(tokio::spawn(async move { c.check(req).await }));
    }
    for t in tasks {
        let r = t.await.unwrap().expect("answered").into_inner();
        assert_eq!(http_status(&r), 200);
    }
    assert!(
        fake.token_reviews() <= 2,
        "{} TokenReviews",
        fake.token_reviews()
    );
    assert!(
        fake.subject_access_reviews() <= 2,
        "{} SARs",
        fake.subject_access_reviews()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_concurrency_is_bounded() {
    let fake = fake().await;
    for i in 0..30 {
        fake.add_token(
            &format!("distinct-{i}"),
            FakeUser::service_account("showcase", "query"),
        );
    }
    fake.set_latency(Duration::from_millis(100));
    let authz = AuthzProcess::start(
        fake.kubeconfig_path(),
        &["--max-concurrent-reviews", "4", "--decision-timeout", "10s"],
    )
    .await;
    let client = authz.client().await;
    let mut tasks = Vec::new();
    for i in 0..30 {
        let mut c = client.clone();
        let auth = bearer(&format!("distinct-{i}"));
        let req = check_request(
            "GET",
            "/",
            &[("authorization", &auth), ("x-scope-orgid", "showcase")],
            Some("read"),
        );
        tasks.push(tokio::spawn(async move { c.check(req).await }));
    }
    for t in tasks {
        assert_eq!(http_status(&t.await.unwrap().unwrap().into_inner()), 200);
    }
    assert!(
        fake.max_in_flight() <= 4,
        "{} in flight",
        fake.max_in_flight()
    );
    assert!(
        fake.max_in_flight() >= 2,
        "the test did not create concurrency"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_fail_closed_with_503_and_are_not_cached() {
    for fault in [Fault::Status500, Fault::CloseConnection] {
        let fake = fake().await;
        let authz = AuthzProcess::start(fake.kubeconfig_path(), &[]).await;
        fake.set_fault(fault);
        for _ in 0..2 {
            let r = check(&authz, Some(QUERY), "showcase", Some("read"), "GET", "/").await;
            assert_eq!(http_status(&r), 503, "{fault:?}");
            assert!(
                denied_body(&r).contains("cannot decide"),
                "{}",
                denied_body(&r)
            );
        }
        let calls = fake.token_reviews();
        assert!(calls >= 2, "{fault:?}: failure was cached ({calls} calls)");
        fake.set_fault(Fault::None);
        assert_eq!(read(&authz, QUERY, "showcase").await, 200, "{fault:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sar_failure_fails_closed_even_with_a_cached_identity() {
    let fake = fake().await;
    let authz = AuthzProcess::start(fake.kubeconfig_path(), &[]).await;
    assert_eq!(read(&authz, QUERY, "showcase").await, 200);
    fake.set_fault_for(ReviewKind::SubjectAccessReview, Fault::Status500);
    fake.grant(Subject::User(QUERY_USER.into()), "payments", "get");
    assert_eq!(read(&authz, QUERY, "payments").await, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_api_gets_our_503_before_envoys_timeout() {
    let fake = fake().await;
    let authz = AuthzProcess::start(fake.kubeconfig_path(), &[]).await;
    fake.set_fault(Fault::Slow(Duration::from_secs(4)));
    let started = Instant::now();
    let r = check(&authz, Some(QUERY), "showcase", Some("read"), "GET", "/").await;
    let took = started.elapsed();
    assert_eq!(http_status(&r), 503);
    assert!(denied_body(&r).contains("deadline"), "{}", denied_body(&r));
    assert!(
        took < Duration::from_millis(1900),
        "took {took:?}, Envoy waits 2 s"
    );
}

/// The client's read timeout (`decision_timeout` + 1 s, here 3 s) counts from each request,
/// not from when its pooled connection went idle: a review sent on a connection idle for 2.5 s
/// and answered 0.9 s later is answered, not cut off at 3 s of connection idleness.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_on_a_long_idle_pooled_connection_gets_its_whole_read_timeout() {
    let fake = fake().await;
    let authz = AuthzProcess::start(
        fake.kubeconfig_path(),
        &["--decision-timeout", "2s", "--watch-rbac", "false"],
    )
    .await;
    assert_eq!(read(&authz, QUERY, "showcase").await, 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    fake.set_latency(Duration::from_millis(900));
    let r = push(&authz, INGEST).await;
    assert_eq!(http_status(&r), 200, "{}\n{}", denied_body(&r), authz.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_allow_survives_an_api_outage() {
    let fake = fake().await;
    let authz = AuthzProcess::start(fake.kubeconfig_path(), &[]).await;
    assert_eq!(read(&authz, QUERY, "showcase").await, 200);
    fake.set_fault(Fault::CloseConnection);
    assert_eq!(read(&authz, QUERY, "showcase").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_checks_cache_and_api_calls() {
    let fake = fake().await;
    let authz = AuthzProcess::start(fake.kubeconfig_path(), &[]).await;
    read(&authz, QUERY, "showcase").await;
    read(&authz, QUERY, "showcase").await;
    read(&authz, QUERY, "payments").await;
    let m = authz.metrics().await;
    for line in [
        r#"tenant_authz_checks_total{decision="allow",reason="ok",action="read",cached="false"} 1"#,
        r#"tenant_authz_checks_total{decision="allow",reason="ok",action="read",cached="true"} 1"#,
        r#"tenant_authz_checks_total{decision="deny",reason="forbidden",action="read",cached="false"} 1"#,
        r#"tenant_authz_backend_requests_total{kind="authenticate",outcome="ok"} 1"#,
        r#"tenant_authz_backend_requests_total{kind="authorize",outcome="ok"} 2"#,
        r#"tenant_authz_cache_lookups_total{cache="decision",result="hit"} 1"#,
        r#"tenant_authz_cache_entries{cache="allowed"}"#,
        "tenant_authz_backend_request_duration_seconds_bucket",
    ] {
        assert!(m.contains(line), "missing {line} in\n{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparsable_token_review_echoing_the_token_is_503_and_never_logged() {
    let fake = fake().await;
    let authz = AuthzProcess::start(fake.kubeconfig_path(), &[]).await;
    fake.set_fault_for(ReviewKind::TokenReview, Fault::UnparsableEcho);
    let r = check(&authz, Some(QUERY), "showcase", Some("read"), "GET", "/").await;
    assert_eq!(http_status(&r), 503);
    assert!(!denied_body(&r).contains(&QUERY[..12]));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !authz.log().contains("review failed") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = authz.log();
    assert!(
        log.contains("review failed") && log.contains("the Kubernetes API"),
        "the failure is logged"
    );
    for piece in [QUERY, &QUERY[..12], &QUERY[QUERY.len() - 12..]] {
        assert!(!log.contains(piece), "a token fragment reached the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tempo_gateway_mapping_asks_the_operators_cluster_scoped_question() {
    use support::fake_kube::GrantRule;
    let fake = fake().await;
    // The ClusterRole shape of the Tempo Operator's gateway: resource = tenant, name = traces.
    fake.grant_rule(
        GrantRule::new(
            Subject::Group("system:serviceaccounts:showcase".into()),
            None,
            "tempo.grafana.com",
            "payments",
            &["get"],
        )
        .with_name("traces"),
    );
    let authz =
        AuthzProcess::start(fake.kubeconfig_path(), &["--sar-mapping", "tempo-gateway"]).await;
    assert_eq!(read(&authz, QUERY, "payments").await, 200);
    // The namespace-scoped Role of `showcase` does not answer this question.
    let r = check(&authz, Some(QUERY), "showcase", Some("read"), "GET", "/").await;
    assert_eq!(http_status(&r), 403);
    assert!(
        denied_body(&r).contains("ClusterRole"),
        "{}",
        denied_body(&r)
    );
    let sars = fake.received_subject_access_reviews();
    let ra = &sars[0]["spec"]["resourceAttributes"];
    assert_eq!(ra["resource"], "payments");
    assert_eq!(ra["name"], "traces");
    assert_eq!(ra["group"], "tempo.grafana.com");
    assert_eq!(ra["verb"], "get");
    assert!(ra.get("namespace").is_none_or(|n| n.is_null()), "{ra}");
}
