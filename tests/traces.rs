//! Traces of tenant-authz itself, from the real binary to a real OTLP/gRPC receiver: span
//! names, attributes, parents (the traceparent's span id), sampling, and no token anywhere.

mod support;

use std::time::Duration;

use support::authz::{check_request, http_status, AuthzProcess};
use support::otlp::{OtlpReceiver, ReceivedSpan};

const SRE: &str = "demo-sre-token";
const ENVOY_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const ENVOY_SPAN: &str = "00f067aa0ba902b7";
const CLIENT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "b7ad6b7169203331";

const CHECK: &str = "envoy.service.auth.v3.Authorization/Check";

fn static_config() -> std::path::PathBuf {
    std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/static.yaml"))
}

/// tenant-authz with the static backend, exporting to `receiver` (batches every 50 ms).
async fn traced(receiver: &OtlpReceiver, extra: &[&str]) -> AuthzProcess {
    let config = static_config();
    let endpoint = receiver.endpoint();
    let mut args = vec![
        "--config",
        config.to_str().unwrap(),
        "--traces-endpoint",
        &endpoint,
    ];
    args.extend_from_slice(extra);
    let p = AuthzProcess::spawn_args(&args, &[("OTEL_BSP_SCHEDULE_DELAY", "50")]);
    p.wait_ready(Duration::from_secs(20)).await;
    p
}

/// A read Check by `token` on `tenants`, with the client's `traceparent` header and Envoy's
/// `traceparent` gRPC metadata when given.
async fn check(
    authz: &AuthzProcess,
    token: &str,
    tenants: &str,
    client: Option<&str>,
    envoy: Option<&str>,
) -> u16 {
    let auth = format!("Bearer {token}");
    let mut headers = vec![("authorization", auth.as_str()), ("x-scope-orgid", tenants)];
    if let Some(tp) = client {
        headers.push(("traceparent", tp));
    }
    let mut request = tonic::Request::new(check_request("GET", "/api/search", &headers, None));
    if let Some(tp) = envoy {
        request
            .metadata_mut()
            .insert("traceparent", tp.parse().unwrap());
    }
    let r = authz.client().await.check(request).await.expect("answered");
    http_status(&r.into_inner())
}

fn traceparent(trace: &str, span: &str, sampled: bool) -> String {
    format!("00-{trace}-{span}-{}", if sampled { "01" } else { "00" })
}

fn in_trace<'a>(spans: &'a [ReceivedSpan], trace: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.trace_id == trace).collect()
}

/// No 12-byte piece of `token` in anything exported: span names, attribute keys and values,
/// ids, the service name.
fn assert_no_token(spans: &[ReceivedSpan], token: &str) {
    let pieces: Vec<&str> = (0..=token.len().saturating_sub(12))
        .map(|i| &token[i..i + 12])
        .collect();
    for s in spans {
        let mut texts = vec![
            &s.name,
            &s.trace_id,
            &s.span_id,
            &s.parent_span_id,
            &s.service,
        ];
        for (k, v) in &s.attributes {
            texts.push(k);
            texts.push(v);
        }
        for text in texts {
            if let Some(piece) = pieces.iter().find(|p| text.contains(*p)) {
                panic!("span {} carries {piece:?} of the token in {text:?}", s.name);
            }
        }
    }
}

