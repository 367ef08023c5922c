//! Watch events on the wire: the lines a watch stream carries, and the [`EventReceipt`] that
//! tells a test (or the benchmark) when an event was handed to every open watch stream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hyper::body::Bytes;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::kinds::{EventType, Kind};

/// What a watch stream's channel carries.
pub(super) enum Chunk {
    /// One newline-terminated JSON event; the delivery (if any) completes when it is written.
    Line(Bytes, Option<Delivery>),
    /// Cut the connection (a connection loss, not a clean end of the stream).
    Abort,
}

/// When each kind's latest event was written to a watch stream.
pub(super) type SentLog = Arc<Mutex<HashMap<Kind, Instant>>>;

struct Pending {
    remaining: AtomicUsize,
    done: watch::Sender<Option<Instant>>,
    kind: Kind,
    log: SentLog,
}

/// One watch stream's share of an event's delivery: dropped when the stream's body hands the
/// line to hyper (or when the stream is gone).
pub(super) struct Delivery(Arc<Pending>);

impl Drop for Delivery {
    fn drop(&mut self) {
        let now = Instant::now();
        self.0
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.0.kind, now);
        if self.0.remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.done.send_replace(Some(now));
        }
    }
}

/// What [`super::FakeKube::apply`] and [`super::FakeKube::delete`] return: the event, the
/// number of open watch streams it was sent to, and a way to wait until all of them have
/// written it.
#[derive(Debug)]
pub struct EventReceipt {
    kind: Kind,
    event_type: EventType,
    object: Value,
    watches: usize,
    sent: watch::Receiver<Option<Instant>>,
}

impl EventReceipt {
    /// A receipt for `object`'s event and the deliveries to hand to `watches` streams.
    pub(super) fn new(
        kind: Kind,
        event_type: EventType,
        object: Value,
        watches: usize,
        log: &SentLog,
    ) -> (EventReceipt, Vec<Delivery>) {
        let initial = (watches == 0).then(Instant::now);
        let (done, sent) = watch::channel(initial);
        let pending = Arc::new(Pending {
            remaining: AtomicUsize::new(watches),
            done,
            kind,
            log: log.clone(),
        });
        let deliveries = (0..watches).map(|_| Delivery(pending.clone())).collect();
        let receipt = EventReceipt {
            kind,
            event_type,
            object,
            watches,
            sent,
        };
        (receipt, deliveries)
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn event_type(&self) -> EventType {
        self.event_type
    }

    /// The object as the event carries it (for DELETED: the last state, with the new RV).
    pub fn object(&self) -> &Value {
        &self.object
    }

    /// `metadata.uid` of the object.
    pub fn uid(&self) -> String {
        meta_str(&self.object, "uid")
    }

    /// `metadata.resourceVersion` of the event.
    pub fn resource_version(&self) -> String {
        meta_str(&self.object, "resourceVersion")
    }

    /// How many open watch streams the event was sent to.
    pub fn watches(&self) -> usize {
        self.watches
    }

    /// Waits until every watch stream the event was sent to has written it (or closed), and
    /// returns when the last one did; with no watch open, when the event happened.
    pub async fn sent(&self) -> Instant {
        let mut sent = self.sent.clone();
        let at = *sent
            .wait_for(Option::is_some)
            .await
            .expect("the delivery state outlives its receivers");
        at.expect("waited for Some")
    }
}

pub(super) fn meta_str(object: &Value, field: &str) -> String {
    object
        .pointer(&format!("/metadata/{field}"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The object as a metadata-only client sees it (`PartialObjectMetadata`).
pub(super) fn partial_metadata(object: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// One watch event line: `{"type":..,"object":..}\n`.
pub(super) fn event_line(event_type: &str, object: &Value, metadata_only: bool) -> Bytes {
    let object = if metadata_only {
        partial_metadata(object)
    } else {
        object.clone()
    };
    line(&json!({"type": event_type, "object": object}))
}

/// A BOOKMARK line: only the type and `metadata.resourceVersion` (plus the
/// `k8s.io/initial-events-end` annotation that ends a streaming list).
pub(super) fn bookmark_line(kind: Kind, metadata_only: bool, rv: u64, initial_end: bool) -> Bytes {
    let (kind, api_version) = if metadata_only {
        ("PartialObjectMetadata", "meta.k8s.io/v1")
    } else {
        (kind.kind(), kind.api_version())
    };
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(&json!({
        "type": "BOOKMARK",
        "object": {"kind": kind, "apiVersion": api_version, "metadata": metadata},
    }))
}

/// An ERROR line carrying a `Status` (e.g. 410 Expired).
pub(super) fn error_line(status: &Value) -> Bytes {
    line(&json!({"type": "ERROR", "object": status}))
}

fn line(value: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(value).expect("serialize a watch event");
    bytes.push(b'\n');
    Bytes::from(bytes)
}
