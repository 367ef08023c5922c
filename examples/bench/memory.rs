//! Part 4: memory. RSS of tenant-authz after N distinct cached allows, then under a flood of
//! unknown tokens; an allow cached before the flood must still be served without a review.
//!
//! Backend: static, with one identity per token (the static backend is the only one that can
//! authenticate 100 000 tokens quickly on this machine). Its own data is not cache memory, so
//! the baseline is the same process with that config loaded and no token checked yet, and
//! "static data excluded" figures subtract what loading it cost over an idle tenant-authz
//! with a one-identity config, measured the same way (started, 200 Checks, 1.5 s pause).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use serde_json::json;

use crate::common::{
    check_request, jwt, metric, mib, rss_kib, thousands, variant, Authz, Report, Result, Rng,
    Settings,
};
use crate::direct::{sa_groups, write_static_config, StaticIdentity};
use crate::loadgen::{self, Stop};

const NAMESPACES: usize = 100;
const SAS_PER_NAMESPACE: usize = 10;

fn tokens_review_count(metrics: &str) -> f64 {
    metric(
        metrics,
        "tenant_authz_backend_requests_total",
        &[("kind", "authenticate")],
    )
}

fn cache_entries(metrics: &str, cache: &str) -> f64 {
    metric(metrics, "tenant_authz_cache_entries", &[("cache", cache)])
}

/// Starts tenant-authz with `config`, deletes the file, warms it with 200 Checks of an
/// unknown token over `connections` connections, pauses, and reads its RSS.
async fn start_settled(
    settings: &Settings,
    name: &str,
    config: &std::path::Path,
    warm: Arc<dyn Fn(u64) -> CheckRequest + Send + Sync>,
) -> Result<(Authz, Vec<loadgen::Client>, u64)> {
    let p = config.display().to_string();
    let authz = Authz::start(settings, name, &["--config", &p]).await?;
    // The static backend polls its file every second (reading it whole, comparing bytes):
    // with a file of 100 000 identities that adds allocator churn to the RSS measured.
    // Removing the file stops the re-reads (a missing file is skipped until it returns).
    let _ = std::fs::remove_file(config);
    let clients = loadgen::connect(authz.grpc, 8).await?;
    loadgen::run(&clients, 8, Stop::Count(200), warm).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rss = rss_kib(authz.proc.pid).0;
    Ok((authz, clients, rss))
}

