//! What the demo prints: the table, figures from tenant-authz's `/metrics`, and the proof of
//! what the stand-in Tempo received. Every line fits in 100 columns.

use std::collections::BTreeMap;

use crate::story::{self, Row};
use crate::upstream::Recorded;

pub const WIDTH: usize = 100;

/// `(mark, #, request, token, X-Scope-OrgID, expected, got, cached)`.
fn line(cells: [&str; 8]) -> String {
    let [mark, n, request, token, tenant, expected, got, cached] = cells;
    let s = format!(
        "{mark} {n:>2}  {request:<18}  {token:<9}  {tenant:<17}  {expected:<17}  {got:<17}  {cached}"
    );
    s.trim_end().to_string()
}

pub fn header() -> String {
    line([
        " ",
        "#",
        "request",
        "token",
        "X-Scope-OrgID",
        "expected",
        "got",
        "cached",
    ])
}

/// The row line, then its reason and any mismatch, indented.
pub fn row(n: usize, row: &Row, result: &story::Result) -> Vec<String> {
    let got = match &result.got {
        Ok(outcome) => outcome.to_string(),
        Err(_) => "error".to_string(),
    };
    let mark = if result.mismatches.is_empty() {
        "✓"
    } else {
        "✗"
    };
    let cached = match result.cached {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    };
    let mut lines = vec![line([
        mark,
        &n.to_string(),
        row.request,
        row.token.map_or("(none)", |t| t.alias),
        row.tenant,
        &row.expect.to_string(),
        &got,
        cached,
    ])];
    if let Some(reason) = &result.reason {
        lines.extend(wrap(reason, "      └ ", "        ", 2));
    }
    if let Err(e) = &result.got {
        lines.extend(wrap(e, "      └ ", "        ", 3));
    }
    for m in &result.mismatches {
        lines.extend(wrap(m, "      ✗ ", "        ", 2));
    }
    lines
}

/// Word-wraps `text` into at most `max` lines of [`WIDTH`] columns, the first starting with
/// `first`, the others with `indent`; an ellipsis marks a cut.
pub fn wrap(text: &str, first: &str, indent: &str, max: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut current = first.to_string();
    let mut empty = true;
    for word in text.split_whitespace() {
        let fits = current.chars().count() + 1 + word.chars().count() <= WIDTH;
        if !empty && !fits {
            lines.push(std::mem::replace(&mut current, indent.to_string()));
            empty = true;
        }
        if !empty {
            current.push(' ');
        }
        current.push_str(word);
        empty = false;
    }
    lines.push(current);
    if lines.len() > max {
        lines.truncate(max);
        let last = lines.last_mut().expect("max >= 1");
        while last.chars().count() > WIDTH - 2 {
            last.pop();
        }
        last.push_str(" …");
    }
    lines.into_iter().map(|l| fit(&l)).collect()
}

/// Cuts `s` to [`WIDTH`] columns with an ellipsis.
pub fn fit(s: &str) -> String {
    if s.chars().count() <= WIDTH {
        return s.to_string();
    }
    let mut out: String = s.chars().take(WIDTH - 1).collect();
    out.push('…');
    out
}

/// One sample of the OpenMetrics text: `name{labels} value`.
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse_metrics(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let value = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_string(), v.trim_matches('"').to_string()))
                })
                .collect();
            Some(Sample {
                name: name.to_string(),
                labels,
                value,
            })
        })
        .collect()
}

/// Sums `name` over the samples whose labels include every `(key, value)` of `with`.
fn sum(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> u64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            with.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum::<f64>() as u64
}

/// The distinct values of label `key` of `name`, in order.
fn label_values(samples: &[Sample], name: &str, key: &str) -> Vec<String> {
    let mut values: Vec<String> = samples
        .iter()
        .filter(|s| s.name == name)
        .filter_map(|s| s.labels.get(key).cloned())
        .collect();
    values.sort();
    values.dedup();
    values
}

/// A few figures from tenant-authz's `/metrics`.
pub fn metrics(text: &str) -> Vec<String> {
    let m = parse_metrics(text);
    let checks = "tenant_authz_checks_total";
    let lookups = "tenant_authz_cache_lookups_total";
    let backend = "tenant_authz_backend_requests_total";
    let allowed = sum(&m, checks, &[("decision", "allow")]);
    let allowed_cached = sum(&m, checks, &[("decision", "allow"), ("cached", "true")]);
    let denied = sum(&m, checks, &[("decision", "deny")]);
    let by_reason = label_values(&m, checks, "reason")
        .into_iter()
        .filter(|r| r != "ok")
        .map(|r| {
            format!(
                "{r} {}",
                sum(&m, checks, &[("decision", "deny"), ("reason", &r)])
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let cache = |cache: &str| {
        format!(
            "{cache} {} hit / {} miss",
            sum(&m, lookups, &[("cache", cache), ("result", "hit")])
                + sum(&m, lookups, &[("cache", cache), ("result", "negative_hit")]),
            sum(&m, lookups, &[("cache", cache), ("result", "miss")])
        )
    };
    let review_kinds = label_values(&m, backend, "kind")
        .into_iter()
        .map(|k| format!("{k} {}", sum(&m, backend, &[("kind", &k)])))
        .collect::<Vec<_>>();
    let reviews = if review_kinds.is_empty() {
        "none".to_string()
    } else {
        review_kinds.join(", ")
    };
    [
        format!(
            "  checks_total         {}: {allowed} allow ({allowed_cached} cached), {denied} deny",
            allowed + denied
        ),
        format!("                       deny: {by_reason}"),
        format!(
            "  cache_lookups_total  {}, {}",
            cache("identity"),
            cache("decision")
        ),
        format!("  backend_requests_total  {reviews} (here answered by the static backend)"),
    ]
    .iter()
    .map(|l| fit(l))
    .collect()
}

/// Checks what the stand-in Tempo received against the allowed rows: exactly one request per
/// allowed row, none with `authorization`, each with exactly the expected `x-scope-orgid`.
/// Returns the lines to print and whether the proof holds.
pub fn tempo_proof(rows: &[Row], seen: &[Recorded]) -> (Vec<String>, bool) {
    let want: Vec<&str> = rows.iter().filter_map(|r| r.tempo_sees).collect();
    let with_auth = seen
        .iter()
        .filter(|r| !r.header_all("authorization").is_empty())
        .count();
    let tenants: Vec<String> = seen
        .iter()
        .map(|r| r.header_all("x-scope-orgid").join(" + "))
        .collect();
    let ok = with_auth == 0 && tenants == want;
    let mark = if ok { "✓" } else { "✗" };
    let mut lines = vec![
        fit(&format!(
            "{mark} stand-in Tempo received {} requests (the {} allowed rows): {} with an \
             authorization header;",
            seen.len(),
            want.len(),
            if with_auth == 0 {
                "none".to_string()
            } else {
                with_auth.to_string()
            }
        )),
        fit(&format!("  x-scope-orgid: {}", tenants.join(", "))),
    ];
    if tenants != want {
        lines.push(fit(&format!(
            "  ✗ expected x-scope-orgid: {}",
            want.join(", ")
        )));
    }
    (lines, ok)
}
