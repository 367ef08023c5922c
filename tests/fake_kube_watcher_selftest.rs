//! Self-tests of the fake Kubernetes API with kube-runtime's `watcher` and `metadata_watcher`,
//! the way tenant-authz watches: paged initial list, watch from the list's resourceVersion,
//! reconnection after a cut, and a re-list after 410 Gone.

mod support;

use futures::{Stream, StreamExt as _};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::{self, Event};
use kube::ResourceExt as _;

use support::fake_kube::streams::STREAM_TIMEOUT;
use support::fake_kube::{FakeKube, Fault, Kind, Subject};

fn bind(fake: &FakeKube, tenant: &str, name: &str) {
    fake.bind_traces(tenant, name, Subject::Group("g".into()), &["get"]);
}

/// The next item of a watcher stream, within [`STREAM_TIMEOUT`].
async fn next<K, S>(stream: &mut S) -> watcher::Result<Event<K>>
where
    S: Stream<Item = watcher::Result<Event<K>>> + Unpin,
{
    tokio::time::timeout(STREAM_TIMEOUT, stream.next())
        .await
        .expect("a watcher event within the timeout")
        .expect("a watcher stream does not end")
}

/// Reads an initial list (`Init`, `InitApply`..., `InitDone`), skipping errors before it;
/// returns the names listed.
async fn initial_list<K: kube::Resource, S>(stream: &mut S) -> Vec<String>
where
    S: Stream<Item = watcher::Result<Event<K>>> + Unpin,
{
    let mut names = Vec::new();
    loop {
        match next(stream).await {
            Ok(Event::Init) => names.clear(),
            Ok(Event::InitApply(o)) => names.push(o.name_any()),
            Ok(Event::InitDone) => return names,
            Ok(Event::Apply(_) | Event::Delete(_)) => panic!("a live event before InitDone"),
            Err(_) => {}
        }
    }
}

#[tokio::test]
async fn watcher_lists_in_pages_then_follows_live_events() {
    let fake = FakeKube::start().await;
    for i in 0..5 {
        bind(&fake, &format!("t{i}"), "b");
    }
    let api = Api::<RoleBinding>::all(fake.client().await);
    let mut stream = watcher::watcher(api, watcher::Config::default().page_size(2)).boxed();
    assert_eq!(initial_list(&mut stream).await.len(), 5);
    let requests = fake.received_watch_requests();
    let pages: Vec<_> = requests.iter().filter(|r| !r.watch).collect();
    assert_eq!(pages.len(), 3, "5 objects in pages of 2");
    assert_eq!(pages[0].query.get("limit").map(String::as_str), Some("2"));
    assert!(pages[1].query.contains_key("continue"));

    bind(&fake, "t9", "live");
    match next(&mut stream).await {
        Ok(Event::Apply(rb)) => assert_eq!(rb.name_any(), "live"),
        other => panic!("expected Apply, got {other:?}"),
    }
    let watch = fake
        .received_watch_requests()
        .into_iter()
        .find(|r| r.watch)
        .expect("a watch request");
    assert_eq!(
        watch.path,
        "/apis/rbac.authorization.k8s.io/v1/rolebindings"
    );
    assert_eq!(
        watch.query.get("allowWatchBookmarks").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        watch.query.get("resourceVersion").map(String::as_str),
        Some("11")
    );

    fake.delete(Kind::RoleBinding, Some("t9"), "live");
    assert!(matches!(next(&mut stream).await, Ok(Event::Delete(rb)) if rb.name_any() == "live"));

    // A cut watch is resumed from the last resourceVersion: no re-list, nothing missed.
    let lists = fake.lists();
    fake.break_watches();
    assert!(
        fake.wait_for_watches(Kind::RoleBinding, 0, STREAM_TIMEOUT)
            .await
    );
    bind(&fake, "t9", "after-cut");
    loop {
        match next(&mut stream).await {
            Ok(Event::Apply(rb)) => {
                assert_eq!(rb.name_any(), "after-cut");
                break;
            }
            Err(_) => {}
            other => panic!("expected Apply, got {other:?}"),
        }
    }
    assert_eq!(fake.lists(), lists);
}

#[tokio::test]
async fn watcher_relists_after_410_gone() {
    let fake = FakeKube::start().await;
    bind(&fake, "t", "a");
    let api = Api::<RoleBinding>::all(fake.client().await);
    let mut stream = watcher::watcher(api, watcher::Config::default()).boxed();
    assert_eq!(initial_list(&mut stream).await, vec!["a".to_string()]);

    // The watch goes down; while it is, things change and the history is compacted.
    fake.set_watch_fault(Fault::Status500);
    assert!(next(&mut stream).await.is_err());
    bind(&fake, "t2", "b");
    fake.compact();
    fake.set_watch_fault(Fault::None);

    // The watch from the old resourceVersion gets 410; the watcher lists again.
    let lists = fake.lists();
    let mut names = initial_list(&mut stream).await;
    names.sort();
    assert_eq!(names.len(), 2);
    assert!(fake.lists() > lists);
}

#[tokio::test]
async fn metadata_only_watcher_gets_partial_objects() {
    let fake = FakeKube::start().await;
    fake.create_service_account("agents", "collector");
    // kube 5's way (its `metadata_watcher` is deprecated): an Api of PartialObjectMeta.
    let api = Api::<PartialObjectMeta<ServiceAccount>>::all(fake.client().await);
    let mut stream = watcher::watcher(api, watcher::Config::default()).boxed();
    assert_eq!(
        initial_list(&mut stream).await,
        vec!["collector".to_string()]
    );
    let uid = fake.create_service_account("agents", "other");
    match next(&mut stream).await {
        Ok(Event::Apply(meta)) => assert_eq!(meta.metadata.uid, Some(uid)),
        other => panic!("expected Apply, got {other:?}"),
    }
    assert!(fake
        .received_watch_requests()
        .iter()
        .all(|r| r.metadata_only && r.path == "/api/v1/serviceaccounts"));
    // Deleted and re-created: a delete, then an apply with a new uid.
    fake.delete(Kind::ServiceAccount, Some("agents"), "other");
    assert!(matches!(next(&mut stream).await, Ok(Event::Delete(_))));
}
