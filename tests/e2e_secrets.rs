//! End-to-end behind a real Envoy 1.40 ([`support::stack`]): no piece of any token shows up in
//! any log, metric, upstream request or client-visible answer, and the leak scanner itself
//! finds every kind of fragment.
mod support;

use std::time::Duration;

use tonic::Code;

use support::fake_kube::{FakeUser, Fault};
use support::stack::{
    bearer, otlp_grpc_export, raw_grpc_denied, scan_for_tokens, Minter, Stack, WINDOW,
};

/// The security test: drive every path, then scan every log, metric, upstream request and
/// client-visible answer for any piece of any token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_fragment_leaks_anywhere() {
    let mut s = Stack::new(8).await;
    let mut tokens: Vec<(String, String)> = Vec::new();
    let mut client_seen: Vec<String> = Vec::new();

    let allow_h1 = s.fresh_token("showcase", "query");
    let allow_h2 = s.fresh_token("showcase", "query");
    let bad_tenant = s.fresh_token("showcase", "query");
    let unknown = s.minter.token("showcase", "query");
    let malformed = s.fresh_token("showcase", "query");
    let forbidden = s.fresh_token("showcase", "query");
    let otlp_allowed = s.fresh_token("showcase", "ingest");
    let otlp_denied = s.fresh_token("showcase", "query");
    let grpc_unknown = s.minter.token("showcase", "ingest");
    let huge = s.minter.token_with_signature("showcase", "query", 13_000);
    s.fake
        .add_token(&huge, FakeUser::service_account("showcase", "query"));
    assert!(huge.len() > 16 * 1024, "{}", huge.len());

    macro_rules! expect {
        ($reply:expr, $status:expr, $what:expr) => {{
            let r = $reply;
            assert_eq!(r.status, $status, "{}: status {}", $what, r.status);
            client_seen.push(r.transcript());
        }};
    }

    // Every HTTP path on the query listener, in order: (what, authorization, path, tenant, h2,
    // status). Each allow goes twice; the second time is a cached allow (logged at debug).
    let (a, b, api) = ("/api/search?tags=a", "/api/search?tags=b", "/api/search");
    let probes = [
        ("allow h1", bearer(&allow_h1), a, "showcase", false, 200),
        ("allow h1", bearer(&allow_h1), b, "showcase", false, 200),
        ("allow h2c", bearer(&allow_h2), a, "showcase", true, 200),
        ("allow h2c", bearer(&allow_h2), b, "showcase", true, 200),
        ("bad tenant", bearer(&bad_tenant), api, "Team-A", false, 400),
        (
            "unknown token",
            bearer(&unknown),
            api,
            "showcase",
            false,
            401,
        ),
        (
            "unknown token",
            bearer(&unknown),
            api,
            "showcase",
            true,
            401,
        ),
        (
            "malformed",
            format!("Bearer {malformed} extra"),
            api,
            "showcase",
            false,
            401,
        ),
        // A bare token without a scheme.
        ("bare token", malformed.clone(), api, "showcase", true, 401),
        (
            "forbidden",
            bearer(&forbidden),
            api,
            "showcase|payments",
            false,
            403,
        ),
        (
            "token over 16 KiB",
            bearer(&huge),
            api,
            "showcase",
            false,
            401,
        ),
    ];
    for (what, authorization, path, tenant, h2, status) in &probes {
        let r = s.get_as(s.query, path, authorization, tenant, *h2).await;
        expect!(r, *status, what);
    }
    for (label, token) in [
        ("allow h1", &allow_h1),
        ("allow h2c", &allow_h2),
        ("400 bad tenant", &bad_tenant),
        ("401 unknown", &unknown),
        ("401 malformed", &malformed),
        ("403 forbidden", &forbidden),
        ("401 over 16 KiB", &huge),
    ] {
        tokens.push((label.to_string(), token.clone()));
    }

    let r = s
        .otlp_http(s.ingest, "/v1/traces", &otlp_allowed, "showcase")
        .await;
    expect!(r, 200, "OTLP/HTTP allowed");
    otlp_grpc_export(s.ingest, Some(&otlp_allowed), "showcase")
        .await
        .unwrap_or_else(|e| panic!("OTLP gRPC allowed export failed: {e}"));
    tokens.push(("OTLP allowed".into(), otlp_allowed.clone()));

    let err = otlp_grpc_export(s.ingest, Some(&otlp_denied), "showcase")
        .await
        .expect_err("OTLP denied");
    client_seen.push(err);
    for (token, what, code, label) in [
        (
            &otlp_denied,
            "raw gRPC denied",
            Code::PermissionDenied,
            "OTLP denied",
        ),
        (
            &grpc_unknown,
            "raw gRPC unknown",
            Code::Unauthenticated,
            "gRPC unknown",
        ),
    ] {
        let st = raw_grpc_denied(s.ingest, Some(token), "showcase", what, code).await;
        client_seen.push(format!("{st:?}\n{}", st.message()));
        tokens.push((label.into(), token.clone()));
    }

    // Outage: 503 with a token tenant-authz has never seen (both faults).
    for fault in [Fault::Status500, Fault::CloseConnection] {
        s.fake.set_fault(fault);
        let fresh = s.fresh_token("showcase", "query");
        let r = s
            .get_as(s.query, "/api/search", &bearer(&fresh), "showcase", false)
            .await;
        expect!(r, 503, format!("{fault:?}"));
        let what = "gRPC during outage";
        let st = raw_grpc_denied(s.ingest, Some(&fresh), "showcase", what, Code::Unavailable).await;
        client_seen.push(format!("{st:?}\n{}", st.message()));
        tokens.push((format!("503 {fault:?}"), fresh));
    }
    s.fake.set_fault(Fault::None);

    // Let Envoy flush the access log (the 20 requests through Envoy so far).
    let entries = s.envoy.wait_access_log(20, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Every path was really exercised (each denial reached tenant-authz and was decided there).
    for reason in [
        "ok",
        "bad_tenant",
        "unauthenticated",
        "malformed_credentials",
        "forbidden",
        "token_too_long",
        "unavailable",
    ] {
        assert!(
            entries.iter().any(|e| e["authz_reason"] == reason),
            "no access log entry with authz_reason={reason}"
        );
    }

    let upstream_text: String = s
        .requests()
        .iter()
        .map(|r| {
            let mut t = format!("{} {} {}\n", r.method, r.path_and_query, r.version);
            for (n, v) in &r.headers {
                t.push_str(&format!("{n}: {v}\n"));
            }
            t
        })
        .collect();
    assert!(
        !upstream_text.is_empty(),
        "the allowed requests reached the upstream"
    );
    let authz_log = s.authz.log();
    assert!(
        authz_log.contains("DEBUG") || authz_log.contains("debug"),
        "RUST_LOG=debug took effect"
    );
    let sources = vec![
        ("tenant-authz log".to_string(), authz_log),
        ("tenant-authz /metrics".to_string(), s.authz.metrics().await),
        ("envoy access log".to_string(), s.envoy.access_log()),
        ("envoy log".to_string(), s.envoy.log()),
        ("upstream requests".to_string(), upstream_text),
        (
            "client-visible responses".to_string(),
            client_seen.join("\n"),
        ),
    ];
    let findings = scan_for_tokens(&tokens, &sources);
    assert!(
        findings.is_empty(),
        "token material leaked ({} findings):\n{}",
        findings.len(),
        findings.join("\n")
    );
}

