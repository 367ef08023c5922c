//! The decision engine: token -> identity (cached) -> one SAR per tenant (cached) -> Decision.
//! Knows no proto and no kube types; the outside world is a [`Reviewer`].
//!
//! Memory: a cached decision holds only the user name (shared by the token's decisions), not
//! the identity, and lives no longer than the identity it was made for. The full identity
//! (groups, `extra`) is needed only to ask a new question, so it sits in a smaller cache of its
//! own: a token whose identity was evicted keeps its cached decisions and pays one TokenReview
//! only when it asks about a new tenant or action.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::stream::StreamExt;
use tokio::time::{timeout_at, Instant};

use base64::Engine;
use tokio::sync::Semaphore;

use crate::cache::{Outcome, Scope, Scoping, Source, Tier, Timed};
use crate::config::CacheConfig;
use crate::metrics::{CacheName, CacheResult, Metrics};
use crate::model::{
    Action, BearerToken, Decision, DenyReason, Identity, Product, Tenant, Tenants, TokenHash,
};
use crate::review::{Authentication, ReviewError, ReviewKind, Reviewer, Verdict};

/// Settings of the engine, taken from the config.
#[derive(Clone, Debug)]
pub struct AuthorizerSettings {
    pub cache: CacheConfig,
    pub decision_timeout: Duration,
    pub max_concurrent_reviews: usize,
    pub max_reviews_per_check: usize,
}

/// An authenticated identity and until when it may be used.
pub struct KnownIdentity {
    pub identity: Identity,
    /// The user name, shared with every decision cached for this token.
    pub user: Arc<str>,
    /// Who the decisions of this token were made for, shared by all of them: the user and,
    /// for a pod-bound token, the pod (so a deleted pod drops them, identity cached or not).
    pub principal: Arc<Principal>,
    pub expires_at: Instant,
    /// The identities cache's epoch when the TokenReview began: a decision made with an
    /// identity whose user was invalidated since is answered but not cached.
    pub epoch: u64,
}

/// Key of an authorization decision: the token's hash, a tenant, a product, an action. Never
/// the token. (An allow to read a tenant's traces answers nothing about its logs.)
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct DecisionKey {
    pub token: TokenHash,
    pub tenant: Tenant,
    pub product: Product,
    pub action: Action,
}

/// The invalidation scope of a tenant's decisions.
pub fn tenant_scope(tenant: &Tenant) -> Scope {
    Scope::of("tenant", tenant.as_str())
}

/// The invalidation scope of a user's identities and decisions.
pub fn user_scope(username: &str) -> Scope {
    Scope::of("user", username)
}

/// The invalidation scope of the tokens bound to one pod (by its UID).
pub fn pod_scope(pod_uid: &str) -> Scope {
    Scope::of("pod", pod_uid)
}

/// What a cached allow was decided for.
#[derive(Debug)]
pub struct Principal {
    pub user: Arc<str>,
    pub pod_uid: Option<Box<str>>,
}

impl Principal {
    fn scopes(&self) -> [Option<Scope>; 2] {
        [
            Some(user_scope(&self.user)),
            self.pod_uid.as_deref().map(pod_scope),
        ]
    }
}

/// Changes to drop from the caches at once (a batch of watch events).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Invalidation {
    /// Tenants whose decisions go (allows and denials).
    pub tenants: std::collections::HashSet<Tenant>,
    /// Users whose identities and decisions go.
    pub users: std::collections::HashSet<String>,
    /// Pods (UIDs) whose bound tokens' identities and decisions go.
    pub pods: std::collections::HashSet<String>,
    /// Every decision goes (identities stay).
    pub all_decisions: bool,
}

impl Invalidation {
    pub fn is_empty(&self) -> bool {
        !self.all_decisions
            && self.tenants.is_empty()
            && self.users.is_empty()
            && self.pods.is_empty()
    }

    pub fn merge(&mut self, other: Invalidation) {
        self.tenants.extend(other.tenants);
        self.users.extend(other.users);
        self.pods.extend(other.pods);
        self.all_decisions |= other.all_decisions;
    }
}

