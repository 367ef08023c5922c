//! The object store: one global, monotonically increasing resourceVersion (like etcd's
//! revision), the current objects, a bounded history of events for watches to replay, and the
//! open watch streams that live events are fanned out to.

use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use tokio::sync::mpsc;

use super::events::{bookmark_line, event_line, meta_str, Chunk, EventReceipt, SentLog};
use super::http::{pseudo_uuid, unique_suffix};
use super::kinds::{EventType, Kind};

/// Events kept for watches to replay; older ones are compacted (a watch from before gets 410).
pub(super) const DEFAULT_HISTORY_LIMIT: usize = 10_000;
/// Continue tokens (list snapshots) kept at a time.
const SNAPSHOT_LIMIT: usize = 64;

type Key = (Kind, String, String);

struct Event {
    rv: u64,
    kind: Kind,
    namespace: String,
    event_type: EventType,
    object: Value,
}

/// Where a watch starts.
pub(super) enum WatchStart {
    /// `resourceVersion` unset or `0`: synthetic ADDED events for the current objects.
    Current,
    /// After this resourceVersion: the history after it is replayed.
    After(u64),
}

/// What a watch request asked for.
pub(super) struct WatchSpec {
    pub kind: Kind,
    pub namespace: Option<String>,
    pub metadata_only: bool,
    pub bookmarks: bool,
    pub send_initial_events: bool,
    pub start: WatchStart,
}

struct Sink {
    id: u64,
    kind: Kind,
    namespace: Option<String>,
    metadata_only: bool,
    bookmarks: bool,
    tx: mpsc::UnboundedSender<Chunk>,
}

impl Sink {
    fn wants(&self, kind: Kind, namespace: &str) -> bool {
        self.kind == kind && self.namespace.as_deref().is_none_or(|ns| ns == namespace)
    }
}

/// A consistent list result being paged through with `continue`.
pub(super) struct Snapshot {
    pub rv: u64,
    pub items: Vec<Value>,
}

pub(super) struct Store {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Event>,
    compacted: u64,
    pub history_limit: usize,
    sinks: Vec<Sink>,
    next_id: u64,
    snapshots: BTreeMap<u64, Snapshot>,
    sent_log: SentLog,
}

impl Store {
    pub(super) fn new(sent_log: SentLog) -> Store {
        Store {
            rv: 1,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            compacted: 0,
            history_limit: DEFAULT_HISTORY_LIMIT,
            sinks: Vec::new(),
            next_id: 1,
            snapshots: BTreeMap::new(),
            sent_log,
        }
    }

    /// The current (global) resourceVersion.
    pub(super) fn rv(&self) -> u64 {
        self.rv
    }

    /// The resourceVersion up to which history was dropped.
    pub(super) fn compacted(&self) -> u64 {
        self.compacted
    }

