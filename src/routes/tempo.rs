//! Grafana Tempo 2.10 and 3.0: traces.
//!
//! From grafana/tempo v2.10.8 and v3.0.3: `pkg/api/http.go` (the paths),
//! `cmd/tempo/app/modules.go` and `cmd/tempo/app/app.go` (what each module registers, with
//! which methods), `pkg/tempopb/tempo.proto` (gRPC services), `modules/distributor/receiver/
//! shim.go` (receivers: OTLP, Jaeger, Zipkin). Recorded in `tests/data/routes/tempo-*.txt`.

use super::{deny_all, ActionConfig, ActionRule, Preset, RuleAction, ANY, UNSAFE};
use crate::model::Product;

pub static PRESET: Preset = Preset {
    product: Product::Tempo,
    group: "tempo.grafana.com",
    resource: "traces",
    source: "grafana/tempo v2.10.8 and v3.0.3: pkg/api/http.go, cmd/tempo/app/modules.go, cmd/tempo/app/app.go, pkg/tempopb/tempo.proto",
    actions,
};

/// Paths that are not a tenant's API: rings, flush and shutdown, every tenant's limits
/// (`/status/overrides`), usage, memberlist, the internal querier and generator APIs, the
/// status pages and their files. Denied (403) without an API call.
const OPERATIONS: &[&str] = &[
    "/flush",
    "/shutdown",
    "/ingester",
    "/distributor",
    "/compactor",
    "/memberlist",
    "/status",
    "/metrics",
    "/debug",
    "/config",
    "/runtime_config",
    "/overrides",
    "/usage_stats",
    // Added with the 2.10 / 3.0 table (issue 13):
    "/usage_metrics",
    "/live-store",
    "/partition-ring",
    "/partition",
    "/metrics-generator",
    "/secondary-ingester",
    "/backend-worker",
    "/backend-scheduler",
    "/querier",
    "/generator",
    "/static",
    "/ready",
    // Internal gRPC services (distributor -> ingester, frontend -> querier, generator).
    "/tempopb.Pusher",
    "/tempopb.Querier",
    "/tempopb.MetricsGenerator",
];

/// Tempo's table.
pub fn actions() -> ActionConfig {
    use RuleAction::*;
    let mut rules = vec![
        // Ingest, whatever the method: OTLP/HTTP, OTLP/gRPC, Jaeger (Thrift HTTP and
        // gRPC), Zipkin v1/v2, OpenCensus. gRPC calls are POSTs to /<service>/<method>.
        ActionRule::prefix(ANY, "/v1/traces", Write),
        ActionRule::prefix(
            ANY,
            "/opentelemetry.proto.collector.trace.v1.TraceService",
            Write,
        ),
        ActionRule::prefix(ANY, "/jaeger.api_v2.CollectorService", Write),
        ActionRule::prefix(ANY, "/opencensus.proto.agent.trace.v1.TraceService", Write),
        ActionRule::prefix(ANY, "/api/v1/spans", Write),
        ActionRule::prefix(ANY, "/api/v2/spans", Write),
        // Jaeger's collector path; GET /api/traces/<id> is a Tempo query.
        ActionRule::exact(&["POST", "PUT"], "/api/traces", Write),
        // Tempo's user-configurable overrides: changing them manages the tenant.
        ActionRule::prefix(UNSAFE, "/api/overrides", Manage),
        // Queries that are POSTs: search, trace diff/by-id v2, metrics, streaming gRPC.
        ActionRule::prefix(&["POST"], "/api/search", Read),
        ActionRule::prefix(&["POST"], "/api/v2/search", Read),
        ActionRule::prefix(&["POST"], "/api/v2/traces", Read),
        ActionRule::prefix(&["POST"], "/api/metrics", Read),
        ActionRule::prefix(ANY, "/tempopb.StreamingQuerier", Read),
        // The MCP server (JSON-RPC over POST, session end by DELETE) only runs queries.
        ActionRule::prefix(ANY, "/api/mcp", Read),
    ];
    rules.extend(deny_all(OPERATIONS));
    ActionConfig::with_rules(rules)
}
