//! Self-tests of list and watch on the fake Kubernetes API, through the real `kube::Client`:
//! one resourceVersion, paged lists, history replay, live events, bookmarks, streaming lists,
//! metadata-only answers, watch timeouts, delivery receipts.

mod support;

use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use kube::ResourceExt as _;
use serde_json::json;

use support::fake_kube::streams::{event_summary, next_event, stream_end, STREAM_TIMEOUT};
use support::fake_kube::{FakeKube, Kind, Subject};

fn bind(fake: &FakeKube, tenant: &str, name: &str) {
    fake.bind_traces(tenant, name, Subject::Group("g".into()), &["get"]);
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
        event_summary(&next_event(&mut stream).await),
        ("ADDED", "after".into())
    );
    let deleted = next_event(&mut stream).await;
    assert_eq!(event_summary(&deleted), ("DELETED", "before".into()));
    if let WatchEvent::Deleted(rb) = &deleted {
        assert_eq!(
            rb.resource_version(),
            Some(fake.resource_version()),
            "a new RV"
        );
    }
    assert!(
        fake.wait_for_watches(Kind::RoleBinding, 1, STREAM_TIMEOUT)
            .await
    );

    let receipt = fake.bind_traces("tenant-b", "live", Subject::Group("g".into()), &["get"]);
    assert_eq!(receipt.watches(), 1);
    assert_eq!(
        event_summary(&next_event(&mut stream).await),
        ("ADDED", "live".into())
    );
    let sent = tokio::time::timeout(STREAM_TIMEOUT, receipt.sent())
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
        event_summary(&next_event(&mut stream).await),
        ("MODIFIED", "live".into())
    );
    // Events of other kinds do not reach this watch.
    fake.create_service_account("tenant-b", "sa");
    fake.delete(Kind::RoleBinding, Some("tenant-b"), "live");
    assert_eq!(
        event_summary(&next_event(&mut stream).await),
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
        event_summary(&next_event(&mut stream).await),
        ("ADDED", "two".into())
    );
}

#[tokio::test]
async fn bookmarks_on_demand_and_at_an_interval_only_when_allowed() {
    let fake = FakeKube::start().await;
    let api = Api::<RoleBinding>::all(fake.client().await);
    let rv = fake.resource_version();
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .expect("watch")
        .boxed();
    let mut quiet = api
        .watch(&WatchParams::default().disable_bookmarks(), &rv)
        .await
        .expect("watch")
        .boxed();
    assert!(
        fake.wait_for_watches(Kind::RoleBinding, 2, STREAM_TIMEOUT)
            .await
    );
    bind(&fake, "t", "b");
    assert_eq!(event_summary(&next_event(&mut stream).await).0, "ADDED");
    assert_eq!(event_summary(&next_event(&mut quiet).await).0, "ADDED");

    fake.send_bookmarks();
    match next_event(&mut stream).await {
        WatchEvent::Bookmark(b) => {
            assert_eq!(b.metadata.resource_version, fake.resource_version());
            assert_eq!(b.types.kind, "RoleBinding");
            assert_eq!(b.types.api_version, "rbac.authorization.k8s.io/v1");
        }
        other => panic!("expected a bookmark, got {other:?}"),
    }
    fake.set_bookmark_interval(Some(Duration::from_millis(20)));
    for _ in 0..3 {
        assert_eq!(event_summary(&next_event(&mut stream).await).0, "BOOKMARK");
    }
    fake.set_bookmark_interval(None);
    // The watch without bookmarks saw none of them: its next event is the next change.
    bind(&fake, "t", "c");
    assert_eq!(
        event_summary(&next_event(&mut quiet).await),
        ("ADDED", "c".into())
    );
}

