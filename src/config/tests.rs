//! Config model, loading and validation.

use std::time::Duration;

use super::*;
use crate::model::{Action, Product};

#[test]
fn empty_file_gives_defaults() {
    assert_eq!(Config::from_yaml("").unwrap(), Config::default());
    Config::default().validate().unwrap();
}

#[test]
fn durations_and_nested_fields_parse() {
    let c = Config::from_yaml(
        "decision_timeout: 900ms\ncache:\n  allowed_ttl: 2m\nkubernetes:\n  audiences: [tempo]\n",
    )
    .unwrap();
    assert_eq!(c.decision_timeout, Duration::from_millis(900));
    assert_eq!(c.cache.allowed_ttl, Duration::from_secs(120));
    assert_eq!(c.cache.denied_ttl, Duration::from_secs(10));
    assert_eq!(c.kubernetes.audiences, vec!["tempo".to_string()]);
}

#[test]
fn unknown_field_is_named() {
    let err = Config::from_yaml("cache:\n  max_entrys: 5\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("cache") && err.contains("max_entrys"), "{err}");
}

#[test]
fn bad_value_is_named() {
    let err = Config::from_yaml("cache:\n  allowed_ttl: soon\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("cache.allowed_ttl"), "{err}");
    let err = Config::from_yaml("grpc_addr: nowhere\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("grpc_addr"), "{err}");
}

#[test]
fn validate_names_the_field() {
    let c = Config {
        tenant_header: "X-Scope-OrgID".into(),
        ..Config::default()
    };
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("tenant_header"));
    let mut c = Config::default();
    c.cache.max_entries = 20_000_000;
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("cache.max_entries"));
    let mut c = Config::default();
    c.kubernetes.max_concurrent_reviews = 0;
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("kubernetes.max_concurrent_reviews"));
    for yaml in [
        "cache:\n  allowed_ttl: 1000000000y\n",
        "cache:\n  identity_ttl: 25h\n",
    ] {
        let err = Config::from_yaml(yaml)
            .and_then(|c| c.validate())
            .unwrap_err()
            .to_string();
        assert!(err.contains("cache."), "{yaml}: {err}");
    }
    let mut c = Config::default();
    c.kubernetes.max_reviews_per_check = 33;
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("kubernetes.max_reviews_per_check"));
    let mut c = Config::default();
    c.actions.rules[0].path = Some("v1/traces".into());
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("actions.rules[0]"));
}

#[test]
fn static_section_is_validated_field_by_field() {
    let base = "backend: static\nstatic:\n  identities:\n  - sha256: SHA\n    username: u\n  grants:\n  - users: [u]\n    tenants: [TENANT]\n    actions: [read]\n";
    let good = "a".repeat(64);
    let ok = base.replace("SHA", &good).replace("TENANT", "team-a");
    Config::from_yaml(&ok).unwrap().validate().unwrap();
    let cases = [
        (
            base.replace("SHA", "abc").replace("TENANT", "a"),
            "static.identities[0].sha256",
        ),
        (
            base.replace("SHA", &"A".repeat(64)).replace("TENANT", "a"),
            "static.identities[0].sha256",
        ),
        (
            base.replace("SHA", &good).replace("TENANT", "Team"),
            "static.grants[0].tenants[0]",
        ),
        (
            base.replace("SHA", &good)
                .replace("TENANT", "a")
                .replace("backend: static", "backend: kubernetes"),
            "static",
        ),
    ];
    for (yaml, field) in cases {
        let err = Config::from_yaml(&yaml)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("field {field}:")), "{err}");
    }
    let wildcard = base.replace("SHA", &good).replace("TENANT", "\"*\"");
    Config::from_yaml(&wildcard).unwrap().validate().unwrap();
}

