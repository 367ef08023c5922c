//! check_request: CheckRequest -> RequestParser::parse.

use std::collections::HashMap;
use std::sync::OnceLock;

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use prost::Message as _;

use tenant_authz::config::ActionConfig;
use tenant_authz::ext_authz::request::MAX_TENANTS;
use tenant_authz::ext_authz::{normalize_path, RequestParser};
use tenant_authz::model::{Action, Product, Tenant};
use tenant_authz::routes;

use super::Input;

/// The defaults of `Config` (the parser the shipped Envoy configs talk to).
const TENANT_HEADER: &str = "x-scope-orgid";
const MAX_TOKEN_BYTES: usize = 16 * 1024;

const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT", "get", "post",
];
const PATHS: &[&str] = &[
    "/api/search",
    "/api/overrides",
    "/v1/traces",
    "/api/traces",
    "/api/traces/0af7651916cd43dd8448eb211c80319c",
    "/api/v2/search/tag/service.name/values",
    "/api/v2/traces/diff",
    "/api/metrics/query_range",
    "/tempopb.StreamingQuerier/Search",
    "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "/jaeger.api_v2.CollectorService/PostSpans",
    "/api/v2/spans",
    "/flush",
    "/status/config",
    "/",
    // Loki, Mimir, Pyroscope.
    "/loki/api/v1/push",
    "/loki/api/v1/delete",
    "/loki/api/v1/rules/ns",
    "/api/v1/push",
    "/api/prom/rules",
    "/otlp/v1/metrics",
    "/ingest",
    "/push.v1.PusherService/Push",
];
const HEADER_NAMES: &[&str] = &[
    "authorization",
    "x-scope-orgid",
    "Authorization",
    "X-Scope-OrgID",
    "x-remote-user",
    "impersonate-user",
];

fn parser() -> &'static RequestParser {
    static PARSER: OnceLock<RequestParser> = OnceLock::new();
    PARSER.get_or_init(|| {
        RequestParser::new(
            TENANT_HEADER.into(),
            MAX_TOKEN_BYTES,
            ActionConfig::default(),
        )
    })
}

fn actions() -> &'static ActionConfig {
    static ACTIONS: OnceLock<ActionConfig> = OnceLock::new();
    ACTIONS.get_or_init(ActionConfig::default)
}

/// The built-in route table of every product.
fn tables() -> &'static [(&'static str, ActionConfig)] {
    static TABLES: OnceLock<Vec<(&'static str, ActionConfig)>> = OnceLock::new();
    TABLES.get_or_init(|| {
        Product::ALL
            .into_iter()
            .map(|p| (p.as_str(), (routes::preset(p).actions)()))
            .collect()
    })
}

/// Bytes → a CheckRequest, either prost-decoded (first byte even) or built from [`Input`]
/// (first byte odd), then through the parser; structured inputs also try path disguises.
pub fn check_request(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        if let Ok(req) = CheckRequest::decode(rest) {
            check_parse(&req);
        }
        return;
    }
    let mut input = Input::new(rest);
    let req = structured_request(&mut input);
    check_parse(&req);
    let http = http_of(&req).expect("built with HTTP attributes");
    check_disguises(&http.method.clone(), &http.path.clone(), &mut input);
}

fn structured_request(input: &mut Input) -> CheckRequest {
    let method = input.pick(METHODS);
    let path = input.pick(PATHS);
    let mut headers = HashMap::new();
    for _ in 0..input.byte() % 8 {
        let name = input.pick(HEADER_NAMES);
        headers.insert(name, input.string());
    }
    let header_map = match input.byte() {
        0 => None,
        n => Some(HeaderMap {
            headers: (0..(n - 1) % 8)
                .map(|_| HeaderValue {
                    key: input.pick(HEADER_NAMES),
                    value: input.string(),
                    raw_value: input.bytes().to_vec(),
                })
                .collect(),
        }),
    };
    let mut context_extensions = HashMap::new();
    match input.byte() {
        1 => context_extensions.insert("action".into(), "read".into()),
        2 => context_extensions.insert("action".into(), "write".into()),
        3 => context_extensions.insert("action".into(), "manage".into()),
        4 => context_extensions.insert("action".into(), input.string()),
        _ => None,
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method,
                    path,
                    headers,
                    header_map,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions,
            ..Default::default()
        }),
    }
}

