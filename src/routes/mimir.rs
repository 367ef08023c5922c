//! Grafana Mimir: metrics.
//!
//! From grafana/mimir `pkg/api/api.go` (every `RegisterRoute` with its methods; the Prometheus
//! API under `-http.prometheus-http-prefix`, default `/prometheus`, and the Alertmanager under
//! `-http.alertmanager-http-prefix`, default `/alertmanager`), at commit 00b4b54d (Mimir 3.x
//! main: the one snapshot reachable here). Recorded in `tests/data/routes/mimir.txt`.

use super::{deny_all, ActionConfig, ActionRule, Preset, RuleAction, ANY, UNSAFE};
use crate::model::Product;

pub static PRESET: Preset = Preset {
    product: Product::Mimir,
    group: "mimir.grafana.com",
    resource: "metrics",
    source: "grafana/mimir pkg/api/api.go at 00b4b54d61017b30f2fa6ba1191ae78f8a63fe5a",
    actions,
};

/// Not a tenant's API: rings, flush and shutdown, every tenant's configs, rules and stats
/// (`/ruler/rule_groups`, `/multitenant_alertmanager/configs`, `/distributor/all_user_stats`),
/// tenant deletion, the server's config and flags.
const OPERATIONS: &[&str] = &[
    "/distributor",
    "/ingester",
    "/ruler",
    "/store-gateway",
    "/compactor",
    "/multitenant_alertmanager",
    "/querier",
    "/query-scheduler",
    "/overrides-exporter",
    "/usage-tracker",
    "/memberlist",
    "/services",
    "/config",
    "/runtime_config",
    "/api/v1/status/config",
    "/api/v1/status/flags",
    "/static",
    "/debug",
    "/metrics",
    "/ready",
];

/// Mimir's table.
pub fn actions() -> ActionConfig {
    use RuleAction::*;
    let mut rules: Vec<ActionRule> = deny_all(OPERATIONS).collect();
    rules.extend([
        // Ingest: Prometheus remote write (and Influx line protocol under it), OTLP metrics,
        // historical block upload.
        ActionRule::prefix(ANY, "/api/v1/push", Write),
        ActionRule::prefix(ANY, "/otlp/v1/metrics", Write),
        ActionRule::prefix(UNSAFE, "/api/v1/upload/block", Write),
        // The tenant's Alertmanager configuration holds receiver credentials: reading it is
        // managing, not reading. (The ruler's alerts are /prometheus/api/v1/alerts, a read.)
        ActionRule::exact(ANY, "/api/v1/alerts", Manage),
        // Rule groups: reading them is a read, changing them manages the tenant.
        ActionRule::prefix(UNSAFE, "/prometheus/config/v1/rules", Manage),
        // Deleting series is not a query.
        ActionRule::prefix(&["DELETE"], "/prometheus/api/v1/series", Manage),
        // Queries take GET and POST (form-encoded); remote read is a POST.
        ActionRule::prefix(&["GET", "POST"], "/prometheus", Read),
        ActionRule::exact(&["POST"], "/api/v1/analyze", Read),
        // The Alertmanager UI and API: viewing is a read; silences and the like manage.
        ActionRule::prefix(UNSAFE, "/alertmanager", Manage),
    ]);
    ActionConfig::with_rules(rules)
}
