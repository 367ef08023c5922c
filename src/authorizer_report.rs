//! What the caches hold, for `GET /debug/cache`: entry counts and TTLs per tier, and on
//! request the counts of one user. Never a key (token hashes) and never a user name.

use std::time::Duration;

use serde::Serialize;

use super::{Authorizer, WatchHealth};
use crate::model::DenyReason;
use crate::review::Reviewer;

/// The caches at a glance.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CacheReport {
    pub identities: TierReport,
    pub unauthenticated: TierReport,
    pub allowed: TierReport,
    pub denied: TierReport,
    /// Which watches are synced and up (the long TTLs need them).
    pub watches: WatchesReport,
    /// Entries of the one user asked about (`?user=`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<UserCounts>,
}

/// One cache tier.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TierReport {
    /// Entries held, expired ones included until they are read or evicted (as the
    /// `cache_entries` metric counts them).
    pub entries: u64,
    pub max_entries: u64,
    /// The configured TTL (`cache.*_ttl`).
    pub ttl_seconds: f64,
    /// The long TTL used while the watches are up (`cache.watched_*_ttl`), for the tiers that
    /// have one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watched_ttl_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watched_ttl_in_force: Option<bool>,
    /// The longest a new entry is used now (the watched TTL when in force, capped by what
    /// could revoke it).
    pub effective_ttl_seconds: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct WatchesReport {
    pub rbac: bool,
    pub service_accounts: bool,
    /// `null`: pods are not watched (`kubernetes.watch_pods: false`).
    pub pods: Option<bool>,
}

/// Unexpired entries of one user (a rejected token has no user: no `unauthenticated`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UserCounts {
    pub identities: u64,
    pub allowed: u64,
    pub denied: u64,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn capped(ttl: Duration, cap: Option<Duration>) -> Duration {
    cap.map_or(ttl, |cap| ttl.min(cap))
}

