//! Threat: resource exhaustion. An attacker with no valid token, or one request naming many
//! tenants, must not be able to deny service to users the API already authenticated.
//!
//! The real binary, the real kube client, and the fake API with latency and faults.

mod support;

use std::time::{Duration, Instant};

use support::authz::{read_on_port, AuthzProcess};
use support::fake_kube::{FakeKube, FakeUser, Fault, ReviewKind, Subject};

const KNOWN: &str = "token-known-user-0123456789abcdef";
const USER: &str = "system:serviceaccount:showcase:grafana";

async fn status(authz: &AuthzProcess, token: &str, tenants: &str) -> u16 {
    authz.read_as(token, tenants).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_check_naming_64_tenants_has_at_most_4_sars_in_flight() {
    let fake = FakeKube::start().await;
    fake.add_token(KNOWN, FakeUser::service_account("showcase", "grafana"));
    let tenants: Vec<String> = (0..64).map(|i| format!("tenant-{i:02}")).collect();
    for t in &tenants {
        fake.grant(Subject::User(USER.into()), t, "get");
    }
    let authz = AuthzProcess::start(fake.kubeconfig_path(), &[]).await;
    fake.set_latency(Duration::from_millis(15));
    fake.reset_counts();
    assert_eq!(status(&authz, KNOWN, &tenants.join("|")).await, 200);
    assert_eq!(fake.token_reviews(), 1);
    assert_eq!(fake.subject_access_reviews(), 64);
    let max = fake.max_in_flight();
    assert!(
        (2..=4).contains(&max),
        "one Check had {max} reviews in flight (limit 4, default max_reviews_per_check)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_unknown_tokens_does_not_starve_known_users() {
    let fake = FakeKube::start().await;
    fake.add_token(KNOWN, FakeUser::service_account("showcase", "grafana"));
    fake.grant(Subject::User(USER.into()), "showcase", "get");
    fake.grant(Subject::User(USER.into()), "payments", "get");
    let authz = AuthzProcess::start(fake.kubeconfig_path(), &[]).await;
    // The known user's identity is cached by a first request.
    assert_eq!(status(&authz, KNOWN, "showcase").await, 200);

    // The flood: 64 distinct unknown tokens (twice the default 32 permits), each TokenReview
    // hanging for 3 s at the API.
    fake.set_fault_for(ReviewKind::TokenReview, Fault::Slow(Duration::from_secs(3)));
    let flood: Vec<_> = (0..64)
        .map(|i| {
            let port = authz.grpc_port;
            tokio::spawn(async move {
                let token = format!("garbage-token-{i:04}-0123456789abcdef");
                read_on_port(port, &token, "showcase").await.0
            })
        })
        .collect();
    // Let the flood take every TokenReview permit it can.
    let started = Instant::now();
    while fake.max_in_flight() < 16 && started.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(fake.max_in_flight() >= 16, "the flood did not start");

    // A known identity asking about a new tenant needs only a SAR: it must not wait behind
    // the flood (before the budgets were split it got 503 at the 1.5 s decision deadline).
    let asked = Instant::now();
    assert_eq!(status(&authz, KNOWN, "payments").await, 200);
    let took = asked.elapsed();
    assert!(
        took < Duration::from_millis(1000),
        "the known user's new question took {took:?} during the flood"
    );
    // The flood itself is bounded to half the permits and fails closed (503 at the deadline).
    let in_flight_token_reviews = fake.max_in_flight();
    assert!(
        in_flight_token_reviews <= 17,
        "{in_flight_token_reviews} reviews in flight: TokenReviews must stay within half of 32"
    );
    for f in flood {
        assert_eq!(f.await.expect("flood task"), 503);
    }
}
