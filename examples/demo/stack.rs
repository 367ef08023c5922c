//! The demo's processes: tenant-authz (static backend), the two production Envoy frontends
//! from `envoy/` (localized by exact string replacement), and the in-process Tempo stand-in.
//!
//! Every child is owned by [`Procs`]; dropping it (normal exit, error, panic, Ctrl-C, SIGTERM)
//! kills each child by PID and waits for it, so nothing is left running.

use std::collections::HashSet;
use std::fs::File;
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::envoy::{
    localize, socket, write_server_certs, ACCESS_LOG_PATH, ADMIN_ADDRESS, DISTRIBUTOR_OTLP_GRPC,
    DISTRIBUTOR_OTLP_HTTP, OTLP_GRPC_LISTENER, OTLP_HTTP_LISTENER, PROBES_LISTENER, QUERY_LISTENER,
    TEMPO_QUERY_FRONTEND, TENANT_AUTHZ,
};
use crate::tls::TestCerts;
use crate::upstream::Upstream;

pub type Result<T> = std::result::Result<T, String>;

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the demo's inputs are.
pub struct Inputs {
    pub envoy_bin: PathBuf,
    pub authz_bin: PathBuf,
    pub repo: PathBuf,
}

/// One child process and the file its output goes to.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

/// The children, stopped (kill by PID, then wait) in reverse start order on drop.
#[derive(Default)]
pub struct Procs(Vec<Proc>);

