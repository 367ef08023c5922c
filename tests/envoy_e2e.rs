//! End-to-end tests: a real Envoy 1.40 in front of a recording Tempo stand-in, calling the real
//! `tenant-authz` binary over ext_authz gRPC, which reviews tokens against a fake Kubernetes
//! API server over real HTTPS.
//!
//! Every test builds its own stack (fake API, tenant-authz process, upstream, Envoy) so the
//! tests can run in parallel. Tokens are realistic, JWT-shaped (~1 KB) and deterministic per
//! test, so the token-leak scan (full token, 12-char prefix / suffix and every 12-char window)
//! is meaningful.
mod support;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status as SpanStatus, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{RetryPolicy, WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use serde_json::{json, Value};
use tonic::metadata::{AsciiMetadataValue, MetadataMap};

use support::authz::AuthzProcess;
use support::envoy::{free_port, Envoy};
use support::fake_kube::{FakeKube, FakeUser, Fault, Subject};
use support::upstream::{Recorded, Upstream};

const E2E: &str = include_str!("envoy/e2e.yaml");
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const SHOWCASE_QUERY: &str = "system:serviceaccount:showcase:query";
const SHOWCASE_INGEST: &str = "system:serviceaccount:showcase:ingest";
const PAYMENTS_QUERY: &str = "system:serviceaccount:payments:query";
/// The window of the leak scan: no 12-character piece of a token may show up anywhere.
const WINDOW: usize = 12;

// ------------------------------------------------------------------------------ tokens

/// splitmix64: deterministic pseudo-random bytes for realistic-looking tokens.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    fn uuid(&mut self) -> String {
        let b = self.bytes(16);
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!(
            "{}-{}-4{}-a{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[13..16],
            &hex[17..20],
            &hex[20..32]
        )
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Mints JWT-shaped projected service-account tokens (never verified by anyone: the fake API
/// server only knows them by value).
struct Minter(Rng);

impl Minter {
    fn new(seed: u64) -> Minter {
        Minter(Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x5ca1_ab1e))
    }

    /// A ~1 KB RS256-looking token for `system:serviceaccount:<ns>:<name>`.
    fn token(&mut self, ns: &str, name: &str) -> String {
        self.token_with_signature(ns, name, 256)
    }

    fn token_with_signature(&mut self, ns: &str, name: &str, sig_bytes: usize) -> String {
        let rng = &mut self.0;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = json!({ "alg": "RS256", "kid": b64url(&rng.bytes(32)) });
        let pod_suffix = format!("{:x}", rng.next_u64() & 0xff_ffff_ffff);
        let payload = json!({
            "aud": ["https://kubernetes.default.svc.cluster.local"],
            "exp": now + 3600,
            "iat": now,
            "iss": "https://kubernetes.default.svc.cluster.local",
            "jti": rng.uuid(),
            "kubernetes.io": {
                "namespace": ns,
                "node": { "name": "kind-worker", "uid": rng.uuid() },
                "pod": { "name": format!("{name}-{pod_suffix}"), "uid": rng.uuid() },
                "serviceaccount": { "name": name, "uid": rng.uuid() },
                "warnafter": now + 3000,
            },
            "nbf": now,
            "sub": format!("system:serviceaccount:{ns}:{name}"),
        });
        let sig = rng.bytes(sig_bytes);
        format!(
            "{}.{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(payload.to_string().as_bytes()),
            b64url(&sig)
        )
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

// ------------------------------------------------------------------------------ the stack

/// What a client saw.
#[derive(Debug)]
struct Reply {
    status: u16,
    version: reqwest::Version,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Everything the client got, as text (for the leak scan).
    fn transcript(&self) -> String {
        let mut s = format!("{} {:?}\n", self.status, self.version);
        for (n, v) in &self.headers {
            s.push_str(&format!("{n}: {v}\n"));
        }
        s.push('\n');
        s.push_str(&self.body);
        s.push('\n');
        s
    }
}

/// FakeKube + tenant-authz + recording upstream + Envoy, with three SA tokens.
struct Stack {
    fake: FakeKube,
    authz: AuthzProcess,
    upstream: Upstream,
    envoy: Envoy,
    /// Listener with `action=read` (`manage` for non-GET `/api/overrides`).
    query: u16,
    /// Listener with `action=write`.
    ingest: u16,
    /// Listener without context extensions (tenant-authz infers the action).
    infer: u16,
    minter: Minter,
    /// `showcase/query`: `get` in `showcase`.
    showcase_query: String,
    /// `showcase/ingest`: `create` in `showcase`.
    showcase_ingest: String,
    /// `payments/query`: `get` in `payments`.
    payments_query: String,
    h1: reqwest::Client,
    h2: reqwest::Client,
}

impl Stack {
    async fn new(seed: u64) -> Stack {
        let fake = FakeKube::start().await;
        let mut minter = Minter::new(seed);
        let showcase_query = minter.token("showcase", "query");
        let showcase_ingest = minter.token("showcase", "ingest");
        let payments_query = minter.token("payments", "query");
        fake.add_token(
            &showcase_query,
            FakeUser::service_account("showcase", "query").with_pod("query-0"),
        );
        fake.add_token(
            &showcase_ingest,
            FakeUser::service_account("showcase", "ingest").with_pod("ingest-0"),
        );
        fake.add_token(
            &payments_query,
            FakeUser::service_account("payments", "query"),
        );
        fake.grant(Subject::User(SHOWCASE_QUERY.into()), "showcase", "get");
        fake.grant(Subject::User(SHOWCASE_INGEST.into()), "showcase", "create");
        fake.grant(Subject::User(PAYMENTS_QUERY.into()), "payments", "get");

        let authz = AuthzProcess::start(fake.kubeconfig_path(), &[]).await;
        let upstream = Upstream::start().await;
        let (query, ingest, infer) = (free_port(), free_port(), free_port());
        let envoy = Envoy::start(
            E2E,
            &[
                ("AUTHZ_PORT", authz.grpc_port.to_string()),
                ("UPSTREAM_PORT", upstream.port.to_string()),
                ("QUERY_PORT", query.to_string()),
                ("INGEST_PORT", ingest.to_string()),
                ("INFER_PORT", infer.to_string()),
            ],
        )
        .await;
        let h1 = reqwest::Client::builder()
            .no_proxy()
            .http1_only()
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap();
        let h2 = reqwest::Client::builder()
            .no_proxy()
            .http2_prior_knowledge()
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap();
        Stack {
            fake,
            authz,
            upstream,
            envoy,
            query,
            ingest,
            infer,
            minter,
            showcase_query,
            showcase_ingest,
            payments_query,
            h1,
            h2,
        }
    }

    /// A new token for an existing SA, registered with the fake API but never seen by
    /// tenant-authz (so not cached).
    fn fresh_token(&mut self, ns: &str, name: &str) -> String {
        let t = self.minter.token(ns, name);
        self.fake.add_token(&t, FakeUser::service_account(ns, name));
        t
    }

    async fn send(
        &self,
        port: u16,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        h2: bool,
        body: Vec<u8>,
    ) -> Reply {
        let client = if h2 { &self.h2 } else { &self.h1 };
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = client
            .request(method.clone(), format!("http://127.0.0.1:{port}{path}"))
            .body(body);
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path} on :{port}: {e}\n{}", self.diag()));
        let status = resp.status().as_u16();
        let version = resp.version();
        let headers = resp
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = resp.text().await.unwrap_or_default();
        Reply {
            status,
            version,
            headers,
            body,
        }
    }

    async fn get(&self, port: u16, path: &str, headers: &[(&str, &str)], h2: bool) -> Reply {
        self.send(port, "GET", path, headers, h2, Vec::new()).await
    }

    /// OTLP/HTTP protobuf POST (empty body).
    async fn otlp_http(&self, port: u16, path: &str, token: &str, tenant: &str) -> Reply {
        let auth = bearer(token);
        self.send(
            port,
            "POST",
            path,
            &[
                ("authorization", &auth),
                ("x-scope-orgid", tenant),
                ("content-type", "application/x-protobuf"),
            ],
            false,
            Vec::new(),
        )
        .await
    }

    /// The tails of both logs, for failure messages.
    fn diag(&self) -> String {
        fn tail(s: &str, n: usize) -> &str {
            let mut start = s.len().saturating_sub(n);
            while !s.is_char_boundary(start) {
                start += 1;
            }
            &s[start..]
        }
        format!(
            "--- tenant-authz log (tail) ---\n{}\n--- envoy log (tail) ---\n{}\n--- access log ---\n{}",
            tail(&self.authz.log(), 6000),
            tail(&self.envoy.log(), 3000),
            tail(&self.envoy.access_log(), 4000)
        )
    }

    fn requests(&self) -> Vec<Recorded> {
        self.upstream.requests()
    }

    /// The access log entry whose `path` is exactly `path` (waits for it to be flushed).
    async fn access_entry(&self, path: &str) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(e) = self
                .envoy
                .access_log_entries()
                .into_iter()
                .find(|e| e["path"] == path)
            {
                return e;
            }
            if std::time::Instant::now() > deadline {
                panic!("no access log entry for {path}\n{}", self.diag());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

// ------------------------------------------------------------------------------ gRPC helpers

fn metadata(token: Option<&str>, tenant: &str) -> MetadataMap {
    let mut md = MetadataMap::new();
    if let Some(t) = token {
        md.insert(
            "authorization",
            AsciiMetadataValue::try_from(bearer(t)).unwrap(),
        );
    }
    md.insert(
        "x-scope-orgid",
        AsciiMetadataValue::try_from(tenant).unwrap(),
    );
    md
}

fn one_span() -> SpanData {
    let now = SystemTime::now();
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes([7; 16]),
            SpanId::from_bytes([3; 8]),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: SpanId::INVALID,
        parent_span_is_remote: false,
        span_kind: SpanKind::Server,
        name: "GET /checkout".into(),
        start_time: now - Duration::from_millis(5),
        end_time: now,
        attributes: vec![KeyValue::new("http.request.method", "GET")],
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: SpanStatus::Ok,
        instrumentation_scope: InstrumentationScope::builder("tenant-authz-e2e").build(),
    }
}

/// Exports one span with the real OTLP gRPC exporter (no retries); `Err` is the error text.
async fn otlp_grpc_export(port: u16, token: Option<&str>, tenant: &str) -> Result<(), String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://127.0.0.1:{port}"))
        .with_metadata(metadata(token, tenant))
        .with_timeout(Duration::from_secs(10))
        .with_retry_policy(RetryPolicy::disabled())
        .build()
        .expect("build OTLP gRPC exporter");
    exporter
        .export(vec![one_span()])
        .await
        .map_err(|e| format!("{e} / {e:?}"))
}

/// One raw `TraceService/Export` unary call with an empty request (an empty
/// `ExportTraceServiceRequest` encodes like `()`), through tonic over h2c.
async fn raw_grpc_export(
    port: u16,
    token: Option<&str>,
    tenant: &str,
) -> Result<(), tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("connect h2c to Envoy");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("gRPC channel ready");
    let mut req = tonic::Request::new(());
    *req.metadata_mut() = metadata(token, tenant);
    grpc.unary(
        req,
        tonic::codegen::http::uri::PathAndQuery::from_static(EXPORT_PATH),
        tonic_prost::ProstCodec::<(), ()>::default(),
    )
    .await
    .map(|_| ())
}

// ------------------------------------------------------------------------------ leak scan

/// Every place a token must never show up: `(source name, text)`. Findings name the source,
/// the token index and what matched, never the token.
fn scan_for_tokens(tokens: &[(String, String)], sources: &[(String, String)]) -> Vec<String> {
    // Every 12-byte window of every token -> (token index, offset).
    let mut windows: HashMap<&[u8], Vec<(usize, usize)>> = HashMap::new();
    for (i, (_, token)) in tokens.iter().enumerate() {
        assert!(token.len() >= 2 * WINDOW, "token #{i} too short to scan");
        for (off, w) in token.as_bytes().windows(WINDOW).enumerate() {
            windows.entry(w).or_default().push((i, off));
        }
    }
    let mut findings = Vec::new();
    for (source, text) in sources {
        for (i, (label, token)) in tokens.iter().enumerate() {
            let prefix = &token[..WINDOW];
            let suffix = &token[token.len() - WINDOW..];
            if text.contains(token.as_str()) {
                findings.push(format!("{source}: token #{i} ({label}) appears in full"));
            }
            if text.contains(prefix) {
                findings.push(format!(
                    "{source}: token #{i} ({label}) 12-char prefix appears"
                ));
            }
            if text.contains(suffix) {
                findings.push(format!(
                    "{source}: token #{i} ({label}) 12-char suffix appears"
                ));
            }
        }
        // Any other 12-byte piece (first hit per token is enough).
        let mut seen = vec![false; tokens.len()];
        for (text_off, w) in text.as_bytes().windows(WINDOW).enumerate() {
            if let Some(hits) = windows.get(w) {
                for &(i, off) in hits {
                    if !seen[i] {
                        seen[i] = true;
                        findings.push(format!(
                            "{source}: a 12-char piece of token #{i} ({}) at token offset {off} \
                             appears at byte {text_off}",
                            tokens[i].0
                        ));
                    }
                }
            }
        }
    }
    findings
}

// ------------------------------------------------------------------------------ tests

/// Allowed query over HTTP/1.1 and h2c: the upstream sees exactly one canonical tenant header
/// and no Authorization header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_allowed_reaches_tempo_with_tenant_and_without_token() {
    let s = Stack::new(1).await;
    let auth = bearer(&s.showcase_query);
    let headers = [
        ("authorization", auth.as_str()),
        ("x-scope-orgid", "showcase"),
    ];

