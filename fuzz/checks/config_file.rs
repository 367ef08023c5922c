//! config: Config::from_yaml + validate.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};

use tenant_authz::config::Config;
use tenant_authz::ext_authz::RequestParser;

/// Where a config holds a duration, as YAML nesting (for the structured mode).
const DURATIONS: &[(&str, &str)] = &[
    ("", "decision_timeout"),
    ("shutdown", "delay"),
    ("shutdown", "grace"),
    ("cache", "allowed_ttl"),
    ("cache", "denied_ttl"),
    ("cache", "unauthenticated_ttl"),
    ("cache", "identity_ttl"),
    ("cache", "watched_allowed_ttl"),
    ("cache", "watched_identity_ttl"),
];

/// A config file; or, for input starting with `#` and 10 bytes long at least, also one
/// duration field set to any u64 number of seconds (random text rarely grows a number to the
/// 19 digits that overflow a clock: this mode reaches them at once).
pub fn config(data: &[u8]) {
    if let [b'#', field, secs @ ..] = data {
        if let Some(secs) = secs.get(..8) {
            let secs = u64::from_le_bytes(secs.try_into().expect("8 bytes"));
            let (section, key) = DURATIONS[usize::from(*field) % DURATIONS.len()];
            let yaml = if section.is_empty() {
                format!("{key}: {secs}s\n")
            } else {
                format!("{section}:\n  {key}: {secs}s\n")
            };
            config_text(&yaml);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        config_text(text);
    }
}

fn config_text(text: &str) {
    let config = match Config::from_yaml(text) {
        Ok(c) => c,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    if config.validate().is_err() {
        return;
    }
    // Every duration of a valid config can be added to a clock reading: the caches compute
    // `Instant::now() + ttl` on the request path, where an overflow is a panic. Found by name
    // in the printed config, so a duration field added later is checked too.
    let printed = serde_yaml_ng::to_string(&config).expect("a config prints");
    let tree: serde_yaml_ng::Value = serde_yaml_ng::from_str(&printed).expect("printed YAML");
    let mut found = Vec::new();
    durations(&tree, "", &mut found);
    assert!(found.len() >= DURATIONS.len(), "durations found: {found:?}");
    for (field, d) in found {
        assert!(
            Instant::now().checked_add(d).is_some(),
            "validate() accepted {field}: {d:?}, which overflows Instant::now() + {field}"
        );
    }
    // Printing a valid config and reading it back gives the same config, in the current
    // spelling: old keys are folded in and never printed.
    let reread = Config::from_yaml(&printed)
        .unwrap_or_else(|e| panic!("printed config does not parse: {e}\n{printed}"));
    assert!(reread.deprecated.is_empty(), "printed old keys\n{printed}");
    let mut config = config;
    config.deprecated.clear();
    assert_eq!(reread, config, "round trip through\n{printed}");
    // The parser it configures parses.
    let parser = RequestParser::new(
        config.tenant_header.clone(),
        config.max_token_bytes,
        config.actions.clone(),
    );
    let mut headers = HashMap::new();
    headers.insert("authorization".to_string(), "Bearer tok".to_string());
    headers.insert(config.tenant_header.clone(), "team-a".to_string());
    for (method, path) in [("GET", "/api/search"), ("PUT", "/api/overrides/x")] {
        let req = CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(Request {
                    http: Some(HttpRequest {
                        method: method.into(),
                        path: path.into(),
                        headers: headers.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        let _ = parser.parse(&req);
    }
}

/// Every `*_ttl`, `*timeout`, `*delay`, `*grace` or `*interval` value of a printed config.
fn durations(v: &serde_yaml_ng::Value, path: &str, out: &mut Vec<(String, Duration)>) {
    let serde_yaml_ng::Value::Mapping(map) = v else {
        return;
    };
    for (k, v) in map {
        let Some(k) = k.as_str() else { continue };
        let field = if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        };
        let named = ["_ttl", "timeout", "delay", "grace", "interval"]
            .iter()
            .any(|s| k.ends_with(s));
        match v.as_str().map(humantime::parse_duration) {
            Some(Ok(d)) if named => out.push((field, d)),
            _ => durations(v, &field, out),
        }
    }
}
