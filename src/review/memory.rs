//! An in-memory reviewer for unit tests and benchmarks: tokens by hash, grants as
//! (user, tenant, action), call counters, an optional latency and an outage switch.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::{Authentication, ReviewError, ReviewKind, Reviewer, Revocable, Verdict};
use crate::model::{Action, BearerToken, Identity, Product, Tenant, TokenHash};

#[derive(Default)]
pub struct MemoryReviewer {
    identities: Mutex<HashMap<TokenHash, Identity>>,
    grants: Mutex<HashSet<(String, String, Action)>>,
    latency: Mutex<Duration>,
    down: AtomicBool,
    token_reviews: AtomicUsize,
    access_reviews: AtomicUsize,
}

impl MemoryReviewer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add_token(&self, token: &str, username: &str) {
        let hash = BearerToken::from_secret(token.to_string()).hash();
        let identity = Identity {
            username: username.to_string(),
            ..Identity::default()
        };
        lock(&self.identities).insert(hash, identity);
    }

    /// The token is no longer known (its ServiceAccount was deleted): reviews now say so.
    pub fn remove_token(&self, token: &str) {
        let hash = BearerToken::from_secret(token.to_string()).hash();
        lock(&self.identities).remove(&hash);
    }

    pub fn grant(&self, username: &str, tenant: &str, action: Action) {
        lock(&self.grants).insert((username.to_string(), tenant.to_string(), action));
    }

    pub fn revoke(&self, username: &str, tenant: &str, action: Action) {
        lock(&self.grants).remove(&(username.to_string(), tenant.to_string(), action));
    }

    pub fn set_latency(&self, latency: Duration) {
        *lock(&self.latency) = latency;
    }

    /// While down, every review fails as if the API server refused connections.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    pub fn token_reviews(&self) -> usize {
        self.token_reviews.load(Ordering::SeqCst)
    }

    pub fn access_reviews(&self) -> usize {
        self.access_reviews.load(Ordering::SeqCst)
    }

    async fn pause(&self, kind: ReviewKind) -> Result<(), ReviewError> {
        let latency = *lock(&self.latency);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(ReviewError::Transport {
                kind,
                message: "connection refused".into(),
            });
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Reviewer for MemoryReviewer {
    async fn authenticate(&self, token: &BearerToken) -> Result<Authentication, ReviewError> {
        self.token_reviews.fetch_add(1, Ordering::SeqCst);
        let hash = token.hash();
        self.pause(ReviewKind::Authenticate).await?;
        Ok(match lock(&self.identities).get(&hash) {
            Some(identity) => Authentication::Authenticated {
                identity: identity.clone(),
                audiences: Vec::new(),
            },
            None => Authentication::Unauthenticated { detail: None },
        })
    }

    async fn authorize(
        &self,
        identity: &Identity,
        tenant: &Tenant,
        _product: Product,
        action: Action,
    ) -> Result<Verdict, ReviewError> {
        self.access_reviews.fetch_add(1, Ordering::SeqCst);
        self.pause(ReviewKind::Authorize).await?;
        let key = (identity.username.clone(), tenant.to_string(), action);
        Ok(if lock(&self.grants).contains(&key) {
            Verdict::Allowed
        } else {
            Verdict::Denied { detail: None }
        })
    }

    fn name(&self) -> &'static str {
        "the in-memory backend"
    }

    fn remedy(&self, tenant: &Tenant, _product: Product, action: Action) -> String {
        format!("grant {action} on \"{tenant}\"")
    }

    /// As the Kubernetes API's users: it stands in for it in the engine's tests.
    fn revocable<'a>(&self, identity: &'a Identity) -> Revocable<'a> {
        super::kube::revocable(identity)
    }
}
