//! Threat: a lying, broken or echoing Kubernetes API (or a proxy in front of it).
//!
//! The real binary at `RUST_LOG=debug` (every crate), the real kube client and TLS, and the fake
//! API scripted to answer in legal but unusual ways and in illegal ones. Each answer must be
//! read as the API reference and the apiserver's own webhook clients read it, never allow when
//! it should not, and never put a piece of the token in a log line or a client's answer.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::authz::{check_request, http_status, AuthzProcess};
use support::fake_kube::{FakeKube, FakeUser, ReviewKind, Scripted, Subject, DEFAULT_AUDIENCE};

/// Looks like a projected ServiceAccount token, so every 12-character piece is distinctive.
const TOKEN: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6Imhvc3RpbGUifQ.eyJhdWQiOlsidGVtcG8iXSwic3ViIjoic3lzdGVtOnNlcnZpY2VhY2NvdW50OnNob3djYXNlOmdyYWZhbmEifQ.c2lnbmF0dXJlLW9mLXRoZS1ob3N0aWxlLXRlc3Q";
const USER: &str = "system:serviceaccount:showcase:grafana";

async fn fake() -> FakeKube {
    let fake = FakeKube::start().await;
    fake.add_token(TOKEN, FakeUser::service_account("showcase", "grafana"));
    fake.grant(Subject::User(USER.into()), "showcase", "get");
    fake
}

async fn read(authz: &AuthzProcess, tenant: &str) -> (u16, String) {
    authz.read_as(TOKEN, tenant).await
}

/// Every 12-character piece of the token, searched in `text` (independent of the product's
/// own `is_quoted_in`).
fn assert_no_token_piece(what: &str, text: &str) {
    for start in 0..=TOKEN.len() - 12 {
        let piece = &TOKEN[start..start + 12];
        assert!(
            !text.contains(piece),
            "{what} contains a piece of the token ({piece}) at offset {start}"
        );
    }
}

fn token_review_answer(status: Value) -> Value {
    json!({
        "kind": "TokenReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": {"token": TOKEN},
        "status": status,
    })
}

