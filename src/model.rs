//! Pure domain types: what a Check is about, and what it decides. No proto, no kube types.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

/// The raw bearer token. It has no `Debug`, `Display`, `Clone` or `Serialize`: the only things
/// that can be done with it are hashing it once, reading its (unverified) JWT expiry, and lending
/// it to the reviewer that sends it to the TokenReview API.
pub struct BearerToken(String);

impl BearerToken {
    /// Only the request parser builds tokens, after checking scheme, characters and length.
    pub(crate) fn new(token: String) -> Self {
        Self(token)
    }

    /// Wraps a token that did not come from a request (the `hash-token` command, tests).
    pub fn from_secret(token: String) -> Self {
        Self(token)
    }

    /// The secret itself: for the TokenReview request body and nothing else.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.0.as_bytes()).into())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when `text` quotes the token or any 12-byte piece of it. Used to keep an API
    /// server's error message out of logs and responses if it ever echoes the credential.
    pub fn is_quoted_in(&self, text: &str) -> bool {
        const WINDOW: usize = 12;
        let token = self.0.as_bytes();
        let text = text.as_bytes();
        if token.len() < WINDOW || text.len() < WINDOW {
            return !token.is_empty() && text.windows(token.len().max(1)).any(|w| w == token);
        }
        // O(text + token), not O(text × token): the text can be an API answer of up to 1 MiB.
        let pieces: std::collections::HashSet<&[u8]> = token.windows(WINDOW).collect();
        text.windows(WINDOW).any(|w| pieces.contains(w))
    }
}

/// SHA-256 of a bearer token: the only form in which a token is ever kept (cache keys).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    pub fn to_hex(&self) -> String {
        use fmt::Write;
        self.0.iter().fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A hash is not a secret, but a short form is enough to correlate.
        write!(f, "TokenHash({}…)", &self.to_hex()[..12])
    }
}

/// A tenant: a Kubernetes namespace name (DNS-1123 label). Only `Tenant::parse` builds one, so no
/// code after the request parser can see an unvalidated tenant.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tenant(Arc<str>);

impl Tenant {
    pub const MAX_LEN: usize = 63;

    pub fn parse(value: &str) -> Result<Self, TenantError> {
        if value.is_empty() {
            return Err(TenantError::Empty);
        }
        if value.len() > Self::MAX_LEN {
            return Err(TenantError::TooLong { len: value.len() });
        }
        if let Some(c) = value
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(TenantError::BadChar { c });
        }
        if value.starts_with('-') || value.ends_with('-') {
            return Err(TenantError::Hyphen);
        }
        Ok(Self(value.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tenant({})", self.0)
    }
}

/// Why a tenant name is not a Kubernetes namespace name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantError {
    #[error("tenant is empty")]
    Empty,
    #[error("tenant is {len} characters long; a namespace name has at most 63")]
    TooLong { len: usize },
    #[error("tenant contains {c:?}; a namespace name has only lowercase letters, digits and '-'")]
    BadChar { c: char },
    #[error(
        "tenant starts or ends with '-'; a namespace name starts and ends with a letter or digit"
    )]
    Hyphen,
}

/// One or more distinct tenants of a request (Tempo's cross-tenant `a|b`), in the client's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenants {
    list: Vec<Tenant>,
    /// Shared: the decision log keeps it past the decision without a copy.
    canonical: std::sync::Arc<str>,
}

