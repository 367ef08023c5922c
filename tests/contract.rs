//! The decision contract, row by row, against both backends: Kubernetes (through the real kube
//! client and the fake API server) and static (the config file). Same identities, same grants,
//! same answers.

mod support;

use support::authz::{check_request, http_status, AuthzProcess};
use support::fake_kube::{FakeKube, FakeUser, GrantRule, Subject};

const QUERY: &str = "contract-showcase-query-token";
const INGEST: &str = "contract-showcase-ingest-token";
const SRE: &str = "contract-sre-token";

/// One row: headers, route action (None = infer), method, path, expected HTTP status.
struct Row {
    name: &'static str,
    auth: Option<String>,
    tenant: Option<&'static str>,
    action: Option<&'static str>,
    method: &'static str,
    path: &'static str,
    want: u16,
}

fn bearer(t: &str) -> Option<String> {
    Some(format!("Bearer {t}"))
}

fn rows() -> Vec<Row> {
    let r = |name, auth, tenant, action, method, path, want| Row {
        name,
        auth,
        tenant,
        action,
        method,
        path,
        want,
    };
    let long = Some(format!("Bearer {}", "x".repeat(16 * 1024 + 1)));
    vec![
        r(
            "no authorization",
            None,
            Some("showcase"),
            Some("read"),
            "GET",
            "/api/search",
            401,
        ),
        r(
            "basic scheme",
            Some("Basic dXNlcjpwdw==".into()),
            Some("showcase"),
            Some("read"),
            "GET",
            "/api/search",
            401,
        ),
        r(
            "bare token",
            Some(QUERY.into()),
            Some("showcase"),
            Some("read"),
            "GET",
            "/api/search",
            401,
        ),
        r(
            "empty bearer",
            Some("Bearer ".into()),
            Some("showcase"),
            Some("read"),
            "GET",
            "/api/search",
            401,
        ),
        r(
            "token over the limit",
            long,
            Some("showcase"),
            Some("read"),
            "GET",
            "/api/search",
            401,
        ),
        r(
            "lowercase bearer",
            Some(format!("bearer {QUERY}")),
            Some("showcase"),
            Some("read"),
            "GET",
            "/api/search",
            200,
        ),
        r(
            "unknown token",
            bearer("who-is-this"),
            Some("showcase"),
            Some("read"),
            "GET",
            "/api/search",
            401,
        ),
        r(
            "missing tenant",
            bearer(QUERY),
            None,
            Some("read"),
            "GET",
            "/api/search",
            400,
        ),
        r(
            "not a namespace",
            bearer(QUERY),
            Some("Showcase"),
            Some("read"),
            "GET",
            "/api/search",
            400,
        ),
        r(
            "empty cross-tenant part",
            bearer(QUERY),
            Some("showcase||payments"),
            Some("read"),
            "GET",
            "/api/search",
            400,
        ),
        r(
            "repeated tenant",
            bearer(QUERY),
            Some("showcase|showcase"),
            Some("read"),
            "GET",
            "/api/search",
            400,
        ),
        r(
            "duplicated header",
            bearer(QUERY),
            Some("showcase,payments"),
            Some("read"),
            "GET",
            "/api/search",
            400,
        ),
        r(
            "own tenant",
            bearer(QUERY),
            Some("showcase"),
            Some("read"),
            "GET",
            "/api/search",
            200,
        ),
        r(
            "other tenant",
            bearer(QUERY),
            Some("payments"),
            Some("read"),
            "GET",
            "/api/search",
            403,
        ),
        r(
            "cross-tenant, one denied",
            bearer(QUERY),
            Some("showcase|payments"),
            Some("read"),
            "GET",
            "/api/search",
            403,
        ),
        r(
            "cross-tenant, all allowed",
            bearer(SRE),
            Some("showcase|payments"),
            Some("read"),
            "GET",
            "/api/search",
            200,
        ),
        r(
            "query token writes",
            bearer(QUERY),
            Some("showcase"),
            Some("write"),
            "POST",
            "/v1/traces",
            403,
        ),
        r(
            "ingest token writes",
            bearer(INGEST),
            Some("showcase"),
            Some("write"),
            "POST",
            "/v1/traces",
            200,
        ),
        r(
            "ingest token reads",
            bearer(INGEST),
            Some("showcase"),
            Some("read"),
            "GET",
            "/api/search",
            403,
        ),
        r(
            "inferred read",
            bearer(QUERY),
            Some("showcase"),
            None,
            "POST",
            "/api/search?q=1",
            200,
        ),
        r(
            "inferred OTLP write",
            bearer(QUERY),
            Some("showcase"),
            None,
            "POST",
            "/v1/traces",
            403,
        ),
        r(
            "inferred OTLP gRPC write",
            bearer(INGEST),
            Some("showcase"),
            None,
            "POST",
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            200,
        ),
        r(
            "inferred manage",
            bearer(QUERY),
            Some("showcase"),
            None,
            "PUT",
            "/api/overrides",
            403,
        ),
        r(
            "inferred streaming query",
            bearer(QUERY),
            Some("showcase"),
            None,
            "POST",
            "/tempopb.StreamingQuerier/Search",
            200,
        ),
        r(
            "operations endpoint",
            bearer(SRE),
            Some("showcase"),
            None,
            "GET",
            "/shutdown",
            403,
        ),
        r(
            "unknown route action",
            bearer(QUERY),
            Some("showcase"),
            Some("admin"),
            "GET",
            "/",
            500,
        ),
    ]
}