/// Which watches are synced and up: while one is, the matching TTL may be the long one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchHealth {
    /// Roles, RoleBindings, ClusterRoles, ClusterRoleBindings and Namespaces.
    pub rbac: bool,
    pub service_accounts: bool,
    /// `None`: pods are not watched (`kubernetes.watch_pods: false`).
    pub pods: Option<bool>,
}

impl WatchHealth {
    /// Whether a deleted ServiceAccount, or pod when pods are watched, is seen at once.
    fn identities_watched(&self) -> bool {
        self.service_accounts && self.pods != Some(false)
    }
}

type Failure = ReviewError;

/// What the watches ask of the engine, in its own words (no Kubernetes types): which answers
/// to drop, and whether the long TTLs may be used.
pub trait Invalidate: Send + Sync + 'static {
    fn invalidate(&self, batch: &Invalidation);
    fn set_watch_health(&self, health: WatchHealth);
}

impl<R: Reviewer> Invalidate for Authorizer<R> {
    fn invalidate(&self, batch: &Invalidation) {
        Authorizer::invalidate(self, batch)
    }
    fn set_watch_health(&self, health: WatchHealth) {
        Authorizer::set_watch_health(self, health)
    }
}

/// Decides Checks. Cheap to share behind an `Arc`.
pub struct Authorizer<R> {
    reviewer: R,
    identities: Tier<TokenHash, Arc<KnownIdentity>, Arc<DenyReason>, Failure>,
    decisions: Tier<DecisionKey, Arc<Principal>, Arc<DenyReason>, Failure>,
    health: std::sync::Mutex<WatchHealth>,
    /// Two budgets, so that one cannot starve the other: TokenReviews are what anyone can
    /// cause with garbage tokens; SARs only an identity the API authenticated can.
    token_review_permits: Semaphore,
    access_review_permits: Semaphore,
    settings: AuthorizerSettings,
    metrics: Arc<Metrics>,
}

impl<R: Reviewer> Authorizer<R> {
    pub fn new(reviewer: R, settings: AuthorizerSettings, metrics: Arc<Metrics>) -> Self {
        let c = &settings.cache;
        Self {
            reviewer,
            identities: Tier::new(
                c.max_identities,
                c.max_negative_entries,
                Scoping {
                    key: |_| None,
                    positive: |known| known.principal.scopes(),
                    negative: |_| [None, None],
                },
            ),
            decisions: Tier::new(
                c.max_entries,
                c.max_negative_entries,
                Scoping {
                    key: |k| Some(tenant_scope(&k.tenant)),
                    positive: |principal| principal.scopes(),
                    negative: |reason| match &**reason {
                        DenyReason::Forbidden { user, .. } => [Some(user_scope(user)), None],
                        _ => [None, None],
                    },
                },
            ),
            health: std::sync::Mutex::new(WatchHealth::default()),
            token_review_permits: Semaphore::new((settings.max_concurrent_reviews / 2).max(1)),
            access_review_permits: Semaphore::new(
                (settings.max_concurrent_reviews - settings.max_concurrent_reviews / 2).max(1),
            ),
            settings,
            metrics,
        }
    }

    pub fn reviewer(&self) -> &R {
        &self.reviewer
    }

    /// Decides whether `token` may do `action` on every tenant, within the decision deadline.
    /// Never fails: an outage is a `Deny` with `Unavailable` (HTTP 503). A definite denial of
    /// one tenant is answered as soon as it is known, even while other tenants are pending.
    pub async fn check(&self, token: &BearerToken, tenants: Tenants, action: Action) -> Decision {
        self.check_in(token, tenants, Product::Tempo, action).await
    }

