//! The Kubernetes manifests (`manifests/`), under `cargo test`.
//!
//! * `manifest_checks_pass` runs `scripts/test-manifests`: every kustomization builds, schemas,
//!   CRD fields, posture (hardening, RBAC, Secrets, Envoy ConfigMaps = `envoy/*.yaml`), and the
//!   ConfigMap's config parsed by the real binary.
//! * The agreement tests build `manifests/overlays/default` with `kubectl kustomize`, load every
//!   Role/ClusterRole binding of it into the fake API server's RBAC evaluator, and run the real
//!   tenant-authz with the config file of the built ConfigMap against it: the answers are
//!   tenant-authz's own 200 / 403, for the identities the tenant kit creates, with the token
//!   audiences the kit uses.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde::Deserialize as _;
use serde_json::Value;

use support::authz::{check_request, http_status, AuthzProcess};
use support::fake_kube::{FakeKube, FakeUser, GrantRule, Subject, DEFAULT_AUDIENCE};

const KUBECTL_HINT: &str =
    "kubectl not found: the manifest tests need kubectl >= 1.27 (kustomize v5 built in): \
     https://kubernetes.io/docs/tasks/tools/#kubectl";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn require_kubectl() {
    let found = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(found, "{KUBECTL_HINT}");
}

#[test]
fn manifest_checks_pass() {
    require_kubectl();
    let out = Command::new(repo().join("scripts/test-manifests"))
        .current_dir(repo())
        .env("TENANT_AUTHZ_BIN", env!("CARGO_BIN_EXE_tenant-authz"))
        .output()
        .expect("run scripts/test-manifests");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "scripts/test-manifests failed ({}):\n{text}",
        out.status
    );
}

/// `kubectl kustomize <dir>` as JSON values, one per object.
fn build(dir: &str) -> Vec<Value> {
    require_kubectl();
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(repo().join(dir))
        .output()
        .expect("run kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8 output");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("a YAML object"))
        .filter(|v| !v.is_null())
        .collect()
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn strings(v: &Value, pointer: &str) -> Vec<String> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Every (Cluster)RoleBinding of the build as fake-API grants: one per subject and rule.
fn grants_of(objects: &[Value]) -> Vec<GrantRule> {
    let roles: HashMap<(String, String, String), &Value> = objects
        .iter()
        .filter(|o| matches!(str_at(o, "/kind"), "Role" | "ClusterRole"))
        .map(|o| {
            let key = (
                str_at(o, "/kind").to_string(),
                str_at(o, "/metadata/namespace").to_string(),
                str_at(o, "/metadata/name").to_string(),
            );
            (key, o)
        })
        .collect();
    let mut grants = Vec::new();
    for b in objects
        .iter()
        .filter(|o| matches!(str_at(o, "/kind"), "RoleBinding" | "ClusterRoleBinding"))
    {
        let binding_ns = str_at(b, "/metadata/namespace");
        let role_kind = str_at(b, "/roleRef/kind");
        // A RoleBinding to a ClusterRole grants it in the binding's namespace only.
        let role_ns = if role_kind == "Role" { binding_ns } else { "" };
        let key = (
            role_kind.to_string(),
            role_ns.to_string(),
            str_at(b, "/roleRef/name").to_string(),
        );
        let role = roles
            .get(&key)
            .unwrap_or_else(|| panic!("{key:?} bound by {} is not in the build", b["metadata"]));
        let grant_ns = (str_at(b, "/kind") == "RoleBinding").then_some(binding_ns);
        for s in b["subjects"].as_array().into_iter().flatten() {
            let subject = match str_at(s, "/kind") {
                "ServiceAccount" => Subject::User(format!(
                    "system:serviceaccount:{}:{}",
                    str_at(s, "/namespace"),
                    str_at(s, "/name")
                )),
                "Group" => Subject::Group(str_at(s, "/name").to_string()),
                _ => Subject::User(str_at(s, "/name").to_string()),
            };
            for rule in role["rules"].as_array().into_iter().flatten() {
                let verbs = strings(rule, "/verbs");
                let verbs: Vec<&str> = verbs.iter().map(String::as_str).collect();
                let names = strings(rule, "/resourceNames");
                for group in strings(rule, "/apiGroups") {
                    for resource in strings(rule, "/resources") {
                        let g =
                            GrantRule::new(subject.clone(), grant_ns, &group, &resource, &verbs);
                        if names.is_empty() {
                            grants.push(g);
                        } else {
                            grants.extend(names.iter().map(|n| g.clone().with_name(n)));
                        }
                    }
                }
            }
        }
    }
    grants
}

