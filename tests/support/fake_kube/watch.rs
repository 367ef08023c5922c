//! Watch streams: `?watch=true` answers `200` with newline-delimited JSON events, first the
//! replay (history after `resourceVersion`, or synthetic ADDED events for the current objects),
//! then live events, BOOKMARKs, and the end at `timeoutSeconds`; a too-old resourceVersion gets
//! one `ERROR` event with a 410 `Expired` Status and the end of the stream.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::task::Context;
use std::time::Duration;

use hyper::body::Frame;
use hyper::{Response, StatusCode};
use serde_json::json;
use tokio::sync::mpsc;

use super::events::{error_line, Chunk};
use super::http::{bad_request, status_object, Body, DropConnection, PolledFrame, Resp};
use super::kinds::Kind;
use super::server::Shared;
use super::store::{WatchSpec, WatchStart};

/// The server-side limit of a watch without `timeoutSeconds` (kube-apiserver's
/// `--min-request-timeout` default).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// The body of a watch response: the lines the store sends, until it ends or cuts the stream.
pub(super) struct WatchBody {
    rx: mpsc::UnboundedReceiver<Chunk>,
}

impl WatchBody {
    pub(super) fn poll_chunk(&mut self, cx: &mut Context<'_>) -> PolledFrame {
        self.rx.poll_recv(cx).map(|chunk| match chunk {
            // Dropping the delivery here records that the line went to hyper to be written.
            Some(Chunk::Line(line, _delivery)) => Some(Ok(Frame::data(line))),
            Some(Chunk::Abort) => Some(Err(Box::new(DropConnection) as _)),
            None => None,
        })
    }
}

/// Answers a watch request on the collection of `kind` (in `namespace`).
pub(super) fn watch(
    shared: &Arc<Shared>,
    kind: Kind,
    namespace: Option<String>,
    query: &BTreeMap<String, String>,
    metadata_only: bool,
) -> Resp {
    let start = match query.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => WatchStart::Current,
        Some(rv) => match rv.parse::<u64>() {
            Ok(rv) => WatchStart::After(rv),
            Err(_) => return bad_request(&format!("invalid resource version: {rv}")),
        },
    };
    let flag = |name: &str| query.get(name).is_some_and(|v| v == "true" || v == "1");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(DEFAULT_WATCH_TIMEOUT, Duration::from_secs);
    let spec = WatchSpec {
        kind,
        namespace,
        metadata_only,
        bookmarks: flag("allowWatchBookmarks"),
        send_initial_events: flag("sendInitialEvents"),
        start,
    };
    let opened = shared.store().open_watch(spec);
    let body = match opened {
        Err(message) => {
            // What the real server does: 200, one ERROR event, the end.
            let status = status_object(410, &message, "Expired", json!({}));
            Body::full(error_line(&status))
        }
        Ok((id, rx, tx)) => {
            tokio::spawn(watch_lifetime(shared.clone(), id, tx, timeout));
            Body::Watch(WatchBody { rx })
        }
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header("cache-control", "no-cache, private")
        .body(body)
        .expect("build watch response")
}

/// Sends the periodic bookmarks of the watch `id` and ends it at its timeout or when its
/// client is gone (or the stream was cut).
async fn watch_lifetime(
    shared: Arc<Shared>,
    id: u64,
    tx: mpsc::UnboundedSender<Chunk>,
    timeout: Duration,
) {
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut intervals = shared.bookmark_interval.subscribe();
    loop {
        let interval = *intervals.borrow_and_update();
        let tick = tokio::time::sleep(interval.unwrap_or(timeout));
        tokio::select! {
            _ = &mut deadline => break,
            _ = tx.closed() => break,
            // A new interval: start its first tick from now.
            Ok(()) = intervals.changed() => {}
            _ = tick, if interval.is_some() => shared.store().send_bookmarks(Some(id)),
        }
    }
    // Unregistered and our sender dropped: the stream ends cleanly.
    shared.store().close_watch(id, false);
}
