//! Revocation by watch: changes to what decides a SubjectAccessReview or a TokenReview become
//! cache invalidations as they happen, instead of when a TTL runs out.
//!
//! One metadata-only watcher (kube-runtime: list then watch, bookmarks) per resource, started
//! afresh with a backoff after any error (`410 Gone` included). What a change drops (see [`Watched::effect`]):
//!
//! | change | dropped |
//! |---|---|
//! | a Role or RoleBinding in namespace N, any change | every decision of tenant N, allows and denials |
//! | a ClusterRole or ClusterRoleBinding, any change | every decision (it can grant in any namespace; nothing finer is provably right) |
//! | a Namespace deleted | every decision of that tenant |
//! | a ServiceAccount deleted, or created with a new UID | its identities and all its decisions |
//! | a Pod deleted (`kubernetes.watch_pods`) | the identities and decisions of the tokens bound to it |
//!
//! After a relist (start-up, `410 Gone`, reconnect after an error) the objects are compared
//! with the ones seen before, so a change missed while the watch was down is applied too.
//! Until every watch has synced, and whenever one is down, the engine keeps the short TTLs
//! ([`WatchHealth`]).

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::watcher;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::admin::Readiness;
use crate::authorizer::{Invalidate, Invalidation, WatchHealth};
use crate::metrics::Metrics;
use crate::model::Tenant;

/// A watched resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Watched {
    Roles,
    RoleBindings,
    ClusterRoles,
    ClusterRoleBindings,
    Namespaces,
    ServiceAccounts,
    Pods,
}

impl Watched {
    /// Bounded metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Watched::Roles => "roles",
            Watched::RoleBindings => "rolebindings",
            Watched::ClusterRoles => "clusterroles",
            Watched::ClusterRoleBindings => "clusterrolebindings",
            Watched::Namespaces => "namespaces",
            Watched::ServiceAccounts => "serviceaccounts",
            Watched::Pods => "pods",
        }
    }

    /// The resources watched with these settings.
    pub fn all(pods: bool) -> Vec<Watched> {
        let mut all = vec![
            Watched::Roles,
            Watched::RoleBindings,
            Watched::ClusterRoles,
            Watched::ClusterRoleBindings,
            Watched::Namespaces,
            Watched::ServiceAccounts,
        ];
        if pods {
            all.push(Watched::Pods);
        }
        all
    }

    /// What a change of the object `key` drops: `before` and `after` are its UIDs (`None`: it
    /// did not exist / no longer exists).
    pub fn effect(self, key: &ObjectKey, before: Option<&str>, after: Option<&str>) -> Effect {
        let tenant = |ns: &str| Tenant::parse(ns).map_or(Effect::Nothing, Effect::Tenant);
        match self {
            Watched::Roles | Watched::RoleBindings => tenant(&key.namespace),
            Watched::ClusterRoles | Watched::ClusterRoleBindings => Effect::AllDecisions,
            Watched::Namespaces if after.is_none() => tenant(&key.name),
            Watched::Namespaces => Effect::Nothing,
            // Deleted, created, or re-created under the same name (a new UID): the tokens of
            // the account that was are no longer valid.
            Watched::ServiceAccounts if before != after => Effect::User(format!(
                "system:serviceaccount:{}:{}",
                key.namespace, key.name
            )),
            Watched::ServiceAccounts => Effect::Nothing,
            Watched::Pods => match (before, after) {
                (Some(uid), None) => Effect::Pod(uid.to_string()),
                (Some(old), Some(new)) if old != new => Effect::Pod(old.to_string()),
                _ => Effect::Nothing,
            },
        }
    }
}

/// Namespace (empty when cluster-scoped) and name of a watched object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

/// What one change drops from the caches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    Nothing,
    Tenant(Tenant),
    AllDecisions,
    User(String),
    Pod(String),
}

/// Adds what `effect` drops to `batch`; the scope's metric label, `None` for nothing.
fn add(batch: &mut Invalidation, effect: Effect) -> Option<&'static str> {
    Some(match effect {
        Effect::Nothing => return None,
        Effect::Tenant(t) => {
            batch.tenants.insert(t);
            "tenant"
        }
        Effect::AllDecisions => {
            batch.all_decisions = true;
            "all_decisions"
        }
        Effect::User(u) => {
            batch.users.insert(u);
            "user"
        }
        Effect::Pod(uid) => {
            batch.pods.insert(uid);
            "pod"
        }
    })
}

/// What the watches know: per object its `(resourceVersion, uid)`.
type Seen = HashMap<ObjectKey, (String, String)>;