/// The tenant-authz config file of the built ConfigMap.
fn tenant_authz_config(objects: &[Value]) -> String {
    objects
        .iter()
        .find(|o| {
            str_at(o, "/kind") == "ConfigMap"
                && str_at(o, "/metadata/name").starts_with("tenant-authz-config")
        })
        .map(|o| str_at(o, "/data/config.yaml").to_string())
        .expect("tenant-authz-config ConfigMap in the build")
}

/// The audience of the projected token of the tenant's collector.
fn collector_audience(objects: &[Value], namespace: &str) -> String {
    let collector = objects
        .iter()
        .find(|o| {
            str_at(o, "/kind") == "OpenTelemetryCollector"
                && str_at(o, "/metadata/namespace") == namespace
        })
        .expect("OpenTelemetryCollector of the tenant");
    collector["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|v| v.pointer("/projected/sources").and_then(Value::as_array))
        .flatten()
        .find_map(|s| {
            s.pointer("/serviceAccountToken/audience")
                .and_then(Value::as_str)
        })
        .expect("a projected, audience-bound token")
        .to_string()
}

/// Runs tenant-authz with the deployment's config against a fake API holding the deployment's
/// RBAC, and a token per tenant identity: the collector's projected token (the kit's audience)
/// and Grafana's Secret token (the API server's audience), plus a bystander of each tenant.
struct Deployed {
    _fake: FakeKube,
    authz: AuthzProcess,
    _dir: tempfile::TempDir,
}

const TENANTS: [&str; 2] = ["showcase", "payments"];

fn token(ns: &str, sa: &str) -> String {
    format!("manifests-test-token-{ns}-{sa}")
}

async fn deploy() -> Deployed {
    let objects = build("manifests/overlays/default");
    let fake = FakeKube::start().await;
    for g in grants_of(&objects) {
        fake.grant_rule(g);
    }
    for ns in TENANTS {
        let audience = collector_audience(&objects, ns);
        fake.add_token_with_audiences(
            &token(ns, "otel-collector"),
            FakeUser::service_account(ns, "otel-collector").with_pod("otel-collector-0"),
            &[&audience],
        );
        // kubernetes.io/service-account-token Secrets carry the API server's audience.
        fake.add_token_with_audiences(
            &token(ns, "grafana"),
            FakeUser::service_account(ns, "grafana"),
            &[DEFAULT_AUDIENCE],
        );
        fake.add_token_with_audiences(
            &token(ns, "default"),
            FakeUser::service_account(ns, "default"),
            &[DEFAULT_AUDIENCE],
        );
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, tenant_authz_config(&objects)).expect("write config");
    let authz = AuthzProcess::spawn(
        fake.kubeconfig_path(),
        &["--config", config.to_str().expect("utf-8 path")],
        &[],
    );
    authz.wait_ready(Duration::from_secs(20)).await;
    Deployed {
        _fake: fake,
        authz,
        _dir: dir,
    }
}

impl Deployed {
    /// tenant-authz's HTTP answer for `token` on `tenant` with the route's action (None: the
    /// action is inferred from method and path, as with Istio).
    async fn answer(
        &self,
        token: &str,
        tenant: &str,
        action: Option<&str>,
        method: &str,
        path: &str,
    ) -> u16 {
        let bearer = format!("Bearer {token}");
        let req = check_request(
            method,
            path,
            &[("authorization", &bearer), ("x-scope-orgid", tenant)],
            action,
        );
        let resp = self
            .authz
            .client()
            .await
            .check(req)
            .await
            .expect("Check answered")
            .into_inner();
        http_status(&resp)
    }

    async fn write(&self, token: &str, tenant: &str) -> u16 {
        self.answer(
            token,
            tenant,
            Some("write"),
            "POST",
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        )
        .await
    }

    async fn read(&self, token: &str, tenant: &str) -> u16 {
        self.answer(token, tenant, Some("read"), "GET", "/api/search")
            .await
    }
}

#[tokio::test]
async fn ingest_account_writes_but_does_not_read_its_own_tenant() {
    let d = deploy().await;
    for ns in TENANTS {
        let t = token(ns, "otel-collector");
        assert_eq!(d.write(&t, ns).await, 200, "{ns}/otel-collector write {ns}");
        assert_eq!(d.read(&t, ns).await, 403, "{ns}/otel-collector read {ns}");
    }
}

#[tokio::test]
async fn query_account_reads_but_does_not_write_its_own_tenant() {
    let d = deploy().await;
    for ns in TENANTS {
        let t = token(ns, "grafana");
        assert_eq!(d.read(&t, ns).await, 200, "{ns}/grafana read {ns}");
        assert_eq!(d.write(&t, ns).await, 403, "{ns}/grafana write {ns}");
        // Changing the tenant's overrides (verb update) is not part of the kit.
        assert_eq!(
            d.answer(&t, ns, Some("manage"), "PUT", "/api/overrides")
                .await,
            403,
            "{ns}/grafana manage {ns}"
        );
    }
}

#[tokio::test]
async fn another_namespace_can_neither_read_nor_write() {
    let d = deploy().await;
    let (a, b) = (TENANTS[0], TENANTS[1]);
    for (me, other) in [(a, b), (b, a)] {
        assert_eq!(d.write(&token(me, "otel-collector"), other).await, 403);
        assert_eq!(d.read(&token(me, "otel-collector"), other).await, 403);
        assert_eq!(d.read(&token(me, "grafana"), other).await, 403);
        assert_eq!(d.write(&token(me, "grafana"), other).await, 403);
        // Cross-tenant query: every tenant must allow.
        assert_eq!(
            d.read(&token(me, "grafana"), &format!("{me}|{other}"))
                .await,
            403
        );
    }
}

#[tokio::test]
async fn other_accounts_of_the_tenant_namespace_get_nothing() {
    // No group binding (system:serviceaccounts:<ns>) in the kit: only the two accounts.
    let d = deploy().await;
    for ns in TENANTS {
        assert_eq!(d.read(&token(ns, "default"), ns).await, 403);
        assert_eq!(d.write(&token(ns, "default"), ns).await, 403);
    }
}

#[tokio::test]
async fn inferred_actions_give_the_same_answers_as_routes() {
    // The istio overlay: no context_extensions, the action comes from method and path.
    let d = deploy().await;
    let ns = TENANTS[0];
    let (ingest, query) = (token(ns, "otel-collector"), token(ns, "grafana"));
    let otlp_grpc = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    assert_eq!(d.answer(&ingest, ns, None, "POST", otlp_grpc).await, 200);
    assert_eq!(d.answer(&ingest, ns, None, "POST", "/v1/traces").await, 200);
    assert_eq!(d.answer(&query, ns, None, "POST", otlp_grpc).await, 403);
    assert_eq!(d.answer(&query, ns, None, "GET", "/api/search").await, 200);
    assert_eq!(d.answer(&query, ns, None, "POST", "/api/search").await, 200);
    assert_eq!(d.answer(&ingest, ns, None, "GET", "/api/search").await, 403);
    assert_eq!(
        d.answer(&query, ns, None, "PUT", "/api/overrides").await,
        403
    );
}
