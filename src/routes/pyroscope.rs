//! Grafana Pyroscope 2.2: profiles.
//!
//! From grafana/pyroscope v2.2.1: `pkg/api/api.go` (HTTP routes and the Connect services it
//! registers) and the services' protos under `api/` (method names). Connect and gRPC calls are
//! POSTs to `/<package>.<Service>/<Method>`. Recorded in `tests/data/routes/pyroscope-v2.2.1.txt`.

use super::{deny_all, ActionConfig, ActionRule, Preset, RuleAction, ANY};
use crate::model::Product;

pub static PRESET: Preset = Preset {
    product: Product::Pyroscope,
    group: "pyroscope.grafana.com",
    resource: "profiles",
    source: "grafana/pyroscope v2.2.1: pkg/api/api.go, api/*/*.proto",
    actions,
};

/// Not a tenant's API: internal services (ingester, store-gateway, query scheduling,
/// metastore, segment writer), every tenant's blocks (`/ops/...`), rings, config.
const OPERATIONS: &[&str] = &[
    "/ingester.v1.IngesterService",
    "/storegateway.v1.StoreGatewayService",
    "/frontendpb.FrontendForQuerier",
    "/schedulerpb.SchedulerForFrontend",
    "/schedulerpb.SchedulerForQuerier",
    "/metastore.v1.CompactionService",
    "/metastore.v1.IndexService",
    "/metastore.v1.MetadataQueryService",
    "/metastore.v1.TenantService",
    "/segmentwriter.v1.SegmentWriterService",
    "/query.v1.QueryBackendService",
    "/status.v1.StatusService",
    "/ops",
    "/admin",
    "/query-diagnostics",
    "/distributor",
    "/ring",
    "/ring-segment-writer",
    "/store-gateway",
    "/compactor",
    "/overrides-exporter",
    "/metastore-nodes",
    "/memberlist",
    "/runtime_config",
    "/config",
    "/debug",
    "/metrics",
    "/ready",
];

/// Pyroscope's table.
pub fn actions() -> ActionConfig {
    use RuleAction::*;
    let settings = "/settings.v1.SettingsService";
    let recording = "/settings.v1.RecordingRulesService";
    let debuginfo = "/debuginfo.v1alpha1.DebuginfoService";
    let adhoc = "/adhocprofiles.v1.AdHocProfileService";
    let mut rules: Vec<ActionRule> = deny_all(OPERATIONS).collect();
    rules.extend([
        // Ingest: Pyroscope's /ingest, the Connect pusher, OTLP profiles, debug info uploads,
        // ad-hoc profile uploads.
        ActionRule::prefix(ANY, "/ingest", Write),
        ActionRule::prefix(ANY, "/pyroscope/ingest", Write),
        ActionRule::prefix(ANY, "/push.v1.PusherService", Write),
        ActionRule::prefix(
            ANY,
            "/opentelemetry.proto.collector.profiles.v1development.ProfilesService",
            Write,
        ),
        ActionRule::prefix(ANY, "/v1development/profiles", Write),
        ActionRule::exact(ANY, &format!("{debuginfo}/ListDebuginfo"), Read),
        ActionRule::exact(ANY, &format!("{debuginfo}/DeleteDebuginfo"), Manage),
        ActionRule::prefix(ANY, debuginfo, Write),
        ActionRule::exact(ANY, &format!("{adhoc}/Upload"), Write),
        ActionRule::prefix(ANY, adhoc, Read),
        // Tenant settings and recording rules: reading is a read, changing manages.
        ActionRule::exact(ANY, &format!("{settings}/Get"), Read),
        ActionRule::prefix(ANY, settings, Manage),
        ActionRule::exact(ANY, &format!("{recording}/GetRecordingRule"), Read),
        ActionRule::exact(ANY, &format!("{recording}/ListRecordingRules"), Read),
        ActionRule::prefix(ANY, recording, Manage),
        // Queries: the Connect querier (and the query frontend's), render, label values,
        // source links, feature flags, version.
        ActionRule::prefix(ANY, "/querier.v1.QuerierService", Read),
        ActionRule::prefix(ANY, "/query.v1.QueryFrontendService", Read),
        ActionRule::prefix(ANY, "/pyroscope", Read),
        ActionRule::prefix(ANY, "/vcs.v1.VCSService", Read),
        ActionRule::prefix(ANY, "/capabilities.v1.FeatureFlagsService", Read),
        ActionRule::prefix(ANY, "/version.v1.Version", Read),
    ]);
    ActionConfig::with_rules(rules)
}