/// How long after a change its invalidation is applied a second time. The watch event comes
/// from the API server's watch cache; the SAR that follows may be answered by an API server
/// (or from an authorizer cache) that has not applied the change yet, and would put the old
/// answer back for the long TTL. A second pass after this long drops such an answer.
pub const SECOND_PASS: Duration = Duration::from_secs(3);

/// The watches, shared by their tasks: health per resource, the invalidation target, and the
/// changes waiting to be applied.
struct Shared {
    target: Arc<dyn Invalidate>,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    up: Mutex<HashMap<Watched, bool>>,
    /// What each watch had seen when its task ended (a panic), for its restart.
    seen: Mutex<HashMap<Watched, Seen>>,
    pending: Mutex<Invalidation>,
    wake: Notify,
    /// False from a flusher panic until a restarted flusher has applied what was queued:
    /// meanwhile no watch counts as up, so the short TTLs apply.
    flusher_ok: std::sync::atomic::AtomicBool,
}

/// Puts a batch back in the queue if the flusher panics while applying it, so the restarted
/// flusher applies it at once (not only the second pass, 3 s later).
struct Requeue<'a> {
    shared: &'a Shared,
    batch: Option<Invalidation>,
}

impl Drop for Requeue<'_> {
    fn drop(&mut self) {
        if let Some(batch) = self.batch.take() {
            let mut pending = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            pending.merge(batch);
        }
    }
}

impl Shared {
    /// Queues what `effect` drops; the flusher applies it at once, batched with whatever else
    /// arrived meanwhile (a burst of 1 000 events costs a few passes over the caches, not 1 000).
    fn apply(&self, watched: Watched, effect: Effect) {
        let scope = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            match add(&mut pending, effect) {
                Some(scope) => scope,
                None => return,
            }
        };
        tracing::debug!(resource = watched.as_str(), scope, "watch: invalidating");
        self.metrics.invalidated(scope);
        self.wake.notify_one();
    }

    /// Applies `effects` before returning (and again after [`SECOND_PASS`]): for the changes a
    /// relist found, which must be gone before the watch counts as up again and the long TTLs
    /// apply; through the flusher they could come a moment after.
    fn apply_now(&self, watched: Watched, effects: impl IntoIterator<Item = Effect>) {
        let mut batch = Invalidation::default();
        for effect in effects {
            if let Some(scope) = add(&mut batch, effect) {
                self.metrics.invalidated(scope);
            }
        }
        if batch.is_empty() {
            return;
        }
        tracing::info!(
            resource = watched.as_str(),
            "watch: applying what changed while it was away"
        );
        self.invalidate_twice(batch);
    }

    /// Invalidates `batch` now and again after [`SECOND_PASS`]. The second pass is scheduled
    /// first: if the first panics (and the flusher with it), the batch is still applied.
    fn invalidate_twice(&self, batch: Invalidation) {
        let batch = Arc::new(batch);
        let (target, again) = (self.target.clone(), batch.clone());
        tokio::spawn(async move {
            tokio::time::sleep(SECOND_PASS).await;
            target.invalidate(&again);
        });
        self.target.invalidate(&batch);
    }

    /// Applies queued invalidations as they come, and each batch again after [`SECOND_PASS`].
    async fn flush(self: Arc<Self>) {
        loop {
            // What was queued before this task (re)started is applied first.
            let batch =
                std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
            if !batch.is_empty() {
                let mut requeue = Requeue {
                    shared: &self,
                    batch: Some(batch.clone()),
                };
                self.invalidate_twice(batch);
                requeue.batch = None;
            }
            self.set_flusher_ok(true);
            self.wake.notified().await;
        }
    }

    fn set_flusher_ok(&self, ok: bool) {
        use std::sync::atomic::Ordering;
        if self.flusher_ok.swap(ok, Ordering::SeqCst) != ok {
            let all = self.up.lock().unwrap_or_else(|p| p.into_inner());
            self.publish(&all);
        }
    }

    fn set_up(&self, watched: Watched, up: bool) {
        // Computed and published under one lock, so two watches changing at once cannot
        // publish their views out of order. The map changes only once published: if
        // publishing panics, the next call (the supervisor's) publishes again.
        let mut all = self.up.lock().unwrap_or_else(|p| p.into_inner());
        if all.get(&watched) == Some(&up) {
            return;
        }
        let mut next = all.clone();
        next.insert(watched, up);
        self.publish(&next);
        *all = next;
        drop(all);
        self.metrics.watch_up(watched.as_str(), up);
        if up {
            tracing::info!(resource = watched.as_str(), "watch synced");
        } else {
            tracing::warn!(
                resource = watched.as_str(),
                "watch down: short TTLs until it is back"
            );
        }
    }

    /// Publishes the health of `all` (and of the flusher) to `/readyz` and the engine.
    fn publish(&self, all: &HashMap<Watched, bool>) {
        let flusher_ok = self.flusher_ok.load(std::sync::atomic::Ordering::SeqCst);
        let mut down: Vec<&str> = all
            .iter()
            .filter(|(_, up)| !**up)
            .map(|(w, _)| w.as_str())
            .collect();
        down.sort_unstable();
        let mut notes = Vec::new();
        if !down.is_empty() {
            notes.push(format!(
                "watches not synced or down: {}; short cache TTLs until they are",
                down.join(", ")
            ));
        }
        if !flusher_ok {
            notes.push(
                "the watches' invalidations are not being applied (restarting); short cache TTLs until they are"
                    .to_string(),
            );
        }
        self.readiness
            .set_note((!notes.is_empty()).then(|| notes.join("; ")));
        let is_up = |w: Watched| flusher_ok && all.get(&w).copied().unwrap_or(false);
        let health = WatchHealth {
            rbac: [
                Watched::Roles,
                Watched::RoleBindings,
                Watched::ClusterRoles,
                Watched::ClusterRoleBindings,
                Watched::Namespaces,
            ]
            .into_iter()
            .all(is_up),
            service_accounts: is_up(Watched::ServiceAccounts),
            pods: all.get(&Watched::Pods).map(|up| flusher_ok && *up),
        };
        self.target.set_watch_health(health);
    }
}

