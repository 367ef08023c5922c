//! The configuration model: one struct with defaults, loaded from YAML, overridden by flags and
//! `TENANT_AUTHZ_*` environment variables (see `cli.rs`), checked by `validate()` with errors
//! that name the field.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::model::Action;

/// Everything tenant-authz can be told. Every field has a default, so no file is needed.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the ext_authz gRPC server (Envoy's `Authorization/Check` and gRPC health).
    pub grpc_addr: SocketAddr,
    /// Address of the admin HTTP server: `/healthz`, `/readyz`, `/metrics`.
    pub admin_addr: SocketAddr,
    /// Log format: `text` or `json`.
    pub log_format: LogFormat,
    /// Where identities and grants come from.
    pub backend: Backend,
    /// Request header naming the tenant(s); Tempo's is `x-scope-orgid`.
    pub tenant_header: String,
    /// Bearer tokens longer than this are refused (401) without an API call.
    pub max_token_bytes: usize,
    /// Deadline of one decision, below Envoy's ext_authz timeout (2 s in our Envoy configs).
    #[serde(with = "humantime_serde")]
    pub decision_timeout: Duration,
    pub shutdown: ShutdownConfig,
    pub kubernetes: KubernetesConfig,
    pub authorization: SarConfig,
    pub cache: CacheConfig,
    pub actions: ActionConfig,
    /// Identities and grants of the static backend (`backend: static`).
    #[serde(rename = "static", skip_serializing_if = "StaticConfig::is_empty")]
    pub static_: StaticConfig,
    /// The file this configuration was read from (watched for reloads); not a config field.
    #[serde(skip)]
    pub source: Option<std::path::PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            grpc_addr: SocketAddr::from(([0, 0, 0, 0], 9001)),
            admin_addr: SocketAddr::from(([0, 0, 0, 0], 9090)),
            log_format: LogFormat::Text,
            backend: Backend::Kubernetes,
            tenant_header: "x-scope-orgid".into(),
            max_token_bytes: 16 * 1024,
            decision_timeout: Duration::from_millis(1500),
            shutdown: ShutdownConfig::default(),
            kubernetes: KubernetesConfig::default(),
            authorization: SarConfig::default(),
            cache: CacheConfig::default(),
            actions: ActionConfig::default(),
            static_: StaticConfig::default(),
            source: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// TokenReview + SubjectAccessReview against the Kubernetes API (`KUBECONFIG` or in-cluster).
    Kubernetes,
    /// Identities and grants from the `static` section of this file, reloaded when it changes:
    /// for the demo, development, and Tempo outside Kubernetes.
    Static,
}

/// The static backend's data: who a token is (by SHA-256, never the token), and what they
/// may do.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StaticConfig {
    pub identities: Vec<StaticIdentity>,
    pub grants: Vec<StaticGrant>,
}

