//! The scalar sections: shutdown, kubernetes, authorization (SAR shape), cache.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::Action;

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// After SIGTERM, keep serving this long with `/readyz` at 503 so load balancers and
    /// Kubernetes endpoints stop sending new requests first.
    #[serde(with = "humantime_serde")]
    pub delay: Duration,
    /// Then stop accepting and wait at most this long for in-flight checks.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            grace: Duration::from_secs(10),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    /// Kubeconfig file; unset means `$KUBECONFIG`, `~/.kube/config`, then in-cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Audiences sent in each TokenReview (`spec.audiences`); empty means the API server's.
    pub audiences: Vec<String>,
    /// At most this many reviews in flight at once, in two budgets that cannot starve each
    /// other: half for TokenReviews (tokens not yet known) and half for SubjectAccessReviews
    /// (identities the API already authenticated). A flood of unknown tokens fills only the
    /// first.
    pub max_concurrent_reviews: usize,
    /// At most this many SubjectAccessReviews in flight for one Check (a cross-tenant query
    /// naming 64 tenants asks them a few at a time, not all at once).
    pub max_reviews_per_check: usize,
    /// Watch Roles, RoleBindings, ClusterRoles, ClusterRoleBindings, ServiceAccounts and
    /// Namespaces, and drop the cached decisions a change affects at once (needs `list` and
    /// `watch` on them).
    pub watch_rbac: bool,
    /// Also watch Pods (metadata only), so a pod-bound token's identity is dropped when its
    /// pod is deleted. Off by default: a cluster-wide pod watch is the costliest of all.
    pub watch_pods: bool,
    /// A watch silent for this long is taken as dead (a dropped connection the network never
    /// reported) and relisted, with short TTLs meanwhile. The API server sends a BOOKMARK
    /// on every watch at least once a minute (`defaultBookmarkFrequency`, watch cache), so a
    /// live watch is never this quiet.
    #[serde(with = "humantime_serde")]
    pub watch_idle_timeout: Duration,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            kubeconfig: None,
            audiences: Vec::new(),
            max_concurrent_reviews: 32,
            max_reviews_per_check: 4,
            watch_rbac: true,
            watch_pods: false,
            watch_idle_timeout: Duration::from_secs(150),
        }
    }
}

/// How a (tenant, action) becomes a SubjectAccessReview.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SarConfig {
    /// How a tenant appears in the SAR: `namespace` (the tenant is a namespace; verbs on
    /// `resource` there) or `tempo-gateway` (the Tempo Operator gateway's cluster-scoped shape:
    /// the tenant is the resource, `resource` is the name).
    pub mapping: SarMapping,
    /// API group of the SAR's resourceAttributes.
    pub group: String,
    /// Resource of the SAR's resourceAttributes.
    pub resource: String,
    /// SAR verb per action.
    pub verbs: Verbs,
}

impl Default for SarConfig {
    fn default() -> Self {
        Self {
            mapping: SarMapping::Namespace,
            group: "tempo.grafana.com".into(),
            resource: "traces".into(),
            verbs: Verbs::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SarMapping {
    /// `{namespace: <tenant>, group, resource, verb}`: a tenant admin grants with a Role.
    Namespace,
    /// `{group, resource: <tenant>, name: <resource>, verb}`, cluster scope: the ClusterRoles
    /// written for the Tempo Operator's gateway keep working.
    TempoGateway,
}

impl SarConfig {
    pub fn verb(&self, action: Action) -> &str {
        match action {
            Action::Read => &self.verbs.read,
            Action::Write => &self.verbs.write,
            Action::Manage => &self.verbs.manage,
        }
    }

    /// `traces.tempo.grafana.com`, as RBAC docs spell a resource.
    pub fn resource_display(&self) -> String {
        if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Verbs {
    pub read: String,
    pub write: String,
    pub manage: String,
}

impl Default for Verbs {
    fn default() -> Self {
        Self {
            read: "get".into(),
            write: "create".into(),
            manage: "update".into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Bound of the allowed-decisions cache, (token, tenant, action) entries. LRU eviction.
    pub max_entries: u64,
    /// Bound of the identities cache (TokenReview answers, with groups and extra). An evicted
    /// identity costs one TokenReview when its token next asks a new question.
    pub max_identities: u64,
    /// Bound of each negative cache (unknown tokens; denied decisions), kept apart so a flood of
    /// garbage tokens cannot evict the allows of real tenants.
    pub max_negative_entries: u64,
    /// How long an allowed decision is reused.
    #[serde(with = "humantime_serde")]
    pub allowed_ttl: Duration,
    /// How long a denied decision (SAR said no) is reused.
    #[serde(with = "humantime_serde")]
    pub denied_ttl: Duration,
    /// How long a token the TokenReview rejected is remembered.
    #[serde(with = "humantime_serde")]
    pub unauthenticated_ttl: Duration,
    /// How long an identity (TokenReview result) is reused; capped by the JWT's `exp`.
    #[serde(with = "humantime_serde")]
    pub identity_ttl: Duration,
    /// `allowed_ttl` while the RBAC watches are synced and up (`kubernetes.watch_rbac`): a
    /// revoked grant is then dropped at once, so an allow may live longer. Falls back to
    /// `allowed_ttl` whenever a watch is down.
    #[serde(with = "humantime_serde")]
    pub watched_allowed_ttl: Duration,
    /// `identity_ttl` while the ServiceAccount watch is synced and up (still capped by the
    /// JWT's `exp`; pod-bound tokens keep `identity_ttl` unless `kubernetes.watch_pods`).
    #[serde(with = "humantime_serde")]
    pub watched_identity_ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            max_identities: 10_000,
            max_negative_entries: 10_000,
            allowed_ttl: Duration::from_secs(60),
            denied_ttl: Duration::from_secs(10),
            unauthenticated_ttl: Duration::from_secs(10),
            identity_ttl: Duration::from_secs(120),
            watched_allowed_ttl: Duration::from_secs(600),
            watched_identity_ttl: Duration::from_secs(600),
        }
    }
}
