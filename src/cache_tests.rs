use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

type TestTier = Tier<u32, &'static str, &'static str, &'static str>;

fn tier() -> TestTier {
    Tier::new(100, 10, Scoping::none())
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
    assert_eq!(
        s.get(&999, Duration::MAX),
        Some(999),
        "the most recent entry survives"
    );
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
    assert_eq!(s.get(&1, Duration::MAX), None);
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
    let fail = || async { Err::<Result<Timed<&str>, Timed<&str>>, _>("refused") };
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
    t.invalidate_keys(|k| *k == 2);
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

// The invalidation contract, with scopes: keys are (scope, n); positive values name a user.

type ScopedTier = Tier<(&'static str, u32), &'static str, &'static str, &'static str>;

fn scoped() -> ScopedTier {
    Tier::new(
        100,
        10,
        Scoping {
            key: |k| Some(Scope::of("tenant", k.0)),
            positive: |user| [Some(Scope::of("user", user)), None],
            negative: |_| [None, None],
        },
    )
}

fn pos(value: &'static str) -> Loaded<&'static str, &'static str, &'static str> {
    Ok(Ok(Timed {
        value,
        ttl: Duration::from_secs(60),
    }))
}

fn neg(value: &'static str) -> Loaded<&'static str, &'static str, &'static str> {
    Ok(Err(Timed {
        value,
        ttl: Duration::from_secs(60),
    }))
}

/// A load that is decided now and returns when `release` is notified: makes the race of an
/// invalidation against a review in flight deterministic.
async fn blocked(
    release: Arc<tokio::sync::Notify>,
    answer: Loaded<&'static str, &'static str, &'static str>,
) -> Loaded<&'static str, &'static str, &'static str> {
    release.notified().await;
    answer
}

#[tokio::test]
async fn scope_invalidation_drops_that_scope_by_key_and_by_value_only() {
    let t = scoped();
    t.get_or_load(&("a", 1), async { pos("alice") }).await;
    t.get_or_load(&("a", 2), async { neg("no") }).await;
    t.get_or_load(&("b", 1), async { pos("alice") }).await;
    t.get_or_load(&("b", 2), async { pos("bob") }).await;
    t.invalidate_scope(Scope::of("tenant", "a"));
    assert!(t.get_cached(&("a", 1)).is_none());
    assert!(
        t.get_cached(&("a", 2)).is_none(),
        "denials of the tenant go too"
    );
    assert!(t.get_cached(&("b", 1)).is_some());
    t.invalidate_scope(Scope::of("user", "alice"));
    assert!(
        t.get_cached(&("b", 1)).is_none(),
        "alice's answer in tenant b"
    );
    assert!(matches!(t.get_cached(&("b", 2)), Some(Ok("bob"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_in_flight_across_its_scopes_invalidation_is_answered_not_stored() {
    let t = Arc::new(scoped());
    let release = Arc::new(tokio::sync::Notify::new());
    let loading = {
        let (t, release) = (t.clone(), release.clone());
        tokio::spawn(async move {
            t.get_or_load(&("a", 1), blocked(release, pos("alice")))
                .await
        })
    };
    tokio::task::yield_now().await;
    while lock(&t.inflight).is_empty() {
        tokio::task::yield_now().await;
    }
    // The revocation arrives while the review is in flight, then the review answers.
    t.invalidate_scope(Scope::of("tenant", "a"));
    release.notify_one();
    let (out, src) = loading.await.unwrap();
    assert!(
        matches!(out, Outcome::Positive("alice")),
        "its caller still gets it"
    );
    assert_eq!(src, Source::Loaded);
    assert!(
        t.get_cached(&("a", 1)).is_none(),
        "the stale allow must not be stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_of_another_scope_keeps_work_in_flight() {
    let t = Arc::new(scoped());
    let release = Arc::new(tokio::sync::Notify::new());
    let loading = {
        let (t, release) = (t.clone(), release.clone());
        tokio::spawn(async move {
            t.get_or_load(&("a", 1), blocked(release, pos("alice")))
                .await
        })
    };
    while lock(&t.inflight).is_empty() {
        tokio::task::yield_now().await;
    }
    // 500 other tenants' RoleBindings change (a GitOps sync): a's review is still stored.
    for i in 0..500 {
        let name: &'static str = Box::leak(format!("tenant-{i}").into_boxed_str());
        t.invalidate_scope(Scope::of("tenant", name));
    }
    release.notify_one();
    loading.await.unwrap();
    assert!(matches!(t.get_cached(&("a", 1)), Some(Ok("alice"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_after_an_invalidation_does_not_join_the_older_load() {
    let t = Arc::new(scoped());
    let release = Arc::new(tokio::sync::Notify::new());
    let old = {
        let (t, release) = (t.clone(), release.clone());
        tokio::spawn(async move {
            t.get_or_load(&("a", 1), blocked(release, pos("alice")))
                .await
        })
    };
    while lock(&t.inflight).is_empty() {
        tokio::task::yield_now().await;
    }
    t.invalidate_scope(Scope::of("tenant", "a"));
    let (out, src) = t.get_or_load(&("a", 1), async { neg("revoked") }).await;
    assert!(matches!(out, Outcome::Negative("revoked")));
    assert_eq!(src, Source::Loaded);
    release.notify_one();
    old.await.unwrap();
    assert!(matches!(t.get_cached(&("a", 1)), Some(Err("revoked"))));
}

// A joiner must not be served an answer whose scopes were invalidated while it loaded. A tier
// keyed by a token has no key scope: the user is known only from the answer, so the check on
// joining cannot see the invalidation, only the answer can.

type TokenTier = Tier<u32, &'static str, &'static str, &'static str>;
type Answer = (Outcome<&'static str, &'static str, &'static str>, Source);

/// Keys are token numbers (no key scope); every answer, positive or negative, names its user.
fn by_token() -> TokenTier {
    Tier::new(
        100,
        10,
        Scoping {
            key: |_| None,
            positive: |user| [Some(Scope::of("user", user)), None],
            negative: |user| [Some(Scope::of("user", user)), None],
        },
    )
}

/// Polls `f` once with this task's waker: as far as it gets without waiting. Makes "this
/// call has joined the load in flight" a fact, not a hope about scheduling.
async fn poll_once<F: std::future::Future + Unpin>(f: &mut F) -> std::task::Poll<F::Output> {
    std::future::poll_fn(|cx| std::task::Poll::Ready(std::pin::Pin::new(&mut *f).poll(cx))).await
}

/// A load of token 1 answering `first` is in flight; `between` runs; a second miss of token 1
/// arrives and joins it (it is then waiting for it); the load answers. Returns both calls'
/// results and how many times the second call's own loader (answering `second`) ran.
async fn join_across(
    t: &TokenTier,
    first: Loaded<&'static str, &'static str, &'static str>,
    between: impl FnOnce(&TokenTier),
    second: Loaded<&'static str, &'static str, &'static str>,
) -> (Answer, Answer, usize) {
    let release = Arc::new(tokio::sync::Notify::new());
    let mut loader = std::pin::pin!(t.get_or_load(&1, blocked(release.clone(), first)));
    assert!(
        poll_once(&mut loader).await.is_pending(),
        "the load is in flight"
    );
    between(t);
    let calls = AtomicUsize::new(0);
    let mut joiner = std::pin::pin!(t.get_or_load(&1, async {
        calls.fetch_add(1, Ordering::SeqCst);
        second
    }));
    assert!(
        poll_once(&mut joiner).await.is_pending(),
        "it waits for the load"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    release.notify_one();
    let first = loader.await;
    let second = joiner.await;
    (first, second, calls.load(Ordering::SeqCst))
}

#[tokio::test]
async fn a_joiner_is_not_served_an_answer_whose_scopes_were_invalidated_while_it_loaded() {
    // The ServiceAccount is deleted while its TokenReview is in flight, then a Check with the
    // same token comes: it must be reviewed anew, not told what the older review says.
    let t = by_token();
    let (first, second, calls) = join_across(
        &t,
        pos("alice"),
        |t| t.invalidate_scope(Scope::of("user", "alice")),
        neg("alice"),
    )
    .await;
    assert!(
        matches!(first, (Outcome::Positive("alice"), Source::Loaded)),
        "the call that ran the load, before the invalidation, keeps its answer: {first:?}"
    );
    assert_eq!(calls, 1, "the joiner must load anew");
    assert!(
        matches!(second, (Outcome::Negative("alice"), Source::Loaded)),
        "the joiner got {second:?}"
    );
    assert!(matches!(t.get_cached(&1), Some(Err("alice"))));
}

#[tokio::test]
async fn a_joiner_is_not_served_a_denial_whose_scopes_were_invalidated_while_it_loaded() {
    // A grant arrives (the user's answers are invalidated) while a denial is in flight.
    let t = by_token();
    let (first, second, calls) = join_across(
        &t,
        neg("alice"),
        |t| t.invalidate_scope(Scope::of("user", "alice")),
        pos("alice"),
    )
    .await;
    assert!(matches!(
        first,
        (Outcome::Negative("alice"), Source::Loaded)
    ));
    assert_eq!(calls, 1, "the joiner must load anew");
    assert!(
        matches!(second, (Outcome::Positive("alice"), Source::Loaded)),
        "{second:?}"
    );
    assert!(matches!(t.get_cached(&1), Some(Ok("alice"))));
}

#[tokio::test]
async fn a_joiner_shares_the_answer_when_none_of_its_scopes_was_invalidated() {
    // The control: nothing invalidated, or only another user (in another stripe).
    assert_ne!(
        Scope::of("user", "alice").0 % STRIPES as u64,
        Scope::of("user", "bob").0 % STRIPES as u64,
        "pick names in distinct stripes"
    );
    type Between = fn(&TokenTier);
    let invalidations: [(&str, Between); 2] = [
        ("nothing", |_| {}),
        ("another user", |t| {
            t.invalidate_scope(Scope::of("user", "bob"))
        }),
    ];
    for (what, invalidate) in invalidations {
        let t = by_token();
        let (first, second, calls) = join_across(&t, pos("alice"), invalidate, neg("alice")).await;
        assert!(matches!(
            first,
            (Outcome::Positive("alice"), Source::Loaded)
        ));
        assert_eq!(calls, 0, "{what}: one load for both");
        assert!(
            matches!(second, (Outcome::Positive("alice"), Source::Coalesced)),
            "{what}: {second:?}"
        );
        assert!(matches!(t.get_cached(&1), Some(Ok("alice"))), "{what}");
    }
}

#[tokio::test]
async fn invalidate_keys_and_positive_keys_where() {
    let t = scoped();
    for (k, user) in [(("a", 1), "alice"), (("a", 2), "bob"), (("b", 3), "alice")] {
        t.get_or_load(&k, async move { pos(user) }).await;
    }
    let mut alice = t.positive_keys_where(|u| *u == "alice");
    alice.sort();
    assert_eq!(alice, vec![("a", 1), ("b", 3)]);
    t.invalidate_keys(|k| alice.contains(k));
    assert!(t.get_cached(&("a", 1)).is_none());
    assert!(t.get_cached(&("a", 2)).is_some());
}

#[tokio::test]
async fn max_positive_age_applies_to_stored_allows_but_not_denials() {
    let t = scoped();
    t.get_or_load(&("a", 1), async { pos("alice") }).await;
    t.get_or_load(&("a", 2), async { neg("no") }).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    t.set_max_positive_age(Some(Duration::from_millis(10)));
    assert!(t.get_cached(&("a", 1)).is_none(), "older than the bound");
    assert!(
        t.get_cached(&("a", 2)).is_some(),
        "denials keep their own TTL"
    );
    t.set_max_positive_age(None);
    t.get_or_load(&("a", 1), async { pos("alice") }).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(t.get_cached(&("a", 1)).is_some());
}

#[test]
fn scopes_are_stable_and_distinct() {
    assert_eq!(Scope::of("tenant", "a"), Scope::of("tenant", "a"));
    assert_ne!(Scope::of("tenant", "a"), Scope::of("user", "a"));
    assert_ne!(Scope::of("tenant", "a"), Scope::of("tenant", "b"));
}
