//! The Loki and Mimir frontends (`envoy/loki-frontend.yaml`, `envoy/mimir-frontend.yaml`)
//! behind the real Envoy 1.40, with the real tenant-authz (static backend, grants per product)
//! and recording upstreams: a Loki push, a Loki tail WebSocket upgrade, a delete request, a
//! Prometheus remote-write body, PromQL queries, the Alertmanager config.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use support::authz::AuthzProcess;
use support::envoy::{
    free_port, localize, production_config, socket, write_server_certs, Envoy, ACCESS_LOG_PATH,
    ADMIN_ADDRESS, DISTRIBUTOR_OTLP_GRPC, PLATFORM_TRACES_TENANT, PROBES_LISTENER, TENANT_AUTHZ,
    TLS_CERT_PATH, TLS_KEY_PATH,
};
use support::tls::TestCerts;
use support::upstream::Upstream;

const LOKI: &str = "loki-frontend.yaml";
const MIMIR: &str = "mimir-frontend.yaml";

const LOKI_LISTENER: &str = "{ address: 0.0.0.0, port_value: 3100 }";
const LOKI_WRITE: &str = "{ address: loki-write.monitoring.svc.cluster.local, port_value: 3100 }";
const LOKI_READ: &str = "{ address: loki-read.monitoring.svc.cluster.local, port_value: 3100 }";
const LOKI_BACKEND: &str =
    "{ address: loki-backend.monitoring.svc.cluster.local, port_value: 3100 }";
const MIMIR_LISTENER: &str = "{ address: 0.0.0.0, port_value: 8080 }";
const MIMIR_DISTRIBUTOR: &str =
    "{ address: mimir-distributor.monitoring.svc.cluster.local, port_value: 8080 }";
const MIMIR_QUERY_FRONTEND: &str =
    "{ address: mimir-query-frontend.monitoring.svc.cluster.local, port_value: 8080 }";
const MIMIR_RULER: &str = "{ address: mimir-ruler.monitoring.svc.cluster.local, port_value: 8080 }";
const MIMIR_ALERTMANAGER: &str =
    "{ address: mimir-alertmanager.monitoring.svc.cluster.local, port_value: 8080 }";

fn deployment_values(file: &str) -> Vec<&'static str> {
    let common = [
        PROBES_LISTENER,
        ADMIN_ADDRESS,
        TENANT_AUTHZ,
        DISTRIBUTOR_OTLP_GRPC,
        PLATFORM_TRACES_TENANT,
        TLS_CERT_PATH,
        TLS_KEY_PATH,
        ACCESS_LOG_PATH,
    ];
    let own: &[&'static str] = match file {
        LOKI => &[LOKI_LISTENER, LOKI_WRITE, LOKI_READ, LOKI_BACKEND],
        MIMIR => &[
            MIMIR_LISTENER,
            MIMIR_DISTRIBUTOR,
            MIMIR_QUERY_FRONTEND,
            MIMIR_RULER,
            MIMIR_ALERTMANAGER,
        ],
        other => panic!("{other}"),
    };
    own.iter().copied().chain(common).collect()
}

/// Tokens of the test: who they are and what the static backend grants them (on `showcase`).
const LOG_AGENT: &str = "logs-agent-token-not-secret"; // loki write
const METRICS_AGENT: &str = "metrics-agent-token-not-secret"; // mimir write
const TRACES_COLLECTOR: &str = "traces-collector-token-not-secret"; // tempo write
const GRAFANA: &str = "grafana-token-not-secret"; // loki + mimir read