#[tokio::test]
async fn check_with_envoys_traceparent_is_its_child_with_a_span_per_step() {
    let receiver = OtlpReceiver::start().await;
    let authz = traced(
        &receiver,
        &[
            "--traces-headers",
            "x-scope-orgid=platform",
            "--traces-service-name",
            "tenant-authz-test",
        ],
    )
    .await;
    let envoy = traceparent(ENVOY_TRACE, ENVOY_SPAN, true);
    let status = check(&authz, SRE, "showcase|payments", None, Some(&envoy)).await;
    assert_eq!(status, 200);

    let spans = receiver
        .wait_for(Duration::from_secs(10), "4 spans of the trace", |s| {
            in_trace(s, ENVOY_TRACE).len() >= 4
        })
        .await;
    let trace = in_trace(&spans, ENVOY_TRACE);
    let check_span = trace.iter().find(|s| s.name == CHECK).expect("Check span");
    assert_eq!(check_span.parent_span_id, ENVOY_SPAN);
    assert_eq!(check_span.service, "tenant-authz-test");
    for (k, v) in [
        ("tenant_authz.parent", "envoy"),
        ("tenant_authz.decision", "allow"),
        ("tenant_authz.action", "read"),
        ("tenant_authz.product", "tempo"),
        ("tenant_authz.tenants", "showcase|payments"),
        ("tenant_authz.tenant_count", "2"),
        ("tenant_authz.cached", "false"),
        ("tenant_authz.user", "sre@example.com"),
        ("http.response.status_code", "200"),
        ("rpc.system", "grpc"),
    ] {
        assert_eq!(check_span.attr(k), v, "{k}");
    }
    let children: Vec<_> = trace
        .iter()
        .filter(|s| s.parent_span_id == check_span.span_id)
        .collect();
    let authn: Vec<_> = children
        .iter()
        .filter(|s| s.name == "authenticate")
        .collect();
    assert_eq!(authn.len(), 1, "{children:#?}");
    assert_eq!(authn[0].attr("tenant_authz.cache"), "miss");
    assert_eq!(authn[0].attr("tenant_authz.outcome"), "authenticated");
    let mut tenants: Vec<_> = children
        .iter()
        .filter(|s| s.name == "authorize")
        .map(|s| {
            assert_eq!(s.attr("tenant_authz.outcome"), "allowed");
            assert_eq!(s.attr("tenant_authz.cache"), "miss");
            s.attr("tenant_authz.tenant")
        })
        .collect();
    tenants.sort();
    assert_eq!(tenants, ["payments", "showcase"]);
    assert_no_token(&spans, SRE);
    assert!(
        receiver
            .exports_metadata()
            .iter()
            .all(|m| m.get("x-scope-orgid").map(String::as_str) == Some("platform")),
        "every export carries traces.headers: {:?}",
        receiver.exports_metadata()
    );

    // The same Check again: answered from the cache, one span and no children.
    let again = traceparent(ENVOY_TRACE, "1111111111111111", true);
    assert_eq!(
        check(&authz, SRE, "showcase|payments", None, Some(&again)).await,
        200
    );
    let spans = receiver
        .wait_for(Duration::from_secs(10), "the cached Check's span", |s| {
            s.iter().any(|s| s.parent_span_id == "1111111111111111")
        })
        .await;
    let cached = spans
        .iter()
        .find(|s| s.parent_span_id == "1111111111111111")
        .unwrap();
    assert_eq!(cached.attr("tenant_authz.cached"), "true");
    assert!(!spans.iter().any(|s| s.parent_span_id == cached.span_id));
}

#[tokio::test]
async fn denial_is_in_the_span_and_no_attribute_carries_the_token() {
    let receiver = OtlpReceiver::start().await;
    let authz = traced(&receiver, &["--traces-sampling-ratio", "1"]).await;
    let grafana = "demo-showcase-grafana-token";
    assert_eq!(check(&authz, grafana, "payments", None, None).await, 403);
    assert_eq!(
        check(&authz, "not-a-known-token-value", "payments", None, None).await,
        401
    );
    let spans = receiver
        .wait_for(Duration::from_secs(10), "two Checks", |s| {
            s.iter().filter(|s| s.name == CHECK).count() >= 2
        })
        .await;
    let reasons: Vec<_> = spans
        .iter()
        .filter(|s| s.name == CHECK)
        .map(|s| {
            (
                s.attr("tenant_authz.reason"),
                s.attr("http.response.status_code"),
            )
        })
        .collect();
    assert!(reasons.contains(&("forbidden", "403")), "{reasons:?}");
    assert!(reasons.contains(&("unauthenticated", "401")), "{reasons:?}");
    assert_no_token(&spans, grafana);
    assert_no_token(&spans, "not-a-known-token-value");
}

