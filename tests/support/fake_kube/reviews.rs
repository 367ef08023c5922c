//! The review endpoints' request path: counters and the in-flight gauge, the recorded bodies,
//! injected faults and latency, scripted answers, and the decoder shared by both reviews.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http_body_util::BodyExt as _;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

use super::access_review::subject_access_review;
use super::faults::{Fault, ReviewKind};
use super::http::{internal_error, unauthorized, Body, DropConnection, Resp};
use super::server::Shared;
use super::token_review::token_review;

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

/// Answers a review POST (`authorized`: the request carried the client token).
pub(super) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    kind: ReviewKind,
    authorized: bool,
) -> Result<Resp, DropConnection> {
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
        Fault::Status500 => return Ok(internal_error()),
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
                .body(Body::full(echo.to_string()))
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
            .body(Body::full(answer.body))
            .expect("scripted response parts"));
    }

    Ok(match kind {
        ReviewKind::TokenReview => token_review(&shared, &body),
        ReviewKind::SubjectAccessReview => subject_access_review(&shared, &body),
    })
}

/// Parses a review body like the apiserver decoder: JSON object, right apiVersion/kind if set.
/// The error is the message of a 400 BadRequest.
pub(super) fn decode<T: serde::de::DeserializeOwned>(
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
pub(super) fn echo_metadata(request: &Value) -> Value {
    let mut metadata = request
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    metadata.entry("creationTimestamp").or_insert(Value::Null);
    Value::Object(metadata)
}