fn static_config() -> String {
    let id = |token: &str, user: &str| {
        format!(
            "  - sha256: {}\n    username: system:serviceaccount:showcase:{user}\n",
            tenant_authz::cli::hash_token(token).unwrap()
        )
    };
    let grant = |user: &str, products: &str, actions: &str| {
        format!(
            "  - users: [system:serviceaccount:showcase:{user}]\n    tenants: [showcase]\n    products: [{products}]\n    actions: [{actions}]\n"
        )
    };
    format!(
        "backend: static\nstatic:\n  identities:\n{}{}{}{}  grants:\n{}{}{}{}",
        id(LOG_AGENT, "promtail"),
        id(METRICS_AGENT, "prometheus"),
        id(TRACES_COLLECTOR, "otel-collector"),
        id(GRAFANA, "grafana"),
        grant("promtail", "loki", "write"),
        grant("prometheus", "mimir", "write"),
        grant("otel-collector", "tempo", "write"),
        grant("grafana", "loki, mimir", "read"),
    )
}

/// One request as the raw upstream saw it (method, path, lowercase headers).
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP/1.1 upstream that accepts WebSocket upgrades (101, then one text frame) and answers
/// anything else 200 `ok`: Loki's read path, where `/loki/api/v1/tail` lives.
struct WebSocketUpstream {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WebSocketUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WebSocketUpstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let record = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let record = record.clone();
                tokio::spawn(async move {
                    let Some(head) = read_head(&mut conn).await else {
                        return;
                    };
                    let seen = parse_head(&head);
                    let upgrade = seen
                        .header("upgrade")
                        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
                    record.lock().unwrap().push(seen);
                    if upgrade {
                        let _ = conn
                            .write_all(
                                b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
                            )
                            .await;
                        // One unmasked text frame, as Loki sends a tail response.
                        let payload = br#"{"streams":[]}"#;
                        let mut frame = vec![0x81, payload.len() as u8];
                        frame.extend_from_slice(payload);
                        let _ = conn.write_all(&frame).await;
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    } else {
                        let _ = conn
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                            .await;
                    }
                });
            }
        });
        Self { port, seen, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn read_head<S: AsyncReadExt + Unpin>(conn: &mut S) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte).await.ok()? == 0 || buf.len() > 64 * 1024 {
            return None;
        }
        buf.push(byte[0]);
    }
    String::from_utf8(buf).ok()
}

fn parse_head(head: &str) -> Seen {
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_string();
    let path = first.next().unwrap_or("").to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Seen {
        method,
        path,
        headers,
    }
}

/// Envoy with one production config, the real tenant-authz and local upstreams.
struct Frontend {
    envoy: Envoy,
    authz: AuthzProcess,
    certs: TestCerts,
    port: u16,
    _dirs: Vec<tempfile::TempDir>,
}

impl Frontend {
    /// `upstreams`: each deployment value of an upstream, and the local port it becomes.
    async fn start(file: &str, listener: &str, upstreams: &[(&str, u16)]) -> Frontend {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("tenant-authz.yaml");
        std::fs::write(&config, static_config()).unwrap();
        let authz = AuthzProcess::start_with_config(&config, &[]).await;
        let certs = TestCerts::generate();
        let cert_dir = tempfile::tempdir().unwrap();
        let mut replacements: Vec<(&str, String)> = write_server_certs(cert_dir.path(), &certs)
            .into_iter()
            .collect();
        let port = free_port();
        replacements.push((listener, socket("127.0.0.1", port)));
        replacements.push((PROBES_LISTENER, socket("127.0.0.1", free_port())));
        replacements.push((ADMIN_ADDRESS, socket("127.0.0.1", free_port())));
        for (value, port) in upstreams {
            replacements.push((value, socket("127.0.0.1", *port)));
        }
        replacements.push((TENANT_AUTHZ, socket("127.0.0.1", authz.grpc_port)));
        // Envoy's own spans (1 % of requests) go nowhere here: a closed port.
        replacements.push((DISTRIBUTOR_OTLP_GRPC, socket("127.0.0.1", free_port())));
        replacements.push((ACCESS_LOG_PATH, "{{ACCESS_LOG}}".to_string()));
        let envoy = Envoy::start(&localize(file, &replacements), &[]).await;
        Frontend {
            envoy,
            authz,
            certs,
            port,
            _dirs: vec![dir, cert_dir],
        }
    }