#[tokio::test]
async fn sampling_zero_sends_no_roots_but_follows_a_sampled_parent() {
    let receiver = OtlpReceiver::start().await;
    let authz = traced(
        &receiver,
        &[
            "--traces-sampling-ratio",
            "0",
            "--traces-follow-client-sampled",
            "true",
        ],
    )
    .await;
    for _ in 0..20 {
        assert_eq!(check(&authz, SRE, "showcase", None, None).await, 200);
    }
    let unsampled = traceparent(ENVOY_TRACE, ENVOY_SPAN, false);
    assert_eq!(
        check(&authz, SRE, "showcase", None, Some(&unsampled)).await,
        200
    );
    // The client's traceparent is the parent when Envoy sends none.
    let client = traceparent(CLIENT_TRACE, CLIENT_SPAN, true);
    assert_eq!(
        check(&authz, SRE, "showcase", Some(&client), None).await,
        200
    );
    let spans = receiver
        .wait_for(Duration::from_secs(10), "the sampled parent's Check", |s| {
            s.iter().any(|s| s.name == CHECK)
        })
        .await;
    // Give a stray root time to arrive, then: only the sampled parent's trace.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spans = [spans, receiver.spans()].concat();
    assert!(
        spans.iter().all(|s| s.trace_id == CLIENT_TRACE),
        "{spans:#?}"
    );
    let check_span = spans.iter().find(|s| s.name == CHECK).unwrap();
    assert_eq!(check_span.parent_span_id, CLIENT_SPAN);
    assert_eq!(check_span.attr("tenant_authz.parent"), "client");
}

#[tokio::test]
async fn off_by_default_sends_nothing() {
    let receiver = OtlpReceiver::start().await;
    let config = static_config();
    // Even the standard OTLP variables do not turn it on: only traces.endpoint does.
    let mut authz = AuthzProcess::spawn_args(
        &["--config", config.to_str().unwrap()],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint()),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    );
    authz.wait_ready(Duration::from_secs(20)).await;
    let sampled = traceparent(ENVOY_TRACE, ENVOY_SPAN, true);
    for _ in 0..5 {
        assert_eq!(
            check(&authz, SRE, "showcase", Some(&sampled), Some(&sampled)).await,
            200
        );
    }
    // Had it a tracer, its queued spans would leave at shutdown (see
    // queued_spans_are_exported_at_shutdown): after the exit, nothing can still come.
    authz.signal("TERM");
    assert!(authz.wait_exit(Duration::from_secs(15)).await.success());
    assert!(receiver.spans().is_empty());
    assert!(receiver.exports_metadata().is_empty());
}

/// The shipped query frontend (`envoy/query-frontend.yaml`, Envoy 1.40) in front of `authz`,
/// exporting its own spans to `receiver`, with its `random_sampling` percentage set to
/// `percent`; and a client that sends one read with a sampled `traceparent` of the client's.
struct QueryFrontend {
    envoy: support::envoy::Envoy,
    port: u16,
    client: reqwest::Client,
    _upstream: support::upstream::Upstream,
    _certs_dir: tempfile::TempDir,
}

