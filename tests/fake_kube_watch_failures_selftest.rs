//! Self-tests of the failures of list and watch on the fake Kubernetes API, through the real
//! `kube::Client`: 410 Gone after compaction or past the bounded history, cut watches, faults,
//! and the client token.

mod support;

use futures::StreamExt as _;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, ListParams, VersionMatch, WatchEvent, WatchParams};
use serde_json::json;

use support::fake_kube::streams::{event_summary, next_event, stream_end, STREAM_TIMEOUT};
use support::fake_kube::{FakeKube, Fault, Kind, Subject};

fn bind(fake: &FakeKube, tenant: &str, name: &str) {
    fake.bind_traces(tenant, name, Subject::Group("g".into()), &["get"]);
}

#[tokio::test]
async fn watch_from_a_compacted_resource_version_gets_410_and_ends() {
    let fake = FakeKube::start().await;
    bind(&fake, "t", "a");
    let old = fake.resource_version();
    bind(&fake, "t", "b");
    fake.compact();
    let api = Api::<RoleBinding>::all(fake.client().await);
    let mut stream = api
        .watch(&WatchParams::default(), &old)
        .await
        .expect("a 200")
        .boxed();
    match next_event(&mut stream).await {
        WatchEvent::Error(status) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
            let message = format!(
                "too old resource version: {old} ({})",
                fake.resource_version()
            );
            assert_eq!(status.message, message);
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    stream_end(&mut stream).await;
    assert_eq!(fake.open_watches(), 0);

    // From the compaction point on, watching works again.
    let now = fake.resource_version();
    let mut stream = api
        .watch(&WatchParams::default(), &now)
        .await
        .expect("watch")
        .boxed();
    bind(&fake, "t", "c");
    assert_eq!(
        event_summary(&next_event(&mut stream).await),
        ("ADDED", "c".into())
    );

    // A list NotOlderThan a compacted RV is fine; an Exact one is Gone.
    let lp = ListParams::default()
        .at(&old)
        .matching(VersionMatch::NotOlderThan);
    assert_eq!(api.list(&lp).await.expect("list").items.len(), 3);
    let lp = ListParams::default().at(&old).matching(VersionMatch::Exact);
    match api.list(&lp).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected 410, got {other:?}"),
    }
}

#[tokio::test]
async fn continue_token_from_before_a_compaction_is_gone() {
    let fake = FakeKube::start().await;
    for i in 0..3 {
        bind(&fake, &format!("t{i}"), "b");
    }
    let api = Api::<RoleBinding>::all(fake.client().await);
    let first = api
        .list(&ListParams::default().limit(1))
        .await
        .expect("list");
    let token = first.metadata.continue_.expect("more pages");
    fake.compact();
    match api
        .list(&ListParams::default().limit(1).continue_token(&token))
        .await
    {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 410),
        other => panic!("expected 410, got {other:?}"),
    }
}

#[tokio::test]
async fn history_is_bounded() {
    let fake = FakeKube::start().await;
    fake.set_history_limit(2);
    let before = fake.resource_version();
    for i in 0..4 {
        bind(&fake, "t", &format!("b{i}"));
    }
    let api = Api::<RoleBinding>::all(fake.client().await);
    let mut stream = api
        .watch(&WatchParams::default(), &before)
        .await
        .expect("watch")
        .boxed();
    assert!(matches!(next_event(&mut stream).await, WatchEvent::Error(s) if s.code == 410));
}

#[tokio::test]
async fn broken_watches_and_watch_faults() {
    let fake = FakeKube::start().await;
    let api = Api::<RoleBinding>::all(fake.client().await);
    let rv = fake.resource_version();
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .expect("watch")
        .boxed();
    assert!(
        fake.wait_for_watches(Kind::RoleBinding, 1, STREAM_TIMEOUT)
            .await
    );
    fake.break_watches();
    stream_end(&mut stream).await;
    assert_eq!(fake.open_watches(), 0);

    // Down: every list and watch fails until the fault is cleared; open watches are cut.
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .expect("watch")
        .boxed();
    assert!(
        fake.wait_for_watches(Kind::RoleBinding, 1, STREAM_TIMEOUT)
            .await
    );
    fake.set_watch_fault(Fault::Status500);
    stream_end(&mut stream).await;
    match api.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 500),
        other => panic!("expected 500, got {other:?}"),
    }
    assert!(api.watch(&WatchParams::default(), &rv).await.is_err());
    fake.set_watch_fault(Fault::CloseConnection);
    assert!(api.list(&ListParams::default()).await.is_err());
    fake.set_watch_fault(Fault::None);
    assert!(api.list(&ListParams::default()).await.is_ok());
    assert_eq!(fake.lists(), 3);
    assert_eq!(fake.watches_opened(), 3);
}

#[tokio::test]
async fn list_and_watch_need_the_client_token() {
    let fake = FakeKube::start().await;
    let (code, _) = fake
        .raw_request(
            "GET",
            "/apis/rbac.authorization.k8s.io/v1/rolebindings",
            None,
            b"",
        )
        .await;
    assert_eq!(code, 401);
    let (code, body) = fake
        .raw_request(
            "GET",
            "/apis/rbac.authorization.k8s.io/v1/rolebindings?limit=500",
            Some(fake.client_token()),
            b"",
        )
        .await;
    assert_eq!(code, 200);
    let list: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(list["kind"], "RoleBindingList");
    assert_eq!(
        list["metadata"]["resourceVersion"],
        json!(fake.resource_version())
    );
    assert_eq!(list["items"], json!([]));
}