    fn https(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.certs.ca_cert_pem.as_bytes()).unwrap(),
            )
            .no_proxy()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap()
    }

    /// Sends one request as `token` for tenant `showcase`; (status, body).
    async fn send(
        &self,
        method: &str,
        path: &str,
        token: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, String) {
        let url = format!("https://127.0.0.1:{}{path}", self.port);
        let mut req = self
            .https()
            .request(method.parse().unwrap(), &url)
            .header("authorization", format!("Bearer {token}"))
            .header("x-scope-orgid", "showcase")
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e:?}\n{}", self.diag()));
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    fn diag(&self) -> String {
        format!(
            "access log:\n{}\n--- tenant-authz log (tail) ---\n{}",
            self.envoy.access_log(),
            tail(&self.authz.log(), 3000)
        )
    }
}

fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Both files pass `envoy --mode validate` as shipped (only the certificate paths point at
/// real files), and every deployment value is listed in the header and used exactly once.
#[test]
fn loki_and_mimir_frontends_validate() {
    let certs = TestCerts::generate();
    for file in [LOKI, MIMIR] {
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
                (in_comments, in_config),
                (1, 1),
                "{file}: {value:?} must be listed once in the header and used once"
            );
        }
        let product = file.split('-').next().unwrap();
        assert!(
            !shipped.contains("context_extensions: { action")
                && shipped.contains(&format!(
                    "context_extensions: {{ product: {product}, action: "
                )),
            "{file}: every checked route names its product"
        );
        let dir = tempfile::tempdir().unwrap();
        let yaml = localize(file, &write_server_certs(dir.path(), &certs));
        if let Err(e) = Envoy::validate(&yaml, &[]) {
            panic!("envoy/{file}: {e}");
        }
    }
}

/// The kustomization ships the two new frontends as ConfigMaps, byte for byte these files.
#[test]
fn kustomization_ships_the_loki_and_mimir_frontends() {
    let k = production_config("kustomization.yaml");
    for (name, file) in [
        ("loki-frontend-envoy", LOKI),
        ("mimir-frontend-envoy", MIMIR),
    ] {
        assert!(k.contains(&format!("- name: {name}")), "{name}");
        assert!(k.contains(&format!("envoy.yaml={file}")), "{file}");
    }
}

