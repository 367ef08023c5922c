//! The test-facing API of the object store: apply and delete objects (typed helpers for the
//! kinds tenant-authz watches), and the controls of list and watch (compaction, bookmarks,
//! broken watches, faults, counters, delivery times).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Container, Namespace, NamespaceStatus, Pod, PodSpec, PodStatus, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{json, Value};

use super::events::EventReceipt;
use super::faults::Fault;
use super::kinds::Kind;
use super::resources::ListWatchRequest;
use super::users::Subject;
use super::{FakeKube, TEMPO_API_GROUP, TEMPO_RESOURCE};

/// A rule allowing `verbs` on `tempo.grafana.com`/`traces` (what our SubjectAccessReviews ask).
pub fn traces_rule(verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![TEMPO_API_GROUP.to_string()]),
        resources: Some(vec![TEMPO_RESOURCE.to_string()]),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    }
}

fn meta(namespace: Option<&str>, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        ..Default::default()
    }
}

fn to_json<T: serde::Serialize>(object: &T) -> Value {
    serde_json::to_value(object).expect("serialize a Kubernetes object")
}

fn role_binding_subjects(subjects: &[Subject]) -> Value {
    Value::Array(subjects.iter().map(Subject::to_rbac).collect())
}

impl FakeKube {
    /// Creates or replaces an object (real Kubernetes JSON with `apiVersion`, `kind`,
    /// `metadata.name`, and `metadata.namespace` if namespaced): a new resourceVersion, an
    /// ADDED or MODIFIED event. A replaced object keeps its `uid` and `creationTimestamp`.
    /// Panics on an object the store cannot hold (a bug in the test).
    pub fn apply(&self, object: Value) -> EventReceipt {
        self.shared
            .store()
            .apply(object)
            .unwrap_or_else(|e| panic!("fake kube: cannot apply the object: {e}"))
    }

    /// Deletes an object (`namespace` is ignored for cluster-scoped kinds): a DELETED event
    /// carrying its last state with a new resourceVersion; `None` if there was no such object.
    /// Deleting a Namespace first deletes everything in it, as the namespace controller does.
    pub fn delete(&self, kind: Kind, namespace: Option<&str>, name: &str) -> Option<EventReceipt> {
        self.shared
            .store()
            .delete(kind, namespace.unwrap_or(""), name)
    }

    /// The stored object, if any.
    pub fn get(&self, kind: Kind, namespace: Option<&str>, name: &str) -> Option<Value> {
        let namespace = if kind.namespaced() {
            namespace.unwrap_or("")
        } else {
            ""
        };
        self.shared.store().get(kind, namespace, name).cloned()
    }

    /// The current (global) resourceVersion.
    pub fn resource_version(&self) -> String {
        self.shared.store().rv().to_string()
    }

