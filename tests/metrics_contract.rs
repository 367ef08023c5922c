//! The shipped dashboard and alerts query only what the real binary exports: every
//! `tenant_authz_*` series, every label they filter or group on, and every label value they
//! compare with. The README's metrics table lists exactly the exported families.
//!
//! A renamed metric or label (issue 12 renamed `kube_requests` to `backend_requests`) fails
//! here, not silently on an operator's empty panel.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use support::authz::{check_request, http_status, AuthzProcess};
use support::fake_kube::{FakeKube, FakeUser, Fault, Kind, Subject};

const TOKEN: &str = "token-metrics-contract-0123456789abcdef";

/// What one scrape exposes: sample name -> label name -> values seen.
#[derive(Default, Debug)]
struct Exposition {
    samples: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    /// Family names as the README writes them: sample names without a histogram's
    /// `_bucket`/`_sum`/`_count` (prometheus-client exports no family without a series).
    families: BTreeSet<String>,
}

fn parse_exposition(text: &str) -> Exposition {
    let mut e = Exposition::default();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        e.families.insert(family.to_string());
        let labels = e.samples.entry(name.to_string()).or_default();
        if line[name_end..].starts_with('{') {
            let close = line.rfind('}').expect("closing brace");
            for (k, v) in matchers(&line[name_end + 1..close]) {
                labels.entry(k).or_default().insert(v.1);
            }
        }
    }
    e
}

/// `a="x", b!~"y"` -> [(a, ("=", x)), (b, ("!~", y))]. Values here never hold quotes.
fn matchers(s: &str) -> Vec<(String, (String, String))> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let op_at = rest.find(['=', '!']).expect("a matcher operator");
        let name = rest[..op_at].trim().to_string();
        let after = &rest[op_at..];
        let op_len =
            if after.starts_with("=~") || after.starts_with("!=") || after.starts_with("!~") {
                2
            } else {
                1
            };
        let op = after[..op_len].to_string();
        let value_start = after.find('"').expect("a quoted value") + 1;
        let value_len = after[value_start..].find('"').expect("closing quote");
        let value = after[value_start..value_start + value_len].to_string();
        out.push((name, (op, value)));
        rest = after[value_start + value_len + 1..]
            .trim_start()
            .trim_start_matches(',')
            .trim();
    }
    out
}

/// One use of a metric in a query: the series name, its matchers, and the labels the
/// enclosing `by (...)` groups on.
#[derive(Debug)]
struct Use {
    query: String,
    series: String,
    matchers: Vec<(String, (String, String))>,
}

fn uses(query: &str) -> (Vec<Use>, Vec<String>) {
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(i) = query[at..].find("tenant_authz_") {
        let start = at + i;
        let end = query[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(query.len(), |e| start + e);
        let series = query[start..end].to_string();
        let mut m = Vec::new();
        if query[end..].starts_with('{') {
            let close = end + query[end..].find('}').expect("closing brace");
            m = matchers(&query[end + 1..close]);
        }
        found.push(Use {
            query: query.to_string(),
            series,
            matchers: m,
        });
        at = end;
    }
    let mut grouped = Vec::new();
    for kw in ["by (", "by(", "without ("] {
        let mut at = 0;
        while let Some(i) = query[at..].find(kw) {
            let open = at + i + kw.len();
            let close = open + query[open..].find(')').expect("closing paren");
            grouped.extend(
                query[open..close]
                    .split(',')
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty()),
            );
            at = close;
        }
    }
    (found, grouped)
}

fn repo_file(path: &str) -> String {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// Every PromQL expression of the shipped PrometheusRule and GrafanaDashboard.
fn shipped_queries() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let rule: serde_yaml_ng::Value = serde_yaml_ng::from_str(&repo_file(
        "manifests/base/observability/prometheusrule.yaml",
    ))
    .expect("prometheusrule.yaml");
    for group in rule["spec"]["groups"].as_sequence().expect("groups") {
        for r in group["rules"].as_sequence().expect("rules") {
            let name = r["alert"].as_str().or(r["record"].as_str()).unwrap_or("?");
            out.push((
                format!("alert {name}"),
                r["expr"].as_str().expect("expr").to_string(),
            ));
        }
    }
    let dash: serde_yaml_ng::Value = serde_yaml_ng::from_str(&repo_file(
        "manifests/base/observability/grafanadashboard.yaml",
    ))
    .expect("grafanadashboard.yaml");
    let json: serde_json::Value =
        serde_json::from_str(dash["spec"]["json"].as_str().expect("spec.json")).expect("JSON");
    fn walk(v: &serde_json::Value, title: &str, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(o) => {
                let title = o.get("title").and_then(|t| t.as_str()).unwrap_or(title);
                if let Some(expr) = o.get("expr").and_then(|e| e.as_str()) {
                    out.push((format!("panel {title:?}"), expr.to_string()));
                }
                for v in o.values() {
                    walk(v, title, out);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, title, out)),
            _ => {}
        }
    }
    walk(&json, "?", &mut out);
    out
}

