//! Self-tests of the fake Kubernetes API's object store as the reviews see it, through the
//! real `kube::Client`: RBAC evaluation of stored Roles and bindings, and tokens bound to
//! stored ServiceAccounts and pods.

mod support;

use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec, SubjectAccessReviewStatus,
};
use kube::api::{Api, PostParams};
use serde_json::json;

use support::fake_kube::{traces_rule, EventType, FakeKube, FakeUser, Kind, Subject};

const TIMEOUT: Duration = Duration::from_secs(5);

/// What tenant-authz asks: may the ServiceAccount `ns/name` `verb` traces of `tenant`?
fn traces_sar(sa_ns: &str, sa: &str, tenant: &str, verb: &str) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(format!("system:serviceaccount:{sa_ns}:{sa}")),
            groups: Some(vec![
                "system:serviceaccounts".to_string(),
                format!("system:serviceaccounts:{sa_ns}"),
                "system:authenticated".to_string(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(tenant.to_string()),
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

async fn review(fake: &FakeKube, sar: &SubjectAccessReview) -> SubjectAccessReviewStatus {
    let api = Api::<SubjectAccessReview>::all(fake.client().await);
    let created = tokio::time::timeout(TIMEOUT, api.create(&PostParams::default(), sar))
        .await
        .expect("SubjectAccessReview must not hang")
        .expect("SubjectAccessReview succeeds");
    created.status.expect("answer has a status")
}

async fn authenticated(fake: &FakeKube, token: &str) -> (bool, Option<String>, serde_json::Value) {
    let api = Api::<TokenReview>::all(fake.client().await);
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: token.to_string(),
            audiences: None,
        },
        ..Default::default()
    };
    let created = api
        .create(&PostParams::default(), &review)
        .await
        .expect("TokenReview succeeds");
    let status = created.status.expect("answer has a status");
    let user = serde_json::to_value(&status.user).expect("user as JSON");
    (status.authenticated == Some(true), status.error, user)
}

#[tokio::test]
async fn role_binding_grants_and_its_deletion_revokes() {
    let fake = FakeKube::start().await;
    let sar = traces_sar("agents", "collector", "tenant-a", "create");
    assert!(!review(&fake, &sar).await.allowed);

    fake.bind_traces(
        "tenant-a",
        "collector-writes",
        Subject::service_account("agents", "collector"),
        &["create"],
    );
    let status = review(&fake, &sar).await;
    assert!(status.allowed);
    assert_eq!(
        status.reason.as_deref(),
        Some("RBAC: allowed by RoleBinding \"collector-writes/tenant-a\" of Role \"collector-writes\" to ServiceAccount \"collector/agents\"")
    );
    // Only that verb, only that tenant.
    assert!(
        !review(&fake, &traces_sar("agents", "collector", "tenant-a", "get"))
            .await
            .allowed
    );
    assert!(
        !review(
            &fake,
            &traces_sar("agents", "collector", "tenant-b", "create")
        )
        .await
        .allowed
    );

    let receipt = fake
        .delete(Kind::RoleBinding, Some("tenant-a"), "collector-writes")
        .expect("the binding existed");
    assert_eq!(receipt.event_type(), EventType::Deleted);
    let status = review(&fake, &sar).await;
    assert!(!status.allowed);
    assert_eq!(status.evaluation_error, None);
}

#[tokio::test]
async fn binding_to_missing_role_is_an_evaluation_error() {
    let fake = FakeKube::start().await;
    fake.create_role_binding(
        "tenant-a",
        "dangling",
        "Role",
        "gone",
        &[Subject::Group("system:serviceaccounts:agents".into())],
    );
    let status = review(&fake, &traces_sar("agents", "collector", "tenant-a", "get")).await;
    assert!(!status.allowed);
    assert_eq!(
        status.evaluation_error.as_deref(),
        Some("role.rbac.authorization.k8s.io \"gone\" not found")
    );
}

#[tokio::test]
async fn cluster_roles_and_groups_and_wildcards() {
    let fake = FakeKube::start().await;
    fake.create_cluster_role("traces-reader", vec![traces_rule(&["get"])]);
    fake.create_cluster_role_binding(
        "readers",
        "traces-reader",
        &[Subject::Group("system:serviceaccounts:observers".into())],
    );
    let status = review(
        &fake,
        &traces_sar("observers", "grafana", "any-tenant", "get"),
    )
    .await;
    assert!(status.allowed);
    assert_eq!(
        status.reason.as_deref(),
        Some("RBAC: allowed by ClusterRoleBinding \"readers\" of ClusterRole \"traces-reader\" to Group \"system:serviceaccounts:observers\"")
    );
    assert!(
        !review(&fake, &traces_sar("observers", "grafana", "t", "create"))
            .await
            .allowed
    );

    // A RoleBinding to a ClusterRole grants only in its namespace; `*` matches any verb.
    let mut rule = traces_rule(&["*"]);
    rule.api_groups = Some(vec!["*".into()]);
    fake.create_cluster_role("anything", vec![rule]);
    fake.create_role_binding(
        "tenant-b",
        "admin",
        "ClusterRole",
        "anything",
        &[Subject::User("system:serviceaccount:ops:admin".into())],
    );
    assert!(
        review(&fake, &traces_sar("ops", "admin", "tenant-b", "update"))
            .await
            .allowed
    );
    assert!(
        !review(&fake, &traces_sar("ops", "admin", "tenant-c", "update"))
            .await
            .allowed
    );
}

#[tokio::test]
async fn token_of_a_deleted_or_recreated_service_account_is_rejected() {
    let fake = FakeKube::start().await;
    let uid = fake.create_service_account("agents", "collector");
    fake.add_token("sa-token", FakeUser::service_account("agents", "collector"));
    let (ok, _, user) = authenticated(&fake, "sa-token").await;
    assert!(ok);
    assert_eq!(
        user["uid"],
        json!(uid),
        "user.uid is the ServiceAccount's uid"
    );

    fake.delete(Kind::ServiceAccount, Some("agents"), "collector");
    let (ok, error, _) = authenticated(&fake, "sa-token").await;
    assert!(!ok);
    assert_eq!(
        error.as_deref(),
        Some("[invalid bearer token, service account token has been invalidated]")
    );
    // Re-created: a new uid, the old token stays invalid.
    let new_uid = fake.create_service_account("agents", "collector");
    assert_ne!(new_uid, uid);
    assert!(!authenticated(&fake, "sa-token").await.0);

    // A token of a ServiceAccount the store never had is not bound to anything.
    fake.add_token("free", FakeUser::service_account("other", "sa"));
    assert!(authenticated(&fake, "free").await.0);
}

#[tokio::test]
async fn pod_bound_token_is_rejected_once_its_pod_is_deleted() {
    let fake = FakeKube::start().await;
    fake.create_service_account("agents", "collector");
    let pod_uid = fake.create_pod_for("agents", "collector-0", "collector");
    fake.add_token(
        "pod-token",
        FakeUser::service_account("agents", "collector").with_pod("collector-0"),
    );
    let (ok, _, user) = authenticated(&fake, "pod-token").await;
    assert!(ok);
    assert_eq!(
        user["extra"]["authentication.kubernetes.io/pod-name"],
        json!(["collector-0"])
    );
    assert_eq!(
        user["extra"]["authentication.kubernetes.io/pod-uid"],
        json!([pod_uid])
    );

    fake.delete(Kind::Pod, Some("agents"), "collector-0");
    assert!(!authenticated(&fake, "pod-token").await.0);
}

#[tokio::test]
async fn namespace_deletion_deletes_its_contents() {
    let fake = FakeKube::start().await;
    fake.create_namespace("tenant-a");
    fake.bind_traces("tenant-a", "b", Subject::Group("g".into()), &["get"]);
    fake.create_service_account("tenant-a", "sa");
    fake.delete(Kind::Namespace, None, "tenant-a")
        .expect("it existed");
    for kind in [Kind::Role, Kind::RoleBinding, Kind::ServiceAccount] {
        assert_eq!(
            fake.get(kind, Some("tenant-a"), "b")
                .or(fake.get(kind, Some("tenant-a"), "sa")),
            None
        );
    }
}