impl QueryFrontend {
    async fn start(receiver: &OtlpReceiver, authz: &AuthzProcess, percent: u32) -> QueryFrontend {
        use support::envoy::{
            free_port, localize, socket, write_server_certs, Envoy, ACCESS_LOG_PATH, ADMIN_ADDRESS,
            DISTRIBUTOR_OTLP_GRPC, PROBES_LISTENER, QUERY_LISTENER, TEMPO_QUERY_FRONTEND,
            TENANT_AUTHZ,
        };
        let upstream = support::upstream::Upstream::start().await;
        let certs = support::tls::TestCerts::generate();
        let certs_dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut replacements = write_server_certs(certs_dir.path(), &certs).to_vec();
        replacements.extend([
            (QUERY_LISTENER, socket("127.0.0.1", port)),
            (PROBES_LISTENER, socket("127.0.0.1", free_port())),
            (ADMIN_ADDRESS, socket("127.0.0.1", free_port())),
            (TEMPO_QUERY_FRONTEND, socket("127.0.0.1", upstream.port)),
            (TENANT_AUTHZ, socket("127.0.0.1", authz.grpc_port)),
            (DISTRIBUTOR_OTLP_GRPC, socket("127.0.0.1", receiver.port)),
            (ACCESS_LOG_PATH, "{{ACCESS_LOG}}".to_string()),
        ]);
        let shipped = "random_sampling: { value: 1 }";
        let yaml = localize("query-frontend.yaml", &replacements);
        assert!(yaml.contains(shipped), "the shipped sampling is 1 %");
        let yaml = yaml.replace(shipped, &format!("random_sampling: {{ value: {percent} }}"));
        let envoy = Envoy::start(&yaml, &[]).await;
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(
                reqwest::Certificate::from_pem(certs.ca_cert_pem.as_bytes()).unwrap(),
            )
            .no_proxy()
            .build()
            .unwrap();
        QueryFrontend {
            envoy,
            port,
            client,
            _upstream: upstream,
            _certs_dir: certs_dir,
        }
    }

    /// A read of `showcase` as the SRE, with the client's sampled traceparent.
    async fn read_with_client_traceparent(&self) {
        self.read_with_headers(&[("traceparent", &traceparent(CLIENT_TRACE, CLIENT_SPAN, true))])
            .await
    }

    async fn read_with_headers(&self, headers: &[(&str, &str)]) {
        let mut request = self
            .client
            .get(format!("https://localhost:{}/api/search", self.port))
            .header("authorization", format!("Bearer {SRE}"))
            .header("x-scope-orgid", "showcase");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request through Envoy");
        assert_eq!(response.status().as_u16(), 200, "{}", self.envoy.log());
    }
}

/// End to end: Envoy traces the request (sampled by its `random_sampling`, here 100 %), its
/// gRPC client injects the ext_authz call's span into the Check's metadata, and tenant-authz's
/// Check span is that span's child: client span -> Envoy's request span -> Envoy's ext_authz
/// span -> Check. Envoy's spans arrive as the platform tenant.
#[tokio::test]
async fn through_envoy_the_check_is_a_child_of_envoys_ext_authz_span() {
    let receiver = OtlpReceiver::start().await;
    // Ratio 0: every span tenant-authz sends here is there because Envoy's parent was sampled.
    let authz = traced(&receiver, &["--traces-sampling-ratio", "0"]).await;
    let frontend = QueryFrontend::start(&receiver, &authz, 100).await;
    frontend.read_with_client_traceparent().await;

    // Envoy flushes its spans every 5 s.
    let spans = receiver
        .wait_for(
            Duration::from_secs(20),
            "Envoy's and tenant-authz's spans",
            |s| {
                let t = in_trace(s, CLIENT_TRACE);
                t.iter().any(|s| s.name == CHECK)
                    && t.iter()
                        .filter(|s| s.service == "tempo-querier-frontend")
                        .count()
                        >= 2
            },
        )
        .await;
    let trace = in_trace(&spans, CLIENT_TRACE);
    let check_span = trace.iter().find(|s| s.name == CHECK).unwrap();
    assert_eq!(check_span.attr("tenant_authz.parent"), "envoy");
    let parent = trace
        .iter()
        .find(|s| s.span_id == check_span.parent_span_id)
        .unwrap_or_else(|| panic!("the Check's parent is one of Envoy's spans: {trace:#?}"));
    assert_eq!(parent.service, "tempo-querier-frontend");
    assert!(
        parent.name.contains("envoy.service.auth.v3.Authorization"),
        "Envoy's ext_authz call span: {parent:#?}"
    );
    let request_span = trace
        .iter()
        .find(|s| s.span_id == parent.parent_span_id)
        .expect("Envoy's request span");
    assert_eq!(request_span.parent_span_id, CLIENT_SPAN);
    assert_no_token(&spans, SRE);
    assert!(receiver
        .exports_metadata()
        .iter()
        .any(|m| m.get("x-scope-orgid").map(String::as_str) == Some("platform")));
}

