//! SubjectAccessReview: validation like the real server (422), then the decision: the
//! fake's grant list OR'ed with RBAC evaluation of the stored Roles and bindings.

use hyper::StatusCode;
use serde_json::{json, Value};

use k8s_openapi::api::authorization::v1::SubjectAccessReview;

use super::http::{bad_request, json_response, status_response, Resp};
use super::rbac;
use super::reviews::{decode, echo_metadata};
use super::server::Shared;

pub(super) fn subject_access_review(shared: &Shared, body: &[u8]) -> Resp {
    let (review, raw) =
        match decode::<SubjectAccessReview>(body, "authorization.k8s.io/v1", "SubjectAccessReview")
        {
            Ok(decoded) => decoded,
            Err(message) => return bad_request(&message),
        };
    let spec = &review.spec;

    // ValidateSubjectAccessReviewSpec of the real server: 422 Invalid.
    let mut causes: Vec<(String, String)> = Vec::new();
    if spec.resource_attributes.is_some() && spec.non_resource_attributes.is_some() {
        causes.push((
            "spec.nonResourceAttributes".into(),
            "spec.nonResourceAttributes: Invalid value: \"object\": cannot be specified in combination with resourceAttributes".into(),
        ));
    }
    if spec.resource_attributes.is_none() && spec.non_resource_attributes.is_none() {
        causes.push((
            "spec.resourceAttributes".into(),
            "spec.resourceAttributes: Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified".into(),
        ));
    }
    let user = spec.user.clone().unwrap_or_default();
    let groups = spec.groups.clone().unwrap_or_default();
    if user.is_empty() && groups.is_empty() {
        causes.push((
            "spec.user".into(),
            "spec.user: Invalid value: \"\": at least one of user or group must be specified"
                .into(),
        ));
    }
    if !causes.is_empty() {
        let name = review.metadata.name.clone().unwrap_or_default();
        let joined: Vec<&str> = causes.iter().map(|(_, m)| m.as_str()).collect();
        let summary = if joined.len() == 1 {
            joined[0].to_string()
        } else {
            format!("[{}]", joined.join(", "))
        };
        let details_causes: Vec<Value> = causes
            .iter()
            .map(|(field, message)| {
                let short = message
                    .split_once(": ")
                    .map(|(_, rest)| rest)
                    .unwrap_or(message);
                json!({"reason": "FieldValueInvalid", "message": short, "field": field})
            })
            .collect();
        return status_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("SubjectAccessReview.authorization.k8s.io {name:?} is invalid: {summary}"),
            "Invalid",
            json!({
                "name": name,
                "group": "authorization.k8s.io",
                "kind": "SubjectAccessReview",
                "causes": details_causes,
            }),
        );
    }

    let decision = match spec.resource_attributes.as_ref() {
        Some(ra) => {
            let grants = shared.state().grants.clone();
            match rbac::allowed_by_grants(&grants, &user, &groups, ra) {
                Some(reason) => rbac::Decision::allow(reason),
                None => rbac::evaluate(&shared.store(), &user, &groups, ra),
            }
        }
        None => rbac::Decision::default(),
    };

    let status = match (decision.allowed_by, decision.errors.as_slice()) {
        (Some(reason), _) => json!({ "allowed": true, "reason": reason }),
        // RBAC has no opinion: `denied` and an empty `reason` are omitted.
        (None, []) => json!({ "allowed": false }),
        // A binding to a missing role: the error as the real server reports it.
        (None, [error]) => json!({ "allowed": false, "evaluationError": error }),
        (None, errors) => {
            json!({ "allowed": false, "evaluationError": format!("[{}]", errors.join(", ")) })
        }
    };
    let spec = serde_json::to_value(&review.spec).expect("serialize SubjectAccessReviewSpec");
    json_response(
        StatusCode::CREATED,
        json!({
            "kind": "SubjectAccessReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": echo_metadata(&raw),
            "spec": spec,
            "status": status,
        }),
    )
}