pub async fn run(settings: &Settings, report: &mut Report) -> Result<()> {
    let n = settings.entries;
    let namespaces = if settings.smoke { 10 } else { NAMESPACES };
    let sas = namespaces * SAS_PER_NAMESPACE;
    // Token i belongs to ServiceAccount i % sas (one token per pod), in namespace
    // (i % sas) / SAS_PER_NAMESPACE, and queries that namespace.
    let ns_of = |i: usize| format!("tenant-{:03}", (i % sas) / SAS_PER_NAMESPACE);
    let sa_of = |i: usize| format!("sa-{}", (i % sas) % SAS_PER_NAMESPACE);
    let template = jwt("tenant-000", "sa-0", 424_242);
    let token_of = |i: usize| variant(&template, i as u64);

    let mut rng = Rng::new(11);
    let path = "/api/search?tags=service.name%3Dcheckout&limit=20";
    let base_req = check_request("x", "x", path, &mut rng);
    let request_for = {
        let base = base_req.clone();
        move |token: &str, tenant: &str| -> CheckRequest {
            let mut r = base.clone();
            let http = r
                .attributes
                .as_mut()
                .and_then(|a| a.request.as_mut())
                .and_then(|q| q.http.as_mut())
                .expect("http attributes");
            http.headers
                .insert("authorization".into(), format!("Bearer {token}"));
            http.headers.insert("x-scope-orgid".into(), tenant.into());
            r
        }
    };
    let request_for = Arc::new(request_for);
    let warm: Arc<dyn Fn(u64) -> CheckRequest + Send + Sync> = {
        let rf = request_for.clone();
        let token = variant(&template, u64::MAX - 1);
        Arc::new(move |_| rf(&token, "tenant-000"))
    };

    // The idle baseline: one identity, measured like the real one below.
    let idle_kib = {
        let path = settings.dir.join("bench-idle.yaml");
        let one = [StaticIdentity {
            token: token_of(0),
            username: "system:serviceaccount:tenant-000:sa-0".into(),
            groups: sa_groups("tenant-000"),
        }];
        let grant = "  - groups: [x]\n    tenants: [x]\n    actions: [read]\n";
        write_static_config(&path, &one, grant, "")?;
        start_settled(settings, "tenant-authz-idle", &path, warm.clone())
            .await?
            .2
    };

    let build = Instant::now();
    let identities: Vec<StaticIdentity> = (0..n)
        .map(|i| StaticIdentity {
            token: token_of(i),
            username: format!("system:serviceaccount:{}:{}", ns_of(i), sa_of(i)),
            groups: sa_groups(&ns_of(i)),
        })
        .collect();
    let mut grants = String::new();
    for ns in 0..namespaces {
        grants.push_str(&format!(
            "  - groups: [\"system:serviceaccounts:tenant-{ns:03}\"]\n    tenants: [tenant-{ns:03}]\n    actions: [read]\n"
        ));
    }
    let config = settings.dir.join("bench-memory.yaml");
    write_static_config(&config, &identities, &grants, "")?;
    drop(identities);
    let config_bytes = std::fs::metadata(&config).map(|m| m.len()).unwrap_or(0);
    let (authz, clients, base_kib) =
        start_settled(settings, "tenant-authz-memory", &config, warm).await?;
    let loaded_in = build.elapsed();
    let pid = authz.proc.pid;

    // Fill: n distinct tokens, each allowed once (one identity + one allowed decision each).
    let started = Instant::now();
    let fill = {
        let rf = request_for.clone();
        let template = template.clone();
        loadgen::run(
            &clients,
            64,
            Stop::Count(n as u64),
            Arc::new(move |i| {
                let i = i as usize;
                rf(
                    &variant(&template, i as u64),
                    &format!("tenant-{:03}", (i % sas) / SAS_PER_NAMESPACE),
                )
            }),
        )
        .await
    };
    let fill_time = started.elapsed();
    if fill.allowed != n as u64 {
        return Err(format!(
            "fill: {} of {n} Checks allowed (first error: {})",
            fill.allowed,
            fill.first_error.unwrap_or_default()
        ));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let filled_kib = rss_kib(pid).0;
    let filled_metrics = authz.metrics().await?;
    let per_entry = (filled_kib.saturating_sub(base_kib)) as f64 * 1024.0 / n as f64;

    // The allow that must survive the flood: the first token filled (least recently used).
    let survivor = request_for(&token_of(0), &ns_of(0));
    let check_survivor = || async {
        let before = tokens_review_count(&authz.metrics().await?);
        let code = clients[0]
            .clone()
            .check(survivor.clone())
            .await
            .map_err(|e| e.to_string())?
            .into_inner()
            .status
            .map_or(0, |s| s.code);
        let after = tokens_review_count(&authz.metrics().await?);
        Ok::<_, String>((code, after - before))
    };
    let (pre_code, pre_reviews) = check_survivor().await?;

    // The flood: distinct unknown tokens (401 each), many connections, high concurrency.
    let peak = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid).0, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let started = Instant::now();
    let flood = {
        let rf = request_for.clone();
        let template = template.clone();
        let offset = 1u64 << 40;
        loadgen::run(
            &clients,
            256,
            Stop::Count(settings.flood),
            Arc::new(move |i| rf(&variant(&template, offset + i), "tenant-000")),
        )
        .await
    };
    let flood_time = started.elapsed();
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.await;
    let flooded_kib = rss_kib(pid).0;
    let hwm_kib = rss_kib(pid).1;
    let peak_kib = peak.load(Ordering::Relaxed).max(flooded_kib);
    let ready = authz.readyz().await;
    let (post_code, post_reviews) = check_survivor().await?;
    let flooded_metrics = authz.metrics().await?;

    // A sample of every pre-flood allow: how many needed a new TokenReview?
    let sample = if settings.smoke { 100 } else { 1000 }.min(n);
    let before = tokens_review_count(&flooded_metrics);
    let sampled = {
        let rf = request_for.clone();
        let template = template.clone();
        let step = n / sample;
        loadgen::run(
            &clients,
            16,
            Stop::Count(sample as u64),
            Arc::new(move |k| {
                let i = k as usize * step;
                rf(
                    &variant(&template, i as u64),
                    &format!("tenant-{:03}", (i % sas) / SAS_PER_NAMESPACE),
                )
            }),
        )
        .await
    };
    let re_reviewed = tokens_review_count(&authz.metrics().await?) - before;

    let static_kib = base_kib.saturating_sub(idle_kib);
    let excl = |kib: u64| kib.saturating_sub(static_kib);
    println!(
        "  static backend: {} identities = {} ServiceAccounts in {namespaces} namespaces,",
        thousands(n as u64),
        thousands(sas as u64),
    );
    println!(
        "  {} pod tokens each (config {:.1} MiB, started in {:.1} s). Each token is checked once",
        n / sas,
        config_bytes as f64 / 1048576.0,
        loaded_in.as_secs_f64()
    );
    println!("  on its namespace: 1 identity + 1 allowed decision cached. Cache TTLs 1 h here.");
    println!();
    println!("  state                                         RSS MiB   static data excluded MiB");
    let row = |what: &str, kib: u64| {
        println!("  {what:<45} {:>7.1} {:>26.1}", mib(kib), mib(excl(kib)));
    };
    println!(
        "  {:<45} {:>7.1} {:>26}",
        "idle, one identity (the baseline)",
        mib(idle_kib),
        "-"
    );
    row(
        &format!("started, {} identities loaded", thousands(n as u64)),
        base_kib,
    );
    row(
        &format!("after {} cached allows", thousands(n as u64)),
        filled_kib,
    );
    row(
        &format!(
            "after the flood of {} unknown tokens",
            thousands(settings.flood)
        ),
        flooded_kib,
    );
    row(
        "peak during the flood (sampled / VmHWM)",
        peak_kib.max(hwm_kib),
    );
    println!();
    println!(
        "  bytes per cached token (identity + decision): {per_entry:.0} B  \
         (RSS growth / {})",
        thousands(n as u64)
    );
    println!(
        "  cache entries after fill: identities {:.0}, allowed {:.0}; fill {:.1} s ({:.0}/s)",
        cache_entries(&filled_metrics, "identities"),
        cache_entries(&filled_metrics, "allowed"),
        fill_time.as_secs_f64(),
        n as f64 / fill_time.as_secs_f64()
    );
    println!(
        "  flood: {} Checks in {:.1} s ({:.0}/s), {} denied, {} allowed, {} gRPC errors",
        thousands(flood.checks),
        flood_time.as_secs_f64(),
        flood.checks as f64 / flood_time.as_secs_f64(),
        thousands(flood.denied),
        flood.allowed,
        flood.errors
    );
    println!(
        "  after the flood: /readyz {ready}; cache entries: identities {:.0}, allowed {:.0},\n  \
         unauthenticated {:.0}",
        cache_entries(&flooded_metrics, "identities"),
        cache_entries(&flooded_metrics, "allowed"),
        cache_entries(&flooded_metrics, "unauthenticated")
    );
    println!(
        "  the first token filled: before the flood {} with {pre_reviews:.0} new TokenReviews;\n  \
         after it {} with {post_reviews:.0} new TokenReviews",
        if pre_code == 0 { "OK" } else { "DENIED" },
        if post_code == 0 { "OK" } else { "DENIED" },
    );
    println!(
        "  {sample} pre-flood allows (every {}th) after the flood: {} allowed, {re_reviewed:.0} \
         reviewed",
        n / sample,
        sampled.allowed
    );

    report.target(
        4,
        &format!("RSS, {} allows", thousands(n as u64)),
        format!(
            "{:.1} MiB excl. static data (abs. {:.1})",
            mib(excl(filled_kib)),
            mib(filled_kib)
        ),
        "≤ 64 MiB",
        mib(excl(filled_kib)) <= 64.0,
    );
    report.target(
        4,
        &format!("RSS, {}-token flood", thousands(settings.flood)),
        format!(
            "{:.1} MiB excl. static (peak {:.1}, abs. {:.1})",
            mib(excl(flooded_kib)),
            mib(excl(peak_kib.max(hwm_kib))),
            mib(flooded_kib)
        ),
        "≤ 128 MiB",
        mib(excl(flooded_kib)) <= 128.0,
    );
    report.target(
        4,
        "after it: /readyz, pre-flood allow",
        format!(
            "{ready}, {}, {post_reviews:.0} reviews",
            if post_code == 0 { "allowed" } else { "denied" }
        ),
        "200, allowed, 0",
        ready == 200 && post_code == 0 && post_reviews == 0.0,
    );
    report.json.insert(
        "part4_memory".into(),
        json!({
            "backend": "static", "entries": n, "service_accounts": sas, "namespaces": namespaces,
            "rss_kib": {"idle_small_config": idle_kib, "started_with_identities": base_kib,
                        "after_fill": filled_kib, "after_flood": flooded_kib,
                        "peak_during_flood": peak_kib.max(hwm_kib)},
            "bytes_per_cached_token": per_entry,
            "fill_seconds": fill_time.as_secs_f64(),
            "flood": {"tokens": settings.flood, "seconds": flood_time.as_secs_f64(),
                      "denied": flood.denied, "allowed": flood.allowed, "errors": flood.errors},
            "readyz_after_flood": ready,
            "survivor": {"allowed": post_code == 0, "new_token_reviews": post_reviews},
            "sample_after_flood": {"checked": sample, "allowed": sampled.allowed,
                                   "new_token_reviews": re_reviewed},
        }),
    );
    Ok(())
}