fn http_of(req: &CheckRequest) -> Option<&HttpRequest> {
    req.attributes.as_ref()?.request.as_ref()?.http.as_ref()
}

fn token68(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b)
}

/// What the parser returned, without the token: comparable across two parses.
#[derive(Debug, PartialEq)]
enum Outcome {
    Ok {
        tenants: String,
        action: Action,
        token_len: usize,
    },
    Err(String),
}

fn check_parse(req: &CheckRequest) {
    let (action, result) = parser().parse(req);
    let outcome = match &result {
        Ok(p) => {
            assert_eq!(
                action,
                Some(p.action),
                "the reported action is the parsed one"
            );
            let list: Vec<&Tenant> = p.tenants.iter().collect();
            assert!(!list.is_empty() && list.len() <= MAX_TENANTS, "{list:?}");
            for (i, t) in list.iter().enumerate() {
                assert_eq!(
                    Tenant::parse(t.as_str()).as_ref(),
                    Ok(*t),
                    "every tenant is a namespace name"
                );
                assert!(!list[..i].contains(t), "tenant {t:?} twice in {list:?}");
            }
            let joined: Vec<&str> = list.iter().map(|t| t.as_str()).collect();
            assert_eq!(p.tenants.canonical(), joined.join("|"));
            let token = p.token.expose_secret();
            assert!(!token.is_empty(), "empty token accepted");
            assert!(token.len() <= MAX_TOKEN_BYTES, "token over the limit");
            assert!(token.bytes().all(token68), "token outside token68");
            let http = http_of(req).expect("parsed, so it has HTTP attributes");
            let ext = req
                .attributes
                .as_ref()
                .and_then(|a| a.context_extensions.get("action"));
            let expected = match ext {
                Some(v) => Action::parse(v),
                None => actions().infer(&http.method, &normalize_path(&http.path)),
            };
            assert_eq!(
                Some(p.action),
                expected,
                "action from the route or the path"
            );
            Outcome::Ok {
                tenants: p.tenants.canonical().to_string(),
                action: p.action,
                token_len: token.len(),
            }
        }
        Err(reason) => Outcome::Err(reason.to_string()),
    };
    // No answer depends on the token's content (only on its length and character classes):
    // the same request with every letter and digit of the credential changed must give the
    // same outcome, so no message can quote it.
    let mut other = req.clone();
    if disguise_credentials(&mut other) {
        let (other_action, other_result) = parser().parse(&other);
        let other_outcome = match &other_result {
            Ok(p) => Outcome::Ok {
                tenants: p.tenants.canonical().to_string(),
                action: p.action,
                token_len: p.token.len(),
            },
            Err(reason) => Outcome::Err(reason.to_string()),
        };
        assert_eq!(action, other_action);
        assert_eq!(
            outcome, other_outcome,
            "the answer depends on the token's content"
        );
    }
}

/// Rotates every ASCII letter and digit after the scheme of each Authorization value; true if
/// anything changed.
fn disguise_credentials(req: &mut CheckRequest) -> bool {
    fn rotate(b: u8) -> u8 {
        match b {
            b'a'..=b'y' | b'A'..=b'Y' | b'0'..=b'8' => b + 1,
            b'z' => b'a',
            b'Z' => b'A',
            b'9' => b'0',
            other => other,
        }
    }
    fn after_scheme(value: &mut [u8]) -> bool {
        let start = value
            .iter()
            .position(|b| *b != b' ' && *b != b'\t')
            .unwrap_or(value.len());
        let Some(sep) = value[start..]
            .iter()
            .position(|b| *b == b' ' || *b == b'\t')
        else {
            return false;
        };
        let mut changed = false;
        for b in &mut value[start + sep..] {
            let r = rotate(*b);
            changed |= r != *b;
            *b = r;
        }
        changed
    }
    fn in_string(s: &mut String) -> bool {
        let mut bytes = std::mem::take(s).into_bytes();
        let changed = after_scheme(&mut bytes);
        *s = String::from_utf8(bytes).expect("only ASCII bytes were changed");
        changed
    }
    let Some(http) = req
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    else {
        return false;
    };
    let mut changed = false;
    for (k, v) in http.headers.iter_mut() {
        if k.eq_ignore_ascii_case("authorization") {
            changed |= in_string(v);
        }
    }
    if let Some(map) = http.header_map.as_mut() {
        for h in map.headers.iter_mut() {
            if h.key.eq_ignore_ascii_case("authorization") {
                changed |= in_string(&mut h.value);
                changed |= after_scheme(&mut h.raw_value);
            }
        }
    }
    changed
}

