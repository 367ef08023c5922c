//! gRPC clients through Envoy: the real OTLP exporter and a raw tonic `TraceService/Export` call.

use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status as SpanStatus, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{RetryPolicy, WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use tonic::metadata::{AsciiMetadataValue, MetadataMap};

use super::tokens::bearer;

pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

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
pub async fn otlp_grpc_export(port: u16, token: Option<&str>, tenant: &str) -> Result<(), String> {
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
pub async fn raw_grpc_export(
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

/// [`raw_grpc_export`] that must fail (`what` names the case) with gRPC status `code`.
pub async fn raw_grpc_denied(
    port: u16,
    token: Option<&str>,
    tenant: &str,
    what: &str,
    code: tonic::Code,
) -> tonic::Status {
    let st = raw_grpc_export(port, token, tenant).await.expect_err(what);
    assert_eq!(st.code(), code, "{what}: {st:?}");
    st
}