impl Procs {
    fn spawn(&mut self, name: &'static str, mut cmd: Command, log: PathBuf) -> Result<u32> {
        let out = File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| format!("{e}"))?;
        // Own process group: a Ctrl-C in the terminal reaches only the demo, which then stops
        // its children itself, in order.
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| format!("start {name} ({:?}): {e}", cmd.get_program()))?;
        let pid = child.id();
        self.0.push(Proc { name, child, log });
        Ok(pid)
    }

    /// `Err` with the log's tail if `name` has exited.
    fn check_alive(&mut self, name: &str) -> Result<()> {
        let Some(p) = self.0.iter_mut().find(|p| p.name == name) else {
            return Ok(());
        };
        match p.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} exited during start-up ({status}); {}:\n{}",
                p.name,
                p.log.display(),
                tail(&std::fs::read_to_string(&p.log).unwrap_or_default(), 3000)
            )),
            Err(e) => Err(format!("{}: {e}", p.name)),
        }
    }

    /// Any child that has exited, with its status.
    pub fn exited(&mut self) -> Option<String> {
        self.0.iter_mut().find_map(|p| match p.child.try_wait() {
            Ok(Some(status)) => Some(format!("{} exited ({status})", p.name)),
            _ => None,
        })
    }

    /// The PIDs, for `--keep-running`.
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        self.0.iter().map(|p| (p.name, p.child.id())).collect()
    }

    /// Kills every child by PID and waits for it; returns what was stopped.
    pub fn stop_all(&mut self) -> Vec<String> {
        let mut stopped = Vec::new();
        while let Some(mut p) = self.0.pop() {
            let _ = p.child.kill();
            match p.child.wait() {
                Ok(_) => stopped.push(format!("{} (pid {})", p.name, p.child.id())),
                Err(e) => eprintln!("demo: wait for {} (pid {}): {e}", p.name, p.child.id()),
            }
        }
        stopped
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Ports, preferring the deployment defaults (so the printed commands match the docs) and
/// falling back to a free ephemeral port when one is busy.
#[derive(Default)]
struct Ports(HashSet<u16>);

impl Ports {
    fn pick(&mut self, preferred: u16) -> u16 {
        let try_bind = |p: u16| {
            TcpListener::bind(("127.0.0.1", p))
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .ok()
        };
        if preferred != 0 && !self.0.contains(&preferred) {
            if let Some(p) = try_bind(preferred) {
                self.0.insert(p);
                return p;
            }
        }
        loop {
            let p = try_bind(0).expect("bind 127.0.0.1:0");
            if self.0.insert(p) {
                return p;
            }
        }
    }
}

/// One running Envoy frontend.
pub struct Frontend {
    pub file: &'static str,
    pub admin_port: u16,
    pub access_log: PathBuf,
}

impl Frontend {
    /// The access log, one JSON object per non-empty line.
    pub fn access_log_entries(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.access_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// Everything the demo runs. Field order is drop order: children first, then the stand-in,
/// then the temp dir (configs, certificates, logs).
pub struct Stack {
    pub procs: Procs,
    pub upstream: Upstream,
    pub query: Frontend,
    pub ingest: Frontend,
    pub query_port: u16,
    pub otlp_grpc_port: u16,
    pub otlp_http_port: u16,
    pub authz_grpc_port: u16,
    pub authz_admin_port: u16,
    pub authz_log: PathBuf,
    pub certs: TestCerts,
    pub ca_path: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Stack {
    pub async fn start(inputs: &Inputs) -> Result<Stack> {
        let dir = tempfile::Builder::new()
            .prefix("tenant-authz-demo-")
            .tempdir()
            .map_err(|e| format!("create temp dir: {e}"))?;
        let mut procs = Procs::default();
        let mut ports = Ports::default();

        // Certificates for both frontends: a fresh CA and a localhost/127.0.0.1 server cert.
        let certs = TestCerts::generate();
        let ca_path = dir.path().join("ca.crt");
        std::fs::write(&ca_path, &certs.ca_cert_pem).map_err(|e| format!("write CA: {e}"))?;
        let cert_paths = write_server_certs(dir.path(), &certs);

        // tenant-authz with the demo's static config, on the deployment ports if free.
        let static_config = inputs.repo.join("examples/static.yaml");
        let authz_grpc_port = ports.pick(9001);
        let authz_admin_port = ports.pick(9090);
        let authz_log = dir.path().join("tenant-authz.log");
        let mut cmd = Command::new(&inputs.authz_bin);
        cmd.arg("--config")
            .arg(&static_config)
            .arg("--grpc-addr")
            .arg(format!("127.0.0.1:{authz_grpc_port}"))
            .arg("--admin-addr")
            .arg(format!("127.0.0.1:{authz_admin_port}"))
            // JSON lines: the demo reads the decision log (the gRPC message of a denial).
            .args(["--log-format", "json"])
            .env("RUST_LOG", "info");
        // Only the demo's flags configure tenant-authz, whatever the caller's environment.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TENANT_AUTHZ_") {
                cmd.env_remove(key);
            }
        }
        procs.spawn("tenant-authz", cmd, authz_log.clone())?;

        let upstream = Upstream::start().await;
        let tempo = socket("127.0.0.1", upstream.port);
        let authz = socket("127.0.0.1", authz_grpc_port);

        // Both production configs, templated by exact string replacement of their
        // deployment values (tests/support/envoy.rs `localize`).
        let query_port = ports.pick(3200);
        let (query, query_yaml) = localize_frontend(
            dir.path(),
            "query-frontend.yaml",
            &mut ports,
            &cert_paths,
            vec![
                (QUERY_LISTENER, socket("127.0.0.1", query_port)),
                (TEMPO_QUERY_FRONTEND, tempo.clone()),
                // Envoy's own spans, to the stand-in Tempo like the ingest side's.
                (DISTRIBUTOR_OTLP_GRPC, tempo.clone()),
                (TENANT_AUTHZ, authz.clone()),
            ],
        )?;
        let otlp_grpc_port = ports.pick(4317);
        let otlp_http_port = ports.pick(4318);
        let (ingest, ingest_yaml) = localize_frontend(
            dir.path(),
            "ingest-frontend.yaml",
            &mut ports,
            &cert_paths,
            vec![
                (OTLP_GRPC_LISTENER, socket("127.0.0.1", otlp_grpc_port)),
                (OTLP_HTTP_LISTENER, socket("127.0.0.1", otlp_http_port)),
                (DISTRIBUTOR_OTLP_GRPC, tempo.clone()),
                (DISTRIBUTOR_OTLP_HTTP, tempo),
                (TENANT_AUTHZ, authz),
            ],
        )?;

        let mut stack = Stack {
            procs,
            upstream,
            query,
            ingest,
            query_port,
            otlp_grpc_port,
            otlp_http_port,
            authz_grpc_port,
            authz_admin_port,
            authz_log,
            certs,
            ca_path,
            dir,
        };

        if let Err(e) = stack.launch(inputs, [query_yaml, ingest_yaml]).await {
            stack.procs.stop_all();
            return Err(format!(
                "{e}\n(demo files kept in {})",
                stack.keep_files().display()
            ));
        }
        Ok(stack)
    }

    /// Waits for tenant-authz, then starts both Envoys (they health-check tenant-authz) and
    /// waits for them.
    async fn launch(&mut self, inputs: &Inputs, configs: [PathBuf; 2]) -> Result<()> {
        self.wait_authz_ready().await?;
        let names = ["envoy query-frontend", "envoy ingest-frontend"];
        for (i, (name, yaml)) in names.into_iter().zip(configs).enumerate() {
            let stem = yaml.file_stem().unwrap().to_string_lossy().to_string();
            let cmd = envoy_command(&inputs.envoy_bin, &yaml, self.dir.path(), &stem, i);
            let out = self.dir.path().join(format!("{stem}.stdout"));
            self.procs.spawn(name, cmd, out)?;
        }
        let dir = self.dir.path().to_path_buf();
        for (name, admin) in names
            .into_iter()
            .zip([self.query.admin_port, self.ingest.admin_port])
        {
            wait_envoy_ready(&mut self.procs, name, admin, &dir).await?;
        }
        Ok(())
    }

    /// Keeps the temp dir (configs, logs) after exit, for a look at what went wrong.
    pub fn keep_files(&mut self) -> PathBuf {
        self.dir.disable_cleanup(true);
        self.dir.path().to_path_buf()
    }

    async fn wait_authz_ready(&mut self) -> Result<()> {
        let url = format!("http://127.0.0.1:{}/readyz", self.authz_admin_port);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.procs.check_alive("tenant-authz")?;
            if let Ok((200, _)) = http_get(&url).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "tenant-authz not ready within {READY_TIMEOUT:?}; log {}:\n{}",
                    self.authz_log.display(),
                    tail(&self.authz_log(), 3000)
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// tenant-authz's log so far (JSON lines).
    pub fn authz_log(&self) -> String {
        std::fs::read_to_string(&self.authz_log).unwrap_or_default()
    }

    /// tenant-authz's `/metrics`.
    pub async fn metrics(&self) -> Result<String> {
        let url = format!("http://127.0.0.1:{}/metrics", self.authz_admin_port);
        match http_get(&url).await {
            Ok((200, body)) => Ok(body),
            Ok((status, _)) => Err(format!("GET {url}: {status}")),
            Err(e) => Err(format!("GET {url}: {e}")),
        }
    }
}

/// Localizes `envoy/<file>` into `<dir>/<file>`: the given listener/upstream values, plus the
/// probes listener and admin API on free loopback ports, the demo certificates, and the access
/// log to `<dir>/<stem>.access.log`.
fn localize_frontend(
    dir: &Path,
    file: &'static str,
    ports: &mut Ports,
    cert_paths: &[(&'static str, String)],
    mut replacements: Vec<(&'static str, String)>,
) -> Result<(Frontend, PathBuf)> {
    let stem = file.trim_end_matches(".yaml");
    let admin_port = ports.pick(9901);
    let access_log = dir.join(format!("{stem}.access.log"));
    std::fs::write(&access_log, "").map_err(|e| format!("create access log: {e}"))?;
    replacements.extend([
        (PROBES_LISTENER, socket("127.0.0.1", ports.pick(9902))),
        (ADMIN_ADDRESS, socket("127.0.0.1", admin_port)),
        (ACCESS_LOG_PATH, access_log.display().to_string()),
    ]);
    replacements.extend(cert_paths.iter().cloned());
    let yaml = std::panic::catch_unwind(|| localize(file, &replacements))
        .map_err(|_| format!("envoy/{file}: a deployment value was not found (see above)"))?;
    let path = dir.join(file);
    std::fs::write(&path, yaml).map_err(|e| format!("write {}: {e}", path.display()))?;
    Ok((
        Frontend {
            file,
            admin_port,
            access_log,
        },
        path,
    ))
}

fn envoy_command(bin: &Path, config: &Path, dir: &Path, stem: &str, index: usize) -> Command {
    let base_id = std::process::id() as usize % 100_000 * 10 + index;
    let mut cmd = Command::new(bin);
    cmd.arg("-c")
        .arg(config)
        .arg("--disable-hot-restart")
        // Hot restart is off, but keep the base id unique across concurrent demos anyway.
        .args(["--base-id", &base_id.to_string()])
        .args(["--concurrency", "1"])
        .args(["-l", "warning"])
        .arg("--log-path")
        .arg(dir.join(format!("{stem}.envoy.log")))
        // Flush the access log quickly: the demo reads it after every request.
        .args(["--file-flush-interval-msec", "20"]);
    cmd
}

async fn wait_envoy_ready(procs: &mut Procs, name: &str, admin: u16, dir: &Path) -> Result<()> {
    let url = format!("http://127.0.0.1:{admin}/ready");
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut last;
    loop {
        if let Err(e) = procs.check_alive(name) {
            let stem = name.trim_start_matches("envoy ");
            let log = std::fs::read_to_string(dir.join(format!("{stem}.envoy.log")));
            return Err(format!("{e}\n{}", tail(&log.unwrap_or_default(), 3000)));
        }
        match http_get(&url).await {
            Ok((200, body)) if body.trim() == "LIVE" => return Ok(()),
            Ok((status, body)) => last = format!("{status} {}", body.trim()),
            Err(e) => last = e,
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{name} not ready within {READY_TIMEOUT:?} (GET {url}: {last})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Plain-HTTP GET on loopback (admin endpoints): (status, body).
pub async fn http_get(url: &str) -> Result<(u16, String)> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let resp = client.get(url).send().await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await.unwrap_or_default()))
}

pub fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}
