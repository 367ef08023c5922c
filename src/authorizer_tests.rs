//! The decision engine over an in-memory reviewer: caching, coalescing, deadlines, outages.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use prometheus_client::registry::Registry;

use super::*;
use crate::review::memory::MemoryReviewer;

fn settings() -> AuthorizerSettings {
    AuthorizerSettings {
        cache: CacheConfig::default(),
        decision_timeout: Duration::from_millis(500),
        max_concurrent_reviews: 8,
        max_reviews_per_check: 4,
    }
}

fn engine_with(settings: AuthorizerSettings) -> Arc<Authorizer<MemoryReviewer>> {
    let reviewer = MemoryReviewer::new();
    reviewer.add_token("tok-query", "query");
    reviewer.grant("query", "a", Action::Read);
    reviewer.grant("query", "b", Action::Read);
    reviewer.grant("query", "c", Action::Read);
    let metrics = Arc::new(Metrics::register(&mut Registry::default()));
    Arc::new(Authorizer::new(reviewer, settings, metrics))
}

fn engine() -> Arc<Authorizer<MemoryReviewer>> {
    engine_with(settings())
}

fn tenants(v: &str) -> Tenants {
    Tenants::new(v.split('|').map(|t| Tenant::parse(t).unwrap()).collect()).unwrap()
}

fn token(t: &str) -> BearerToken {
    BearerToken::from_secret(t.to_string())
}

fn status(d: &Decision) -> u16 {
    match d {
        Decision::Allow { .. } => 200,
        Decision::Deny { reason, .. } => reason.http_status(),
    }
}

#[tokio::test]
async fn twenty_identical_requests_cost_one_review_each() {
    let e = engine();
    for i in 0..20 {
        let d = e
            .check(&token("tok-query"), tenants("a"), Action::Read)
            .await;
        assert!(d.is_allowed(), "{d:?}");
        assert_eq!(d.cached(), i > 0);
    }
    assert_eq!(e.reviewer().token_reviews(), 1);
    assert_eq!(e.reviewer().access_reviews(), 1);
}

#[tokio::test]
async fn three_tenants_cost_one_token_review_and_three_sars() {
    let e = engine();
    let d = e
        .check(&token("tok-query"), tenants("a|b|c"), Action::Read)
        .await;
    assert!(d.is_allowed(), "{d:?}");
    assert_eq!(e.reviewer().token_reviews(), 1);
    assert_eq!(e.reviewer().access_reviews(), 3);
    let Decision::Allow { tenants, user, .. } = d else {
        unreachable!()
    };
    assert_eq!(tenants.canonical(), "a|b|c");
    assert_eq!(&*user, "query");
}