/// A Loki push with a log shipper's token, queries and a tail WebSocket with Grafana's, and
/// the denials in between: another product's token, a read token on delete requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loki_frontend_push_query_tail_and_delete() {
    let write = Upstream::start().await;
    let read = WebSocketUpstream::start().await;
    let backend = Upstream::start().await;
    let f = Frontend::start(
        LOKI,
        LOKI_LISTENER,
        &[
            (LOKI_WRITE, write.port),
            (LOKI_READ, read.port),
            (LOKI_BACKEND, backend.port),
        ],
    )
    .await;
    let now_ns = "1764450000000000000";
    let push = format!(
        r#"{{"streams":[{{"stream":{{"app":"checkout","level":"info"}},"values":[["{now_ns}","order 42 paid"]]}}]}}"#
    );
    let json = [("content-type", "application/json")];

    // A Loki push: write on logs.
    let (status, body) = f
        .send(
            "POST",
            "/loki/api/v1/push",
            LOG_AGENT,
            &json,
            push.clone().into_bytes(),
        )
        .await;
    assert_eq!(status, 200, "{body}\n{}", f.diag());
    let pushed = write.requests();
    let pushed = pushed
        .iter()
        .find(|r| r.path == "/loki/api/v1/push")
        .unwrap_or_else(|| panic!("push never reached Loki\n{}", f.diag()));
    assert_eq!(pushed.header_all("authorization"), Vec::<&str>::new());
    assert_eq!(pushed.header_all("x-scope-orgid"), vec!["showcase"]);
    assert_eq!(pushed.body_len, push.len());

    // A traces collector's token may write traces, not logs.
    let (status, body) = f
        .send(
            "POST",
            "/loki/api/v1/push",
            TRACES_COLLECTOR,
            &json,
            push.into_bytes(),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("may not write logs of tenant \"showcase\""),
        "{body}"
    );

    // Queries: read on logs; a write-only token may not query.
    let query = "/loki/api/v1/query_range?query=%7Bapp%3D%22checkout%22%7D&limit=10";
    let (status, body) = f.send("GET", query, GRAFANA, &[], vec![]).await;
    assert_eq!(status, 200, "{body}\n{}", f.diag());
    let (status, body) = f.send("GET", query, LOG_AGENT, &[], vec![]).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("may not read logs"), "{body}");

    // Delete requests are never a read: listing them needs manage.
    let (status, body) = f
        .send("GET", "/loki/api/v1/delete", GRAFANA, &[], vec![])
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("may not manage logs"), "{body}");
    assert!(
        backend.requests().is_empty(),
        "a denied delete reached Loki"
    );

    // Operations endpoints: 404 without a Check.
    let (status, _) = f
        .send("GET", "/ingester/shutdown", GRAFANA, &[], vec![])
        .await;
    assert_eq!(status, 404);
    let (status, _) = f.send("GET", "/config", GRAFANA, &[], vec![]).await;
    assert_eq!(status, 404);

    // The tail WebSocket: the upgrade is authorized as a read and relayed end to end.
    let (status, first_frame) = websocket_tail(&f, GRAFANA).await;
    assert_eq!(status, 101, "{}", f.diag());
    assert_eq!(first_frame, br#"{"streams":[]}"#.to_vec());
    let tail = read
        .seen()
        .into_iter()
        .find(|s| s.path.starts_with("/loki/api/v1/tail"))
        .unwrap_or_else(|| panic!("tail never reached Loki\n{}", f.diag()));
    assert_eq!(tail.method, "GET");
    assert_eq!(tail.header("upgrade"), Some("websocket"));
    assert_eq!(tail.header("x-scope-orgid"), Some("showcase"));
    assert_eq!(tail.header("authorization"), None);
    // A write-only token gets a 403 instead of an upgrade.
    let (status, _) = websocket_tail(&f, LOG_AGENT).await;
    assert_eq!(status, 403);
}

