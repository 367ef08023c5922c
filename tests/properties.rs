//! Property tests (proptest) of the promises a single example cannot cover: the tenant header
//! that reaches Tempo, denied tenants hidden in a list, and path disguises. The fuzz targets
//! (fuzz/, ./scripts/fuzz) check the parsers on arbitrary bytes; these check the whole Check.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::{
    CheckRequest, CheckResponse, HeaderAppendAction, HttpResponse,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::google::protobuf::value::Kind;
use prometheus_client::registry::Registry;
use proptest::prelude::*;

use tenant_authz::authorizer::{Authorizer, AuthorizerSettings};
use tenant_authz::config::{ActionConfig, CacheConfig};
use tenant_authz::ext_authz::{normalize_path, CheckService, RequestParser};
use tenant_authz::metrics::Metrics;
use tenant_authz::model::{Action, Product};
use tenant_authz::review::memory::MemoryReviewer;
use tenant_authz::routes;

const HEADER: &str = "x-scope-orgid";
/// The tenants a case draws from; each case grants alice a random subset of them.
const POOL: &[&str] = &["a", "b", "team-x", "payments", "showcase", "z9"];
const ACTIONS: [Action; 3] = [Action::Read, Action::Write, Action::Manage];

fn service(grants: &[(usize, Action)]) -> CheckService<MemoryReviewer> {
    let reviewer = MemoryReviewer::new();
    reviewer.add_token("alice-token", "alice");
    for &(tenant, action) in grants {
        reviewer.grant("alice", POOL[tenant], action);
    }
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    let authorizer = Arc::new(Authorizer::new(
        reviewer,
        AuthorizerSettings {
            cache: CacheConfig::default(),
            decision_timeout: Duration::from_secs(5),
            max_concurrent_reviews: 4,
            max_reviews_per_check: 4,
        },
        metrics.clone(),
    ));
    let parser = RequestParser::new(HEADER.into(), 16 * 1024, ActionConfig::default());
    CheckService::new(authorizer, parser, metrics, HEADER)
}

fn request(tenant_value: &str, action: Action) -> CheckRequest {
    let mut headers = HashMap::new();
    headers.insert(
        "authorization".to_string(),
        "Bearer alice-token".to_string(),
    );
    headers.insert(HEADER.to_string(), tenant_value.to_string());
    let mut context_extensions = HashMap::new();
    context_extensions.insert("action".to_string(), action.as_str().to_string());
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "POST".into(),
                    path: "/api/search".into(),
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

fn decide_all(svc: &CheckService<MemoryReviewer>, reqs: &[CheckRequest]) -> Vec<CheckResponse> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let mut out = Vec::new();
        for r in reqs {
            out.push(svc.decide(r).await);
        }
        out
    })
}

/// The value of the tenant header sent upstream, if the response allows.
fn upstream_tenants(r: &CheckResponse) -> Option<String> {
    let Some(HttpResponse::OkResponse(ok)) = &r.http_response else {
        assert_ne!(
            r.status.as_ref().map(|s| s.code),
            Some(0),
            "OK without OkResponse"
        );
        return None;
    };
    assert_eq!(r.status.as_ref().map(|s| s.code), Some(0));
    let tenant_headers: Vec<_> = ok
        .headers
        .iter()
        .filter(|h| {
            h.header
                .as_ref()
                .is_some_and(|h| h.key.eq_ignore_ascii_case(HEADER))
        })
        .collect();
    assert_eq!(
        tenant_headers.len(),
        1,
        "exactly one tenant header upstream"
    );
    let h = tenant_headers[0];
    assert_eq!(
        h.append_action,
        HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        "the client's header is overwritten, not appended to"
    );
    assert!(ok.headers_to_remove.iter().any(|n| n == "authorization"));
    let value = h.header.as_ref().expect("filtered on it").value.clone();
    let metadata = r.dynamic_metadata.as_ref().expect("allow metadata");
    assert_eq!(
        metadata.fields["tenants"].kind,
        Some(Kind::StringValue(value.clone())),
        "the access log names the tenants that went upstream"
    );
    Some(value)
}

/// A tenant list as a client might spell it: pool indices, joined by '|', with optional
/// whitespace around the whole value.
fn tenant_list() -> impl Strategy<Value = (Vec<usize>, String)> {
    (
        prop::collection::vec(0..POOL.len(), 1..6),
        prop::sample::select(vec!["", " ", "\t", " \t"]),
        prop::sample::select(vec!["", " ", "\t"]),
    )
        .prop_map(|(idx, pre, post)| {
            let names: Vec<&str> = idx.iter().map(|&i| POOL[i]).collect();
            let value = format!("{pre}{}{post}", names.join("|"));
            (idx, value)
        })
}