    /// [`Authorizer::check`] for a request to `product`: its SAR resource, its cache entries.
    pub async fn check_in(
        &self,
        token: &BearerToken,
        tenants: Tenants,
        product: Product,
        action: Action,
    ) -> Decision {
        let hash = token.hash();
        // Fast path: every tenant's answer is cached. No identity, no await, one shard lock
        // each; a cached denial answers even when the token's identity was evicted.
        match self.cached_answer(hash, &tenants, product, action) {
            Some(Ok(user)) => {
                self.metrics
                    .cache_lookup(CacheName::Decision, CacheResult::Hit);
                return Decision::Allow {
                    user,
                    tenants,
                    action,
                    cached: true,
                };
            }
            Some(Err(reason)) => {
                self.metrics
                    .cache_lookup(CacheName::Decision, CacheResult::NegativeHit);
                return Decision::Deny {
                    reason: Arc::unwrap_or_clone(reason),
                    cached: true,
                };
            }
            None => {}
        }
        let deadline = Instant::now() + self.settings.decision_timeout;
        let (identity, id_source) = match timeout_at(deadline, self.identity(token, hash)).await {
            Ok(Ok(found)) => found,
            Ok(Err(deny)) => return deny,
            Err(_) => return Decision::deny(self.deadline_passed()),
        };
        let mut all_cached = id_source.is_cached();
        let mut unavailable = None;
        {
            // At most `max_reviews_per_check` tenants in progress at once, so one request naming
            // 64 tenants cannot take the whole SAR budget from everyone else.
            // (Collected first: a lazy `map` over the iterator trips the compiler's
            // higher-ranked lifetime check for `Send` futures.)
            let asks: Vec<_> = tenants
                .iter()
                .map(|t| {
                    timeout_at(
                        deadline,
                        self.authorize(&identity, hash, t, product, action),
                    )
                })
                .collect();
            let mut pending = futures::stream::iter(asks)
                .buffer_unordered(self.settings.max_reviews_per_check.max(1));
            while let Some(answer) = pending.next().await {
                match answer {
                    Ok(Ok(source)) => all_cached &= source.is_cached(),
                    Ok(Err((reason, source))) if !matches!(*reason, DenyReason::Unavailable(_)) => {
                        return Decision::Deny {
                            reason: Arc::unwrap_or_clone(reason),
                            cached: source.is_cached(),
                        };
                    }
                    Ok(Err((reason, _))) => unavailable = unavailable.or(Some(reason)),
                    Err(_) => unavailable = unavailable.or(Some(Arc::new(self.deadline_passed()))),
                }
            }
        }
        if let Some(reason) = unavailable {
            return Decision::deny(Arc::unwrap_or_clone(reason));
        }
        Decision::Allow {
            user: identity.user.clone(),
            tenants,
            action,
            cached: all_cached,
        }
    }

    /// The user if every tenant's allow is cached, a cached denial of any tenant, or `None`
    /// when something must be asked.
    fn cached_answer(
        &self,
        hash: TokenHash,
        tenants: &Tenants,
        product: Product,
        action: Action,
    ) -> Option<Result<Arc<str>, Arc<DenyReason>>> {
        let mut principal = None;
        let mut complete = true;
        for tenant in tenants.iter() {
            let key = DecisionKey {
                token: hash,
                tenant: tenant.clone(),
                product,
                action,
            };
            match self.decisions.get_cached(&key) {
                Some(Ok(p)) => principal = Some(p),
                // A cached denial of any tenant answers, whatever the others are.
                Some(Err(reason)) => return Some(Err(reason)),
                None => complete = false,
            }
        }
        if complete {
            principal.map(|p| Ok(p.user.clone()))
        } else {
            None
        }
    }

    fn deadline_passed(&self) -> DenyReason {
        DenyReason::Unavailable(format!(
            "{} did not answer within the decision deadline of {}",
            self.reviewer.name(),
            humantime::format_duration(self.settings.decision_timeout)
        ))
    }

