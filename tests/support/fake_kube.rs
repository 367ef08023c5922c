//! A fake Kubernetes API server for tests.
//!
//! It listens on `127.0.0.1:0` over real HTTPS (rustls + hyper, HTTP/1.1 and h2) and is
//! reached by the real `kube::Client` through a generated kubeconfig file. It implements:
//!
//! * `POST /apis/authentication.k8s.io/v1/tokenreviews`
//! * `POST /apis/authorization.k8s.io/v1/subjectaccessreviews` (RBAC-like evaluation of grants)
//! * `GET /version`
//!
//! Answers mimic the JSON of a real kube-apiserver: `201 Created` for reviews, `metadata`
//! echoed with `creationTimestamp: null`, Go `omitempty` semantics (an unauthenticated
//! TokenReview status has no `authenticated` field; a denied SAR status is just
//! `{"allowed":false}`), and `Status` objects for errors (401, 400, 404, 405, 422, 500).
//!
//! Every request must carry `Authorization: Bearer <client token>`, the token written into the
//! kubeconfig (the identity of tenant-authz itself).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use super::tls::TestCerts;

/// Path of the TokenReview collection.
pub const TOKEN_REVIEWS_PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
/// Path of the SubjectAccessReview collection.
pub const SUBJECT_ACCESS_REVIEWS_PATH: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
/// The audience of the fake API server itself (the real default of kube-apiserver).
pub const DEFAULT_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";
/// API group of Tempo traces, used by [`FakeKube::grant`].
pub const TEMPO_API_GROUP: &str = "tempo.grafana.com";
/// Resource of Tempo traces, used by [`FakeKube::grant`].
pub const TEMPO_RESOURCE: &str = "traces";

/// The user a token authenticates as.
#[derive(Clone, Debug)]
pub struct FakeUser {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl FakeUser {
    /// A ServiceAccount user: `system:serviceaccount:<ns>:<name>`, groups
    /// `system:serviceaccounts`, `system:serviceaccounts:<ns>`, `system:authenticated`,
    /// a stable uid derived from the name, and no `extra` (see [`FakeUser::with_pod`]).
    pub fn service_account(namespace: &str, name: &str) -> FakeUser {
        FakeUser {
            username: format!("system:serviceaccount:{namespace}:{name}"),
            uid: pseudo_uuid(&format!("serviceaccount/{namespace}/{name}")),
            groups: vec![
                "system:serviceaccounts".to_string(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".to_string(),
            ],
            extra: BTreeMap::new(),
        }
    }

    /// A plain user with the given groups (plus `system:authenticated`).
    pub fn user(username: &str, groups: &[&str]) -> FakeUser {
        let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".to_string());
        }
        FakeUser {
            username: username.to_string(),
            uid: pseudo_uuid(&format!("user/{username}")),
            groups,
            extra: BTreeMap::new(),
        }
    }

    /// Adds the `extra` of a pod-bound projected ServiceAccount token, like the real server:
    /// `authentication.kubernetes.io/{credential-id,pod-name,pod-uid}`.
    pub fn with_pod(mut self, pod_name: &str) -> FakeUser {
        let pod_uid = pseudo_uuid(&format!("pod/{}/{pod_name}", self.username));
        self.extra.insert(
            "authentication.kubernetes.io/credential-id".to_string(),
            vec![format!(
                "JTI={}",
                pseudo_uuid(&format!("jti/{}/{pod_name}", self.username))
            )],
        );
        self.extra.insert(
            "authentication.kubernetes.io/pod-name".to_string(),
            vec![pod_name.to_string()],
        );
        self.extra.insert(
            "authentication.kubernetes.io/pod-uid".to_string(),
            vec![pod_uid],
        );
        self
    }
}

/// The subject of a grant (RBAC binding subject).
#[derive(Clone, Debug)]
pub enum Subject {
    /// Matches `spec.user` of a SubjectAccessReview (e.g. `system:serviceaccount:ns:name`).
    User(String),
    /// Matches any entry of `spec.groups`.
    Group(String),
}

/// Which review endpoint a fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReviewKind {
    TokenReview,
    SubjectAccessReview,
}