    /// Creates (or replaces) the Namespace `name`, phase Active.
    pub fn create_namespace(&self, name: &str) -> EventReceipt {
        self.apply(to_json(&Namespace {
            metadata: meta(None, name),
            status: Some(NamespaceStatus {
                phase: Some("Active".to_string()),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    /// Creates (or replaces) the ServiceAccount `namespace/name`; returns its uid.
    pub fn create_service_account(&self, namespace: &str, name: &str) -> String {
        self.apply(to_json(&ServiceAccount {
            metadata: meta(Some(namespace), name),
            ..Default::default()
        }))
        .uid()
    }

    /// Creates (or replaces) a running Pod `namespace/name` of the ServiceAccount `default`;
    /// returns its uid.
    pub fn create_pod(&self, namespace: &str, name: &str) -> String {
        self.create_pod_for(namespace, name, "default")
    }

    /// Creates (or replaces) a running Pod `namespace/name` of `service_account`; returns its uid.
    pub fn create_pod_for(&self, namespace: &str, name: &str, service_account: &str) -> String {
        self.apply(to_json(&Pod {
            metadata: meta(Some(namespace), name),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".to_string(),
                    image: Some("registry.example/app:1".to_string()),
                    ..Default::default()
                }],
                service_account_name: Some(service_account.to_string()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".to_string()),
                ..Default::default()
            }),
        }))
        .uid()
    }

    /// Creates (or replaces) the Role `namespace/name` with `rules`.
    pub fn create_role(&self, namespace: &str, name: &str, rules: Vec<PolicyRule>) -> EventReceipt {
        self.apply(to_json(&Role {
            metadata: meta(Some(namespace), name),
            rules: Some(rules),
        }))
    }

    /// Creates (or replaces) the RoleBinding `namespace/name` of `role_ref_kind` (`Role` or
    /// `ClusterRole`) `role_ref_name` to `subjects`.
    pub fn create_role_binding(
        &self,
        namespace: &str,
        name: &str,
        role_ref_kind: &str,
        role_ref_name: &str,
        subjects: &[Subject],
    ) -> EventReceipt {
        let mut binding = to_json(&RoleBinding {
            metadata: meta(Some(namespace), name),
            ..Default::default()
        });
        binding["roleRef"] = json!({
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": role_ref_kind,
            "name": role_ref_name,
        });
        binding["subjects"] = role_binding_subjects(subjects);
        self.apply(binding)
    }

    /// Creates (or replaces) the ClusterRole `name` with `rules`.
    pub fn create_cluster_role(&self, name: &str, rules: Vec<PolicyRule>) -> EventReceipt {
        self.apply(to_json(&ClusterRole {
            metadata: meta(None, name),
            rules: Some(rules),
            ..Default::default()
        }))
    }

    /// Creates (or replaces) the ClusterRoleBinding `name` of the ClusterRole `cluster_role`
    /// to `subjects`.
    pub fn create_cluster_role_binding(
        &self,
        name: &str,
        cluster_role: &str,
        subjects: &[Subject],
    ) -> EventReceipt {
        let mut binding = to_json(&ClusterRoleBinding {
            metadata: meta(None, name),
            ..Default::default()
        });
        binding["roleRef"] = json!({
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": cluster_role,
        });
        binding["subjects"] = role_binding_subjects(subjects);
        self.apply(binding)
    }

    /// What a tenant admin does to let `subject` read or write traces of `tenant`: a Role
    /// `name` in namespace `tenant` allowing `verbs` on `tempo.grafana.com`/`traces`, and a
    /// RoleBinding `name` of it to `subject`. Returns the RoleBinding's receipt; revoke with
    /// `delete(Kind::RoleBinding, Some(tenant), name)`.
    pub fn bind_traces(
        &self,
        tenant: &str,
        name: &str,
        subject: Subject,
        verbs: &[&str],
    ) -> EventReceipt {
        self.create_role(tenant, name, vec![traces_rule(verbs)]);
        self.create_role_binding(tenant, name, "Role", name, &[subject])
    }

    /// Drops the event history up to now: a watch from an older resourceVersion gets
    /// `410 Gone` (an ERROR event with reason `Expired`), and so does a `continue` token.
    pub fn compact(&self) {
        self.shared.store().compact();
    }

    /// How many events the history keeps (10 000 by default); older ones are compacted.
    pub fn set_history_limit(&self, events: usize) {
        self.shared.store().history_limit = events.max(1);
    }

    /// Sends a BOOKMARK (at the current resourceVersion) on every open watch that allows them.
    pub fn send_bookmarks(&self) {
        self.shared.store().send_bookmarks(None);
    }

    /// How often every open watch gets a BOOKMARK (`None`: only on [`FakeKube::send_bookmarks`];
    /// default one minute, about what the real server does). Applies at once to open watches.
    pub fn set_bookmark_interval(&self, interval: Option<Duration>) {
        self.shared.bookmark_interval.send_replace(interval);
    }

    /// Cuts every open watch stream now, as a lost connection (no clean end of the stream).
    pub fn break_watches(&self) {
        self.shared.store().break_watches();
    }

    /// Makes every list and watch request fail with `fault` until set back to `Fault::None`;
    /// any other fault also cuts the open watches, so the watches are down until cleared.
    pub fn set_watch_fault(&self, fault: Fault) {
        self.shared.state().watch_fault = fault;
        if fault != Fault::None {
            self.break_watches();
        }
    }

    /// Number of list requests received (including faulted ones).
    pub fn lists(&self) -> usize {
        self.shared.lists.load(Ordering::SeqCst)
    }

    /// Number of watch requests received (including faulted ones).
    pub fn watches_opened(&self) -> usize {
        self.shared.watches_opened.load(Ordering::SeqCst)
    }

    /// Watch streams open now.
    pub fn open_watches(&self) -> usize {
        self.shared.store().open_watches(None)
    }

    /// Watch streams of `kind` open now.
    pub fn open_watches_of(&self, kind: Kind) -> usize {
        self.shared.store().open_watches(Some(kind))
    }

    /// Waits until at least `count` watch streams of `kind` are open; `false` on timeout.
    pub async fn wait_for_watches(&self, kind: Kind, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.open_watches_of(kind) < count {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// The list and watch requests received, in order.
    pub fn received_watch_requests(&self) -> Vec<ListWatchRequest> {
        self.shared.state().received_watch_requests.clone()
    }

    /// When the latest event of `kind` was handed to a watch stream to be written.
    pub fn last_event_sent_at(&self, kind: Kind) -> Option<Instant> {
        let store = self.shared.store();
        let log = store.sent_log().lock().unwrap_or_else(|e| e.into_inner());
        log.get(&kind).copied()
    }
}
