use serde_json::{json, Value};

use super::*;

const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXBheWxvYWQtb2YtdGhlLXRva2Vu.c2lnbmF0dXJl";

fn token() -> BearerToken {
    BearerToken::from_secret(TOKEN.to_string())
}

fn tempo() -> Vec<String> {
    vec!["tempo".to_string()]
}

fn token_review(status: Value) -> Vec<u8> {
    json!({
        "kind": "TokenReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": {"token": TOKEN, "audiences": ["tempo"]},
        "status": status,
    })
    .to_string()
    .into_bytes()
}

fn sa_user() -> Value {
    json!({
        "username": "system:serviceaccount:showcase:grafana",
        "uid": "6f1c0b6e-1f7d-4c52-9f7e-2f0c1f0e9a11",
        "groups": ["system:serviceaccounts", "system:serviceaccounts:showcase", "system:authenticated"],
        "extra": {"authentication.kubernetes.io/pod-name": ["grafana-0"]},
    })
}

fn sar(status: Value) -> Vec<u8> {
    json!({
        "kind": "SubjectAccessReview",
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": {"user": "u", "resourceAttributes": {"namespace": "showcase", "verb": "get"}},
        "status": status,
    })
    .to_string()
    .into_bytes()
}

fn assert_no_token(text: &str) {
    assert!(!token().is_quoted_in(text), "quotes the token: {text}");
}