    let r = s.get(s.query, "/api/search?tags=x", &headers, false).await;
    assert_eq!(r.status, 200, "h1: {r:?}\n{}", s.diag());
    assert_eq!(r.version, reqwest::Version::HTTP_11);
    assert_eq!(r.body, "ok");

    let r = s.get(s.query, "/api/search?tags=y", &headers, true).await;
    assert_eq!(r.status, 200, "h2c: {r:?}\n{}", s.diag());
    assert_eq!(r.version, reqwest::Version::HTTP_2);

    let reqs = s.requests();
    assert_eq!(reqs.len(), 2, "{reqs:#?}");
    for (req, (version, pq)) in reqs.iter().zip([
        ("HTTP/1.1", "/api/search?tags=x"),
        ("HTTP/2.0", "/api/search?tags=y"),
    ]) {
        assert_eq!(req.version, version, "{req:#?}");
        assert_eq!(req.method, "GET");
        assert_eq!(req.path_and_query, pq);
        assert_eq!(
            req.header_all("x-scope-orgid"),
            vec!["showcase"],
            "{req:#?}"
        );
        assert!(
            req.header_all("authorization").is_empty(),
            "the token must not reach Tempo ({version})"
        );
    }

    // Envoy's access log carries the decision from the dynamic metadata.
    let e = s.access_entry("/api/search?tags=x").await;
    assert_eq!(e["response_code"], 200, "{e}");
    assert_eq!(e["authz_decision"], "allow", "{e}");
    assert_eq!(e["authz_user"], SHOWCASE_QUERY, "{e}");
    assert_eq!(e["authz_tenants"], "showcase", "{e}");
    assert_eq!(e["authz_action"], "read", "{e}");
    assert_eq!(e["authz_reason"], "ok", "{e}");
    let e = s.access_entry("/api/search?tags=y").await;
    assert_eq!(e["protocol"], "HTTP/2", "{e}");
    assert_eq!(e["authz_decision"], "allow", "{e}");
}