/// An injected failure of the review endpoints.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    /// Answer normally.
    None,
    /// Answer `500 Internal Server Error` with a `Status` (reason `InternalError`).
    Status500,
    /// Sleep this long, then answer normally.
    Slow(Duration),
    /// Drop the connection without any HTTP answer (the client sees a connection error).
    CloseConnection,
    /// Answer `201 Created` with the request echoed (a TokenReview's `spec.token` included, as
    /// the real server does) and a `status` the client cannot parse.
    UnparsableEcho,
}

/// A general RBAC-like rule: `subject` may `verbs` on `api_group`/`resource` (optionally only
/// the object `name`) in `namespace` (`None` = cluster-wide, like a ClusterRoleBinding).
///
/// `api_group`, `resource` and each verb accept `*`. `resource` may be `res/subresource`.
#[derive(Clone, Debug)]
pub struct GrantRule {
    pub subject: Subject,
    pub namespace: Option<String>,
    pub api_group: String,
    pub resource: String,
    pub name: Option<String>,
    pub verbs: Vec<String>,
}

impl GrantRule {
    /// A rule with no `name` restriction.
    pub fn new(
        subject: Subject,
        namespace: Option<&str>,
        api_group: &str,
        resource: &str,
        verbs: &[&str],
    ) -> GrantRule {
        GrantRule {
            subject,
            namespace: namespace.map(str::to_string),
            api_group: api_group.to_string(),
            resource: resource.to_string(),
            name: None,
            verbs: verbs.iter().map(|v| v.to_string()).collect(),
        }
    }

    /// Restricts the rule to one object name (`resourceNames` in RBAC).
    pub fn with_name(mut self, name: &str) -> GrantRule {
        self.name = Some(name.to_string());
        self
    }
}

/// A scripted answer to a review: whatever a lying, broken or echoing API server (or a proxy
/// in front of it) might send. Built from the parsed request, so it can echo `spec.token`.
#[derive(Clone, Debug)]
pub struct Scripted {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Scripted {
    /// A JSON answer with this status.
    pub fn json(status: u16, body: Value) -> Scripted {
        Scripted {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string(),
        }
    }