impl StaticConfig {
    pub fn is_empty(&self) -> bool {
        self.identities.is_empty() && self.grants.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StaticIdentity {
    /// Lowercase hex SHA-256 of the token (`tenant-authz hash-token`).
    pub sha256: String,
    pub username: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StaticGrant {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Namespace names, or `*` for every tenant.
    pub tenants: Vec<String>,
    pub actions: Vec<Action>,
}

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

/// How the action of a request is found when the Envoy route sets no `action`
/// context extension (an Istio CUSTOM provider sends none). First matching rule wins; an
/// unmatched request is `default` for safe methods (GET, HEAD, OPTIONS) and
/// `default_unsafe` for every other method, so an ingest endpoint missing from the table
/// needs `write`, never only `read`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActionConfig {
    pub rules: Vec<ActionRule>,
    /// Action of an unmatched GET, HEAD or OPTIONS.
    pub default: Action,
    /// Action of an unmatched request with any other method.
    pub default_unsafe: Action,
}

/// What a rule decides: an action, or `deny` for paths tenants must never reach (Tempo's
/// operations endpoints, which are not tenant-scoped).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    Read,
    Write,
    Manage,
    Deny,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActionRule {
    /// HTTP methods (upper case); empty or absent matches any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Exact path (after normalisation, without query string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Path prefix at a segment boundary: `/api/overrides` matches `/api/overrides` and
    /// `/api/overrides/x`, not `/api/overridesx`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    pub action: RuleAction,
}

impl ActionRule {
    fn prefix(methods: &[&str], prefix: &str, action: RuleAction) -> Self {
        Self {
            methods: methods.iter().map(|m| m.to_string()).collect(),
            path: None,
            path_prefix: Some(prefix.to_string()),
            action,
        }
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m == method) {
            return false;
        }
        if let Some(p) = &self.path {
            if path != p {
                return false;
            }
        }
        if let Some(prefix) = &self.path_prefix {
            let prefix = prefix.trim_end_matches('/');
            match path.strip_prefix(prefix) {
                Some(rest) if rest.is_empty() || rest.starts_with('/') => {}
                _ => return false,
            }
        }
        true
    }
}

/// Tempo's operations endpoints: not tenant-scoped, never served to a tenant.
const OPS_PREFIXES: &[&str] = &[
    "/flush",
    "/shutdown",
    "/ingester",
    "/distributor",
    "/compactor",
    "/memberlist",
    "/status",
    "/metrics",
    "/debug",
    "/config",
    "/runtime_config",
    "/overrides",
    "/usage_stats",
];

impl Default for ActionConfig {
    fn default() -> Self {
        use RuleAction::*;
        let any: &[&str] = &[];
        let mut rules = vec![
            // Ingest, whatever the method: OTLP/HTTP, OTLP/gRPC, Jaeger (Thrift HTTP and
            // gRPC), Zipkin v1/v2, OpenCensus. gRPC calls are POSTs to /<service>/<method>.
            ActionRule::prefix(any, "/v1/traces", Write),
            ActionRule::prefix(
                any,
                "/opentelemetry.proto.collector.trace.v1.TraceService",
                Write,
            ),
            ActionRule::prefix(any, "/jaeger.api_v2.CollectorService", Write),
            ActionRule::prefix(any, "/opencensus.proto.agent.trace.v1.TraceService", Write),
            ActionRule::prefix(any, "/api/v1/spans", Write),
            ActionRule::prefix(any, "/api/v2/spans", Write),
            // Jaeger's collector path; GET /api/traces/<id> is a Tempo query.
            ActionRule {
                methods: vec!["POST".into(), "PUT".into()],
                path: Some("/api/traces".into()),
                path_prefix: None,
                action: Write,
            },
            // Tempo's user-configurable overrides: changing them manages the tenant.
            ActionRule::prefix(
                &["POST", "PUT", "PATCH", "DELETE"],
                "/api/overrides",
                Manage,
            ),
            // Queries that are POSTs: search, trace diff/by-id v2, metrics, streaming gRPC.
            ActionRule::prefix(&["POST"], "/api/search", Read),
            ActionRule::prefix(&["POST"], "/api/v2/search", Read),
            ActionRule::prefix(&["POST"], "/api/v2/traces", Read),
            ActionRule::prefix(&["POST"], "/api/metrics", Read),
            ActionRule::prefix(any, "/tempopb.StreamingQuerier", Read),
        ];
        rules.extend(
            OPS_PREFIXES
                .iter()
                .map(|p| ActionRule::prefix(any, p, Deny)),
        );
        Self {
            rules,
            default: Action::Read,
            default_unsafe: Action::Write,
        }
    }
}

impl ActionConfig {
    /// The action of a request by method and normalised path (no query string); `None` when
    /// a `deny` rule matches.
    pub fn infer(&self, method: &str, path: &str) -> Option<Action> {
        match self.rules.iter().find(|r| r.matches(method, path)) {
            Some(rule) => match rule.action {
                RuleAction::Read => Some(Action::Read),
                RuleAction::Write => Some(Action::Write),
                RuleAction::Manage => Some(Action::Manage),
                RuleAction::Deny => None,
            },
            None if matches!(method, "GET" | "HEAD" | "OPTIONS") => Some(self.default),
            None => Some(self.default_unsafe),
        }
    }
}

impl Config {
    /// Reads a YAML file; unknown fields and bad values are errors naming the field.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml(&text).map_err(|e| match e {
            Error::ConfigParse { field, message, .. } => Error::ConfigParse {
                path: path.to_path_buf(),
                field,
                message,
            },
            other => other,
        })
    }

    pub fn from_yaml(text: &str) -> Result<Self, Error> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let de = serde_yaml_ng::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            Error::ConfigParse {
                path: Default::default(),
                field: if field == "." {
                    "(top level)".into()
                } else {
                    field
                },
                message: e.into_inner().to_string(),
            }
        })
    }

    /// Checks what serde cannot: ranges, header names, non-empty strings.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |field: &str, reason: String| {
            Err(Error::ConfigInvalid {
                field: field.to_string(),
                reason,
            })
        };
        if !is_header_name(&self.tenant_header) {
            return invalid(
                "tenant_header",
                format!(
                    "{:?} is not a lowercase HTTP header name",
                    self.tenant_header
                ),
            );
        }
        if matches!(
            self.tenant_header.as_str(),
            "authorization" | "host" | "content-type" | "content-length" | "te"
        ) {
            return invalid(
                "tenant_header",
                format!("{:?} cannot carry the tenant", self.tenant_header),
            );
        }
        if !(64..=1024 * 1024).contains(&self.max_token_bytes) {
            return invalid(
                "max_token_bytes",
                format!("{} is outside 64..=1048576", self.max_token_bytes),
            );
        }
        if self.decision_timeout.is_zero() || self.decision_timeout > Duration::from_secs(60) {
            return invalid(
                "decision_timeout",
                "must be above 0 and at most 60s (keep it below Envoy's ext_authz timeout)".into(),
            );
        }
        if self.shutdown.delay > Duration::from_secs(300) {
            return invalid("shutdown.delay", "must be at most 5m".into());
        }
        if self.shutdown.grace > Duration::from_secs(3600) {
            return invalid("shutdown.grace", "must be at most 1h".into());
        }
        if self.kubernetes.max_concurrent_reviews < 2 {
            return invalid(
                "kubernetes.max_concurrent_reviews",
                "must be at least 2 (one TokenReview and one SubjectAccessReview)".into(),
            );
        }
        let per_check = self.kubernetes.max_reviews_per_check;
        if per_check == 0 || per_check > self.kubernetes.max_concurrent_reviews {
            return invalid(
                "kubernetes.max_reviews_per_check",
                format!(
                    "{per_check} is outside 1..=kubernetes.max_concurrent_reviews ({})",
                    self.kubernetes.max_concurrent_reviews
                ),
            );
        }
        for (i, a) in self.kubernetes.audiences.iter().enumerate() {
            if a.trim().is_empty() {
                return invalid(&format!("kubernetes.audiences[{i}]"), "is empty".into());
            }
        }
        let sar = &self.authorization;
        for (field, value) in [
            ("authorization.resource", &sar.resource),
            ("authorization.verbs.read", &sar.verbs.read),
            ("authorization.verbs.write", &sar.verbs.write),
            ("authorization.verbs.manage", &sar.verbs.manage),
        ] {
            if value.is_empty() || value.chars().any(|c| c.is_whitespace()) {
                return invalid(field, format!("{value:?} is empty or has whitespace"));
            }
        }
        if sar.group.chars().any(|c| c.is_whitespace()) {
            return invalid("authorization.group", "has whitespace".into());
        }
        let c = &self.cache;
        for (field, value) in [
            ("cache.allowed_ttl", c.allowed_ttl),
            ("cache.denied_ttl", c.denied_ttl),
            ("cache.unauthenticated_ttl", c.unauthenticated_ttl),
            ("cache.identity_ttl", c.identity_ttl),
            ("cache.watched_allowed_ttl", c.watched_allowed_ttl),
            ("cache.watched_identity_ttl", c.watched_identity_ttl),
        ] {
            if value > MAX_CACHE_TTL {
                return invalid(
                    field,
                    format!(
                        "{} is over the maximum of {} (a revoked grant would be honoured that long)",
                        humantime::format_duration(value),
                        humantime::format_duration(MAX_CACHE_TTL)
                    ),
                );
            }
        }
        for (field, value) in [
            ("cache.max_entries", c.max_entries),
            ("cache.max_identities", c.max_identities),
            ("cache.max_negative_entries", c.max_negative_entries),
        ] {
            if !(1..=MAX_CACHE_ENTRIES).contains(&value) {
                return invalid(field, format!("{value} is outside 1..={MAX_CACHE_ENTRIES}"));
            }
        }
        self.validate_static()?;
        for (i, rule) in self.actions.rules.iter().enumerate() {
            let field = format!("actions.rules[{i}]");
            if rule.path.is_none() && rule.path_prefix.is_none() {
                return invalid(&field, "needs path or path_prefix".into());
            }
            for p in rule.path.iter().chain(rule.path_prefix.iter()) {
                if !p.starts_with('/') {
                    return invalid(&field, format!("path {p:?} must start with '/'"));
                }
            }
            for m in &rule.methods {
                if m.is_empty() || !m.chars().all(|c| c.is_ascii_uppercase()) {
                    return invalid(
                        &format!("{field}.methods"),
                        format!("{m:?} is not an upper-case HTTP method"),
                    );
                }
            }
        }
        Ok(())
    }
}