/// The tenant header upstream is set by tenant-authz with OVERWRITE_IF_EXISTS_OR_ADD: the client
/// already sent it, so an append would reach Tempo as two values. Exactly one value, the
/// canonical one, also for a cross-tenant query, over HTTP/1.1 and h2c.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tenant_header_is_overwritten_not_appended() {
    let s = Stack::new(2).await;
    s.fake
        .grant(Subject::User(SHOWCASE_QUERY.into()), "payments", "get");
    let auth = bearer(&s.showcase_query);

    for h2 in [false, true] {
        let r = s
            .get(
                s.query,
                "/api/search?one",
                &[("authorization", &auth), ("X-Scope-OrgID", "showcase")],
                h2,
            )
            .await;
        assert_eq!(r.status, 200, "h2={h2} {r:?}\n{}", s.diag());

        let r = s
            .get(
                s.query,
                "/api/search?cross",
                &[
                    ("authorization", &auth),
                    ("X-Scope-OrgID", "showcase|payments"),
                ],
                h2,
            )
            .await;
        assert_eq!(r.status, 200, "h2={h2} cross-tenant {r:?}\n{}", s.diag());
    }

    let reqs = s.requests();
    assert_eq!(reqs.len(), 4, "{reqs:#?}");
    for req in &reqs {
        let expected = if req.path_and_query.ends_with("cross") {
            "showcase|payments"
        } else {
            "showcase"
        };
        assert_eq!(
            req.header_all("x-scope-orgid"),
            vec![expected],
            "exactly one canonical tenant header upstream: {req:#?}"
        );
        assert!(req.header_all("authorization").is_empty(), "{req:#?}");
    }
    let e = s.access_entry("/api/search?cross").await;
    assert_eq!(e["authz_tenants"], "showcase|payments", "{e}");
}

