//! The seed's story, one request per row, through the real frontends: HTTPS queries the way
//! Grafana sends them, a real OpenTelemetry OTLP gRPC exporter over TLS, and an OTLP/HTTP
//! protobuf export.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hyper_util::rt::TokioIo;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status as SpanStatus, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{RetryPolicy, WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use prost::Message as _;
use serde_json::Value;
use tokio::net::TcpStream;
use tonic::codegen::http::Uri;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};

use crate::stack::{Frontend, Stack};
use crate::tls::TestCerts;

pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
pub const SEARCH: &str = "/api/search?tags=service.name%3Dcheckout";

/// A demo token from `examples/static.yaml` (only its SHA-256 is in the file).
#[derive(Clone, Copy)]
pub struct Token {
    /// Its name in the table.
    pub alias: &'static str,
    pub value: &'static str,
    /// Whose it is and what it may do.
    pub grants: &'static str,
}

pub const GRAFANA: Token = Token {
    alias: "grafana",
    value: "demo-showcase-grafana-token",
    grants: "showcase's Grafana: read showcase",
};
pub const COLLECTOR: Token = Token {
    alias: "collector",
    value: "demo-showcase-otel-collector-token",
    grants: "showcase's OTel Collector: write showcase",
};
pub const SRE: Token = Token {
    alias: "sre",
    value: "demo-sre-token",
    grants: "an SRE (group sre): read every tenant",
};
pub const PAYMENTS_GRAFANA: Token = Token {
    alias: "payments-grafana",
    value: "demo-payments-grafana-token",
    grants: "payments' Grafana: read payments",
};

/// What a row sends.
#[derive(Clone, Copy)]
pub enum Via {
    /// HTTPS to the query frontend.
    Query {
        method: &'static str,
        path: &'static str,
    },
    /// One span through the real OTLP gRPC exporter, TLS, to the ingest frontend.
    OtlpGrpc,
    /// `POST /v1/traces` (protobuf), TLS, to the ingest frontend.
    OtlpHttp,
}

/// A client-visible outcome: an HTTP status or a gRPC status name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Http(u16),
    Grpc(String),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Http(code) => write!(f, "{code}"),
            Outcome::Grpc(name) => f.write_str(name),
        }
    }
}

pub struct Row {
    pub request: &'static str,
    pub via: Via,
    pub token: Option<Token>,
    pub tenant: &'static str,
    pub expect: Outcome,
    /// `Some`: the decision must (not) have come from tenant-authz's cache.
    pub expect_cached: Option<bool>,
    /// The reason must contain this.
    pub reason_has: Option<&'static str>,
    /// Allowed rows: the one `x-scope-orgid` the stand-in Tempo must see.
    pub tempo_sees: Option<&'static str>,
}

/// The story.
pub fn rows() -> Vec<Row> {
    let search = Via::Query {
        method: "GET",
        path: SEARCH,
    };
    let http = |code| Outcome::Http(code);
    let grpc = |name: &str| Outcome::Grpc(name.to_string());
    let row = |request, via, token, tenant, expect| Row {
        request,
        via,
        token,
        tenant,
        expect,
        expect_cached: None,
        reason_has: None,
        tempo_sees: None,
    };
    vec![
        Row {
            expect_cached: Some(false),
            tempo_sees: Some("showcase"),
            ..row(
                "GET /api/search",
                search,
                Some(GRAFANA),
                "showcase",
                http(200),
            )
        },
        Row {
            expect_cached: Some(true),
            tempo_sees: Some("showcase"),
            ..row(
                "GET /api/search",
                search,
                Some(GRAFANA),
                "showcase",
                http(200),
            )
        },
        Row {
            reason_has: Some("tenant \"payments\""),
            ..row(
                "GET /api/search",
                search,
                Some(GRAFANA),
                "payments",
                http(403),
            )
        },
        Row {
            reason_has: Some("missing credentials"),
            ..row("GET /api/search", search, None, "showcase", http(401))
        },
        Row {
            reason_has: Some("bad tenant"),
            ..row(
                "GET /api/search",
                search,
                Some(GRAFANA),
                "Showcase",
                http(400),
            )
        },
        Row {
            reason_has: Some("tenant \"payments\""),
            ..row(
                "GET /api/search",
                search,
                Some(GRAFANA),
                "showcase|payments",
                http(403),
            )
        },
        Row {
            tempo_sees: Some("showcase|payments"),
            ..row(
                "GET /api/search",
                search,
                Some(SRE),
                "showcase|payments",
                http(200),
            )
        },
        Row {
            reason_has: Some("may not manage"),
            ..row(
                "PUT /api/overrides",
                Via::Query {
                    method: "PUT",
                    path: "/api/overrides",
                },
                Some(GRAFANA),
                "showcase",
                http(403),
            )
        },
        Row {
            tempo_sees: Some("showcase"),
            ..row(
                "OTLP/gRPC export",
                Via::OtlpGrpc,
                Some(COLLECTOR),
                "showcase",
                grpc("OK"),
            )
        },
        Row {
            reason_has: Some("may not write"),
            ..row(
                "OTLP/gRPC export",
                Via::OtlpGrpc,
                Some(GRAFANA),
                "showcase",
                grpc("PERMISSION_DENIED"),
            )
        },
        Row {
            tempo_sees: Some("showcase"),
            ..row(
                "OTLP/HTTP export",
                Via::OtlpHttp,
                Some(COLLECTOR),
                "showcase",
                http(200),
            )
        },
    ]
}

