//! A recording stand-in for Tempo behind Envoy.
//!
//! Serves plaintext HTTP/1.1 and h2c (prior knowledge) on 127.0.0.1, records
//! every request's method, path, version and headers, reads and discards the
//! body, and answers:
//! * `content-type: application/grpc*`: a gRPC OK carrying an empty protobuf
//!   message (200, 5 zero bytes, trailer `grpc-status: 0`), which is a valid
//!   reply for e.g. OTLP `TraceService/Export`;
//! * anything else: 200 `text/plain` `ok`.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use futures::stream;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// One request as the upstream saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path only (no query), e.g. `/api/search`.
    pub path: String,
    /// Path and query as received, e.g. `/api/search?tags=a`.
    pub path_and_query: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// `:authority` for HTTP/2 (from the URI), else the URI authority if any.
    pub authority: Option<String>,
    /// All header (name, value) pairs, names lowercase, duplicates kept
    /// (values of one name are consecutive, in the order received). Values
    /// that are not UTF-8 are decoded lossily.
    pub headers: Vec<(String, String)>,
    /// Number of body bytes received (the body itself is discarded).
    pub body_len: usize,
}

impl Recorded {
    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_all(name).into_iter().next()
    }
}

/// The running stand-in. The server task (and every connection) is aborted on drop.
pub struct Upstream {
    pub port: u16,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: JoinHandle<()>,
}

type RespBody = BoxBody<Bytes, Infallible>;

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("upstream: bind 127.0.0.1:0");
        let port = listener.local_addr().expect("upstream: local_addr").port();
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let recorded = requests.clone();
        let task = tokio::spawn(async move {
            // Connections live in this JoinSet so aborting the accept task
            // (on drop) also tears them down.
            let mut conns = JoinSet::new();
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(s) => s,
                        Err(_) => continue,
                    },
                    Some(_) = conns.join_next(), if !conns.is_empty() => continue,
                };
                let recorded = recorded.clone();
                conns.spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let recorded = recorded.clone();
                        async move { Ok::<_, Infallible>(handle(req, &recorded).await) }
                    });
                    let _ = Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream {
            port,
            requests,
            task,
        }
    }

    /// Everything recorded so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// Forget everything recorded so far.
    pub fn clear(&self) {
        self.requests.lock().unwrap().clear();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(req: Request<Incoming>, recorded: &Mutex<Vec<Recorded>>) -> Response<RespBody> {
    let (parts, body) = req.into_parts();
    // Read (and discard) the whole body before recording and answering.
    let body_len = match body.collect().await {
        Ok(collected) => collected.to_bytes().len(),
        Err(_) => 0,
    };
    let headers = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect::<Vec<_>>();
    let is_grpc = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    recorded.lock().unwrap().push(Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| parts.uri.path().to_string()),
        version: format!("{:?}", parts.version),
        authority: parts.uri.authority().map(|a| a.to_string()),
        headers,
        body_len,
    });

    if is_grpc {
        // Length-prefixed message: compressed flag 0, length 0 (empty message).
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let frames = vec![
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0]))),
            Ok(Frame::trailers(trailers)),
        ];
        Response::builder()
            .status(200)
            .header(CONTENT_TYPE, "application/grpc")
            .body(StreamBody::new(stream::iter(frames)).boxed())
            .unwrap()
    } else {
        Response::builder()
            .status(200)
            .header(CONTENT_TYPE, "text/plain")
            .body(Full::new(Bytes::from_static(b"ok")).boxed())
            .unwrap()
    }
}
