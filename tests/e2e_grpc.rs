//! End-to-end behind a real Envoy 1.40 ([`support::stack`]): gRPC clients on the ingest
//! listener. Denials arrive as gRPC statuses, for a real OTLP exporter and a raw tonic client.
mod support;

use std::time::Duration;

use tonic::Code;

use support::fake_kube::Fault;
use support::stack::{otlp_grpc_export, raw_grpc_denied, raw_grpc_export, Stack, EXPORT_PATH};

/// A real OTLP gRPC exporter through Envoy: denials arrive as gRPC statuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_grpc_exporter_sees_grpc_statuses() {
    let mut s = Stack::new(5).await;

    otlp_grpc_export(s.ingest, Some(&s.showcase_ingest), "showcase")
        .await
        .unwrap_or_else(|e| panic!("allowed export failed: {e}\n{}", s.diag()));
    let reqs = s.requests();
    assert_eq!(reqs.len(), 1, "{reqs:#?}");
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, EXPORT_PATH);
    assert_eq!(r.version, "HTTP/2.0");
    assert!(r
        .header("content-type")
        .is_some_and(|ct| ct.starts_with("application/grpc")));
    assert_eq!(r.header_all("x-scope-orgid"), vec!["showcase"], "{r:#?}");
    assert!(r.header_all("authorization").is_empty(), "{r:#?}");
    assert!(r.body_len > 5, "the span reached the upstream: {r:#?}");
    s.upstream.clear();

    let unknown = s.minter.token("showcase", "ingest");
    for (token, what, status) in [
        (
            Some(&s.showcase_query),
            "query SA must not ingest",
            "PermissionDenied",
        ),
        (None, "no token", "Unauthenticated"),
        (Some(&unknown), "unknown token", "Unauthenticated"),
    ] {
        let err = otlp_grpc_export(s.ingest, token.map(String::as_str), "showcase")
            .await
            .expect_err(what);
        assert!(err.contains(status), "{err}");
    }

    s.fake.set_fault(Fault::Status500);
    let fresh = s.fresh_token("showcase", "ingest");
    let err = otlp_grpc_export(s.ingest, Some(&fresh), "showcase")
        .await
        .expect_err("API down");
    assert!(err.contains("Unavailable"), "{err}");
    s.fake.set_fault(Fault::None);

    assert!(s.requests().is_empty(), "{:#?}", s.requests());
    // Envoy turned each denial into a gRPC status (HTTP 200, trailers-only) and logged it.
    let entries = s.envoy.wait_access_log(5, Duration::from_secs(10)).await;
    let got: Vec<(Option<u64>, String, String)> = entries
        .iter()
        .map(|e| {
            (
                e["grpc_status"].as_u64(),
                e["authz_decision"].as_str().unwrap_or("-").to_string(),
                e["authz_reason"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    let want: Vec<(Option<u64>, String, String)> = [
        (0, "allow", "ok"),
        (7, "deny", "forbidden"),
        (16, "deny", "missing_credentials"),
        (16, "deny", "unauthenticated"),
        (14, "deny", "unavailable"),
    ]
    .iter()
    .map(|(c, d, r)| (Some(*c), d.to_string(), r.to_string()))
    .collect();
    assert_eq!(got, want, "{}", s.envoy.access_log());
}

/// The same through a raw tonic client: the gRPC code itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_grpc_client_sees_status_codes() {
    let mut s = Stack::new(55).await;

    raw_grpc_export(s.ingest, Some(&s.showcase_ingest), "showcase")
        .await
        .unwrap_or_else(|st| panic!("allowed: {st:?}\n{}", s.diag()));
    assert_eq!(s.requests().len(), 1);
    s.upstream.clear();

    let unknown = s.minter.token("showcase", "ingest");
    // (token, tenant, what, code, the message mentions)
    for (token, tenant, what, code, message_has) in [
        (
            Some(&s.showcase_query),
            "showcase",
            "query SA may not write",
            Code::PermissionDenied,
            Some("may not write"),
        ),
        (None, "showcase", "no token", Code::Unauthenticated, None),
        (
            Some(&unknown),
            "showcase",
            "unknown token",
            Code::Unauthenticated,
            None,
        ),
        (
            Some(&s.showcase_ingest),
            "payments",
            "other tenant",
            Code::PermissionDenied,
            None,
        ),
    ] {
        let token = token.map(String::as_str);
        let st = raw_grpc_denied(s.ingest, token, tenant, what, code).await;
        if let Some(needle) = message_has {
            assert!(st.message().contains(needle), "{st:?}");
        }
    }

    s.fake.set_fault(Fault::Status500);
    let fresh = s.fresh_token("showcase", "ingest");
    let st = raw_grpc_denied(
        s.ingest,
        Some(&fresh),
        "showcase",
        "API down",
        Code::Unavailable,
    )
    .await;
    assert!(st.message().contains("cannot decide"), "{st:?}");
    // The cached allow still works during the outage.
    raw_grpc_export(s.ingest, Some(&s.showcase_ingest), "showcase")
        .await
        .unwrap_or_else(|st| panic!("cached allow during outage: {st:?}\n{}", s.diag()));
    s.fake.set_fault(Fault::None);
    assert_eq!(s.requests().len(), 1, "{:#?}", s.requests());
}
