//! Bounded TTL caches with coalescing of identical misses and scoped invalidation.
//!
//! Each [`Tier`] is a positive cache and a separate, smaller negative cache (so a flood of
//! unknown tokens or denials cannot evict the allows of real tenants), plus a table of the
//! loads in flight, so concurrent identical misses run one load and share its answer.
//!
//! The cache knows nothing of what it caches: keys, values and the loader's error are type
//! parameters (as in moka's `try_get_with<F, E>`), and what an entry depends on is a
//! [`Scope`] (a tenant, a user) that the owner of the tier derives from keys and values
//! ([`Scoping`]). The contract, tested in `cache_tests.rs`:
//!
//! * [`Tier::invalidate_scope`] drops every entry of a scope, and no answer whose load began
//!   before the call is stored afterwards, nor shared with the misses that joined the load (it
//!   still answers the call that ran it, which arrived before the invalidation; a joiner loads
//!   anew): a revocation seen by a watch cannot be undone by a review that was already in
//!   flight. Only that scope's loads are affected; the work of every other scope is kept.
//! * [`Tier::invalidate_keys`] and [`Tier::clear`] do the same for arbitrary keys and for all.
//! * [`Tier::set_max_positive_age`] bounds the age of positive answers on read (the allow TTL
//!   falls back to the short one while a watch is down, for entries stored before too).
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
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lru::LruCache;
use tokio::sync::watch;

/// A value to cache and how long it lives.
#[derive(Clone)]
pub struct Timed<V> {
    pub value: V,
    pub ttl: Duration,
}

/// What cached answers depend on, for invalidation: e.g. one tenant, or one user. Owners of a
/// tier build scopes with [`Scope::of`]; two names that hash alike only make an invalidation
/// drop a little more than it had to.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Scope(u64);

impl Scope {
    /// The scope of `name` in the namespace `kind` ("tenant", "user").
    pub fn of(kind: &str, name: &str) -> Scope {
        // SipHash with fixed keys: the same scope for the same name within the process.
        let mut h = std::hash::DefaultHasher::new();
        (kind, name).hash(&mut h);
        Scope(h.finish())
    }
}

/// The scopes of an answer (e.g. its user, and the pod its token is bound to).
pub type Scopes = [Option<Scope>; 2];

/// How a tier finds the scopes of a key and of its answers.
pub struct Scoping<K, P, N> {
    pub key: fn(&K) -> Option<Scope>,
    pub positive: fn(&P) -> Scopes,
    pub negative: fn(&N) -> Scopes,
}

impl<K, P, N> Scoping<K, P, N> {
    /// No scopes: only [`Tier::invalidate_keys`] and [`Tier::clear`] apply.
    pub fn none() -> Self {
        Self {
            key: |_| None,
            positive: |_| [None, None],
            negative: |_| [None, None],
        }
    }
}

/// Where an answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Found in a cache.
    Hit,
    /// This call ran the load.
    Loaded,
    /// An identical concurrent miss ran the load and this call shared its answer (never one
    /// whose scopes were invalidated while it loaded).
    Coalesced,
}

impl Source {
    pub fn is_cached(self) -> bool {
        self == Source::Hit
    }
}

/// A looked-up answer.
#[derive(Clone, Debug)]
pub enum Outcome<P, N, E> {
    Positive(P),
    Negative(N),
    Failed(E),
}

/// What a loader returns: a positive or negative answer with its TTL, or a failure (not cached).
pub type Loaded<P, N, E> = Result<Result<Timed<P>, Timed<N>>, E>;

const SHARDS: usize = 16;
/// Stripes of scope epochs: a fixed array, so invalidating a million distinct scopes costs no
/// memory; two scopes sharing a stripe only make a few loads of one not stored.
const STRIPES: usize = 1024;

struct Entry<V> {
    value: V,
    inserted_at: Instant,
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

    /// The value if it has not expired and is at most `max_age` old.
    fn get(&self, key: &K, max_age: Duration) -> Option<V> {
        let now = Instant::now();
        let mut shard = lock(self.shard(key));
        match shard.get(key) {
            Some(e) if e.expires_at > now && now.duration_since(e.inserted_at) <= max_age => {
                Some(e.value.clone())
            }
            Some(_) => {
                shard.pop(key);
                None
            }
            None => None,
        }
    }

    /// Stores `timed` if `still_valid()` holds, checked under the shard's lock: an
    /// invalidation either happened before (and `still_valid` says so) or removes the entry
    /// after (it takes the same lock).
    fn insert_if(&self, key: K, timed: Timed<V>, still_valid: impl FnOnce() -> bool) {
        let now = Instant::now();
        // An `Instant` that cannot hold now + ttl (a TTL of centuries) is not cached: no
        // number from a config or a token may panic the server.
        let Some(expires_at) = now.checked_add(timed.ttl) else {
            return;
        };
        if timed.ttl.is_zero() {
            return;
        }
        let mut shard = lock(self.shard(&key));
        if still_valid() {
            shard.put(
                key,
                Entry {
                    value: timed.value,
                    inserted_at: now,
                    expires_at,
                },
            );
        }
    }