    /// A non-JSON answer with this status and content type.
    pub fn text(status: u16, content_type: &str, body: &str) -> Scripted {
        Scripted {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body: body.to_string(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &str, value: &str) -> Scripted {
        self.headers.push((name.into(), value.into()));
        self
    }
}

type Script = Arc<dyn Fn(&Value) -> Scripted + Send + Sync>;

#[derive(Clone, Debug)]
struct TokenEntry {
    user: FakeUser,
    audiences: Vec<String>,
}

struct State {
    tokens: HashMap<String, TokenEntry>,
    grants: Vec<GrantRule>,
    token_review_fault: Fault,
    sar_fault: Fault,
    token_review_script: Option<Script>,
    sar_script: Option<Script>,
    latency: Duration,
    received_token_reviews: Vec<Value>,
    received_subject_access_reviews: Vec<Value>,
}

struct Shared {
    client_token: String,
    state: Mutex<State>,
    token_reviews: AtomicUsize,
    subject_access_reviews: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not poison the fake for the server task.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running fake API server. The server task (and all its connections) is aborted on drop.
pub struct FakeKube {
    shared: Arc<Shared>,
    addr: SocketAddr,
    certs: TestCerts,
    tempdir: tempfile::TempDir,
    kubeconfig_path: PathBuf,
    server: JoinHandle<()>,
}

impl fmt::Debug for FakeKube {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeKube")
            .field("addr", &self.addr)
            .field("kubeconfig_path", &self.kubeconfig_path)
            .finish_non_exhaustive()
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The error a service returns to make hyper drop the connection without an answer.
#[derive(Debug)]
struct DropConnection;

impl fmt::Display for DropConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("fake kube: connection dropped on purpose")
    }
}

impl std::error::Error for DropConnection {}

type Resp = Response<Full<Bytes>>;

impl FakeKube {
    /// Starts the server on `127.0.0.1:0` and writes a kubeconfig pointing at it.
    pub async fn start() -> FakeKube {
        // kube's rustls connector uses the process-default provider.
        let _ = rustls::crypto::ring::default_provider().install_default();

        let certs = TestCerts::generate();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake kube-apiserver on 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr of the listener");
        let shared = Arc::new(Shared {
            client_token: format!("fake-kube-client-token-{}", unique_suffix()),
            state: Mutex::new(State {
                tokens: HashMap::new(),
                grants: Vec::new(),
                token_review_fault: Fault::None,
                sar_fault: Fault::None,
                token_review_script: None,
                sar_script: None,
                latency: Duration::ZERO,
                received_token_reviews: Vec::new(),
                received_subject_access_reviews: Vec::new(),
            }),
            token_reviews: AtomicUsize::new(0),
            subject_access_reviews: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });

        let acceptor = tokio_rustls::TlsAcceptor::from(certs.server_config());
        let server = tokio::spawn(accept_loop(listener, acceptor, shared.clone()));

        let tempdir = tempfile::tempdir().expect("create temp dir for the kubeconfig");
        let kubeconfig_path = tempdir.path().join("kubeconfig");
        let fake = FakeKube {
            shared,
            addr,
            certs,
            tempdir,
            kubeconfig_path,
            server,
        };
        fake.write_kubeconfig_to(&fake.kubeconfig_path);
        fake
    }

    /// The kubeconfig file (server URL, CA data, client token) of this server.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// Writes the kubeconfig of this server (with the right client token) to `path`.
    pub fn write_kubeconfig_to(&self, path: &Path) {
        std::fs::write(path, self.kubeconfig_yaml(&self.shared.client_token))
            .expect("write kubeconfig file");
    }

    /// The kubeconfig YAML of this server, authenticating with `token`.
    pub fn kubeconfig_yaml(&self, token: &str) -> String {
        let ca_data = base64::engine::general_purpose::STANDARD.encode(&self.certs.ca_cert_pem);
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: fake-kube
  cluster:
    server: {url}
    certificate-authority-data: {ca_data}
users:
- name: tenant-authz
  user:
    token: {token}
contexts:
- name: fake-kube
  context:
    cluster: fake-kube
    user: tenant-authz
    namespace: default
current-context: fake-kube
preferences: {{}}
",
            url = self.url(),
        )
    }

    /// A real `kube::Client` built from [`FakeKube::kubeconfig_path`].
    pub async fn client(&self) -> kube::Client {
        client_from_kubeconfig(&self.kubeconfig_path).await
    }

    /// A real `kube::Client` for this server that authenticates with another bearer token.
    pub async fn client_with_token(&self, token: &str) -> kube::Client {
        let path = self
            .tempdir
            .path()
            .join(format!("kubeconfig-{}", unique_suffix()));
        std::fs::write(&path, self.kubeconfig_yaml(token)).expect("write kubeconfig file");
        client_from_kubeconfig(&path).await
    }

    /// The bearer token the fake expects from its clients (in the kubeconfig).
    pub fn client_token(&self) -> &str {
        &self.shared.client_token
    }

    /// PEM of the CA that signed the server certificate.
    pub fn ca_pem(&self) -> &str {
        &self.certs.ca_cert_pem
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Makes `token` authenticate as `user` (any requested audience is accepted).
    pub fn add_token(&self, token: &str, user: FakeUser) {
        self.add_token_with_audiences(token, user, &[]);
    }

    /// Makes `token` authenticate as `user` only for requests whose `spec.audiences` is empty
    /// or intersects `audiences`.
    pub fn add_token_with_audiences(&self, token: &str, user: FakeUser, audiences: &[&str]) {
        let audiences = audiences.iter().map(|a| a.to_string()).collect();
        self.shared
            .state()
            .tokens
            .insert(token.to_string(), TokenEntry { user, audiences });
    }

    /// Forgets `token` (it then fails to authenticate, like a revoked token).
    pub fn remove_token(&self, token: &str) {
        self.shared.state().tokens.remove(token);
    }

    /// Allows `verb` on `tempo.grafana.com`/`traces` in `namespace` for `subject`.
    pub fn grant(&self, subject: Subject, namespace: &str, verb: &str) {
        self.grant_rule(GrantRule::new(
            subject,
            Some(namespace),
            TEMPO_API_GROUP,
            TEMPO_RESOURCE,
            &[verb],
        ));
    }

    /// Adds a general rule.
    pub fn grant_rule(&self, rule: GrantRule) {
        self.shared.state().grants.push(rule);
    }

    /// Removes every grant.
    pub fn clear_grants(&self) {
        self.shared.state().grants.clear();
    }

    /// Sets the fault of both review endpoints.
    pub fn set_fault(&self, fault: Fault) {
        let mut state = self.shared.state();
        state.token_review_fault = fault;
        state.sar_fault = fault;
    }

    /// Sets the fault of one review endpoint.
    pub fn set_fault_for(&self, kind: ReviewKind, fault: Fault) {
        let mut state = self.shared.state();
        match kind {
            ReviewKind::TokenReview => state.token_review_fault = fault,
            ReviewKind::SubjectAccessReview => state.sar_fault = fault,
        }
    }

    /// Answers every review of `kind` with `script(request)` (after faults and latency, and
    /// only for requests with the right client token), until [`FakeKube::clear_script`].
    pub fn script(
        &self,
        kind: ReviewKind,
        script: impl Fn(&Value) -> Scripted + Send + Sync + 'static,
    ) {
        let script: Script = Arc::new(script);
        let mut state = self.shared.state();
        match kind {
            ReviewKind::TokenReview => state.token_review_script = Some(script),
            ReviewKind::SubjectAccessReview => state.sar_script = Some(script),
        }
    }

    /// Back to the normal answers for `kind`.
    pub fn clear_script(&self, kind: ReviewKind) {
        let mut state = self.shared.state();
        match kind {
            ReviewKind::TokenReview => state.token_review_script = None,
            ReviewKind::SubjectAccessReview => state.sar_script = None,
        }
    }

    /// Latency added to every review answer (on top of a `Fault::Slow`).
    pub fn set_latency(&self, d: Duration) {
        self.shared.state().latency = d;
    }

    /// Number of TokenReview POSTs received (including faulted and unauthorized ones).
    pub fn token_reviews(&self) -> usize {
        self.shared.token_reviews.load(Ordering::SeqCst)
    }

    /// Number of SubjectAccessReview POSTs received (including faulted and unauthorized ones).
    pub fn subject_access_reviews(&self) -> usize {
        self.shared.subject_access_reviews.load(Ordering::SeqCst)
    }

    /// Maximum number of review requests seen in flight at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Resets the counters, the in-flight maximum and the recorded request bodies.
    pub fn reset_counts(&self) {
        self.shared.token_reviews.store(0, Ordering::SeqCst);
        self.shared
            .subject_access_reviews
            .store(0, Ordering::SeqCst);
        self.shared.max_in_flight.store(
            self.shared.in_flight.load(Ordering::SeqCst),
            Ordering::SeqCst,
        );
        let mut state = self.shared.state();
        state.received_token_reviews.clear();
        state.received_subject_access_reviews.clear();
    }

    /// TokenReview request bodies as received (non-JSON bodies as a JSON string).
    pub fn received_token_reviews(&self) -> Vec<Value> {
        self.shared.state().received_token_reviews.clone()
    }

    /// SubjectAccessReview request bodies as received (non-JSON bodies as a JSON string).
    pub fn received_subject_access_reviews(&self) -> Vec<Value> {
        self.shared.state().received_subject_access_reviews.clone()
    }

    /// Sends one raw HTTP/1.1 request over TLS (trusting the fake's CA), with
    /// `Connection: close`, and returns the status code and the body. `bearer: None` sends
    /// no `Authorization` header. For tests that need exact bytes or malformed input.
    pub async fn raw_request(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: &[u8],
    ) -> (u16, String) {
        let connector = tokio_rustls::TlsConnector::from(self.certs.client_config());
        let tcp = TcpStream::connect(self.addr)
            .await
            .expect("connect to the fake kube-apiserver");
        let server_name = rustls::pki_types::ServerName::try_from("127.0.0.1")
            .expect("127.0.0.1 is a valid server name");
        let mut tls = connector
            .connect(server_name, tcp)
            .await
            .expect("TLS handshake with the fake kube-apiserver");
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        if let Some(token) = bearer {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        head.push_str("\r\n");
        tls.write_all(head.as_bytes())
            .await
            .expect("write request head");
        tls.write_all(body).await.expect("write request body");
        tls.flush().await.expect("flush request");
        let mut raw = Vec::new();
        // The server may close without close_notify; keep what was read.
        let _ = tls.read_to_end(&mut raw).await;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .expect("HTTP response has a head and a body");
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .expect("HTTP response has a status code");
        (status, body.to_string())
    }
}

async fn client_from_kubeconfig(path: &Path) -> kube::Client {
    let kubeconfig =
        kube::config::Kubeconfig::read_from(path).expect("read the fake's kubeconfig file");
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("kube::Config from the fake's kubeconfig");
    kube::Client::try_from(config).expect("kube::Client from the fake's kubeconfig")
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
) {
    // Connections live in the JoinSet, so aborting this task aborts them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _peer)) = accepted else { continue };
                let acceptor = acceptor.clone();
                let shared = shared.clone();
                connections.spawn(serve_connection(tcp, acceptor, shared));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(
    tcp: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
) {
    let _ = tcp.set_nodelay(true);
    let Ok(tls) = acceptor.accept(tcp).await else {
        return;
    };
    let service = hyper::service::service_fn(move |req| handle(shared.clone(), req));
    // A service error (Fault::CloseConnection) makes hyper drop the connection unanswered.
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(tls), service)
        .await;
}

/// Decrements the in-flight gauge when the review ends (even if cancelled).
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> InFlight<'a> {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Resp, DropConnection> {
    let path = req.uri().path().to_string();
    let kind = match path.as_str() {
        TOKEN_REVIEWS_PATH => Some(ReviewKind::TokenReview),
        SUBJECT_ACCESS_REVIEWS_PATH => Some(ReviewKind::SubjectAccessReview),
        _ => None,
    };
    let authorized = is_authorized(&shared, &req);

    let Some(kind) = kind.filter(|_| req.method() == Method::POST) else {
        // Not a review POST.
        if !authorized {
            return Ok(unauthorized());
        }
        return Ok(match (req.method(), path.as_str()) {
            (&Method::GET, "/version") => json_response(StatusCode::OK, version_json()),
            (_, TOKEN_REVIEWS_PATH) | (_, SUBJECT_ACCESS_REVIEWS_PATH) => status_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "the server does not allow this method on the requested resource",
                "MethodNotAllowed",
                json!({}),
            ),
            _ => status_response(
                StatusCode::NOT_FOUND,
                "the server could not find the requested resource",
                "NotFound",
                json!({}),
            ),
        });
    };

    let _in_flight = InFlight::enter(&shared);
    match kind {
        ReviewKind::TokenReview => shared.token_reviews.fetch_add(1, Ordering::SeqCst),
        ReviewKind::SubjectAccessReview => {
            shared.subject_access_reviews.fetch_add(1, Ordering::SeqCst)
        }
    };

    let body = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Err(DropConnection),
    };
    let received = serde_json::from_slice::<Value>(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));