async fn run_rows(authz: &AuthzProcess, backend: &str) {
    let mut client = authz.client().await;
    let mut failures = Vec::new();
    for row in rows() {
        let mut headers = Vec::new();
        if let Some(a) = &row.auth {
            headers.push(("authorization", a.as_str()));
        }
        if let Some(t) = row.tenant {
            headers.push(("x-scope-orgid", t));
        }
        let req = check_request(row.method, row.path, &headers, row.action);
        let got = http_status(&client.check(req).await.expect("answered").into_inner());
        if got != row.want {
            failures.push(format!(
                "{backend}: {}: got {got}, want {}",
                row.name, row.want
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_holds_on_the_kubernetes_backend() {
    let fake = FakeKube::start().await;
    fake.add_token(QUERY, FakeUser::service_account("showcase", "grafana"));
    fake.add_token(
        INGEST,
        FakeUser::service_account("showcase", "otel-collector"),
    );
    fake.add_token(SRE, FakeUser::user("sre@example.com", &["sre"]));
    fake.grant(
        Subject::User("system:serviceaccount:showcase:grafana".into()),
        "showcase",
        "get",
    );
    fake.grant(
        Subject::User("system:serviceaccount:showcase:otel-collector".into()),
        "showcase",
        "create",
    );
    fake.grant_rule(GrantRule::new(
        Subject::Group("sre".into()),
        None,
        "tempo.grafana.com",
        "traces",
        &["get"],
    ));
    let authz = AuthzProcess::start(fake.kubeconfig_path(), &[]).await;
    run_rows(&authz, "kubernetes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_holds_on_the_static_backend() {
    let hash = |t: &str| tenant_authz::cli::hash_token(t).unwrap();
    let config = format!(
        r#"backend: static
static:
  identities:
  - {{sha256: {q}, username: "system:serviceaccount:showcase:grafana", groups: ["system:serviceaccounts:showcase"]}}
  - {{sha256: {i}, username: "system:serviceaccount:showcase:otel-collector"}}
  - {{sha256: {s}, username: sre@example.com, groups: [sre]}}
  grants:
  - {{users: ["system:serviceaccount:showcase:grafana"], tenants: [showcase], actions: [read]}}
  - {{users: ["system:serviceaccount:showcase:otel-collector"], tenants: [showcase], actions: [write]}}
  - {{groups: [sre], tenants: ["*"], actions: [read]}}
"#,
        q = hash(QUERY),
        i = hash(INGEST),
        s = hash(SRE),
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("static.yaml");
    std::fs::write(&file, config).unwrap();
    let authz = AuthzProcess::start_with_config(&file, &[]).await;
    run_rows(&authz, "static").await;
}