#[tokio::test]
async fn cross_tenant_denied_when_one_tenant_denied() {
    let e = engine();
    let d = e
        .check(&token("tok-query"), tenants("a|z|b"), Action::Read)
        .await;
    match d {
        Decision::Deny {
            reason: DenyReason::Forbidden { tenant, .. },
            ..
        } => assert_eq!(tenant.as_str(), "z"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn verb_follows_the_action() {
    let e = engine();
    let d = e
        .check(&token("tok-query"), tenants("a"), Action::Write)
        .await;
    assert_eq!(status(&d), 403);
    let d = e
        .check(&token("tok-query"), tenants("a"), Action::Manage)
        .await;
    assert_eq!(status(&d), 403);
    let d = e
        .check(&token("tok-query"), tenants("a"), Action::Read)
        .await;
    assert_eq!(status(&d), 200);
}

#[tokio::test]
async fn forbidden_reason_says_what_to_grant() {
    let e = engine();
    let d = e
        .check(&token("tok-query"), tenants("z"), Action::Read)
        .await;
    let Decision::Deny { reason, .. } = d else {
        panic!()
    };
    let text = reason.to_string();
    assert!(
        text.contains("\"query\"") && text.contains("\"z\"") && text.contains("read"),
        "{text}"
    );
}

#[tokio::test]
async fn unknown_token_is_401_and_remembered() {
    let e = engine();
    for i in 0..3 {
        let d = e.check(&token("nope"), tenants("a"), Action::Read).await;
        assert_eq!(status(&d), 401);
        assert_eq!(d.cached(), i > 0);
    }
    assert_eq!(e.reviewer().token_reviews(), 1);
    assert_eq!(e.reviewer().access_reviews(), 0);
}

#[tokio::test]
async fn denial_is_cached_separately_and_shorter() {
    let mut s = settings();
    s.cache.denied_ttl = Duration::from_millis(100);
    let e = engine_with(s);
    assert_eq!(
        status(
            &e.check(&token("tok-query"), tenants("z"), Action::Read)
                .await
        ),
        403
    );
    assert_eq!(
        status(
            &e.check(&token("tok-query"), tenants("z"), Action::Read)
                .await
        ),
        403
    );
    assert_eq!(e.reviewer().access_reviews(), 1);
    e.reviewer().grant("query", "z", Action::Read);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        status(
            &e.check(&token("tok-query"), tenants("z"), Action::Read)
                .await
        ),
        200
    );
    assert_eq!(e.reviewer().access_reviews(), 2);
}

#[tokio::test]
async fn outage_is_503_never_allow_never_cached() {
    let e = engine();
    e.reviewer().set_down(true);
    for _ in 0..3 {
        let d = e
            .check(&token("tok-query"), tenants("a"), Action::Read)
            .await;
        assert_eq!(status(&d), 503, "{d:?}");
    }
    assert_eq!(
        e.reviewer().token_reviews(),
        3,
        "failures must not be cached"
    );
    e.reviewer().set_down(false);
    assert!(e
        .check(&token("tok-query"), tenants("a"), Action::Read)
        .await
        .is_allowed());
}

#[tokio::test]
async fn cached_allow_keeps_working_while_the_api_is_down() {
    let e = engine();
    assert!(e
        .check(&token("tok-query"), tenants("a"), Action::Read)
        .await
        .is_allowed());
    e.reviewer().set_down(true);
    let d = e
        .check(&token("tok-query"), tenants("a"), Action::Read)
        .await;
    assert!(d.is_allowed() && d.cached());
    // ...but an uncached tenant fails closed.
    let d = e
        .check(&token("tok-query"), tenants("a|b"), Action::Read)
        .await;
    assert_eq!(status(&d), 503);
}

#[tokio::test]
async fn slow_api_gives_our_own_503_at_the_deadline() {
    let e = engine();
    e.reviewer().set_latency(Duration::from_secs(5));
    let started = std::time::Instant::now();
    let d = e
        .check(&token("tok-query"), tenants("a"), Action::Read)
        .await;
    assert!(started.elapsed() < Duration::from_secs(2));
    match d {
        Decision::Deny {
            reason: DenyReason::Unavailable(why),
            ..
        } => assert!(why.contains("deadline"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_cold_requests_are_coalesced() {
    let e = engine();
    e.reviewer().set_latency(Duration::from_millis(100));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let e = e.clone();
            tokio::spawn(async move {
                e.check(&token("tok-query"), tenants("a"), Action::Read)
                    .await
            })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap().is_allowed());
    }
    assert!(
        e.reviewer().token_reviews() <= 2,
        "{}",
        e.reviewer().token_reviews()
    );
    assert!(
        e.reviewer().access_reviews() <= 2,
        "{}",
        e.reviewer().access_reviews()
    );
}

#[tokio::test]
async fn garbage_token_flood_does_not_evict_allows() {
    let mut s = settings();
    s.cache.max_entries = 50;
    s.cache.max_negative_entries = 10;
    let e = engine_with(s);
    assert!(e
        .check(&token("tok-query"), tenants("a"), Action::Read)
        .await
        .is_allowed());
    for i in 0..500 {
        let d = e
            .check(&token(&format!("garbage-{i}")), tenants("a"), Action::Read)
            .await;
        assert_eq!(status(&d), 401);
    }
    let sizes: std::collections::HashMap<_, _> = e.cache_sizes().into_iter().collect();
    assert!(sizes["unauthenticated"] <= 10, "{sizes:?}");
    let before = e.reviewer().token_reviews();
    let d = e
        .check(&token("tok-query"), tenants("a"), Action::Read)
        .await;
    assert!(d.is_allowed() && d.cached());
    assert_eq!(e.reviewer().token_reviews(), before);
}

#[tokio::test]
async fn invalidation_by_tenant_and_by_user() {
    let e = engine();
    e.check(&token("tok-query"), tenants("a|b"), Action::Read)
        .await;
    e.reviewer().revoke("query", "a", Action::Read);
    e.invalidate_tenant(&Tenant::parse("a").unwrap());
    assert_eq!(
        status(
            &e.check(&token("tok-query"), tenants("a"), Action::Read)
                .await
        ),
        403
    );
    assert!(e
        .check(&token("tok-query"), tenants("b"), Action::Read)
        .await
        .cached());
    e.invalidate_user("query");
    let d = e
        .check(&token("tok-query"), tenants("b"), Action::Read)
        .await;
    assert!(d.is_allowed() && !d.cached());
}

fn jwt(exp: u64) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(
        "{}.{}.sig",
        b64(r#"{"alg":"RS256"}"#),
        b64(&format!(r#"{{"iss":"kubernetes","exp":{exp}}}"#))
    )
}

#[test]
fn identity_ttl_is_capped_by_jwt_exp_and_never_lengthened() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let ttl = Duration::from_secs(120);
    assert_eq!(
        identity_ttl(ttl, &token(&jwt(1_000_030)), now),
        Duration::from_secs(30)
    );
    assert_eq!(identity_ttl(ttl, &token(&jwt(1_999_999)), now), ttl);
    assert_eq!(
        identity_ttl(ttl, &token(&jwt(999_000)), now),
        Duration::ZERO
    );
    assert_eq!(identity_ttl(ttl, &token("not-a-jwt"), now), ttl);
    assert_eq!(identity_ttl(ttl, &token("a.!!!.c"), now), ttl);
}

fn jwt_raw_exp(exp: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(
        "{}.{}.sig",
        b64(r#"{"alg":"RS256"}"#),
        b64(&format!(r#"{{"exp":{exp}}}"#))
    )
}

#[test]
fn absurd_jwt_expiries_never_panic_and_never_lengthen_the_ttl() {
    let now = SystemTime::now();
    let ttl = Duration::from_secs(120);
    // 2^63, 2^64-1, 1e300 panicked in `UNIX_EPOCH + exp` (SystemTime overflow).
    for exp in [
        "9223372036854775808",
        "18446744073709551615",
        "1e300",
        "1.7976931348623157e308",
        "100000000000000000000000000",
    ] {
        assert_eq!(
            identity_ttl(ttl, &token(&jwt_raw_exp(exp)), now),
            ttl,
            "exp {exp}"
        );
    }
    for exp in ["-1", "-1e300", "0", "0.5"] {
        assert_eq!(
            identity_ttl(ttl, &token(&jwt_raw_exp(exp)), now),
            Duration::ZERO,
            "exp {exp}"
        );
    }
    for exp in ["\"1e300\"", "null", "true", "[1]", "1e999"] {
        assert_eq!(
            identity_ttl(ttl, &token(&jwt_raw_exp(exp)), now),
            ttl,
            "exp {exp}"
        );
    }
}

#[tokio::test]
async fn known_denial_answers_at_once_while_another_tenant_is_slow() {
    let e = engine();
    assert_eq!(
        status(
            &e.check(&token("tok-query"), tenants("z"), Action::Read)
                .await
        ),
        403
    );
    e.reviewer().set_latency(Duration::from_secs(5));
    let started = std::time::Instant::now();
    let d = e
        .check(&token("tok-query"), tenants("a|z"), Action::Read)
        .await;
    assert_eq!(status(&d), 403, "{d:?}");
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn outage_reason_names_the_review_not_the_servers_message() {
    let e = engine();
    e.reviewer().set_down(true);
    let Decision::Deny { reason, .. } = e
        .check(&token("tok-query"), tenants("a"), Action::Read)
        .await
    else {
        panic!()
    };
    let text = reason.to_string();
    assert!(
        text.contains("authentication") && !text.contains("refused"),
        "{text}"
    );
}

#[tokio::test]
async fn decisions_outlive_an_evicted_identity_and_ask_again_only_for_new_questions() {
    let mut s = settings();
    s.cache.max_identities = 1;
    let e = engine_with(s);
    e.reviewer().add_token("tok-other", "other");
    assert!(e
        .check(&token("tok-query"), tenants("a"), Action::Read)
        .await
        .is_allowed());
    // Another token takes the only identity slot.
    e.check(&token("tok-other"), tenants("a"), Action::Read)
        .await;
    assert_eq!(e.reviewer().token_reviews(), 2);
    // The cached allow still answers, without a TokenReview...
    let d = e
        .check(&token("tok-query"), tenants("a"), Action::Read)
        .await;
    assert!(d.is_allowed() && d.cached());
    assert_eq!(e.reviewer().token_reviews(), 2);
    // ...and so does a cached denial.
    e.check(&token("tok-query"), tenants("z"), Action::Read)
        .await;
    // A new question of the other token evicts tok-query's identity again.
    e.check(&token("tok-other"), tenants("c"), Action::Read)
        .await;
    let reviews = e.reviewer().token_reviews();
    assert_eq!(reviews, 4);
    let d = e
        .check(&token("tok-query"), tenants("z"), Action::Read)
        .await;
    assert_eq!((status(&d), d.cached()), (403, true));
    assert_eq!(e.reviewer().token_reviews(), reviews);
    // A new question needs the identity again: one TokenReview.
    assert!(e
        .check(&token("tok-query"), tenants("b"), Action::Read)
        .await
        .is_allowed());
    assert_eq!(e.reviewer().token_reviews(), reviews + 1);
}

#[tokio::test]
async fn a_decision_never_outlives_the_identity_ttl() {
    let mut s = settings();
    s.cache.identity_ttl = Duration::from_millis(100);
    let e = engine_with(s);
    assert!(e
        .check(&token("tok-query"), tenants("a"), Action::Read)
        .await
        .is_allowed());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let d = e
        .check(&token("tok-query"), tenants("a"), Action::Read)
        .await;
    assert!(d.is_allowed() && !d.cached(), "{d:?}");
    assert_eq!(e.reviewer().token_reviews(), 2);
}

#[tokio::test]
async fn a_cached_denial_answers_even_when_another_tenant_is_uncached() {
    let e = engine();
    assert_eq!(
        status(
            &e.check(&token("tok-query"), tenants("z"), Action::Read)
                .await
        ),
        403
    );
    let sars = e.reviewer().access_reviews();
    for _ in 0..5 {
        let d = e
            .check(&token("tok-query"), tenants("a|z"), Action::Read)
            .await;
        assert_eq!((status(&d), d.cached()), (403, true));
    }
    assert_eq!(
        e.reviewer().access_reviews(),
        sars,
        "no review started and abandoned"
    );
}

#[test]
fn identity_ttl_is_not_rounded_past_the_exp() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_millis(1_000_029_999);
    let ttl = identity_ttl(Duration::from_secs(120), &token(&jwt(1_000_030)), now);
    assert_eq!(ttl, Duration::from_millis(1));
}

/// Cache confusion: a cached allow answers only its own token, tenant and action.
#[tokio::test]
async fn a_cached_allow_is_for_its_token_tenant_and_action_only() {
    let e = engine();
    e.reviewer().add_token("tok-other", "other");
    assert!(e
        .check(&token("tok-query"), tenants("a"), Action::Read)
        .await
        .is_allowed());
    // Another token (a different hash), another action, another tenant: asked, and denied.
    for (tok, tenant, action) in [
        ("tok-other", "a", Action::Read),
        ("tok-query", "a", Action::Write),
        ("tok-query", "z", Action::Read),
        ("tok-quer", "a", Action::Read),
        ("tok-queryx", "a", Action::Read),
    ] {
        let d = e.check(&token(tok), tenants(tenant), action).await;
        assert!(
            !d.is_allowed(),
            "{tok} {tenant} {action:?} used another's allow"
        );
        assert!(
            !d.cached(),
            "{tok} {tenant} {action:?} answered from the cache"
        );
    }
    // `a|z` is not answered by the cached `a`.
    let d = e
        .check(&token("tok-query"), tenants("a|z"), Action::Read)
        .await;
    assert_eq!(status(&d), 403);
}

#[test]
fn only_watched_service_accounts_get_the_long_identity_ttl() {
    let e = engine();
    let sa = Identity {
        username: "system:serviceaccount:showcase:grafana".into(),
        ..Default::default()
    };
    let oidc = Identity {
        username: "alice@example.com".into(),
        ..Default::default()
    };
    let mut pod_bound = sa.clone();
    pod_bound.extra.insert(
        crate::review::kube::POD_UID_EXTRA.into(),
        vec!["pod-uid-1".into()],
    );
    let c = CacheConfig::default();
    assert_eq!(e.identity_ttl(&sa), c.identity_ttl, "no watch yet");
    e.set_watch_health(WatchHealth {
        rbac: true,
        service_accounts: true,
        pods: None,
    });
    assert_eq!(e.identity_ttl(&sa), c.watched_identity_ttl);
    assert_eq!(
        e.identity_ttl(&oidc),
        c.identity_ttl,
        "no watch can revoke it"
    );
    assert_eq!(
        e.identity_ttl(&pod_bound),
        c.identity_ttl,
        "pods not watched"
    );
    e.set_watch_health(WatchHealth {
        rbac: true,
        service_accounts: true,
        pods: Some(true),
    });
    assert_eq!(e.identity_ttl(&pod_bound), c.watched_identity_ttl);
}

/// A cached allow does not look at the identity again: while the ServiceAccount watch is
/// down it must not outlive `identity_ttl`, even if the RBAC watches are up.
#[tokio::test]
async fn cached_allows_are_bounded_by_identity_ttl_while_the_service_account_watch_is_down() {
    const SA: &str = "system:serviceaccount:a:grafana";
    let mut s = settings();
    s.cache.identity_ttl = Duration::from_millis(80);
    let e = engine_with(s);
    e.reviewer().add_token("tok-sa", SA);
    e.reviewer().grant(SA, "a", Action::Read);
    let up = WatchHealth {
        rbac: true,
        service_accounts: true,
        pods: None,
    };
    e.set_watch_health(up);
    assert!(e
        .check(&token("tok-sa"), tenants("a"), Action::Read)
        .await
        .is_allowed());
    tokio::time::sleep(Duration::from_millis(120)).await;
    let d = e.check(&token("tok-sa"), tenants("a"), Action::Read).await;
    assert!(d.cached(), "watches up: the allow lives the watched TTLs");
    e.set_watch_health(WatchHealth {
        service_accounts: false,
        ..up
    });
    let d = e.check(&token("tok-sa"), tenants("a"), Action::Read).await;
    assert!(
        d.is_allowed() && !d.cached(),
        "an allow older than identity_ttl was reused"
    );
}

/// Polls `f` once with this task's waker: as far as it gets without waiting. Orders the
/// Checks below by what they have done, not by how long they took.
async fn poll_once<F: std::future::Future + Unpin>(f: &mut F) -> std::task::Poll<F::Output> {
    std::future::poll_fn(|cx| std::task::Poll::Ready(std::pin::Pin::new(&mut *f).poll(cx))).await
}

/// An engine whose reviews take a moment, so that a Check stops at its review; the deadline
/// is far off: the order of events is set by polling, never by time.
fn slow_engine(sa: &str) -> Arc<Authorizer<MemoryReviewer>> {
    let mut s = settings();
    s.decision_timeout = Duration::from_secs(30);
    let e = engine_with(s);
    e.reviewer().add_token("tok-sa", sa);
    e.reviewer().grant(sa, "a", Action::Read);
    e.reviewer().grant(sa, "b", Action::Read);
    e.reviewer().set_latency(Duration::from_millis(20));
    e
}

/// The ServiceAccount is deleted while a TokenReview of its token is in flight: a Check that
/// arrives after the deletion must not be authenticated by that older review (the identities
/// are keyed by token, so only the answer says whose they are).
#[tokio::test]
async fn a_check_after_a_revocation_does_not_share_a_token_review_from_before() {
    const SA: &str = "system:serviceaccount:a:grafana";
    let e = slow_engine(SA);
    let tok = token("tok-sa");
    let mut before = std::pin::pin!(e.check(&tok, tenants("a"), Action::Read));
    assert!(poll_once(&mut before).await.is_pending());
    assert_eq!(
        e.reviewer().token_reviews(),
        1,
        "its TokenReview is in flight"
    );
    // The watch sees the ServiceAccount deleted; then a Check with its token arrives.
    e.invalidate_user(SA);
    let mut after = std::pin::pin!(e.check(&tok, tenants("a"), Action::Read));
    assert!(poll_once(&mut after).await.is_pending());
    assert_eq!(
        e.reviewer().token_reviews(),
        1,
        "it waits for the review in flight"
    );
    let d = before.await;
    assert!(d.is_allowed(), "the Check from before the deletion: {d:?}");
    // The API server no longer knows the token.
    e.reviewer().remove_token("tok-sa");
    let d = after.await;
    assert_eq!(status(&d), 401, "{d:?}");
    assert_eq!(e.reviewer().token_reviews(), 2, "a TokenReview of its own");
}

/// The same for a decision: the user's answers are invalidated while a SAR about it is in
/// flight; a Check that arrives after is not answered by that SAR.
#[tokio::test]
async fn a_check_after_a_revocation_does_not_share_a_sar_from_before() {
    const SA: &str = "system:serviceaccount:a:grafana";
    let e = slow_engine(SA);
    let tok = token("tok-sa");
    // The identity is cached: the next Check goes straight to its SAR.
    assert!(e.check(&tok, tenants("b"), Action::Read).await.is_allowed());
    let mut before = std::pin::pin!(e.check(&tok, tenants("a"), Action::Read));
    assert!(poll_once(&mut before).await.is_pending());
    assert_eq!(e.reviewer().access_reviews(), 2, "its SAR is in flight");
    e.invalidate_user(SA);
    // The next Check authenticates anew (its identity went too), then finds the SAR in flight.
    let mut after = std::pin::pin!(e.check(&tok, tenants("a"), Action::Read));
    std::future::poll_fn(|cx| {
        assert!(
            std::future::Future::poll(after.as_mut(), cx).is_pending(),
            "it waits for the SAR"
        );
        if e.identities.get_cached(&tok.hash()).is_some() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    // A few more polls: had it not reached its decision yet, it would now either join the
    // SAR in flight (still 2 SARs) or start its own (3); both are visible below.
    for _ in 0..3 {
        assert!(
            poll_once(&mut after).await.is_pending(),
            "it waits for the SAR"
        );
    }
    assert_eq!(e.reviewer().token_reviews(), 2);
    assert_eq!(
        e.reviewer().access_reviews(),
        2,
        "it joined the SAR in flight"
    );
    let d = before.await;
    assert!(
        d.is_allowed(),
        "the Check from before the revocation: {d:?}"
    );
    // The grant is gone too (the memory reviewer decides when a review ends, so only now).
    e.reviewer().revoke(SA, "a", Action::Read);
    let d = after.await;
    assert_eq!(status(&d), 403, "{d:?}");
    assert_eq!(e.reviewer().access_reviews(), 3, "a SAR of its own");
}