    let (fault, latency, script) = {
        let mut state = shared.state();
        match kind {
            ReviewKind::TokenReview => state.received_token_reviews.push(received.clone()),
            ReviewKind::SubjectAccessReview => {
                state.received_subject_access_reviews.push(received.clone())
            }
        }
        let (fault, script) = match kind {
            ReviewKind::TokenReview => {
                (state.token_review_fault, state.token_review_script.clone())
            }
            ReviewKind::SubjectAccessReview => (state.sar_fault, state.sar_script.clone()),
        };
        (fault, state.latency, script)
    };

    let mut delay = latency;
    if let Fault::Slow(d) = fault {
        delay += d;
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match fault {
        Fault::Status500 => {
            return Ok(status_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error occurred: fake kube-apiserver: injected fault",
                "InternalError",
                json!({"causes": [{"message": "fake kube-apiserver: injected fault"}]}),
            ))
        }
        Fault::CloseConnection => return Err(DropConnection),
        Fault::UnparsableEcho => {
            let mut echo = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
            if let Some(obj) = echo.as_object_mut() {
                obj.insert(
                    "status".into(),
                    json!({"authenticated": "sometimes", "user": 7}),
                );
            }
            return Ok(Response::builder()
                .status(StatusCode::CREATED)
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(echo.to_string())))
                .expect("static response parts"));
        }
        Fault::None | Fault::Slow(_) => {}
    }

    if !authorized {
        return Ok(unauthorized());
    }
    if let Some(script) = script {
        let answer = script(&received);
        let mut response = Response::builder().status(answer.status);
        for (name, value) in &answer.headers {
            response = response.header(name.as_str(), value.as_str());
        }
        return Ok(response
            .body(Full::new(Bytes::from(answer.body)))
            .expect("scripted response parts"));
    }

    Ok(match kind {
        ReviewKind::TokenReview => token_review(&shared, &body),
        ReviewKind::SubjectAccessReview => subject_access_review(&shared, &body),
    })
}

