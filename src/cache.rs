//! Bounded TTL caches with coalescing of identical misses.
//!
//! Each [`Tier`] is a positive cache and a separate, smaller negative cache (so a flood of
//! unknown tokens or denials cannot evict the allows of real tenants), plus a table of the
//! loads in flight, so concurrent identical misses run one review and share its answer.
//!
//! Why a sharded `lru` and not moka: measured here, a moka entry costs 340-460 bytes besides
//! its key and value (LRU deques, timer wheel, frequency sketch), which alone puts 100 000
//! cached decisions at ~45 MiB. A shard of `lru::LruCache` costs ~130 bytes per entry, and 16
//! shards keep the lock of a hit short and rarely contended (no global lock on the Check path).
//! Expiry is an `Instant` stored with each value and checked on read; an expired entry is
//! dropped when read or evicted by LRU. Coalescing keeps moka's semantics: one loader per key,
//! its answer (or error) handed to every waiter, errors never cached, and when the loader is
//! cancelled (its Check hit the deadline) a waiter takes over.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lru::LruCache;
use tokio::sync::watch;

use crate::model::{Action, Tenant, TokenHash};
use crate::review::ReviewError;

/// A value to cache and how long it lives.
#[derive(Clone)]
pub struct Timed<V> {
    pub value: V,
    pub ttl: Duration,
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

const SHARDS: usize = 16;

struct Entry<V> {
    value: V,
    expires_at: Instant,
}

type Shard<K, V> = Mutex<LruCache<K, Entry<V>>>;

/// A bounded LRU map split in shards by key hash, with per-entry expiry.
struct Sharded<K, V> {
    shards: Box<[Shard<K, V>]>,
    hasher: RandomState,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a shard cannot leave an LruCache half-updated in a way that
    // matters more than dropping the lock; keep serving.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<K: Hash + Eq + Clone, V: Clone> Sharded<K, V> {
    /// About `capacity` entries in all: each shard holds its share plus 1/8, so that keys
    /// that hash unevenly still fit (at most 12.5 % over the bound; fewer shards for tiny
    /// capacities, which stay exact).
    fn new(capacity: u64) -> Self {
        let capacity = usize::try_from(capacity.max(1)).unwrap_or(usize::MAX);
        let shards = SHARDS.min(capacity);
        let share = capacity / shards;
        let per_shard = if shards < SHARDS {
            share
        } else {
            share + share / 8
        };
        let cap = NonZeroUsize::new(per_shard).unwrap_or(NonZeroUsize::MIN);
        Self {
            shards: (0..shards)
                .map(|_| Mutex::new(LruCache::new(cap)))
                .collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &K) -> &Shard<K, V> {
        let h = self.hasher.hash_one(key) as usize;
        &self.shards[h % self.shards.len()]
    }

    fn get(&self, key: &K) -> Option<V> {
        let now = Instant::now();
        let mut shard = lock(self.shard(key));
        match shard.get(key) {
            Some(e) if e.expires_at > now => Some(e.value.clone()),
            Some(_) => {
                shard.pop(key);
                None
            }
            None => None,
        }
    }

    fn insert(&self, key: K, timed: Timed<V>) {
        // An `Instant` that cannot hold now + ttl (a TTL of centuries) is not cached: no
        // number from a config or a token may panic the server.
        let Some(expires_at) = Instant::now().checked_add(timed.ttl) else {
            return;
        };
        if timed.ttl.is_zero() {
            return;
        }
        let entry = Entry {
            value: timed.value,
            expires_at,
        };
        lock(self.shard(&key)).put(key, entry);
    }

    fn remove(&self, key: &K) {
        lock(self.shard(key)).pop(key);
    }

    fn retain(&self, mut keep: impl FnMut(&K, &V) -> bool) {
        for shard in self.shards.iter() {
            lock(shard).retain(|k, e| keep(k, &e.value));
        }
    }

    fn len(&self) -> u64 {
        self.shards.iter().map(|s| lock(s).len() as u64).sum()
    }
}

/// The shared answer of one load in flight: `None` until it is known.
type Flight<P, N> = watch::Receiver<Option<Outcome<P, N>>>;

/// Removes a load from the in-flight table when the loader finishes or is cancelled; dropping
/// the sender wakes the waiters, who then take over if no answer was sent. Only its own entry:
/// an invalidation may have emptied the table and a newer load may hold the key.
struct FlightGuard<'a, K: Hash + Eq, P, N> {
    inflight: &'a Mutex<HashMap<K, Flight<P, N>>>,
    key: &'a K,
    own: Flight<P, N>,
}

impl<K: Hash + Eq, P, N> Drop for FlightGuard<'_, K, P, N> {
    fn drop(&mut self) {
        let mut inflight = lock(self.inflight);
        if inflight
            .get(self.key)
            .is_some_and(|f| f.same_channel(&self.own))
        {
            inflight.remove(self.key);
        }
    }
}

