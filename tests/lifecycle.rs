//! Start-up, configuration, readiness and graceful shutdown of the real binary.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::authz::{binary, check_request, http_status, AuthzProcess};
use support::envoy::free_port;
use support::fake_kube::{FakeKube, FakeUser, Subject};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const TOKEN: &str = "lifecycle-token-0123456789";

async fn grpc_health(port: u16) -> ServingStatus {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut client = HealthClient::new(channel);
    let answer = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health answers")
        .into_inner();
    ServingStatus::try_from(answer.status).expect("known status")
}

async fn fake() -> FakeKube {
    let fake = FakeKube::start().await;
    fake.add_token(TOKEN, FakeUser::service_account("showcase", "query"));
    fake.grant(
        Subject::Group("system:serviceaccounts:showcase".into()),
        "showcase",
        "get",
    );
    fake
}

fn read_request(tenant_header: &str) -> envoy_types::pb::envoy::service::auth::v3::CheckRequest {
    let auth = format!("Bearer {TOKEN}");
    check_request(
        "GET",
        "/api/search",
        &[("authorization", &auth), (tenant_header, "showcase")],
        Some("read"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_with_no_config_file_using_kubeconfig_env() {
    let fake = fake().await;
    let (grpc, admin) = (free_port(), free_port());
    let mut child = Command::new(binary())
        .args(["--grpc-addr", &format!("127.0.0.1:{grpc}")])
        .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
        .env("KUBECONFIG", fake.kubeconfig_path())
        .env_remove("TENANT_AUTHZ_CONFIG")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let url = format!("http://127.0.0.1:{admin}/readyz");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut ready = false;
    for _ in 0..200 {
        if let Ok(r) = http.get(&url).send().await {
            if r.status() == 200 {
                ready = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "never ready");
    let mut client = envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient::connect(
        format!("http://127.0.0.1:{grpc}"),
    )
    .await
    .unwrap();
    let r = client
        .check(read_request("x-scope-orgid"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(http_status(&r), 200);
    assert_eq!(grpc_health(grpc).await, ServingStatus::Serving);
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_until_the_api_is_reached_and_healthz_is_200() {
    let fake = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    fake.write_kubeconfig_to(&kubeconfig);
    drop(fake); // the API server is gone: nothing listens there any more
    let authz = AuthzProcess::spawn(&kubeconfig, &[], &[]);
    let mut health = None;
    for _ in 0..100 {
        if let Ok(r) = authz.admin_get("/healthz").await {
            health = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(health.expect("admin server up").0, 200);
    let (status, body) = authz.admin_get("/readyz").await.unwrap();
    assert_eq!(status, 503);
    assert!(body.contains("Kubernetes API"), "{body}");
    // Envoy's active health check sees the same: NOT_SERVING.
    assert_eq!(
        grpc_health(authz.grpc_port).await,
        ServingStatus::NotServing
    );
    // Checks still answer, and fail closed.
    let r = authz
        .client()
        .await
        .check(read_request("x-scope-orgid"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(http_status(&r), 503);
}

#[tokio::test]
async fn bad_config_file_stops_startup_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    for (yaml, field) in [
        ("cache:\n  allowed_ttl: soon\n", "cache.allowed_ttl"),
        ("cache:\n  max_entrys: 3\n", "max_entrys"),
        ("tenant_header: X-Scope-OrgID\n", "tenant_header"),
        (
            "kubernetes:\n  max_concurrent_reviews: 0\n",
            "kubernetes.max_concurrent_reviews",
        ),
    ] {
        let file = dir.path().join("bad.yaml");
        std::fs::write(&file, yaml).unwrap();
        let out = Command::new(binary())
            .args([
                "--config",
                file.to_str().unwrap(),
                "--grpc-addr",
                "127.0.0.1:0",
            ])
            .args(["--admin-addr", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{yaml} accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(field),
            "{yaml}: stderr does not name {field}: {stderr}"
        );
    }
    let out = Command::new(binary())
        .args(["--config", "/nonexistent/tenant-authz.yaml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/tenant-authz.yaml"));
}

#[tokio::test]
async fn print_config_round_trips_and_env_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.yaml");
    std::fs::write(&file, "tenant_header: x-from-file\n").unwrap();
    let out = Command::new(binary())
        .args(["--config", file.to_str().unwrap(), "--print-config"])
        .env("TENANT_AUTHZ_CACHE_ALLOWED_TTL", "42s")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    let c = tenant_authz::Config::from_yaml(&yaml).unwrap();
    assert_eq!(c.tenant_header, "x-from-file");
    assert_eq!(c.cache.allowed_ttl, Duration::from_secs(42));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_var_sets_the_tenant_header() {
    let fake = fake().await;
    let authz = AuthzProcess::spawn(
        fake.kubeconfig_path(),
        &[],
        &[("TENANT_AUTHZ_TENANT_HEADER", "x-tenant")],
    );
    authz.wait_ready(Duration::from_secs(20)).await;
    let mut c = authz.client().await;
    let r = c
        .check(read_request("x-tenant"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(http_status(&r), 200);
    let r = c
        .check(read_request("x-scope-orgid"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(http_status(&r), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_readyz_503_drains_in_flight_checks_and_exits_zero() {
    for signal in ["TERM", "INT"] {
        let fake = fake().await;
        let mut authz =
            AuthzProcess::start(fake.kubeconfig_path(), &["--shutdown-delay", "1s"]).await;
        fake.set_latency(Duration::from_millis(700));
        let mut client = authz.client().await;
        let in_flight =
            tokio::spawn(async move { client.check(read_request("x-scope-orgid")).await });
        tokio::time::sleep(Duration::from_millis(150)).await;
        authz.signal(signal);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (status, body) = authz
            .admin_get("/readyz")
            .await
            .expect("admin still up during the delay");
        assert_eq!(status, 503, "{signal}");
        assert!(body.contains("shutting down"), "{body}");
        assert_eq!(
            grpc_health(authz.grpc_port).await,
            ServingStatus::NotServing
        );
        let answer = in_flight.await.unwrap().expect("in-flight check answered");
        assert_eq!(http_status(&answer.into_inner()), 200, "{signal}");
        let exit = authz.wait_exit(Duration::from_secs(10)).await;
        assert!(
            exit.success(),
            "SIG{signal}: exit {exit:?}\n{}",
            authz.log()
        );
    }
}
