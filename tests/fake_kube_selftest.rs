//! Self-tests of the fake Kubernetes API server, through the real `kube::Client`.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
    SubjectAccessReviewStatus,
};
use kube::api::{Api, PostParams};
use serde_json::{json, Value};

use support::fake_kube::{
    FakeKube, FakeUser, Fault, GrantRule, ReviewKind, Subject, SUBJECT_ACCESS_REVIEWS_PATH,
    TOKEN_REVIEWS_PATH,
};

const TIMEOUT: Duration = Duration::from_secs(5);

fn token_review(token: &str, audiences: &[&str]) -> TokenReview {
    TokenReview {
        spec: TokenReviewSpec {
            token: token.to_string(),
            audiences: if audiences.is_empty() {
                None
            } else {
                Some(audiences.iter().map(|a| a.to_string()).collect())
            },
        },
        ..Default::default()
    }
}

fn sar(user: Option<&str>, groups: &[&str], namespace: &str, verb: &str) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.map(str::to_string),
            groups: if groups.is_empty() {
                None
            } else {
                Some(groups.iter().map(|g| g.to_string()).collect())
            },
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.to_string()),
                group: Some("tempo.grafana.com".to_string()),
                resource: Some("traces".to_string()),
                verb: Some(verb.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

async fn review_token(
    client: &kube::Client,
    review: &TokenReview,
) -> Result<TokenReviewStatus, kube::Error> {
    let api = Api::<TokenReview>::all(client.clone());
    let created = tokio::time::timeout(TIMEOUT, api.create(&PostParams::default(), review))
        .await
        .expect("TokenReview must not hang")?;
    Ok(created.status.expect("TokenReview answer has a status"))
}

async fn review_access(
    client: &kube::Client,
    review: &SubjectAccessReview,
) -> Result<SubjectAccessReviewStatus, kube::Error> {
    let api = Api::<SubjectAccessReview>::all(client.clone());
    let created = tokio::time::timeout(TIMEOUT, api.create(&PostParams::default(), review))
        .await
        .expect("SubjectAccessReview must not hang")?;
    Ok(created
        .status
        .expect("SubjectAccessReview answer has a status"))
}

fn api_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

#[tokio::test]
async fn known_token_authenticates_with_groups() {
    let fake = FakeKube::start().await;
    let user = FakeUser::service_account("tenant-a", "writer").with_pod("writer-0");
    fake.add_token("token-a", user.clone());
    let client = fake.client().await;

    let status = review_token(&client, &token_review("token-a", &[]))
        .await
        .expect("TokenReview succeeds");
    assert_eq!(status.authenticated, Some(true));
    assert_eq!(status.error, None);
    let info = status.user.expect("user info");
    assert_eq!(
        info.username.as_deref(),
        Some("system:serviceaccount:tenant-a:writer")
    );
    assert_eq!(info.uid.as_deref(), Some(user.uid.as_str()));
    assert_eq!(
        info.groups.expect("groups"),
        vec![
            "system:serviceaccounts".to_string(),
            "system:serviceaccounts:tenant-a".to_string(),
            "system:authenticated".to_string(),
        ]
    );
    let extra = info.extra.expect("extra");
    assert_eq!(
        extra.get("authentication.kubernetes.io/pod-name"),
        Some(&vec!["writer-0".to_string()])
    );
    assert_eq!(
        status.audiences,
        Some(vec![support::fake_kube::DEFAULT_AUDIENCE.to_string()])
    );

    assert_eq!(fake.token_reviews(), 1);
    let received = fake.received_token_reviews();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0]["spec"]["token"], "token-a");
    assert_eq!(received[0]["kind"], "TokenReview");
    assert_eq!(received[0]["apiVersion"], "authentication.k8s.io/v1");
}

