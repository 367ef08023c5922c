//! Bounded TTL caches with coalescing of identical misses.
//!
//! Why moka rather than `lru`: a Check path is concurrent, and `lru` is a single-threaded map
//! that needs a global lock around every hit, has no expiry and no coalescing. moka's
//! `future::Cache` is sharded and lock-free on reads, gives each entry its own TTL (`Expiry`:
//! identities are capped by the JWT's `exp`), bounds the size with LRU eviction, and
//! `try_get_with` runs one loader for concurrent misses on a key, hands its error to every
//! waiter and caches no error. `invalidate_entries_if` lets entries be dropped by tenant or user.
//!
//! Each [`Tier`] is a positive cache and a separate, smaller negative cache, so a flood of
//! unknown tokens or denials cannot evict the allows of real tenants.

use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::policy::{EvictionPolicy, Expiry};

use crate::model::{Action, Tenant, TokenHash};
use crate::review::ReviewError;

/// A cached value and how long it lives.
#[derive(Clone)]
pub struct Timed<V> {
    pub value: V,
    pub ttl: Duration,
}

/// Per-entry expiry: each value carries its TTL.
pub struct TimedExpiry;

impl<K, V> Expiry<K, Timed<V>> for TimedExpiry {
    fn expire_after_create(&self, _key: &K, value: &Timed<V>, _at: Instant) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Key of an authorization decision: the token's hash, a tenant, an action. Never the token.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct DecisionKey {
    pub token: TokenHash,
    pub tenant: Tenant,
    pub action: Action,
}

/// Where an answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Found in a cache.
    Hit,
    /// This call ran the review.
    Loaded,
    /// An identical concurrent miss ran the review and this call shared its answer.
    Coalesced,
}

impl Source {
    pub fn is_cached(self) -> bool {
        self == Source::Hit
    }
}

/// A looked-up answer.
#[derive(Clone, Debug)]
pub enum Outcome<P, N> {
    Positive(P),
    Negative(N),
    Failed(ReviewError),
}

/// What a loader returns: a positive or negative answer with its TTL, or a failure (not cached).
pub type Loaded<P, N> = Result<Result<Timed<P>, Timed<N>>, ReviewError>;

enum Miss<N> {
    Negative(N),
    Failed(ReviewError),
}

/// A positive and a negative cache over one key space.
pub struct Tier<K, P, N> {
    positive: Cache<K, Timed<P>>,
    negative: Cache<K, Timed<N>>,
}