    /// Authenticates `token`: identity cache, negative cache, then one coalesced TokenReview.
    async fn identity(
        &self,
        token: &BearerToken,
        hash: TokenHash,
    ) -> Result<(Arc<KnownIdentity>, Source), Decision> {
        let cache = &self.settings.cache;
        let step = crate::traces::StepSpan::authenticate();
        let (outcome, source) = self
            .identities
            .get_or_load(&hash, async {
                let epoch = self.identities.epoch();
                let answer = self
                    .review(ReviewKind::Authenticate, self.reviewer.authenticate(token))
                    .await?;
                Ok(match answer {
                    Authentication::Authenticated { identity, .. } => {
                        let ttl =
                            identity_ttl(self.identity_ttl(&identity), token, SystemTime::now());
                        Ok(Timed {
                            value: Arc::new(KnownIdentity {
                                user: identity.username.as_str().into(),
                                principal: Arc::new(Principal {
                                    user: identity.username.as_str().into(),
                                    pod_uid: self
                                        .reviewer
                                        .revocable(&identity)
                                        .bound_to
                                        .map(Into::into),
                                }),
                                identity,
                                // The TTL is at most the configured one (validated, <= 24 h).
                                expires_at: Instant::now()
                                    .checked_add(ttl)
                                    .unwrap_or_else(Instant::now),
                                epoch,
                            }),
                            ttl,
                        })
                    }
                    Authentication::Unauthenticated { detail } => Err(Timed {
                        value: Arc::new(DenyReason::Unauthenticated {
                            detail: detail.filter(|d| !token.is_quoted_in(d)),
                        }),
                        ttl: cache.unauthenticated_ttl,
                    }),
                })
            })
            .await;
        self.record_lookup(CacheName::Identity, &outcome, source);
        step.finish(
            source,
            step_outcome(&outcome, "authenticated", "unauthenticated"),
        );
        match outcome {
            Outcome::Positive(identity) => Ok((identity, source)),
            Outcome::Negative(reason) => Err(Decision::Deny {
                reason: Arc::unwrap_or_clone(reason),
                cached: source.is_cached(),
            }),
            Outcome::Failed(e) => Err(Decision::deny(unavailable(&self.reviewer, &e))),
        }
    }

    /// Authorizes one tenant: decision cache, negative cache, then one coalesced SAR.
    async fn authorize(
        &self,
        known: &KnownIdentity,
        hash: TokenHash,
        tenant: &Tenant,
        product: Product,
        action: Action,
    ) -> Result<Source, (Arc<DenyReason>, Source)> {
        let identity = &known.identity;
        let key = DecisionKey {
            token: hash,
            tenant: tenant.clone(),
            product,
            action,
        };
        let cache = &self.settings.cache;
        let step = crate::traces::StepSpan::authorize(tenant);
        let (outcome, source) = self
            .decisions
            .get_or_load(&key, async {
                let answer = self
                    .review(
                        ReviewKind::Authorize,
                        self.reviewer.authorize(identity, tenant, product, action),
                    )
                    .await?;
                Ok(match answer {
                    Verdict::Allowed => Ok(Timed {
                        value: known.principal.clone(),
                        // Never outlive the identity the decision was made for, nor keep a
                        // decision made with an identity from before an invalidation.
                        ttl: if self
                            .identities
                            .scopes_unchanged_since(known.epoch, known.principal.scopes())
                        {
                            self.allowed_ttl()
                                .min(known.expires_at.saturating_duration_since(Instant::now()))
                        } else {
                            Duration::ZERO
                        },
                    }),
                    Verdict::Denied { detail } => Err(Timed {
                        value: Arc::new(DenyReason::Forbidden {
                            user: identity.username.clone(),
                            tenant: tenant.clone(),
                            product,
                            action,
                            remedy: self.reviewer.remedy(tenant, product, action),
                            detail,
                        }),
                        ttl: cache.denied_ttl,
                    }),
                })
            })
            .await;
        self.record_lookup(CacheName::Decision, &outcome, source);
        step.finish(source, step_outcome(&outcome, "allowed", "denied"));
        match outcome {
            Outcome::Positive(_) => Ok(source),
            Outcome::Negative(reason) => Err((reason, source)),
            Outcome::Failed(e) => Err((Arc::new(unavailable(&self.reviewer, &e)), source)),
        }
    }

    /// Runs one review under the concurrency limit, with metrics.
    async fn review<T>(
        &self,
        kind: ReviewKind,
        call: impl std::future::Future<Output = Result<T, ReviewError>>,
    ) -> Result<T, ReviewError> {
        let permits = match kind {
            ReviewKind::Authenticate => &self.token_review_permits,
            ReviewKind::Authorize => &self.access_review_permits,
        };
        // The semaphore is never closed, so acquire cannot fail; map it anyway rather than panic.
        let _permit = permits
            .acquire()
            .await
            .map_err(|_| ReviewError::Transport {
                kind,
                message: "shutting down".into(),
            })?;
        let timer = self.metrics.review_started(kind);
        let result = call.await;
        timer.finish(match &result {
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        });
        if let Err(error) = &result {
            // The operator's view; the client gets a shorter reason (see `unavailable`).
            tracing::warn!(kind = kind.as_str(), outcome = error.outcome(), error = %error.describe(&self.reviewer), "review failed");
        }
        result
    }