/// The leak scanner itself finds a full token, its prefix, its suffix and an inner piece, and
/// does not print the token.
#[test]
fn leak_scan_finds_every_kind_of_fragment() {
    let mut m = Minter::new(99);
    let t0 = m.token("a", "b");
    let t1 = m.token("c", "d");
    let tokens = vec![
        ("zero".to_string(), t0.clone()),
        ("one".to_string(), t1.clone()),
    ];
    let clean = vec![(
        "clean".to_string(),
        "nothing to see: Bearer realm=\"tempo\"".to_string(),
    )];
    assert!(scan_for_tokens(&tokens, &clean).is_empty());
    let mid = t1.len() - 200;
    let sources = vec![
        ("full".to_string(), format!("x {t0} y")),
        ("prefix".to_string(), format!("x {} y", &t1[..WINDOW])),
        (
            "suffix".to_string(),
            format!("x {}", &t1[t1.len() - WINDOW..]),
        ),
        ("inner".to_string(), format!("{}!", &t1[mid..mid + WINDOW])),
    ];
    let findings = scan_for_tokens(&tokens, &sources);
    let joined = findings.join("\n");
    for needle in [
        "full: token #0 (zero) appears in full".to_string(),
        "prefix: token #1 (one) 12-char prefix".to_string(),
        "suffix: token #1 (one) 12-char suffix".to_string(),
        format!("inner: a 12-char piece of token #1 (one) at token offset {mid}"),
    ] {
        assert!(joined.contains(&needle), "{joined}");
    }
    assert!(!joined.contains(&t0[..WINDOW]) && !joined.contains(&t1[mid..mid + WINDOW]));
    // Tokens look like real projected service-account tokens.
    assert!((900..1200).contains(&t0.len()), "{}", t0.len());
    assert_eq!(t0.split('.').count(), 3);
    assert!(t0.starts_with("eyJhbGciOiJSUzI1NiIs"));
    assert_ne!(t0[t0.len() - 40..], t1[t1.len() - 40..]);
}