fn is_authorized(shared: &Shared, req: &Request<Incoming>) -> bool {
    req.headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t.trim() == shared.client_token)
}

/// Parses a review body like the apiserver decoder: JSON object, right apiVersion/kind if set.
/// The error is the message of a 400 BadRequest.
fn decode<T: serde::de::DeserializeOwned>(
    body: &[u8],
    api_version: &str,
    kind: &str,
) -> Result<(T, Value), String> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| format!("couldn't get version/kind; json parse error: {e}"))?;
    if !value.is_object() {
        return Err("couldn't get version/kind; json parse error: expected an object".to_string());
    }
    let got_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let got_kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    if (!got_version.is_empty() && got_version != api_version)
        || (!got_kind.is_empty() && got_kind != kind)
    {
        return Err(format!(
            "the API version in the data ({got_version}) does not match the expected API version ({api_version})"
        ));
    }
    let typed: T = serde_json::from_value(value.clone())
        .map_err(|e| format!("{kind} in version \"v1\" cannot be handled as a {kind}: {e}"))?;
    Ok((typed, value))
}

/// The echoed `metadata`: as sent, with `creationTimestamp: null` like the real server.
fn echo_metadata(request: &Value) -> Value {
    let mut metadata = request
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    metadata.entry("creationTimestamp").or_insert(Value::Null);
    Value::Object(metadata)
}

