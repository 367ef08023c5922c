use super::report::outcome;
use super::*;
use crate::review::static_::{GrantView, Missing};

#[test]
fn exit_codes_follow_the_http_answer() {
    for (status, code) in [(200, 0), (400, 3), (401, 4), (403, 5), (503, 6), (500, 2)] {
        assert_eq!(exit_code(status), code, "{status}");
        assert_ne!(outcome(status), "", "{status}");
    }
}

#[test]
fn one_trailing_newline_is_dropped_and_nothing_else() {
    let t = token_from_input(b"abc\r\n".to_vec()).unwrap();
    assert_eq!(t.expose_secret(), "abc");
    let t = token_from_input(b"abc\n\n".to_vec()).unwrap();
    assert_eq!(t.expose_secret(), "abc\n", "the parser refuses the rest");
    assert!(matches!(
        token_from_input(b" \n".to_vec()),
        Err(ExplainError::NoToken)
    ));
    assert!(matches!(
        token_from_input(vec![0xff, 0xfe]),
        Err(ExplainError::TokenNotUtf8)
    ));
}

fn route(product: Option<Product>, method: &str, path: &str) -> RequestReport {
    request_report(
        &Config::default(),
        &Question {
            tenants: "a".into(),
            target: Target::Route {
                method: method.into(),
                path: path.into(),
            },
            product,
        },
    )
}

#[test]
fn the_route_report_names_the_rule_that_matched_or_the_default() {
    let r = route(Some(Product::Loki), "get", "/loki/api/v1//delete?x=1");
    assert_eq!(r.method.as_deref(), Some("GET"));
    assert_eq!(r.normalized_path.as_deref(), Some("/loki/api/v1/delete"));
    assert_eq!(r.action, Some(Action::Manage));
    assert_eq!(r.action_source, "rule");
    let rule = r.rule.unwrap();
    assert!(
        rule.field.starts_with("products.loki.actions.rules["),
        "{}",
        rule.field
    );
    assert_eq!(rule.action, "manage");

    let r = route(None, "GET", "/api/traces/abc");
    assert_eq!(
        (r.product, r.action_source, r.action),
        (Product::Tempo, "default", Some(Action::Read))
    );
    assert!(r.rule.is_none());
    let r = route(None, "PATCH", "/something/new");
    assert_eq!(
        (r.action_source, r.action),
        ("default_unsafe", Some(Action::Write))
    );
    let r = route(None, "GET", "/status/config");
    assert_eq!(r.action, None);
    assert_eq!(r.rule.unwrap().action, "deny");
}

fn report() -> Report {
    Report {
        outcome: "forbidden",
        http_status: 403,
        exit_code: 5,
        reason: Some("user \"alice\" may not write traces of tenant \"b\": …".into()),
        backend: "static",
        request: RequestReport {
            product: Product::Tempo,
            method: None,
            path: None,
            normalized_path: None,
            rule: None,
            action_source: "flag",
            action: Some(Action::Write),
        },
        tenants: vec!["b".into()],
        identity: Some(IdentityReport {
            user: "alice".into(),
            uid: String::new(),
            groups: vec!["team".into()],
            audiences: vec![],
            expires: Some("2100-01-01T00:00:00Z".into()),
            expires_in_seconds: Some(90),
        }),
        checks: vec![TenantCheck {
            tenant: "b".into(),
            decision: "denied",
            question: serde_json::json!({"user": "alice", "groups": ["team"], "tenant": "b",
                                         "product": "tempo", "action": "write"}),
            reason: None,
            evaluation_error: None,
            error: None,
            grant: None,
            closest_grant: Some(GrantView {
                index: 1,
                users: vec!["alice".into()],
                groups: vec![],
                tenants: vec!["a".into()],
                products: vec![],
                actions: vec![Action::Write],
            }),
            missing: vec![Missing::Tenant],
            fix: vec!["add b to static.grants[1].tenants".into()],
        }],
    }
}

#[test]
fn text_shows_each_step_on_its_own_line() {
    let text = render_text(&report());
    for expected in [
        "backend     static\n",
        "action      write (from --action)\n",
        "  expires   2100-01-01T00:00:00Z (in 1m 30s)\n",
        "tenant b: denied\n",
        "  question  may user alice (groups: team) write traces (tempo) of tenant b?\n",
        "  grant     none matched; closest static.grants[1] {users: [alice], tenants: [a], actions: [write]} lacks the tenant\n",
        "  fix       add b to static.grants[1].tenants\n",
        "result      403 forbidden (exit 5): user \"alice\"",
    ] {
        assert!(text.contains(expected), "lacks {expected:?}:\n{text}");
    }
}

#[test]
fn json_field_names_are_the_documented_ones() {
    let v = serde_json::to_value(report()).unwrap();
    // Names, not order (the output keeps the struct's order).
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "backend",
            "checks",
            "exit_code",
            "http_status",
            "identity",
            "outcome",
            "reason",
            "request",
            "tenants"
        ]
    );
    let mut check: Vec<&str> = v["checks"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    check.sort_unstable();
    assert_eq!(
        check,
        [
            "closest_grant",
            "decision",
            "error",
            "evaluation_error",
            "fix",
            "grant",
            "missing",
            "question",
            "reason",
            "tenant"
        ]
    );
    assert_eq!(v["checks"][0]["missing"], serde_json::json!(["tenant"]));
}
