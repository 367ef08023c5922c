//! config: Config::from_yaml + validate.

use std::collections::HashMap;
use std::time::Instant;

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};

use tenant_authz::config::Config;
use tenant_authz::ext_authz::RequestParser;

pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
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
    // `Instant::now() + ttl` on the request path, where an overflow is a panic.
    let c = &config.cache;
    for (field, d) in [
        ("decision_timeout", config.decision_timeout),
        ("shutdown.delay", config.shutdown.delay),
        ("shutdown.grace", config.shutdown.grace),
        ("cache.allowed_ttl", c.allowed_ttl),
        ("cache.denied_ttl", c.denied_ttl),
        ("cache.unauthenticated_ttl", c.unauthenticated_ttl),
        ("cache.identity_ttl", c.identity_ttl),
    ] {
        assert!(
            Instant::now().checked_add(d).is_some(),
            "validate() accepted {field}: {d:?}, which overflows Instant::now() + {field}"
        );
    }
    // Printing a valid config and reading it back gives the same config.
    let printed = serde_yaml_ng::to_string(&config).expect("a config prints");
    let reread = Config::from_yaml(&printed)
        .unwrap_or_else(|e| panic!("printed config does not parse: {e}\n{printed}"));
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