const TOKEN_REQUIRED: &str = "token is required for TokenReview in authentication";

fn token_review(shared: &Shared, body: &[u8]) -> Resp {
    let (review, raw) = match decode::<TokenReview>(body, "authentication.k8s.io/v1", "TokenReview")
    {
        Ok(decoded) => decoded,
        Err(message) => {
            // A JSON TokenReview without `spec.token` gets the message of the real server.
            let missing_token = serde_json::from_slice::<Value>(body)
                .ok()
                .filter(Value::is_object)
                .is_some_and(|v| v.pointer("/spec/token").is_none());
            if missing_token {
                return bad_request(TOKEN_REQUIRED);
            }
            return bad_request(&message);
        }
    };
    let token = review.spec.token.clone();
    if token.is_empty() {
        return bad_request(TOKEN_REQUIRED);
    }
    let requested: Vec<String> = review.spec.audiences.clone().unwrap_or_default();
    let entry = shared.state().tokens.get(&token).cloned();

    let status = match entry {
        None => unauthenticated("[invalid bearer token, token lookup failed]".to_string()),
        Some(entry) => {
            let audiences = if requested.is_empty() {
                if entry.audiences.is_empty() {
                    Ok(vec![DEFAULT_AUDIENCE.to_string()])
                } else {
                    Ok(entry.audiences.clone())
                }
            } else if entry.audiences.is_empty() {
                Ok(requested.clone())
            } else {
                let both: Vec<String> = entry
                    .audiences
                    .iter()
                    .filter(|a| requested.contains(a))
                    .cloned()
                    .collect();
                if both.is_empty() {
                    Err(format!(
                        "[invalid bearer token, token audiences {} is invalid for the target audiences {}]",
                        go_quoted_list(&entry.audiences),
                        go_quoted_list(&requested)
                    ))
                } else {
                    Ok(both)
                }
            };
            match audiences {
                Err(error) => unauthenticated(error),
                Ok(audiences) => json!({
                    "authenticated": true,
                    "user": user_info(&entry.user),
                    "audiences": audiences,
                }),
            }
        }
    };

    let spec = serde_json::to_value(&review.spec).expect("serialize TokenReviewSpec");
    json_response(
        StatusCode::CREATED,
        json!({
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": echo_metadata(&raw),
            "spec": spec,
            "status": status,
        }),
    )
}

