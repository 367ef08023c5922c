//! `tenant-authz explain`: every outcome (exit 0, 2, 3, 4, 5, 6) against both backends, run as
//! the real binary; the Kubernetes backend through the fake API server (real HTTPS, generated
//! kubeconfig). Every run is scanned for every 12-character piece of the token it was given.
//!
//! The static backend has no "cannot decide": its answers come from memory and never fail, so
//! exit 6 is tested with the Kubernetes backend only (API error, timeout, echoing garbage,
//! nothing listening).

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::fake_kube::{FakeKube, FakeUser, Fault, ReviewKind, Scripted, Subject};
use tenant_authz::model::BearerToken;

const BIN: &str = env!("CARGO_BIN_EXE_tenant-authz");

/// Tokens with no 12-character piece that could occur in an output by chance.
const GRAFANA: &str = "Zq8xN3vR7kLpW2mT9sBc4HjF6dYa1Ue5";
const SRE: &str = "Jw4Tn7Qp2Xv9Lm3Kr8Zc5Bd6Hf1Gs0Ya";
const UNKNOWN: &str = "Pk3Vz8Wq1Rt6Yn4Mx7Lc2Hb9Gd5Fs0Ja";
const GRAFANA_USER: &str = "system:serviceaccount:showcase:grafana";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("stdout is not JSON ({e}): {}\n{}", self.stdout, self.stderr)
        })
    }

    fn expect(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// The token must not appear, whole or as any 12-character piece, in stdout or stderr.
fn assert_token_absent(token: &str, run: &Run) {
    let both = format!("{}\n{}", run.stdout, run.stderr);
    let bytes = token.as_bytes();
    let window = 12.min(bytes.len());
    for piece in bytes.windows(window) {
        let piece = std::str::from_utf8(piece).expect("ASCII token");
        assert!(
            !both.contains(piece),
            "output quotes a piece of the token ({piece}):\n{both}"
        );
    }
}

fn run_blocking(args: Vec<String>, stdin: Option<Vec<u8>>) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("RUST_LOG");
    for (k, _) in std::env::vars() {
        if k.starts_with("TENANT_AUTHZ_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd.spawn().expect("spawn tenant-authz");
    {
        let mut input = child.stdin.take().expect("stdin");
        if let Some(bytes) = stdin {
            let _ = input.write_all(&bytes);
        }
    }
    let out = child.wait_with_output().expect("wait for tenant-authz");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `tenant-authz <args>` with `token` (and a newline) on stdin, and checks it is not
/// printed.
fn explain(args: &[&str], token: &str) -> Run {
    let args = args.iter().map(|s| s.to_string()).collect();
    let run = run_blocking(args, Some(format!("{token}\n").into_bytes()));
    assert_token_absent(token, &run);
    run
}

/// [`explain`] from async tests (the fake API server runs on this runtime's other threads).
async fn explain_async(args: Vec<String>, token: &str) -> Run {
    let stdin = format!("{token}\n").into_bytes();
    let run = tokio::task::spawn_blocking(move || run_blocking(args, Some(stdin)))
        .await
        .expect("join");
    assert_token_absent(token, &run);
    run
}

fn hash(token: &str) -> String {
    BearerToken::from_secret(token.to_string()).hash().to_hex()
}

/// A static config: grafana may read showcase; sre (a group) may read and write everywhere.
fn static_config(dir: &Path) -> PathBuf {
    let path = dir.join("static.yaml");
    std::fs::write(
        &path,
        format!(
            "backend: static
static:
  identities:
  - sha256: {grafana}
    username: {GRAFANA_USER}
    groups: [system:serviceaccounts:showcase]
  - sha256: {sre}
    username: jane
    groups: [sre]
  grants:
  - users: [{GRAFANA_USER}]
    tenants: [showcase]
    actions: [read]
  - groups: [sre]
    tenants: ['*']
    products: [tempo]
    actions: [read, write]
",
            grafana = hash(GRAFANA),
            sre = hash(SRE),
        ),
    )
    .unwrap();
    path
}

fn static_args<'a>(config: &'a Path, rest: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["explain", "--config", config.to_str().unwrap()];
    args.extend_from_slice(rest);
    args
}

// ---------------------------------------------------------------------------------------------
// Static backend

#[test]
fn static_allowed_shows_the_route_rule_identity_and_matched_grant() {
    let dir = tempfile::tempdir().unwrap();
    let config = static_config(dir.path());
    let args = [
        "--tenant",
        "showcase",
        "--method",
        "post",
        "--path",
        "/api//search/../search?q=x",
    ];
    let run = explain(&static_args(&config, &args), GRAFANA).expect(0);
    assert!(run.stdout.contains("product     tempo"), "{}", run.stdout);
    assert!(
        run.stdout.contains("  path      /api/search"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("POST path_prefix /api/search -> read"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains(&format!("user      {GRAFANA_USER}")));
    assert!(
        run.stdout.contains("matched static.grants[0]"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("result      200 allowed (exit 0)"),
        "{}",
        run.stdout
    );

    let mut json_args = static_args(&config, &args);
    json_args.extend(["--output", "json"]);
    let report = explain(&json_args, GRAFANA).expect(0).json();
    assert_eq!(report["outcome"], "allowed");
    assert_eq!(report["http_status"], 200);
    assert_eq!(report["backend"], "static");
    assert_eq!(report["request"]["method"], "POST");
    assert_eq!(report["request"]["normalized_path"], "/api/search");
    assert_eq!(report["request"]["action_source"], "rule");
    assert_eq!(report["request"]["action"], "read");
    let rule = &report["request"]["rule"];
    assert!(
        rule["field"]
            .as_str()
            .unwrap()
            .starts_with("actions.rules["),
        "{rule}"
    );
    assert_eq!(rule["path_prefix"], "/api/search");
    assert_eq!(report["identity"]["user"], GRAFANA_USER);
    assert_eq!(report["identity"]["expires"], Value::Null);
    let check = &report["checks"][0];
    assert_eq!(check["decision"], "allowed");
    assert_eq!(check["grant"]["index"], 0);
    assert_eq!(check["fix"], json!([]));
    assert_eq!(
        check["question"],
        json!({"user": GRAFANA_USER, "groups": ["system:serviceaccounts:showcase"],
               "tenant": "showcase", "product": "tempo", "action": "read"})
    );
}

#[test]
fn static_forbidden_names_the_closest_grant_and_the_edit() {
    let dir = tempfile::tempdir().unwrap();
    let config = static_config(dir.path());
    // Same user, other tenant: grant 0 lacks only the tenant.
    let run = explain(
        &static_args(
            &config,
            &[
                "--tenant",
                "showcase|payments",
                "--action",
                "read",
                "--output",
                "json",
            ],
        ),
        GRAFANA,
    )
    .expect(5);
    let report = run.json();
    assert_eq!(report["outcome"], "forbidden");
    assert_eq!(report["http_status"], 403);
    assert!(report["reason"]
        .as_str()
        .unwrap()
        .contains("may not read traces of tenant \"payments\""));
    assert_eq!(report["tenants"], json!(["showcase", "payments"]));
    assert_eq!(report["checks"][0]["decision"], "allowed");
    let denied = &report["checks"][1];
    assert_eq!(denied["decision"], "denied");
    assert_eq!(denied["closest_grant"]["index"], 0);
    assert_eq!(denied["missing"], json!(["tenant"]));
    assert_eq!(
        denied["fix"],
        json!(["add payments to static.grants[0].tenants"])
    );

    // Right tenant, wrong action: grant 0 lacks only the action.
    let run = explain(
        &static_args(&config, &["--tenant", "showcase", "--action", "manage"]),
        GRAFANA,
    )
    .expect(5);
    assert!(
        run.stdout
            .contains("none matched; closest static.grants[0]")
            && run.stdout.contains("lacks the action"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("fix       add manage to static.grants[0].actions"),
        "{}",
        run.stdout
    );

    // Another product, by its route table: Loki's delete is manage; sre's grant is Tempo only.
    let report = explain(
        &static_args(
            &config,
            &[
                "--tenant",
                "showcase",
                "--product",
                "loki",
                "--method",
                "POST",
                "--path",
                "/loki/api/v1/delete",
                "--output",
                "json",
            ],
        ),
        SRE,
    )
    .expect(5)
    .json();
    assert_eq!(report["request"]["product"], "loki");
    assert_eq!(report["request"]["action"], "manage");
    assert!(report["request"]["rule"]["field"]
        .as_str()
        .unwrap()
        .starts_with("products.loki.actions.rules["));
    assert_eq!(report["checks"][0]["closest_grant"]["index"], 1);
    assert_eq!(report["checks"][0]["missing"], json!(["product", "action"]));
    assert_eq!(
        report["checks"][0]["fix"],
        json!(["add to static.grants: {users: [jane], tenants: [showcase], products: [loki], actions: [manage]}"])
    );
}

#[test]
fn static_operations_endpoint_is_forbidden_without_a_review() {
    let dir = tempfile::tempdir().unwrap();
    let config = static_config(dir.path());
    let report = explain(
        &static_args(
            &config,
            &[
                "--tenant", "showcase", "--method", "POST", "--path", "/flush", "--output", "json",
            ],
        ),
        SRE,
    )
    .expect(5)
    .json();
    assert_eq!(report["request"]["rule"]["action"], "deny");
    assert_eq!(report["request"]["action"], Value::Null);
    assert_eq!(report["identity"], Value::Null);
    assert_eq!(report["checks"], json!([]));
}

#[test]
fn static_bad_tenant_is_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let config = static_config(dir.path());
    for tenants in ["showcase||payments", "Showcase", "a,b", "showcase|showcase"] {
        let run = explain(
            &static_args(&config, &["--tenant", tenants, "--action", "read"]),
            GRAFANA,
        )
        .expect(3);
        assert!(
            run.stdout.contains("400 bad_request (exit 3): bad tenant:"),
            "{tenants}: {}",
            run.stdout
        );
        assert!(!run.stdout.contains("identity"), "{}", run.stdout);
    }
}

#[test]
fn static_unknown_or_malformed_token_is_exit_4() {
    let dir = tempfile::tempdir().unwrap();
    let config = static_config(dir.path());
    let report = explain(
        &static_args(
            &config,
            &[
                "--tenant", "showcase", "--action", "read", "--output", "json",
            ],
        ),
        UNKNOWN,
    )
    .expect(4)
    .json();
    assert_eq!(report["outcome"], "unauthenticated");
    assert_eq!(report["identity"], Value::Null);
    assert!(report["reason"].as_str().unwrap().contains("unknown token"));

    // The parser's token rules apply: characters outside token68.
    let run = explain(
        &static_args(&config, &["--tenant", "showcase", "--action", "read"]),
        "Hq7Zr2Wx9Lk4 Pm8Vt3Nc6Bd1",
    )
    .expect(4);
    assert!(
        run.stdout.contains("malformed credentials"),
        "{}",
        run.stdout
    );
}

#[test]
fn static_jwt_expiry_is_shown() {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let jwt = format!(
        "{}.{}.c2lnbmF0dXJlLW5vdC1jaGVja2Vk",
        b64(r#"{"alg":"RS256","kid":"k1"}"#),
        b64(r#"{"exp":4102444800,"sub":"system:serviceaccount:showcase:grafana"}"#)
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwt.yaml");
    std::fs::write(
        &path,
        format!(
            "backend: static\nstatic:\n  identities:\n  - sha256: {}\n    username: {GRAFANA_USER}\n  grants: []\n",
            hash(&jwt)
        ),
    )
    .unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{jwt}\n")).unwrap();
    let args: Vec<String> = [
        "explain",
        "--config",
        path.to_str().unwrap(),
        "--tenant",
        "showcase",
        "--action",
        "read",
        "--token-file",
        token_file.to_str().unwrap(),
        "--output",
        "json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let run = run_blocking(args, None).expect(5);
    assert_token_absent(&jwt, &run);
    let report = run.json();
    assert_eq!(report["identity"]["expires"], "2100-01-01T00:00:00Z");
    assert!(report["identity"]["expires_in_seconds"].as_u64().unwrap() > 0);
    // No grants at all: a new one is proposed.
    assert_eq!(report["checks"][0]["closest_grant"], Value::Null);
    assert_eq!(
        report["checks"][0]["fix"],
        json!([format!("add to static.grants: {{users: [{GRAFANA_USER}], tenants: [showcase], products: [tempo], actions: [read]}}")])
    );
}

#[test]
fn static_usage_and_configuration_errors_are_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = static_config(dir.path());
    let c = config.to_str().unwrap();
    // clap: neither --action nor --method; both; --method without --path; a bad action.
    for args in [
        vec!["explain", "--config", c, "--tenant", "showcase"],
        vec![
            "explain", "--config", c, "--tenant", "showcase", "--action", "read", "--method",
            "GET", "--path", "/",
        ],
        vec![
            "explain", "--config", c, "--tenant", "showcase", "--method", "GET",
        ],
        vec![
            "explain", "--config", c, "--tenant", "showcase", "--action", "delete",
        ],
        vec!["explain", "--config", c, "--action", "read"],
    ] {
        let run = explain(&args, GRAFANA).expect(2);
        assert!(
            run.stderr.contains("Usage") || run.stderr.contains("error"),
            "{}",
            run.stderr
        );
        assert!(run.stdout.is_empty(), "{}", run.stdout);
    }
    // An invalid config file names the field.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "backend: static\ncache:\n  denied_tll: 3s\n").unwrap();
    let run = explain(
        &[
            "explain",
            "--config",
            bad.to_str().unwrap(),
            "--tenant",
            "a",
            "--action",
            "read",
        ],
        GRAFANA,
    )
    .expect(2);
    assert!(run.stderr.contains("denied_tll"), "{}", run.stderr);
    // A missing config file.
    let run = explain(
        &[
            "explain",
            "--config",
            "/nonexistent/c.yaml",
            "--tenant",
            "a",
            "--action",
            "read",
        ],
        GRAFANA,
    )
    .expect(2);
    assert!(
        run.stderr.contains("cannot read config file"),
        "{}",
        run.stderr
    );
    // A missing token file; an empty stdin.
    let run = explain(
        &static_args(
            &config,
            &[
                "--tenant",
                "a",
                "--action",
                "read",
                "--token-file",
                "/nonexistent/t",
            ],
        ),
        GRAFANA,
    )
    .expect(2);
    assert!(run.stderr.contains("--token-file"), "{}", run.stderr);
    let run = run_blocking(
        static_args(&config, &["--tenant", "a", "--action", "read"])
            .iter()
            .map(|s| s.to_string())
            .collect(),
        Some(b"\n".to_vec()),
    )
    .expect(2);
    assert!(run.stderr.contains("no token"), "{}", run.stderr);
}

// ---------------------------------------------------------------------------------------------
// Kubernetes backend

const QUERY: &str = "Xb5Rw9Tm2Kq7Zv4Nc8Lp1Hd6Fj3Gs0Ye";
const QUERY_USER: &str = "system:serviceaccount:showcase:query";
const JANE: &str = "Mv6Cq1Wz8Rn3Tx5Kb9Lh2Pd7Fg4Js0Ua";

async fn fake() -> FakeKube {
    let fake = FakeKube::start().await;
    fake.add_token(QUERY, FakeUser::service_account("showcase", "query"));
    fake.add_token(JANE, FakeUser::user("jane", &["devs"]));
    fake.grant(Subject::User(QUERY_USER.into()), "showcase", "get");
    fake
}

fn kube_args(kubeconfig: &Path, rest: &[&str]) -> Vec<String> {
    let mut args = vec![
        "explain".to_string(),
        "--kubeconfig".to_string(),
        kubeconfig.to_str().unwrap().to_string(),
    ];
    args.extend(rest.iter().map(|s| s.to_string()));
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_allowed_shows_the_sar_it_sent_and_the_api_reason() {
    let fake = fake().await;
    let args = kube_args(
        fake.kubeconfig_path(),
        &[
            "--tenant",
            "showcase",
            "--method",
            "GET",
            "--path",
            "/api/search",
            "--output",
            "json",
        ],
    );
    let report = explain_async(args, QUERY).await.expect(0).json();
    assert_eq!(report["backend"], "kubernetes");
    assert_eq!(report["identity"]["user"], QUERY_USER);
    assert!(report["identity"]["groups"]
        .as_array()
        .unwrap()
        .contains(&json!("system:serviceaccounts:showcase")));
    assert!(!report["identity"]["uid"].as_str().unwrap().is_empty());
    let check = &report["checks"][0];
    assert_eq!(check["decision"], "allowed");
    assert_eq!(
        check["question"]["resourceAttributes"],
        json!({"namespace": "showcase", "group": "tempo.grafana.com", "resource": "traces", "verb": "get"})
    );
    assert_eq!(check["question"]["user"], QUERY_USER);
    assert!(
        check["reason"]
            .as_str()
            .unwrap()
            .starts_with("RBAC: allowed by RoleBinding"),
        "{check}"
    );
    // The question shown is the body the API received, and nothing was asked twice.
    assert_eq!(fake.token_reviews(), 1);
    let sars = fake.received_subject_access_reviews();
    assert_eq!(sars.len(), 1);
    assert_eq!(sars[0]["spec"], check["question"]);

    let args = kube_args(
        fake.kubeconfig_path(),
        &["--tenant", "showcase", "--action", "read"],
    );
    let run = explain_async(args, QUERY).await.expect(0);
    assert!(
        run.stdout.contains("backend     kubernetes"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("question  SubjectAccessReview spec"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(r#"resourceAttributes  {"group":"tempo.grafana.com","namespace":"showcase","resource":"traces","verb":"get"}"#),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("answer    allowed; reason: RBAC: allowed by"),
        "{}",
        run.stdout
    );
    assert!(run
        .stdout
        .contains("(not checked: no kubernetes.audiences configured"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_forbidden_prints_the_kubectl_line_for_the_kit_role() {
    let fake = fake().await;
    // A RoleBinding to a Role that does not exist: RBAC reports it as an evaluationError.
    fake.create_role_binding(
        "payments",
        "broken",
        "Role",
        "tempo-traces-reader",
        &[Subject::service_account("showcase", "query")],
    );
    let args = kube_args(
        fake.kubeconfig_path(),
        &[
            "--tenant",
            "showcase|payments",
            "--action",
            "read",
            "--output",
            "json",
        ],
    );
    let report = explain_async(args, QUERY).await.expect(5).json();
    assert_eq!(report["outcome"], "forbidden");
    assert_eq!(report["checks"][0]["decision"], "allowed");
    let denied = &report["checks"][1];
    assert_eq!(denied["decision"], "denied");
    assert_eq!(
        denied["question"]["resourceAttributes"]["namespace"],
        "payments"
    );
    assert!(
        denied["evaluation_error"]
            .as_str()
            .is_some_and(|e| e.contains("not found")),
        "{denied}"
    );
    assert_eq!(
        denied["fix"],
        json!(["kubectl create rolebinding tempo-traces-reader-showcase-query --namespace payments --role tempo-traces-reader --serviceaccount showcase:query"])
    );
    assert!(report["reason"]
        .as_str()
        .unwrap()
        .contains("may not read traces of tenant \"payments\""));
    assert_eq!(fake.subject_access_reviews(), 2);

    // A user who is not a ServiceAccount, writing: --user, the writer Role.
    let args = kube_args(
        fake.kubeconfig_path(),
        &[
            "--tenant",
            "payments",
            "--method",
            "POST",
            "--path",
            "/v1/traces",
        ],
    );
    let run = explain_async(args, JANE).await.expect(5);
    assert!(
        run.stdout.contains(
            "fix       kubectl create rolebinding tempo-traces-writer-jane --namespace payments --role tempo-traces-writer --user jane"
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("(no reason given: no RBAC rule allows it)"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains(r#""verb":"create""#), "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_identity_shows_the_accepted_audiences() {
    const BOUND: &str = "Tn4Ky8Qw1Zp6Rv3Xm9Lb2Hc7Fd5Gj0Sa";
    let fake = fake().await;
    fake.add_token_with_audiences(
        BOUND,
        FakeUser::service_account("showcase", "query"),
        &["tempo", "other"],
    );
    let args = kube_args(
        fake.kubeconfig_path(),
        &[
            "--audiences",
            "tempo,loki",
            "--tenant",
            "showcase",
            "--action",
            "read",
            "--output",
            "json",
        ],
    );
    let report = explain_async(args, BOUND).await.expect(0).json();
    assert_eq!(report["identity"]["audiences"], json!(["tempo"]));
    assert_eq!(
        fake.received_token_reviews()[0]["spec"]["audiences"],
        json!(["tempo", "loki"])
    );
    // A token for none of them: 401 naming the audiences expected.
    let args = kube_args(
        fake.kubeconfig_path(),
        &[
            "--audiences",
            "loki",
            "--tenant",
            "showcase",
            "--action",
            "read",
        ],
    );
    let run = explain_async(args, BOUND).await.expect(4);
    assert!(
        run.stdout
            .contains("is invalid for the target audiences [\"loki\"]"),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_bad_tenant_is_exit_3_without_an_api_call() {
    let fake = fake().await;
    let args = kube_args(
        fake.kubeconfig_path(),
        &[
            "--tenant",
            "|showcase",
            "--action",
            "read",
            "--output",
            "json",
        ],
    );
    let report = explain_async(args, QUERY).await.expect(3).json();
    assert_eq!(report["outcome"], "bad_request");
    assert!(report["reason"].as_str().unwrap().contains("empty tenant"));
    assert_eq!(fake.token_reviews(), 0);
    assert_eq!(fake.subject_access_reviews(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_unauthenticated_is_exit_4() {
    let fake = fake().await;
    let args = kube_args(
        fake.kubeconfig_path(),
        &["--tenant", "showcase", "--action", "read"],
    );
    let run = explain_async(args, UNKNOWN).await.expect(4);
    assert!(
        run.stdout.contains("401 unauthenticated (exit 4)"),
        "{}",
        run.stdout
    );
    assert_eq!(fake.token_reviews(), 1);
    assert_eq!(fake.subject_access_reviews(), 0);

    // An API that quotes the token in its refusal: withheld, never printed.
    fake.script(ReviewKind::TokenReview, |req: &Value| {
        let token = req["spec"]["token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Scripted::json(
            201,
            json!({"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                   "status": {"error": format!("token {token} is not valid")}}),
        )
    });
    let args = kube_args(
        fake.kubeconfig_path(),
        &["--tenant", "showcase", "--action", "read"],
    );
    let run = explain_async(args, QUERY).await.expect(4);
    assert!(run.stdout.contains("withheld"), "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_cannot_decide_is_exit_6() {
    let fake = fake().await;
    let read = |extra: &[&str]| {
        let mut rest = vec![
            "--tenant", "showcase", "--action", "read", "--output", "json",
        ];
        rest.extend_from_slice(extra);
        kube_args(fake.kubeconfig_path(), &rest)
    };

    fake.set_fault_for(ReviewKind::SubjectAccessReview, Fault::Status500);
    let report = explain_async(read(&[]), QUERY).await.expect(6).json();
    assert_eq!(report["outcome"], "unavailable");
    assert_eq!(report["identity"]["user"], QUERY_USER);
    let check = &report["checks"][0];
    assert_eq!(check["decision"], "unavailable");
    assert!(
        check["error"].as_str().unwrap().contains("HTTP 500"),
        "{check}"
    );
    assert_eq!(check["fix"], json!([]));

    // Too slow for the decision deadline.
    fake.set_fault_for(
        ReviewKind::SubjectAccessReview,
        Fault::Slow(Duration::from_secs(3)),
    );
    let report = explain_async(read(&["--decision-timeout", "300ms"]), QUERY)
        .await
        .expect(6)
        .json();
    assert!(
        report["checks"][0]["error"]
            .as_str()
            .unwrap()
            .contains("did not answer"),
        "{report}"
    );
    fake.set_fault_for(ReviewKind::SubjectAccessReview, Fault::None);

    // A TokenReview answer that echoes the token in a body that does not parse.
    fake.set_fault_for(ReviewKind::TokenReview, Fault::UnparsableEcho);
    let report = explain_async(read(&[]), QUERY).await.expect(6).json();
    assert_eq!(report["identity"], Value::Null);
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .contains("unusable TokenReview answer from the Kubernetes API"),
        "{report}"
    );
    fake.set_fault_for(ReviewKind::TokenReview, Fault::None);

    // Nothing listening where the kubeconfig points.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("https://{}", dead.local_addr().unwrap());
    drop(dead);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("dead-kubeconfig");
    std::fs::write(
        &kubeconfig,
        fake.kubeconfig_yaml(fake.client_token())
            .replace(&fake.url(), &dead_url),
    )
    .unwrap();
    let args = kube_args(&kubeconfig, &["--tenant", "showcase", "--action", "read"]);
    let run = explain_async(args, QUERY).await.expect(6);
    assert!(
        run.stdout.contains("503 unavailable (exit 6)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("cannot reach the Kubernetes API"),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_usage_and_configuration_errors_are_exit_2() {
    let fake = fake().await;
    let args = kube_args(
        Path::new("/nonexistent/kubeconfig"),
        &["--tenant", "showcase", "--action", "read"],
    );
    let run = explain_async(args, QUERY).await.expect(2);
    assert!(run.stderr.contains("Kubernetes client"), "{}", run.stderr);
    assert!(run.stdout.is_empty());

    let args = kube_args(
        fake.kubeconfig_path(),
        &[
            "--tenant", "showcase", "--output", "yaml", "--action", "read",
        ],
    );
    let run = explain_async(args, QUERY).await.expect(2);
    assert!(run.stderr.contains("--output"), "{}", run.stderr);
    assert_eq!(fake.token_reviews(), 0);
}

// ---------------------------------------------------------------------------------------------
// The token is never printed

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_is_never_printed_in_any_outcome_of_either_backend() {
    const TOKEN: &str = "Rk2Wp7Zx4Nv9Tq1Lm6Hc3Bd8Fg5Js0Yu";
    let dir = tempfile::tempdir().unwrap();
    // Static: this token is `grafana`.
    let config = dir.path().join("leak.yaml");
    std::fs::write(
        &config,
        format!(
            "backend: static\nstatic:\n  identities:\n  - sha256: {}\n    username: {GRAFANA_USER}\n  grants:\n  - users: [{GRAFANA_USER}]\n    tenants: [showcase]\n    actions: [read]\n",
            hash(TOKEN)
        ),
    )
    .unwrap();
    let unknown = dir.path().join("unknown.yaml");
    std::fs::write(&unknown, "backend: static\n").unwrap();
    let c = config.to_str().unwrap().to_string();
    let u = unknown.to_str().unwrap().to_string();
    let s = |config: &str, rest: &[&str]| {
        let mut a = vec!["explain".to_string(), "--config".into(), config.to_string()];
        a.extend(rest.iter().map(|s| s.to_string()));
        a
    };
    let mut runs: Vec<(i32, Vec<String>)> = vec![
        (0, s(&c, &["--tenant", "showcase", "--action", "read"])),
        (2, s(&c, &["--tenant", "showcase"])),
        (3, s(&c, &["--tenant", "a||b", "--action", "read"])),
        (4, s(&u, &["--tenant", "showcase", "--action", "read"])),
        (
            5,
            s(&c, &["--tenant", "showcase|payments", "--action", "read"]),
        ),
        // The token pasted on the command line: refused without being echoed.
        (
            2,
            s(&c, &["--tenant", "showcase", "--action", "read", TOKEN]),
        ),
        (
            2,
            s(
                &c,
                &[
                    "--tenant",
                    "showcase",
                    "--action",
                    "read",
                    &format!("--token={TOKEN}"),
                ],
            ),
        ),
        // ... or as the value of an argument that refuses it.
        (2, s(&c, &["--tenant", "showcase", "--action", TOKEN])),
        (2, s(&c, &["--tenant", "showcase", "--output", TOKEN])),
        (
            2,
            s(
                &c,
                &[
                    "--tenant",
                    "showcase",
                    "--action",
                    "read",
                    "--decision-timeout",
                    TOKEN,
                ],
            ),
        ),
    ];
    // Kubernetes: this token is `query`.
    let fake = FakeKube::start().await;
    fake.add_token(TOKEN, FakeUser::service_account("showcase", "query"));
    fake.grant(Subject::User(QUERY_USER.into()), "showcase", "get");
    let k = |rest: &[&str]| kube_args(fake.kubeconfig_path(), rest);
    runs.extend([
        (0, k(&["--tenant", "showcase", "--action", "read"])),
        (
            2,
            kube_args(
                Path::new("/nonexistent"),
                &["--tenant", "showcase", "--action", "read"],
            ),
        ),
        (3, k(&["--tenant", "a|", "--action", "read"])),
        (5, k(&["--tenant", "payments", "--action", "read"])),
    ]);
    for output in ["text", "json"] {
        for (code, args) in &runs {
            let mut args = args.clone();
            if *code != 2 {
                args.extend(["--output".to_string(), output.to_string()]);
            }
            let run = explain_async(args.clone(), TOKEN).await;
            assert_eq!(run.code, *code, "{args:?}\n{}\n{}", run.stdout, run.stderr);
        }
    }
    // 6 and 4 from an API that echoes the token: in a 500's message, in an unparsable answer.
    fake.script(ReviewKind::TokenReview, |req: &Value| {
        let token = req["spec"]["token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Scripted::json(
            500,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "message": format!("webhook rejected {token}"), "code": 500}),
        )
    });
    let run = explain_async(k(&["--tenant", "showcase", "--action", "read"]), TOKEN).await;
    assert_eq!(run.code, 6, "{}", run.stdout);
    fake.clear_script(ReviewKind::TokenReview);
    fake.set_fault_for(ReviewKind::TokenReview, Fault::UnparsableEcho);
    let run = explain_async(
        k(&[
            "--tenant", "showcase", "--action", "read", "--output", "json",
        ]),
        TOKEN,
    )
    .await;
    assert_eq!(run.code, 6, "{}", run.stdout);
    fake.set_fault_for(ReviewKind::TokenReview, Fault::None);
    // 0 from an authenticator that copies the token into the uid, a group and extra (a key
    // and a value): a valid identity (they only go back to the API server in SARs), but
    // explain prints them, so each is withheld, in the identity and in the SAR shown.
    let mut echo = FakeUser::service_account("showcase", "query");
    echo.uid = format!("uid-{}", &TOKEN[3..20]);
    echo.groups.push(format!("team:{}", &TOKEN[10..30]));
    echo.extra
        .insert("example.com/credential".into(), vec![TOKEN.to_string()]);
    echo.extra
        .insert(format!("example.com/{}", &TOKEN[..16]), vec!["x".into()]);
    fake.add_token(TOKEN, echo);
    for output in ["text", "json"] {
        let run = explain_async(
            k(&[
                "--tenant", "showcase", "--action", "read", "--output", output,
            ]),
            TOKEN,
        )
        .await;
        assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
        assert!(
            run.stdout
                .matches("withheld: it quotes the credential")
                .count()
                >= 3,
            "{output}: {}",
            run.stdout
        );
        if output == "json" {
            let report: Value = serde_json::from_str(&run.stdout).expect("JSON still parses");
            assert_eq!(report["identity"]["user"], QUERY_USER, "{report}");
        }
    }
    fake.remove_token(TOKEN);
    let run = explain_async(k(&["--tenant", "showcase", "--action", "read"]), TOKEN).await;
    assert_eq!(run.code, 4, "{}", run.stdout);
}