#[test]
fn default_action_table_matches_tempo() {
    let a = ActionConfig::default();
    let w = Some(Action::Write);
    let r = Some(Action::Read);
    let m = Some(Action::Manage);
    assert_eq!(a.infer("POST", "/v1/traces"), w);
    assert_eq!(
        a.infer(
            "POST",
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
        ),
        w
    );
    assert_eq!(a.infer("POST", "/api/traces"), w);
    assert_eq!(a.infer("POST", "/api/v2/spans"), w);
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        assert_eq!(a.infer(method, "/api/overrides"), m, "{method}");
    }
    assert_eq!(a.infer("GET", "/api/overrides"), r);
    assert_eq!(a.infer("GET", "/api/search"), r);
    assert_eq!(a.infer("GET", "/api/traces/abc"), r);
    assert_eq!(a.infer("POST", "/api/search"), r);
    assert_eq!(a.infer("POST", "/api/v2/traces/diff"), r);
    assert_eq!(a.infer("POST", "/tempopb.StreamingQuerier/Search"), r);
}

#[test]
fn ingest_paths_need_write_whatever_the_method() {
    let a = ActionConfig::default();
    for (method, path) in [
        ("PUT", "/api/v2/spans"),
        ("POST", "/api/v1/spans"),
        ("POST", "/jaeger.api_v2.CollectorService/PostSpans"),
        (
            "POST",
            "/opencensus.proto.agent.trace.v1.TraceService/Export",
        ),
        ("PUT", "/v1/traces"),
    ] {
        assert_eq!(
            a.infer(method, path),
            Some(Action::Write),
            "{method} {path}"
        );
    }
}

#[test]
fn unmatched_unsafe_methods_need_write() {
    let a = ActionConfig::default();
    assert_eq!(a.infer("POST", "/"), Some(Action::Write));
    assert_eq!(a.infer("POST", "/something/new"), Some(Action::Write));
    assert_eq!(a.infer("DELETE", "/api/whatever"), Some(Action::Write));
    assert_eq!(a.infer("GET", "/something/new"), Some(Action::Read));
    assert_eq!(a.infer("POST", "/api/overridesx"), Some(Action::Write));
}

#[test]
fn operations_endpoints_are_denied() {
    let a = ActionConfig::default();
    for (method, path) in [
        ("GET", "/shutdown"),
        ("POST", "/flush"),
        ("GET", "/metrics"),
        ("GET", "/debug/pprof/heap"),
        ("GET", "/status/config"),
        ("GET", "/memberlist"),
        ("POST", "/ingester/shutdown"),
    ] {
        assert_eq!(a.infer(method, path), None, "{method} {path}");
    }
}

#[test]
fn a_product_section_keeps_the_preset_for_what_it_leaves_out() {
    let c = Config::from_yaml("products:\n  loki:\n    group: logging.example.com\n").unwrap();
    assert_eq!(c.products.loki.group, "logging.example.com");
    assert_eq!(c.products.loki.resource, "logs");
    assert_eq!(
        c.products.loki.actions,
        ProductConfig::preset(Product::Loki).actions
    );
    assert_eq!(c.products.mimir, ProductConfig::preset(Product::Mimir));
    assert_eq!(c.products.default, Product::Tempo);
    c.validate().unwrap();
}

#[test]
fn products_by_port_and_default_parse() {
    let c = Config::from_yaml("products:\n  default: mimir\n  by_port: {3100: loki}\n").unwrap();
    assert_eq!(c.products.default, Product::Mimir);
    assert_eq!(c.products.by_port.get(&3100), Some(&Product::Loki));
    let err = Config::from_yaml("products:\n  default: prometheus\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("products.default"), "{err}");
    let err = Config::from_yaml("products:\n  loki:\n    resources: logs\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("products.loki") && err.contains("resources"),
        "{err}"
    );
}

#[test]
fn product_sections_are_validated_with_their_path() {
    let mut c = Config::default();
    c.products.mimir.actions.rules[0].path_prefix = Some("api/v1/push".into());
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("products.mimir.actions.rules[0]"), "{err}");
    let mut c = Config::default();
    c.products.pyroscope.resource = "pro files".into();
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("products.pyroscope.resource"), "{err}");
}

#[test]
fn sar_resource_is_per_product_and_tempos_stays_in_authorization() {
    let c = Config::default();
    let sar = &c.authorization;
    assert_eq!(
        c.products.sar_resource(Product::Tempo, sar),
        ("tempo.grafana.com", "traces")
    );
    assert_eq!(
        c.products.sar_resource(Product::Loki, sar),
        ("loki.grafana.com", "logs")
    );
    assert_eq!(
        c.products.sar_resource(Product::Mimir, sar),
        ("mimir.grafana.com", "metrics")
    );
    assert_eq!(
        c.products.sar_resource(Product::Pyroscope, sar),
        ("pyroscope.grafana.com", "profiles")
    );
}

