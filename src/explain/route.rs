//! The request as the server's parser and route tables see it.

use std::collections::HashMap;

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};

use super::report::{RequestReport, RuleReport};
use super::{Question, Target};
use crate::config::Config;
use crate::ext_authz::normalize_path;
use crate::model::{BearerToken, Product};

/// The server's parser, fed the request this question describes. Built as Envoy would send
/// it, so the tenant header, token and route rules are judged by the same code.
pub(super) fn check_request(
    config: &Config,
    question: &Question,
    token: &BearerToken,
) -> CheckRequest {
    let (method, path) = match &question.target {
        Target::Action(_) => ("GET".to_string(), "/".to_string()),
        Target::Route { method, path } => (method.to_ascii_uppercase(), path.clone()),
    };
    let mut headers = HashMap::new();
    headers.insert(
        "authorization".to_string(),
        format!("Bearer {}", token.expose_secret()),
    );
    headers.insert(config.tenant_header.clone(), question.tenants.clone());
    let mut context_extensions = HashMap::new();
    if let Some(p) = question.product {
        context_extensions.insert("product".to_string(), p.to_string());
    }
    if let Target::Action(a) = &question.target {
        context_extensions.insert("action".to_string(), a.to_string());
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method,
                    path,
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions,
            ..Default::default()
        }),
    }
}

/// How the route tables see the question: product, normalised path, the rule that matched.
pub(super) fn request_report(config: &Config, question: &Question) -> RequestReport {
    let product = question.product.unwrap_or(config.products.default);
    match &question.target {
        Target::Action(action) => RequestReport {
            product,
            method: None,
            path: None,
            normalized_path: None,
            rule: None,
            action_source: "flag",
            action: Some(*action),
        },
        Target::Route { method, path } => {
            let method = method.to_ascii_uppercase();
            let normalized = normalize_path(path);
            let routes = crate::ext_authz::request::Routes::from_config(config);
            let field = match product {
                Product::Tempo => "actions".to_string(),
                p => format!("products.{p}.actions"),
            };
            let (rule, action_source, action) = match routes.table(product) {
                None => (None, "default", None),
                Some(table) => match table.matching_rule(&method, &normalized) {
                    Some((i, r)) => (
                        Some(RuleReport {
                            field: format!("{field}.rules[{i}]"),
                            methods: r.methods.clone(),
                            path: r.path.clone(),
                            path_prefix: r.path_prefix.clone(),
                            action: r.action.as_str(),
                        }),
                        "rule",
                        r.action.action(),
                    ),
                    None if matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS") => {
                        (None, "default", Some(table.default))
                    }
                    None => (None, "default_unsafe", Some(table.default_unsafe)),
                },
            };
            RequestReport {
                product,
                method: Some(method),
                path: Some(path.clone()),
                normalized_path: Some(normalized),
                rule,
                action_source,
                action,
            }
        }
    }
}