async fn wait_for(authz: &AuthzProcess, series: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = authz.metrics().await;
        if m.contains(series) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{series} not in /metrics within 15 s:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Families that only a backend other than the one driven here exports (the static backend's
/// reloads), with the test that covers them.
const NOT_DRIVEN_HERE: &[&str] = &[
    // tests/static_backend.rs: reloads of the static grants file.
    "tenant_authz_config_reloads_total",
];

fn grafana() -> Subject {
    Subject::ServiceAccount {
        namespace: "showcase".into(),
        name: "grafana".into(),
    }
}

/// Drives every decision kind and watch event the queries filter on, then checks each query
/// against the scrape, and the README's table against the families seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_alerts_and_readme_name_only_what_tenant_authz_exports() {
    let fake = FakeKube::start().await;
    for ns in ["showcase", "payments", "billing"] {
        fake.create_namespace(ns);
    }
    fake.create_service_account("showcase", "grafana");
    fake.add_token(TOKEN, FakeUser::service_account("showcase", "grafana"));
    fake.bind_traces("showcase", "grafana-reads", grafana(), &["get"]);
    let authz = AuthzProcess::start(fake.kubeconfig_path(), &[]).await;
    // Watches synced first, so the long TTLs and tenant_authz_watch_up are in force.
    wait_for(&authz, r#"tenant_authz_watch_up{resource="namespaces"} 1"#).await;

    assert_eq!(authz.read_as(TOKEN, "showcase").await.0, 200); // reviewed allow
    assert_eq!(authz.read_as(TOKEN, "showcase").await.0, 200); // cached allow
    assert_eq!(authz.read_as(TOKEN, "payments").await.0, 403); // forbidden
    assert_eq!(
        authz
            .read_as("no-such-token-0123456789", "showcase")
            .await
            .0,
        401
    );
    let bearer = format!("Bearer {TOKEN}");
    let misrouted = check_request(
        "GET",
        "/api/search",
        &[("authorization", &bearer), ("x-scope-orgid", "showcase")],
        Some("no-such-action"),
    );
    let r = authz.client().await.check(misrouted).await.expect("Check");
    assert_eq!(http_status(&r.into_inner()), 500); // misconfigured route
    fake.set_fault(Fault::Status500);
    assert_eq!(authz.read_as(TOKEN, "billing").await.0, 503); // unavailable
    fake.set_fault(Fault::None);
    // A RoleBinding deleted: tenant_authz_cache_invalidations_total.
    fake.delete(Kind::RoleBinding, Some("showcase"), "grafana-reads")
        .expect("the binding existed");
    wait_for(&authz, "tenant_authz_cache_invalidations_total{").await;
    // A watch failing: tenant_authz_watch_events_total{event="error"}.
    fake.set_watch_fault(Fault::Status500);
    wait_for(&authz, r#"event="error""#).await;
    fake.set_watch_fault(Fault::None);
    let scrape = authz.metrics().await;
    let exposed = parse_exposition(&scrape);

    let queries = shipped_queries();
    assert!(
        queries.len() >= 12,
        "expected the alerts and panels, found {queries:#?}"
    );
    let mut problems = Vec::new();
    let mut checked = 0;
    for (source, query) in &queries {
        let (found, grouped) = uses(query);
        let mut labels_here: BTreeSet<&str> = BTreeSet::from(["le"]);
        for u in &found {
            checked += 1;
            let Some(labels) = exposed.samples.get(&u.series) else {
                problems.push(format!("{source}: {} is not exported", u.series));
                continue;
            };
            labels_here.extend(labels.keys().map(String::as_str));
            for (name, (op, value)) in &u.matchers {
                match labels.get(name) {
                    None => problems.push(format!(
                        "{source}: {} has no label {name} (query {:?})",
                        u.series, u.query
                    )),
                    Some(values) if op == "=" || op == "!=" => {
                        if !values.contains(value) && !value.contains('$') {
                            problems.push(format!(
                                "{source}: {}{{{name}={value:?}}} never seen; values: {values:?}",
                                u.series
                            ));
                        }
                    }
                    Some(_) => {}
                }
            }
        }
        if !found.is_empty() {
            for g in &grouped {
                if !labels_here.contains(g.as_str()) {
                    problems.push(format!("{source}: groups by {g}, which no series has"));
                }
            }
        }
    }
    assert!(checked >= 12, "only {checked} tenant_authz series checked");
    assert!(problems.is_empty(), "{problems:#?}\n\nscrape:\n{scrape}");

    let readme = repo_file("README.md");
    let section = readme
        .split("### Metrics (`GET /metrics`")
        .nth(1)
        .expect("README has a Metrics section");
    let table: BTreeSet<String> = section
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| {
            let cell = l.split('|').nth(1)?.trim();
            Some(cell.strip_prefix('`')?.strip_suffix('`')?.to_string())
        })
        .collect();
    let mut seen = exposed.families.clone();
    seen.extend(NOT_DRIVEN_HERE.iter().map(|f| f.to_string()));
    assert!(table.len() >= 10, "{table:?}");
    assert_eq!(
        table, seen,
        "README metrics table (left) vs the families /metrics exported (right)"
    );
}

#[test]
fn the_query_parser_finds_series_matchers_and_grouping() {
    let (found, grouped) = uses(
        r#"sum by (le, kind) (rate(tenant_authz_x_bucket{a="1", b!~"2|3"}[5m])) / sum(tenant_authz_y)"#,
    );
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].series, "tenant_authz_x_bucket");
    assert_eq!(
        found[0].matchers,
        vec![
            ("a".to_string(), ("=".to_string(), "1".to_string())),
            ("b".to_string(), ("!~".to_string(), "2|3".to_string())),
        ]
    );
    assert_eq!(found[1].series, "tenant_authz_y");
    assert_eq!(grouped, vec!["le", "kind"]);
    let e = parse_exposition(
        "# TYPE tenant_authz_checks counter\ntenant_authz_checks_total{decision=\"allow\"} 3\ntenant_authz_d_seconds_bucket{le=\"1\"} 2\n",
    );
    assert!(e.families.contains("tenant_authz_checks_total"));
    assert!(e.families.contains("tenant_authz_d_seconds"));
    assert!(e.samples["tenant_authz_checks_total"]["decision"].contains("allow"));
}