#[tokio::test]
async fn token_review_json_matches_the_real_server() {
    let fake = FakeKube::start().await;
    fake.add_token("token-a", FakeUser::service_account("ns", "sa"));
    let token = fake.client_token().to_string();

    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
        "spec": {"token": "token-a"}})
    .to_string();
    let (code, text) = fake
        .raw_request("POST", TOKEN_REVIEWS_PATH, Some(&token), body.as_bytes())
        .await;
    assert_eq!(code, 201);
    let v: Value = serde_json::from_str(&text).expect("JSON answer");
    assert_eq!(v["metadata"], json!({"creationTimestamp": null}));
    assert_eq!(v["spec"], json!({"token": "token-a"}));
    assert_eq!(v["status"]["authenticated"], json!(true));
    assert!(
        v["status"]["user"].get("extra").is_none(),
        "empty extra is omitted"
    );

    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
        "spec": {"token": "nope"}})
    .to_string();
    let (code, text) = fake
        .raw_request("POST", TOKEN_REVIEWS_PATH, Some(&token), body.as_bytes())
        .await;
    assert_eq!(code, 201);
    let v: Value = serde_json::from_str(&text).expect("JSON answer");
    assert_eq!(
        v["status"],
        json!({"user": {}, "error": "[invalid bearer token, token lookup failed]"})
    );

    let (code, text) = fake.raw_request("GET", "/version", Some(&token), b"").await;
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&text).expect("JSON answer");
    assert_eq!(v["gitVersion"], "v1.37.0");
    assert_eq!(v["major"], "1");

    let (code, text) = fake
        .raw_request("GET", "/api/v1/secrets", Some(&token), b"")
        .await;
    assert_eq!(code, 404);
    let v: Value = serde_json::from_str(&text).expect("JSON answer");
    assert_eq!(v["kind"], "Status");
    assert_eq!(v["reason"], "NotFound");

    let (code, _) = fake
        .raw_request("GET", TOKEN_REVIEWS_PATH, Some(&token), b"")
        .await;
    assert_eq!(code, 405);

    let (code, text) = fake.raw_request("GET", "/version", None, b"").await;
    assert_eq!(code, 401);
    let v: Value = serde_json::from_str(&text).expect("JSON answer");
    assert_eq!(
        v,
        json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
            "message":"Unauthorized","reason":"Unauthorized","code":401})
    );
}

#[tokio::test]
async fn unknown_token_is_not_authenticated() {
    let fake = FakeKube::start().await;
    fake.add_token("token-a", FakeUser::service_account("tenant-a", "writer"));
    let client = fake.client().await;

    let status = review_token(&client, &token_review("secret-unknown-token", &[]))
        .await
        .expect("TokenReview succeeds");
    assert_ne!(status.authenticated, Some(true));
    let error = status.error.expect("an error");
    assert_eq!(error, "[invalid bearer token, token lookup failed]");
    assert!(!error.contains("secret-unknown-token"));
    assert!(status.user.expect("empty user").username.is_none());

    fake.remove_token("token-a");
    let status = review_token(&client, &token_review("token-a", &[]))
        .await
        .expect("TokenReview succeeds");
    assert_ne!(status.authenticated, Some(true));
}

#[tokio::test]
async fn audiences_are_checked() {
    let fake = FakeKube::start().await;
    fake.add_token_with_audiences(
        "token-aud",
        FakeUser::service_account("tenant-a", "writer"),
        &["tempo", "other"],
    );
    fake.add_token("token-any", FakeUser::service_account("tenant-b", "writer"));
    let client = fake.client().await;

    let ok = review_token(&client, &token_review("token-aud", &["tempo", "x"]))
        .await
        .expect("TokenReview succeeds");
    assert_eq!(ok.authenticated, Some(true));
    assert_eq!(ok.audiences, Some(vec!["tempo".to_string()]));

    let bad = review_token(&client, &token_review("token-aud", &["loki"]))
        .await
        .expect("TokenReview succeeds");
    assert_ne!(bad.authenticated, Some(true));
    let error = bad.error.expect("an error");
    assert!(
        error.contains(
            r#"token audiences ["tempo" "other"] is invalid for the target audiences ["loki"]"#
        ),
        "{error}"
    );
    assert!(!error.contains("token-aud"));

    let any = review_token(&client, &token_review("token-any", &["loki"]))
        .await
        .expect("TokenReview succeeds");
    assert_eq!(any.authenticated, Some(true));
    assert_eq!(any.audiences, Some(vec!["loki".to_string()]));

    let received = fake.received_token_reviews();
    assert_eq!(received[0]["spec"]["audiences"], json!(["tempo", "x"]));
}

