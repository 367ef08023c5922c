//! End-to-end behind a real Envoy 1.40 ([`support::stack`]): failures and latency. Kubernetes
//! API outages and a dead tenant-authz fail closed; checks that need no API call stay fast.
mod support;

use std::time::Duration;

use support::fake_kube::Fault;
use support::stack::{assert_log_fields, bearer, Stack};

/// Kubernetes API outages fail closed (503 + reason), cached allows keep working, and a dead
/// tenant-authz makes Envoy answer 503 without reaching the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_outage_fails_closed_with_503() {
    let mut s = Stack::new(7).await;
    let cached = bearer(&s.showcase_query);
    let ch = [
        ("authorization", cached.as_str()),
        ("x-scope-orgid", "showcase"),
    ];
    let r = s.get(s.query, "/api/search?warm", &ch, false).await;
    assert_eq!(r.status, 200, "{r:?}\n{}", s.diag());

    for (fault, tag) in [
        (Fault::Status500, "status500"),
        (Fault::CloseConnection, "close"),
    ] {
        s.fake.set_fault(fault);
        let fresh = s.fresh_token("showcase", "query");
        let fresh = bearer(&fresh);
        for h2 in [false, true] {
            let path = format!("/api/search?fault={tag}&h2={h2}");
            let r = s.get_as(s.query, &path, &fresh, "showcase", h2).await;
            assert_eq!(r.status, 503, "{tag}: {r:?}\n{}", s.diag());
            assert!(r.body.contains("cannot decide"), "{tag}: {:?}", r.body);
            assert!(r.header("retry-after").is_some(), "{tag}: {r:?}");
            let e = s.access_entry(&path).await;
            assert_log_fields(
                &e,
                &[("authz_decision", "deny"), ("authz_reason", "unavailable")],
                tag,
            );
        }
        let r = s
            .get(s.query, &format!("/api/search?cached={tag}"), &ch, false)
            .await;
        assert_eq!(
            r.status,
            200,
            "cached allow during {tag}: {r:?}\n{}",
            s.diag()
        );
    }
    s.fake.set_fault(Fault::None);

    let seen: Vec<String> = s
        .requests()
        .iter()
        .map(|r| r.path_and_query.clone())
        .collect();
    assert_eq!(
        seen,
        vec![
            "/api/search?warm",
            "/api/search?cached=status500",
            "/api/search?cached=close"
        ],
        "only allowed requests reach the upstream"
    );
    s.upstream.clear();

    // tenant-authz dies: Envoy fails closed (status_on_error 503).
    s.authz.signal("KILL");
    s.authz.wait_exit(Duration::from_secs(10)).await;
    for h2 in [false, true] {
        let r = s
            .get(s.query, &format!("/api/search?dead&h2={h2}"), &ch, h2)
            .await;
        assert_eq!(r.status, 503, "authz down, h2={h2}: {r:?}\n{}", s.diag());
    }
    let r = s
        .otlp_http(s.ingest, "/v1/traces", &s.showcase_ingest, "showcase")
        .await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(s.requests().is_empty(), "{:#?}", s.requests());
}

/// Checks that need no Kubernetes call (a cached allow, a request without a token) must take a
/// few milliseconds through Envoy. Regression guard for the ext_authz gRPC connection: without
/// TCP_NODELAY on tenant-authz's accepted sockets, a CheckResponse written as two segments
/// (denials: headers+message, then the trailers frame) waits for Envoy's delayed ACK (~40 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_without_api_calls_take_milliseconds() {
    let s = Stack::new(9).await;
    let q = bearer(&s.showcase_query);
    let qh = [("authorization", q.as_str()), ("x-scope-orgid", "showcase")];
    let r = s.get(s.query, "/api/search?warm", &qh, false).await;
    assert_eq!(r.status, 200, "{r:?}\n{}", s.diag());
    const N: usize = 15;
    for i in 0..N {
        let r = s
            .get(s.query, &format!("/api/search?allow={i}"), &qh, false)
            .await;
        assert_eq!(r.status, 200);
        let r = s
            .get(
                s.query,
                &format!("/api/search?deny={i}"),
                &[("x-scope-orgid", "showcase")],
                false,
            )
            .await;
        assert_eq!(r.status, 401);
    }
    let entries = s
        .envoy
        .wait_access_log(1 + 2 * N, Duration::from_secs(10))
        .await;
    let median_of = |kind: &str| {
        let mut ms: Vec<u64> = entries
            .iter()
            .filter(|e| e["path"].as_str().is_some_and(|p| p.contains(kind)))
            .map(|e| e["duration_ms"].as_u64().expect("duration_ms"))
            .collect();
        assert_eq!(ms.len(), N, "{kind}");
        ms.sort_unstable();
        (ms[N / 2], ms)
    };
    let (allow, allow_all) = median_of("?allow=");
    let (deny, deny_all) = median_of("?deny=");
    assert!(
        allow < 20,
        "cached allows take {allow} ms (median) through Envoy: {allow_all:?}"
    );
    assert!(
        deny < 20,
        "401s without any Kubernetes call take {deny} ms (median) through Envoy, cached allows \
         {allow} ms: {deny_all:?} (TCP_NODELAY missing on tenant-authz's gRPC connections?)"
    );
}
