//! TokenReview: tokens registered with [`super::FakeKube::add_token`], audiences, and the
//! objects a token is bound to (its ServiceAccount and pod, when they are in the store).

use hyper::StatusCode;
use serde_json::{json, Map, Value};

use k8s_openapi::api::authentication::v1::TokenReview;

use super::http::{bad_request, json_response, Resp};
use super::kinds::Kind;
use super::reviews::{decode, echo_metadata};
use super::server::{BoundObject, Shared};
use super::store::Store;
use super::users::FakeUser;
use super::users::{POD_NAME, POD_UID};
use super::DEFAULT_AUDIENCE;

/// What the real server says when a token's ServiceAccount or pod is gone or was re-created
/// (`pkg/serviceaccount/claims.go`, behind the union authenticator).
const INVALIDATED: &str = "[invalid bearer token, service account token has been invalidated]";

/// Whether every object the token is bound to is still there, with the same uid.
fn bound_objects_exist(store: &Store, bound: &[BoundObject]) -> bool {
    bound.iter().all(|b| {
        store
            .get(b.kind, &b.namespace, &b.name)
            .and_then(|o| o.pointer("/metadata/uid"))
            .and_then(Value::as_str)
            == Some(b.uid.as_str())
    })
}

/// Binds a token's user to its ServiceAccount and pod if they are in the store, as the real
/// server does (its `user.uid` is the ServiceAccount's, `extra` names the pod and its uid).
pub(super) fn bind_to_store(store: &Store, user: &mut FakeUser) -> Vec<BoundObject> {
    let mut bound = Vec::new();
    let Some((namespace, name)) = user
        .username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .map(|(ns, name)| (ns.to_string(), name.to_string()))
    else {
        return bound;
    };
    let uid_of = |kind, name: &str| {
        store
            .get(kind, &namespace, name)
            .and_then(|o| o.pointer("/metadata/uid"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    if let Some(uid) = uid_of(Kind::ServiceAccount, &name) {
        user.uid = uid.clone();
        bound.push(BoundObject {
            kind: Kind::ServiceAccount,
            namespace: namespace.clone(),
            name,
            uid,
        });
    }
    let pod = user
        .extra
        .get(POD_NAME)
        .and_then(|names| names.first())
        .cloned();
    if let Some(pod) = pod {
        if let Some(uid) = uid_of(Kind::Pod, &pod) {
            user.extra.insert(POD_UID.to_string(), vec![uid.clone()]);
            bound.push(BoundObject {
                kind: Kind::Pod,
                namespace,
                name: pod,
                uid,
            });
        }
    }
    bound
}

const TOKEN_REQUIRED: &str = "token is required for TokenReview in authentication";

pub(super) fn token_review(shared: &Shared, body: &[u8]) -> Resp {
    let (review, raw) = match decode::<TokenReview>(body, "authentication.k8s.io/v1", "TokenReview")
    {
        Ok(decoded) => decoded,
        Err(message) => {
            // A JSON TokenReview without `spec.token` gets the message of the real server.
            let missing_token = serde_json::from_slice::<Value>(body)
                .ok()
                .filter(Value::is_object)
                .is_some_and(|v| v.pointer("/spec/token").is_none());
            if missing_token {
                return bad_request(TOKEN_REQUIRED);
            }
            return bad_request(&message);
        }
    };
    let token = review.spec.token.clone();
    if token.is_empty() {
        return bad_request(TOKEN_REQUIRED);
    }
    let requested: Vec<String> = review.spec.audiences.clone().unwrap_or_default();
    let entry = shared.state().tokens.get(&token).cloned();

    let status = match entry {
        None => unauthenticated("[invalid bearer token, token lookup failed]".to_string()),
        Some(entry) if !bound_objects_exist(&shared.store(), &entry.bound) => {
            unauthenticated(INVALIDATED.to_string())
        }
        Some(entry) => {
            let audiences = if requested.is_empty() {
                if entry.audiences.is_empty() {
                    Ok(vec![DEFAULT_AUDIENCE.to_string()])
                } else {
                    Ok(entry.audiences.clone())
                }
            } else if entry.audiences.is_empty() {
                Ok(requested.clone())
            } else {
                let both: Vec<String> = entry
                    .audiences
                    .iter()
                    .filter(|a| requested.contains(a))
                    .cloned()
                    .collect();
                if both.is_empty() {
                    Err(format!(
                        "[invalid bearer token, token audiences {} is invalid for the target audiences {}]",
                        go_quoted_list(&entry.audiences),
                        go_quoted_list(&requested)
                    ))
                } else {
                    Ok(both)
                }
            };
            match audiences {
                Err(error) => unauthenticated(error),
                Ok(audiences) => json!({
                    "authenticated": true,
                    "user": user_info(&entry.user),
                    "audiences": audiences,
                }),
            }
        }
    };

    let spec = serde_json::to_value(&review.spec).expect("serialize TokenReviewSpec");
    json_response(
        StatusCode::CREATED,
        json!({
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": echo_metadata(&raw),
            "spec": spec,
            "status": status,
        }),
    )
}

/// Status of a failed authentication as the real server writes it: `authenticated` is
/// `omitempty` in Go, so it is absent; `user` is an empty object.
fn unauthenticated(error: String) -> Value {
    json!({ "user": {}, "error": error })
}

/// `UserInfo` with Go `omitempty` semantics.
fn user_info(user: &FakeUser) -> Value {
    let mut info = Map::new();
    if !user.username.is_empty() {
        info.insert("username".into(), json!(user.username));
    }
    if !user.uid.is_empty() {
        info.insert("uid".into(), json!(user.uid));
    }
    if !user.groups.is_empty() {
        info.insert("groups".into(), json!(user.groups));
    }
    if !user.extra.is_empty() {
        info.insert("extra".into(), json!(user.extra));
    }
    Value::Object(info)
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
fn go_quoted_list(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|s| serde_json::to_string(s).expect("serialize a string"))
        .collect();
    format!("[{}]", quoted.join(" "))
}
