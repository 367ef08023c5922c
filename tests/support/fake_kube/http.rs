//! HTTP plumbing of the fake: the response body (whole or a watch stream), JSON and `Status`
//! answers shaped like the real kube-apiserver's, and small helpers (ids, query strings).

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use hyper::body::{Bytes, Frame, SizeHint};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use super::watch::WatchBody;

/// The error a service (or a watch body) returns to make hyper drop the connection without a
/// (complete) answer.
#[derive(Debug)]
pub(super) struct DropConnection;

impl fmt::Display for DropConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("fake kube: connection dropped on purpose")
    }
}

impl std::error::Error for DropConnection {}

/// A response body: a whole answer, or a watch stream fed by the store.
pub(super) enum Body {
    Full(Option<Bytes>),
    Watch(WatchBody),
}

impl Body {
    pub(super) fn full(bytes: impl Into<Bytes>) -> Body {
        Body::Full(Some(bytes.into()))
    }
}

/// What a body's stream fails with (hyper then cuts the connection).
pub(super) type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// One poll of a body.
pub(super) type PolledFrame = Poll<Option<Result<Frame<Bytes>, BodyError>>>;

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> PolledFrame {
        match self.get_mut() {
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Watch(watch) => watch.poll_chunk(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            // An exact hint makes hyper send Content-Length, as for any whole answer.
            Body::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Watch(_) => SizeHint::default(),
        }
    }
}

pub(super) type Resp = Response<Body>;

pub(super) fn json_response(status: StatusCode, body: Value) -> Resp {
    let mut bytes = serde_json::to_vec(&body).expect("serialize JSON response");
    bytes.push(b'\n');
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header("audit-id", pseudo_uuid(&unique_suffix()))
        .header("cache-control", "no-cache, private")
        .body(Body::full(bytes))
        .expect("build HTTP response")
}

/// A `metav1.Status` failure object.
pub(super) fn status_object(code: u16, message: &str, reason: &str, details: Value) -> Value {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code,
    });
    // The real 401 and 410 have no `details`.
    if details.as_object().is_some_and(|d| d.is_empty()) && matches!(code, 401 | 410) {
        if let Some(obj) = body.as_object_mut() {
            obj.remove("details");
        }
    }
    body
}

/// A `metav1.Status` failure response.
pub(super) fn status_response(
    status: StatusCode,
    message: &str,
    reason: &str,
    details: Value,
) -> Resp {
    json_response(
        status,
        status_object(status.as_u16(), message, reason, details),
    )
}

pub(super) fn unauthorized() -> Resp {
    status_response(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "Unauthorized",
        json!({}),
    )
}

pub(super) fn bad_request(message: &str) -> Resp {
    status_response(StatusCode::BAD_REQUEST, message, "BadRequest", json!({}))
}

pub(super) fn not_found() -> Resp {
    status_response(
        StatusCode::NOT_FOUND,
        "the server could not find the requested resource",
        "NotFound",
        json!({}),
    )
}

pub(super) fn method_not_allowed() -> Resp {
    status_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "the server does not allow this method on the requested resource",
        "MethodNotAllowed",
        json!({}),
    )
}

pub(super) fn internal_error() -> Resp {
    status_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Internal error occurred: fake kube-apiserver: injected fault",
        "InternalError",
        json!({"causes": [{"message": "fake kube-apiserver: injected fault"}]}),
    )
}

/// The query string as a map (last value wins), percent-decoded (`+` is a space).
pub(super) fn query_params(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push((hi * 16 + lo) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn unique_suffix() -> String {
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
pub(super) fn pseudo_uuid(seed: &str) -> String {
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