/// What happened to one row.
pub struct Result {
    pub got: std::result::Result<Outcome, String>,
    /// The denial's reason as the client got it (HTTP body's first line), or, for the OTLP
    /// exporter (which reports only the gRPC code), tenant-authz's decision log line for this
    /// request (joined by Envoy's x-request-id).
    pub reason: Option<String>,
    /// `authz_cached` from the frontend's access log entry for this request.
    pub cached: Option<bool>,
    /// Why the row does not match its expectation (empty: it matches).
    pub mismatches: Vec<String>,
}

pub struct Clients {
    https: reqwest::Client,
    certs: TestCerts,
}

impl Clients {
    pub fn new(certs: &TestCerts) -> std::result::Result<Clients, String> {
        let ca = reqwest::Certificate::from_pem(certs.ca_cert_pem.as_bytes())
            .map_err(|e| format!("demo CA: {e}"))?;
        let https = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(ca)
            .no_proxy()
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| format!("HTTPS client: {e}"))?;
        Ok(Clients {
            https,
            certs: certs.clone(),
        })
    }
}

/// Plays one row and checks it against its expectation.
///
/// The demo sends one request at a time, so the frontend's next access-log entry is this
/// request's (checked by method and path). Envoy replaces a client's `x-request-id`
/// (`use_remote_address: true`); the id it logs joins the entry with tenant-authz's log.
pub async fn play(stack: &Stack, clients: &Clients, row: &Row) -> Result {
    let frontend: &Frontend = match row.via {
        Via::Query { .. } => &stack.query,
        Via::OtlpGrpc | Via::OtlpHttp => &stack.ingest,
    };
    let before = frontend.access_log_entries().len();
    let token = row.token.map(|t| t.value);

    let (got, mut reason) = match row.via {
        Via::Query { method, path } => {
            let url = format!("https://127.0.0.1:{}{path}", stack.query_port);
            https(clients, method, &url, token, row.tenant, None).await
        }
        Via::OtlpHttp => {
            let url = format!("https://127.0.0.1:{}/v1/traces", stack.otlp_http_port);
            let body = Some(otlp_http_body());
            https(clients, "POST", &url, token, row.tenant, body).await
        }
        Via::OtlpGrpc => {
            let got =
                otlp_grpc_export(stack.otlp_grpc_port, &clients.certs, token, row.tenant).await;
            (got, None)
        }
    };

    // The frontend's access log entry for this request: the next one it writes.
    let entry = wait_entry(frontend, before).await;
    let cached = entry
        .as_ref()
        .and_then(|e| e["authz_cached"].as_str())
        .and_then(|c| c.parse::<bool>().ok());
    if reason.is_none() && matches!(&got, Ok(Outcome::Grpc(c)) if c != "OK") {
        // The exporter reports only the code; tenant-authz logged the message it sent.
        let rid = entry.as_ref().and_then(|e| e["request_id"].as_str());
        reason = rid.and_then(|rid| decision_detail(&stack.authz_log(), rid));
    }

    let mut mismatches = Vec::new();
    match &got {
        Ok(outcome) if *outcome == row.expect => {}
        Ok(outcome) => mismatches.push(format!("expected {}, got {outcome}", row.expect)),
        Err(e) => mismatches.push(format!("request failed: {e}")),
    }
    let (method, path) = match row.via {
        Via::Query { method, path } => (method, path.split('?').next().unwrap_or(path)),
        Via::OtlpGrpc => ("POST", EXPORT_PATH),
        Via::OtlpHttp => ("POST", "/v1/traces"),
    };
    match &entry {
        None => mismatches.push(format!("no {} access log entry within 5 s", frontend.file)),
        Some(e) if e["method"] != method || e["path"] != path => mismatches.push(format!(
            "the access log's next entry is {} {}, not {method} {path}",
            e["method"], e["path"]
        )),
        Some(_) => {}
    }
    if let Some(want) = row.expect_cached {
        if cached != Some(want) {
            mismatches.push(format!(
                "expected cached={want}, access log says {}",
                cached.map_or("nothing".to_string(), |c| c.to_string())
            ));
        }
    }
    if let Some(needle) = row.reason_has {
        if !reason.as_deref().is_some_and(|r| r.contains(needle)) {
            mismatches.push(format!("expected the reason to mention {needle}"));
        }
    }
    Result {
        got,
        reason,
        cached,
        mismatches,
    }
}