impl Config {
    fn validate_static(&self) -> Result<(), Error> {
        let invalid = |field: String, reason: String| Err(Error::ConfigInvalid { field, reason });
        let s = &self.static_;
        if self.backend != Backend::Static {
            if !s.is_empty() {
                return invalid(
                    "static".into(),
                    "is set but backend is not static; set `backend: static` or remove it".into(),
                );
            }
            return Ok(());
        }
        let mut seen = std::collections::HashSet::new();
        for (i, id) in s.identities.iter().enumerate() {
            let field = |f: &str| format!("static.identities[{i}].{f}");
            let h = &id.sha256;
            if h.len() != 64
                || !h
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return invalid(
                    field("sha256"),
                    "must be 64 lowercase hex digits: the output of `tenant-authz hash-token`"
                        .into(),
                );
            }
            if !seen.insert(h.as_str()) {
                return invalid(field("sha256"), "the same token hash appears twice".into());
            }
            if id.username.trim().is_empty() {
                return invalid(field("username"), "is empty".into());
            }
        }
        for (i, g) in s.grants.iter().enumerate() {
            let field = |f: &str| format!("static.grants[{i}].{f}");
            if g.users.is_empty() && g.groups.is_empty() {
                return invalid(
                    field("users"),
                    "a grant needs at least one user or group".into(),
                );
            }
            if g.tenants.is_empty() {
                return invalid(
                    field("tenants"),
                    "is empty (use \"*\" for every tenant)".into(),
                );
            }
            for (j, t) in g.tenants.iter().enumerate() {
                if t != "*" {
                    if let Err(e) = crate::model::Tenant::parse(t) {
                        return invalid(format!("static.grants[{i}].tenants[{j}]"), e.to_string());
                    }
                }
            }
            if g.actions.is_empty() {
                return invalid(field("actions"), "is empty (read, write or manage)".into());
            }
        }
        Ok(())
    }
}

