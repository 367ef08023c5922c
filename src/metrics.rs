//! Prometheus metrics, prefixed `tenant_authz_`. The request path calls intent-named methods and
//! never spells a metric name. Labels are bounded: no token-derived label, no tenant, no user.
//! Cache sizes are read at scrape time by a collector instead of being updated on every write.

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::model::{Action, Decision, DenyReason};
use crate::review::ReviewKind;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    decision: &'static str,
    reason: &'static str,
    action: &'static str,
    cached: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    cache: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReviewLabels {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabel {
    resource: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WatchEventLabels {
    resource: &'static str,
    event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeLabel {
    scope: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Outcomes of a Check for the counter table: `ok` (allow) then every deny kind.
const OUTCOMES: usize = 1 + DenyReason::KINDS.len();
/// `read`, `write`, `manage`, `unknown`.
const ACTIONS: usize = 4;

/// The metrics of tenant-authz.
///
/// The Check path never takes the families' locks: counters are resolved once (lazily, per
/// label combination) into lock-free tables of handles; cache counters and duration histograms
/// are resolved at registration.
#[derive(Debug)]
pub struct Metrics {
    checks: Family<CheckLabels, Counter>,
    check_handles: Box<[OnceLock<Counter>]>,
    duration_handles: [Histogram; 3],
    cache_handles: [[Counter; 4]; 2],
    check_duration: HistogramFamily<KindLabel>,
    cache_lookups: Family<CacheLabels, Counter>,
    reviews: Family<ReviewLabels, Counter>,
    review_duration: HistogramFamily<KindLabel>,
    reviews_in_flight: Gauge,
    reloads: Family<OutcomeLabel, Counter>,
    watch_up: Family<ResourceLabel, Gauge>,
    watch_events: Family<WatchEventLabels, Counter>,
    invalidations: Family<ScopeLabel, Counter>,
    last_reload_ok: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// Which cache a lookup went to.
#[derive(Clone, Copy, Debug)]
pub enum CacheName {
    Identity,
    Decision,
}

/// What a cache lookup found.
#[derive(Clone, Copy, Debug)]
pub enum CacheResult {
    Hit,
    NegativeHit,
    Miss,
    Coalesced,
}

impl Metrics {
    /// Registers every metric under `registry` (which the caller prefixes with `tenant_authz`).
    pub fn register(registry: &mut Registry) -> Self {
        let check_duration: HistogramFamily<KindLabel> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.000_05, 2.5, 14)));
        let duration_handles = ["rejected", "cached", "reviewed"]
            .map(|kind| check_duration.get_or_create(&KindLabel { kind }).clone());
        let cache_lookups: Family<CacheLabels, Counter> = Family::default();
        let cache_handles = ["identity", "decision"].map(|cache| {
            ["hit", "negative_hit", "miss", "coalesced"].map(|result| {
                cache_lookups
                    .get_or_create(&CacheLabels { cache, result })
                    .clone()
            })
        });
        let m = Self {
            checks: Family::default(),
            check_handles: (0..OUTCOMES * ACTIONS * 2)
                .map(|_| OnceLock::new())
                .collect(),
            duration_handles,
            cache_handles,
            check_duration,
            cache_lookups,
            reviews: Family::default(),
            review_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 14))
            }),
            reviews_in_flight: Gauge::default(),
            reloads: Family::default(),
            watch_up: Family::default(),
            watch_events: Family::default(),
            invalidations: Family::default(),
            last_reload_ok: Gauge::default(),
        };
        m.last_reload_ok.set(1);
        registry.register(
            "checks",
            "Checks answered, by decision, reason, action and whether the answer was cached",
            m.checks.clone(),
        );
        registry.register(
            "check_duration_seconds",
            "Time to answer a Check, by kind (cached, reviewed, rejected before any review)",
            m.check_duration.clone(),
        );
        registry.register(
            "cache_lookups",
            "Cache lookups by cache (identity, decision) and result (hit, negative_hit, miss, coalesced)",
            m.cache_lookups.clone(),
        );
        registry.register(
            "backend_requests",
            "Reviews sent to the backend (Kubernetes: TokenReviews and SubjectAccessReviews; static: lookups), by kind (authenticate, authorize) and outcome",
            m.reviews.clone(),
        );
        registry.register(
            "backend_request_duration_seconds",
            "Latency of reviews sent to the backend, by kind",
            m.review_duration.clone(),
        );
        registry.register(
            "backend_requests_in_flight",
            "Reviews in flight to the backend",
            m.reviews_in_flight.clone(),
        );
        registry.register(
            "config_reloads",
            "Reloads of the static backend's config file, by outcome (ok, error)",
            m.reloads.clone(),
        );
        registry.register(
            "config_last_reload_successful",
            "1 if the last config reload succeeded (or none happened), 0 if it failed",
            m.last_reload_ok.clone(),
        );
        registry.register(
            "watch_up",
            "1 while the watch of a resource is synced and up (long TTLs need every one), else 0",
            m.watch_up.clone(),
        );
        registry.register(
            "watch_events",
            "Watch events by resource and event (applied, deleted, relist, synced, error)",
            m.watch_events.clone(),
        );
        registry.register(
            "cache_invalidations",
            "Cache invalidations from watches, by scope (tenant, user, pod, all_decisions)",
            m.invalidations.clone(),
        );
        let build: Family<VersionLabel, Gauge> = Family::default();
        build
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "tenant-authz version", build);
        m
    }

    /// Records one answered Check.
    /// `reviewed`: the request passed parsing and went to the decision engine.
    pub fn check_answered(
        &self,
        decision: &Decision,
        action: Option<Action>,
        reviewed: bool,
        elapsed: Duration,
    ) {
        let outcome = match decision {
            Decision::Allow { .. } => 0,
            Decision::Deny { reason, .. } => 1 + reason.kind_index(),
        };
        let action_index = match action {
            Some(Action::Read) => 0,
            Some(Action::Write) => 1,
            Some(Action::Manage) => 2,
            None => 3,
        };
        let cached = decision.cached();
        let slot = (outcome * ACTIONS + action_index) * 2 + usize::from(cached);
        self.check_handles[slot]
            .get_or_init(|| {
                let (label, reason) = match decision {
                    Decision::Allow { .. } => ("allow", "ok"),
                    Decision::Deny { reason, .. } => ("deny", reason.kind()),
                };
                self.checks
                    .get_or_create(&CheckLabels {
                        decision: label,
                        reason,
                        action: action.map_or("unknown", Action::as_str),
                        cached: if cached { "true" } else { "false" },
                    })
                    .clone()
            })
            .inc();
        let kind = match (reviewed, cached) {
            (false, _) => 0,
            (true, true) => 1,
            (true, false) => 2,
        };
        self.duration_handles[kind].observe(elapsed.as_secs_f64());
    }

    /// Whether the watch of `resource` is synced and up.
    pub fn watch_up(&self, resource: &'static str, up: bool) {
        self.watch_up
            .get_or_create(&ResourceLabel { resource })
            .set(i64::from(up));
    }

    /// One event of the watch of `resource`.
    pub fn watch_event(&self, resource: &'static str, event: &'static str) {
        self.watch_events
            .get_or_create(&WatchEventLabels { resource, event })
            .inc();
    }

    /// A watch dropped cached answers of `scope`.
    pub fn invalidated(&self, scope: &'static str) {
        self.invalidations
            .get_or_create(&ScopeLabel { scope })
            .inc();
    }

    /// A config reload finished (`ok`) or was rejected, keeping the running config.
    pub fn config_reloaded(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.reloads.get_or_create(&OutcomeLabel { outcome }).inc();
        self.last_reload_ok.set(i64::from(ok));
    }

    pub fn cache_lookup(&self, cache: CacheName, result: CacheResult) {
        let result = match result {
            CacheResult::Hit => 0,
            CacheResult::NegativeHit => 1,
            CacheResult::Miss => 2,
            CacheResult::Coalesced => 3,
        };
        self.cache_handles[cache as usize][result].inc();
    }

    /// A review is about to be sent; the guard records its outcome and latency when dropped,
    /// so a review abandoned at the deadline is counted too (as `cancelled`).
    pub fn review_started(&self, kind: ReviewKind) -> ReviewTimer<'_> {
        self.reviews_in_flight.inc();
        ReviewTimer {
            metrics: self,
            kind,
            started: std::time::Instant::now(),
            outcome: "cancelled",
        }
    }
}