/// What Envoy 1.40 does with a client's sampled traceparent when its own `random_sampling`
/// says no (here 0 %): its span is unsampled, and the `traceparent` it injects into the Check
/// says so; tenant-authz follows Envoy's (not the client's) flag, even at ratio 1, and sends
/// nothing. So in the shipped frontends Envoy's `random_sampling` decides for both.
#[tokio::test]
async fn through_envoy_envoys_sampling_decision_rules_the_checks() {
    let receiver = OtlpReceiver::start().await;
    let mut authz = traced(&receiver, &["--traces-sampling-ratio", "1"]).await;
    let frontend = QueryFrontend::start(&receiver, &authz, 0).await;
    frontend.read_with_client_traceparent().await;
    // Nor can a client force one with Envoy's own headers (client_sampling 0; force-trace is
    // for internal requests only).
    frontend
        .read_with_headers(&[
            ("x-client-trace-id", "a-client-asks-to-be-traced"),
            ("x-envoy-force-trace", "true"),
            ("traceparent", &traceparent(CLIENT_TRACE, CLIENT_SPAN, true)),
        ])
        .await;
    let stats = frontend.envoy.admin_get("/stats?filter=tracing").await;
    assert!(
        stats.contains("http.query.tracing.not_traceable: 2"),
        "{stats}"
    );
    // Envoy traced nothing (the stat above); tenant-authz's queued spans, had it any, leave
    // at its shutdown.
    authz.signal("TERM");
    assert!(authz.wait_exit(Duration::from_secs(15)).await.success());
    assert!(receiver.spans().is_empty(), "{:#?}", receiver.spans());
}

/// By default a client's own sampled `traceparent` decides nothing (Envoy's would): at ratio
/// 0 its Check is not traced. Checked against a marker Check with Envoy's sampled parent sent
/// after it: spans leave in order, so once the marker's has arrived, the first would have.
#[tokio::test]
async fn by_default_a_clients_sampled_flag_traces_nothing() {
    let receiver = OtlpReceiver::start().await;
    let authz = traced(&receiver, &["--traces-sampling-ratio", "0"]).await;
    let client = traceparent(CLIENT_TRACE, CLIENT_SPAN, true);
    assert_eq!(
        check(&authz, SRE, "showcase", Some(&client), None).await,
        200
    );
    let envoy = traceparent(ENVOY_TRACE, ENVOY_SPAN, true);
    assert_eq!(
        check(&authz, SRE, "showcase", None, Some(&envoy)).await,
        200
    );
    let spans = receiver
        .wait_for(Duration::from_secs(15), "the marker Check", |s| {
            s.iter().any(|s| s.trace_id == ENVOY_TRACE)
        })
        .await;
    assert!(
        spans.iter().all(|s| s.trace_id != CLIENT_TRACE),
        "{spans:#?}"
    );
}

/// Spans still queued when tenant-authz stops (SIGTERM) are exported before it exits.
#[tokio::test]
async fn queued_spans_are_exported_at_shutdown() {
    let receiver = OtlpReceiver::start().await;
    let config = static_config();
    let endpoint = receiver.endpoint();
    // The default batch delay (5 s): without the flush at shutdown, nothing would arrive.
    let mut authz = AuthzProcess::spawn_args(
        &[
            "--config",
            config.to_str().unwrap(),
            "--traces-endpoint",
            &endpoint,
            "--traces-sampling-ratio",
            "1",
        ],
        &[],
    );
    authz.wait_ready(Duration::from_secs(20)).await;
    assert_eq!(check(&authz, SRE, "showcase", None, None).await, 200);
    authz.signal("TERM");
    assert!(authz.wait_exit(Duration::from_secs(15)).await.success());
    let spans = receiver.spans();
    assert!(spans.iter().any(|s| s.name == CHECK), "{spans:#?}");
}