/// One HTTPS request as a Tempo client sends it: `(outcome, first line of a denial's body)`.
async fn https(
    clients: &Clients,
    method: &str,
    url: &str,
    token: Option<&str>,
    tenant: &str,
    protobuf: Option<Vec<u8>>,
) -> (std::result::Result<Outcome, String>, Option<String>) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = clients
        .https
        .request(method, url)
        .header("x-scope-orgid", tenant);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if let Some(body) = protobuf {
        req = req
            .header("content-type", "application/x-protobuf")
            .body(body);
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            let reason = (!status.is_success())
                .then(|| body.lines().next().unwrap_or("").trim().to_string())
                .filter(|r| !r.is_empty());
            (Ok(Outcome::Http(status.as_u16())), reason)
        }
        Err(e) => (Err(error_chain(&e)), None),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Waits (<= 5 s) for the access log entry after the first `before` ones.
async fn wait_entry(frontend: &Frontend, before: usize) -> Option<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(e) = frontend.access_log_entries().into_iter().nth(before) {
            return Some(e);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `detail` of tenant-authz's `check` log line for Envoy's request id `rid`.
pub fn decision_detail(log: &str, rid: &str) -> Option<String> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        // Fields at the top level (flattened) or under "fields".
        .map(|v| match v.get("fields") {
            Some(fields) if fields.is_object() => {
                let mut flat = fields.clone();
                flat["span"] = v["span"].clone();
                flat
            }
            _ => v,
        })
        // The request id is a field of the line (older builds put it on a `check` span).
        .filter(|v| {
            v["message"] == "check" && (v["request_id"] == rid || v["span"]["request_id"] == rid)
        })
        .find_map(|v| v["detail"].as_str().map(str::to_string))
}

// ------------------------------------------------------------------ OTLP over gRPC

/// tonic connector: TCP to 127.0.0.1:port, then TLS with rustls, trusting only the demo CA,
/// ALPN h2 (the ingest frontend's gRPC listener speaks only HTTP/2).
#[derive(Clone)]
struct TlsConnector {
    port: u16,
    config: Arc<rustls::ClientConfig>,
}