/// Status of a failed authentication as the real server writes it: `authenticated` is
/// `omitempty` in Go, so it is absent; `user` is an empty object.
fn unauthenticated(error: String) -> Value {
    json!({ "user": {}, "error": error })
}

/// `UserInfo` with Go `omitempty` semantics.
fn user_info(user: &FakeUser) -> Value {
    let mut info = Map::new();
    if !user.username.is_empty() {
        info.insert("username".into(), json!(user.username));
    }
    if !user.uid.is_empty() {
        info.insert("uid".into(), json!(user.uid));
    }
    if !user.groups.is_empty() {
        info.insert("groups".into(), json!(user.groups));
    }
    if !user.extra.is_empty() {
        info.insert("extra".into(), json!(user.extra));
    }
    Value::Object(info)
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
fn go_quoted_list(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|s| serde_json::to_string(s).expect("serialize a string"))
        .collect();
    format!("[{}]", quoted.join(" "))
}

fn subject_access_review(shared: &Shared, body: &[u8]) -> Resp {
    let (review, raw) =
        match decode::<SubjectAccessReview>(body, "authorization.k8s.io/v1", "SubjectAccessReview")
        {
            Ok(decoded) => decoded,
            Err(message) => return bad_request(&message),
        };
    let spec = &review.spec;

    // ValidateSubjectAccessReviewSpec of the real server: 422 Invalid.
    let mut causes: Vec<(String, String)> = Vec::new();
    if spec.resource_attributes.is_some() && spec.non_resource_attributes.is_some() {
        causes.push((
            "spec.nonResourceAttributes".into(),
            "spec.nonResourceAttributes: Invalid value: \"object\": cannot be specified in combination with resourceAttributes".into(),
        ));
    }
    if spec.resource_attributes.is_none() && spec.non_resource_attributes.is_none() {
        causes.push((
            "spec.resourceAttributes".into(),
            "spec.resourceAttributes: Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified".into(),
        ));
    }
    let user = spec.user.clone().unwrap_or_default();
    let groups = spec.groups.clone().unwrap_or_default();
    if user.is_empty() && groups.is_empty() {
        causes.push((
            "spec.user".into(),
            "spec.user: Invalid value: \"\": at least one of user or group must be specified"
                .into(),
        ));
    }
    if !causes.is_empty() {
        let name = review.metadata.name.clone().unwrap_or_default();
        let joined: Vec<&str> = causes.iter().map(|(_, m)| m.as_str()).collect();
        let summary = if joined.len() == 1 {
            joined[0].to_string()
        } else {
            format!("[{}]", joined.join(", "))
        };
        let details_causes: Vec<Value> = causes
            .iter()
            .map(|(field, message)| {
                let short = message
                    .split_once(": ")
                    .map(|(_, rest)| rest)
                    .unwrap_or(message);
                json!({"reason": "FieldValueInvalid", "message": short, "field": field})
            })
            .collect();
        return status_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("SubjectAccessReview.authorization.k8s.io {name:?} is invalid: {summary}"),
            "Invalid",
            json!({
                "name": name,
                "group": "authorization.k8s.io",
                "kind": "SubjectAccessReview",
                "causes": details_causes,
            }),
        );
    }

    let allowed_by = spec.resource_attributes.as_ref().and_then(|ra| {
        let grants = shared.state().grants.clone();
        grants.iter().enumerate().find_map(|(index, grant)| {
            grant_matches(grant, &user, &groups, ra).then(|| allow_reason(index, grant))
        })
    });

    let status = match allowed_by {
        Some(reason) => json!({ "allowed": true, "reason": reason }),
        // RBAC has no opinion: `denied` and an empty `reason` are omitted.
        None => json!({ "allowed": false }),
    };
    let spec = serde_json::to_value(&review.spec).expect("serialize SubjectAccessReviewSpec");
    json_response(
        StatusCode::CREATED,
        json!({
            "kind": "SubjectAccessReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": echo_metadata(&raw),
            "spec": spec,
            "status": status,
        }),
    )
}

