//! Every route in the recorded upstream lists (`tests/data/routes/`) gets the action its
//! product's table says, through the same parser Envoy's Checks go through.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::{address, socket_address, Address, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use tenant_authz::config::Config;
use tenant_authz::ext_authz::{normalize_path, RequestParser};
use tenant_authz::model::{Action, DenyReason, Product};
use tenant_authz::routes;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/routes");

/// One recorded route: methods, sample path, expected action (`None` = deny).
struct Recorded {
    line: usize,
    methods: Vec<String>,
    path: String,
    expected: Option<Action>,
}

fn recorded(file: &str) -> Vec<Recorded> {
    let text = std::fs::read_to_string(format!("{DATA}/{file}"))
        .unwrap_or_else(|e| panic!("read {file}: {e}"));
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [methods, path, action] = fields[..] else {
            panic!("{file}:{}: expected `METHODS PATH ACTION`: {raw}", i + 1)
        };
        let expected = match action {
            "deny" => None,
            a => Some(Action::parse(a).unwrap_or_else(|| panic!("{file}:{}: {a}", i + 1))),
        };
        out.push(Recorded {
            line: i + 1,
            methods: methods.split(',').map(str::to_string).collect(),
            path: path.to_string(),
            expected,
        });
    }
    assert!(out.len() > 20, "{file}: only {} routes", out.len());
    out
}