#[tokio::test]
async fn sar_allows_only_granted_verb_and_namespace() {
    let fake = FakeKube::start().await;
    let sa = "system:serviceaccount:tenant-a:writer";
    fake.grant(Subject::User(sa.to_string()), "tenant-a", "create");
    let client = fake.client().await;

    let allowed = review_access(&client, &sar(Some(sa), &[], "tenant-a", "create"))
        .await
        .expect("SAR succeeds");
    assert!(allowed.allowed);
    assert_eq!(allowed.denied, None);
    assert_eq!(
        allowed.reason.as_deref(),
        Some(
            "RBAC: allowed by RoleBinding \"fake-grant-0/tenant-a\" of Role \"fake-role-0\" to ServiceAccount \"writer/tenant-a\""
        )
    );

    for (ns, verb) in [("tenant-b", "create"), ("tenant-a", "get")] {
        let denied = review_access(&client, &sar(Some(sa), &[], ns, verb))
            .await
            .expect("SAR succeeds");
        assert!(!denied.allowed, "{ns} {verb}");
        assert_eq!(denied.denied, None);
        assert_eq!(denied.reason, None);
    }

    let other = review_access(
        &client,
        &sar(
            Some("system:serviceaccount:tenant-a:other"),
            &[],
            "tenant-a",
            "create",
        ),
    )
    .await
    .expect("SAR succeeds");
    assert!(!other.allowed);

    assert_eq!(fake.subject_access_reviews(), 4);
    let received = fake.received_subject_access_reviews();
    assert_eq!(received[0]["spec"]["user"], sa);
    assert_eq!(
        received[0]["spec"]["resourceAttributes"]["resource"],
        "traces"
    );
}

#[tokio::test]
async fn group_and_general_grants() {
    let fake = FakeKube::start().await;
    fake.grant(
        Subject::Group("system:serviceaccounts:tenant-a".to_string()),
        "tenant-a",
        "get",
    );
    fake.grant_rule(
        GrantRule::new(
            Subject::Group("admins".to_string()),
            None,
            "tempo.grafana.com",
            "*",
            &["*"],
        )
        .with_name("prod"),
    );
    let client = fake.client().await;

    let groups = ["system:serviceaccounts", "system:serviceaccounts:tenant-a"];
    let by_group = review_access(
        &client,
        &sar(
            Some("system:serviceaccount:tenant-a:reader"),
            &groups,
            "tenant-a",
            "get",
        ),
    )
    .await
    .expect("SAR succeeds");
    assert!(by_group.allowed);
    assert!(by_group
        .reason
        .expect("reason")
        .ends_with("to Group \"system:serviceaccounts:tenant-a\""));

    let groups_only = review_access(&client, &sar(None, &groups, "tenant-a", "get"))
        .await
        .expect("SAR succeeds");
    assert!(groups_only.allowed);

    let wrong_ns = review_access(&client, &sar(None, &groups, "tenant-b", "get"))
        .await
        .expect("SAR succeeds");
    assert!(!wrong_ns.allowed);

    // Cluster-wide, wildcard verb/resource, restricted to one name.
    let mut named = sar(Some("alice"), &["admins"], "anywhere", "delete");
    let attrs = named
        .spec
        .resource_attributes
        .as_mut()
        .expect("resource attributes");
    attrs.name = Some("prod".to_string());
    let ok = review_access(&client, &named).await.expect("SAR succeeds");
    assert!(ok.allowed);
    assert!(ok
        .reason
        .expect("reason")
        .starts_with("RBAC: allowed by ClusterRoleBinding"));
    let attrs = named
        .spec
        .resource_attributes
        .as_mut()
        .expect("resource attributes");
    attrs.name = Some("staging".to_string());
    let not_named = review_access(&client, &named).await.expect("SAR succeeds");
    assert!(!not_named.allowed);

    fake.clear_grants();
    let cleared = review_access(&client, &sar(None, &groups, "tenant-a", "get"))
        .await
        .expect("SAR succeeds");
    assert!(!cleared.allowed);
}

