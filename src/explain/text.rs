//! The text form of a [`Report`]: one fact per line, labels in a column, for people.

use std::fmt::Write;

use super::{Report, RequestReport, TenantCheck};
use crate::review::static_::GrantView;

const LABEL: usize = 11;

fn line(out: &mut String, indent: usize, label: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "{:indent$}{label:<width$} {value}",
        "",
        width = LABEL.saturating_sub(indent)
    );
}

/// Renders `report` as text.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    line(&mut out, 0, "backend", report.backend);
    request(&mut out, &report.request);
    if !report.tenants.is_empty() {
        line(&mut out, 0, "tenants", report.tenants.join(", "));
    }
    if let Some(id) = &report.identity {
        out.push_str("identity\n");
        line(&mut out, 2, "user", &id.user);
        if !id.uid.is_empty() {
            line(&mut out, 2, "uid", &id.uid);
        }
        line(&mut out, 2, "groups", list(&id.groups));
        line(
            &mut out,
            2,
            "audiences",
            if id.audiences.is_empty() {
                match report.backend {
                    "kubernetes" => {
                        "(not checked: no kubernetes.audiences configured, the API server's own)"
                            .to_string()
                    }
                    _ => "(none: the static backend has no audiences)".to_string(),
                }
            } else {
                id.audiences.join(", ")
            },
        );
        line(
            &mut out,
            2,
            "expires",
            match (&id.expires, id.expires_in_seconds) {
                (Some(at), Some(0)) => format!("{at} (expired)"),
                (Some(at), Some(s)) => format!(
                    "{at} (in {})",
                    humantime::format_duration(std::time::Duration::from_secs(s))
                ),
                _ => "unknown (not a JWT with an exp claim)".to_string(),
            },
        );
    }
    for check in &report.checks {
        tenant(&mut out, check);
    }
    let verdict = match &report.reason {
        None => format!(
            "{} {} (exit {})",
            report.http_status, report.outcome, report.exit_code
        ),
        Some(reason) => format!(
            "{} {} (exit {}): {reason}",
            report.http_status, report.outcome, report.exit_code
        ),
    };
    line(&mut out, 0, "result", verdict);
    out
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".to_string()
    } else {
        items.join(", ")
    }
}

fn request(out: &mut String, r: &RequestReport) {
    line(out, 0, "product", r.product);
    if let (Some(method), Some(path)) = (&r.method, &r.path) {
        line(out, 0, "request", format!("{method} {path}"));
        if let Some(n) = &r.normalized_path {
            line(out, 2, "path", n);
        }
        match &r.rule {
            Some(rule) => {
                let methods = if rule.methods.is_empty() {
                    "any method".to_string()
                } else {
                    rule.methods.join("|")
                };
                let on = match (&rule.path, &rule.path_prefix) {
                    (Some(p), _) => format!("path {p}"),
                    (None, Some(p)) => format!("path_prefix {p}"),
                    (None, None) => String::new(),
                };
                line(
                    out,
                    2,
                    "rule",
                    format!("{}: {methods} {on} -> {}", rule.field, rule.action),
                );
            }
            None => line(
                out,
                2,
                "rule",
                match r.action_source {
                    "default_unsafe" => "none matched: default_unsafe (any other method)",
                    _ => "none matched: default (GET, HEAD, OPTIONS)",
                },
            ),
        }
    }
    let source = match r.action_source {
        "flag" => "from --action",
        "rule" => "inferred by the rule",
        _ => "inferred by the table's default",
    };
    match r.action {
        Some(a) => line(out, 0, "action", format!("{a} ({source})")),
        None => line(
            out,
            0,
            "action",
            "deny: an operations endpoint, 403 without a review",
        ),
    }
}

fn grant(g: &GrantView) -> String {
    let mut parts = Vec::new();
    if !g.users.is_empty() {
        parts.push(format!("users: [{}]", g.users.join(", ")));
    }
    if !g.groups.is_empty() {
        parts.push(format!("groups: [{}]", g.groups.join(", ")));
    }
    parts.push(format!("tenants: [{}]", g.tenants.join(", ")));
    if !g.products.is_empty() {
        let p: Vec<_> = g.products.iter().map(|p| p.as_str()).collect();
        parts.push(format!("products: [{}]", p.join(", ")));
    }
    let a: Vec<_> = g.actions.iter().map(|a| a.as_str()).collect();
    parts.push(format!("actions: [{}]", a.join(", ")));
    format!("static.grants[{}] {{{}}}", g.index, parts.join(", "))
}

fn tenant(out: &mut String, c: &TenantCheck) {
    let _ = writeln!(out, "tenant {}: {}", c.tenant, c.decision);
    let q = &c.question;
    if q.get("resourceAttributes").is_some() {
        line(out, 2, "question", "SubjectAccessReview spec");
        let text = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        for key in ["user", "uid", "groups", "extra", "resourceAttributes"] {
            let Some(v) = q.get(key) else { continue };
            let shown = match v {
                serde_json::Value::Array(items) => {
                    items.iter().map(text).collect::<Vec<_>>().join(", ")
                }
                other => text(other),
            };
            let _ = writeln!(out, "    {key:<19} {shown}");
        }
    } else if let Some(user) = q.get("user").and_then(|u| u.as_str()) {
        let product = q
            .get("product")
            .and_then(|v| v.as_str())
            .and_then(crate::model::Product::parse);
        let groups: Vec<&str> = q
            .get("groups")
            .and_then(|g| g.as_array())
            .map(|g| g.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        line(
            out,
            2,
            "question",
            format!(
                "may user {user} (groups: {}) {} {} ({}) of tenant {}?",
                if groups.is_empty() {
                    "none".to_string()
                } else {
                    groups.join(", ")
                },
                q.get("action").and_then(|v| v.as_str()).unwrap_or("?"),
                product.map_or("data", |p| p.data()),
                product.map_or("?", |p| p.as_str()),
                c.tenant
            ),
        );
    }
    let mut answer = c.decision.to_string();
    if let Some(r) = &c.reason {
        let _ = write!(answer, "; reason: {r}");
    }
    if let Some(e) = &c.evaluation_error {
        let _ = write!(answer, "; evaluationError: {e}");
    }
    if let Some(e) = &c.error {
        let _ = write!(answer, ": {e}");
    }
    if c.decision == "denied"
        && c.reason.is_none()
        && c.evaluation_error.is_none()
        && c.question.get("resourceAttributes").is_some()
    {
        answer.push_str(" (no reason given: no RBAC rule allows it)");
    }
    line(out, 2, "answer", answer);
    if let Some(g) = &c.grant {
        line(out, 2, "grant", format!("matched {}", grant(g)));
    }
    if let Some(g) = &c.closest_grant {
        let missing: Vec<_> = c.missing.iter().map(|m| m.as_str()).collect();
        line(
            out,
            2,
            "grant",
            format!(
                "none matched; closest {} lacks the {}",
                grant(g),
                missing.join(", ")
            ),
        );
    } else if c.grant.is_none()
        && c.question.get("resourceAttributes").is_none()
        && c.decision == "denied"
    {
        line(out, 2, "grant", "none: static.grants is empty");
    }
    for f in &c.fix {
        line(out, 2, "fix", f);
    }
}