#[test]
fn tempo_2_10_and_3_0_operator_paths_are_denied() {
    let a = ActionConfig::default();
    for (method, path) in [
        ("GET", "/status/overrides"),
        ("GET", "/status/overrides/payments"),
        ("GET", "/usage_metrics"),
        ("POST", "/live-store/prepare-downscale"),
        ("GET", "/partition-ring"),
        ("POST", "/partition/ring"),
        ("GET", "/querier/api/search"),
        ("POST", "/tempopb.Pusher/PushBytesV2"),
    ] {
        assert_eq!(a.infer(method, path), None, "{method} {path}");
    }
    assert_eq!(a.infer("POST", "/api/mcp"), Some(Action::Read));
    assert_eq!(a.infer("GET", "/api/metrics/query"), Some(Action::Read));
    assert_eq!(
        a.infer("POST", "/api/metrics/query_range"),
        Some(Action::Read)
    );
}

#[test]
fn cached_allow_sample_ratio_is_a_share_and_named_when_wrong() {
    let c = Config::from_yaml("log:\n  cached_allow_sample_ratio: 0.25\n").unwrap();
    assert_eq!(c.log.cached_allow_sample_ratio, 0.25);
    c.validate().unwrap();
    for bad in ["1.5", "-0.1", ".nan"] {
        let c = Config::from_yaml(&format!("log:\n  cached_allow_sample_ratio: {bad}\n")).unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("log.cached_allow_sample_ratio"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn the_log_section_reads_json_and_unknown_keys_are_named() {
    let c = Config::from_yaml("log:\n  format: json\n").unwrap();
    assert_eq!(c.log.format, LogFormat::Json);
    assert!(c.deprecated.is_empty());
    let err = Config::from_yaml("log:\n  level: debug\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("log") && err.contains("level"), "{err}");
}

#[test]
fn old_log_keys_still_work_are_recorded_and_clash_with_the_new_ones() {
    let c = Config::from_yaml("log_format: json\nlog_cached_allow_sample_ratio: 0.5\n").unwrap();
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.log.cached_allow_sample_ratio, 0.5);
    assert_eq!(c.log_format, None, "folded into log, not kept twice");
    assert_eq!(c.deprecated.len(), 2, "{:?}", c.deprecated);
    assert!(c.deprecated[0].contains("log.format"));
    // Never written back in the old spelling.
    let printed = serde_yaml_ng::to_string(&c).unwrap();
    assert!(!printed.contains("log_format"), "{printed}");
    assert!(printed.contains("format: json"), "{printed}");
    for both in [
        "log_format: json\nlog:\n  format: json\n",
        // The new key at its default still counts as set.
        "log_format: json\nlog:\n  format: text\n",
        "log_cached_allow_sample_ratio: 0.5\nlog:\n  cached_allow_sample_ratio: 0.5\n",
        "log_cached_allow_sample_ratio: 0.5\nlog:\n  cached_allow_sample_ratio: 0.0\n",
    ] {
        let err = Config::from_yaml(both).unwrap_err().to_string();
        assert!(err.contains("replaced by log."), "{both}: {err}");
    }
}

#[test]
fn watch_idle_timeout_is_bounded_by_kube_runtimes_own_and_warned_about_below_a_minute() {
    let c = Config::default();
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    let short = Config::from_yaml("kubernetes:\n  watch_idle_timeout: 2s\n").unwrap();
    short.validate().unwrap();
    let warnings = short.warnings();
    assert!(
        warnings.len() == 1 && warnings[0].contains("kubernetes.watch_idle_timeout"),
        "{warnings:?}"
    );
    let static_ = Config::from_yaml("backend: static\nkubernetes:\n  watch_idle_timeout: 2s\n");
    assert!(
        static_.unwrap().warnings().is_empty(),
        "no watches, no warning"
    );
    for bad in ["0s", "291s", "10m"] {
        let c = Config::from_yaml(&format!("kubernetes:\n  watch_idle_timeout: {bad}\n")).unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("kubernetes.watch_idle_timeout"),
            "{bad}: {err}"
        );
    }
}