#[tokio::test]
async fn malformed_requests_are_rejected() {
    let fake = FakeKube::start().await;
    let client = fake.client().await;

    // Malformed JSON, through the real kube client.
    let request = hyper::Request::builder()
        .method("POST")
        .uri(TOKEN_REVIEWS_PATH)
        .header("content-type", "application/json")
        .body(b"{not json".to_vec())
        .expect("build request");
    let err = tokio::time::timeout(TIMEOUT, client.request::<TokenReview>(request))
        .await
        .expect("no hang")
        .expect_err("malformed JSON is rejected");
    assert_eq!(api_code(&err), Some(400), "{err:?}");
    if let kube::Error::Api(status) = &err {
        assert_eq!(status.reason, "BadRequest");
    }

    // Missing spec.token.
    let err = review_token(
        &client,
        &TokenReview {
            spec: TokenReviewSpec::default(),
            ..Default::default()
        },
    )
    .await
    .expect_err("a TokenReview without token is rejected");
    assert_eq!(api_code(&err), Some(400), "{err:?}");

    // SAR without attributes and without user/groups: 422 Invalid, like the real server.
    let err = review_access(&client, &SubjectAccessReview::default())
        .await
        .expect_err("an empty SAR is rejected");
    assert_eq!(api_code(&err), Some(422), "{err:?}");
    if let kube::Error::Api(status) = &err {
        assert_eq!(status.reason, "Invalid");
        assert!(status
            .message
            .contains("at least one of user or group must be specified"));
    }

    // Non-resource SAR: valid, never granted.
    let non_resource = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some("alice".to_string()),
            non_resource_attributes: Some(NonResourceAttributes {
                path: Some("/metrics".to_string()),
                verb: Some("get".to_string()),
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let status = review_access(&client, &non_resource)
        .await
        .expect("SAR succeeds");
    assert!(!status.allowed);

    // Wrong kind in the body.
    let token = fake.client_token().to_string();
    let (code, _) = fake
        .raw_request(
            "POST",
            SUBJECT_ACCESS_REVIEWS_PATH,
            Some(&token),
            br#"{"apiVersion":"v1","kind":"Pod"}"#,
        )
        .await;
    assert_eq!(code, 400);

    // A JSON TokenReview without spec.token: the real server's message.
    let (code, text) = fake
        .raw_request("POST", TOKEN_REVIEWS_PATH, Some(&token), br#"{"spec":{}}"#)
        .await;
    assert_eq!(code, 400);
    let v: Value = serde_json::from_str(&text).expect("JSON answer");
    assert_eq!(v["reason"], "BadRequest");
    assert_eq!(
        v["message"],
        "token is required for TokenReview in authentication"
    );

    assert_eq!(fake.token_reviews(), 3);
    assert_eq!(fake.subject_access_reviews(), 3);
    assert_eq!(
        fake.received_token_reviews()[0],
        Value::String("{not json".to_string())
    );
}

#[tokio::test]
async fn status500_fault() {
    let fake = FakeKube::start().await;
    fake.add_token("token-a", FakeUser::service_account("ns", "sa"));
    fake.grant(Subject::User("u".to_string()), "ns", "get");
    let client = fake.client().await;

    fake.set_fault(Fault::Status500);
    let err = review_token(&client, &token_review("token-a", &[]))
        .await
        .expect_err("500");
    assert_eq!(api_code(&err), Some(500), "{err:?}");
    if let kube::Error::Api(status) = &err {
        assert_eq!(status.reason, "InternalError");
    }
    let err = review_access(&client, &sar(Some("u"), &[], "ns", "get"))
        .await
        .expect_err("500");
    assert_eq!(api_code(&err), Some(500), "{err:?}");

    // Only the SAR endpoint faulted.
    fake.set_fault(Fault::None);
    fake.set_fault_for(ReviewKind::SubjectAccessReview, Fault::Status500);
    let ok = review_token(&client, &token_review("token-a", &[]))
        .await
        .expect("TokenReview succeeds");
    assert_eq!(ok.authenticated, Some(true));
    let err = review_access(&client, &sar(Some("u"), &[], "ns", "get"))
        .await
        .expect_err("500");
    assert_eq!(api_code(&err), Some(500));

    fake.set_fault_for(ReviewKind::SubjectAccessReview, Fault::None);
    let ok = review_access(&client, &sar(Some("u"), &[], "ns", "get"))
        .await
        .expect("SAR succeeds");
    assert!(ok.allowed);

    assert_eq!(fake.token_reviews(), 2);
    assert_eq!(fake.subject_access_reviews(), 3);
}

#[tokio::test]
async fn close_connection_fault_is_an_error_not_a_hang() {
    let fake = FakeKube::start().await;
    fake.add_token("token-a", FakeUser::service_account("ns", "sa"));
    let client = fake.client().await;

    fake.set_fault_for(ReviewKind::TokenReview, Fault::CloseConnection);
    let err = review_token(&client, &token_review("token-a", &[]))
        .await
        .expect_err("connection closed");
    assert_eq!(api_code(&err), None, "not an API status: {err:?}");
    assert!(fake.token_reviews() >= 1);

    let err = review_token(&client, &token_review("token-a", &[]))
        .await
        .expect_err("connection closed again");
    assert_eq!(api_code(&err), None, "{err:?}");

    // The client recovers once the fault is lifted.
    fake.set_fault(Fault::None);
    let ok = review_token(&client, &token_review("token-a", &[]))
        .await
        .expect("TokenReview succeeds");
    assert_eq!(ok.authenticated, Some(true));
}

#[tokio::test]
async fn slow_fault_and_latency_are_observed() {
    let fake = FakeKube::start().await;
    fake.add_token("token-a", FakeUser::service_account("ns", "sa"));
    let client = fake.client().await;

    // Warm up the connection.
    review_token(&client, &token_review("token-a", &[]))
        .await
        .expect("TokenReview succeeds");

    fake.set_fault(Fault::Slow(Duration::from_millis(400)));
    let start = Instant::now();
    let ok = review_token(&client, &token_review("token-a", &[]))
        .await
        .expect("TokenReview succeeds");
    assert_eq!(ok.authenticated, Some(true));
    assert!(start.elapsed() >= Duration::from_millis(400));

    fake.set_fault(Fault::None);
    fake.set_latency(Duration::from_millis(300));
    let start = Instant::now();
    review_access(&client, &sar(Some("u"), &[], "ns", "get"))
        .await
        .expect("SAR succeeds");
    assert!(start.elapsed() >= Duration::from_millis(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters_and_max_in_flight() {
    let fake = FakeKube::start().await;
    fake.add_token("token-a", FakeUser::service_account("ns", "sa"));
    let client = fake.client().await;
    assert_eq!(fake.token_reviews(), 0);
    assert_eq!(fake.max_in_flight(), 0);

    fake.set_latency(Duration::from_millis(300));
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            review_token(&client, &token_review("token-a", &[])).await
        }));
    }
    for task in tasks {
        let status = task.await.expect("task").expect("TokenReview succeeds");
        assert_eq!(status.authenticated, Some(true));
    }
    assert_eq!(fake.token_reviews(), 5);
    assert_eq!(fake.subject_access_reviews(), 0);
    assert_eq!(fake.max_in_flight(), 5);
    assert_eq!(fake.received_token_reviews().len(), 5);

    fake.reset_counts();
    assert_eq!(fake.token_reviews(), 0);
    assert_eq!(fake.max_in_flight(), 0);
    assert!(fake.received_token_reviews().is_empty());

    fake.set_latency(Duration::ZERO);
    review_access(&client, &sar(Some("u"), &[], "ns", "get"))
        .await
        .expect("SAR succeeds");
    assert_eq!(fake.subject_access_reviews(), 1);
    assert_eq!(fake.max_in_flight(), 1);
}

#[tokio::test]
async fn wrong_client_token_is_unauthorized() {
    let fake = FakeKube::start().await;
    fake.add_token("token-a", FakeUser::service_account("ns", "sa"));
    let client = fake.client_with_token("not-the-right-token").await;

    let err = review_token(&client, &token_review("token-a", &[]))
        .await
        .expect_err("401");
    assert_eq!(api_code(&err), Some(401), "{err:?}");
    if let kube::Error::Api(status) = &err {
        assert_eq!(status.reason, "Unauthorized");
    }
    let err = review_access(&client, &sar(Some("u"), &[], "ns", "get"))
        .await
        .expect_err("401");
    assert_eq!(api_code(&err), Some(401));

    let version = tokio::time::timeout(TIMEOUT, fake.client().await.apiserver_version())
        .await
        .expect("no hang")
        .expect("version with the right token");
    assert_eq!(version.git_version, "v1.37.0");
    let err = tokio::time::timeout(TIMEOUT, client.apiserver_version())
        .await
        .expect("no hang")
        .expect_err("401");
    assert_eq!(api_code(&err), Some(401));

    // The kubeconfig file itself carries the right token.
    let text = std::fs::read_to_string(fake.kubeconfig_path()).expect("kubeconfig");
    assert!(text.contains(fake.client_token()));
    assert!(text.contains(&fake.url()));
}

#[tokio::test]
async fn fake_stops_on_drop() {
    let fake = FakeKube::start().await;
    let addr = fake.addr();
    drop(fake);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