/// The denial contract as the client sees it through Envoy: status, challenge, body; the
/// upstream sees none of it; the access log records the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_statuses_through_envoy() {
    let mut s = Stack::new(3).await;
    let unknown = s.minter.token("showcase", "query"); // never registered
    let q = bearer(&s.showcase_query);
    let unk = bearer(&unknown);
    let pq = bearer(&s.payments_query);

    struct Case<'a> {
        tag: &'a str,
        headers: Vec<(&'a str, &'a str)>,
        status: u16,
        reason: &'a str,
        body_has: &'a [&'a str],
        challenge: bool,
    }
    let cases = [
        Case {
            tag: "no-token",
            headers: vec![("x-scope-orgid", "showcase")],
            status: 401,
            reason: "missing_credentials",
            body_has: &["missing credentials", "Bearer"],
            challenge: true,
        },
        Case {
            tag: "basic",
            headers: vec![
                ("authorization", "Basic dXNlcjpwYXNzd29yZA=="),
                ("x-scope-orgid", "showcase"),
            ],
            status: 401,
            reason: "malformed_credentials",
            body_has: &["malformed credentials", "Bearer"],
            challenge: true,
        },
        Case {
            tag: "unknown-token",
            headers: vec![("authorization", &unk), ("x-scope-orgid", "showcase")],
            status: 401,
            reason: "unauthenticated",
            body_has: &["TokenReview"],
            challenge: true,
        },
        Case {
            tag: "bad-tenant",
            headers: vec![("authorization", &q), ("x-scope-orgid", "Team-A")],
            status: 400,
            reason: "bad_tenant",
            body_has: &["bad tenant", "namespace name", "contains 'T'"],
            challenge: false,
        },
        Case {
            tag: "no-tenant",
            headers: vec![("authorization", &q)],
            status: 400,
            reason: "bad_tenant",
            body_has: &["bad tenant", "x-scope-orgid"],
            challenge: false,
        },
        Case {
            tag: "other-tenant",
            headers: vec![("authorization", &q), ("x-scope-orgid", "payments")],
            status: 403,
            reason: "forbidden",
            body_has: &[SHOWCASE_QUERY, "tenant \"payments\"", "read"],
            challenge: false,
        },
        Case {
            tag: "payments-sa-on-showcase",
            headers: vec![("authorization", &pq), ("x-scope-orgid", "showcase")],
            status: 403,
            reason: "forbidden",
            body_has: &[PAYMENTS_QUERY, "tenant \"showcase\"", "\"get\""],
            challenge: false,
        },
        Case {
            tag: "cross-one-denied",
            headers: vec![
                ("authorization", &q),
                ("x-scope-orgid", "showcase|payments"),
            ],
            status: 403,
            reason: "forbidden",
            body_has: &["tenant \"payments\""],
            challenge: false,
        },
        Case {
            tag: "two-tenant-headers",
            headers: vec![
                ("authorization", &q),
                ("x-scope-orgid", "showcase"),
                ("x-scope-orgid", "payments"),
            ],
            status: 400,
            reason: "bad_tenant",
            body_has: &["bad tenant", "more than once"],
            challenge: false,
        },
    ];

    for h2 in [false, true] {
        for c in &cases {
            let path = format!("/api/search?case={}&h2={h2}", c.tag);
            let r = s.get(s.query, &path, &c.headers, h2).await;
            assert_eq!(r.status, c.status, "{}: {r:?}\n{}", c.tag, s.diag());
            for needle in c.body_has {
                assert!(
                    r.body.contains(needle),
                    "{}: body {:?} should mention {needle:?}",
                    c.tag,
                    r.body
                );
            }
            assert!(r.body.ends_with('\n'), "{}: {:?}", c.tag, r.body);
            assert!(
                r.header("content-type")
                    .is_some_and(|ct| ct.starts_with("text/plain")),
                "{}: {r:?}",
                c.tag
            );
            let challenge = r.header("www-authenticate");
            if c.challenge {
                assert!(
                    challenge.is_some_and(|v| v.starts_with("Bearer")),
                    "{}: 401 needs a Bearer challenge: {r:?}",
                    c.tag
                );
            } else {
                assert!(challenge.is_none(), "{}: {r:?}", c.tag);
            }
            let e = s.access_entry(&path).await;
            assert_eq!(e["response_code"], c.status, "{}: {e}", c.tag);
            assert_eq!(e["authz_decision"], "deny", "{}: {e}", c.tag);
            assert_eq!(e["authz_reason"], c.reason, "{}: {e}", c.tag);
            assert_eq!(e["response_flags"], "UAEX", "{}: {e}", c.tag);
            assert!(e["upstream_host"].is_null(), "{}: {e}", c.tag);
        }
    }

    assert!(
        s.requests().is_empty(),
        "the upstream must see no denied request: {:#?}",
        s.requests()
    );

    // The unknown token is remembered as rejected (negative cache): the same answer again.
    let r = s
        .get(
            s.query,
            "/api/search?case=unknown-again",
            &[("authorization", &unk), ("x-scope-orgid", "showcase")],
            false,
        )
        .await;
    assert_eq!(r.status, 401);
}

/// OTLP/HTTP on the ingest listener needs `create` (write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_listener_requires_write() {
    let s = Stack::new(4).await;

    let r = s
        .otlp_http(s.ingest, "/v1/traces", &s.showcase_ingest, "showcase")
        .await;
    assert_eq!(r.status, 200, "{r:?}\n{}", s.diag());
    let reqs = s.requests();
    assert_eq!(reqs.len(), 1, "{reqs:#?}");
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].path, "/v1/traces");
    assert_eq!(reqs[0].header_all("x-scope-orgid"), vec!["showcase"]);
    assert!(reqs[0].header_all("authorization").is_empty());
    let e = s.access_entry("/v1/traces").await;
    assert_eq!(e["authz_action"], "write", "{e}");
    assert_eq!(e["authz_user"], SHOWCASE_INGEST, "{e}");

    s.upstream.clear();
    let r = s
        .otlp_http(s.ingest, "/v1/traces?q=1", &s.showcase_query, "showcase")
        .await;
    assert_eq!(r.status, 403, "{r:?}\n{}", s.diag());
    assert!(r.body.contains("may not write"), "{}", r.body);
    assert!(r.body.contains("\"create\""), "{}", r.body);

    // A read on the ingest listener is still a write: the query SA gets 403 for GET too.
    let auth = bearer(&s.showcase_query);
    let r = s
        .get(
            s.ingest,
            "/api/search",
            &[("authorization", &auth), ("x-scope-orgid", "showcase")],
            false,
        )
        .await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(s.requests().is_empty(), "{:#?}", s.requests());
}

