//! A fake Kubernetes API server for tests.
//!
//! It listens on `127.0.0.1:0` over real HTTPS (rustls + hyper, HTTP/1.1 and h2) and is
//! reached by the real `kube::Client` through a generated kubeconfig file. It implements:
//!
//! * `POST /apis/authentication.k8s.io/v1/tokenreviews` (tokens added by the test; a token of
//!   a ServiceAccount or pod in the store stops working when that object is deleted)
//! * `POST /apis/authorization.k8s.io/v1/subjectaccessreviews` (the test's grant list OR'ed
//!   with RBAC evaluation of the stored Roles, ClusterRoles and their bindings)
//! * `GET` list, watch and get of the stored Namespaces, ServiceAccounts, Pods, Roles,
//!   RoleBindings, ClusterRoles and ClusterRoleBindings: one global resourceVersion, paged
//!   lists, watches that replay history, bookmarks, 410 Gone after compaction, and
//!   metadata-only (`PartialObjectMetadata`) answers
//! * `GET /version`
//!
//! Answers mimic the JSON of a real kube-apiserver: `201 Created` for reviews, `metadata`
//! echoed with `creationTimestamp: null`, Go `omitempty` semantics (an unauthenticated
//! TokenReview status has no `authenticated` field; a denied SAR status is just
//! `{"allowed":false}`), and `Status` objects for errors (401, 400, 404, 405, 410, 422, 500).
//!
//! Every request must carry `Authorization: Bearer <client token>`, the token written into the
//! kubeconfig (the identity of tenant-authz itself).
//!
//! Files: `server` (accept loop, routing), `reviews` + `token_review` + `access_review` +
//! `rbac` (the reviews), `store` + `kinds` + `events` (objects, resourceVersion, history),
//! `resources` + `watch` (list, get, watch), `users` + `faults` (the test's vocabulary),
//! `control` + `objects` (the test-facing API), `http` (bodies and Status answers).

mod access_review;
mod control;
mod events;
mod faults;
mod http;
mod kinds;
mod objects;
mod rbac;
mod resources;
mod reviews;
mod server;
mod store;
pub mod streams;
mod token_review;
mod users;
mod watch;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::tls::TestCerts;
use http::unique_suffix;
use server::{accept_loop, Shared};

pub use events::EventReceipt;
pub use faults::{Fault, ReviewKind, Scripted};
pub use kinds::{EventType, Kind};
pub use objects::traces_rule;
pub use resources::ListWatchRequest;
pub use users::{FakeUser, GrantRule, Subject, POD_NAME, POD_UID};

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
        let shared = Arc::new(Shared::new(format!(
            "fake-kube-client-token-{}",
            unique_suffix()
        )));
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
