//! GET on the stored resources: routing of collection and object paths, list (with `limit`
//! and `continue` over a consistent snapshot, as etcd pages), single objects, metadata-only
//! answers (`Accept: ...;as=PartialObjectMetadata[List];g=meta.k8s.io;v=v1`), the list/watch
//! fault, and the record of list/watch requests.
//!
//! `labelSelector` and `fieldSelector` are accepted and ignored: every object matches.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use base64::Engine as _;
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};

use super::events::partial_metadata;
use super::faults::Fault;
use super::http::{
    internal_error, json_response, method_not_allowed, query_params, status_response, Body,
    DropConnection, Resp,
};
use super::kinds::Kind;
use super::server::Shared;
use super::store::Snapshot;
use super::watch::watch;

/// A list or watch request as the fake received it.
#[derive(Clone, Debug)]
pub struct ListWatchRequest {
    pub kind: Kind,
    /// `None`: all namespaces.
    pub namespace: Option<String>,
    pub path: String,
    /// The query parameters, decoded.
    pub query: BTreeMap<String, String>,
    pub watch: bool,
    /// Asked for `PartialObjectMetadata` (a kube-rs `metadata_watcher`).
    pub metadata_only: bool,
}

/// A path of a stored resource: a collection, or one object if `name` is set.
pub(super) struct Route {
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
}

/// `/api/v1/...` or `/apis/rbac.authorization.k8s.io/v1/...` paths of the stored kinds.
pub(super) fn route(path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, "v1", rest @ ..] => (*group, rest),
        _ => return None,
    };
    let kind = |plural: &str| Kind::from_plural(group, plural);
    let route = match rest {
        [plural] => Route {
            kind: kind(plural)?,
            namespace: None,
            name: None,
        },
        ["namespaces", ns, plural] => Route {
            kind: kind(plural).filter(|k| k.namespaced())?,
            namespace: Some(ns.to_string()),
            name: None,
        },
        ["namespaces", ns, plural, name] => Route {
            kind: kind(plural).filter(|k| k.namespaced())?,
            namespace: Some(ns.to_string()),
            name: Some(name.to_string()),
        },
        [plural, name] => Route {
            kind: kind(plural).filter(|k| !k.namespaced())?,
            namespace: None,
            name: Some(name.to_string()),
        },
        _ => return None,
    };
    Some(route)
}

/// Answers a request on a stored resource (the client token was already checked).
pub(super) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    route: Route,
) -> Result<Resp, DropConnection> {
    if req.method() != Method::GET {
        return Ok(method_not_allowed());
    }
    let query = query_params(req.uri().query().unwrap_or(""));
    let metadata_only = req
        .headers()
        .get_all(hyper::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("as=PartialObjectMetadata"));
    if let Some(name) = &route.name {
        return Ok(get(&shared, &route, name, metadata_only));
    }
    let is_watch = query.get("watch").is_some_and(|v| v == "true" || v == "1");
    let counter = if is_watch {
        &shared.watches_opened
    } else {
        &shared.lists
    };
    counter.fetch_add(1, Ordering::SeqCst);
    let fault = {
        let mut state = shared.state();
        state.received_watch_requests.push(ListWatchRequest {
            kind: route.kind,
            namespace: route.namespace.clone(),
            path: req.uri().path().to_string(),
            query: query.clone(),
            watch: is_watch,
            metadata_only,
        });
        state.watch_fault
    };
    match fault {
        Fault::None => {}
        Fault::Slow(d) => tokio::time::sleep(d).await,
        Fault::Status500 => return Ok(internal_error()),
        Fault::CloseConnection => return Err(DropConnection),
        Fault::UnparsableEcho => {
            return Ok(hyper::Response::builder()
                .status(StatusCode::OK)
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Body::full("{\"kind\": 7, \"items\": \"not a list\"\n"))
                .expect("static response parts"))
        }
    }
    if is_watch {
        return Ok(watch(
            &shared,
            route.kind,
            route.namespace,
            &query,
            metadata_only,
        ));
    }
    Ok(list(&shared, &route, &query, metadata_only))
}

