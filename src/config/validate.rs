//! `Config::validate`: what serde cannot check, each error naming its field.

use std::time::Duration;

use super::{Backend, Config};
use crate::error::Error;

impl Config {
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
        // At most 64 KiB: real tokens are 1-16 KiB, and a bigger bound only makes every
        // scrub of an API answer against the token (is_quoted_in) costlier.
        if !(64..=64 * 1024).contains(&self.max_token_bytes) {
            return invalid(
                "max_token_bytes",
                format!("{} is outside 64..=65536", self.max_token_bytes),
            );
        }
        let ratio = self.log.cached_allow_sample_ratio;
        if !(0.0..=1.0).contains(&ratio) {
            return invalid(
                "log.cached_allow_sample_ratio",
                format!("{ratio} is outside 0.0..=1.0"),
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
        let idle = self.kubernetes.watch_idle_timeout;
        // Above 290 s it would never fire: kube-runtime's own idle timeout (the watch's
        // server-side timeout, 290 s, plus 5 s) ends a quiet stream first, as a clean end
        // resumed without a relist and without counting the watch down.
        if idle < Duration::from_secs(1) || idle > Duration::from_secs(290) {
            return invalid(
                "kubernetes.watch_idle_timeout",
                "must be within 1s..=290s (above, kube-runtime's own 295 s idle timeout ends a quiet watch first; below the API server's 1 min bookmark period a quiet watch is taken as dead)".into(),
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
        self.traces.validate()?;
        let named = |(field, reason): (String, String)| Error::ConfigInvalid { field, reason };
        self.actions.validate("actions").map_err(named)?;
        self.products.validate().map_err(named)?;
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