#[test]
fn authenticated_answer_with_a_requested_audience_is_an_identity() {
    let body =
        token_review(json!({"authenticated": true, "user": sa_user(), "audiences": ["tempo"]}));
    match token_review_answer(201, &body, &token(), &tempo()).unwrap() {
        Authentication::Authenticated {
            identity,
            audiences,
        } => {
            assert_eq!(identity.username, "system:serviceaccount:showcase:grafana");
            assert_eq!(identity.groups.len(), 3);
            assert_eq!(audiences, tempo());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn answer_for_another_audience_is_not_authenticated() {
    for answered in [
        json!(["vault"]),
        json!(["https://kubernetes.default.svc.cluster.local"]),
        json!([]),
        Value::Null,
    ] {
        let body =
            token_review(json!({"authenticated": true, "user": sa_user(), "audiences": answered}));
        match token_review_answer(201, &body, &token(), &tempo()).unwrap() {
            Authentication::Unauthenticated { detail: Some(d) } => {
                assert!(d.contains("(tempo)"), "names the audiences expected: {d}");
                assert_no_token(&d);
            }
            other => panic!("audiences {answered}: {other:?}"),
        }
    }
}

#[test]
fn without_requested_audiences_the_api_servers_own_is_accepted() {
    let body = token_review(json!({"authenticated": true, "user": sa_user(),
        "audiences": ["https://kubernetes.default.svc.cluster.local"]}));
    assert!(matches!(
        token_review_answer(201, &body, &token(), &[]).unwrap(),
        Authentication::Authenticated { .. }
    ));
}

#[test]
fn authenticated_without_a_user_name_is_not_an_identity() {
    for user in [
        json!({}),
        json!({"username": ""}),
        json!({"username": "  "}),
        Value::Null,
    ] {
        let body =
            token_review(json!({"authenticated": true, "user": user, "audiences": ["tempo"]}));
        let err = token_review_answer(201, &body, &token(), &tempo()).unwrap_err();
        assert_eq!(err.outcome(), "invalid_response", "{user}");
    }
}

#[test]
fn oversized_users_are_refused() {
    let many: Vec<String> = (0..MAX_USER_ITEMS + 1).map(|i| format!("g{i}")).collect();
    let big = "x".repeat(MAX_USER_BYTES);
    let mut extra = serde_json::Map::new();
    for i in 0..MAX_USER_ITEMS + 1 {
        extra.insert(format!("k{i}"), json!(["v"]));
    }
    for user in [
        json!({"username": "u", "groups": many}),
        json!({"username": "u", "groups": [big]}),
        json!({"username": "u", "extra": extra}),
        json!({"username": big}),
    ] {
        let body =
            token_review(json!({"authenticated": true, "user": user, "audiences": ["tempo"]}));
        let err = token_review_answer(201, &body, &token(), &tempo()).unwrap_err();
        assert_eq!(err.outcome(), "invalid_response");
    }
}

#[test]
fn a_user_that_quotes_the_token_or_has_control_characters_is_refused() {
    for user in [
        json!({"username": format!("x{TOKEN}")}),
        json!({"username": format!("system:serviceaccount:x:{}", &TOKEN[20..32])}),
        json!({"username": "u\nlevel=INFO forged"}),
        json!({"username": "system:serviceaccount:showcase:\u{202E}anafarg"}),
        json!({"username": "admin\u{200B}"}),
        json!({"username": "u", "groups": ["a\u{7}"]}),
    ] {
        let body =
            token_review(json!({"authenticated": true, "user": user, "audiences": ["tempo"]}));
        let err = token_review_answer(201, &body, &token(), &tempo()).unwrap_err();
        assert_eq!(err.outcome(), "invalid_response", "{user}");
        assert_no_token(&err.to_string());
    }
}

#[test]
fn groups_and_extra_may_share_text_with_the_token() {
    // They never leave tenant-authz except in SARs to the API server; an opaque token that
    // happens to contain the pod name is still a valid identity.
    let user = json!({"username": "system:serviceaccount:showcase:otel-collector",
        "groups": [&TOKEN[20..40]], "extra": {"authentication.kubernetes.io/pod-name": [&TOKEN[5..30]]}});
    let body = token_review(json!({"authenticated": true, "user": user, "audiences": ["tempo"]}));
    assert!(token_review_answer(201, &body, &token(), &tempo()).is_ok());
}

#[test]
fn unauthenticated_error_is_kept_unless_it_quotes_the_token() {
    let body =
        token_review(json!({"user": {}, "error": "[invalid bearer token, token lookup failed]"}));
    assert_eq!(
        token_review_answer(201, &body, &token(), &tempo()).unwrap(),
        Authentication::Unauthenticated {
            detail: Some("[invalid bearer token, token lookup failed]".into())
        }
    );
    let body = token_review(json!({"user": {}, "error": format!("bad token {TOKEN}")}));
    match token_review_answer(201, &body, &token(), &tempo()).unwrap() {
        Authentication::Unauthenticated { detail: Some(d) } => {
            assert_no_token(&d);
            assert!(d.contains("withheld"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unusable_token_review_answers_fail_closed() {
    let cases: Vec<(u16, Vec<u8>)> = vec![
        (201, b"not json".to_vec()),
        (201, b"{}".to_vec()),
        (
            201,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success"})
                .to_string()
                .into_bytes(),
        ),
        (
            201,
            json!({"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1beta1",
                "status": {"authenticated": true, "user": sa_user(), "audiences": ["tempo"]}})
            .to_string()
            .into_bytes(),
        ),
        (
            201,
            token_review(json!({"authenticated": "true", "user": sa_user()})),
        ),
        (201, token_review(json!({"authenticated": true, "user": 7}))),
        (
            201,
            format!("{{\"status\": {{\"authenticated\": true, \"error\": \"{TOKEN}\"").into_bytes(),
        ),
        (201, vec![b' '; MAX_ANSWER_BYTES + 1]),
        (204, Vec::new()),
    ];
    for (status, body) in cases {
        let err = token_review_answer(status, &body, &token(), &tempo()).unwrap_err();
        assert_no_token(&err.to_string());
    }
}

#[test]
fn error_statuses_are_api_errors_with_scrubbed_messages() {
    let status_body = |code: u16| {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": format!("token {TOKEN} is malformed"), "code": code})
        .to_string()
        .into_bytes()
    };
    for (code, body) in [
        (400, status_body(400)),
        (500, status_body(500)),
        (
            502,
            format!("<html>bad gateway for {TOKEN}</html>").into_bytes(),
        ),
        (
            302,
            format!("see https://elsewhere/?t={TOKEN}").into_bytes(),
        ),
        (503, Vec::new()),
    ] {
        let err = token_review_answer(code, &body, &token(), &tempo()).unwrap_err();
        match &err {
            ReviewError::Api { code: c, .. } => assert_eq!(*c, code),
            other => panic!("{other:?}"),
        }
        assert_no_token(&err.to_string());
    }
    let err = api_error(
        ReviewKind::Authorize,
        500,
        json!({"kind": "Status", "message": "etcd is down"})
            .to_string()
            .as_bytes(),
        None,
    );
    assert!(err.to_string().contains("etcd is down"), "{err}");
}

#[test]
fn sar_allowed_and_denied_together_is_never_an_allow() {
    let err = sar_answer(
        201,
        &sar(json!({"allowed": true, "denied": true, "reason": "both"})),
    )
    .unwrap_err();
    assert_eq!(err.outcome(), "invalid_response");
    assert!(err.to_string().contains("both true"), "{err}");
}

#[test]
fn sar_denied_is_a_denial_with_the_reason() {
    assert_eq!(
        sar_answer(
            201,
            &sar(json!({"allowed": false, "denied": true, "reason": "policy says no"}))
        )
        .unwrap(),
        Verdict::Denied {
            detail: Some("policy says no".into())
        }
    );
}

#[test]
fn sar_evaluation_error_without_allow_is_a_denial_that_carries_it() {
    let body = sar(json!({"allowed": false,
        "evaluationError": "role.rbac.authorization.k8s.io \"tempo-reader\" not found"}));
    match sar_answer(201, &body).unwrap() {
        Verdict::Denied { detail: Some(d) } => {
            assert!(d.starts_with("evaluation error: "), "{d}");
            assert!(d.contains("tempo-reader"), "{d}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn sar_allow_stands_beside_an_evaluation_error() {
    let body = sar(json!({"allowed": true, "evaluationError": "one role missing"}));
    assert_eq!(sar_answer(201, &body).unwrap(), Verdict::Allowed);
}

#[test]
fn sar_with_neither_field_true_is_a_denial() {
    assert_eq!(
        sar_answer(201, &sar(json!({"allowed": false}))).unwrap(),
        Verdict::Denied { detail: None }
    );
}

#[test]
fn sar_without_allowed_or_status_or_of_the_wrong_kind_fails_closed() {
    for body in [
        sar(json!({})),
        sar(json!({"denied": false})),
        sar(json!({"allowed": "true"})),
        json!({"status": {"allowed": true}})
            .to_string()
            .into_bytes(),
        json!({"kind": "SubjectAccessReview", "status": {"allowed": true}})
            .to_string()
            .into_bytes(),
        json!({"kind": "SubjectAccessReview", "apiVersion": "authorization.k8s.io/v1"})
            .to_string()
            .into_bytes(),
        json!({"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
            "status": {"allowed": true}})
        .to_string()
        .into_bytes(),
        b"allowed".to_vec(),
    ] {
        let err = sar_answer(201, &body).unwrap_err();
        assert_eq!(
            err.outcome(),
            "invalid_response",
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
    assert_eq!(
        sar_answer(200, &sar(json!({"allowed": true}))).unwrap(),
        Verdict::Allowed
    );
    assert_eq!(
        sar_answer(301, &sar(json!({"allowed": true})))
            .unwrap_err()
            .outcome(),
        "api_error"
    );
}

#[test]
fn unknown_fields_are_ignored() {
    let body = sar(json!({"allowed": true, "futureField": {"x": 1}}));
    assert_eq!(sar_answer(201, &body).unwrap(), Verdict::Allowed);
    let body = token_review(
        json!({"authenticated": true, "user": sa_user(), "audiences": ["tempo"], "new": 1}),
    );
    assert!(token_review_answer(201, &body, &token(), &tempo()).is_ok());
    // A kind that quotes the token is reported without it.
    let body = json!({"kind": TOKEN, "apiVersion": "v1", "status": {"authenticated": true}})
        .to_string()
        .into_bytes();
    let err = token_review_answer(201, &body, &token(), &tempo()).unwrap_err();
    assert_no_token(&err.to_string());
}

#[test]
fn safe_text_is_bounded_and_has_no_control_characters() {
    let long = "é".repeat(MAX_TEXT_CHARS * 3);
    let safe = SafeText::from(&long, None);
    assert_eq!(safe.chars().count(), MAX_TEXT_CHARS + 1);
    assert_eq!(SafeText::from("a\r\nb\u{1b}[31m", None), "a  b [31m");
}

#[test]
fn a_403_from_the_api_names_the_resource_the_cluster_role_must_allow() {
    let forbidden = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": "tokenreviews.authentication.k8s.io is forbidden", "reason": "Forbidden", "code": 403})
    .to_string();
    for (kind, resource) in [
        (ReviewKind::Authenticate, "tokenreviews?"),
        (ReviewKind::Authorize, "subjectaccessreviews?"),
    ] {
        let e = api_error(kind, 403, forbidden.as_bytes(), Some(&token()));
        assert!(
            e.to_string()
                .contains(&format!("ClusterRole allow create on {resource}")),
            "{e}"
        );
    }
}

#[test]
fn only_the_service_account_authenticators_shapes_are_revocable_by_a_watch() {
    use crate::review::kube::{revocable, POD_UID_EXTRA};
    let user = |name: &str, uids: Option<Vec<&str>>| Identity {
        username: name.into(),
        extra: uids
            .map(|u| {
                [(
                    POD_UID_EXTRA.to_string(),
                    u.into_iter().map(String::from).collect(),
                )]
                .into()
            })
            .unwrap_or_default(),
        ..Default::default()
    };
    let sa = "system:serviceaccount:showcase:grafana";
    let r = |i: &Identity| {
        let r = revocable(i);
        (r.by_account, r.bound_to.map(str::to_string))
    };
    assert_eq!(r(&user(sa, None)), (true, None));
    assert_eq!(
        r(&user(sa, Some(vec!["uid-1"]))),
        (true, Some("uid-1".into()))
    );
    for name in [
        "system:serviceaccount:",
        "system:serviceaccount:showcase",
        "system:serviceaccount::grafana",
        "system:serviceaccount:showcase:",
        "system:serviceaccount:showcase:grafana:x",
        "alice@example.com",
    ] {
        assert_eq!(r(&user(name, None)), (false, None), "{name}");
    }
    // A pod-bound token whose pod no watch can name: revocable by nothing, so short TTLs.
    for uids in [vec![], vec![""], vec!["uid-1", "uid-2"]] {
        assert_eq!(r(&user(sa, Some(uids.clone()))), (false, None), "{uids:?}");
    }
}
