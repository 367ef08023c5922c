//! The static backend: tokens by SHA-256, grants from the config file, reloads without a
//! restart, and `tenant-authz hash-token`.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::authz::{binary, check_request, http_status, AuthzProcess};

const GRAFANA: &str = "demo-showcase-grafana-token";

fn example() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/static.yaml"))
        .expect("examples/static.yaml")
}

async fn status(authz: &AuthzProcess, token: &str, tenant: &str, action: &str) -> u16 {
    let auth = format!("Bearer {token}");
    let req = check_request(
        "GET",
        "/api/search",
        &[("authorization", &auth), ("x-scope-orgid", tenant)],
        Some(action),
    );
    let r = authz.client().await.check(req).await.expect("answered");
    http_status(&r.into_inner())
}

/// Polls until the check gives `want` (a reload is asynchronous).
async fn eventually(authz: &AuthzProcess, token: &str, tenant: &str, want: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = status(authz, token, tenant, "read").await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still {got}, want {want}\n{}",
            authz.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn write(path: &Path, text: &str) {
    // Write then rename, as editors and ConfigMap updates do.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn hash_token_prints_the_sha256_and_never_the_token() {
    let mut child = Command::new(binary())
        .arg("hash-token")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"demo-sre-token\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        stdout.trim(),
        "643b333aba2f688b02e1ff50e6b066eb674422a7ddb6be20c3dc2d3c52459498"
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("demo-sre"));
    let empty = Command::new(binary())
        .arg("hash-token")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!empty.status.success());
}

#[test]
fn example_static_config_hashes_match_the_demo_tokens() {
    let text = example();
    for token in [
        "demo-showcase-grafana-token",
        "demo-showcase-otel-collector-token",
        "demo-payments-grafana-token",
        "demo-payments-otel-collector-token",
        "demo-sre-token",
    ] {
        let hash = tenant_authz::cli::hash_token(token).unwrap();
        assert!(text.contains(&format!("{hash}  # {token}")), "{token}");
        assert!(!text.contains(&format!("\n    {token}")));
    }
    let c = tenant_authz::Config::from_yaml(&text).unwrap();
    c.validate().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_backend_allows_and_denies_by_grants() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("static.yaml");
    write(&file, &example());
    let authz = AuthzProcess::start_with_config(&file, &[]).await;
    assert_eq!(status(&authz, GRAFANA, "showcase", "read").await, 200);
    assert_eq!(status(&authz, GRAFANA, "showcase", "write").await, 403);
    assert_eq!(status(&authz, GRAFANA, "payments", "read").await, 403);
    assert_eq!(
        status(&authz, "demo-sre-token", "showcase|payments", "read").await,
        200
    );
    assert_eq!(
        status(&authz, "demo-sre-token", "payments", "write").await,
        403
    );
    assert_eq!(
        status(&authz, "not-a-demo-token", "showcase", "read").await,
        401
    );
    assert_eq!(
        status(
            &authz,
            "demo-showcase-otel-collector-token",
            "showcase",
            "write"
        )
        .await,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_file_is_reloaded_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("static.yaml");
    write(&file, &example());
    let authz = AuthzProcess::start_with_config(&file, &[]).await;
    assert_eq!(status(&authz, GRAFANA, "payments", "read").await, 403);
    let granted = format!(
        "{}\n  - users: [system:serviceaccount:showcase:grafana]\n    tenants: [payments]\n    actions: [read]\n",
        example().trim_end()
    );
    write(&file, &granted);
    eventually(&authz, GRAFANA, "payments", 200).await;
    // ...and revoked again: cached allows are dropped on reload.
    write(&file, &example());
    eventually(&authz, GRAFANA, "payments", 403).await;
    let m = authz.metrics().await;
    assert!(
        m.contains(r#"tenant_authz_config_reloads_total{outcome="ok"} 2"#),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_new_file_keeps_the_running_config_names_the_field_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("static.yaml");
    write(&file, &example());
    let authz = AuthzProcess::start_with_config(&file, &[]).await;
    assert_eq!(status(&authz, GRAFANA, "showcase", "read").await, 200);
    write(
        &file,
        &example().replace("tenants: [showcase]", "tenants: [Show_Case]"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = authz.metrics().await;
        if m.contains(r#"tenant_authz_config_reloads_total{outcome="error"} 1"#) {
            assert!(
                m.contains("tenant_authz_config_last_reload_successful 0"),
                "{m}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no failed reload counted:\n{m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        authz.log().contains("static.grants[0].tenants[0]"),
        "{}",
        authz.log()
    );
    assert_eq!(status(&authz, GRAFANA, "showcase", "read").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_checks_are_never_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("static.yaml");
    write(&file, &example());
    let authz = AuthzProcess::start_with_config(&file, &[]).await;
    let client = authz.client().await;
    // Checks run continuously while the file is rewritten and SIGHUP is sent.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let checker = {
        let stop = stop.clone();
        let mut client = client.clone();
        tokio::spawn(async move {
            let auth = format!("Bearer {GRAFANA}");
            let mut answered = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let req = check_request(
                    "GET",
                    "/",
                    &[("authorization", &auth), ("x-scope-orgid", "showcase")],
                    Some("read"),
                );
                let r = client.check(req).await.expect("no check dropped");
                assert_eq!(http_status(&r.into_inner()), 200);
                answered += 1;
            }
            answered
        })
    };
    for i in 0..5 {
        write(&file, &format!("{}\n# edit {i}\n", example()));
        authz.signal("HUP");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let answered = checker.await.unwrap();
    assert!(answered > 10, "{answered}");
    assert!(authz.log().contains("SIGHUP"), "{}", authz.log());
    let (ready, _) = authz.admin_get("/readyz").await.unwrap();
    assert_eq!(ready, 200);
}