/// Caches reserve their capacity up front; beyond this a typo would exhaust memory.
const MAX_CACHE_ENTRIES: u64 = 10_000_000;
/// Longest TTL of any cache: a day.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(24 * 3600);

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.!#$%&'*+^`|~".contains(&b)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(Config::from_yaml("").unwrap(), Config::default());
        Config::default().validate().unwrap();
    }

    #[test]
    fn durations_and_nested_fields_parse() {
        let c = Config::from_yaml(
            "decision_timeout: 900ms\ncache:\n  allowed_ttl: 2m\nkubernetes:\n  audiences: [tempo]\n",
        )
        .unwrap();
        assert_eq!(c.decision_timeout, Duration::from_millis(900));
        assert_eq!(c.cache.allowed_ttl, Duration::from_secs(120));
        assert_eq!(c.cache.denied_ttl, Duration::from_secs(10));
        assert_eq!(c.kubernetes.audiences, vec!["tempo".to_string()]);
    }

    #[test]
    fn unknown_field_is_named() {
        let err = Config::from_yaml("cache:\n  max_entrys: 5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("cache") && err.contains("max_entrys"), "{err}");
    }

    #[test]
    fn bad_value_is_named() {
        let err = Config::from_yaml("cache:\n  allowed_ttl: soon\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("cache.allowed_ttl"), "{err}");
        let err = Config::from_yaml("grpc_addr: nowhere\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("grpc_addr"), "{err}");
    }

    #[test]
    fn validate_names_the_field() {
        let c = Config {
            tenant_header: "X-Scope-OrgID".into(),
            ..Config::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("tenant_header"));
        let mut c = Config::default();
        c.cache.max_entries = 20_000_000;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("cache.max_entries"));
        let mut c = Config::default();
        c.kubernetes.max_concurrent_reviews = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("kubernetes.max_concurrent_reviews"));
        for yaml in [
            "cache:\n  allowed_ttl: 1000000000y\n",
            "cache:\n  identity_ttl: 25h\n",
        ] {
            let err = Config::from_yaml(yaml)
                .and_then(|c| c.validate())
                .unwrap_err()
                .to_string();
            assert!(err.contains("cache."), "{yaml}: {err}");
        }
        let mut c = Config::default();
        c.kubernetes.max_reviews_per_check = 33;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("kubernetes.max_reviews_per_check"));
        let mut c = Config::default();
        c.actions.rules[0].path = Some("v1/traces".into());
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("actions.rules[0]"));
    }

    #[test]
    fn static_section_is_validated_field_by_field() {
        let base = "backend: static\nstatic:\n  identities:\n  - sha256: SHA\n    username: u\n  grants:\n  - users: [u]\n    tenants: [TENANT]\n    actions: [read]\n";
        let good = "a".repeat(64);
        let ok = base.replace("SHA", &good).replace("TENANT", "team-a");
        Config::from_yaml(&ok).unwrap().validate().unwrap();
        let cases = [
            (
                base.replace("SHA", "abc").replace("TENANT", "a"),
                "static.identities[0].sha256",
            ),
            (
                base.replace("SHA", &"A".repeat(64)).replace("TENANT", "a"),
                "static.identities[0].sha256",
            ),
            (
                base.replace("SHA", &good).replace("TENANT", "Team"),
                "static.grants[0].tenants[0]",
            ),
            (
                base.replace("SHA", &good)
                    .replace("TENANT", "a")
                    .replace("backend: static", "backend: kubernetes"),
                "static",
            ),
        ];
        for (yaml, field) in cases {
            let err = Config::from_yaml(&yaml)
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("field {field}:")), "{err}");
        }
        let wildcard = base.replace("SHA", &good).replace("TENANT", "\"*\"");
        Config::from_yaml(&wildcard).unwrap().validate().unwrap();
    }

    #[test]
    fn default_action_table_matches_tempo() {
        let a = ActionConfig::default();
        let w = Some(Action::Write);
        let r = Some(Action::Read);
        let m = Some(Action::Manage);
        assert_eq!(a.infer("POST", "/v1/traces"), w);
        assert_eq!(
            a.infer(
                "POST",
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
            ),
            w
        );
        assert_eq!(a.infer("POST", "/api/traces"), w);
        assert_eq!(a.infer("POST", "/api/v2/spans"), w);
        for method in ["POST", "PUT", "PATCH", "DELETE"] {
            assert_eq!(a.infer(method, "/api/overrides"), m, "{method}");
        }
        assert_eq!(a.infer("GET", "/api/overrides"), r);
        assert_eq!(a.infer("GET", "/api/search"), r);
        assert_eq!(a.infer("GET", "/api/traces/abc"), r);
        assert_eq!(a.infer("POST", "/api/search"), r);
        assert_eq!(a.infer("POST", "/api/v2/traces/diff"), r);
        assert_eq!(a.infer("POST", "/tempopb.StreamingQuerier/Search"), r);
    }

    #[test]
    fn ingest_paths_need_write_whatever_the_method() {
        let a = ActionConfig::default();
        for (method, path) in [
            ("PUT", "/api/v2/spans"),
            ("POST", "/api/v1/spans"),
            ("POST", "/jaeger.api_v2.CollectorService/PostSpans"),
            (
                "POST",
                "/opencensus.proto.agent.trace.v1.TraceService/Export",
            ),
            ("PUT", "/v1/traces"),
        ] {
            assert_eq!(
                a.infer(method, path),
                Some(Action::Write),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn unmatched_unsafe_methods_need_write() {
        let a = ActionConfig::default();
        assert_eq!(a.infer("POST", "/"), Some(Action::Write));
        assert_eq!(a.infer("POST", "/something/new"), Some(Action::Write));
        assert_eq!(a.infer("DELETE", "/api/whatever"), Some(Action::Write));
        assert_eq!(a.infer("GET", "/something/new"), Some(Action::Read));
        assert_eq!(a.infer("POST", "/api/overridesx"), Some(Action::Write));
    }

    #[test]
    fn operations_endpoints_are_denied() {
        let a = ActionConfig::default();
        for (method, path) in [
            ("GET", "/shutdown"),
            ("POST", "/flush"),
            ("GET", "/metrics"),
            ("GET", "/debug/pprof/heap"),
            ("GET", "/status/config"),
            ("GET", "/memberlist"),
            ("POST", "/ingester/shutdown"),
        ] {
            assert_eq!(a.infer(method, path), None, "{method} {path}");
        }
    }
}
