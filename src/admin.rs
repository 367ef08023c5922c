//! Admin HTTP server: `/healthz` (alive), `/readyz` (can serve), `/metrics` (Prometheus).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;

/// Whether tenant-authz can serve: its backend is reachable and it is not shutting down.
#[derive(Debug)]
pub struct Readiness {
    /// How `/readyz` names the backend ("the Kubernetes API").
    backend: &'static str,
    backend_ready: AtomicBool,
    shutting_down: AtomicBool,
    /// A line `/readyz` adds when ready but degraded (e.g. a watch is down).
    note: Mutex<Option<String>>,
}

impl Readiness {
    /// Not ready until [`Readiness::set_backend_ready`]; `backend` names it in `/readyz`.
    pub fn for_backend(backend: &'static str) -> Self {
        Readiness {
            backend,
            backend_ready: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            note: Mutex::new(None),
        }
    }

    pub fn set_backend_ready(&self) {
        self.backend_ready.store(true, Ordering::SeqCst);
    }

    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Sets or clears the note `/readyz` adds (it does not change readiness).
    pub fn set_note(&self, note: Option<String>) {
        *self.note.lock().unwrap_or_else(|p| p.into_inner()) = note;
    }

    pub fn note(&self) -> Option<String> {
        self.note.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `Ok` when ready, else why not.
    pub fn check(&self) -> Result<(), String> {
        if self.shutting_down.load(Ordering::SeqCst) {
            Err("shutting down".to_string())
        } else if !self.backend_ready.load(Ordering::SeqCst) {
            Err(format!("{} has not been reached yet", self.backend))
        } else {
            Ok(())
        }
    }
}

#[derive(Clone)]
struct AdminState {
    readiness: Arc<Readiness>,
    registry: Arc<Registry>,
}

pub fn router(readiness: Arc<Readiness>, registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AdminState {
            readiness,
            registry,
        })
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    match state.readiness.check() {
        Ok(()) => match state.readiness.note() {
            Some(note) => (StatusCode::OK, format!("ready ({note})\n")),
            None => (StatusCode::OK, "ready\n".to_string()),
        },
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    match crate::metrics::encode(&state.registry) {
        Ok(body) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "cannot encode metrics\n".to_string(),
        ),
    }
}
