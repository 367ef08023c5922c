//! The production Envoy configs in `envoy/`, as shipped, under a real Envoy 1.40.
//!
//! Each test localizes a config by exact string replacement of its deployment values (ports
//! to free loopback ports, upstreams to a recording Tempo stand-in and to an in-test ext_authz
//! server, certificate paths to test certificates, the access log to a file) and talks HTTPS
//! to it. The in-test ext_authz server records the `action` context extension of every
//! CheckRequest and allows everything (removing `authorization`), so these tests check the
//! routing and Envoy settings of the configs, not tenant-authz's decisions.
mod support;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::{
    Authorization, AuthorizationServer, CheckRequest, CheckResponse,
};
use envoy_types::ext_authz::v3::{CheckResponseExt as _, OkHttpResponseBuilder};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use hyper_util::rt::TokioIo;
use serde_json::Value as Json;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tonic::codegen::http::Uri;

use support::envoy::{
    deployment_values, free_port, localize, production_config, socket, write_server_certs, Envoy,
    ACCESS_LOG_PATH, ADMIN_ADDRESS, DISTRIBUTOR_OTLP_GRPC, DISTRIBUTOR_OTLP_HTTP,
    OTLP_GRPC_LISTENER, OTLP_HTTP_LISTENER, PROBES_LISTENER, QUERY_LISTENER, TEMPO_QUERY_FRONTEND,
    TENANT_AUTHZ, TLS_CERT_PATH, TLS_KEY_PATH,
};
use support::tls::TestCerts;
use support::upstream::{Recorded, Upstream};

const QUERY: &str = "query-frontend.yaml";
const INGEST: &str = "ingest-frontend.yaml";
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const TEST_USER: &str = "system:serviceaccount:showcase:query";
/// Megabyte span batches must pass whole (more than Envoy's 1 MiB connection buffers).
const BIG_BODY: usize = 5 * 1024 * 1024;

// ------------------------------------------------------------------ recording ext_authz

/// One CheckRequest as the in-test ext_authz server saw it.
#[derive(Clone, Debug)]
struct Check {
    /// `context_extensions["action"]`, if the route set one.
    action: Option<String>,
    method: String,
    path: String,
}

#[derive(Clone, Default)]
struct RecordingAuthz {
    checks: Arc<Mutex<Vec<Check>>>,
}

fn metadata(fields: &[(&str, &str)]) -> Struct {
    Struct {
        fields: fields
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    Value {
                        kind: Some(Kind::StringValue(v.to_string())),
                    },
                )
            })
            .collect::<HashMap<_, _>>(),
    }
}

#[tonic::async_trait]
impl Authorization for RecordingAuthz {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let req = request.into_inner();
        let attrs = req.attributes.as_ref();
        let action = attrs.and_then(|a| a.context_extensions.get("action").cloned());
        let http = attrs
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref());
        self.checks.lock().unwrap().push(Check {
            action: action.clone(),
            method: http.map(|h| h.method.clone()).unwrap_or_default(),
            path: http.map(|h| h.path.clone()).unwrap_or_default(),
        });
        // Allow, like tenant-authz: drop the token, report the decision as dynamic metadata.
        let mut ok = OkHttpResponseBuilder::new();
        ok.remove_header("authorization");
        let mut response = CheckResponse::with_status(tonic::Status::ok(""));
        response
            .set_http_response(ok)
            .set_dynamic_metadata(Some(metadata(&[
                ("decision", "allow"),
                ("user", TEST_USER),
                ("tenants", "showcase"),
                ("action", action.as_deref().unwrap_or("none")),
                ("reason", "ok"),
                ("cached", "false"),
            ])));
        Ok(tonic::Response::new(response))
    }
}

/// The in-test ext_authz gRPC server (Check + grpc.health.v1 SERVING); aborted on drop.
struct AuthzServer {
    port: u16,
    authz: RecordingAuthz,
    task: JoinHandle<()>,
}

impl AuthzServer {
    async fn start() -> AuthzServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("authz: bind");
        let port = listener.local_addr().unwrap().port();
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let authz = RecordingAuthz::default();
        let service = AuthorizationServer::new(authz.clone());
        let task = tokio::spawn(async move {
            let _keep = reporter;
            tonic::transport::Server::builder()
                .add_service(health)
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await
                .expect("authz server");
        });
        AuthzServer { port, authz, task }
    }

    fn checks(&self) -> Vec<Check> {
        self.authz.checks.lock().unwrap().clone()
    }

    fn clear(&self) {
        self.authz.checks.lock().unwrap().clear();
    }
}

impl Drop for AuthzServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ------------------------------------------------------------------ a localized Envoy

