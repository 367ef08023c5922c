//! The admin port's `/debug/*` endpoints, for operators (the admin port is not for tenants:
//! the shipped NetworkPolicy admits only Prometheus to it):
//!
//! * `GET /debug/log-filter`: the log filter in force (`RUST_LOG` syntax).
//! * `PUT /debug/log-filter`: replaces it with the body, e.g. `info,tenant_authz::decision=debug`;
//!   an invalid filter is a 400 with the parse error and the old filter stays.
//! * `GET /debug/cache[?user=NAME]`: entry counts and TTLs per cache tier as JSON, never a key
//!   nor a user name; with `user`, that user's entry counts.
//!
//! They answer only connections from loopback (`kubectl port-forward` arrives there): a pod
//! the NetworkPolicy admits for scraping `/metrics` gets 403 here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::Semaphore;

use crate::authorizer::CacheReport;
use crate::telemetry::LogFilter;

/// Builds a [`CacheReport`], for one user if given (the engine, type-erased).
pub type CacheReporter = Arc<dyn Fn(Option<&str>) -> CacheReport + Send + Sync>;

#[derive(Clone)]
struct DebugState {
    log_filter: Option<LogFilter>,
    cache: CacheReporter,
    /// One cache report at a time: `?user=` scans every shard (each under its lock).
    reports: Arc<Semaphore>,
}

/// The `/debug/*` routes. `log_filter` is `None` when this process installed no logger of its
/// own (tests and embedders): the log-filter endpoints then answer 404.
pub fn router(log_filter: Option<LogFilter>, cache: CacheReporter) -> Router {
    Router::new()
        .route("/debug/log-filter", get(get_filter).put(put_filter))
        .route("/debug/cache", get(cache_report))
        .with_state(DebugState {
            log_filter,
            cache,
            reports: Arc::new(Semaphore::new(1)),
        })
        .layer(middleware::from_fn(loopback_only))
}

/// 403 unless the peer is on loopback. The admin server must be served with
/// `into_make_service_with_connect_info::<SocketAddr>()`; without it nothing is answered.
async fn loopback_only(request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    match peer {
        Some(ip) if ip.is_loopback() || ip.to_canonical().is_loopback() => next.run(request).await,
        _ => text(
            StatusCode::FORBIDDEN,
            "the /debug endpoints answer only on loopback: use kubectl port-forward\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

const NO_FILTER: &str = "this process installed no log filter of its own\n";

async fn get_filter(State(state): State<DebugState>) -> Response {
    match &state.log_filter {
        Some(f) => text(StatusCode::OK, format!("{}\n", f.current())),
        None => text(StatusCode::NOT_FOUND, NO_FILTER.into()),
    }
}

async fn put_filter(State(state): State<DebugState>, body: String) -> Response {
    let Some(filter) = &state.log_filter else {
        return text(StatusCode::NOT_FOUND, NO_FILTER.into());
    };
    // Checked first and logged under the old filter: a filter such as `off` would hide the
    // line that records it.
    if let Err(e) = crate::telemetry::parse(&body) {
        return text(StatusCode::BAD_REQUEST, format!("{e}\n"));
    }
    let before = filter.current();
    tracing::warn!(before = %before, requested = ?body.trim(), "log filter replaced through the admin port");
    match filter.set(&body) {
        Ok(()) => text(StatusCode::OK, format!("{}\n", filter.current())),
        Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}

async fn cache_report(
    State(state): State<DebugState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let user = query.get("user").filter(|u| !u.is_empty()).cloned();
    let Ok(_permit) = state.reports.clone().try_acquire_owned() else {
        return text(
            StatusCode::TOO_MANY_REQUESTS,
            "a cache report is being made; try again\n".into(),
        );
    };
    // Off the async workers: a scan for one user holds each shard's lock in turn.
    let cache = state.cache.clone();
    let report = match tokio::task::spawn_blocking(move || cache(user.as_deref())).await {
        Ok(report) => report,
        Err(_) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the cache report failed\n".into(),
            )
        }
    };
    match serde_json::to_string_pretty(&report) {
        Ok(mut json) => {
            json.push('\n');
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                json,
            )
                .into_response()
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the report: {e}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    async fn status_from(peer: &str) -> StatusCode {
        let reporter: CacheReporter = Arc::new(|_| panic!("not reached in this test"));
        let mut request = axum::http::Request::get("/debug/log-filter")
            .body(Body::empty())
            .unwrap();
        let peer: SocketAddr = peer.parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(peer));
        router(None, reporter)
            .oneshot(request)
            .await
            .unwrap()
            .status()
    }

    #[tokio::test]
    async fn only_loopback_peers_reach_the_debug_endpoints() {
        // 404: past the guard, and no log filter is installed in unit tests.
        assert_eq!(status_from("127.0.0.1:5000").await, StatusCode::NOT_FOUND);
        assert_eq!(status_from("[::1]:5000").await, StatusCode::NOT_FOUND);
        assert_eq!(
            status_from("[::ffff:127.0.0.1]:5000").await,
            StatusCode::NOT_FOUND
        );
        assert_eq!(status_from("10.0.3.7:5000").await, StatusCode::FORBIDDEN);
        assert_eq!(status_from("[fd00::7]:5000").await, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn without_the_peer_address_nothing_is_answered() {
        let reporter: CacheReporter = Arc::new(|_| panic!("not reached in this test"));
        let request = axum::http::Request::get("/debug/cache")
            .body(Body::empty())
            .unwrap();
        let response = router(None, reporter).oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }
}