fn grants() -> impl Strategy<Value = Vec<(usize, Action)>> {
    prop::collection::vec(
        (0..POOL.len(), prop::sample::select(ACTIONS.to_vec())),
        0..12,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// An allowed request's upstream tenant header is exactly the canonical list that was
    /// authorized: the client's tenants, in its order, each one granted for the action; and a
    /// list of distinct, all-granted tenants is allowed.
    #[test]
    fn allowed_upstream_tenant_header_is_the_authorized_canonical_list(
        grants in grants(),
        (idx, value) in tenant_list(),
        action in prop::sample::select(ACTIONS.to_vec()),
    ) {
        let svc = service(&grants);
        let responses = decide_all(&svc, &[request(&value, action), request(&value, action)]);
        let distinct = idx.iter().enumerate().all(|(i, t)| !idx[..i].contains(t));
        let all_granted = idx.iter().all(|t| grants.contains(&(*t, action)));
        for (n, r) in responses.iter().enumerate() {
            match upstream_tenants(r) {
                Some(upstream) => {
                    let canonical: Vec<&str> = idx.iter().map(|&i| POOL[i]).collect();
                    prop_assert_eq!(&upstream, &canonical.join("|"), "response #{}", n);
                    prop_assert!(distinct && all_granted, "allowed {} for {:?}", value, grants);
                }
                None => prop_assert!(
                    !(distinct && all_granted),
                    "denied {:?} {} although every tenant is granted", value, action
                ),
            }
        }
    }

    /// A request naming a denied tenant is never allowed: wherever the tenant sits in the list,
    /// after allows of the other tenants are cached, alone or repeated.
    #[test]
    fn a_request_naming_a_denied_tenant_is_never_allowed(
        grants in grants(),
        (idx, _) in tenant_list(),
        denied_at in any::<prop::sample::Index>(),
        action in prop::sample::select(ACTIONS.to_vec()),
    ) {
        let denied: Vec<usize> =
            (0..POOL.len()).filter(|t| !grants.contains(&(*t, action))).collect();
        prop_assume!(!denied.is_empty());
        let denied_tenant = denied[denied_at.index(denied.len())];
        // Warm the cache with every granted tenant of the list, one by one.
        let mut reqs: Vec<CheckRequest> = idx
            .iter()
            .filter(|&&t| grants.contains(&(t, action)))
            .map(|&t| request(POOL[t], action))
            .collect();
        let warm = reqs.len();
        let mut list: Vec<&str> = idx.iter().map(|&i| POOL[i]).collect();
        let at = denied_at.index(list.len() + 1);
        list.insert(at, POOL[denied_tenant]);
        let value = list.join("|");
        reqs.push(request(&value, action));
        reqs.push(request(&value, action));
        let responses = decide_all(&service(&grants), &reqs);
        for r in &responses[warm..] {
            prop_assert_eq!(upstream_tenants(r), None, "{} allowed with {:?} denied", value, POOL[denied_tenant]);
        }
    }

    /// For every product's route table, the action inferred for a path never becomes `read`
    /// after a rewrite that Envoy (`normalize_path`, `merge_slashes`) normalises away:
    /// percent-encoding (either hex case), `.` and `x/..` segments, repeated slashes, a trailing
    /// slash, a query or fragment. The normalised path is the same, so the action is the same.
    #[test]
    fn inferred_action_survives_every_envoy_normalised_rewrite(
        method in prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
        base in base_path(),
        rewrites in prop::collection::vec(rewrite(), 0..12),
        tail in prop::sample::select(vec!["", "?a=1", "?x=/../..", "#frag", "?q=%2F#f"]),
    ) {
        let disguised = disguise(&base, &rewrites) + tail;
        for product in Product::ALL {
            let actions = (routes::preset(product).actions)();
            let expected = actions.infer(method, &normalize_path(&base));
            let got = actions.infer(method, &normalize_path(&disguised));
            prop_assert!(
                got != Some(Action::Read) || expected == Some(Action::Read),
                "{}: {} {:?} is {:?}, its disguise {:?} is a read",
                product.as_str(), method, base, expected, disguised
            );
            prop_assert_eq!(got, expected, "{}: {} {:?} vs {:?}", product.as_str(), method, base, disguised);
        }
    }
}

/// Tempo's paths and random ones made of path characters (no '%', '?' or '#': rewriting those
/// changes the path, not its spelling).
fn base_path() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "/api/overrides",
            "/api/overrides/user",
            "/v1/traces",
            "/api/traces",
            "/api/v2/spans",
            "/api/search",
            "/api/v2/traces/abc",
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            "/tempopb.StreamingQuerier/Search",
            "/flush",
            "/ingester/shutdown",
            "/loki/api/v1/push",
            "/loki/api/v1/delete",
            "/api/v1/push",
            "/api/prom/rules/ns",
            "/otlp/v1/metrics",
            "/ingest",
            "/push.v1.PusherService/Push",
        ])
        .prop_map(String::from),
        "(/[a-zA-Z0-9._~-]{0,12}){1,4}",
    ]
}