impl Tenants {
    /// Builds the set from already-parsed tenants; `None` if empty or with a repeat.
    pub fn new(list: Vec<Tenant>) -> Option<Self> {
        if list.is_empty() {
            return None;
        }
        for (i, t) in list.iter().enumerate() {
            if list[..i].contains(t) {
                return None;
            }
        }
        let canonical = match list.as_slice() {
            [one] => one.as_str().into(),
            _ => list
                .iter()
                .map(Tenant::as_str)
                .collect::<Vec<_>>()
                .join("|")
                .into(),
        };
        Some(Self { list, canonical })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Tenant> {
        self.list.iter()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The value sent upstream in the tenant header: `a` or `a|b`.
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// [`Tenants::canonical`], shared without a copy.
    pub fn canonical_shared(&self) -> std::sync::Arc<str> {
        self.canonical.clone()
    }
}

/// What a request does to a tenant's traces; mapped to a SAR verb by configuration.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Query traces (Tempo query frontend).
    Read,
    /// Ingest traces (Tempo distributor).
    Write,
    /// Change a tenant's runtime overrides (Tempo `/api/overrides` with a non-GET method).
    Manage,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
            Action::Manage => "manage",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "read" => Some(Action::Read),
            "write" => Some(Action::Write),
            "manage" => Some(Action::Manage),
            _ => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which backend a request is for: each has its own route table and its own SAR resource.
/// Chosen per route (`context_extensions: {product: loki}`), per listener port, or by default.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Product {
    /// Grafana Tempo: traces.
    Tempo,
    /// Grafana Loki: logs.
    Loki,
    /// Grafana Mimir: metrics.
    Mimir,
    /// Grafana Pyroscope: profiles.
    Pyroscope,
}

impl Product {
    /// Every product, in the order of [`Product::index`].
    pub const ALL: [Product; 4] = [
        Product::Tempo,
        Product::Loki,
        Product::Mimir,
        Product::Pyroscope,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Product::Tempo => "tempo",
            Product::Loki => "loki",
            Product::Mimir => "mimir",
            Product::Pyroscope => "pyroscope",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == value)
    }

    /// Position in [`Product::ALL`] (per-product tables).
    pub fn index(self) -> usize {
        self as usize
    }

    /// What a tenant's data is called in this product, for messages: `traces`, `logs`, ...
    pub fn data(self) -> &'static str {
        match self {
            Product::Tempo => "traces",
            Product::Loki => "logs",
            Product::Mimir => "metrics",
            Product::Pyroscope => "profiles",
        }
    }
}

impl fmt::Display for Product {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Product {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
            .ok_or_else(|| format!("{s:?} is not a product: tempo, loki, mimir or pyroscope"))
    }
}

/// Who the token belongs to, as the TokenReview said.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Identity {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// Why a request was not allowed. Every variant's message is meant for the person at the client;
/// none carries a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DenyReason {
    /// No `Authorization` header.
    MissingCredentials,
    /// `Authorization` present but not a usable bearer token.
    MalformedCredentials(&'static str),
    /// The token exceeds the configured size limit.
    TokenTooLong { limit: usize },
    /// The TokenReview did not authenticate the token.
    Unauthenticated { detail: Option<String> },
    /// The tenant header is missing or invalid.
    BadTenant(String),
    /// The SubjectAccessReview denied one tenant.
    Forbidden {
        user: String,
        tenant: Tenant,
        product: Product,
        action: Action,
        /// What would grant it, in the backend's terms.
        remedy: String,
        detail: Option<String>,
    },
    /// Inferred action only: the path is an operations endpoint (rings, flush, shutdown, every
    /// tenant's limits), never served to tenants.
    NotTenantPath,
    /// The decision could not be made (API error, timeout): fail closed.
    Unavailable(String),
    /// The route's configuration is wrong (e.g. an unknown `action` context extension).
    Misconfigured(String),
}

impl DenyReason {
    /// HTTP status the client gets.
    pub fn http_status(&self) -> u16 {
        match self {
            DenyReason::MissingCredentials
            | DenyReason::MalformedCredentials(_)
            | DenyReason::TokenTooLong { .. }
            | DenyReason::Unauthenticated { .. } => 401,
            DenyReason::BadTenant(_) => 400,
            DenyReason::Forbidden { .. } | DenyReason::NotTenantPath => 403,
            DenyReason::Unavailable(_) => 503,
            DenyReason::Misconfigured(_) => 500,
        }
    }