#[tokio::test]
async fn metadata_only_list_and_watch() {
    let fake = FakeKube::start().await;
    fake.create_namespace("tenant-a");
    let api = Api::<Namespace>::all(fake.client().await);
    let list = api
        .list_metadata(&ListParams::default())
        .await
        .expect("list_metadata");
    assert_eq!(list.items.len(), 1);
    let item = &list.items[0];
    assert_eq!(item.name_any(), "tenant-a");
    assert!(item.metadata.uid.is_some());
    let types = item.types.clone().expect("items carry their type");
    assert_eq!(
        (types.kind.as_str(), types.api_version.as_str()),
        ("PartialObjectMetadata", "meta.k8s.io/v1")
    );

    let rv = list.metadata.resource_version.expect("a resourceVersion");
    let mut stream = api
        .watch_metadata(&WatchParams::default(), &rv)
        .await
        .expect("watch")
        .boxed();
    assert!(
        fake.wait_for_watches(Kind::Namespace, 1, STREAM_TIMEOUT)
            .await
    );
    fake.create_namespace("tenant-b");
    match next_event(&mut stream).await {
        WatchEvent::Added(meta) => {
            assert_eq!(meta.name_any(), "tenant-b");
            assert_eq!(meta.types.expect("typed").kind, "PartialObjectMetadata");
        }
        other => panic!("expected ADDED, got {other:?}"),
    }
    fake.send_bookmarks();
    assert_eq!(event_summary(&next_event(&mut stream).await).0, "BOOKMARK");

    let requests = fake.received_watch_requests();
    assert_eq!(requests.len(), 2);
    assert!(requests
        .iter()
        .all(|r| r.metadata_only && r.kind == Kind::Namespace));
    assert_eq!(requests[0].path, "/api/v1/namespaces");
    assert!(!requests[0].watch);
    assert!(requests[1].watch);
    assert_eq!(requests[1].query.get("resourceVersion"), Some(&rv));
    assert_eq!(
        requests[1]
            .query
            .get("allowWatchBookmarks")
            .map(String::as_str),
        Some("true")
    );
}

#[tokio::test]
async fn streaming_list_ends_its_initial_events_with_a_bookmark() {
    let fake = FakeKube::start().await;
    bind(&fake, "t", "a");
    let api = Api::<RoleBinding>::all(fake.client().await);
    let wp = WatchParams::default().initial_events();
    let mut stream = api.watch(&wp, "0").await.expect("watch").boxed();
    assert_eq!(
        event_summary(&next_event(&mut stream).await),
        ("ADDED", "a".into())
    );
    match next_event(&mut stream).await {
        WatchEvent::Bookmark(b) => {
            assert!(b
                .metadata
                .annotations
                .contains_key("k8s.io/initial-events-end"));
            assert_eq!(b.metadata.resource_version, fake.resource_version());
        }
        other => panic!("expected the initial-events-end bookmark, got {other:?}"),
    }
}

#[tokio::test]
async fn watches_end_at_their_timeout() {
    let fake = FakeKube::start().await;
    let api = Api::<RoleBinding>::all(fake.client().await);
    let mut stream = api
        .watch(&WatchParams::default().timeout(1), &fake.resource_version())
        .await
        .expect("watch")
        .boxed();
    let started = std::time::Instant::now();
    stream_end(&mut stream).await;
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn receipt_completes_when_every_watch_has_written_the_event() {
    let fake = FakeKube::start().await;
    let api = Api::<RoleBinding>::all(fake.client().await);
    let rv = fake.resource_version();
    let mut one = api
        .watch(&WatchParams::default(), &rv)
        .await
        .expect("watch")
        .boxed();
    let mut two = api
        .watch(&WatchParams::default(), &rv)
        .await
        .expect("watch")
        .boxed();
    assert!(
        fake.wait_for_watches(Kind::RoleBinding, 2, STREAM_TIMEOUT)
            .await
    );
    let before = std::time::Instant::now();
    let receipt = fake.create_role_binding("t", "b", "Role", "r", &[]);
    assert_eq!(receipt.watches(), 2);
    let sent = tokio::time::timeout(STREAM_TIMEOUT, receipt.sent())
        .await
        .expect("delivered");
    assert!(sent >= before);
    assert_eq!(event_summary(&next_event(&mut one).await).0, "ADDED");
    assert_eq!(event_summary(&next_event(&mut two).await).0, "ADDED");
    // With no watch of its kind open, the receipt is complete at once.
    let receipt = fake.create_namespace("t");
    assert_eq!(receipt.watches(), 0);
    tokio::time::timeout(STREAM_TIMEOUT, receipt.sent())
        .await
        .expect("complete");
}