#[derive(Clone, Debug)]
enum Rewrite {
    /// Percent-encode the character at this index (upper or lower-case hex).
    Encode(usize, bool),
    /// Insert `./` at a segment boundary.
    Dot(usize),
    /// Insert `<segment>/../` at a segment boundary.
    DotDot(usize, String),
    /// Double a slash.
    Slash(usize),
    TrailingSlash,
}

fn rewrite() -> impl Strategy<Value = Rewrite> {
    prop_oneof![
        (any::<usize>(), any::<bool>()).prop_map(|(i, u)| Rewrite::Encode(i, u)),
        any::<usize>().prop_map(Rewrite::Dot),
        (any::<usize>(), "[a-z0-9]{1,6}").prop_map(|(i, s)| Rewrite::DotDot(i, s)),
        any::<usize>().prop_map(Rewrite::Slash),
        Just(Rewrite::TrailingSlash),
    ]
}

fn disguise(base: &str, rewrites: &[Rewrite]) -> String {
    // (character, None = as is / Some(upper) = percent-encoded)
    let mut chars: Vec<(char, Option<bool>)> = base.chars().map(|c| (c, None)).collect();
    let boundary = |chars: &[(char, Option<bool>)], i: &usize| {
        let all: Vec<usize> = (0..=chars.len())
            .filter(|&k| k == 0 || chars[k - 1].0 == '/')
            .collect();
        all[i % all.len()]
    };
    for r in rewrites {
        let insert = |chars: &mut Vec<(char, Option<bool>)>, at: usize, s: &str| {
            for (k, c) in s.chars().enumerate() {
                chars.insert(at + k, (c, None));
            }
        };
        match r {
            Rewrite::Encode(i, upper) if !chars.is_empty() => {
                let k = i % chars.len();
                chars[k].1 = Some(*upper);
            }
            Rewrite::Encode(..) => {}
            Rewrite::Dot(i) => {
                let at = boundary(&chars, i);
                insert(&mut chars, at, "./");
            }
            Rewrite::DotDot(i, seg) => {
                let at = boundary(&chars, i);
                insert(&mut chars, at, &format!("{seg}/../"));
            }
            Rewrite::Slash(i) => {
                let at = boundary(&chars, i);
                insert(&mut chars, at, "/");
            }
            Rewrite::TrailingSlash => chars.push(('/', None)),
        }
    }
    let mut out = String::new();
    for (c, enc) in chars {
        let mut buf = [0u8; 4];
        match enc {
            None => out.push(c),
            Some(upper) => {
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&if upper {
                        format!("%{b:02X}")
                    } else {
                        format!("%{b:02x}")
                    });
                }
            }
        }
    }
    out
}

/// The property's generator is not vacuous: its rewrites change the spelling (here of a
/// manage path), and the disguise still normalises to the path it disguises.
#[test]
fn disguises_change_the_spelling_not_the_path() {
    let d = disguise(
        "/api/overrides",
        &[
            Rewrite::DotDot(0, "x".into()),
            Rewrite::Encode(3, false),
            Rewrite::Slash(0),
            Rewrite::TrailingSlash,
        ],
    );
    assert_eq!(d, "/x/.%2e//api/overrides/");
    assert_eq!(normalize_path(&d), "/api/overrides");
    let actions = ActionConfig::default();
    assert_eq!(
        actions.infer("PUT", &normalize_path(&d)),
        Some(Action::Manage),
        "{d}"
    );
}