impl<K, P, N> Tier<K, P, N>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    P: Clone + Send + Sync + 'static,
    N: Clone + Send + Sync + 'static,
{
    pub fn new(name: &str, max_positive: u64, max_negative: u64) -> Self {
        Self {
            positive: Cache::builder()
                .name(&format!("{name}-positive"))
                .max_capacity(max_positive)
                .eviction_policy(EvictionPolicy::lru())
                .expire_after(TimedExpiry)
                .support_invalidation_closures()
                .build(),
            negative: Cache::builder()
                .name(&format!("{name}-negative"))
                .max_capacity(max_negative)
                .eviction_policy(EvictionPolicy::lru())
                .expire_after(TimedExpiry)
                .support_invalidation_closures()
                .build(),
        }
    }

    /// The cached answer for `key`, or the answer of `load`, shared by every identical
    /// concurrent miss. Negative answers go to the negative cache; failures are not cached.
    pub async fn get_or_load<F>(&self, key: &K, load: F) -> (Outcome<P, N>, Source)
    where
        F: std::future::Future<Output = Loaded<P, N>>,
    {
        if let Some(hit) = self.positive.get(key).await {
            return (Outcome::Positive(hit.value), Source::Hit);
        }
        if let Some(hit) = self.negative.get(key).await {
            return (Outcome::Negative(hit.value), Source::Hit);
        }
        let ran = AtomicBool::new(false);
        let negative = &self.negative;
        let result = self
            .positive
            .try_get_with_by_ref(key, async {
                ran.store(true, Ordering::Relaxed);
                match load.await {
                    Ok(Ok(positive)) => Ok(positive),
                    Ok(Err(neg)) => {
                        let value = neg.value.clone();
                        if !neg.ttl.is_zero() {
                            negative.insert(key.clone(), neg).await;
                        }
                        Err(Miss::Negative(value))
                    }
                    Err(e) => Err(Miss::Failed(e)),
                }
            })
            .await;
        let source = if ran.load(Ordering::Relaxed) {
            Source::Loaded
        } else {
            Source::Coalesced
        };
        let outcome = match result {
            Ok(timed) => Outcome::Positive(timed.value),
            Err(miss) => match &*miss {
                Miss::Negative(n) => Outcome::Negative(n.clone()),
                Miss::Failed(e) => Outcome::Failed(e.clone()),
            },
        };
        (outcome, source)
    }

    /// Drops every entry, positive and negative, whose key or value matches.
    pub fn invalidate_if(&self, pred: impl Fn(&K) -> bool + Send + Sync + Clone + 'static) {
        let p = pred.clone();
        // Only fails when invalidation closures are not enabled, which `new` always does.
        let _ = self.positive.invalidate_entries_if(move |k, _| p(k));
        let _ = self.negative.invalidate_entries_if(move |k, _| pred(k));
    }

    /// Drops positive entries whose value matches (e.g. a user's allows).
    pub fn invalidate_positive_where(&self, pred: impl Fn(&P) -> bool + Send + Sync + 'static) {
        let _ = self
            .positive
            .invalidate_entries_if(move |_, v| pred(&v.value));
    }

    /// Drops every entry.
    pub fn clear(&self) {
        self.positive.invalidate_all();
        self.negative.invalidate_all();
    }

    pub fn sizes(&self) -> (u64, u64) {
        (self.positive.entry_count(), self.negative.entry_count())
    }

    /// Applies pending evictions and expirations (tests, scrape-time sizes).
    pub async fn sync(&self) {
        self.positive.run_pending_tasks().await;
        self.negative.run_pending_tasks().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    fn tier() -> Tier<u32, &'static str, &'static str> {
        Tier::new("test", 100, 10)
    }

    #[test]
    fn expiry_is_the_value_ttl() {
        let t = Timed {
            value: (),
            ttl: Duration::from_secs(7),
        };
        let got = <TimedExpiry as Expiry<u8, Timed<()>>>::expire_after_create(
            &TimedExpiry,
            &1,
            &t,
            Instant::now(),
        );
        assert_eq!(got, Some(Duration::from_secs(7)));
    }

    #[tokio::test]
    async fn positive_answer_is_cached_and_reused() {
        let t = tier();
        let calls = AtomicUsize::new(0);
        for expected in [Source::Loaded, Source::Hit] {
            let (out, src) = t
                .get_or_load(&1, async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Ok(Ok(Timed {
                        value: "yes",
                        ttl: Duration::from_secs(60),
                    }))
                })
                .await;
            assert!(matches!(out, Outcome::Positive("yes")));
            assert_eq!(src, expected);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn negative_answer_goes_to_negative_cache() {
        let t = tier();
        let (out, _) = t
            .get_or_load(&1, async {
                Ok(Err(Timed {
                    value: "no",
                    ttl: Duration::from_secs(60),
                }))
            })
            .await;
        assert!(matches!(out, Outcome::Negative("no")));
        t.sync().await;
        assert_eq!(t.sizes(), (0, 1));
        let (out, src) = t.get_or_load(&1, async { panic!("must not load") }).await;
        assert!(matches!(out, Outcome::Negative("no")));
        assert_eq!(src, Source::Hit);
    }

    #[tokio::test]
    async fn failures_are_not_cached() {
        let t = tier();
        let fail = || async {
            Err(ReviewError::Transport {
                kind: crate::review::ReviewKind::TokenReview,
                message: "refused".into(),
            })
        };
        let (out, _) = t.get_or_load(&1, fail()).await;
        assert!(matches!(out, Outcome::Failed(_)));
        t.sync().await;
        assert_eq!(t.sizes(), (0, 0));
        let (out, src) = t
            .get_or_load(&1, async {
                Ok(Ok(Timed {
                    value: "yes",
                    ttl: Duration::from_secs(1),
                }))
            })
            .await;
        assert!(matches!(out, Outcome::Positive("yes")));
        assert_eq!(src, Source::Loaded);
    }

    #[tokio::test]
    async fn entries_expire_after_their_ttl() {
        let t = tier();
        let load = |ttl| async move { Ok(Ok(Timed { value: "yes", ttl })) };
        t.get_or_load(&1, load(Duration::from_millis(50))).await;
        tokio::time::sleep(Duration::from_millis(120)).await;
        let (_, src) = t.get_or_load(&1, load(Duration::from_secs(5))).await;
        assert_eq!(src, Source::Loaded);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_identical_misses_run_one_load() {
        let t = Arc::new(tier());
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (t, calls) = (t.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                t.get_or_load(&7, async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok(Ok(Timed {
                        value: "yes",
                        ttl: Duration::from_secs(60),
                    }))
                })
                .await
            }));
        }
        let mut coalesced = 0;
        for task in tasks {
            let (out, src) = task.await.unwrap();
            assert!(matches!(out, Outcome::Positive("yes")));
            coalesced += usize::from(src == Source::Coalesced);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(coalesced >= 1);
    }

    #[tokio::test]
    async fn invalidation_drops_matching_entries() {
        let t = tier();
        for k in [1, 2, 3] {
            t.get_or_load(&k, async {
                Ok(Ok(Timed {
                    value: "yes",
                    ttl: Duration::from_secs(60),
                }))
            })
            .await;
        }
        t.invalidate_if(|k| *k == 2);
        t.sync().await;
        let (_, src) = t
            .get_or_load(&2, async {
                Ok(Ok(Timed {
                    value: "again",
                    ttl: Duration::from_secs(60),
                }))
            })
            .await;
        assert_eq!(src, Source::Loaded);
        let (_, src) = t.get_or_load(&1, async { panic!("cached") }).await;
        assert_eq!(src, Source::Hit);
    }
}
