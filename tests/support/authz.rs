//! Runs the real `tenant-authz` binary as a child process, and a gRPC client for direct Checks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};

use super::envoy::free_port;

/// A running `tenant-authz` process; killed on drop. Its stderr (the log) goes to a file.
pub struct AuthzProcess {
    child: Option<Child>,
    pub grpc_port: u16,
    pub admin_port: u16,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_tenant-authz")
}

impl AuthzProcess {
    /// Starts with `--kubeconfig`, loopback ports and `RUST_LOG=debug` (every crate), then
    /// waits for `/readyz`.
    pub async fn start(kubeconfig: &Path, args: &[&str]) -> AuthzProcess {
        let p = Self::spawn(kubeconfig, args, &[]);
        p.wait_ready(Duration::from_secs(20)).await;
        p
    }

    /// Starts without waiting for readiness.
    pub fn spawn(kubeconfig: &Path, args: &[&str], env: &[(&str, &str)]) -> AuthzProcess {
        let mut all: Vec<&str> = vec!["--kubeconfig", kubeconfig.to_str().expect("utf-8 path")];
        all.extend_from_slice(args);
        Self::spawn_args(&all, env)
    }

    /// Starts with a config file (e.g. the static backend) and waits for `/readyz`.
    pub async fn start_with_config(config: &Path, args: &[&str]) -> AuthzProcess {
        let mut all: Vec<&str> = vec!["--config", config.to_str().expect("utf-8 path")];
        all.extend_from_slice(args);
        let p = Self::spawn_args(&all, &[]);
        p.wait_ready(Duration::from_secs(20)).await;
        p
    }

    /// Starts with loopback ports, `RUST_LOG=debug` and exactly these extra arguments.
    pub fn spawn_args(args: &[&str], env: &[(&str, &str)]) -> AuthzProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let log_path = dir.path().join("tenant-authz.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let grpc_port = free_port();
        let admin_port = free_port();
        let mut cmd = Command::new(binary());
        cmd.arg("--grpc-addr")
            .arg(format!("127.0.0.1:{grpc_port}"))
            .arg("--admin-addr")
            .arg(format!("127.0.0.1:{admin_port}"))
            .args(args)
            .env("RUST_LOG", "debug")
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn tenant-authz");
        AuthzProcess {
            child: Some(child),
            grpc_port,
            admin_port,
            log_path,
            _dir: dir,
        }
    }

    pub async fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok((200, _)) = self.admin_get("/readyz").await {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "tenant-authz not ready within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// GET on the admin port: (status, body).
    pub async fn admin_get(&self, path: &str) -> Result<(u16, String), reqwest::Error> {
        let client = reqwest::Client::builder().no_proxy().build()?;
        let r = client
            .get(format!("http://127.0.0.1:{}{path}", self.admin_port))
            .timeout(Duration::from_secs(5))
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.text().await?))
    }

    pub async fn metrics(&self) -> String {
        let (status, body) = self.admin_get("/metrics").await.expect("GET /metrics");
        assert_eq!(status, 200);
        body
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A read Check (`GET /api/search`, action `read`) with `token` on `tenants`: the HTTP
    /// status and the denial body.
    pub async fn read_as(&self, token: &str, tenants: &str) -> (u16, String) {
        read_on_port(self.grpc_port, token, tenants).await
    }

    pub async fn client(&self) -> AuthorizationClient<tonic::transport::Channel> {
        AuthorizationClient::connect(format!("http://127.0.0.1:{}", self.grpc_port))
            .await
            .expect("connect to tenant-authz")
    }

    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    /// Waits for the process to exit (after a signal).
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                panic!("tenant-authz did not exit within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for AuthzProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A CheckRequest as Envoy sends it for an HTTP request.
pub fn check_request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    action: Option<&str>,
) -> CheckRequest {
    let headers: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
        .collect();
    let mut context_extensions = HashMap::new();
    if let Some(a) = action {
        context_extensions.insert("action".to_string(), a.to_string());
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    id: "test-request".into(),
                    method: method.into(),
                    path: path.into(),
                    host: "tempo".into(),
                    scheme: "http".into(),
                    protocol: "HTTP/1.1".into(),
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions,
            ..Default::default()
        }),
    }
}

/// The HTTP status a CheckResponse gives the client (200 when allowed).
pub fn http_status(r: &CheckResponse) -> u16 {
    use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
    match &r.http_response {
        Some(HttpResponse::OkResponse(_)) if r.status.as_ref().map(|s| s.code) == Some(0) => 200,
        Some(HttpResponse::DeniedResponse(d)) => d.status.as_ref().map_or(403, |s| s.code as u16),
        _ => panic!("unexpected CheckResponse {r:?}"),
    }
}

/// The body of a denied CheckResponse.
pub fn denied_body(r: &CheckResponse) -> String {
    use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
    match &r.http_response {
        Some(HttpResponse::DeniedResponse(d)) => d.body.clone(),
        _ => String::new(),
    }
}

/// [`AuthzProcess::read_as`] on a connection of its own to `grpc_port` (for spawned tasks).
pub async fn read_on_port(grpc_port: u16, token: &str, tenants: &str) -> (u16, String) {
    let auth = format!("Bearer {token}");
    let r = AuthorizationClient::connect(format!("http://127.0.0.1:{grpc_port}"))
        .await
        .expect("connect to tenant-authz")
        .check(check_request(
            "GET",
            "/api/search",
            &[("x-scope-orgid", tenants), ("authorization", &auth)],
            Some("read"),
        ))
        .await
        .expect("Check must never be a gRPC error")
        .into_inner();
    (http_status(&r), denied_body(&r))
}