    #[cfg(test)]
    fn insert(&self, key: K, timed: Timed<V>) {
        self.insert_if(key, timed, || true);
    }

    fn remove(&self, key: &K) {
        lock(self.shard(key)).pop(key);
    }

    fn retain(&self, mut keep: impl FnMut(&K, &V) -> bool) {
        for shard in self.shards.iter() {
            lock(shard).retain(|k, e| keep(k, &e.value));
        }
    }

    fn keys_where(&self, mut pred: impl FnMut(&K, &V) -> bool) -> Vec<K> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            out.extend(
                lock(shard)
                    .iter()
                    .filter(|(k, e)| pred(k, &e.value))
                    .map(|(k, _)| k.clone()),
            );
        }
        out
    }

    fn len(&self) -> u64 {
        self.shards.iter().map(|s| lock(s).len() as u64).sum()
    }

    /// Unexpired entries whose value matches, one shard lock at a time (an O(n) scan: for
    /// the admin port, not the Check path).
    fn count_where(&self, mut pred: impl FnMut(&V) -> bool) -> u64 {
        let now = Instant::now();
        self.shards
            .iter()
            .map(|shard| {
                lock(shard)
                    .iter()
                    .filter(|(_, e)| e.expires_at > now && pred(&e.value))
                    .count() as u64
            })
            .sum()
    }
}

/// Invalidation epochs: a counter bumped by every invalidation, and for each scope stripe
/// (and for "everything") the epoch of its last invalidation. A load remembers the epoch it
/// began in; its answer may be stored only if none of its scopes was invalidated since.
struct Epochs {
    now: AtomicU64,
    everything: AtomicU64,
    stripes: Box<[AtomicU64]>,
}

impl Epochs {
    fn new() -> Self {
        Self {
            now: AtomicU64::new(0),
            everything: AtomicU64::new(0),
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn current(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }

    fn stripe(&self, scope: Scope) -> &AtomicU64 {
        &self.stripes[(scope.0 % STRIPES as u64) as usize]
    }

    /// Marks `scope` (or everything) invalidated as of a new epoch.
    fn invalidate(&self, scope: Option<Scope>) {
        match scope {
            Some(s) => self.invalidate_all_of([s]),
            None => {
                let epoch = self.now.fetch_add(1, Ordering::SeqCst) + 1;
                self.everything.fetch_max(epoch, Ordering::SeqCst);
            }
        }
    }

    /// Marks every one of `scopes` invalidated as of one new epoch.
    fn invalidate_all_of(&self, scopes: impl IntoIterator<Item = Scope>) {
        let epoch = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        for s in scopes {
            self.stripe(s).fetch_max(epoch, Ordering::SeqCst);
        }
    }

    /// No invalidation of these scopes, nor of everything, since `since`.
    fn unchanged_since(&self, since: u64, scopes: impl IntoIterator<Item = Scope>) -> bool {
        self.everything.load(Ordering::SeqCst) <= since
            && scopes
                .into_iter()
                .all(|s| self.stripe(s).load(Ordering::SeqCst) <= since)
    }
}

/// The shared answer of one load in flight: `None` until it is known.
type Flight<P, N, E> = watch::Receiver<Option<Outcome<P, N, E>>>;

/// A load in flight and the epoch it began in (a miss joins it only if still current, and
/// uses its answer only if the answer's scopes were not invalidated since).
struct InFlight<P, N, E> {
    flight: Flight<P, N, E>,
    since: u64,
}

/// Removes a load from the in-flight table when the loader finishes or is cancelled; dropping
/// the sender wakes the waiters, who then take over if no answer was sent. Only its own entry:
/// a newer load may hold the key.
struct FlightGuard<'a, K: Hash + Eq, P, N, E> {
    inflight: &'a Mutex<HashMap<K, InFlight<P, N, E>>>,
    key: &'a K,
    own: Flight<P, N, E>,
}

impl<K: Hash + Eq, P, N, E> Drop for FlightGuard<'_, K, P, N, E> {
    fn drop(&mut self) {
        let mut inflight = lock(self.inflight);
        if inflight
            .get(self.key)
            .is_some_and(|f| f.flight.same_channel(&self.own))
        {
            inflight.remove(self.key);
        }
    }
}

/// A positive and a negative cache over one key space, and the loads in flight.
pub struct Tier<K, P, N, E> {
    positive: Sharded<K, P>,
    negative: Sharded<K, N>,
    inflight: Mutex<HashMap<K, InFlight<P, N, E>>>,
    epochs: Epochs,
    scoping: Scoping<K, P, N>,
    /// Positive answers older than this are not used (nanoseconds; `u64::MAX`: no bound).
    max_positive_age: AtomicU64,
}