/// Starts one watch task per resource. They run until aborted (the handles) or the process
/// ends; each relists after a backoff when it fails (`410 Gone` included).
pub fn spawn(
    client: Client,
    target: Arc<dyn Invalidate>,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    pods: bool,
) -> Vec<JoinHandle<()>> {
    let watched = Watched::all(pods);
    for w in &watched {
        metrics.watch_up(w.as_str(), false);
    }
    let mut names: Vec<&str> = watched.iter().map(|w| w.as_str()).collect();
    names.sort_unstable();
    readiness.set_note(Some(format!(
        "watches not synced or down: {}; short cache TTLs until they are",
        names.join(", ")
    )));
    let shared = Arc::new(Shared {
        target,
        metrics,
        readiness,
        up: Mutex::new(watched.iter().map(|w| (*w, false)).collect()),
        seen: Mutex::new(HashMap::new()),
        pending: Mutex::new(Invalidation::default()),
        wake: Notify::new(),
        flusher_ok: std::sync::atomic::AtomicBool::new(true),
    });
    let mut tasks = vec![tokio::spawn(supervise(None, shared.clone(), |s| s.flush()))];
    tasks.extend(watched.into_iter().map(|w| {
        let (c, s) = (&client, shared.clone());
        match w {
            Watched::Roles => watch_task::<Role>(c, w, s),
            Watched::RoleBindings => watch_task::<RoleBinding>(c, w, s),
            Watched::ClusterRoles => watch_task::<ClusterRole>(c, w, s),
            Watched::ClusterRoleBindings => watch_task::<ClusterRoleBinding>(c, w, s),
            Watched::Namespaces => watch_task::<Namespace>(c, w, s),
            Watched::ServiceAccounts => watch_task::<ServiceAccount>(c, w, s),
            Watched::Pods => watch_task::<Pod>(c, w, s),
        }
    }));
    tasks
}

/// The supervised watch of `K`, all namespaces, metadata only.
fn watch_task<K>(client: &Client, watched: Watched, shared: Arc<Shared>) -> JoinHandle<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let client = client.clone();
    tokio::spawn(supervise(Some(watched), shared, move |s| {
        run::<K>(Api::all(client.clone()), watched, s)
    }))
}