fn sar_answer(status: Value) -> Value {
    json!({
        "kind": "SubjectAccessReview",
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": {},
        "status": status,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sar_saying_allowed_and_denied_is_never_an_allow() {
    let fake = fake().await;
    let authz = AuthzProcess::start(fake.kubeconfig_path(), &[]).await;
    fake.script(ReviewKind::SubjectAccessReview, |_| {
        Scripted::json(
            201,
            sar_answer(json!({"allowed": true, "denied": true, "reason": "both"})),
        )
    });
    let (status, body) = read(&authz, "showcase").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("unusable"), "{body}");
    // Not cached: the next request asks again.
    let before = fake.subject_access_reviews();
    assert_eq!(read(&authz, "showcase").await.0, 503);
    assert_eq!(fake.subject_access_reviews(), before + 1);
    assert!(authz.log().contains("allowed and denied are both true"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sar_denied_and_evaluation_errors_are_403_with_the_reason() {
    let fake = fake().await;
    let authz = AuthzProcess::start(fake.kubeconfig_path(), &[]).await;
    fake.script(ReviewKind::SubjectAccessReview, |_| {
        Scripted::json(
            201,
            sar_answer(json!({"allowed": false,
                "evaluationError": "role.rbac.authorization.k8s.io \"tempo-reader\" not found"})),
        )
    });
    let (status, body) = read(&authz, "showcase").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("evaluation error"), "{body}");
    assert!(body.contains("tempo-reader"), "{body}");

    fake.script(ReviewKind::SubjectAccessReview, |_| {
        Scripted::json(
            201,
            sar_answer(json!({"allowed": false, "denied": true, "reason": "denied by policy"})),
        )
    });
    let (status, body) = read(&authz, "payments").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("denied by policy"), "{body}");

    // No `allowed` at all: not a SubjectAccessReview answer.
    fake.script(ReviewKind::SubjectAccessReview, |_| {
        Scripted::json(201, sar_answer(json!({"denied": false})))
    });
    assert_eq!(read(&authz, "other").await.0, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_authenticated_for_another_audience_is_401() {
    let fake = fake().await;
    let authz = AuthzProcess::start(fake.kubeconfig_path(), &["--audiences", "tempo"]).await;
    // An authenticator that ignores spec.audiences and says which audience it checked.
    for answered in [json!(["vault"]), json!([DEFAULT_AUDIENCE]), json!([])] {
        let a = answered.clone();
        fake.script(ReviewKind::TokenReview, move |_| {
            Scripted::json(
                201,
                token_review_answer(json!({"authenticated": true,
                    "user": {"username": USER, "groups": ["system:authenticated"]},
                    "audiences": a})),
            )
        });
        // A fresh tenant-authz cache entry per round: a 401 is remembered briefly.
        let authz = AuthzProcess::start(fake.kubeconfig_path(), &["--audiences", "tempo"]).await;
        let (status, body) = read(&authz, "showcase").await;
        assert_eq!(status, 401, "audiences {answered}: {body}");
        assert!(
            body.contains("(tempo)"),
            "names the audience expected: {body}"
        );
        assert_no_token_piece("the 401 body", &body);
    }
    // The fake's own audience logic (as kube-apiserver does it): a token for `tempo` passes.
    fake.clear_script(ReviewKind::TokenReview);
    assert_eq!(read(&authz, "showcase").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_audiences_accept_the_datasource_and_collector_tokens() {
    // manifests: the collector's projected token is for `tempo`; Grafana's long-lived Secret
    // token carries the API server's audience, which the shipped config lists on purpose.
    let fake = FakeKube::start().await;
    fake.add_token_with_audiences(
        "collector-projected-token-0123456789",
        FakeUser::service_account("showcase", "otel-collector"),
        &["tempo"],
    );
    fake.add_token_with_audiences(
        "grafana-secret-token-0123456789abcd",
        FakeUser::service_account("showcase", "grafana"),
        &[DEFAULT_AUDIENCE],
    );
    fake.add_token_with_audiences(
        "vault-only-token-0123456789abcdefgh",
        FakeUser::service_account("showcase", "grafana"),
        &["vault"],
    );
    fake.grant(
        Subject::Group("system:serviceaccounts:showcase".into()),
        "showcase",
        "get",
    );
    let audiences = format!("tempo,{DEFAULT_AUDIENCE}");
    let authz = AuthzProcess::start(fake.kubeconfig_path(), &["--audiences", &audiences]).await;
    let status = |token: &'static str| {
        let authz = &authz;
        async move {
            let auth = format!("Bearer {token}");
            let r = authz
                .client()
                .await
                .check(check_request(
                    "GET",
                    "/api/search",
                    &[("x-scope-orgid", "showcase"), ("authorization", &auth)],
                    Some("read"),
                ))
                .await
                .expect("Check")
                .into_inner();
            http_status(&r)
        }
    };
    assert_eq!(status("collector-projected-token-0123456789").await, 200);
    assert_eq!(status("grafana-secret-token-0123456789abcd").await, 200);
    assert_eq!(status("vault-only-token-0123456789abcdefgh").await, 401);
}

/// Every shape of failing answer that can quote the token, at `RUST_LOG=debug` for every crate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_failure_shape_puts_the_token_in_a_log_or_an_answer() {
    let fake = fake().await;
    let status_with_token = |code: u16, reason: &str| {
        Scripted::json(
            code,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("token \"{TOKEN}\" is not valid"), "reason": reason, "code": code}),
        )
    };
    let shapes: Vec<(&str, u16, Scripted)> = vec![
        (
            "400 Status quoting the token",
            503,
            status_with_token(400, "BadRequest"),
        ),
        (
            "403 Status quoting the token",
            503,
            status_with_token(403, "Forbidden"),
        ),
        (
            "500 Status quoting the token",
            503,
            status_with_token(500, "InternalError"),
        ),
        (
            "503 Status quoting the token",
            503,
            status_with_token(503, "ServiceUnavailable"),
        ),
        (
            "502 plain-text body quoting the token",
            503,
            Scripted::text(
                502,
                "text/plain",
                &format!("upstream said: bad token {TOKEN}\n"),
            ),
        ),
        (
            "HTML error page quoting a piece",
            503,
            Scripted::text(
                500,
                "text/html",
                &format!("<h1>oops</h1><p>{}</p>", &TOKEN[30..70]),
            ),
        ),
        (
            "201 whose status.error quotes it",
            401,
            Scripted::json(
                201,
                token_review_answer(json!({"user": {}, "error": format!("token {TOKEN} expired")})),
            ),
        ),
        (
            "201 authenticated with the token as the user name",
            503,
            Scripted::json(
                201,
                token_review_answer(json!({"authenticated": true, "user": {"username": TOKEN}})),
            ),
        ),
        (
            "302 redirect with the token in Location and body",
            503,
            Scripted::text(
                302,
                "text/html",
                &format!("<a href=\"/login?t={TOKEN}\">moved</a>"),
            )
            .with_header("location", &format!("https://login.example/?t={TOKEN}")),
        ),
        (
            "200 not JSON, quoting the token",
            503,
            Scripted::text(
                200,
                "application/json",
                &format!("{{\"spec\":{{\"token\":\"{TOKEN}\""),
            ),
        ),
        (
            "201 with a status of the wrong type, echoing spec.token",
            503,
            Scripted::json(
                201,
                token_review_answer(json!({"authenticated": "yes", "error": TOKEN})),
            ),
        ),
    ];
    for (shape, expected, answer) in shapes {
        let authz = AuthzProcess::start(fake.kubeconfig_path(), &[]).await;
        fake.script(ReviewKind::TokenReview, move |_| answer.clone());
        let (status, body) = read(&authz, "showcase").await;
        assert_eq!(status, expected, "{shape}: {body}");
        assert_no_token_piece(&format!("{shape}: the answer to the client"), &body);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let log = authz.log();
        assert!(
            log.contains("tokenreview") || log.contains("TokenReview"),
            "{shape}: the failure is logged"
        );
        assert_no_token_piece(&format!("{shape}: the log at RUST_LOG=debug"), &log);
        assert_no_token_piece(&format!("{shape}: /metrics"), &authz.metrics().await);
    }
}

/// API impersonation: a server whose certificate is not from the kubeconfig's CA is never
/// asked anything (the token is not sent to it), and tenant-authz stays not ready: 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_with_a_certificate_from_another_ca_is_refused() {
    use base64::Engine as _;
    let fake = fake().await;
    let impostor_ca = support::tls::TestCerts::generate().ca_cert_pem;
    let b64 = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
    let yaml = std::fs::read_to_string(fake.kubeconfig_path()).expect("kubeconfig");
    let real_ca = b64(fake.ca_pem());
    assert!(
        yaml.contains(&real_ca),
        "the kubeconfig carries the CA as data"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, yaml.replace(&real_ca, &b64(&impostor_ca))).expect("write");

    let authz = AuthzProcess::spawn(&kubeconfig, &[], &[]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(authz.admin_get("/readyz").await.expect("readyz").0, 503);
    let (status, body) = read(&authz, "showcase").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        fake.token_reviews(),
        0,
        "a review reached the server that was not trusted"
    );
    assert_no_token_piece("the log", &authz.log());
}