/// A real OTLP gRPC exporter through Envoy: denials arrive as gRPC statuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_grpc_exporter_sees_grpc_statuses() {
    let mut s = Stack::new(5).await;

    otlp_grpc_export(s.ingest, Some(&s.showcase_ingest), "showcase")
        .await
        .unwrap_or_else(|e| panic!("allowed export failed: {e}\n{}", s.diag()));
    let reqs = s.requests();
    assert_eq!(reqs.len(), 1, "{reqs:#?}");
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, EXPORT_PATH);
    assert_eq!(r.version, "HTTP/2.0");
    assert!(r
        .header("content-type")
        .is_some_and(|ct| ct.starts_with("application/grpc")));
    assert_eq!(r.header_all("x-scope-orgid"), vec!["showcase"], "{r:#?}");
    assert!(r.header_all("authorization").is_empty(), "{r:#?}");
    assert!(r.body_len > 5, "the span reached the upstream: {r:#?}");
    s.upstream.clear();

    let err = otlp_grpc_export(s.ingest, Some(&s.showcase_query), "showcase")
        .await
        .expect_err("query SA must not ingest");
    assert!(err.contains("PermissionDenied"), "{err}");

    let err = otlp_grpc_export(s.ingest, None, "showcase")
        .await
        .expect_err("no token");
    assert!(err.contains("Unauthenticated"), "{err}");

    let unknown = s.minter.token("showcase", "ingest");
    let err = otlp_grpc_export(s.ingest, Some(&unknown), "showcase")
        .await
        .expect_err("unknown token");
    assert!(err.contains("Unauthenticated"), "{err}");

    s.fake.set_fault(Fault::Status500);
    let fresh = s.fresh_token("showcase", "ingest");
    let err = otlp_grpc_export(s.ingest, Some(&fresh), "showcase")
        .await
        .expect_err("API down");
    assert!(err.contains("Unavailable"), "{err}");
    s.fake.set_fault(Fault::None);

    assert!(s.requests().is_empty(), "{:#?}", s.requests());
    // Envoy turned each denial into a gRPC status (HTTP 200, trailers-only) and logged it.
    let entries = s.envoy.wait_access_log(5, Duration::from_secs(10)).await;
    let got: Vec<(Option<u64>, String, String)> = entries
        .iter()
        .map(|e| {
            (
                e["grpc_status"].as_u64(),
                e["authz_decision"].as_str().unwrap_or("-").to_string(),
                e["authz_reason"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    let want: Vec<(Option<u64>, String, String)> = [
        (0, "allow", "ok"),
        (7, "deny", "forbidden"),
        (16, "deny", "missing_credentials"),
        (16, "deny", "unauthenticated"),
        (14, "deny", "unavailable"),
    ]
    .iter()
    .map(|(c, d, r)| (Some(*c), d.to_string(), r.to_string()))
    .collect();
    assert_eq!(got, want, "{}", s.envoy.access_log());
}

/// The same through a raw tonic client: the gRPC code itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_grpc_client_sees_status_codes() {
    let mut s = Stack::new(55).await;

    raw_grpc_export(s.ingest, Some(&s.showcase_ingest), "showcase")
        .await
        .unwrap_or_else(|st| panic!("allowed: {st:?}\n{}", s.diag()));
    assert_eq!(s.requests().len(), 1);
    s.upstream.clear();

    let st = raw_grpc_export(s.ingest, Some(&s.showcase_query), "showcase")
        .await
        .expect_err("query SA may not write");
    assert_eq!(st.code(), tonic::Code::PermissionDenied, "{st:?}");
    assert!(st.message().contains("may not write"), "{st:?}");

    let st = raw_grpc_export(s.ingest, None, "showcase")
        .await
        .expect_err("no token");
    assert_eq!(st.code(), tonic::Code::Unauthenticated, "{st:?}");

    let unknown = s.minter.token("showcase", "ingest");
    let st = raw_grpc_export(s.ingest, Some(&unknown), "showcase")
        .await
        .expect_err("unknown token");
    assert_eq!(st.code(), tonic::Code::Unauthenticated, "{st:?}");

    let st = raw_grpc_export(s.ingest, Some(&s.showcase_ingest), "payments")
        .await
        .expect_err("other tenant");
    assert_eq!(st.code(), tonic::Code::PermissionDenied, "{st:?}");

    s.fake.set_fault(Fault::Status500);
    let fresh = s.fresh_token("showcase", "ingest");
    let st = raw_grpc_export(s.ingest, Some(&fresh), "showcase")
        .await
        .expect_err("API down");
    assert_eq!(st.code(), tonic::Code::Unavailable, "{st:?}");
    assert!(st.message().contains("cannot decide"), "{st:?}");
    // The cached allow still works during the outage.
    raw_grpc_export(s.ingest, Some(&s.showcase_ingest), "showcase")
        .await
        .unwrap_or_else(|st| panic!("cached allow during outage: {st:?}\n{}", s.diag()));
    s.fake.set_fault(Fault::None);
    assert_eq!(s.requests().len(), 1, "{:#?}", s.requests());
}

/// Without context extensions tenant-authz infers the action from method + path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inferred_action_on_a_listener_without_context_extensions() {
    let s = Stack::new(6).await;
    let q = bearer(&s.showcase_query);
    let qh = [("authorization", q.as_str()), ("x-scope-orgid", "showcase")];

    let r = s.get(s.infer, "/api/search?tags=a", &qh, false).await;
    assert_eq!(r.status, 200, "{r:?}\n{}", s.diag());

    let r = s
        .otlp_http(s.infer, "/v1/traces", &s.showcase_query, "showcase")
        .await;
    assert_eq!(r.status, 403, "POST /v1/traces is a write: {r:?}");
    assert!(r.body.contains("may not write"), "{}", r.body);

    let st = raw_grpc_export(s.infer, Some(&s.showcase_query), "showcase")
        .await
        .expect_err("gRPC Export is a write");
    assert_eq!(st.code(), tonic::Code::PermissionDenied, "{st:?}");

    let r = s
        .send(s.infer, "PUT", "/api/overrides", &qh, false, b"{}".to_vec())
        .await;
    assert_eq!(r.status, 403, "PUT /api/overrides is manage: {r:?}");
    assert!(r.body.contains("may not manage"), "{}", r.body);
    assert!(r.body.contains("\"update\""), "{}", r.body);

    let r = s
        .send(s.infer, "POST", "/api/search", &qh, true, Vec::new())
        .await;
    assert_eq!(r.status, 200, "POST /api/search is a read: {r:?}");

    let r = s
        .otlp_http(s.infer, "/v1/traces?x=1", &s.showcase_ingest, "showcase")
        .await;
    assert_eq!(r.status, 200, "ingest SA writes: {r:?}\n{}", s.diag());

    let raw = raw_grpc_export(s.infer, Some(&s.showcase_ingest), "showcase").await;
    assert!(raw.is_ok(), "ingest SA gRPC export: {raw:?}");

    let i = bearer(&s.showcase_ingest);
    let r = s
        .get(
            s.infer,
            "/api/search",
            &[("authorization", &i), ("x-scope-orgid", "showcase")],
            false,
        )
        .await;
    assert_eq!(r.status, 403, "ingest SA may not read: {r:?}");
    assert!(r.body.contains("may not read"), "{}", r.body);

    let seen: Vec<(String, String)> = s
        .requests()
        .iter()
        .map(|r| (r.method.clone(), r.path_and_query.clone()))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("GET".to_string(), "/api/search?tags=a".to_string()),
            ("POST".to_string(), "/api/search".to_string()),
            ("POST".to_string(), "/v1/traces?x=1".to_string()),
            ("POST".to_string(), EXPORT_PATH.to_string()),
        ]
    );
    let e = s.access_entry("/v1/traces?x=1").await;
    assert_eq!(e["authz_action"], "write", "{e}");
    let e = s.access_entry("/api/overrides").await;
    assert_eq!(e["authz_reason"], "forbidden", "{e}");
}