fn check(method: &str, path: &str, context: &[(&str, &str)], port: Option<u32>) -> CheckRequest {
    let headers: HashMap<String, String> = [
        ("authorization", "Bearer abc"),
        ("x-scope-orgid", "payments"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let destination = port.map(|p| Peer {
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "10.0.0.7".into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(p)),
                ..Default::default()
            })),
        }),
        ..Default::default()
    });
    CheckRequest {
        attributes: Some(AttributeContext {
            destination,
            request: Some(Request {
                http: Some(HttpRequest {
                    method: method.into(),
                    path: path.into(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: context
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }),
    }
}

/// Runs every route of `file` through the preset table and through the parser built from
/// the default config (the route naming the product), and reports every mismatch at once.
fn every_route_has_its_action(file: &str, product: Product) {
    let table = (routes::preset(product).actions)();
    let parser = RequestParser::from_config(&Config::default());
    let mut wrong = Vec::new();
    for r in recorded(file) {
        for method in &r.methods {
            let got = table.infer(method, &normalize_path(&r.path));
            let (action, parsed) = parser.parse(&check(
                method,
                &r.path,
                &[("product", product.as_str())],
                None,
            ));
            let through_parser = match parsed {
                Ok(p) => {
                    assert_eq!(p.product, product);
                    Some(p.action)
                }
                Err(DenyReason::NotTenantPath) => None,
                Err(other) => panic!("{file}:{}: {method} {}: {other}", r.line, r.path),
            };
            if got != r.expected || through_parser != r.expected || action != r.expected {
                wrong.push(format!(
                    "{file}:{}: {method} {} is {:?}, recorded {:?}",
                    r.line, r.path, got, r.expected
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn tempo_2_10_routes_have_their_recorded_actions() {
    every_route_has_its_action("tempo-v2.10.8.txt", Product::Tempo);
}

#[test]
fn tempo_3_0_routes_have_their_recorded_actions() {
    every_route_has_its_action("tempo-v3.0.3.txt", Product::Tempo);
}

#[test]
fn loki_routes_have_their_recorded_actions() {
    every_route_has_its_action("loki-v3.7.6.txt", Product::Loki);
}

#[test]
fn mimir_routes_have_their_recorded_actions() {
    every_route_has_its_action("mimir.txt", Product::Mimir);
}

#[test]
fn pyroscope_routes_have_their_recorded_actions() {
    every_route_has_its_action("pyroscope-v2.2.1.txt", Product::Pyroscope);
}

#[test]
fn every_product_has_a_recorded_route_list() {
    let files: Vec<String> = std::fs::read_dir(DATA)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for p in Product::ALL {
        assert!(
            files
                .iter()
                .any(|f| f.starts_with(p.as_str()) && f.ends_with(".txt")),
            "no tests/data/routes/{}*.txt",
            p.as_str()
        );
    }
}

#[test]
fn loki_delete_requests_are_never_a_read() {
    let table = (routes::preset(Product::Loki).actions)();
    for method in ["GET", "HEAD", "OPTIONS", "POST", "PUT", "DELETE"] {
        for path in [
            "/loki/api/v1/delete",
            "/loki/api/v1/delete?query={a=\"b\"}",
            "/loki/api/v1//delete",
            "/loki/api/v1/./delete",
            "/loki/api/v1/x/../delete",
            "/loki/api/v1/%64elete",
        ] {
            assert_eq!(
                table.infer(method, &normalize_path(path)),
                Some(Action::Manage),
                "{method} {path}"
            );
        }
    }
}

#[test]
fn the_same_path_means_different_things_in_different_products() {
    let parser = RequestParser::from_config(&Config::default());
    let action = |product: &str, method: &str, path: &str| {
        parser
            .parse(&check(method, path, &[("product", product)], None))
            .0
    };
    // Tempo: a Jaeger collector write; Mimir: no such route, a write by default.
    assert_eq!(
        action("tempo", "GET", "/api/traces/abc"),
        Some(Action::Read)
    );
    // Mimir's Alertmanager config (credentials) vs Loki's ruler alerts.
    assert_eq!(
        action("mimir", "GET", "/api/v1/alerts"),
        Some(Action::Manage)
    );
    assert_eq!(
        action("loki", "GET", "/prometheus/api/v1/alerts"),
        Some(Action::Read)
    );
    // /api/v1/push: Mimir remote write; in Tempo an unknown POST, a write too.
    assert_eq!(action("mimir", "POST", "/api/v1/push"), Some(Action::Write));
    assert_eq!(action("tempo", "POST", "/api/v1/push"), Some(Action::Write));
    // A route's explicit action still wins, per product.
    let (a, parsed) = parser.parse(&check(
        "POST",
        "/loki/api/v1/push",
        &[("product", "loki"), ("action", "write")],
        None,
    ));
    assert_eq!(a, Some(Action::Write));
    assert_eq!(parsed.unwrap().product, Product::Loki);
}

#[test]
fn product_comes_from_the_route_then_the_port_then_the_default() {
    let mut config = Config::default();
    config.products.by_port.insert(3100, Product::Loki);
    config.products.by_port.insert(8080, Product::Mimir);
    let parser = RequestParser::from_config(&config);
    let product = |context: &[(&str, &str)], port| {
        parser
            .parse(&check("GET", "/x", context, port))
            .1
            .map(|p| p.product)
    };
    assert_eq!(product(&[], None), Ok(Product::Tempo));
    assert_eq!(product(&[], Some(3100)), Ok(Product::Loki));
    assert_eq!(product(&[], Some(8080)), Ok(Product::Mimir));
    assert_eq!(product(&[], Some(9999)), Ok(Product::Tempo));
    assert_eq!(
        product(&[("product", "pyroscope")], Some(3100)),
        Ok(Product::Pyroscope)
    );
    config.products.default = Product::Loki;
    let parser = RequestParser::from_config(&config);
    assert_eq!(
        parser
            .parse(&check("GET", "/x", &[], None))
            .1
            .map(|p| p.product),
        Ok(Product::Loki)
    );
}

#[test]
fn unknown_or_unserved_product_is_a_named_configuration_error() {
    let parser = RequestParser::from_config(&Config::default());
    for bad in ["Loki", "prometheus", ""] {
        let (action, parsed) = parser.parse(&check("GET", "/x", &[("product", bad)], None));
        assert_eq!(action, None);
        match parsed {
            Err(DenyReason::Misconfigured(why)) => assert!(why.contains("product="), "{why}"),
            Err(other) => panic!("{bad:?}: {other}"),
            Ok(_) => panic!("{bad:?} accepted"),
        }
    }
    // A Tempo-only parser never reviews a Loki request as traces.
    let tempo_only = RequestParser::new(
        "x-scope-orgid".into(),
        16 * 1024,
        tenant_authz::config::ActionConfig::default(),
    );
    let (_, parsed) = tempo_only.parse(&check(
        "GET",
        "/loki/api/v1/query",
        &[("product", "loki"), ("action", "read")],
        None,
    ));
    match parsed {
        Err(DenyReason::Misconfigured(why)) => assert!(why.contains("loki"), "{why}"),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("a Loki request was accepted by a Tempo-only parser"),
    }
}

#[test]
fn tenant_kit_roles_for_logs_and_metrics_grant_what_the_presets_ask() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/manifests/tenants/logs-and-metrics"
    );
    for (file, product, verb) in [
        ("role-loki-logs-reader.yaml", Product::Loki, "get"),
        ("role-loki-logs-writer.yaml", Product::Loki, "create"),
        ("role-mimir-metrics-reader.yaml", Product::Mimir, "get"),
        ("role-mimir-metrics-writer.yaml", Product::Mimir, "create"),
    ] {
        let text = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
        let role: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
        let rule = &role["rules"][0];
        let preset = routes::preset(product);
        assert_eq!(rule["apiGroups"][0].as_str(), Some(preset.group), "{file}");
        assert_eq!(
            rule["resources"][0].as_str(),
            Some(preset.resource),
            "{file}"
        );
        assert_eq!(rule["verbs"][0].as_str(), Some(verb), "{file}");
    }
}
