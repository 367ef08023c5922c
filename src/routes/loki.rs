//! Grafana Loki 3.7: logs.
//!
//! From grafana/loki v3.7.6: `pkg/util/constants/api_paths.go` (the paths),
//! `pkg/loki/modules.go` and `pkg/loki/loki.go` (what each module registers, with which
//! methods). Recorded in `tests/data/routes/loki-v3.7.6.txt`.

use super::{deny_all, ActionConfig, ActionRule, Preset, RuleAction, ANY, UNSAFE};
use crate::model::Product;

pub static PRESET: Preset = Preset {
    product: Product::Loki,
    group: "loki.grafana.com",
    resource: "logs",
    source: "grafana/loki v3.7.6: pkg/util/constants/api_paths.go, pkg/loki/modules.go, pkg/loki/loki.go",
    actions,
};

/// Not a tenant's API: rings, flush and shutdown, ingest limits of every tenant, config,
/// the compactor's internal API (deletion is under /loki/api/v1/delete), the UI, analytics.
const OPERATIONS: &[&str] = &[
    "/ring",
    "/distributor",
    "/ingester",
    "/flush",
    "/pattern",
    "/ruler/ring",
    "/indexgateway",
    "/scheduler",
    "/partition-ring",
    "/ingest-limits",
    "/ingest-limits-frontend",
    "/dataobj-consumer",
    "/dataobj",
    "/compactor",
    "/memberlist",
    "/config",
    "/services",
    "/log_level",
    "/ready",
    "/metrics",
    "/debug",
    "/ui",
    "/analytics",
    // Queriers ask the compactor for these; not for tenants.
    "/loki/api/v1/cache/generation_numbers",
];

/// Loki's table.
pub fn actions() -> ActionConfig {
    use RuleAction::*;
    // Operations first: `/loki/api/v1/cache/...` is under the read prefix below.
    let mut rules: Vec<ActionRule> = deny_all(OPERATIONS).collect();
    rules.extend([
        // Ingest: Loki push (JSON or protobuf), the legacy Prometheus-style path, OTLP logs.
        ActionRule::prefix(ANY, "/loki/api/v1/push", Write),
        ActionRule::prefix(ANY, "/api/prom/push", Write),
        ActionRule::prefix(ANY, "/otlp/v1/logs", Write),
        // Delete requests: creating, listing and cancelling them is managing the tenant, and a
        // GET must never be a read (a read-only token must not see or cancel deletions).
        ActionRule::prefix(ANY, "/loki/api/v1/delete", Manage),
        // Rules (ruler API): reading them is a read, changing them manages the tenant.
        ActionRule::prefix(UNSAFE, "/loki/api/v1/rules", Manage),
        ActionRule::prefix(UNSAFE, "/api/prom/rules", Manage),
        // Queries: every query endpoint takes GET and POST (form-encoded queries); tail is a
        // WebSocket upgrade (GET).
        ActionRule::prefix(&["GET", "POST"], "/loki/api/v1", Read),
        ActionRule::prefix(&["GET", "POST"], "/api/prom", Read),
        ActionRule::prefix(&["GET"], "/prometheus/api/v1/rules", Read),
        ActionRule::prefix(&["GET"], "/prometheus/api/v1/alerts", Read),
    ]);
    ActionConfig::with_rules(rules)
}