    pub(super) fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(&(kind, namespace.to_string(), name.to_string()))
    }

    /// The current objects of `kind` (in `namespace` if given), in key order like etcd.
    pub(super) fn list(&self, kind: Kind, namespace: Option<&str>) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((k, ns, _), _)| *k == kind && namespace.is_none_or(|n| n == ns))
            .map(|(_, object)| object.clone())
            .collect()
    }

    /// Creates or replaces the object; keeps `uid` and `creationTimestamp` of a replaced one.
    pub(super) fn apply(&mut self, mut object: Value) -> Result<EventReceipt, String> {
        let api_version = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let kind_name = object.get("kind").and_then(Value::as_str).unwrap_or("");
        let kind = Kind::from_type(api_version, kind_name)
            .ok_or_else(|| format!("the fake stores no {api_version} {kind_name}"))?;
        let name = meta_str(&object, "name");
        if name.is_empty() {
            return Err("metadata.name: Required value".to_string());
        }
        let namespace = if kind.namespaced() {
            let ns = meta_str(&object, "namespace");
            if ns.is_empty() {
                return Err("metadata.namespace: Required value".to_string());
            }
            ns
        } else {
            String::new()
        };
        let key = (kind, namespace, name);
        let previous = self.objects.get(&key);
        let event_type = match previous {
            Some(_) => EventType::Modified,
            None => EventType::Added,
        };
        let (uid, created) = match previous {
            Some(old) => (meta_str(old, "uid"), meta_str(old, "creationTimestamp")),
            None => (
                pseudo_uuid(&unique_suffix()),
                Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            ),
        };
        self.rv += 1;
        let metadata = object
            .as_object_mut()
            .ok_or("the object is not a JSON object")?
            .entry("metadata")
            .or_insert_with(|| json!({}));
        metadata["uid"] = json!(uid);
        metadata["creationTimestamp"] = json!(created);
        metadata["resourceVersion"] = json!(self.rv.to_string());
        if !kind.namespaced() {
            if let Some(m) = metadata.as_object_mut() {
                m.remove("namespace");
            }
        }
        self.objects.insert(key.clone(), object.clone());
        Ok(self.record(kind, key.1, event_type, object))
    }

    /// Deletes the object (a Namespace with everything in it, like the namespace controller):
    /// the receipt of its DELETED event, or `None` if it did not exist.
    pub(super) fn delete(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Option<EventReceipt> {
        let namespace = if kind.namespaced() { namespace } else { "" };
        let key = (kind, namespace.to_string(), name.to_string());
        if !self.objects.contains_key(&key) {
            return None;
        }
        if kind == Kind::Namespace {
            let contents: Vec<Key> = self
                .objects
                .keys()
                .filter(|(k, ns, _)| k.namespaced() && ns == name)
                .cloned()
                .collect();
            for (k, ns, n) in contents {
                self.delete(k, &ns, &n);
            }
        }
        let mut object = self.objects.remove(&key)?;
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        Some(self.record(kind, key.1, EventType::Deleted, object))
    }

    /// Adds the event to the history and sends it to every open watch of its kind.
    fn record(
        &mut self,
        kind: Kind,
        namespace: String,
        event_type: EventType,
        object: Value,
    ) -> EventReceipt {
        self.sinks.retain(|s| !s.tx.is_closed());
        let targets = self
            .sinks
            .iter()
            .filter(|s| s.wants(kind, &namespace))
            .count();
        let (receipt, deliveries) =
            EventReceipt::new(kind, event_type, object.clone(), targets, &self.sent_log);
        let mut deliveries = deliveries.into_iter();
        let (mut full, mut partial) = (None, None);
        for sink in self.sinks.iter().filter(|s| s.wants(kind, &namespace)) {
            let cached = if sink.metadata_only {
                &mut partial
            } else {
                &mut full
            };
            let line = cached
                .get_or_insert_with(|| event_line(event_type.as_str(), &object, sink.metadata_only))
                .clone();
            // A failed send drops the delivery, which counts the stream as done.
            let _ = sink.tx.send(Chunk::Line(line, deliveries.next()));
        }
        self.history.push_back(Event {
            rv: self.rv,
            kind,
            namespace,
            event_type,
            object,
        });
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted = dropped.rv;
            }
        }
        receipt
    }

    /// Drops the whole history: a watch from any resourceVersion before now gets 410 Gone.
    pub(super) fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
        self.snapshots.clear();
    }

    /// Opens a watch: replays what it asked for into a new stream and registers it for live
    /// events, atomically (no event can fall between the two). `Err` is the message of a 410.
    pub(super) fn open_watch(
        &mut self,
        spec: WatchSpec,
    ) -> Result<
        (
            u64,
            mpsc::UnboundedReceiver<Chunk>,
            mpsc::UnboundedSender<Chunk>,
        ),
        String,
    > {
        let (tx, rx) = mpsc::unbounded_channel();
        let ns = spec.namespace.as_deref();
        match spec.start {
            WatchStart::After(from) if from < self.compacted => {
                return Err(format!(
                    "too old resource version: {from} ({})",
                    self.compacted
                ));
            }
            WatchStart::After(from) => {
                for event in self.history.iter().filter(|e| {
                    e.rv > from && e.kind == spec.kind && ns.is_none_or(|n| n == e.namespace)
                }) {
                    let line =
                        event_line(event.event_type.as_str(), &event.object, spec.metadata_only);
                    let _ = tx.send(Chunk::Line(line, None));
                }
            }
            WatchStart::Current => {
                for object in self.list(spec.kind, ns) {
                    let line = event_line("ADDED", &object, spec.metadata_only);
                    let _ = tx.send(Chunk::Line(line, None));
                }
                if spec.send_initial_events && spec.bookmarks {
                    let line = bookmark_line(spec.kind, spec.metadata_only, self.rv, true);
                    let _ = tx.send(Chunk::Line(line, None));
                }
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        self.sinks.push(Sink {
            id,
            kind: spec.kind,
            namespace: spec.namespace,
            metadata_only: spec.metadata_only,
            bookmarks: spec.bookmarks,
            tx: tx.clone(),
        });
        Ok((id, rx, tx))
    }

    /// Sends a BOOKMARK at the current resourceVersion to the watch `id` (every watch if
    /// `None`) that asked for bookmarks.
    pub(super) fn send_bookmarks(&mut self, id: Option<u64>) {
        let rv = self.rv;
        for sink in self
            .sinks
            .iter()
            .filter(|s| s.bookmarks && id.is_none_or(|id| id == s.id))
        {
            let line = bookmark_line(sink.kind, sink.metadata_only, rv, false);
            let _ = sink.tx.send(Chunk::Line(line, None));
        }
    }

    /// Ends the watch `id`: cleanly (the stream ends) or as a connection loss (`abort`).
    pub(super) fn close_watch(&mut self, id: u64, abort: bool) {
        self.sinks.retain(|s| {
            if s.id != id {
                return true;
            }
            if abort {
                let _ = s.tx.send(Chunk::Abort);
            }
            false
        });
    }

    /// Cuts every open watch stream, as a connection loss.
    pub(super) fn break_watches(&mut self) {
        for sink in self.sinks.drain(..) {
            let _ = sink.tx.send(Chunk::Abort);
        }
    }

    /// Watch streams (of `kind`, or all) whose client is still there.
    pub(super) fn open_watches(&mut self, kind: Option<Kind>) -> usize {
        self.sinks.retain(|s| !s.tx.is_closed());
        self.sinks
            .iter()
            .filter(|s| kind.is_none_or(|k| k == s.kind))
            .count()
    }

    /// Keeps a list result for `continue`; returns its id.
    pub(super) fn keep_snapshot(&mut self, snapshot: Snapshot) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.snapshots.insert(id, snapshot);
        while self.snapshots.len() > SNAPSHOT_LIMIT {
            self.snapshots.pop_first();
        }
        id
    }

    pub(super) fn snapshot(&self, id: u64) -> Option<&Snapshot> {
        self.snapshots.get(&id)
    }

    pub(super) fn drop_snapshot(&mut self, id: u64) {
        self.snapshots.remove(&id);
    }

    /// When each kind's latest event was written to a watch stream.
    pub(super) fn sent_log(&self) -> &SentLog {
        &self.sent_log
    }
}
