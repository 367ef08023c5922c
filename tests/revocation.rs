//! Revocation by watch: the real binary, the real kube client (watchers included), and the
//! fake API with real list/watch semantics (resourceVersion, history, bookmarks, 410 Gone).
//!
//! With the watches up, a removed RoleBinding, a new grant or a deleted ServiceAccount takes
//! effect on the next request, although allows are cached for 10 minutes.

mod support;

use std::time::{Duration, Instant};

use support::authz::AuthzProcess;
use support::fake_kube::{traces_rule, FakeKube, FakeUser, Fault, Kind, Subject};

const TOKEN: &str = "revocation-test-token-4f1c9a7e2b6d08c35e1f7a9b";

fn grafana() -> Subject {
    Subject::ServiceAccount {
        namespace: "showcase".into(),
        name: "grafana".into(),
    }
}

async fn setup() -> FakeKube {
    let fake = FakeKube::start().await;
    for ns in ["showcase", "payments"] {
        fake.create_namespace(ns);
    }
    fake.create_service_account("showcase", "grafana");
    fake.add_token(TOKEN, FakeUser::service_account("showcase", "grafana"));
    fake.bind_traces("showcase", "grafana-reads", grafana(), &["get"]);
    fake
}

/// Starts tenant-authz and waits until every watch has synced (`/readyz` without the note).
async fn start(fake: &FakeKube) -> AuthzProcess {
    start_with(fake, &[]).await
}

