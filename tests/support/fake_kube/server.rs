//! The server: shared state, the accept loop over TLS, and the routing of each request to the
//! reviews, the stored resources or `/version`.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::faults::{Fault, ReviewKind, Script};
use super::http::{
    json_response, method_not_allowed, not_found, unauthorized, DropConnection, Resp,
};
use super::kinds::Kind;
use super::resources::{self, ListWatchRequest};
use super::reviews;
use super::store::Store;
use super::users::{FakeUser, GrantRule};
use super::{SUBJECT_ACCESS_REVIEWS_PATH, TOKEN_REVIEWS_PATH};

/// An object a token is bound to: the token stops authenticating when it is gone or
/// re-created with another uid (only recorded if it was in the store when the token was added).
#[derive(Clone, Debug)]
pub(super) struct BoundObject {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

#[derive(Clone, Debug)]
pub(super) struct TokenEntry {
    pub user: FakeUser,
    pub audiences: Vec<String>,
    pub bound: Vec<BoundObject>,
}

pub(super) struct State {
    pub tokens: HashMap<String, TokenEntry>,
    pub grants: Vec<GrantRule>,
    pub token_review_fault: Fault,
    pub sar_fault: Fault,
    pub token_review_script: Option<Script>,
    pub sar_script: Option<Script>,
    pub latency: Duration,
    pub received_token_reviews: Vec<Value>,
    pub received_subject_access_reviews: Vec<Value>,
    pub watch_fault: Fault,
    pub received_watch_requests: Vec<ListWatchRequest>,
}

pub(super) struct Shared {
    pub client_token: String,
    state: Mutex<State>,
    store: Mutex<Store>,
    pub token_reviews: AtomicUsize,
    pub subject_access_reviews: AtomicUsize,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    pub lists: AtomicUsize,
    pub watches_opened: AtomicUsize,
    /// How often each open watch gets a BOOKMARK (`None`: only on demand).
    pub bookmark_interval: watch::Sender<Option<Duration>>,
}

impl Shared {
    pub(super) fn new(client_token: String) -> Shared {
        Shared {
            client_token,
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
                watch_fault: Fault::None,
                received_watch_requests: Vec::new(),
            }),
            store: Mutex::new(Store::new(Default::default())),
            token_reviews: AtomicUsize::new(0),
            subject_access_reviews: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            lists: AtomicUsize::new(0),
            watches_opened: AtomicUsize::new(0),
            // About what the real server does.
            bookmark_interval: watch::Sender::new(Some(Duration::from_secs(60))),
        }
    }

    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not poison the fake for the server task.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The object store. Never held across an `.await`, nor together with [`Shared::state`].
    pub(super) fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(super) async fn accept_loop(
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

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Resp, DropConnection> {
    let path = req.uri().path().to_string();
    let review = match path.as_str() {
        TOKEN_REVIEWS_PATH => Some(ReviewKind::TokenReview),
        SUBJECT_ACCESS_REVIEWS_PATH => Some(ReviewKind::SubjectAccessReview),
        _ => None,
    };
    let authorized = is_authorized(&shared, &req);
    if let Some(kind) = review.filter(|_| req.method() == Method::POST) {
        return reviews::handle(shared, req, kind, authorized).await;
    }
    if !authorized {
        return Ok(unauthorized());
    }
    if review.is_some() {
        return Ok(method_not_allowed());
    }
    if req.method() == Method::GET && path == "/version" {
        return Ok(json_response(StatusCode::OK, version_json()));
    }
    match resources::route(&path) {
        Some(route) => resources::handle(shared, req, route).await,
        None => Ok(not_found()),
    }
}

fn is_authorized(shared: &Shared, req: &Request<Incoming>) -> bool {
    req.headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t.trim() == shared.client_token)
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
