//! Injected failures and scripted answers: [`Fault`], [`ReviewKind`], [`Scripted`].

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

/// Which review endpoint a fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReviewKind {
    TokenReview,
    SubjectAccessReview,
}

/// An injected failure of the review endpoints (or, with [`super::FakeKube::set_watch_fault`],
/// of list and watch; `UnparsableEcho` then answers `200` with a body that is not JSON).
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

pub(super) type Script = Arc<dyn Fn(&Value) -> Scripted + Send + Sync>;