fn get(shared: &Shared, route: &Route, name: &str, metadata_only: bool) -> Resp {
    let namespace = route.namespace.as_deref().unwrap_or("");
    match shared.store().get(route.kind, namespace, name) {
        Some(object) if metadata_only => json_response(StatusCode::OK, partial_metadata(object)),
        Some(object) => json_response(StatusCode::OK, object.clone()),
        None => status_response(
            StatusCode::NOT_FOUND,
            &format!("{} {name:?} not found", route.kind.qualified_resource()),
            "NotFound",
            json!({"name": name, "group": route.kind.group(), "kind": route.kind.plural()}),
        ),
    }
}

/// The position in a snapshot a `continue` token points at.
#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    id: u64,
    start: usize,
}

const CONTINUE_TOO_OLD: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.";

fn expired(message: &str) -> Resp {
    status_response(StatusCode::GONE, message, "Expired", json!({}))
}

fn list(
    shared: &Shared,
    route: &Route,
    query: &BTreeMap<String, String>,
    metadata_only: bool,
) -> Resp {
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let mut store = shared.store();
    let (id, start, rv, items) = if let Some(token) = query.get("continue") {
        let Some(token) = decode_continue(token) else {
            return status_response(
                StatusCode::BAD_REQUEST,
                "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
                "BadRequest",
                json!({}),
            );
        };
        let snapshot = store
            .snapshot(token.id)
            .filter(|_| token.rv >= store.compacted());
        let Some(snapshot) = snapshot else {
            return expired(CONTINUE_TOO_OLD);
        };
        (
            Some(token.id),
            token.start,
            snapshot.rv,
            snapshot.items.clone(),
        )
    } else {
        // An exact read of a compacted resourceVersion is gone; any other is served at the
        // current state (NotOlderThan, unset, or an exact read the fake cannot go back to).
        let exact = query
            .get("resourceVersionMatch")
            .is_some_and(|m| m == "Exact");
        let asked = query
            .get("resourceVersion")
            .and_then(|rv| rv.parse::<u64>().ok());
        if let (true, Some(asked)) = (exact, asked) {
            if asked < store.compacted() {
                return expired(&format!(
                    "too old resource version: {asked} ({})",
                    store.compacted()
                ));
            }
        }
        let namespace = route.namespace.as_deref();
        (None, 0, store.rv(), store.list(route.kind, namespace))
    };
    let end = limit.map_or(items.len(), |l| (start + l).min(items.len()));
    let page: Vec<Value> = items[start.min(end)..end]
        .iter()
        .map(|item| render_item(item, metadata_only))
        .collect();
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if end < items.len() {
        let remaining = items.len() - end;
        let id = id.unwrap_or_else(|| store.keep_snapshot(Snapshot { rv, items }));
        metadata["continue"] = json!(encode_continue(&ContinueToken { rv, id, start: end }));
        metadata["remainingItemCount"] = json!(remaining);
    } else if let Some(id) = id {
        store.drop_snapshot(id);
    }
    let (kind, api_version) = if metadata_only {
        ("PartialObjectMetadataList".to_string(), "meta.k8s.io/v1")
    } else {
        (
            format!("{}List", route.kind.kind()),
            route.kind.api_version(),
        )
    };
    json_response(
        StatusCode::OK,
        json!({"kind": kind, "apiVersion": api_version, "metadata": metadata, "items": page}),
    )
}

/// A list item: typed lists carry no `kind`/`apiVersion` per item (as the real server
/// writes them); metadata-only lists carry `PartialObjectMetadata` items.
fn render_item(item: &Value, metadata_only: bool) -> Value {
    if metadata_only {
        return partial_metadata(item);
    }
    let mut item = item.clone();
    if let Some(obj) = item.as_object_mut() {
        obj.remove("kind");
        obj.remove("apiVersion");
    }
    item
}

fn encode_continue(token: &ContinueToken) -> String {
    let json = serde_json::to_vec(token).expect("serialize a continue token");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

fn decode_continue(token: &str) -> Option<ContinueToken> {
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    serde_json::from_slice(&json).ok()
}