/// Envoy running a localized production config, with everything behind it.
struct Frontend {
    envoy: Envoy,
    authz: AuthzServer,
    upstream: Upstream,
    certs: TestCerts,
    /// Listener ports by deployment value (e.g. `QUERY_LISTENER`).
    ports: HashMap<&'static str, u16>,
    _cert_dir: tempfile::TempDir,
}

impl Frontend {
    /// Starts `file` with `listeners` on free loopback ports, both Tempo upstreams of the file
    /// on one recording [`Upstream`], tenant-authz on an [`AuthzServer`].
    async fn start(file: &str, listeners: &[&'static str], upstreams: &[&str]) -> Frontend {
        Self::start_with(file, listeners, upstreams, None).await
    }

    /// Like [`Frontend::start`]; `authz_port` (e.g. a closed port) replaces the in-test
    /// ext_authz server's port in the config.
    async fn start_with(
        file: &str,
        listeners: &[&'static str],
        upstreams: &[&str],
        authz_port: Option<u16>,
    ) -> Frontend {
        let certs = TestCerts::generate();
        let cert_dir = tempfile::tempdir().expect("temp dir");
        let upstream = Upstream::start().await;
        let authz = AuthzServer::start().await;
        let mut ports = HashMap::new();
        let mut replacements: Vec<(&str, String)> = write_server_certs(cert_dir.path(), &certs)
            .into_iter()
            .collect();
        for listener in listeners.iter().chain([&PROBES_LISTENER, &ADMIN_ADDRESS]) {
            let port = free_port();
            ports.insert(*listener, port);
            replacements.push((*listener, socket("127.0.0.1", port)));
        }
        for value in upstreams {
            replacements.push((*value, socket("127.0.0.1", upstream.port)));
        }
        replacements.push((
            TENANT_AUTHZ,
            socket("127.0.0.1", authz_port.unwrap_or(authz.port)),
        ));
        if file == QUERY && !upstreams.contains(&DISTRIBUTOR_OTLP_GRPC) {
            // Envoy's own spans (1 % of requests) go nowhere: a closed loopback port, so no
            // test waits on DNS for the distributor's name.
            replacements.push((DISTRIBUTOR_OTLP_GRPC, socket("127.0.0.1", free_port())));
        }
        // Envoy::start renders {{ACCESS_LOG}} to a file it can read back.
        replacements.push((ACCESS_LOG_PATH, "{{ACCESS_LOG}}".to_string()));
        let yaml = localize(file, &replacements);
        let envoy = Envoy::start(&yaml, &[]).await;
        assert_eq!(
            envoy.admin_port, ports[ADMIN_ADDRESS],
            "admin port as localized"
        );
        Frontend {
            envoy,
            authz,
            upstream,
            certs,
            ports,
            _cert_dir: cert_dir,
        }
    }

    fn port(&self, listener: &str) -> u16 {
        self.ports[listener]
    }

    /// HTTPS client trusting only the test CA; ALPN `h2, http/1.1`, or `http/1.1` only.
    fn https(&self, http1_only: bool) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.certs.ca_cert_pem.as_bytes()).unwrap(),
            )
            .no_proxy()
            .timeout(Duration::from_secs(20));
        if http1_only {
            builder = builder.http1_only();
        }
        builder.build().expect("build HTTPS client")
    }

    fn diag(&self) -> String {
        format!(
            "checks: {:?}\nupstream: {:?}\naccess log:\n{}\n--- envoy log (tail) ---\n{}",
            self.authz.checks(),
            self.upstream
                .requests()
                .iter()
                .map(|r| format!("{} {} {}", r.method, r.path_and_query, r.version))
                .collect::<Vec<_>>(),
            self.envoy.access_log(),
            tail(&self.envoy.log(), 4000)
        )
    }

    fn clear(&self) {
        self.authz.clear();
        self.upstream.clear();
    }
}

fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Headers of an authorized Tempo client.
fn client_headers(req: reqwest::RequestBuilder, token: &str) -> reqwest::RequestBuilder {
    req.header("authorization", format!("Bearer {token}"))
        .header("x-scope-orgid", "showcase")
}

struct Reply {
    status: u16,
    version: reqwest::Version,
    body: String,
}

async fn send(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    body: Vec<u8>,
    content_type: Option<&str>,
) -> Reply {
    let mut req = client_headers(
        client.request(method.parse().unwrap(), url),
        "test-token-not-secret",
    )
    .body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e:?}"));
    Reply {
        status: resp.status().as_u16(),
        version: resp.version(),
        body: resp.text().await.unwrap_or_default(),
    }
}

fn upstream_saw<'a>(requests: &'a [Recorded], method: &str, path: &str) -> Option<&'a Recorded> {
    requests
        .iter()
        .find(|r| r.method == method && r.path == path)
}

// ------------------------------------------------------------------ gRPC over TLS

/// tonic connector: TCP to 127.0.0.1:port, then TLS (test CA, ALPN h2) with rustls.
#[derive(Clone)]
struct TlsConnector {
    port: u16,
    config: Arc<rustls::ClientConfig>,
}