/// Runs `start` again whenever its task ends: a watch or the flusher only ends by panicking,
/// and a dead one must not leave the long TTLs in force. A watch counts as down until its
/// restart has relisted; the flusher applies what was queued as soon as it is back. Aborting
/// the supervisor aborts the task.
async fn supervise<F, Fut>(watched: Option<Watched>, shared: Arc<Shared>, start: F)
where
    F: Fn(Arc<Shared>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    struct AbortOnDrop(tokio::task::AbortHandle);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    // A task that keeps failing is restarted less and less often (a watch restart relists),
    // and at the first pause again once it has run for a while.
    let (first, longest) = match watched {
        Some(_) => (Duration::from_secs(1), Duration::from_secs(60)),
        None => (Duration::from_millis(100), Duration::from_secs(5)),
    };
    let mut pause = first;
    loop {
        let started = tokio::time::Instant::now();
        let task = tokio::spawn(start(shared.clone()));
        let _abort = AbortOnDrop(task.abort_handle());
        let ended = task.await;
        if matches!(&ended, Err(e) if e.is_cancelled()) {
            return;
        }
        if started.elapsed() >= Duration::from_secs(60) {
            pause = first;
        }
        let name = watched.map_or("invalidation flusher", |w| w.as_str());
        tracing::error!(
            task = name,
            panicked = ended.is_err(),
            restart_in = ?pause,
            "watch task ended; restarting it"
        );
        match watched {
            Some(w) => shared.set_up(w, false),
            None => shared.set_flusher_ok(false),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(longest);
    }
}

fn key_of<K: Resource>(obj: &PartialObjectMeta<K>) -> ObjectKey {
    ObjectKey {
        namespace: obj.namespace().unwrap_or_default(),
        name: obj.name_any(),
    }
}

fn stamp_of<K: Resource>(obj: &PartialObjectMeta<K>) -> (String, String) {
    (
        obj.resource_version().unwrap_or_default(),
        obj.uid().unwrap_or_default(),
    )
}

/// What one watch has seen, and whether it has synced once. A watch task that ends (a panic)
/// leaves it in [`Shared`], so its restart diffs its first list against it, as after an
/// outage, instead of starting blind.
struct Known {
    shared: Arc<Shared>,
    watched: Watched,
    seen: Seen,
    synced: bool,
}

impl Known {
    fn resume(shared: &Arc<Shared>, watched: Watched) -> Known {
        let kept = shared
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&watched);
        Known {
            shared: shared.clone(),
            watched,
            synced: kept.is_some(),
            seen: kept.unwrap_or_default(),
        }
    }
}

impl Drop for Known {
    fn drop(&mut self) {
        if self.synced {
            let seen = std::mem::take(&mut self.seen);
            self.shared
                .seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(self.watched, seen);
        }
    }
}

/// The changes between what was seen before a relist and what the relist found.
pub fn diff(before: &Seen, after: &Seen) -> Vec<(ObjectKey, Option<String>, Option<String>)> {
    let mut changes = Vec::new();
    for (key, old) in before {
        match after.get(key) {
            Some(new) if new == old => {}
            new => changes.push((key.clone(), Some(old.1.clone()), new.map(|n| n.1.clone()))),
        }
    }
    for (key, new) in after {
        if !before.contains_key(key) {
            changes.push((key.clone(), None, Some(new.1.clone())));
        }
    }
    changes.sort();
    changes
}