/// Kubernetes API outages fail closed (503 + reason), cached allows keep working, and a dead
/// tenant-authz makes Envoy answer 503 without reaching the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_outage_fails_closed_with_503() {
    let mut s = Stack::new(7).await;
    let cached = bearer(&s.showcase_query);
    let ch = [
        ("authorization", cached.as_str()),
        ("x-scope-orgid", "showcase"),
    ];
    let r = s.get(s.query, "/api/search?warm", &ch, false).await;
    assert_eq!(r.status, 200, "{r:?}\n{}", s.diag());

    for (fault, tag) in [
        (Fault::Status500, "status500"),
        (Fault::CloseConnection, "close"),
    ] {
        s.fake.set_fault(fault);
        let fresh = s.fresh_token("showcase", "query");
        let fresh = bearer(&fresh);
        for h2 in [false, true] {
            let path = format!("/api/search?fault={tag}&h2={h2}");
            let r = s
                .get(
                    s.query,
                    &path,
                    &[("authorization", &fresh), ("x-scope-orgid", "showcase")],
                    h2,
                )
                .await;
            assert_eq!(r.status, 503, "{tag}: {r:?}\n{}", s.diag());
            assert!(r.body.contains("cannot decide"), "{tag}: {:?}", r.body);
            assert!(r.header("retry-after").is_some(), "{tag}: {r:?}");
            let e = s.access_entry(&path).await;
            assert_eq!(e["authz_decision"], "deny", "{e}");
            assert_eq!(e["authz_reason"], "unavailable", "{e}");
        }
        let r = s
            .get(s.query, &format!("/api/search?cached={tag}"), &ch, false)
            .await;
        assert_eq!(
            r.status,
            200,
            "cached allow during {tag}: {r:?}\n{}",
            s.diag()
        );
    }
    s.fake.set_fault(Fault::None);

    let seen: Vec<String> = s
        .requests()
        .iter()
        .map(|r| r.path_and_query.clone())
        .collect();
    assert_eq!(
        seen,
        vec![
            "/api/search?warm",
            "/api/search?cached=status500",
            "/api/search?cached=close"
        ],
        "only allowed requests reach the upstream"
    );
    s.upstream.clear();

    // tenant-authz dies: Envoy fails closed (status_on_error 503).
    s.authz.signal("KILL");
    s.authz.wait_exit(Duration::from_secs(10)).await;
    for h2 in [false, true] {
        let r = s
            .get(s.query, &format!("/api/search?dead&h2={h2}"), &ch, h2)
            .await;
        assert_eq!(r.status, 503, "authz down, h2={h2}: {r:?}\n{}", s.diag());
    }
    let r = s
        .otlp_http(s.ingest, "/v1/traces", &s.showcase_ingest, "showcase")
        .await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(s.requests().is_empty(), "{:#?}", s.requests());
}

