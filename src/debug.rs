//! The admin port's `/debug/*` endpoints, for operators (the admin port is not for tenants:
//! the shipped NetworkPolicy admits only Prometheus to it):
//!
//! * `GET /debug/log-filter`: the log filter in force (`RUST_LOG` syntax).
//! * `PUT /debug/log-filter`: replaces it with the body, e.g. `info,tenant_authz::decision=debug`;
//!   an invalid filter is a 400 with the parse error and the old filter stays.
//! * `GET /debug/cache[?user=NAME]`: entry counts and TTLs per cache tier as JSON, never a key
//!   nor a user name; with `user`, that user's entry counts.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::authorizer::CacheReport;
use crate::telemetry::LogFilter;

/// Builds a [`CacheReport`], for one user if given (the engine, type-erased).
pub type CacheReporter = Arc<dyn Fn(Option<&str>) -> CacheReport + Send + Sync>;

#[derive(Clone)]
struct DebugState {
    log_filter: Option<LogFilter>,
    cache: CacheReporter,
}

/// The `/debug/*` routes. `log_filter` is `None` when this process installed no logger of its
/// own (tests and embedders): the log-filter endpoints then answer 404.
pub fn router(log_filter: Option<LogFilter>, cache: CacheReporter) -> Router {
    Router::new()
        .route("/debug/log-filter", get(get_filter).put(put_filter))
        .route("/debug/cache", get(cache_report))
        .with_state(DebugState { log_filter, cache })
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
    let before = filter.current();
    match filter.set(&body) {
        Ok(()) => {
            let now = filter.current();
            // warn: the new filter may hide info, and this line must stay visible.
            tracing::warn!(before = %before, filter = %now, "log filter replaced through the admin port");
            text(StatusCode::OK, format!("{now}\n"))
        }
        Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}

async fn cache_report(
    State(state): State<DebugState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let user = query
        .get("user")
        .map(String::as_str)
        .filter(|u| !u.is_empty());
    match serde_json::to_string_pretty(&(state.cache)(user)) {
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