impl TlsConnector {
    fn new(port: u16, certs: &TestCerts) -> TlsConnector {
        let mut config = (*certs.client_config()).clone();
        config.alpn_protocols = vec![b"h2".to_vec()];
        TlsConnector {
            port,
            config: Arc::new(config),
        }
    }
}

type TlsIo = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl tonic::codegen::Service<Uri> for TlsConnector {
    type Response = TlsIo;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<TlsIo, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let (port, config) = (self.port, self.config.clone());
        Box::pin(async move {
            let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// One unary gRPC call of `path` with an empty message (an empty OTLP
/// `ExportTraceServiceRequest` encodes like `()`), over TLS.
async fn grpc_call(port: u16, certs: &TestCerts, path: &'static str) -> Result<(), tonic::Status> {
    let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1")
        .timeout(Duration::from_secs(10))
        .connect_with_connector(TlsConnector::new(port, certs))
        .await
        .expect("connect gRPC over TLS to Envoy");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("gRPC channel ready");
    let mut req = tonic::Request::new(());
    req.metadata_mut().insert(
        "authorization",
        "Bearer test-token-not-secret".parse().unwrap(),
    );
    req.metadata_mut()
        .insert("x-scope-orgid", "showcase".parse().unwrap());
    grpc.unary(
        req,
        tonic::codegen::http::uri::PathAndQuery::from_static(path),
        tonic_prost::ProstCodec::<(), ()>::default(),
    )
    .await
    .map(|_| ())
}

// ------------------------------------------------------------------ tests

/// Both files pass `envoy --mode validate` as shipped (only the certificate paths point at
/// real files), and every deployment value is listed in the header and used exactly once.
#[test]
fn production_configs_validate() {
    let certs = TestCerts::generate();
    for file in [QUERY, INGEST] {
        let shipped = production_config(file);
        for value in deployment_values(file) {
            let in_comments = shipped
                .lines()
                .filter(|l| l.trim_start().starts_with('#') && l.contains(value))
                .count();
            let in_config = shipped
                .lines()
                .filter(|l| !l.trim_start().starts_with('#') && l.contains(value))
                .count();
            assert_eq!(
                (in_comments, in_config, shipped.matches(value).count()),
                (1, 1, 2),
                "{file}: {value:?} must be listed once in the header and used once"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let yaml = localize(file, &write_server_certs(dir.path(), &certs));
        assert!(!yaml.contains(TLS_CERT_PATH) && !yaml.contains(TLS_KEY_PATH));
        if let Err(e) = Envoy::validate(&yaml, &[]) {
            panic!("envoy/{file}: {e}");
        }
    }
}

/// Each Tempo upstream cluster speaks what its Tempo port accepts in plaintext, as recorded from
/// Tempo 2.10.8 and the collector's receivers (tests/data/upstream/tempo-v2.10.8.yaml): OTLP/gRPC
/// HTTP/2, OTLP/HTTP HTTP/1.1 only (the receiver has no h2c), and the query frontend HTTP/2 too
/// only because the TempoStack turns on `stream_over_http_enabled`. The runtime tests below
/// check what a recording upstream actually receives.
#[test]
fn upstream_protocols_match_what_the_tempo_ports_accept() {
    fn yaml(path: &str) -> Json {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        let text = std::fs::read_to_string(&path).expect("read");
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }
    /// The protocols a cluster may send upstream (explicit or as the client spoke).
    fn cluster_protocols(config: &Json, name: &str) -> Vec<&'static str> {
        let cluster = config["static_resources"]["clusters"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == name))
            .unwrap_or_else(|| panic!("cluster {name}"));
        let options = &cluster["typed_extension_protocol_options"]
            ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
        let chosen = if options["explicit_http_config"].is_object() {
            &options["explicit_http_config"]
        } else if options["use_downstream_protocol_config"].is_object() {
            &options["use_downstream_protocol_config"]
        } else {
            // No protocol options: Envoy's default is HTTP/1.1, but say it explicitly.
            panic!("cluster {name}: state the upstream protocol explicitly")
        };
        let mut protocols = Vec::new();
        if chosen.get("http_protocol_options").is_some() {
            protocols.push("HTTP/1.1");
        }
        if chosen.get("http2_protocol_options").is_some() {
            protocols.push("HTTP/2");
        }
        assert!(
            chosen.get("http3_protocol_options").is_none(),
            "{name}: no HTTP/3 upstream"
        );
        protocols
    }
    let tempo = yaml("tests/data/upstream/tempo-v2.10.8.yaml");
    let accepts = |pointer: &str| -> Vec<String> {
        tempo
            .pointer(pointer)
            .and_then(Json::as_array)
            .unwrap_or_else(|| panic!("{pointer} recorded"))
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    };
    let stack = yaml("manifests/base/tempo/tempostack.yaml");
    let streaming = stack
        .pointer("/spec/extraConfig/tempo/stream_over_http_enabled")
        .and_then(Json::as_bool)
        .unwrap_or(tempo["stream_over_http_enabled_default"] == true);
    let query_port = if streaming {
        "/ports/query_frontend_http/with_stream_over_http"
    } else {
        "/ports/query_frontend_http/without_stream_over_http"
    };
    let query = yaml("envoy/query-frontend.yaml");
    let ingest = yaml("envoy/ingest-frontend.yaml");
    for (config, cluster, pointer, required) in [
        (&query, "tempo_query_frontend", query_port, "HTTP/2"),
        (
            &ingest,
            "tempo_distributor_otlp_grpc",
            "/ports/distributor_otlp_grpc/accepts",
            "HTTP/2",
        ),
        (
            &ingest,
            "tempo_distributor_otlp_http",
            "/ports/distributor_otlp_http/accepts",
            "HTTP/1.1",
        ),
    ] {
        let sends = cluster_protocols(config, cluster);
        let accepted = accepts(pointer);
        for p in &sends {
            assert!(
                accepted.iter().any(|a| a == p),
                "{cluster} may send {p}; the Tempo port accepts only {accepted:?} ({pointer})"
            );
        }
        // gRPC streaming queries (query frontend) and OTLP/gRPC need HTTP/2 to reach Tempo.
        assert!(sends.contains(&required), "{cluster}: must send {required}");
    }
}

/// query-frontend.yaml over HTTPS: read / manage actions per route, Tempo's operations
/// endpoints 404 without reaching ext_authz or Tempo, HTTP/1.1 and HTTP/2 (ALPN) kept to the
/// upstream, path normalisation before routing, and the :9902 probes listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_frontend_serves_tls_and_routes_actions() {
    let f = Frontend::start(QUERY, &[QUERY_LISTENER], &[TEMPO_QUERY_FRONTEND]).await;
    let base = format!("https://127.0.0.1:{}", f.port(QUERY_LISTENER));
    let h1 = f.https(true);
    let h2 = f.https(false);

    // (client, method, path, expected action, path Tempo sees)
    let cases: &[(&reqwest::Client, &str, &str, &str, &str)] = &[
        (
            &h1,
            "GET",
            "/api/search?tags=service.name%3Dcart",
            "read",
            "/api/search",
        ),
        (&h2, "GET", "/api/search", "read", "/api/search"),
        (&h1, "POST", "/api/search", "read", "/api/search"),
        (
            &h1,
            "GET",
            "/api/traces/0af7651916cd43dd8448eb211c80319c",
            "read",
            "/api/traces/0af7651916cd43dd8448eb211c80319c",
        ),
        (
            &h1,
            "GET",
            "/api/status/buildinfo",
            "read",
            "/api/status/buildinfo",
        ),
        (&h1, "GET", "/api/overrides", "read", "/api/overrides"),
        (&h1, "PUT", "/api/overrides", "manage", "/api/overrides"),
        (&h2, "POST", "/api/overrides", "manage", "/api/overrides"),
        (&h1, "PATCH", "/api/overrides", "manage", "/api/overrides"),
        (
            &h1,
            "DELETE",
            "/api/overrides/",
            "manage",
            "/api/overrides/",
        ),
        // Normalised before routing: still the overrides route.
        (&h1, "PUT", "//api/./overrides", "manage", "/api/overrides"),
        (
            &h1,
            "PUT",
            "/api/x/../overrides",
            "manage",
            "/api/overrides",
        ),
        (
            &h2,
            "POST",
            "/tempopb.StreamingQuerier/Search",
            "read",
            "/tempopb.StreamingQuerier/Search",
        ),
    ];
    for (client, method, path, action, tempo_path) in cases {
        f.clear();
        let r = send(client, method, &format!("{base}{path}"), Vec::new(), None).await;
        assert_eq!(r.status, 200, "{method} {path}: {}\n{}", r.body, f.diag());
        let checks = f.authz.checks();
        assert_eq!(checks.len(), 1, "{method} {path}: one Check\n{}", f.diag());
        assert_eq!(
            checks[0].action.as_deref(),
            Some(*action),
            "{method} {path}\n{}",
            f.diag()
        );
        assert_eq!(checks[0].method, *method);
        let seen = f.upstream.requests();
        let rec = upstream_saw(&seen, method, tempo_path)
            .unwrap_or_else(|| panic!("{method} {path}: Tempo saw {tempo_path}\n{}", f.diag()));
        assert!(
            rec.header("authorization").is_none(),
            "the token is removed before Tempo"
        );
        // The client's protocol is kept all the way: h2 via ALPN stays h2 (gRPC streaming).
        let h2_used = std::ptr::eq(*client, &h2);
        let (want_client, want_upstream) = if h2_used {
            (reqwest::Version::HTTP_2, "HTTP/2.0")
        } else {
            (reqwest::Version::HTTP_11, "HTTP/1.1")
        };
        assert_eq!(r.version, want_client, "{method} {path}: ALPN");
        assert_eq!(
            rec.version, want_upstream,
            "{method} {path}: upstream protocol"
        );
    }

    // A large ServiceAccount token (20 KB of headers) fits max_request_headers_kb.
    f.clear();
    let big_token = "a".repeat(20 * 1024);
    let r = client_headers(h1.get(format!("{base}/api/search")), &big_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", f.diag());
    assert_eq!(f.authz.checks()[0].action.as_deref(), Some("read"));

    // Tempo's operations endpoints: 404 for anyone, no Check, never reach Tempo.
    f.clear();
    let ops = [
        ("GET", "/metrics"),
        ("GET", "/debug/pprof/"),
        ("GET", "/debug/pprof/heap"),
        ("GET", "/status"),
        ("GET", "/status/config"),
        ("POST", "/flush"),
        ("POST", "/shutdown"),
        ("GET", "/ready"),
        ("GET", "/config"),
        ("GET", "/runtime_config"),
        ("GET", "/memberlist"),
        ("POST", "/ingester/shutdown"),
        ("GET", "/distributor/ring"),
        ("GET", "/compactor/ring"),
        ("GET", "/usage_stats"),
        ("GET", "//metrics"),
        ("GET", "/api/../metrics"),
        ("GET", "/metrics?x=1"),
        ("GET", "/%6Detrics"),
        ("GET", "/%6detrics"),
        ("GET", "/debug/%70prof/heap"),
    ];
    for (method, path) in ops {
        for client in [&h1, &h2] {
            // Without a token too: the 404 needs none.
            let r = client
                .request(method.parse().unwrap(), format!("{base}{path}"))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{method} {path}: {e:?}"));
            assert_eq!(r.status(), 404, "{method} {path}\n{}", f.diag());
            let r = send(client, method, &format!("{base}{path}"), Vec::new(), None).await;
            assert_eq!(r.status, 404, "{method} {path} with a token\n{}", f.diag());
        }
    }
    assert!(
        f.authz.checks().is_empty(),
        "ops paths: no Check\n{}",
        f.diag()
    );
    assert!(
        f.upstream.requests().is_empty(),
        "ops paths never reach Tempo\n{}",
        f.diag()
    );

    // Encoded slashes are rejected outright.
    let r = send(
        &h1,
        "GET",
        &format!("{base}/api%2Foverrides"),
        Vec::new(),
        None,
    )
    .await;
    assert_eq!(r.status, 400, "escaped slash\n{}", f.diag());

    // Plain HTTP on the TLS port gets nowhere.
    let plain = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let r = plain
        .get(format!(
            "http://127.0.0.1:{}/api/search",
            f.port(QUERY_LISTENER)
        ))
        .send()
        .await;
    assert!(r.is_err(), "plain HTTP on :3200: {r:?}");

    assert_probes(&f).await;
}

/// The :9902 listener: Envoy's /ready and /stats/prometheus, nothing else of the admin API.
async fn assert_probes(f: &Frontend) {
    let probes = format!("http://127.0.0.1:{}", f.port(PROBES_LISTENER));
    let plain = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let ready = plain.get(format!("{probes}/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.text().await.unwrap().trim(), "LIVE");
    let stats = plain
        .get(format!("{probes}/stats/prometheus"))
        .send()
        .await
        .unwrap();
    assert_eq!(stats.status(), 200);
    let stats = stats.text().await.unwrap();
    assert!(
        stats.contains("envoy_cluster_upstream_rq"),
        "{}",
        tail(&stats, 500)
    );
    for (method, path) in [
        ("POST", "/quitquitquit"),
        ("GET", "/quitquitquit"),
        ("POST", "/healthcheck/fail"),
        ("GET", "/config_dump"),
        ("GET", "/clusters"),
        ("POST", "/logging?level=trace"),
        ("GET", "/stats"),
        ("GET", "/ready/../quitquitquit"),
        ("GET", "/"),
    ] {
        let r = plain
            .request(method.parse().unwrap(), format!("{probes}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{method} :9902{path}");
    }
    // Envoy is still up (the admin API did not see /quitquitquit).
    let ready = plain.get(format!("{probes}/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "Envoy still ready");
    assert!(f.envoy.admin_get("/ready").await.contains("LIVE"));
}

/// ingest-frontend.yaml: OTLP/HTTP on :4318 (HTTP/1.1 and HTTP/2) and OTLP/gRPC on :4317,
/// all `action: write`, megabyte bodies passed whole; everything else 404 without a Check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_frontend_routes_otlp_as_write() {
    let f = Frontend::start(
        INGEST,
        &[OTLP_GRPC_LISTENER, OTLP_HTTP_LISTENER],
        &[DISTRIBUTOR_OTLP_GRPC, DISTRIBUTOR_OTLP_HTTP],
    )
    .await;
    let http_base = format!("https://127.0.0.1:{}", f.port(OTLP_HTTP_LISTENER));
    let grpc_port = f.port(OTLP_GRPC_LISTENER);
    let h1 = f.https(true);
    let h2 = f.https(false);

    // OTLP/HTTP, small and big (5 MiB) batches, over HTTP/1.1 and HTTP/2: the distributor's
    // plaintext OTLP/HTTP receiver speaks HTTP/1.1 only, so that is what it gets either way.
    for (client, client_version) in [
        (&h1, reqwest::Version::HTTP_11),
        (&h2, reqwest::Version::HTTP_2),
    ] {
        for size in [64, BIG_BODY] {
            f.clear();
            let r = send(
                client,
                "POST",
                &format!("{http_base}/v1/traces"),
                vec![0x0a; size],
                Some("application/x-protobuf"),
            )
            .await;
            assert_eq!(
                r.status,
                200,
                "{client_version:?} {size}: {}\n{}",
                r.body,
                f.diag()
            );
            assert_eq!(r.version, client_version, "ALPN towards Envoy");
            let checks = f.authz.checks();
            assert_eq!(checks.len(), 1, "{}", f.diag());
            assert_eq!(checks[0].action.as_deref(), Some("write"));
            assert_eq!(checks[0].path, "/v1/traces");
            let seen = f.upstream.requests();
            let rec = upstream_saw(&seen, "POST", "/v1/traces").expect("distributor saw it");
            assert_eq!(
                rec.version, "HTTP/1.1",
                "{client_version:?} client: HTTP/1.1 upstream"
            );
            assert_eq!(rec.body_len, size, "the whole body reaches the distributor");
            assert!(rec.header("authorization").is_none());
        }
    }

    // OTLP/gRPC with tonic over TLS (HTTP/2 only).
    f.clear();
    grpc_call(grpc_port, &f.certs, EXPORT_PATH)
        .await
        .unwrap_or_else(|s| panic!("gRPC Export: {s:?}\n{}", f.diag()));
    let checks = f.authz.checks();
    assert_eq!(checks.len(), 1, "{}", f.diag());
    assert_eq!(checks[0].action.as_deref(), Some("write"));
    assert_eq!(checks[0].path, EXPORT_PATH);
    let seen = f.upstream.requests();
    let rec = upstream_saw(&seen, "POST", EXPORT_PATH).expect("distributor saw Export");
    assert_eq!(rec.version, "HTTP/2.0");
    assert!(rec.header("authorization").is_none());

    // A 5 MiB gRPC message (one length-prefixed frame) over HTTP/2 + TLS.
    f.clear();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(BIG_BODY as u32).to_be_bytes());
    frame.resize(5 + BIG_BODY, 0x0a);
    let r = send(
        &h2,
        "POST",
        &format!("https://127.0.0.1:{grpc_port}{EXPORT_PATH}"),
        frame,
        Some("application/grpc"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", f.diag());
    assert_eq!(r.version, reqwest::Version::HTTP_2);
    let seen = f.upstream.requests();
    let rec = upstream_saw(&seen, "POST", EXPORT_PATH).expect("distributor saw big Export");
    assert_eq!(rec.body_len, 5 + BIG_BODY);
    assert_eq!(f.authz.checks()[0].action.as_deref(), Some("write"));

    // Everything else: 404, no Check, nothing upstream.
    f.clear();
    for (client, method, path) in [
        (&h1, "GET", "/api/search"),
        (&h2, "GET", "/api/search"),
        (&h1, "GET", "/api/traces/0af7651916cd43dd8448eb211c80319c"),
        (&h1, "POST", "/v1/logs"),
        (&h1, "POST", "/v1/metrics"),
        (&h1, "GET", "/metrics"),
        (&h1, "POST", "/flush"),
        (&h1, "POST", "/api/v2/spans"),
    ] {
        let r = send(
            client,
            method,
            &format!("{http_base}{path}"),
            Vec::new(),
            None,
        )
        .await;
        assert_eq!(r.status, 404, ":4318 {method} {path}\n{}", f.diag());
    }
    let status = grpc_call(
        grpc_port,
        &f.certs,
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    )
    .await
    .expect_err("metrics export is not routed");
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    assert!(f.authz.checks().is_empty(), "404s: no Check\n{}", f.diag());
    assert!(f.upstream.requests().is_empty(), "404s: nothing upstream");

    // Every write was logged with its action.
    // 6 writes + 9 404s.
    let entries = f.envoy.wait_access_log(15, Duration::from_secs(5)).await;
    let writes = entries
        .iter()
        .filter(|e| {
            e["route_name"]
                .as_str()
                .is_some_and(|r| r.starts_with("ingest_"))
        })
        .collect::<Vec<_>>();
    assert_eq!(writes.len(), 6, "{}", f.diag());
    assert!(writes.iter().all(|e| e["authz_action"] == "write"));

    assert_probes(&f).await;
}

/// The tenant kit's collector exporter, as its config says (tenants/template/
/// opentelemetrycollector.yaml), through the real ingest frontend: a real OTLP gRPC exporter
/// with the bearer token read from a file (what `bearertokenauth` does with the projected
/// token), TLS verified with the frontends' CA (the kit's `ca_file`), and the kit's headers.
/// No collector binary is packaged on the registries this project uses, so the exporter is
/// opentelemetry-otlp's; the Istio variant's exporter is pinned in tests/manifests.rs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_kit_collector_exporter_reaches_the_distributor() {
    use opentelemetry::trace::{SpanContext, SpanId, SpanKind, TraceFlags, TraceId, TraceState};
    use opentelemetry_otlp::{RetryPolicy, WithExportConfig as _, WithTonicConfig as _};
    use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
    use tonic::metadata::{AsciiMetadataValue, MetadataKey, MetadataMap};

    let kit_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("manifests/tenants/template/opentelemetrycollector.yaml");
    let kit: Json = serde_yaml_ng::from_str(&std::fs::read_to_string(kit_path).unwrap()).unwrap();
    let config = &kit["spec"]["config"];
    let exporter = &config["exporters"]["otlp_grpc/tempo"];
    // The exporter goes to the ingest frontend's OTLP/gRPC listener, over TLS, with the token.
    assert_eq!(
        exporter["endpoint"], "tempo-ingester-frontend.monitoring.svc:4317",
        "the kit exports to the ingest frontend's :4317"
    );
    assert!(OTLP_GRPC_LISTENER.contains("port_value: 4317"));
    assert!(exporter["tls"]["insecure"].is_null() && exporter["tls"]["ca_file"].is_string());
    assert_eq!(exporter["auth"]["authenticator"], "bearertokenauth");
    assert!(config["extensions"]["bearertokenauth"]["filename"].is_string());

    let f = Frontend::start(
        INGEST,
        &[OTLP_GRPC_LISTENER, OTLP_HTTP_LISTENER],
        &[DISTRIBUTOR_OTLP_GRPC, DISTRIBUTOR_OTLP_HTTP],
    )
    .await;
    // The projected token file, as the kubelet writes it (bearertokenauth trims it).
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "kit-collector-token-not-secret\n").unwrap();
    let token = std::fs::read_to_string(&token_file).unwrap();
    let mut md = MetadataMap::new();
    md.insert(
        "authorization",
        AsciiMetadataValue::try_from(format!("Bearer {}", token.trim())).unwrap(),
    );
    for (name, value) in exporter["headers"].as_object().into_iter().flatten() {
        // The kit's replacement writes the tenant's namespace over TENANT.
        let value = value.as_str().unwrap().replace("TENANT", "showcase");
        let key = MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes()).unwrap();
        md.insert(key, AsciiMetadataValue::try_from(value).unwrap());
    }
    let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1")
        .timeout(Duration::from_secs(10))
        .connect_with_connector(TlsConnector::new(f.port(OTLP_GRPC_LISTENER), &f.certs))
        .await
        .expect("TLS to the ingest frontend, verified with the test CA");
    let otlp = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_channel(channel)
        .with_metadata(md)
        .with_timeout(Duration::from_secs(10))
        .with_retry_policy(RetryPolicy::disabled())
        .build()
        .expect("build the OTLP exporter");
    let now = std::time::SystemTime::now();
    let span = SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes([9; 16]),
            SpanId::from_bytes([4; 8]),
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
        attributes: vec![],
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: opentelemetry::trace::Status::Ok,
        instrumentation_scope: opentelemetry::InstrumentationScope::builder("tenant-kit").build(),
    };
    otlp.export(vec![span])
        .await
        .unwrap_or_else(|e| panic!("export: {e}\n{}", f.diag()));

    let checks = f.authz.checks();
    assert_eq!(checks.len(), 1, "{}", f.diag());
    assert_eq!(checks[0].action.as_deref(), Some("write"));
    let seen = f.upstream.requests();
    let rec = upstream_saw(&seen, "POST", EXPORT_PATH).expect("the distributor saw Export");
    assert_eq!(rec.version, "HTTP/2.0", "OTLP/gRPC upstream is HTTP/2");
    assert_eq!(rec.header("x-scope-orgid"), Some("showcase"));
    assert!(
        rec.header("authorization").is_none(),
        "the token stops at Envoy"
    );
    assert!(rec.body_len > 5, "a real ExportTraceServiceRequest");
}

/// The JSON access log has the request, the response and ext_authz's dynamic metadata, and
/// never the Authorization header (nor the query string).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_has_authz_metadata_and_no_authorization() {
    let f = Frontend::start(QUERY, &[QUERY_LISTENER], &[TEMPO_QUERY_FRONTEND]).await;
    let base = format!("https://127.0.0.1:{}", f.port(QUERY_LISTENER));
    let secret = "eyJhbGciOiJSUzI1NiJ9.do-not-log-me-7f3c9a1e5b2d4f60.sig-QmFzZTY0U2VjcmV0";
    let client = f.https(false);
    let r = client_headers(
        client.get(format!("{base}/api/search?q=%7Bname%3D%22checkout%22%7D")),
        secret,
    )
    .header("x-request-id", "client-chosen-id")
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "{}", f.diag());
    let r = client_headers(client.get(format!("{base}/metrics")), secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let entries = f.envoy.wait_access_log(2, Duration::from_secs(5)).await;
    let raw = f.envoy.access_log();
    let search: &Json = entries
        .iter()
        .find(|e| e["path"] == "/api/search")
        .unwrap_or_else(|| panic!("no /api/search entry (path without query):\n{raw}"));
    for (field, want) in [
        ("method", "GET"),
        ("response_code", "200"),
        ("route_name", "query_read"),
        ("protocol", "HTTP/2"),
        ("authz_user", TEST_USER),
        ("authz_tenants", "showcase"),
        ("authz_action", "read"),
        ("authz_decision", "allow"),
        ("authz_reason", "ok"),
        ("authz_cached", "false"),
    ] {
        let got = match &search[field] {
            Json::String(s) => s.clone(),
            other => other.to_string(),
        };
        assert_eq!(got, want, "access log field {field}:\n{raw}");
    }
    for field in [
        "start_time",
        "request_id",
        "response_flags",
        "grpc_status",
        "bytes_received",
        "bytes_sent",
        "duration_ms",
        "upstream_host",
        "client",
        "tls_version",
    ] {
        assert!(
            search.get(field).is_some(),
            "access log field {field} missing:\n{raw}"
        );
    }
    assert_eq!(
        search["upstream_host"],
        format!("127.0.0.1:{}", f.upstream.port),
        "{raw}"
    );
    // Envoy is the edge: a client's x-request-id is replaced by Envoy's own.
    let request_id = search["request_id"].as_str().unwrap_or_default();
    assert!(
        !request_id.is_empty() && request_id != "client-chosen-id",
        "{raw}"
    );

    // The 404 of an ops path: logged, without any authz metadata (no Check happened).
    let metrics = entries
        .iter()
        .find(|e| e["path"] == "/metrics")
        .unwrap_or_else(|| panic!("no /metrics entry:\n{raw}"));
    assert_eq!(metrics["response_code"], 404, "{raw}");
    assert!(metrics["authz_decision"].is_null(), "{raw}");

    // The token, or any 12-character piece of it, is nowhere in the access log or Envoy's log.
    let bytes = secret.as_bytes();
    for text in [raw.as_str(), f.envoy.log().as_str()] {
        for w in bytes.windows(12) {
            let w = std::str::from_utf8(w).unwrap();
            assert!(!text.contains(w), "a piece of the token ({w}) was logged");
        }
        assert!(!text.to_ascii_lowercase().contains("bearer"));
    }
    assert!(
        !raw.contains("checkout"),
        "query strings are not logged:\n{raw}"
    );
}

/// tenant-authz unreachable: every routed request is a 503 (fail closed), never forwarded;
/// the 404 routes do not depend on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_frontend_fails_closed_without_tenant_authz() {
    let closed = free_port();
    let f = Frontend::start_with(
        QUERY,
        &[QUERY_LISTENER],
        &[TEMPO_QUERY_FRONTEND],
        Some(closed),
    )
    .await;
    let base = format!("https://127.0.0.1:{}", f.port(QUERY_LISTENER));
    for client in [f.https(true), f.https(false)] {
        for (method, path) in [("GET", "/api/search"), ("PUT", "/api/overrides")] {
            let r = send(&client, method, &format!("{base}{path}"), Vec::new(), None).await;
            assert_eq!(r.status, 503, "{method} {path}: {}\n{}", r.body, f.diag());
        }
        let r = send(&client, "GET", &format!("{base}/metrics"), Vec::new(), None).await;
        assert_eq!(r.status, 404);
    }
    assert!(f.upstream.requests().is_empty(), "nothing reached Tempo");
    let status = grpc_call(
        f.port(QUERY_LISTENER),
        &f.certs,
        "/tempopb.StreamingQuerier/Search",
    )
    .await
    .expect_err("fails closed");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
}