async fn start_with(fake: &FakeKube, args: &[&str]) -> AuthzProcess {
    let authz = AuthzProcess::start(fake.kubeconfig_path(), args).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = authz.admin_get("/readyz").await.expect("readyz");
        if status == 200 && body == "ready\n" {
            return authz;
        }
        assert!(
            Instant::now() < deadline,
            "watches did not sync: /readyz says {body:?}\n{}",
            authz.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn read(authz: &AuthzProcess, tenant: &str) -> (u16, String) {
    authz.read_as(TOKEN, tenant).await
}

/// Polls until `tenant` answers `status`; returns how long it took.
async fn until_status(
    authz: &AuthzProcess,
    tenant: &str,
    status: u16,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let (got, body) = read(authz, tenant).await;
        if got == status {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{tenant}: still {got} after {within:?}, want {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn metric(metrics: &str, name_and_labels: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_rolebinding_denies_the_next_request() {
    let fake = setup().await;
    let authz = start(&fake).await;
    assert_eq!(read(&authz, "showcase").await.0, 200);
    assert_eq!(read(&authz, "showcase").await.0, 200, "cached");
    let sars = fake.subject_access_reviews();
    fake.delete(Kind::RoleBinding, Some("showcase"), "grafana-reads")
        .expect("the binding existed")
        .sent()
        .await;
    let took = until_status(&authz, "showcase", 403, Duration::from_secs(1)).await;
    assert!(fake.subject_access_reviews() > sars, "asked the API again");
    eprintln!("revoked in {took:?}");
    let metrics = authz.metrics().await;
    assert!(
        metric(
            &metrics,
            "tenant_authz_cache_invalidations_total{scope=\"tenant\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_after_a_cached_denial_allows_the_next_request() {
    let fake = setup().await;
    let authz = start(&fake).await;
    assert_eq!(read(&authz, "payments").await.0, 403);
    assert_eq!(read(&authz, "payments").await.0, 403, "cached denial");
    fake.bind_traces("payments", "grafana-reads", grafana(), &["get"])
        .sent()
        .await;
    until_status(&authz, "payments", 200, Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_service_account_is_401() {
    let fake = setup().await;
    let authz = start(&fake).await;
    assert_eq!(read(&authz, "showcase").await.0, 200);
    fake.delete(Kind::ServiceAccount, Some("showcase"), "grafana")
        .expect("existed")
        .sent()
        .await;
    until_status(&authz, "showcase", 401, Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_role_binding_changes_drop_every_decision() {
    let fake = setup().await;
    let authz = start(&fake).await;
    assert_eq!(read(&authz, "payments").await.0, 403);
    // A cluster-wide grant (a ClusterRoleBinding to a ClusterRole on traces).
    fake.create_cluster_role(
        "traces-reader",
        vec![k8s_openapi::api::rbac::v1::PolicyRule {
            api_groups: Some(vec!["tempo.grafana.com".into()]),
            resources: Some(vec!["traces".into()]),
            verbs: vec!["get".into()],
            ..Default::default()
        }],
    );
    fake.create_cluster_role_binding("grafana-reads-all", "traces-reader", &[grafana()])
        .sent()
        .await;
    until_status(&authz, "payments", 200, Duration::from_secs(1)).await;
}

/// A GitOps sync touching 1 000 RoleBindings of other tenants: no stall, and the decisions of
/// `showcase` stay cached (no new SAR for it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_other_tenants_events_keeps_unaffected_decisions() {
    let fake = setup().await;
    let authz = start(&fake).await;
    assert_eq!(read(&authz, "showcase").await.0, 200);
    // A cached denial inside the burst: only its invalidation can turn it into an allow.
    assert_eq!(read(&authz, "team-7").await.0, 403);
    assert_eq!(read(&authz, "team-7").await.0, 403);
    let sars = fake.subject_access_reviews();
    let mut last = None;
    for i in 0..1000 {
        let ns = format!("team-{}", i % 50);
        last = Some(fake.bind_traces(&ns, &format!("rb-{i}"), grafana(), &["get"]));
    }
    last.expect("events").sent().await;
    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(read(&authz, "showcase").await.0, 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "20 cached Checks took {:?} after the burst",
        started.elapsed()
    );
    assert_eq!(
        fake.subject_access_reviews(),
        sars,
        "showcase's cached allow was dropped by other tenants' events"
    );
    // The burst did reach the engine: the tenant denied (and cached) before it is allowed.
    assert_eq!(read(&authz, "team-7").await.0, 200);
    assert!(
        fake.subject_access_reviews() > sars,
        "team-7's allow came without a new SAR"
    );
}

/// Watch down: `/readyz` says so, `tenant_authz_watch_up` is 0, and the allow TTL falls back
/// to the short one (here 1 s), for allows cached before too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_down_falls_back_to_short_ttls_and_says_so() {
    let fake = setup().await;
    let authz = AuthzProcess::start(fake.kubeconfig_path(), &["--cache-allowed-ttl", "1s"]).await;
    // Synced first.
    let deadline = Instant::now() + Duration::from_secs(20);
    while authz.admin_get("/readyz").await.expect("readyz").1 != "ready\n" {
        assert!(Instant::now() < deadline, "watches did not sync");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(read(&authz, "showcase").await.0, 200);
    let sars = fake.subject_access_reviews();

    fake.set_watch_fault(Fault::Status500);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = authz.metrics().await;
        if metric(&metrics, "tenant_authz_watch_up{resource=\"rolebindings\"}") == Some(0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "watch_up never went to 0\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = authz.admin_get("/readyz").await.expect("readyz");
    assert_eq!(status, 200, "still ready: decisions work, with short TTLs");
    assert!(
        body.contains("rolebindings") && body.contains("short cache TTLs"),
        "{body}"
    );

    // The allow cached while the watches were up is now bounded by the 1 s TTL.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(read(&authz, "showcase").await.0, 200);
    assert!(
        fake.subject_access_reviews() > sars,
        "the old allow was reused past 1 s"
    );

    // Back up: synced again.
    fake.set_watch_fault(Fault::None);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = authz.admin_get("/readyz").await.expect("readyz").1;
        if body == "ready\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "watches did not come back: {body}\n{}",
            authz.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A change missed while the watch was down is applied by the relist's comparison.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_missed_while_down_is_applied_after_the_relist() {
    let fake = setup().await;
    let authz = start(&fake).await;
    assert_eq!(read(&authz, "showcase").await.0, 200);
    fake.set_watch_fault(Fault::Status500);
    // While the watches are down, the binding goes, and the history is compacted (410 Gone
    // for any watch from before).
    fake.delete(Kind::RoleBinding, Some("showcase"), "grafana-reads");
    fake.compact();
    fake.set_watch_fault(Fault::None);
    until_status(&authz, "showcase", 403, Duration::from_secs(30)).await;
}

/// A live watch whose stream ends resumes from its last resourceVersion; if the server
/// compacted past it meanwhile, the resumed watch gets `410 Gone` (an ERROR event). The watch
/// then relists, and the change it never saw as an event is applied from the comparison.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumed_past_compaction_gets_410_and_the_missed_change_is_applied() {
    let fake = setup().await;
    let authz = start(&fake).await;
    assert_eq!(read(&authz, "showcase").await.0, 200);
    let opened = fake.watches_opened();
    let lists = fake.lists();
    // The open streams end; the resumed watches wait 3 s before the server answers them.
    fake.set_watch_fault(Fault::Slow(Duration::from_secs(3)));
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.watches_opened() < opened + 6 {
        assert!(Instant::now() < deadline, "the watches did not resume");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fake.lists(), lists, "resumed without a list");
    // Meanwhile the binding goes and the history is compacted past the resumed versions.
    fake.delete(Kind::RoleBinding, Some("showcase"), "grafana-reads");
    fake.compact();
    fake.set_watch_fault(Fault::None);
    until_status(&authz, "showcase", 403, Duration::from_secs(30)).await;
    // It was the RoleBindings watch's 410 and relist that applied it, not a live event.
    let metrics = authz.metrics().await;
    let rolebinding_errors = metrics
        .lines()
        .find(|l| {
            l.starts_with("tenant_authz_watch_events_total{")
                && l.contains("resource=\"rolebindings\"")
                && l.contains("event=\"error\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        rolebinding_errors >= 1.0,
        "no rolebindings watch error\n{metrics}"
    );
    let log = authz.log();
    assert!(
        log.lines().any(|l| l.contains("watch failed")
            && l.contains("rolebindings")
            && (l.contains("410") || l.contains("Expired"))),
        "the rolebindings watch did not see a 410:\n{log}"
    );
    assert!(fake.lists() > lists, "no relist after the 410");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_ask_only_list_and_watch_metadata_of_what_decides() {
    let fake = setup().await;
    let _authz = start(&fake).await;
    let requests = fake.received_watch_requests();
    assert!(!requests.is_empty());
    let mut paths: Vec<String> = requests.iter().map(|r| r.path.clone()).collect();
    paths.sort();
    paths.dedup();
    assert_eq!(
        paths,
        vec![
            "/api/v1/namespaces",
            "/api/v1/serviceaccounts",
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            "/apis/rbac.authorization.k8s.io/v1/rolebindings",
            "/apis/rbac.authorization.k8s.io/v1/roles",
        ],
        "no pods unless kubernetes.watch_pods"
    );
    assert!(
        requests.iter().all(|r| r.metadata_only),
        "every list and watch is metadata-only"
    );
}

/// `kubernetes.watch_pods`: a pod-bound token stops working when its pod is deleted (the API
/// would now reject it), although its identity was cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_pod_drops_its_bound_tokens_when_pods_are_watched() {
    const POD_TOKEN: &str = "revocation-pod-token-8e2f4b6a1c3d5e7f90a1b2c3";
    let fake = setup().await;
    fake.create_pod_for("showcase", "grafana-0", "grafana");
    fake.add_token(
        POD_TOKEN,
        FakeUser::service_account("showcase", "grafana").with_pod("grafana-0"),
    );
    let authz = AuthzProcess::start(fake.kubeconfig_path(), &["--watch-pods", "true"]).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while authz.admin_get("/readyz").await.expect("readyz").1 != "ready\n" {
        assert!(Instant::now() < deadline, "watches did not sync");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(authz.read_as(POD_TOKEN, "showcase").await.0, 200);
    fake.delete(Kind::Pod, Some("showcase"), "grafana-0")
        .expect("existed")
        .sent()
        .await;
    let started = Instant::now();
    while authz.read_as(POD_TOKEN, "showcase").await.0 != 401 {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "still allowed after its pod went"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A watch that goes silent (a connection that died without a word: no FIN, no RST) is taken
/// as dead after `kubernetes.watch_idle_timeout` and relisted, with short TTLs meanwhile. One
/// that gets the API server's periodic bookmarks (every minute in a real cluster; every
/// 300 ms here) is never taken as dead, however quiet its objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_watch_is_taken_as_dead_but_bookmarks_keep_a_quiet_one_alive() {
    let fake = setup().await;
    fake.set_bookmark_interval(Some(Duration::from_millis(300)));
    let authz = start_with(&fake, &["--watch-idle-timeout", "2s"]).await;
    let lists = fake.lists();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        fake.lists(),
        lists,
        "bookmarks came every 300 ms, yet a watch was taken as dead\n{}",
        authz.log()
    );

    fake.set_bookmark_interval(None);
    let silent = Instant::now();
    let deadline = silent + Duration::from_secs(15);
    while fake.lists() == lists {
        assert!(
            Instant::now() < deadline,
            "silent watches were never relisted\n{}",
            authz.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = silent.elapsed();
    assert!(
        after >= Duration::from_millis(1500),
        "relisted after {after:?}, before the 2 s idle timeout"
    );
    let metrics = authz.metrics().await;
    let errors = metrics
        .lines()
        .filter(|l| {
            l.starts_with("tenant_authz_watch_events_total{") && l.contains("event=\"error\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    assert!(errors >= 1.0, "no watch error counted\n{metrics}");
}

/// The watches' tasks are supervised: an invalidation target that panics once (a bug in the
/// engine) takes the flusher down. Until a restarted flusher has applied the batch again, no
/// watch counts as up (short TTLs); the batch is requeued and applied by the restarted
/// flusher at once, well before the second pass (3 s); later changes are applied as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_flusher_is_restarted_and_loses_no_invalidation() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use tenant_authz::authorizer::{Invalidate, Invalidation, WatchHealth};

    #[derive(Default)]
    struct PanicsOnce {
        calls: AtomicUsize,
        tenants: Mutex<Vec<String>>,
        health: Mutex<Vec<WatchHealth>>,
    }
    impl Invalidate for PanicsOnce {
        fn invalidate(&self, batch: &Invalidation) {
            if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("test: the first invalidation panics");
            }
            let mut seen = self.tenants.lock().unwrap();
            seen.extend(batch.tenants.iter().map(|t| t.to_string()));
        }
        fn set_watch_health(&self, health: WatchHealth) {
            self.health.lock().unwrap().push(health);
        }
    }
    let got = |target: &PanicsOnce, tenant: &str| {
        target.tenants.lock().unwrap().iter().any(|t| t == tenant)
    };
    async fn until(what: &str, within: Duration, done: impl Fn() -> bool) -> Duration {
        let started = Instant::now();
        while !done() {
            assert!(started.elapsed() < within, "{what} within {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        started.elapsed()
    }

    let fake = setup().await;
    let target = Arc::new(PanicsOnce::default());
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(tenant_authz::metrics::Metrics::register(&mut registry));
    let readiness = Arc::new(tenant_authz::admin::Readiness::for_backend(
        "the Kubernetes API",
    ));
    let tasks = tenant_authz::review::kube::watch::spawn(
        fake.client().await,
        target.clone(),
        metrics,
        readiness.clone(),
        false,
    );
    until("watches synced", Duration::from_secs(20), || {
        readiness.note().is_none()
    })
    .await;
    let published = target.health.lock().unwrap().len();
    assert!(target.health.lock().unwrap()[published - 1].rbac);

    // One object, one event, one batch: the one that panics.
    fake.create_role("payments", "first", vec![traces_rule(&["get"])])
        .sent()
        .await;
    let took = until(
        "the batch of the panicking pass arrived",
        Duration::from_secs(10),
        || got(&target, "payments"),
    )
    .await;
    assert!(
        took < Duration::from_millis(2500),
        "took {took:?}: only the second pass (3 s) applied it, not the restarted flusher"
    );
    let health = target.health.lock().unwrap()[published..].to_vec();
    assert!(
        health.iter().any(|h| !h.rbac && !h.service_accounts),
        "no watch counted as down while the flusher was dead: {health:?}"
    );
    assert!(health.last().is_some_and(|h| h.rbac), "{health:?}");
    assert!(readiness.note().is_none(), "{:?}", readiness.note());

    fake.create_role("showcase", "second", vec![traces_rule(&["get"])])
        .sent()
        .await;
    until(
        "the restarted flusher applied a later change",
        Duration::from_secs(2),
        || got(&target, "showcase"),
    )
    .await;
    for task in tasks {
        task.abort();
    }
}