/// Opens `GET /loki/api/v1/tail` as a WebSocket over TLS (HTTP/1.1); returns the status and,
/// after a 101, the first frame's payload.
async fn websocket_tail(f: &Frontend, token: &str) -> (u16, Vec<u8>) {
    let tcp = TcpStream::connect(("127.0.0.1", f.port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(f.certs.client_config())
        .connect(name, tcp)
        .await
        .unwrap();
    let request = format!(
        "GET /loki/api/v1/tail?query=%7Bapp%3D%22checkout%22%7D HTTP/1.1\r\nhost: loki.example\r\n\
         upgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 13\r\n\
         sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nauthorization: Bearer {token}\r\n\
         x-scope-orgid: showcase\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let head = tokio::time::timeout(Duration::from_secs(10), read_head(&mut tls))
        .await
        .expect("an answer to the upgrade")
        .expect("a response head");
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if status != 101 {
        return (status, Vec::new());
    }
    let mut header = [0u8; 2];
    tls.read_exact(&mut header).await.unwrap();
    let mut payload = vec![0u8; (header[1] & 0x7f) as usize];
    tls.read_exact(&mut payload).await.unwrap();
    (status, payload)
}

/// A Prometheus remote-write body: a snappy-framed (block format) protobuf `WriteRequest` with
/// one series `up{job="node"} 1`, as Prometheus sends it.
fn remote_write_body() -> Vec<u8> {
    fn field(tag: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![tag, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }
    let label = |name: &str, value: &str| {
        let mut l = field(0x0a, name.as_bytes());
        l.extend(field(0x12, value.as_bytes()));
        field(0x0a, &l) // TimeSeries.labels = 1
    };
    let mut sample = vec![0x09]; // Sample.value = 1 (double)
    sample.extend_from_slice(&1.0f64.to_le_bytes());
    sample.extend_from_slice(&[0x10, 0x80, 0xe4, 0xa4, 0xc5, 0xb4, 0x33]); // timestamp (ms)
    let mut series = label("__name__", "up");
    series.extend(label("job", "node"));
    series.extend(field(0x12, &sample)); // TimeSeries.samples = 2
    let write_request = field(0x0a, &series); // WriteRequest.timeseries = 1
                                              // Snappy block format with literals only: varint length, then one literal element.
    let n = write_request.len();
    assert!(n < 60, "one literal element of at most 60 bytes");
    let mut out = vec![n as u8, ((n - 1) as u8) << 2];
    out.extend_from_slice(&write_request);
    out
}

/// Remote write with Prometheus's token, PromQL with Grafana's, and the denials: each token on
/// the other's product action, the Alertmanager configuration (manage) with a read token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mimir_frontend_remote_write_and_queries() {
    let distributor = Upstream::start().await;
    let query_frontend = Upstream::start().await;
    let ruler = Upstream::start().await;
    let alertmanager = Upstream::start().await;
    let f = Frontend::start(
        MIMIR,
        MIMIR_LISTENER,
        &[
            (MIMIR_DISTRIBUTOR, distributor.port),
            (MIMIR_QUERY_FRONTEND, query_frontend.port),
            (MIMIR_RULER, ruler.port),
            (MIMIR_ALERTMANAGER, alertmanager.port),
        ],
    )
    .await;
    let body = remote_write_body();
    let rw = [
        ("content-type", "application/x-protobuf"),
        ("content-encoding", "snappy"),
        ("x-prometheus-remote-write-version", "0.1.0"),
    ];
    let (status, text) = f
        .send("POST", "/api/v1/push", METRICS_AGENT, &rw, body.clone())
        .await;
    assert_eq!(status, 200, "{text}\n{}", f.diag());
    let got = distributor.requests();
    let got = got
        .iter()
        .find(|r| r.path == "/api/v1/push")
        .unwrap_or_else(|| panic!("remote write never reached Mimir\n{}", f.diag()));
    assert_eq!(got.body_len, body.len());
    assert_eq!(got.header("content-encoding"), Some("snappy"));
    assert_eq!(got.header_all("x-scope-orgid"), vec!["showcase"]);
    assert!(got.header("authorization").is_none());

    // Grafana's read token may not write metrics; the traces collector may not either.
    for token in [GRAFANA, TRACES_COLLECTOR] {
        let (status, text) = f
            .send("POST", "/api/v1/push", token, &rw, body.clone())
            .await;
        assert_eq!(status, 403, "{text}");
        assert!(text.contains("may not write metrics"), "{text}");
    }

    // PromQL: read on metrics, GET and POST.
    let (status, text) = f
        .send(
            "GET",
            "/prometheus/api/v1/query?query=up",
            GRAFANA,
            &[],
            vec![],
        )
        .await;
    assert_eq!(status, 200, "{text}\n{}", f.diag());
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let (status, text) = f
        .send(
            "POST",
            "/prometheus/api/v1/query_range",
            GRAFANA,
            &form,
            b"query=up&start=0&end=60&step=15".to_vec(),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    assert!(query_frontend
        .requests()
        .iter()
        .any(|r| r.path == "/prometheus/api/v1/query_range"));
    let (status, _) = f
        .send(
            "GET",
            "/prometheus/api/v1/query?query=up",
            METRICS_AGENT,
            &[],
            vec![],
        )
        .await;
    assert_eq!(status, 403);

    // The Alertmanager configuration holds receivers' credentials: reading it is manage.
    let (status, text) = f.send("GET", "/api/v1/alerts", GRAFANA, &[], vec![]).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("may not manage metrics"), "{text}");
    assert!(alertmanager.requests().is_empty());

    // Every tenant's stats, and anything the file does not name: 404 without a Check.
    for path in [
        "/distributor/all_user_stats",
        "/api/v1/upload/block/x/start",
    ] {
        let (status, _) = f.send("GET", path, GRAFANA, &[], vec![]).await;
        assert_eq!(status, 404, "{path}");
    }
}