impl<R: Reviewer> Authorizer<R> {
    /// Counts and TTLs of every tier; with `user`, also the entries of that user (an O(n)
    /// scan of the caches, one shard lock at a time).
    pub fn cache_report(&self, user: Option<&str>) -> CacheReport {
        let c = &self.settings.cache;
        let health: WatchHealth = self.watch_health();
        let (decision_cap, identity_cap) = self.age_caps(health);
        let (identities, unauthenticated) = self.identities.sizes();
        let (allowed, denied) = self.decisions.sizes();
        // The watched identity TTL applies to ServiceAccount tokens (pod-bound ones also need
        // `kubernetes.watch_pods`); other users keep `identity_ttl`.
        let identity_ttl = if health.service_accounts {
            c.watched_identity_ttl
        } else {
            c.identity_ttl
        };
        let user = user.map(|name| {
            let (identities, _) = self
                .identities
                .count_where(|known| &*known.user == name, |_| false);
            let (allowed, denied) = self.decisions.count_where(
                |principal| &*principal.user == name,
                |reason| matches!(&**reason, DenyReason::Forbidden { user, .. } if user == name),
            );
            UserCounts {
                identities,
                allowed,
                denied,
            }
        });
        CacheReport {
            identities: TierReport {
                entries: identities,
                max_entries: c.max_identities,
                ttl_seconds: secs(c.identity_ttl),
                watched_ttl_seconds: Some(secs(c.watched_identity_ttl)),
                watched_ttl_in_force: Some(health.service_accounts),
                effective_ttl_seconds: secs(capped(identity_ttl, identity_cap)),
            },
            unauthenticated: TierReport {
                entries: unauthenticated,
                max_entries: c.max_negative_entries,
                ttl_seconds: secs(c.unauthenticated_ttl),
                watched_ttl_seconds: None,
                watched_ttl_in_force: None,
                effective_ttl_seconds: secs(c.unauthenticated_ttl),
            },
            allowed: TierReport {
                entries: allowed,
                max_entries: c.max_entries,
                ttl_seconds: secs(c.allowed_ttl),
                watched_ttl_seconds: Some(secs(c.watched_allowed_ttl)),
                watched_ttl_in_force: Some(health.rbac),
                effective_ttl_seconds: secs(capped(self.allowed_ttl(), decision_cap)),
            },
            denied: TierReport {
                entries: denied,
                max_entries: c.max_negative_entries,
                ttl_seconds: secs(c.denied_ttl),
                watched_ttl_seconds: None,
                watched_ttl_in_force: None,
                effective_ttl_seconds: secs(c.denied_ttl),
            },
            watches: WatchesReport {
                rbac: health.rbac,
                service_accounts: health.service_accounts,
                pods: health.pods,
            },
            user,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prometheus_client::registry::Registry;

    use super::super::{Authorizer, AuthorizerSettings, WatchHealth};
    use crate::config::CacheConfig;
    use crate::metrics::Metrics;
    use crate::model::{Action, BearerToken, Tenant, Tenants};
    use crate::review::memory::MemoryReviewer;

    fn authorizer() -> Authorizer<MemoryReviewer> {
        let reviewer = MemoryReviewer::new();
        reviewer.add_token("tok-alice", "alice");
        reviewer.add_token("tok-bob", "bob");
        reviewer.grant("alice", "a", Action::Read);
        reviewer.grant("bob", "a", Action::Read);
        let metrics = Arc::new(Metrics::register(&mut Registry::default()));
        Authorizer::new(
            reviewer,
            AuthorizerSettings {
                cache: CacheConfig::default(),
                decision_timeout: std::time::Duration::from_secs(1),
                max_concurrent_reviews: 4,
                max_reviews_per_check: 4,
            },
            metrics,
        )
    }

    fn tenants(names: &[&str]) -> Tenants {
        Tenants::new(names.iter().map(|t| Tenant::parse(t).unwrap()).collect()).unwrap()
    }

    async fn read(a: &Authorizer<MemoryReviewer>, token: &str, t: &[&str]) -> bool {
        let token = BearerToken::from_secret(token.to_string());
        a.check(&token, tenants(t), Action::Read).await.is_allowed()
    }

    #[tokio::test]
    async fn counts_per_tier_and_per_user_without_names() {
        let a = authorizer();
        assert!(read(&a, "tok-alice", &["a"]).await);
        assert!(!read(&a, "tok-alice", &["b"]).await);
        assert!(read(&a, "tok-bob", &["a"]).await);
        assert!(!read(&a, "tok-nobody", &["a"]).await);

        let all = a.cache_report(None);
        assert_eq!(
            (
                all.identities.entries,
                all.unauthenticated.entries,
                all.allowed.entries,
                all.denied.entries
            ),
            (2, 1, 2, 1)
        );
        assert_eq!(all.user, None);
        let json = serde_json::to_string(&all).unwrap();
        assert!(!json.contains("alice") && !json.contains("bob"), "{json}");

        let alice = a.cache_report(Some("alice")).user.unwrap();
        assert_eq!((alice.identities, alice.allowed, alice.denied), (1, 1, 1));
        let nobody = a.cache_report(Some("carol")).user.unwrap();
        assert_eq!(nobody, Default::default());
    }

    #[test]
    fn watched_ttls_are_in_force_only_while_the_watches_are_up() {
        let a = authorizer();
        let down = a.cache_report(None);
        assert_eq!(down.allowed.watched_ttl_in_force, Some(false));
        assert_eq!(down.allowed.effective_ttl_seconds, 60.0);
        assert_eq!(down.identities.effective_ttl_seconds, 120.0);
        a.set_watch_health(WatchHealth {
            rbac: true,
            service_accounts: true,
            pods: None,
        });
        let up = a.cache_report(None);
        assert_eq!(up.allowed.watched_ttl_in_force, Some(true));
        assert_eq!(up.allowed.effective_ttl_seconds, 600.0);
        assert_eq!(up.identities.effective_ttl_seconds, 600.0);
        // RBAC watched but not ServiceAccounts: an allow must not outlive its identity TTL.
        a.set_watch_health(WatchHealth {
            rbac: true,
            service_accounts: false,
            pods: None,
        });
        assert_eq!(a.cache_report(None).allowed.effective_ttl_seconds, 120.0);
    }
}