#[derive(Clone, Copy)]
enum Spelling {
    Plain,
    Upper,
    Lower,
}

/// Rewrites of `path` that Envoy (`normalize_path`, `merge_slashes`) and Tempo's router treat as
/// the same path: percent-encoding any character (either hex case), `./` and `x/../` segments,
/// repeated slashes, a trailing slash, a query string or fragment. The inferred action must not
/// change, and in particular a write or manage path must never become a read.
///
/// Not in the list, on purpose: the case of the path's letters (Envoy keeps it and Tempo's routes
/// are case-sensitive, so `GET /V1/TRACES` is a read of a path Tempo does not serve), and
/// rewriting `%`, `?` or `#` (they change what the path is, not how it is spelt).
fn check_disguises(method: &str, path: &str, input: &mut Input) {
    let base: String = path.chars().filter(|c| !"%?#".contains(*c)).collect();
    let expected_path = normalize_path(&base);
    let expected = actions().infer(method, &expected_path);
    let mut chars: Vec<(char, Spelling)> = base.chars().map(|c| (c, Spelling::Plain)).collect();
    for _ in 0..input.byte() % 16 {
        let op = input.byte() % 5;
        if op == 0 {
            if !chars.is_empty() {
                let i = input.below(chars.len());
                chars[i].1 = if input.byte() & 1 == 0 {
                    Spelling::Upper
                } else {
                    Spelling::Lower
                };
            }
            continue;
        }
        // Segment boundaries: the start, and after every slash.
        let boundaries: Vec<usize> = (0..=chars.len())
            .filter(|&i| i == 0 || chars[i - 1].0 == '/')
            .collect();
        let at = boundaries[input.below(boundaries.len())];
        let insert: String = match op {
            1 => "./".into(),
            2 => {
                let len = 1 + input.byte() % 4;
                let seg: String = (0..len)
                    .map(|_| {
                        let b = input.byte() % 36;
                        char::from_digit(u32::from(b), 36).expect("below 36")
                    })
                    .collect();
                format!("{seg}/../")
            }
            3 => "/".into(),
            _ => {
                chars.push(('/', Spelling::Plain));
                continue;
            }
        };
        for (k, c) in insert.chars().enumerate() {
            chars.insert(at + k, (c, Spelling::Plain));
        }
    }
    let mut disguised = String::new();
    for (c, spelling) in &chars {
        let mut buf = [0u8; 4];
        match spelling {
            Spelling::Plain => disguised.push(*c),
            Spelling::Upper => c
                .encode_utf8(&mut buf)
                .bytes()
                .for_each(|b| disguised.push_str(&format!("%{b:02X}"))),
            Spelling::Lower => c
                .encode_utf8(&mut buf)
                .bytes()
                .for_each(|b| disguised.push_str(&format!("%{b:02x}"))),
        }
    }
    if input.byte() & 1 == 1 {
        disguised.push('?');
        disguised.push_str(&input.string());
    }
    if input.byte() & 1 == 1 {
        disguised.push('#');
        disguised.push_str(&input.string());
    }
    let got_path = normalize_path(&disguised);
    // Every product's route table (the parser below uses Tempo's, the default).
    for (product, table) in tables() {
        let want = table.infer(method, &expected_path);
        let got = table.infer(method, &got_path);
        assert!(
            got != Some(Action::Read) || want == Some(Action::Read),
            "{product}: {method} {base:?} is {want:?} but its disguise {disguised:?} is a read"
        );
        assert_eq!(got, want, "{product}: {method} {disguised:?} vs {base:?}");
    }
    assert_eq!(
        got_path, expected_path,
        "{method} {disguised:?} normalises differently from {base:?}"
    );
    // The parser reports the same action for the disguise (the rest of the request is absent).
    let req = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: method.into(),
                    path: disguised,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    assert_eq!(parser().parse(&req).0, expected);
}