/// The security test: drive every path, then scan every log, metric, upstream request and
/// client-visible answer for any piece of any token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_fragment_leaks_anywhere() {
    let mut s = Stack::new(8).await;
    let mut tokens: Vec<(String, String)> = Vec::new();
    let mut client_seen: Vec<String> = Vec::new();

    let allow_h1 = s.fresh_token("showcase", "query");
    let allow_h2 = s.fresh_token("showcase", "query");
    let bad_tenant = s.fresh_token("showcase", "query");
    let unknown = s.minter.token("showcase", "query");
    let malformed = s.fresh_token("showcase", "query");
    let forbidden = s.fresh_token("showcase", "query");
    let otlp_allowed = s.fresh_token("showcase", "ingest");
    let otlp_denied = s.fresh_token("showcase", "query");
    let grpc_unknown = s.minter.token("showcase", "ingest");
    let huge = s.minter.token_with_signature("showcase", "query", 13_000);
    s.fake
        .add_token(&huge, FakeUser::service_account("showcase", "query"));
    assert!(huge.len() > 16 * 1024, "{}", huge.len());

    macro_rules! expect {
        ($reply:expr, $status:expr, $what:expr) => {{
            let r = $reply;
            assert_eq!(r.status, $status, "{}: status {}", $what, r.status);
            client_seen.push(r.transcript());
        }};
    }

    let h = |t: &str| bearer(t);
    for (tok, h2, label) in [
        (&allow_h1, false, "allow h1"),
        (&allow_h2, true, "allow h2c"),
    ] {
        let a = h(tok);
        let r = s
            .get(
                s.query,
                "/api/search?tags=a",
                &[("authorization", &a), ("x-scope-orgid", "showcase")],
                h2,
            )
            .await;
        expect!(r, 200, label);
        // Second time: a cached allow (logged at debug).
        let r = s
            .get(
                s.query,
                "/api/search?tags=b",
                &[("authorization", &a), ("x-scope-orgid", "showcase")],
                h2,
            )
            .await;
        expect!(r, 200, label);
        tokens.push((label.to_string(), tok.clone()));
    }

    let a = h(&bad_tenant);
    let r = s
        .get(
            s.query,
            "/api/search",
            &[("authorization", &a), ("x-scope-orgid", "Team-A")],
            false,
        )
        .await;
    expect!(r, 400, "bad tenant");
    tokens.push(("400 bad tenant".into(), bad_tenant.clone()));

    let a = h(&unknown);
    for h2 in [false, true] {
        let r = s
            .get(
                s.query,
                "/api/search",
                &[("authorization", &a), ("x-scope-orgid", "showcase")],
                h2,
            )
            .await;
        expect!(r, 401, "unknown token");
    }
    tokens.push(("401 unknown".into(), unknown.clone()));

    let a = format!("Bearer {malformed} extra");
    let r = s
        .get(
            s.query,
            "/api/search",
            &[("authorization", &a), ("x-scope-orgid", "showcase")],
            false,
        )
        .await;
    expect!(r, 401, "malformed");
    // A bare token without a scheme.
    let r = s
        .get(
            s.query,
            "/api/search",
            &[("authorization", &malformed), ("x-scope-orgid", "showcase")],
            true,
        )
        .await;
    expect!(r, 401, "bare token");
    tokens.push(("401 malformed".into(), malformed.clone()));

    let a = h(&forbidden);
    let r = s
        .get(
            s.query,
            "/api/search",
            &[
                ("authorization", &a),
                ("x-scope-orgid", "showcase|payments"),
            ],
            false,
        )
        .await;
    expect!(r, 403, "forbidden");
    tokens.push(("403 forbidden".into(), forbidden.clone()));

    let a = h(&huge);
    let r = s
        .get(
            s.query,
            "/api/search",
            &[("authorization", &a), ("x-scope-orgid", "showcase")],
            false,
        )
        .await;
    expect!(r, 401, "token over 16 KiB");
    tokens.push(("401 over 16 KiB".into(), huge.clone()));

    let r = s
        .otlp_http(s.ingest, "/v1/traces", &otlp_allowed, "showcase")
        .await;
    expect!(r, 200, "OTLP/HTTP allowed");
    match otlp_grpc_export(s.ingest, Some(&otlp_allowed), "showcase").await {
        Ok(()) => {}
        Err(e) => panic!("OTLP gRPC allowed export failed: {e}"),
    }
    tokens.push(("OTLP allowed".into(), otlp_allowed.clone()));

    let err = otlp_grpc_export(s.ingest, Some(&otlp_denied), "showcase")
        .await
        .expect_err("OTLP denied");
    client_seen.push(err);
    let st = raw_grpc_export(s.ingest, Some(&otlp_denied), "showcase")
        .await
        .expect_err("raw gRPC denied");
    assert_eq!(st.code(), tonic::Code::PermissionDenied);
    client_seen.push(format!("{st:?}\n{}", st.message()));
    tokens.push(("OTLP denied".into(), otlp_denied.clone()));

    let st = raw_grpc_export(s.ingest, Some(&grpc_unknown), "showcase")
        .await
        .expect_err("raw gRPC unknown");
    assert_eq!(st.code(), tonic::Code::Unauthenticated);
    client_seen.push(format!("{st:?}\n{}", st.message()));
    tokens.push(("gRPC unknown".into(), grpc_unknown.clone()));

    // Outage: 503 with a token tenant-authz has never seen (both faults).
    for fault in [Fault::Status500, Fault::CloseConnection] {
        s.fake.set_fault(fault);
        let fresh = s.fresh_token("showcase", "query");
        let a = h(&fresh);
        let r = s
            .get(
                s.query,
                "/api/search",
                &[("authorization", &a), ("x-scope-orgid", "showcase")],
                false,
            )
            .await;
        expect!(r, 503, format!("{fault:?}"));
        let st = raw_grpc_export(s.ingest, Some(&fresh), "showcase")
            .await
            .expect_err("gRPC during outage");
        assert_eq!(st.code(), tonic::Code::Unavailable);
        client_seen.push(format!("{st:?}\n{}", st.message()));
        tokens.push((format!("503 {fault:?}"), fresh));
    }
    s.fake.set_fault(Fault::None);

    // Let Envoy flush the access log (the 20 requests through Envoy so far).
    let entries = s.envoy.wait_access_log(20, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Every path was really exercised (each denial reached tenant-authz and was decided there).
    for reason in [
        "ok",
        "bad_tenant",
        "unauthenticated",
        "malformed_credentials",
        "forbidden",
        "token_too_long",
        "unavailable",
    ] {
        assert!(
            entries.iter().any(|e| e["authz_reason"] == reason),
            "no access log entry with authz_reason={reason}"
        );
    }

    let upstream_text: String = s
        .requests()
        .iter()
        .map(|r| {
            let mut t = format!("{} {} {}\n", r.method, r.path_and_query, r.version);
            for (n, v) in &r.headers {
                t.push_str(&format!("{n}: {v}\n"));
            }
            t
        })
        .collect();
    assert!(
        !upstream_text.is_empty(),
        "the allowed requests reached the upstream"
    );
    let authz_log = s.authz.log();
    assert!(
        authz_log.contains("DEBUG") || authz_log.contains("debug"),
        "RUST_LOG=debug took effect"
    );
    let sources = vec![
        ("tenant-authz log".to_string(), authz_log),
        ("tenant-authz /metrics".to_string(), s.authz.metrics().await),
        ("envoy access log".to_string(), s.envoy.access_log()),
        ("envoy log".to_string(), s.envoy.log()),
        ("upstream requests".to_string(), upstream_text),
        (
            "client-visible responses".to_string(),
            client_seen.join("\n"),
        ),
    ];
    let findings = scan_for_tokens(&tokens, &sources);
    assert!(
        findings.is_empty(),
        "token material leaked ({} findings):\n{}",
        findings.len(),
        findings.join("\n")
    );
}