    /// Bounded label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        Self::KINDS[self.kind_index()]
    }

    /// Every value of [`DenyReason::kind`], indexed by [`DenyReason::kind_index`].
    pub const KINDS: [&'static str; 9] = [
        "missing_credentials",
        "malformed_credentials",
        "token_too_long",
        "unauthenticated",
        "bad_tenant",
        "forbidden",
        "not_tenant_path",
        "unavailable",
        "misconfigured",
    ];

    /// Position of this reason's kind in [`DenyReason::KINDS`] (metric handle tables).
    pub fn kind_index(&self) -> usize {
        match self {
            DenyReason::MissingCredentials => 0,
            DenyReason::MalformedCredentials(_) => 1,
            DenyReason::TokenTooLong { .. } => 2,
            DenyReason::Unauthenticated { .. } => 3,
            DenyReason::BadTenant(_) => 4,
            DenyReason::Forbidden { .. } => 5,
            DenyReason::NotTenantPath => 6,
            DenyReason::Unavailable(_) => 7,
            DenyReason::Misconfigured(_) => 8,
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DenyReason::MissingCredentials => f.write_str(
                "missing credentials: send a token (with Kubernetes, a service account token) as 'Authorization: Bearer <token>'",
            ),
            DenyReason::MalformedCredentials(why) => write!(f, "malformed credentials: {why}"),
            DenyReason::TokenTooLong { limit } => {
                write!(f, "bearer token is longer than the limit of {limit} bytes")
            }
            DenyReason::Unauthenticated { detail } => {
                f.write_str("token not accepted (expired, revoked, for another audience, or unknown to the backend)")?;
                if let Some(d) = detail {
                    write!(f, ": {d}")?;
                }
                Ok(())
            }
            DenyReason::BadTenant(why) => write!(f, "bad tenant: {why}"),
            DenyReason::Forbidden {
                user,
                tenant,
                product,
                action,
                remedy,
                detail,
            } => {
                write!(
                    f,
                    "user {user:?} may not {action} {} of tenant \"{tenant}\": {remedy}",
                    product.data()
                )?;
                if let Some(d) = detail.as_deref().filter(|d| !d.is_empty()) {
                    write!(f, " ({d})")?;
                }
                Ok(())
            }
            DenyReason::NotTenantPath => f.write_str(
                "this path is an operations endpoint, not a tenant API, and is not served to tenants",
            ),
            DenyReason::Unavailable(why) => {
                write!(f, "cannot decide, failing closed: {why}")
            }
            DenyReason::Misconfigured(why) => write!(f, "proxy misconfigured: {why}"),
        }
    }
}

/// The outcome of a Check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow {
        /// The authenticated user name (for logs and Envoy's access log).
        user: Arc<str>,
        tenants: Tenants,
        action: Action,
        cached: bool,
    },
    Deny {
        reason: DenyReason,
        cached: bool,
    },
}

impl Decision {
    pub fn deny(reason: DenyReason) -> Self {
        Decision::Deny {
            reason,
            cached: false,
        }
    }

    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }

    pub fn cached(&self) -> bool {
        match self {
            Decision::Allow { cached, .. } | Decision::Deny { cached, .. } => *cached,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_accepts_namespace_names() {
        for ok in ["a", "team-a", "0", "a1", &"a".repeat(63)] {
            assert!(Tenant::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn tenant_rejects_what_is_not_a_namespace_name() {
        for bad in [
            "", "Team-A", "team_a", "team.a", "team/a", "../x", "team%2fa", "-team", "team-", "té",
            "a b",
        ] {
            assert!(Tenant::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            Tenant::parse(&"a".repeat(64)),
            Err(TenantError::TooLong { len: 64 })
        );
    }

    #[test]
    fn tenants_reject_empty_and_repeats() {
        let a = Tenant::parse("a").unwrap();
        let b = Tenant::parse("b").unwrap();
        assert!(Tenants::new(vec![]).is_none());
        assert!(Tenants::new(vec![a.clone(), a.clone()]).is_none());
        let t = Tenants::new(vec![a, b]).unwrap();
        assert_eq!(t.canonical(), "a|b");
    }

    #[test]
    fn products_parse_their_own_names_only() {
        for p in Product::ALL {
            assert_eq!(Product::parse(p.as_str()), Some(p));
            assert_eq!(Product::ALL[p.index()], p);
        }
        for bad in ["", "Tempo", "grafana", "loki ", "traces"] {
            assert_eq!(Product::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn token_hash_is_sha256() {
        let h = BearerToken::from_secret("abc".into()).hash();
        assert_eq!(
            h.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn quoted_token_is_detected_by_any_12_byte_piece() {
        let t = BearerToken::from_secret("eyJhbGciOiJSUzI1NiJ9.payload.signature".into());
        assert!(t.is_quoted_in("error: token eyJhbGciOiJS was rejected"));
        assert!(t.is_quoted_in("...ad.signature"));
        assert!(!t.is_quoted_in("[invalid bearer token, token lookup failed]"));
    }
}