    fn record_lookup<P, N>(
        &self,
        cache: CacheName,
        outcome: &Outcome<P, N, Failure>,
        source: Source,
    ) {
        let result = match (source, outcome) {
            (Source::Hit, Outcome::Negative(_)) => CacheResult::NegativeHit,
            (Source::Hit, _) => CacheResult::Hit,
            (Source::Loaded, _) => CacheResult::Miss,
            (Source::Coalesced, _) => CacheResult::Coalesced,
        };
        self.metrics.cache_lookup(cache, result);
    }

    /// Drops every cached decision about `tenant`, allows and denials (a Role or RoleBinding
    /// changed in its namespace, or the namespace went). Other tenants keep theirs, and their
    /// reviews in flight are still stored.
    pub fn invalidate_tenant(&self, tenant: &Tenant) {
        self.invalidate(&Invalidation {
            tenants: [tenant.clone()].into(),
            ..Default::default()
        });
    }

    /// Drops every identity and decision of `username` (its ServiceAccount was deleted or
    /// re-created).
    pub fn invalidate_user(&self, username: &str) {
        self.invalidate(&Invalidation {
            users: [username.to_string()].into(),
            ..Default::default()
        });
    }

    /// Drops the identities and decisions of the tokens bound to the pod `pod_uid` (found by
    /// scope: a decision whose identity was evicted goes too).
    pub fn invalidate_pod(&self, pod_uid: &str) {
        self.invalidate(&Invalidation {
            pods: [pod_uid.to_string()].into(),
            ..Default::default()
        });
    }

    /// Drops every cached decision, allows and denials (a ClusterRole or ClusterRoleBinding
    /// changed: it can grant in any namespace). Identities stay.
    pub fn invalidate_decisions(&self) {
        self.decisions.clear();
    }

    /// Applies a batch of changes in one pass over each cache.
    pub fn invalidate(&self, batch: &Invalidation) {
        if batch.all_decisions {
            self.decisions.clear();
        }
        let people: std::collections::HashSet<Scope> = batch
            .users
            .iter()
            .map(|u| user_scope(u))
            .chain(batch.pods.iter().map(|p| pod_scope(p)))
            .collect();
        self.identities.invalidate_scopes(&people);
        let mut decisions = people;
        decisions.extend(batch.tenants.iter().map(tenant_scope));
        self.decisions.invalidate_scopes(&decisions);
    }

    /// Drops every cached answer (after the static backend's data changed).
    pub fn invalidate_all(&self) {
        self.identities.clear();
        self.decisions.clear();
    }

    /// Which watches are up: long TTLs only while they are, for entries stored before too.
    /// A cached allow is used at most `allowed_ttl` after it was stored while an RBAC watch is
    /// down, and at most `identity_ttl` while the ServiceAccount (or Pod) watch is: a cached
    /// allow does not look at the identity again, so it must not outlive what could revoke it.
    pub fn set_watch_health(&self, health: WatchHealth) {
        let mut current = self.health.lock().unwrap_or_else(|p| p.into_inner());
        *current = health;
        let (decision_cap, identity_cap) = self.age_caps(health);
        self.decisions.set_max_positive_age(decision_cap);
        self.identities.set_max_positive_age(identity_cap);
    }

    /// The longest a cached (allow, identity) is used while `health` holds; `None`: its TTL.
    fn age_caps(&self, health: WatchHealth) -> (Option<Duration>, Option<Duration>) {
        let c = &self.settings.cache;
        let identity_cap = (!health.identities_watched()).then_some(c.identity_ttl);
        let decision_cap = [(!health.rbac).then_some(c.allowed_ttl), identity_cap]
            .into_iter()
            .flatten()
            .min();
        (decision_cap, identity_cap)
    }