/// Records a review when dropped.
pub struct ReviewTimer<'a> {
    metrics: &'a Metrics,
    kind: ReviewKind,
    started: std::time::Instant,
    outcome: &'static str,
}

impl ReviewTimer<'_> {
    pub fn finish(mut self, outcome: &'static str) {
        self.outcome = outcome;
    }
}

impl Drop for ReviewTimer<'_> {
    fn drop(&mut self) {
        let kind = self.kind.as_str();
        self.metrics.reviews_in_flight.dec();
        self.metrics
            .reviews
            .get_or_create(&ReviewLabels {
                kind,
                outcome: self.outcome,
            })
            .inc();
        self.metrics
            .review_duration
            .get_or_create(&KindLabel { kind })
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// Reads cache sizes at scrape time: `tenant_authz_cache_entries{cache=...}`.
pub struct CacheSizeCollector {
    read: Box<dyn Fn() -> Vec<(&'static str, u64)> + Send + Sync>,
}

impl CacheSizeCollector {
    pub fn new(read: impl Fn() -> Vec<(&'static str, u64)> + Send + Sync + 'static) -> Self {
        Self {
            read: Box::new(read),
        }
    }
}

impl fmt::Debug for CacheSizeCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CacheSizeCollector")
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheNameLabel {
    cache: &'static str,
}

impl Collector for CacheSizeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "cache_entries",
            "Entries in each cache (approximate; read at scrape time)",
            None,
            MetricType::Gauge,
        )?;
        for (cache, size) in (self.read)() {
            let labels = CacheNameLabel { cache };
            ConstGauge::new(i64::try_from(size).unwrap_or(i64::MAX))
                .encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Text exposition of a registry.
pub fn encode(registry: &Registry) -> Result<String, fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}