/// Checks that need no Kubernetes call (a cached allow, a request without a token) must take a
/// few milliseconds through Envoy. Regression guard for the ext_authz gRPC connection: without
/// TCP_NODELAY on tenant-authz's accepted sockets, a CheckResponse written as two segments
/// (denials: headers+message, then the trailers frame) waits for Envoy's delayed ACK (~40 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_without_api_calls_take_milliseconds() {
    let s = Stack::new(9).await;
    let q = bearer(&s.showcase_query);
    let qh = [("authorization", q.as_str()), ("x-scope-orgid", "showcase")];
    let r = s.get(s.query, "/api/search?warm", &qh, false).await;
    assert_eq!(r.status, 200, "{r:?}\n{}", s.diag());
    const N: usize = 15;
    for i in 0..N {
        let r = s
            .get(s.query, &format!("/api/search?allow={i}"), &qh, false)
            .await;
        assert_eq!(r.status, 200);
        let r = s
            .get(
                s.query,
                &format!("/api/search?deny={i}"),
                &[("x-scope-orgid", "showcase")],
                false,
            )
            .await;
        assert_eq!(r.status, 401);
    }
    let entries = s
        .envoy
        .wait_access_log(1 + 2 * N, Duration::from_secs(10))
        .await;
    let median_of = |kind: &str| {
        let mut ms: Vec<u64> = entries
            .iter()
            .filter(|e| e["path"].as_str().is_some_and(|p| p.contains(kind)))
            .map(|e| e["duration_ms"].as_u64().expect("duration_ms"))
            .collect();
        assert_eq!(ms.len(), N, "{kind}");
        ms.sort_unstable();
        (ms[N / 2], ms)
    };
    let (allow, allow_all) = median_of("?allow=");
    let (deny, deny_all) = median_of("?deny=");
    assert!(
        allow < 20,
        "cached allows take {allow} ms (median) through Envoy: {allow_all:?}"
    );
    assert!(
        deny < 20,
        "401s without any Kubernetes call take {deny} ms (median) through Envoy, cached allows \
         {allow} ms: {deny_all:?} (TCP_NODELAY missing on tenant-authz's gRPC connections?)"
    );
}

/// The leak scanner itself finds a full token, its prefix, its suffix and an inner piece, and
/// does not print the token.
#[test]
fn leak_scan_finds_every_kind_of_fragment() {
    let mut m = Minter::new(99);
    let t0 = m.token("a", "b");
    let t1 = m.token("c", "d");
    let tokens = vec![
        ("zero".to_string(), t0.clone()),
        ("one".to_string(), t1.clone()),
    ];
    let clean = vec![(
        "clean".to_string(),
        "nothing to see: Bearer realm=\"tempo\"".to_string(),
    )];
    assert!(scan_for_tokens(&tokens, &clean).is_empty());
    let mid = t1.len() - 200;
    let sources = vec![
        ("full".to_string(), format!("x {t0} y")),
        ("prefix".to_string(), format!("x {} y", &t1[..WINDOW])),
        (
            "suffix".to_string(),
            format!("x {}", &t1[t1.len() - WINDOW..]),
        ),
        ("inner".to_string(), format!("{}!", &t1[mid..mid + WINDOW])),
    ];
    let findings = scan_for_tokens(&tokens, &sources);
    let joined = findings.join("\n");
    assert!(
        joined.contains("full: token #0 (zero) appears in full"),
        "{joined}"
    );
    assert!(
        joined.contains("prefix: token #1 (one) 12-char prefix"),
        "{joined}"
    );
    assert!(
        joined.contains("suffix: token #1 (one) 12-char suffix"),
        "{joined}"
    );
    assert!(
        joined.contains(&format!(
            "inner: a 12-char piece of token #1 (one) at token offset {mid}"
        )),
        "{joined}"
    );
    assert!(!joined.contains(&t0[..WINDOW]) && !joined.contains(&t1[mid..mid + WINDOW]));
    // Tokens look like real projected service-account tokens.
    assert!((900..1200).contains(&t0.len()), "{}", t0.len());
    assert_eq!(t0.split('.').count(), 3);
    assert!(t0.starts_with("eyJhbGciOiJSUzI1NiIs"));
    assert_ne!(t0[t0.len() - 40..], t1[t1.len() - 40..]);
}