/// The query frontend's tracing block and its `platform_traces` cluster are what the real
/// Envoy tests above run. Every other shipped frontend must carry the same ones (only
/// `service_name` differs), so the properties pinned there (1 % random sampling, client
/// sampling 0, spans to the distributor as tenant `platform` over HTTP/2) hold for all of them,
/// not only their schema (`envoy --mode validate`).
#[test]
fn every_shipped_frontend_traces_as_the_tested_query_frontend_does() {
    use serde_yaml_ng::Value;
    fn find<'a>(v: &'a Value, key: &str, out: &mut Vec<&'a Value>) {
        match v {
            Value::Mapping(m) => {
                if let Some(found) = m.get(key) {
                    out.push(found);
                }
                m.values().for_each(|x| find(x, key, out));
            }
            Value::Sequence(s) => s.iter().for_each(|x| find(x, key, out)),
            _ => {}
        }
    }
    // A tracing block with its service_name and cluster name taken out, and where that
    // cluster sends: (address, port, HTTP/2).
    let load = |file: &str| -> Vec<(Value, (Value, Value, bool))> {
        let path = format!("{}/envoy/{file}", env!("CARGO_MANIFEST_DIR"));
        let mut yaml: Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        yaml.apply_merge().unwrap();
        let mut blocks = Vec::new();
        find(&yaml, "tracing", &mut blocks);
        let blocks: Vec<Value> = blocks.into_iter().cloned().collect();
        let clusters = yaml["static_resources"]["clusters"].as_sequence().unwrap();
        blocks
            .into_iter()
            .map(|mut b| {
                let config = &mut b["provider"]["typed_config"];
                assert!(
                    config["service_name"]
                        .as_str()
                        .is_some_and(|s| !s.is_empty()),
                    "{file}: a tracing block without its service_name"
                );
                config.as_mapping_mut().unwrap().remove("service_name");
                let grpc = config["grpc_service"]["envoy_grpc"]
                    .as_mapping_mut()
                    .unwrap();
                let name = grpc.remove("cluster_name").unwrap();
                let cluster = clusters
                    .iter()
                    .find(|c| c["name"] == name)
                    .unwrap_or_else(|| panic!("{file}: no cluster {name:?}"));
                let address = &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
                    ["endpoint"]["address"]["socket_address"];
                let http2 = cluster["typed_extension_protocol_options"]
                    ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
                    ["explicit_http_config"]
                    .get("http2_protocol_options")
                    .is_some();
                let target = (
                    address["address"].clone(),
                    address["port_value"].clone(),
                    http2,
                );
                (b, target)
            })
            .collect()
    };
    let tested = load("query-frontend.yaml");
    assert_eq!(
        tested.len(),
        1,
        "the query frontend's HTTP connection manager"
    );
    let (block, target) = &tested[0];
    assert_eq!(block["random_sampling"]["value"], 1);
    assert_eq!(block["client_sampling"]["value"], 0);
    assert_eq!(target.1, 4317);
    assert!(target.2, "OTLP/gRPC needs HTTP/2");
    for file in [
        "ingest-frontend.yaml",
        "loki-frontend.yaml",
        "mimir-frontend.yaml",
    ] {
        let blocks = load(file);
        assert!(!blocks.is_empty(), "{file}: no tracing block");
        for (b, t) in &blocks {
            assert_eq!(b, block, "{file}: a tracing block differs");
            assert_eq!(t, target, "{file}: its spans go elsewhere");
        }
    }
}