/// A positive and a negative cache over one key space, and the loads in flight.
pub struct Tier<K, P, N> {
    positive: Sharded<K, P>,
    negative: Sharded<K, N>,
    inflight: Mutex<HashMap<K, Flight<P, N>>>,
    /// Bumped by every invalidation: a load that began before it is answered but not stored.
    generation: AtomicU64,
}

impl<K, P, N> Tier<K, P, N>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    P: Clone + Send + Sync + 'static,
    N: Clone + Send + Sync + 'static,
{
    pub fn new(max_positive: u64, max_negative: u64) -> Self {
        Self {
            positive: Sharded::new(max_positive),
            negative: Sharded::new(max_negative),
            inflight: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
        }
    }

    /// The invalidation generation (see [`Tier::clear`]).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The cached answer for `key`, positive or negative (the fast path: no await).
    pub fn get_cached(&self, key: &K) -> Option<Result<P, N>> {
        if let Some(p) = self.positive.get(key) {
            return Some(Ok(p));
        }
        self.negative.get(key).map(Err)
    }

    /// The cached answer for `key`, or the answer of `load`, shared by every identical
    /// concurrent miss. Negative answers go to the negative cache; failures are not cached.
    pub async fn get_or_load<F>(&self, key: &K, load: F) -> (Outcome<P, N>, Source)
    where
        F: std::future::Future<Output = Loaded<P, N>>,
    {
        let mut load = Some(load);
        loop {
            if let Some(hit) = self.positive.get(key) {
                return (Outcome::Positive(hit), Source::Hit);
            }
            if let Some(hit) = self.negative.get(key) {
                return (Outcome::Negative(hit), Source::Hit);
            }
            let waiting = {
                let mut inflight = lock(&self.inflight);
                match inflight.get(key) {
                    Some(flight) => Err(flight.clone()),
                    None => {
                        // A loader stores its answer before it leaves this table: look again
                        // under the lock, or a load that just finished would run twice.
                        match self.get_cached(key) {
                            Some(Ok(hit)) => return (Outcome::Positive(hit), Source::Hit),
                            Some(Err(hit)) => return (Outcome::Negative(hit), Source::Hit),
                            None => {}
                        }
                        let (tx, rx) = watch::channel(None);
                        inflight.insert(key.clone(), rx.clone());
                        Ok((tx, rx))
                    }
                }
            };
            match waiting {
                Err(mut flight) => {
                    // Another call is loading this key: share its answer. If it was cancelled
                    // before answering, loop and take over.
                    if let Ok(answer) = flight.wait_for(Option::is_some).await {
                        if let Some(outcome) = answer.clone() {
                            return (outcome, Source::Coalesced);
                        }
                    }
                }
                Ok((tx, own)) => {
                    let _guard = FlightGuard {
                        inflight: &self.inflight,
                        key,
                        own,
                    };
                    let generation = self.generation();
                    let Some(load) = load.take() else {
                        // Unreachable: a call becomes the loader at most once.
                        return (
                            Outcome::Failed(ReviewError::Transport {
                                kind: crate::review::ReviewKind::TokenReview,
                                message: "internal: loader used twice".into(),
                            }),
                            Source::Loaded,
                        );
                    };
                    let answer = load.await;
                    // Invalidated while loading: the answer may predate the change; give it to
                    // this Check and its waiters, but do not keep it.
                    let store = self.generation() == generation;
                    let outcome = match answer {
                        Ok(Ok(positive)) => {
                            let value = positive.value.clone();
                            if store {
                                self.negative.remove(key);
                                self.positive.insert(key.clone(), positive);
                            }
                            Outcome::Positive(value)
                        }
                        Ok(Err(negative)) => {
                            let value = negative.value.clone();
                            if store {
                                self.positive.remove(key);
                                self.negative.insert(key.clone(), negative);
                            }
                            Outcome::Negative(value)
                        }
                        Err(e) => Outcome::Failed(e),
                    };
                    let _ = tx.send(Some(outcome.clone()));
                    return (outcome, Source::Loaded);
                }
            }
        }
    }

    /// Starts a new generation: loads in flight will not be stored, and later misses do not
    /// join them.
    fn new_generation(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        lock(&self.inflight).clear();
    }

    /// Drops every entry, positive and negative, whose key matches.
    pub fn invalidate_if(&self, pred: impl Fn(&K) -> bool) {
        self.new_generation();
        self.positive.retain(|k, _| !pred(k));
        self.negative.retain(|k, _| !pred(k));
    }

    /// Drops positive entries whose value matches (e.g. a user's allows).
    pub fn invalidate_positive_where(&self, pred: impl Fn(&P) -> bool) {
        self.new_generation();
        self.positive.retain(|_, v| !pred(v));
    }

    /// Drops every entry.
    pub fn clear(&self) {
        self.new_generation();
        self.positive.retain(|_, _| false);
        self.negative.retain(|_, _| false);
    }

    /// Entries held, expired ones included until they are read or evicted.
    pub fn sizes(&self) -> (u64, u64) {
        (self.positive.len(), self.negative.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn tier() -> Tier<u32, &'static str, &'static str> {
        Tier::new(100, 10)
    }

    #[test]
    fn capacity_is_bounded_with_lru_eviction() {
        let s: Sharded<u32, u32> = Sharded::new(SHARDS as u64 * 2);
        for k in 0..1000 {
            s.insert(
                k,
                Timed {
                    value: k,
                    ttl: Duration::from_secs(60),
                },
            );
        }
        assert!(s.len() <= SHARDS as u64 * 2 * 9 / 8, "{}", s.len());
        let small: Sharded<u32, u32> = Sharded::new(10);
        for k in 0..1000 {
            small.insert(
                k,
                Timed {
                    value: k,
                    ttl: Duration::from_secs(60),
                },
            );
        }
        assert!(small.len() <= 10, "{}", small.len());
        assert_eq!(s.get(&999), Some(999), "the most recent entry survives");
    }

    #[test]
    fn zero_ttl_is_not_cached() {
        let s: Sharded<u32, u32> = Sharded::new(10);
        s.insert(
            1,
            Timed {
                value: 1,
                ttl: Duration::ZERO,
            },
        );
        assert_eq!(s.get(&1), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_answer_loaded_across_an_invalidation_is_not_kept() {
        let t = Arc::new(tier());
        let loading = {
            let t = t.clone();
            tokio::spawn(async move {
                // The answer is decided now, then the review takes a while to return.
                t.get_or_load(&9, async {
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    Ok(Ok(Timed {
                        value: "old grant",
                        ttl: Duration::from_secs(60),
                    }))
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        t.clear();
        // A miss after the invalidation does not join the old load.
        let (out, src) = t
            .get_or_load(&9, async {
                Ok(Err(Timed {
                    value: "revoked",
                    ttl: Duration::from_secs(60),
                }))
            })
            .await;
        assert!(matches!(out, Outcome::Negative("revoked")));
        assert_eq!(src, Source::Loaded);
        let (old, _) = loading.await.unwrap();
        assert!(
            matches!(old, Outcome::Positive("old grant")),
            "its own caller still gets it"
        );
        assert!(
            matches!(t.get_cached(&9), Some(Err("revoked"))),
            "the stale allow must not be stored"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancelled_loader_hands_over_to_a_waiter() {
        let t = Arc::new(tier());
        let slow = {
            let t = t.clone();
            tokio::spawn(async move {
                t.get_or_load(&5, async {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok(Ok(Timed {
                        value: "never",
                        ttl: Duration::from_secs(60),
                    }))
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let waiter = {
            let t = t.clone();
            tokio::spawn(async move {
                t.get_or_load(&5, async {
                    Ok(Ok(Timed {
                        value: "taken over",
                        ttl: Duration::from_secs(60),
                    }))
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        slow.abort();
        let (out, src) = tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .expect("the waiter must not hang")
            .unwrap();
        assert!(matches!(out, Outcome::Positive("taken over")));
        assert_eq!(src, Source::Loaded);
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
