//! Self-tests of the fake Kubernetes API's object store, through the real `kube::Client`:
//! RBAC evaluation of stored objects, tokens bound to stored ServiceAccounts and pods, and
//! list/watch with the real apiserver's semantics (resourceVersion, paging, history replay,
//! bookmarks, 410 Gone, metadata-only).

mod support;

use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec, SubjectAccessReviewStatus,
};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::ResourceExt as _;
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

/// The next event of a watch stream, within [`TIMEOUT`].
async fn next<K, S>(stream: &mut S) -> WatchEvent<K>
where
    S: futures::Stream<Item = Result<WatchEvent<K>, kube::Error>> + Unpin,
{
    tokio::time::timeout(TIMEOUT, stream.next())
        .await
        .expect("a watch event within the timeout")
        .expect("the stream has not ended")
        .expect("the event parses")
}

fn kind_and_name<K: kube::Resource>(event: &WatchEvent<K>) -> (&'static str, String) {
    match event {
        WatchEvent::Added(o) => ("ADDED", o.name_any()),
        WatchEvent::Modified(o) => ("MODIFIED", o.name_any()),
        WatchEvent::Deleted(o) => ("DELETED", o.name_any()),
        WatchEvent::Bookmark(b) => ("BOOKMARK", b.metadata.resource_version.clone()),
        WatchEvent::Error(e) => ("ERROR", e.to_string()),
    }
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

#[tokio::test]
async fn list_pages_with_limit_and_continue_at_one_resource_version() {
    let fake = FakeKube::start().await;
    for i in 0..7 {
        fake.bind_traces(
            &format!("tenant-{i}"),
            "b",
            Subject::Group("g".into()),
            &["get"],
        );
    }
    let api = Api::<RoleBinding>::all(fake.client().await);
    let first = api
        .list(&ListParams::default().limit(3))
        .await
        .expect("list");
    let rv = first
        .metadata
        .resource_version
        .clone()
        .expect("a resourceVersion");
    assert_eq!(rv, fake.resource_version());
    assert_eq!(first.items.len(), 3);
    assert_eq!(first.metadata.remaining_item_count, Some(4));
    // A change between pages does not show up in them (a consistent snapshot, like etcd).
    fake.bind_traces("tenant-late", "b", Subject::Group("g".into()), &["get"]);
    let mut names: Vec<String> = first
        .items
        .iter()
        .map(|rb| rb.namespace().unwrap_or_default())
        .collect();
    let mut token = first.metadata.continue_.clone();
    while let Some(t) = token.filter(|t| !t.is_empty()) {
        let page = api
            .list(&ListParams::default().limit(3).continue_token(&t))
            .await
            .expect("next page");
        assert_eq!(page.metadata.resource_version.as_deref(), Some(rv.as_str()));
        names.extend(
            page.items
                .iter()
                .map(|rb| rb.namespace().unwrap_or_default()),
        );
        token = page.metadata.continue_.clone();
    }
    let expected: Vec<String> = (0..7).map(|i| format!("tenant-{i}")).collect();
    assert_eq!(names, expected);
    // A new list sees the late binding; namespaced lists see only their namespace.
    assert_eq!(
        api.list(&ListParams::default())
            .await
            .expect("list")
            .items
            .len(),
        8
    );
    let one = Api::<RoleBinding>::namespaced(fake.client().await, "tenant-3");
    assert_eq!(
        one.list(&ListParams::default())
            .await
            .expect("list")
            .items
            .len(),
        1
    );
    assert_eq!(fake.lists(), 5);
}

#[tokio::test]
async fn watch_replays_history_after_its_resource_version_then_live_events() {
    let fake = FakeKube::start().await;
    fake.bind_traces("tenant-a", "before", Subject::Group("g".into()), &["get"]);
    let rv = fake.resource_version();
    fake.bind_traces("tenant-a", "after", Subject::Group("g".into()), &["get"]);
    fake.delete(Kind::RoleBinding, Some("tenant-a"), "before");

    let api = Api::<RoleBinding>::all(fake.client().await);
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .expect("watch")
        .boxed();
    assert_eq!(
        kind_and_name(&next(&mut stream).await),
        ("ADDED", "after".into())
    );
    let deleted = next(&mut stream).await;
    assert_eq!(kind_and_name(&deleted), ("DELETED", "before".into()));
    if let WatchEvent::Deleted(rb) = &deleted {
        assert_eq!(
            rb.resource_version(),
            Some(fake.resource_version()),
            "a new RV"
        );
    }
    assert!(fake.wait_for_watches(Kind::RoleBinding, 1, TIMEOUT).await);

    let receipt = fake.bind_traces("tenant-b", "live", Subject::Group("g".into()), &["get"]);
    assert_eq!(receipt.watches(), 1);
    assert_eq!(
        kind_and_name(&next(&mut stream).await),
        ("ADDED", "live".into())
    );
    let sent = tokio::time::timeout(TIMEOUT, receipt.sent())
        .await
        .expect("sent");
    assert_eq!(fake.last_event_sent_at(Kind::RoleBinding), Some(sent));
    let mut changed = fake
        .get(Kind::RoleBinding, Some("tenant-b"), "live")
        .expect("stored");
    changed["subjects"] =
        json!([{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "h"}]);
    fake.apply(changed);
    assert_eq!(
        kind_and_name(&next(&mut stream).await),
        ("MODIFIED", "live".into())
    );
    // Events of other kinds do not reach this watch.
    fake.create_service_account("tenant-b", "sa");
    fake.delete(Kind::RoleBinding, Some("tenant-b"), "live");
    assert_eq!(
        kind_and_name(&next(&mut stream).await),
        ("DELETED", "live".into())
    );
}

#[tokio::test]
async fn watch_from_zero_starts_with_the_current_objects() {
    let fake = FakeKube::start().await;
    fake.create_service_account("a", "one");
    fake.create_service_account("b", "two");
    let api = Api::<ServiceAccount>::namespaced(fake.client().await, "b");
    let mut stream = api
        .watch(&WatchParams::default(), "0")
        .await
        .expect("watch")
        .boxed();
    assert_eq!(
        kind_and_name(&next(&mut stream).await),
        ("ADDED", "two".into())
    );
}