    pub fn watch_health(&self) -> WatchHealth {
        *self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn allowed_ttl(&self) -> Duration {
        let c = &self.settings.cache;
        if self.watch_health().rbac {
            c.watched_allowed_ttl
        } else {
            c.allowed_ttl
        }
    }

    /// The identity TTL for `identity`: the long one only for an account whose deletion (and,
    /// for a token bound to an object, that object's) the watches see: with Kubernetes, a
    /// ServiceAccount and its token's pod. Users of other authenticators (OIDC, cloud IAM
    /// webhooks) cannot be revoked by any watch.
    fn identity_ttl(&self, identity: &Identity) -> Duration {
        let c = &self.settings.cache;
        let health = self.watch_health();
        let revocable = self.reviewer.revocable(identity);
        let bound = revocable.bound_to.is_some();
        if revocable.by_account && health.service_accounts && (!bound || health.pods == Some(true))
        {
            c.watched_identity_ttl
        } else {
            c.identity_ttl
        }
    }

    /// Approximate cache sizes, for the scrape-time collector.
    pub fn cache_sizes(&self) -> Vec<(&'static str, u64)> {
        let (ids, unauth) = self.identities.sizes();
        let (allowed, denied) = self.decisions.sizes();
        vec![
            ("identities", ids),
            ("unauthenticated", unauth),
            ("allowed", allowed),
            ("denied", denied),
        ]
    }
}

#[path = "authorizer_report.rs"]
mod report;
pub use report::{CacheReport, TierReport, UserCounts};

/// A step's outcome for its trace span: a bounded word, never an API message.
fn step_outcome<P, N>(
    outcome: &Outcome<P, N, Failure>,
    positive: &'static str,
    negative: &'static str,
) -> Result<&'static str, &'static str> {
    match outcome {
        Outcome::Positive(_) => Ok(positive),
        Outcome::Negative(_) => Ok(negative),
        Outcome::Failed(e) => Err(e.outcome()),
    }
}

/// What the client is told about an outage: which review and how it failed, not the
/// backend's own message (that goes to the log).
fn unavailable<R: Reviewer>(reviewer: &R, e: &ReviewError) -> DenyReason {
    let backend = reviewer.name();
    DenyReason::Unavailable(match e {
        ReviewError::Api { kind, code, .. } => {
            let request = reviewer.request_name(*kind);
            format!("{backend} answered the {request} with HTTP {code}")
        }
        ReviewError::Transport { kind, .. } => {
            let request = reviewer.request_name(*kind);
            format!("{backend} could not be reached for the {request}")
        }
        ReviewError::Timeout { kind, after } => {
            let request = reviewer.request_name(*kind);
            format!("{backend} did not answer the {request} within {after:?}")
        }
        ReviewError::InvalidResponse { kind, .. } => {
            let request = reviewer.request_name(*kind);
            format!("{backend} gave an unusable {request} answer")
        }
    })
}

/// TTL of a cached identity: the configured TTL, shortened (never lengthened) to the token's
/// `exp` claim when the token is a JWT. The claim is read without verifying the signature:
/// the TokenReview already vouched for the token, and the claim can only shorten the TTL.
pub fn identity_ttl(configured: Duration, token: &BearerToken, now: SystemTime) -> Duration {
    // `exp` comes from the client: a year-292-billion expiry must not overflow `SystemTime`
    // (it panicked here once), and one past what the clock can hold only leaves `configured`.
    match jwt_expiry(token.expose_secret())
        .and_then(|exp| UNIX_EPOCH.checked_add(Duration::from_secs(exp)))
    {
        Some(expires) => configured.min(expires.duration_since(now).unwrap_or_default()),
        None => configured,
    }
}

/// The `exp` claim (seconds since the epoch) of a JWT, if the token is one.
fn jwt_expiry(token: &str) -> Option<u64> {
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || payload.len() > 8 * 1024 {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    #[derive(serde::Deserialize)]
    struct Claims {
        exp: Option<serde_json::Value>,
    }
    let claims: Claims = serde_json::from_slice(&bytes).ok()?;
    match claims.exp? {
        serde_json::Value::Number(n) => {
            n.as_u64().or_else(|| n.as_f64().map(|f| f.max(0.0) as u64))
        }
        _ => None,
    }
}

#[cfg(test)]
#[path = "authorizer_tests.rs"]
mod tests;