/// `Api<PartialObjectMeta<K>>` makes metadata-only list and watch requests.
///
/// After any error the watcher is started afresh (after a backoff), not resumed: kube-runtime
/// would resume a failed watch from its last resourceVersion without a list, and then nothing
/// would tell that the watch is back. A fresh start relists, and the relist both marks the
/// watch up and applies what changed meanwhile ([`diff`]).
async fn run<K>(api: Api<PartialObjectMeta<K>>, watched: Watched, shared: Arc<Shared>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    const FIRST_RETRY: Duration = Duration::from_millis(250);
    const LONGEST_RETRY: Duration = Duration::from_secs(30);
    // The backoff starts over only after a watch stayed up this long: one that fails right
    // after each list (e.g. `list` granted but not `watch`) must not relist 4 times a second.
    const STABLE: Duration = Duration::from_secs(60);
    let mut synced_at: Option<tokio::time::Instant> = None;
    // What this watch knew, kept across a restart after a panic (see `supervise`).
    let mut known = Known::resume(&shared, watched);
    let mut retry = FIRST_RETRY;
    loop {
        let mut events = std::pin::pin!(watcher(api.clone(), watcher::Config::default()));
        let mut relisting: Option<Seen> = None;
        while let Some(event) = events.next().await {
            let kind = match event {
                Ok(Event::Init) => {
                    relisting = Some(HashMap::new());
                    "relist"
                }
                Ok(Event::InitApply(obj)) => {
                    relisting
                        .get_or_insert_with(HashMap::new)
                        .insert(key_of(&obj), stamp_of(&obj));
                    continue;
                }
                Ok(Event::InitDone) => {
                    let fresh = relisting.take().unwrap_or_default();
                    if known.synced {
                        // What changed while the watch was away: applied before it counts
                        // as up again, so no allow hidden by the outage's short TTLs comes
                        // back for a moment before its revocation.
                        let missed =
                            diff(&known.seen, &fresh)
                                .into_iter()
                                .map(|(key, before, after)| {
                                    watched.effect(&key, before.as_deref(), after.as_deref())
                                });
                        shared.apply_now(watched, missed);
                    }
                    known.seen = fresh;
                    known.synced = true;
                    synced_at = Some(tokio::time::Instant::now());
                    shared.set_up(watched, true);
                    "synced"
                }
                Ok(Event::Apply(obj)) => {
                    let (key, stamp) = (key_of(&obj), stamp_of(&obj));
                    let before = known.seen.insert(key.clone(), stamp.clone());
                    let before = before.as_ref().map(|b| b.1.as_str());
                    shared.apply(watched, watched.effect(&key, before, Some(&stamp.1)));
                    "applied"
                }
                Ok(Event::Delete(obj)) => {
                    let key = key_of(&obj);
                    let before = known.seen.remove(&key).unwrap_or_else(|| stamp_of(&obj));
                    shared.apply(watched, watched.effect(&key, Some(&before.1), None));
                    "deleted"
                }
                Err(error) => {
                    tracing::warn!(
                        resource = watched.as_str(),
                        %error,
                        retry_in = ?retry,
                        "watch failed; relisting after a backoff"
                    );
                    shared.metrics.watch_event(watched.as_str(), "error");
                    break;
                }
            };
            shared.metrics.watch_event(watched.as_str(), kind);
        }
        shared.set_up(watched, false);
        if synced_at.take().is_some_and(|at| at.elapsed() >= STABLE) {
            retry = FIRST_RETRY;
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(LONGEST_RETRY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, name: &str) -> ObjectKey {
        ObjectKey {
            namespace: ns.into(),
            name: name.into(),
        }
    }

    #[test]
    fn namespaced_rbac_changes_drop_their_tenant_only() {
        for w in [Watched::Roles, Watched::RoleBindings] {
            assert_eq!(
                w.effect(&key("payments", "tempo-reader"), Some("u1"), None),
                Effect::Tenant(Tenant::parse("payments").unwrap())
            );
        }
        assert_eq!(
            Watched::ClusterRoleBindings.effect(&key("", "view"), None, Some("u")),
            Effect::AllDecisions
        );
    }

    #[test]
    fn service_accounts_drop_their_user_on_delete_and_new_uid_only() {
        let k = key("showcase", "grafana");
        let user = Effect::User("system:serviceaccount:showcase:grafana".into());
        assert_eq!(Watched::ServiceAccounts.effect(&k, Some("a"), None), user);
        assert_eq!(
            Watched::ServiceAccounts.effect(&k, Some("a"), Some("b")),
            user
        );
        assert_eq!(
            Watched::ServiceAccounts.effect(&k, Some("a"), Some("a")),
            Effect::Nothing,
            "a label change"
        );
    }

    #[test]
    fn namespace_and_pod_deletions() {
        assert_eq!(
            Watched::Namespaces.effect(&key("", "payments"), Some("u"), None),
            Effect::Tenant(Tenant::parse("payments").unwrap())
        );
        assert_eq!(
            Watched::Namespaces.effect(&key("", "payments"), None, Some("u")),
            Effect::Nothing
        );
        assert_eq!(
            Watched::Pods.effect(&key("showcase", "grafana-0"), Some("pod-uid"), None),
            Effect::Pod("pod-uid".into())
        );
    }

    #[test]
    fn diff_finds_what_changed_while_away() {
        let stamp = |rv: &str, uid: &str| (rv.to_string(), uid.to_string());
        let before: Seen = [
            (key("a", "kept"), stamp("1", "k")),
            (key("a", "changed"), stamp("2", "c")),
            (key("b", "gone"), stamp("3", "g")),
        ]
        .into();
        let after: Seen = [
            (key("a", "kept"), stamp("1", "k")),
            (key("a", "changed"), stamp("9", "c")),
            (key("c", "new"), stamp("10", "n")),
        ]
        .into();
        assert_eq!(
            diff(&before, &after),
            vec![
                (key("a", "changed"), Some("c".into()), Some("c".into())),
                (key("b", "gone"), Some("g".into()), None),
                (key("c", "new"), None, Some("n".into())),
            ]
        );
    }
}
