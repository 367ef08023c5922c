//! Self-test of the Envoy / upstream test harness (no tenant-authz involved):
//! the e2e template validates, the recording upstream speaks h1 and h2c, and
//! Envoy fails closed when the ext_authz server is unreachable.
mod support;

use std::time::Duration;

use support::envoy::{free_port, render, Envoy};
use support::upstream::Upstream;

const E2E: &str = include_str!("envoy/e2e.yaml");
const SECRET_TOKEN: &str = "harness-selftest-secret-token";

fn e2e_vars(authz_port: u16, upstream_port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("AUTHZ_PORT", authz_port.to_string()),
        ("UPSTREAM_PORT", upstream_port.to_string()),
        ("QUERY_PORT", free_port().to_string()),
        ("INGEST_PORT", free_port().to_string()),
        ("INFER_PORT", free_port().to_string()),
    ]
}

fn port_of(vars: &[(&str, String)], name: &str) -> u16 {
    vars.iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.parse().unwrap())
        .unwrap()
}

#[test]
fn render_replaces_and_rejects_leftovers() {
    assert_eq!(
        render(
            "a {{X}} b {{X}} {{Y}}",
            &[("X", "1".into()), ("Y", "2".into())]
        ),
        "a 1 b 1 2"
    );
    let err = std::panic::catch_unwind(|| render("a {{X}} {{Z}}", &[("X", "1".into())]))
        .expect_err("leftover placeholder must panic");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("{{Z}}"), "{msg}");
}

#[test]
fn validate_accepts_e2e_template_and_rejects_broken_config() {
    Envoy::validate(E2E, &e2e_vars(free_port(), free_port())).expect("e2e.yaml must validate");

    // A typo'd field inside a typed_config is rejected.
    let broken = E2E.replace("failure_mode_allow: false", "failure_mode_allowed: false");
    assert_ne!(broken, E2E);
    let err = Envoy::validate(&broken, &e2e_vars(free_port(), free_port()))
        .expect_err("broken config must not validate");
    assert!(err.contains("failure_mode_allowed"), "{err}");

    // A route to an undefined cluster is rejected.
    let broken = E2E.replacen("route: { cluster: upstream,", "route: { cluster: nope,", 1);
    assert_ne!(broken, E2E);
    let err = Envoy::validate(&broken, &e2e_vars(free_port(), free_port()))
        .expect_err("route to an unknown cluster must not validate");
    assert!(err.contains("nope"), "{err}");
}

#[tokio::test]
async fn upstream_records_http1_and_h2c_requests() {
    let upstream = Upstream::start().await;
    let base = format!("http://127.0.0.1:{}", upstream.port);

    // HTTP/1.1
    let h1 = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .build()
        .unwrap();
    let resp = h1
        .post(format!("{base}/api/search?tags=a%3Db"))
        .header("X-Scope-OrgID", "team-a")
        .header("x-dup", "one")
        .header("x-dup", "two")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "ok");

    // h2c (prior knowledge), as a gRPC call.
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = h2
        .post(format!(
            "{base}/opentelemetry.proto.collector.trace.v1.TraceService/Export"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-dup", "a")
        .header("x-dup", "b")
        .header("x-dup", "c")
        .body(vec![0u8, 0, 0, 0, 0])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.headers()["content-type"], "application/grpc");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &[0u8, 0, 0, 0, 0]);

    let reqs = upstream.requests();
    assert_eq!(reqs.len(), 2, "{reqs:#?}");

    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/api/search");
    assert_eq!(r.path_and_query, "/api/search?tags=a%3Db");
    assert_eq!(r.version, "HTTP/1.1");
    assert_eq!(r.header("x-scope-orgid"), Some("team-a"));
    assert_eq!(r.header("X-Scope-OrgID"), Some("team-a"));
    assert_eq!(r.header_all("x-dup"), vec!["one", "two"]);
    assert_eq!(r.body_len, 5);
    assert!(r.headers.iter().all(|(n, _)| *n == n.to_lowercase()));

    let r = &reqs[1];
    assert_eq!(r.method, "POST");
    assert_eq!(
        r.path,
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
    );
    assert_eq!(r.version, "HTTP/2.0");
    assert_eq!(r.header("content-type"), Some("application/grpc"));
    assert_eq!(r.header_all("x-dup"), vec!["a", "b", "c"]);
    assert_eq!(r.header("missing"), None);

    upstream.clear();
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn envoy_fails_closed_when_authz_is_unreachable() {
    let upstream = Upstream::start().await;
    // Nothing listens on the authz port.
    let vars = e2e_vars(free_port(), upstream.port);
    let envoy = Envoy::start(E2E, &vars).await;
    assert_ne!(envoy.admin_port, 0);

    let h1 = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .build()
        .unwrap();
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let mut sent = 0;
    for (listener, path) in [
        ("QUERY_PORT", "/api/search?q=1"),
        ("INGEST_PORT", "/v1/traces"),
        ("INFER_PORT", "/api/traces/abc"),
    ] {
        let port = port_of(&vars, listener);
        for client in [&h1, &h2] {
            let resp = client
                .get(format!("http://127.0.0.1:{port}{path}"))
                .header("authorization", format!("Bearer {SECRET_TOKEN}"))
                .header("x-scope-orgid", "team-a")
                .send()
                .await
                .unwrap();
            assert_eq!(
                resp.status(),
                503,
                "{listener} {path} must fail closed\n{}",
                envoy.log()
            );
            sent += 1;
        }
    }
    assert!(
        upstream.requests().is_empty(),
        "upstream must see nothing: {:#?}",
        upstream.requests()
    );

    let entries = envoy.wait_access_log(sent, Duration::from_secs(10)).await;
    assert_eq!(entries.len(), sent, "{}", envoy.access_log());
    let raw = envoy.access_log();
    assert!(
        !raw.contains(SECRET_TOKEN),
        "token leaked to access log: {raw}"
    );
    assert!(!raw.to_ascii_lowercase().contains("bearer"), "{raw}");
    let first = &entries[0];
    assert_eq!(first["method"], "GET", "{first}");
    assert_eq!(first["path"], "/api/search?q=1", "{first}");
    assert_eq!(first["response_code"], 503, "{first}");
    assert_eq!(first["tenant_header"], "team-a", "{first}");
    // Denied before the router: no upstream, no route name, ext_authz error.
    assert_eq!(first["response_code_details"], "ext_authz_error", "{first}");
    assert_eq!(first["response_flags"], "UAEX", "{first}");
    assert_eq!(first["protocol"], "HTTP/1.1", "{first}");
    assert_eq!(entries[1]["protocol"], "HTTP/2", "{}", entries[1]);
    assert!(first["upstream_host"].is_null(), "{first}");
    for e in &entries {
        assert_eq!(e["response_code"], 503, "{e}");
        assert!(
            e.as_object()
                .unwrap()
                .keys()
                .all(|k| !k.contains("authorization")),
            "{e}"
        );
        assert!(e["authz_decision"].is_null(), "{e}");
    }
}