type TlsIo = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl tonic::codegen::Service<Uri> for TlsConnector {
    type Response = TlsIo;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<TlsIo>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let (port, config) = (self.port, self.config.clone());
        Box::pin(async move {
            let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("IP name");
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// Exports one span with the real OTLP gRPC exporter over TLS (no retries).
async fn otlp_grpc_export(
    port: u16,
    certs: &TestCerts,
    token: Option<&str>,
    tenant: &str,
) -> std::result::Result<Outcome, String> {
    let mut config = (*certs.client_config()).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = TlsConnector {
        port,
        config: Arc::new(config),
    };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .map_err(|e| e.to_string())?
        .timeout(Duration::from_secs(10))
        .connect_with_connector(connector)
        .await
        .map_err(|e| format!("connect: {}", error_chain(&e)))?;
    let mut md = MetadataMap::new();
    if let Some(t) = token {
        let bearer = AsciiMetadataValue::try_from(format!("Bearer {t}")).expect("ASCII token");
        md.insert("authorization", bearer);
    }
    let tenant = AsciiMetadataValue::try_from(tenant).expect("ASCII tenant");
    md.insert("x-scope-orgid", tenant);
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_channel(channel)
        .with_metadata(md)
        .with_timeout(Duration::from_secs(10))
        .with_retry_policy(RetryPolicy::disabled())
        .build()
        .map_err(|e| format!("build exporter: {e}"))?;
    match exporter.export(vec![checkout_span()]).await {
        Ok(()) => Ok(Outcome::Grpc("OK".into())),
        Err(e) => {
            // "... export failed with gRPC code: PermissionDenied"
            let text = e.to_string();
            let code = text
                .split("gRPC code: ")
                .nth(1)
                .map(|rest| {
                    rest.split(|c: char| !c.is_alphanumeric())
                        .next()
                        .unwrap_or("")
                })
                .and_then(grpc_code_name);
            code.map(|c| Outcome::Grpc(c.to_string())).ok_or(text)
        }
    }
}

/// tonic's `Code` debug name (`PermissionDenied`) as the gRPC spec spells it.
fn grpc_code_name(debug: &str) -> Option<&'static str> {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    (0..17).find_map(|i| {
        let code = tonic::Code::from_i32(i);
        (format!("{code:?}") == debug).then_some(NAMES[i as usize])
    })
}

/// One server span of the showcase's checkout service.
fn checkout_span() -> SpanData {
    let now = SystemTime::now();
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(TRACE_ID),
            SpanId::from_bytes(SPAN_ID),
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
        instrumentation_scope: InstrumentationScope::builder("tenant-authz-demo").build(),
    }
}

const TRACE_ID: [u8; 16] = *b"tenant-authz-dem";
const SPAN_ID: [u8; 8] = *b"checkout";

// ------------------------------------------------------------------ OTLP over HTTP

// The few OTLP protobuf messages an export of one span needs (opentelemetry/proto/...).
#[derive(Clone, PartialEq, prost::Message)]
struct ExportTraceServiceRequest {
    #[prost(message, repeated, tag = "1")]
    resource_spans: Vec<ResourceSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ResourceSpans {
    #[prost(message, optional, tag = "1")]
    resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    scope_spans: Vec<ScopeSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Resource {
    #[prost(message, repeated, tag = "1")]
    attributes: Vec<Attribute>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Attribute {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(message, optional, tag = "2")]
    value: Option<AnyValue>,
}

/// `AnyValue` with only its `string_value` (field 1 of the oneof).
#[derive(Clone, PartialEq, prost::Message)]
struct AnyValue {
    #[prost(string, tag = "1")]
    string_value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ScopeSpans {
    #[prost(message, optional, tag = "1")]
    scope: Option<Scope>,
    #[prost(message, repeated, tag = "2")]
    spans: Vec<Span>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Scope {
    #[prost(string, tag = "1")]
    name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Span {
    #[prost(bytes = "vec", tag = "1")]
    trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    span_id: Vec<u8>,
    #[prost(string, tag = "5")]
    name: String,
    /// SPAN_KIND_SERVER = 2.
    #[prost(int32, tag = "6")]
    kind: i32,
    #[prost(fixed64, tag = "7")]
    start_time_unix_nano: u64,
    #[prost(fixed64, tag = "8")]
    end_time_unix_nano: u64,
}

/// An OTLP/HTTP protobuf body (`ExportTraceServiceRequest`) with one checkout span.
pub fn otlp_http_body() -> Vec<u8> {
    let end = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![Attribute {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        string_value: "checkout".into(),
                    }),
                }],
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(Scope {
                    name: "tenant-authz-demo".into(),
                }),
                spans: vec![Span {
                    trace_id: TRACE_ID.to_vec(),
                    span_id: SPAN_ID.to_vec(),
                    name: "GET /checkout".into(),
                    kind: 2,
                    start_time_unix_nano: end.saturating_sub(5_000_000),
                    end_time_unix_nano: end,
                }],
            }],
        }],
    }
    .encode_to_vec()
}
