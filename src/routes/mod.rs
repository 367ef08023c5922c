//! Route tables: what a request does (read, write, manage, or an operations endpoint no tenant
//! may reach), by method and normalised path, one table per product. Used when the Envoy route
//! sets no `action` context extension (an Istio CUSTOM provider sends none).
//!
//! Each product's file holds its table as data, taken from the product's own route
//! registration at a named version; `tests/data/routes/` records those route lists and
//! `tests/routes.rs` checks every recorded route against its table. Adding a product is one
//! file here, its variant in [`crate::model::Product`], and its recorded list.

use serde::{Deserialize, Serialize};

use crate::model::{Action, Product};

pub mod loki;
pub mod mimir;
pub mod pyroscope;
pub mod tempo;

/// What a product asks Kubernetes by default: the SAR `group` and `resource` (both
/// configurable) and the action table.
pub struct Preset {
    pub product: Product,
    pub group: &'static str,
    pub resource: &'static str,
    /// Where the table comes from: repository, files, version.
    pub source: &'static str,
    pub actions: fn() -> ActionConfig,
}

/// The built-in preset of `product`.
pub fn preset(product: Product) -> &'static Preset {
    match product {
        Product::Tempo => &tempo::PRESET,
        Product::Loki => &loki::PRESET,
        Product::Mimir => &mimir::PRESET,
        Product::Pyroscope => &pyroscope::PRESET,
    }
}

/// How the action of a request is found when the Envoy route sets no `action`
/// context extension. First matching rule wins; an unmatched request is `default` for safe
/// methods (GET, HEAD, OPTIONS) and `default_unsafe` for every other method, so an ingest
/// endpoint missing from the table needs `write`, never only `read`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActionConfig {
    pub rules: Vec<ActionRule>,
    /// Action of an unmatched GET, HEAD or OPTIONS.
    pub default: Action,
    /// Action of an unmatched request with any other method.
    pub default_unsafe: Action,
}

/// Tempo's table: the default of the `actions` section.
impl Default for ActionConfig {
    fn default() -> Self {
        tempo::actions()
    }
}

/// What a rule decides: an action, or `deny` for paths tenants must never reach (operations
/// endpoints, which are not tenant-scoped).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    Read,
    Write,
    Manage,
    Deny,
}

impl RuleAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleAction::Read => "read",
            RuleAction::Write => "write",
            RuleAction::Manage => "manage",
            RuleAction::Deny => "deny",
        }
    }

    pub fn action(self) -> Option<Action> {
        match self {
            RuleAction::Read => Some(Action::Read),
            RuleAction::Write => Some(Action::Write),
            RuleAction::Manage => Some(Action::Manage),
            RuleAction::Deny => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActionRule {
    /// HTTP methods (upper case); empty or absent matches any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Exact path (after normalisation, without query string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Path prefix at a segment boundary: `/api/overrides` matches `/api/overrides` and
    /// `/api/overrides/x`, not `/api/overridesx`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    pub action: RuleAction,
}

/// Methods a rule may name; `ANY` is every method.
pub(crate) const ANY: &[&str] = &[];
pub(crate) const UNSAFE: &[&str] = &["POST", "PUT", "PATCH", "DELETE"];

impl ActionRule {
    /// A rule on a path prefix (at a segment boundary).
    pub fn prefix(methods: &[&str], prefix: &str, action: RuleAction) -> Self {
        Self {
            methods: methods.iter().map(|m| m.to_string()).collect(),
            path: None,
            path_prefix: Some(prefix.to_string()),
            action,
        }
    }

    /// A rule on one exact path.
    pub fn exact(methods: &[&str], path: &str, action: RuleAction) -> Self {
        Self {
            methods: methods.iter().map(|m| m.to_string()).collect(),
            path: Some(path.to_string()),
            path_prefix: None,
            action,
        }
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m == method) {
            return false;
        }
        if let Some(p) = &self.path {
            if path != p {
                return false;
            }
        }
        if let Some(prefix) = &self.path_prefix {
            let prefix = prefix.trim_end_matches('/');
            match path.strip_prefix(prefix) {
                Some(rest) if rest.is_empty() || rest.starts_with('/') => {}
                _ => return false,
            }
        }
        true
    }

    /// Checks what serde cannot; `field` is the rule's path in the config (`actions.rules[3]`).
    pub fn validate(&self, field: &str) -> Result<(), (String, String)> {
        if self.path.is_none() && self.path_prefix.is_none() {
            return Err((field.to_string(), "needs path or path_prefix".into()));
        }
        for p in self.path.iter().chain(self.path_prefix.iter()) {
            if !p.starts_with('/') {
                return Err((field.to_string(), format!("path {p:?} must start with '/'")));
            }
        }
        for m in &self.methods {
            if m.is_empty() || !m.chars().all(|c| c.is_ascii_uppercase()) {
                return Err((
                    format!("{field}.methods"),
                    format!("{m:?} is not an upper-case HTTP method"),
                ));
            }
        }
        Ok(())
    }
}

impl ActionConfig {
    /// A table with the usual defaults: unmatched safe methods read, anything else writes.
    pub(crate) fn with_rules(rules: Vec<ActionRule>) -> Self {
        Self {
            rules,
            default: Action::Read,
            default_unsafe: Action::Write,
        }
    }

    /// The action of a request by method and normalised path (no query string); `None` when
    /// a `deny` rule matches.
    pub fn infer(&self, method: &str, path: &str) -> Option<Action> {
        match self.matching_rule(method, path) {
            Some((_, rule)) => rule.action.action(),
            None if matches!(method, "GET" | "HEAD" | "OPTIONS") => Some(self.default),
            None => Some(self.default_unsafe),
        }
    }

    /// The first rule that matches, with its index in `rules` (what [`ActionConfig::infer`]
    /// decides by; `None`: the table's defaults apply). For `tenant-authz explain`.
    pub fn matching_rule(&self, method: &str, path: &str) -> Option<(usize, &ActionRule)> {
        self.rules
            .iter()
            .enumerate()
            .find(|(_, r)| r.matches(method, path))
    }

    /// Checks every rule; `field` is the table's path in the config (`actions`).
    pub fn validate(&self, field: &str) -> Result<(), (String, String)> {
        for (i, rule) in self.rules.iter().enumerate() {
            rule.validate(&format!("{field}.rules[{i}]"))?;
        }
        Ok(())
    }
}

/// Deny rules for every method on each prefix.
pub(crate) fn deny_all<'a>(prefixes: &'a [&'a str]) -> impl Iterator<Item = ActionRule> + 'a {
    prefixes
        .iter()
        .map(|p| ActionRule::prefix(ANY, p, RuleAction::Deny))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_at_segment_boundaries_only() {
        let r = ActionRule::prefix(ANY, "/api/overrides", RuleAction::Manage);
        assert!(r.matches("POST", "/api/overrides"));
        assert!(r.matches("POST", "/api/overrides/x"));
        assert!(!r.matches("POST", "/api/overridesx"));
        let r = ActionRule::exact(&["GET"], "/a", RuleAction::Read);
        assert!(r.matches("GET", "/a"));
        assert!(!r.matches("GET", "/a/b"));
        assert!(!r.matches("POST", "/a"));
    }

    #[test]
    fn every_preset_table_is_valid_and_names_its_product() {
        for p in Product::ALL {
            let preset = preset(p);
            assert_eq!(preset.product, p);
            (preset.actions)().validate("t").unwrap();
            assert!(!preset.resource.is_empty() && preset.group.ends_with(".grafana.com"));
        }
    }
}
