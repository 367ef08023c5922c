//! Decision -> CheckResponse: the only place that knows Envoy's response types.

use std::collections::HashMap;

use envoy_types::ext_authz::v3::pb::{
    CheckResponse, DeniedHttpResponse, HeaderAppendAction, HeaderValue, HeaderValueOption,
    HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use envoy_types::pb::google::rpc;

use crate::model::{Action, Decision, DenyReason};

/// gRPC codes of `CheckResponse.status` (Envoy only tests for OK).
const OK: i32 = 0;
const INVALID_ARGUMENT: i32 = 3;
const PERMISSION_DENIED: i32 = 7;
const INTERNAL: i32 = 13;
const UNAVAILABLE: i32 = 14;
const UNAUTHENTICATED: i32 = 16;

/// Builds the CheckResponse for a decision. `tenant_header` is the header that carries the
/// canonical tenant value upstream.
pub fn build(decision: &Decision, action: Option<Action>, tenant_header: &str) -> CheckResponse {
    match decision {
        Decision::Allow {
            user,
            tenants,
            action,
            cached,
        } => CheckResponse {
            status: Some(rpc::Status {
                code: OK,
                ..Default::default()
            }),
            dynamic_metadata: Some(metadata([
                ("decision", "allow"),
                ("user", user),
                ("tenants", tenants.canonical()),
                ("action", action.as_str()),
                ("reason", "ok"),
                ("cached", bool_str(*cached)),
            ])),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                // Exactly one tenant header upstream, whatever the client sent: Envoy 1.40
                // appends a second value unless told to overwrite.
                headers: vec![header(tenant_header, tenants.canonical())],
                // The token never goes upstream; nor does Tempo's own tenant header when a
                // different one is configured (Tempo would read it unchecked).
                headers_to_remove: headers_to_remove(tenant_header),
                ..Default::default()
            })),
        },
        Decision::Deny { reason, cached } => deny(reason, action, *cached),
    }
}

fn deny(reason: &DenyReason, action: Option<Action>, cached: bool) -> CheckResponse {
    let http = reason.http_status();
    let code = match http {
        400 => INVALID_ARGUMENT,
        401 => UNAUTHENTICATED,
        403 => PERMISSION_DENIED,
        503 => UNAVAILABLE,
        _ => INTERNAL,
    };
    let message = reason.to_string();
    let mut headers = vec![header("content-type", "text/plain; charset=utf-8")];
    match reason {
        DenyReason::MissingCredentials => {
            headers.push(header("www-authenticate", "Bearer realm=\"tempo\""));
        }
        DenyReason::MalformedCredentials(_) | DenyReason::TokenTooLong { .. } => {
            headers.push(header(
                "www-authenticate",
                "Bearer realm=\"tempo\", error=\"invalid_request\"",
            ))
        }
        DenyReason::Unauthenticated { .. } => headers.push(header(
            "www-authenticate",
            "Bearer realm=\"tempo\", error=\"invalid_token\"",
        )),
        DenyReason::Unavailable(_) => headers.push(header("retry-after", "1")),
        _ => {}
    }
    CheckResponse {
        status: Some(rpc::Status {
            code,
            message: reason.kind().to_string(),
            ..Default::default()
        }),
        dynamic_metadata: Some(metadata([
            ("decision", "deny"),
            ("reason", reason.kind()),
            ("action", action.map_or("unknown", Action::as_str)),
            ("cached", bool_str(cached)),
        ])),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus {
                code: i32::from(http),
            }),
            headers,
            body: format!("{message}\n"),
        })),
    }
}

fn headers_to_remove(tenant_header: &str) -> Vec<String> {
    let mut remove = vec!["authorization".to_string()];
    if tenant_header != TEMPO_TENANT_HEADER {
        remove.push(TEMPO_TENANT_HEADER.to_string());
    }
    remove
}

/// The header Tempo reads the tenant from.
const TEMPO_TENANT_HEADER: &str = "x-scope-orgid";

fn bool_str(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

fn header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_string(),
            value: value.to_string(),
            raw_value: Vec::new(),
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

fn metadata<const N: usize>(fields: [(&str, &str); N]) -> Struct {
    let fields: HashMap<String, Value> = fields
        .into_iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                Value {
                    kind: Some(Kind::StringValue(v.to_string())),
                },
            )
        })
        .collect();
    Struct { fields }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Tenant, Tenants};
    use std::sync::Arc;

    fn allow() -> Decision {
        Decision::Allow {
            user: Arc::from("system:serviceaccount:a:query"),
            tenants: Tenants::new(vec![
                Tenant::parse("a").unwrap(),
                Tenant::parse("b").unwrap(),
            ])
            .unwrap(),
            action: Action::Read,
            cached: true,
        }
    }

    #[test]
    fn allow_overwrites_one_tenant_header_and_drops_the_token() {
        let r = build(&allow(), Some(Action::Read), "x-scope-orgid");
        assert_eq!(r.status.unwrap().code, OK);
        let Some(HttpResponse::OkResponse(ok)) = r.http_response else {
            panic!("not ok")
        };
        assert_eq!(ok.headers.len(), 1);
        let h = &ok.headers[0];
        assert_eq!(h.header.as_ref().unwrap().key, "x-scope-orgid");
        assert_eq!(h.header.as_ref().unwrap().value, "a|b");
        assert_eq!(
            h.append_action,
            HeaderAppendAction::OverwriteIfExistsOrAdd as i32
        );
        assert_eq!(ok.headers_to_remove, vec!["authorization"]);
        let md = r.dynamic_metadata.unwrap().fields;
        assert_eq!(
            md["user"].kind,
            Some(Kind::StringValue("system:serviceaccount:a:query".into()))
        );
        assert_eq!(md["tenants"].kind, Some(Kind::StringValue("a|b".into())));
    }

    #[test]
    fn denials_carry_status_reason_and_challenge() {
        let cases = [
            (DenyReason::MissingCredentials, 401, UNAUTHENTICATED, true),
            (
                DenyReason::Unauthenticated { detail: None },
                401,
                UNAUTHENTICATED,
                true,
            ),
            (
                DenyReason::BadTenant("x".into()),
                400,
                INVALID_ARGUMENT,
                false,
            ),
            (
                DenyReason::Unavailable("down".into()),
                503,
                UNAVAILABLE,
                false,
            ),
        ];
        for (reason, http, grpc, challenge) in cases {
            let r = build(
                &Decision::deny(reason.clone()),
                Some(Action::Read),
                "x-scope-orgid",
            );
            assert_eq!(r.status.unwrap().code, grpc, "{reason:?}");
            let Some(HttpResponse::DeniedResponse(d)) = r.http_response else {
                panic!("not denied")
            };
            assert_eq!(d.status.unwrap().code, http);
            assert_eq!(d.body, format!("{reason}\n"));
            let has = d
                .headers
                .iter()
                .any(|h| h.header.as_ref().unwrap().key == "www-authenticate");
            assert_eq!(has, challenge, "{reason:?}");
        }
    }
}

#[cfg(test)]
mod header_tests {
    use super::*;

    #[test]
    fn another_tenant_header_also_strips_tempos() {
        assert_eq!(headers_to_remove("x-scope-orgid"), vec!["authorization"]);
        assert_eq!(
            headers_to_remove("x-tenant"),
            vec!["authorization", "x-scope-orgid"]
        );
    }
}