fn grant_matches(
    grant: &GrantRule,
    user: &str,
    groups: &[String],
    ra: &k8s_openapi::api::authorization::v1::ResourceAttributes,
) -> bool {
    let subject_ok = match &grant.subject {
        Subject::User(u) => !u.is_empty() && u == user,
        Subject::Group(g) => groups.iter().any(|x| x == g),
    };
    let namespace = ra.namespace.as_deref().unwrap_or("");
    let namespace_ok = match &grant.namespace {
        None => true,
        Some(ns) => !namespace.is_empty() && ns == namespace,
    };
    let group_ok = grant.api_group == "*" || grant.api_group == ra.group.as_deref().unwrap_or("");
    let resource = ra.resource.as_deref().unwrap_or("");
    let full_resource = match ra.subresource.as_deref() {
        Some(sub) if !sub.is_empty() => format!("{resource}/{sub}"),
        _ => resource.to_string(),
    };
    let resource_ok = grant.resource == "*" || grant.resource == full_resource;
    let verb = ra.verb.as_deref().unwrap_or("");
    let verb_ok = grant.verbs.iter().any(|v| v == "*" || v == verb);
    let name_ok = match &grant.name {
        None => true,
        Some(n) => ra.name.as_deref() == Some(n.as_str()),
    };
    subject_ok && namespace_ok && group_ok && resource_ok && verb_ok && name_ok
}

/// `RBAC: allowed by RoleBinding "b/ns" of Role "r" to ServiceAccount "sa/ns"`, as the real
/// RBAC authorizer words it.
fn allow_reason(index: usize, grant: &GrantRule) -> String {
    let subject = match &grant.subject {
        Subject::User(u) => match u.strip_prefix("system:serviceaccount:") {
            Some(rest) => match rest.split_once(':') {
                Some((ns, name)) => format!("ServiceAccount \"{name}/{ns}\""),
                None => format!("User {u:?}"),
            },
            None => format!("User {u:?}"),
        },
        Subject::Group(g) => format!("Group {g:?}"),
    };
    match &grant.namespace {
        Some(ns) => format!(
            "RBAC: allowed by RoleBinding \"fake-grant-{index}/{ns}\" of Role \"fake-role-{index}\" to {subject}"
        ),
        None => format!(
            "RBAC: allowed by ClusterRoleBinding \"fake-grant-{index}\" of ClusterRole \"fake-role-{index}\" to {subject}"
        ),
    }
}

fn version_json() -> Value {
    json!({
        "major": "1",
        "minor": "37",
        "emulationMajor": "1",
        "emulationMinor": "37",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "36",
        "gitVersion": "v1.37.0",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-04-01T00:00:00Z",
        "goVersion": "go1.26.1",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

fn json_response(status: StatusCode, body: Value) -> Resp {
    let mut bytes = serde_json::to_vec(&body).expect("serialize JSON response");
    bytes.push(b'\n');
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header("audit-id", pseudo_uuid(&unique_suffix()))
        .header("cache-control", "no-cache, private")
        .body(Full::new(Bytes::from(bytes)))
        .expect("build HTTP response")
}

/// A `metav1.Status` failure response.
fn status_response(status: StatusCode, message: &str, reason: &str, details: Value) -> Resp {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": status.as_u16(),
    });
    if reason == "Unauthorized" {
        // The real 401 has no `details`.
        if let Some(obj) = body.as_object_mut() {
            obj.remove("details");
        }
    }
    json_response(status, body)
}

fn unauthorized() -> Resp {
    status_response(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "Unauthorized",
        json!({}),
    )
}

fn bad_request(message: &str) -> Resp {
    status_response(StatusCode::BAD_REQUEST, message, "BadRequest", json!({}))
}

fn unique_suffix() -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A stable UUID-shaped string derived from `seed`.
fn pseudo_uuid(seed: &str) -> String {
    let mut h1 = DefaultHasher::new();
    seed.hash(&mut h1);
    let a = h1.finish();
    let mut h2 = DefaultHasher::new();
    (seed, 0x9e37_79b9_7f4a_7c15_u64).hash(&mut h2);
    let b = h2.finish();
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (a >> 32) as u32,
        (a >> 16) as u16,
        (a & 0xfff) as u16,
        (b >> 48) as u16 & 0xfff,
        b & 0xffff_ffff_ffff
    )
}
