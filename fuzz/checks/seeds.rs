//! Seeds: realistic inputs to start the corpus from (tests/fuzz_corpus.rs writes and replays
//! them with FUZZ_WRITE_SEEDS=1).

use std::collections::HashMap;

use base64::Engine as _;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use prost::Message as _;

use tenant_authz::model::BearerToken;

use super::Seed;

pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    // check_request, structured (first byte odd).
    // (method index, path index, headers, context extension)
    type Row<'a> = (u8, u8, &'a [(&'a str, &'a str)], u8);
    let requests: &[Row] = &[
        (
            0,
            0,
            &[("authorization", "Bearer tok"), ("x-scope-orgid", "team-a")],
            0,
        ),
        (
            0,
            0,
            &[("authorization", "Bearer tok"), ("x-scope-orgid", "a|b|c")],
            1,
        ),
        (
            2,
            1,
            &[
                ("authorization", "bearer  abc.def.ghi"),
                ("x-scope-orgid", "showcase"),
            ],
            0,
        ),
        (
            1,
            9,
            &[
                ("authorization", "Bearer tok=="),
                ("x-scope-orgid", "payments"),
            ],
            2,
        ),
        (
            1,
            0,
            &[
                ("authorization", "Basic dXNlcjpwYXNz"),
                ("x-scope-orgid", "a,b"),
            ],
            0,
        ),
        (
            0,
            4,
            &[("x-scope-orgid", "a||b"), ("x-remote-user", "admin")],
            0,
        ),
    ];
    for (i, (method, path, headers, ext)) in requests.iter().enumerate() {
        let mut s = Seed::default().byte(1).byte(*method).byte(*path);
        s = s.byte(headers.len() as u8);
        for (k, v) in *headers {
            s = s.pick_any(k).string(v);
        }
        s = s.byte(0).byte(*ext);
        // Disguises: encode char 2 in lower-case hex, "./" at the start, "abc/../" after the
        // first slash; then a query string and no fragment.
        s = s.byte(3).byte(0).byte(0).byte(2).byte(1);
        s = s.byte(1).byte(0).byte(0);
        s = s.byte(2).byte(0).byte(1).byte(2).byte(10).byte(11).byte(12);
        s = s.byte(1).string("q=1").byte(0);
        out.push(("check_request", format!("structured-{i}"), s.0));
    }
    // Raw header maps (encode_raw_headers: true), a repeated header, non-UTF-8 raw value.
    let raw = Seed::default()
        .byte(1)
        .byte(1)
        .byte(2)
        .byte(0)
        .byte(5)
        .byte(0)
        .string("")
        .bytes(b"Bearer raw-token")
        .byte(1)
        .string("")
        .bytes(b"team-a")
        .byte(1)
        .string("")
        .bytes(b"team-b")
        .byte(1)
        .string("")
        .bytes(b"\xff\xfe")
        .byte(0);
    out.push(("check_request", "header-map".into(), raw.0));
    // A prost-encoded CheckRequest (first byte even).
    let mut headers = HashMap::new();
    headers.insert(
        "authorization".into(),
        "Bearer eyJhbGciOi.eyJleHAiOjE.sig".into(),
    );
    headers.insert("x-scope-orgid".into(), "showcase|payments".into());
    let req = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "POST".into(),
                    path: "/api/overrides?x=1".into(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let mut bytes = vec![0u8];
    bytes.extend(req.encode_to_vec());
    out.push(("check_request", "prost".into(), bytes));

    // jwt_exp.
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    for (name, exp) in [
        ("exp-int", "1760000000"),
        ("exp-float", "1.76e9"),
        ("exp-negative", "-5"),
        ("exp-string", "\"soon\""),
    ] {
        let s = Seed::default().byte(0).byte(0).u64(10_000_000).byte(2);
        let mut s = s.0;
        s.extend_from_slice(exp.as_bytes());
        out.push(("jwt_exp", name.into(), s));
    }
    let s = Seed::default()
        .byte(1)
        .byte(1)
        .byte(0)
        .byte(0)
        .u64(0)
        .byte(1)
        .string("eyJhbGciOiJSUzI1NiJ9")
        .bytes(br#"{"iss":"https://kubernetes.default.svc","exp":1760003600,"aud":["tempo"]}"#)
        .string("sig");
    out.push(("jwt_exp", "service-account".into(), s.0));
    let mut s = Seed::default()
        .byte(2)
        .u64(86_400)
        .u64(0)
        .byte(0)
        .u64(1)
        .byte(0)
        .0;
    s.extend_from_slice(format!("a.{}.c", b64(b"{\"exp\":1}")).as_bytes());
    out.push(("jwt_exp", "raw".into(), s));

    // static_backend and config: the shipped example, and small variations.
    let example = include_str!("../../examples/static.yaml");
    out.push(("static_backend", "example".into(), example.into()));
    out.push(("config", "example-static".into(), example.into()));
    let tok = BearerToken::from_secret("tok".into()).hash().to_hex();
    let small = format!(
        "backend: static\nstatic:\n  identities:\n  - sha256: {tok}\n    username: alice\n    groups: [team]\n  grants:\n  - groups: [team]\n    tenants: [a, b]\n    actions: [read, write]\n  - users: [alice]\n    tenants: [\"*\"]\n    actions: [manage]\n"
    );
    out.push(("static_backend", "small".into(), small.clone().into_bytes()));
    let groups = "backend: static\nstatic:\n  grants:\n  - groups: [system:authenticated]\n    users: [\"\"]\n    tenants: [\"*\", a]\n    actions: [write]\n";
    out.push(("static_backend", "groups-only".into(), groups.into()));
    let full = "grpc_addr: 0.0.0.0:9001\nadmin_addr: 127.0.0.1:9090\nlog_format: json\nbackend: kubernetes\ntenant_header: x-scope-orgid\nmax_token_bytes: 16384\ndecision_timeout: 1500ms\nshutdown:\n  delay: 5s\n  grace: 10s\nkubernetes:\n  audiences: [tempo, https://kubernetes.default.svc]\n  max_concurrent_reviews: 32\nauthorization:\n  mapping: tempo-gateway\n  group: tempo.grafana.com\n  resource: traces\n  verbs: {read: get, write: create, manage: update}\ncache:\n  max_entries: 100000\n  max_identities: 10000\n  max_negative_entries: 10000\n  allowed_ttl: 1m\n  denied_ttl: 10s\n  unauthenticated_ttl: 10s\n  identity_ttl: 2m\nactions:\n  default: read\n  default_unsafe: write\n  rules:\n  - path_prefix: /v1/traces\n    action: write\n  - methods: [PUT, POST]\n    path: /api/overrides\n    action: manage\n  - path_prefix: /flush\n    action: deny\n";
    out.push(("config", "full".into(), full.into()));
    out.push(("config", "small-static".into(), small.into_bytes()));
    out.push(("config", "empty".into(), Vec::new()));

    // token_review_answer: a realistic answer, audiences, echoes of the token (TOKEN).
    let user = r#"{"username":"system:serviceaccount:showcase:grafana","uid":"5b2c","groups":["system:serviceaccounts","system:serviceaccounts:showcase","system:authenticated"],"extra":{"authentication.kubernetes.io/pod-name":["grafana-0"]}}"#;
    let reviews = [
        ("authenticated", 0u8, format!(r#"{{"kind":"TokenReview","apiVersion":"authentication.k8s.io/v1","metadata":{{"creationTimestamp":null}},"spec":{{"token":"TOKEN","audiences":["tempo"]}},"status":{{"authenticated":true,"user":{user},"audiences":["tempo"]}}}}"#)),
        ("other-audience", 0, format!(r#"{{"kind":"TokenReview","apiVersion":"authentication.k8s.io/v1","status":{{"authenticated":true,"user":{user},"audiences":["vault"]}}}}"#)),
        ("not-authenticated", 1, r#"{"kind":"TokenReview","apiVersion":"authentication.k8s.io/v1","status":{"authenticated":false,"error":"[invalid bearer token, token lookup failed: TOKEN]"}}"#.to_string()),
        ("no-username", 0, r#"{"status":{"authenticated":true,"user":{"username":""},"audiences":["tempo"]}}"#.to_string()),
        ("status-quoting", 4, r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"tokenreviews.authentication.k8s.io is forbidden: TOKEN","reason":"Forbidden","code":403}"#.to_string()),
        ("plain-text", 9, "upstream connect error: TOKEN\n".to_string()),
        ("wrong-kind", 0, r#"{"kind":"Status","apiVersion":"v1","status":{"authenticated":true,"user":{"username":"u"}}}"#.to_string()),
    ];
    for (name, code, body) in reviews {
        let s = Seed::default()
            .byte(code)
            .bytes(b"eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.payload.sig")
            .byte(1)
            .byte(0)
            .byte(1);
        let mut s = s.0;
        s.extend_from_slice(body.as_bytes());
        out.push(("token_review_answer", name.into(), s));
    }
    // sar_answer: allowed, denied, both, neither, evaluation errors, a Status.
    for (name, code, body) in [
        (
            "allowed",
            0u8,
            r#"{"kind":"SubjectAccessReview","apiVersion":"authorization.k8s.io/v1","spec":{"resourceAttributes":{"namespace":"showcase","verb":"get","group":"tempo.grafana.com","resource":"traces"},"user":"system:serviceaccount:showcase:grafana"},"status":{"allowed":true,"reason":"RBAC: allowed by RoleBinding \"traces-reader/showcase\""}}"#,
        ),
        (
            "denied",
            0,
            r#"{"kind":"SubjectAccessReview","apiVersion":"authorization.k8s.io/v1","status":{"allowed":false,"denied":true,"reason":"no"}}"#,
        ),
        ("both", 1, r#"{"status":{"allowed":true,"denied":true}}"#),
        ("neither", 0, r#"{"status":{"allowed":false}}"#),
        (
            "evaluation-error",
            0,
            r#"{"status":{"allowed":false,"evaluationError":"role.rbac.authorization.k8s.io \"x\" not found\u0007"}}"#,
        ),
        (
            "status-500",
            8,
            r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"etcdserver: request timed out","code":500}"#,
        ),
    ] {
        let mut s = vec![code];
        s.extend_from_slice(body.as_bytes());
        out.push(("sar_answer", name.into(), s));
    }
    out
}