impl<K, P, N, E> Tier<K, P, N, E>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    P: Clone + Send + Sync + 'static,
    N: Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
{
    pub fn new(max_positive: u64, max_negative: u64, scoping: Scoping<K, P, N>) -> Self {
        Self {
            positive: Sharded::new(max_positive),
            negative: Sharded::new(max_negative),
            inflight: Mutex::new(HashMap::new()),
            epochs: Epochs::new(),
            scoping,
            max_positive_age: AtomicU64::new(u64::MAX),
        }
    }

    /// Positive answers older than `max_age` are treated as expired (`None`: only their TTL
    /// counts). Applies to entries already stored.
    pub fn set_max_positive_age(&self, max_age: Option<Duration>) {
        let nanos = max_age.map_or(u64::MAX, |d| {
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
        });
        self.max_positive_age.store(nanos, Ordering::SeqCst);
    }

    fn max_positive_age(&self) -> Duration {
        Duration::from_nanos(self.max_positive_age.load(Ordering::Relaxed))
    }

    /// The cached answer for `key`, positive or negative (the fast path: no await).
    pub fn get_cached(&self, key: &K) -> Option<Result<P, N>> {
        if let Some(p) = self.positive.get(key, self.max_positive_age()) {
            return Some(Ok(p));
        }
        self.negative.get(key, Duration::MAX).map(Err)
    }

    /// The cached answer for `key`, or the answer of `load`, shared by every identical
    /// concurrent miss. Negative answers go to the negative cache; failures are not cached;
    /// an answer whose scopes were invalidated while it loaded is not cached either, and
    /// answers only the call that ran the load: the others load anew.
    pub async fn get_or_load<F>(&self, key: &K, load: F) -> (Outcome<P, N, E>, Source)
    where
        F: std::future::Future<Output = Loaded<P, N, E>>,
    {
        let key_scope = (self.scoping.key)(key);
        let mut load = Some(load);
        // Whether this call refused a shared answer (then it runs its own load).
        let mut refused = false;
        loop {
            match self.get_cached(key) {
                Some(Ok(hit)) => return (Outcome::Positive(hit), Source::Hit),
                Some(Err(hit)) => return (Outcome::Negative(hit), Source::Hit),
                None => {}
            }
            let waiting = {
                let mut inflight = lock(&self.inflight);
                match inflight.get(key) {
                    // Join a load only if nothing it depends on was invalidated since it began.
                    // After one refused answer, this call loads itself: joining the next load
                    // could be refused again (a burst of ClusterRole changes) with no bound
                    // short of the decision deadline.
                    Some(f) if !refused && self.epochs.unchanged_since(f.since, key_scope) => {
                        Err((f.flight.clone(), f.since))
                    }
                    _ => {
                        // A loader stores its answer before it leaves this table: look again
                        // under the lock, or a load that just finished would run twice.
                        match self.get_cached(key) {
                            Some(Ok(hit)) => return (Outcome::Positive(hit), Source::Hit),
                            Some(Err(hit)) => return (Outcome::Negative(hit), Source::Hit),
                            None => {}
                        }
                        let (tx, rx) = watch::channel(None);
                        let since = self.epochs.current();
                        inflight.insert(
                            key.clone(),
                            InFlight {
                                flight: rx.clone(),
                                since,
                            },
                        );
                        Ok((tx, rx, since))
                    }
                }
            };
            match waiting {
                Err((mut flight, since)) => {
                    // Another call is loading this key: share its answer. If it was cancelled
                    // before answering, loop and take over.
                    let shared = match flight.wait_for(Option::is_some).await {
                        Ok(answer) => answer.clone(),
                        Err(_) => None,
                    };
                    if let Some(outcome) = shared {
                        // Only if none of its scopes was invalidated since the load began (a
                        // deleted ServiceAccount, a removed RoleBinding): this call may have
                        // arrived after that, and must not be answered by a review from before.
                        // The loader keeps such an answer; this call loads anew, or joins a
                        // newer load. The value's scopes are known only now (a tier keyed by a
                        // token learns its user from the answer), and checking since the load
                        // began, not since this call arrived, is as strict or stricter.
                        if self.answer_unchanged_since(since, key_scope, &outcome) {
                            return (outcome, Source::Coalesced);
                        }
                        refused = true;
                    }
                }
                Ok((tx, own, since)) => {
                    let _guard = FlightGuard {
                        inflight: &self.inflight,
                        key,
                        own,
                    };
                    // A call becomes the loader at most once: it returns right after loading.
                    let Some(load) = load.take() else { continue };
                    let outcome = match load.await {
                        Ok(Ok(positive)) => {
                            let value = positive.value.clone();
                            let scopes = self.scopes_of(key_scope, Ok(&value));
                            let valid = || {
                                self.epochs
                                    .unchanged_since(since, scopes.iter().flatten().copied())
                            };
                            // A stale answer must not displace a fresh one either.
                            if valid() {
                                self.negative.remove(key);
                                self.positive.insert_if(key.clone(), positive, valid);
                            }
                            Outcome::Positive(value)
                        }
                        Ok(Err(negative)) => {
                            let value = negative.value.clone();
                            let scopes = self.scopes_of(key_scope, Err(&value));
                            let valid = || {
                                self.epochs
                                    .unchanged_since(since, scopes.iter().flatten().copied())
                            };
                            if valid() {
                                self.positive.remove(key);
                                self.negative.insert_if(key.clone(), negative, valid);
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

    /// What an answer depends on: its key's scope and its value's.
    fn scopes_of(&self, key_scope: Option<Scope>, answer: Result<&P, &N>) -> [Option<Scope>; 3] {
        let [a, b] = match answer {
            Ok(positive) => (self.scoping.positive)(positive),
            Err(negative) => (self.scoping.negative)(negative),
        };
        [key_scope, a, b]
    }

    /// Whether nothing `outcome` depends on (nor everything) was invalidated after `since`:
    /// the check that a stored answer passes, for an answer shared with a joiner. A failure
    /// is never stored and grants nothing: it is always shared.
    fn answer_unchanged_since(
        &self,
        since: u64,
        key_scope: Option<Scope>,
        outcome: &Outcome<P, N, E>,
    ) -> bool {
        let scopes = match outcome {
            Outcome::Positive(p) => self.scopes_of(key_scope, Ok(p)),
            Outcome::Negative(n) => self.scopes_of(key_scope, Err(n)),
            Outcome::Failed(_) => return true,
        };
        self.epochs
            .unchanged_since(since, scopes.into_iter().flatten())
    }

    /// Drops every entry of `scope` (by its key or by its answer, positive or negative); no
    /// load that began before this call stores an answer of that scope after it.
    pub fn invalidate_scope(&self, scope: Scope) {
        self.invalidate_scopes(&std::collections::HashSet::from([scope]));
    }

    /// [`Tier::invalidate_scope`] for many scopes in one pass over the entries (a burst of
    /// watch events costs one scan, not one per event).
    pub fn invalidate_scopes(&self, scopes: &std::collections::HashSet<Scope>) {
        if scopes.is_empty() {
            return;
        }
        self.epochs.invalidate_all_of(scopes.iter().copied());
        let (key_scope, pos, neg) = (
            self.scoping.key,
            self.scoping.positive,
            self.scoping.negative,
        );
        let hit = |s: Option<Scope>| s.is_some_and(|s| scopes.contains(&s));
        self.positive
            .retain(|k, v| !hit(key_scope(k)) && !pos(v).into_iter().any(hit));
        self.negative
            .retain(|k, v| !hit(key_scope(k)) && !neg(v).into_iter().any(hit));
    }

    /// Drops every entry whose key matches; no load in flight now stores its answer.
    pub fn invalidate_keys(&self, matches: impl Fn(&K) -> bool) {
        self.epochs.invalidate(None);
        self.positive.retain(|k, _| !matches(k));
        self.negative.retain(|k, _| !matches(k));
    }

    /// Drops every entry; no load in flight now stores its answer.
    pub fn clear(&self) {
        self.invalidate_keys(|_| true);
    }

    /// The current invalidation epoch: remember it when a load begins that a later answer of
    /// another tier depends on (see [`Tier::scope_unchanged_since`]).
    pub fn epoch(&self) -> u64 {
        self.epochs.current()
    }

    /// Whether none of `scopes` (nor everything) was invalidated after `epoch`.
    pub fn scopes_unchanged_since(&self, epoch: u64, scopes: Scopes) -> bool {
        self.epochs
            .unchanged_since(epoch, scopes.into_iter().flatten())
    }

    /// Keys of the positive entries whose value matches (e.g. the tokens of one pod).
    pub fn positive_keys_where(&self, matches: impl Fn(&P) -> bool) -> Vec<K> {
        self.positive.keys_where(|_, v| matches(v))
    }

    /// Unexpired (positive, negative) entries whose answer matches; never a key.
    pub fn count_where(
        &self,
        positive: impl FnMut(&P) -> bool,
        negative: impl FnMut(&N) -> bool,
    ) -> (u64, u64) {
        (
            self.positive.count_where(positive),
            self.negative.count_where(negative),
        )
    }

    /// Entries held, expired ones included until they are read or evicted.
    pub fn sizes(&self) -> (u64, u64) {
        (self.positive.len(), self.negative.len())
    }
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
