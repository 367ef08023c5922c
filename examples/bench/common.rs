//! What every part of the benchmark shares: the machine, child processes with their CPU time
//! and RSS from /proc, realistic tokens and CheckRequests, statistics, targets.

use std::collections::HashMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::envoy::config::core::v3::{address, socket_address, Address, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use envoy_types::pb::google::protobuf::Timestamp;
use serde_json::{json, Value};

pub type Result<T> = std::result::Result<T, String>;

// ------------------------------------------------------------------ settings

/// Sizes and durations of one run: full, or `--smoke` (tiny, for the test suite).
#[derive(Clone, Debug)]
pub struct Settings {
    pub smoke: bool,
    pub authz_bin: PathBuf,
    pub null_bin: PathBuf,
    pub envoy_bin: Option<PathBuf>,
    pub wrk_bin: Option<PathBuf>,
    pub dir: PathBuf,
    /// Part 1: concurrency levels, measured seconds per run, warm-up per run, rounds.
    pub levels: Vec<usize>,
    pub measure: Duration,
    pub warmup: Duration,
    pub rounds: usize,
    /// Part 2: wrk seconds per run, connections.
    pub wrk_secs: u32,
    pub wrk_connections: usize,
    /// Part 3: concurrent identical misses, distinct tokens, sequential cold checks.
    pub identical: usize,
    pub distinct: usize,
    pub sequential: usize,
    /// Part 4: cached allows, flood of unknown tokens.
    pub entries: usize,
    pub flood: u64,
    /// Part 5: decides counted.
    pub alloc_checks: usize,
}

impl Settings {
    pub fn new(smoke: bool, authz_bin: PathBuf, null_bin: PathBuf, dir: PathBuf) -> Settings {
        if smoke {
            Settings {
                smoke,
                authz_bin,
                null_bin,
                envoy_bin: None,
                wrk_bin: None,
                dir,
                levels: vec![1, 16],
                measure: Duration::from_millis(500),
                warmup: Duration::from_millis(100),
                rounds: 2,
                wrk_secs: 1,
                wrk_connections: 8,
                identical: 100,
                distinct: 50,
                sequential: 10,
                entries: 1_000,
                flood: 10_000,
                alloc_checks: 1_000,
            }
        } else {
            Settings {
                smoke,
                authz_bin,
                null_bin,
                envoy_bin: None,
                wrk_bin: None,
                dir,
                levels: vec![1, 16, 64, 256],
                measure: Duration::from_secs(5),
                warmup: Duration::from_secs(1),
                rounds: 3,
                wrk_secs: 10,
                wrk_connections: 64,
                identical: 100,
                distinct: 200,
                sequential: 100,
                entries: 100_000,
                flood: 1_000_000,
                alloc_checks: 10_000,
            }
        }
    }
}

// ------------------------------------------------------------------ the machine

pub struct Machine {
    pub cores: usize,
    pub model: String,
    pub mem_total_kib: u64,
    pub loadavg: String,
}

pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count()
        .max(1);
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_total_kib = status_field(&meminfo, "MemTotal:").unwrap_or(0);
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    Machine {
        cores,
        model,
        mem_total_kib,
        loadavg,
    }
}

/// `Name:   1234 kB` -> 1234.
fn status_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(name))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Clock ticks per second of /proc/PID/stat's utime and stime.
pub fn clk_tck() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// utime + stime of a process (all its threads), in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start at field 3 (state);
    // utime is field 14, stime field 15.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(11) + get(12)
}

/// (VmRSS, VmHWM) of a process, in KiB.
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    (
        status_field(&status, "VmRSS:").unwrap_or(0),
        status_field(&status, "VmHWM:").unwrap_or(0),
    )
}

// ------------------------------------------------------------------ child processes

/// One child process, killed (by PID) and waited for on drop. Output goes to `log`.
pub struct Proc {
    pub name: String,
    pub pid: u32,
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Proc> {
        let out = File::create(log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .map_err(|e| format!("start {name} ({:?}): {e}", cmd.get_program()))?;
        Ok(Proc {
            name: name.to_string(),
            pid: child.id(),
            child,
            log: log.to_path_buf(),
        })
    }

    /// `Err` with the log's tail if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} exited ({status}); {}:\n{}",
                self.name,
                self.log.display(),
                tail(
                    &std::fs::read_to_string(&self.log).unwrap_or_default(),
                    2000
                )
            )),
            Err(e) => Err(format!("{}: {e}", self.name)),
        }
    }

    pub fn cpu_ticks(&self) -> u64 {
        cpu_ticks(self.pid)
    }

    /// Sends SIGTERM and waits up to `within` for a clean exit (tenant-authz exits 0).
    pub async fn terminate(&mut self, within: Duration) -> Result<()> {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .map_err(|e| format!("kill -TERM {}: {e}", self.pid))?;
        if !sent.success() {
            return Err(format!("kill -TERM {} failed", self.pid));
        }
        let deadline = Instant::now() + within;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => return Err(format!("{} exited {status}", self.name)),
                Ok(None) if Instant::now() > deadline => {
                    return Err(format!(
                        "{} still running {within:?} after SIGTERM",
                        self.name
                    ))
                }
                Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => return Err(format!("{}: {e}", self.name)),
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A running tenant-authz: the process, its gRPC and admin addresses.
pub struct Authz {
    pub proc: Proc,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
}

impl Authz {
    /// Starts `tenant-authz` on loopback ports with `args`, logging at its default level
    /// (`info`) to `<dir>/<name>.log`, and waits for `/readyz`.
    pub async fn start(settings: &Settings, name: &str, args: &[&str]) -> Result<Authz> {
        Self::start_under(settings, name, &[], args, Duration::from_secs(60)).await
    }

    /// [`Authz::start`] under a wrapper command (e.g. `valgrind --tool=callgrind`), waiting
    /// at most `ready_within` for `/readyz`.
    pub async fn start_under(
        settings: &Settings,
        name: &str,
        wrapper: &[String],
        args: &[&str],
        ready_within: Duration,
    ) -> Result<Authz> {
        let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut cmd = match wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut cmd = Command::new(program);
                cmd.args(wrapper_args).arg(&settings.authz_bin);
                cmd
            }
            None => Command::new(&settings.authz_bin),
        };
        cmd.args(args)
            .arg("--grpc-addr")
            .arg(grpc.to_string())
            .arg("--admin-addr")
            .arg(admin.to_string())
            .env("RUST_LOG", "info");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TENANT_AUTHZ_") {
                cmd.env_remove(key);
            }
        }
        let log = settings.dir.join(format!("{name}.log"));
        let mut proc = Proc::spawn(name, cmd, &log)?;
        let url = format!("http://{admin}/readyz");
        let deadline = Instant::now() + ready_within;
        loop {
            proc.check_alive()?;
            if let Ok((200, _)) = http_get(&url).await {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{name} not ready within {ready_within:?}; log {}",
                    log.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Authz { proc, grpc, admin })
    }

    pub async fn metrics(&self) -> Result<String> {
        let url = format!("http://{}/metrics", self.admin);
        match http_get(&url).await? {
            (200, body) => Ok(body),
            (status, _) => Err(format!("GET {url}: {status}")),
        }
    }

    pub async fn readyz(&self) -> u16 {
        http_get(&format!("http://{}/readyz", self.admin))
            .await
            .map(|(s, _)| s)
            .unwrap_or(0)
    }
}

/// Starts the null ext_authz server and waits until it answers a Check.
pub async fn start_null(settings: &Settings) -> Result<(Proc, SocketAddr)> {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut cmd = Command::new(&settings.null_bin);
    cmd.arg("--grpc-addr").arg(addr.to_string());
    let mut proc = Proc::spawn("null_authz", cmd, &settings.dir.join("null_authz.log"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        proc.check_alive()?;
        if crate::loadgen::connect(addr, 1).await.is_ok() {
            return Ok((proc, addr));
        }
        if Instant::now() > deadline {
            return Err("null_authz did not listen within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Plain-HTTP GET on loopback (admin endpoints): (status, body).
pub async fn http_get(url: &str) -> Result<(u16, String)> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let resp = client.get(url).send().await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().await.unwrap_or_default()))
}

/// Sum of the samples of `name` whose labels include every `(label, value)`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let metric_name = series.split('{').next()?;
            if metric_name != name {
                return None;
            }
            labels
                .iter()
                .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

// ------------------------------------------------------------------ tokens

/// A small deterministic generator (splitmix64), so runs are repeatable without a crate.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    pub fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            b >> 52,
            b & 0xffff_ffff_ffff
        )
    }

    pub fn hex(&mut self, n: usize) -> String {
        (0..n).map(|_| format!("{:x}", self.next() & 0xf)).collect()
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// A projected ServiceAccount token as the kubelet mounts it: a JWT (three base64url parts,
/// RS256-sized signature, `exp` a day ahead), about 1 KiB. Never verified by tenant-authz;
/// its `exp` only caps the identity cache TTL.
pub fn jwt(namespace: &str, sa: &str, serial: u64) -> String {
    let mut rng = Rng::new(serial.wrapping_mul(31).wrapping_add(namespace.len() as u64));
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let now = now_secs();
    let header = json!({"alg": "RS256", "kid": b64(&rng.bytes(32))});
    let pod = format!("{sa}-{}-{}", rng.hex(10), rng.hex(5));
    let payload = json!({
        "aud": ["https://kubernetes.default.svc.cluster.local"],
        "exp": now + 86_400,
        "iat": now,
        "iss": "https://kubernetes.default.svc.cluster.local",
        "jti": rng.uuid(),
        "kubernetes.io": {
            "namespace": namespace,
            "node": {"name": "worker-3", "uid": rng.uuid()},
            "pod": {"name": pod, "uid": rng.uuid()},
            "serviceaccount": {"name": sa, "uid": rng.uuid()},
            "warnafter": now + 3_607,
        },
        "nbf": now,
        "sub": format!("system:serviceaccount:{namespace}:{sa}"),
    });
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes()),
        b64(&rng.bytes(256))
    )
}

/// A distinct JWT-shaped token per `i`, cheaply: `template` with the end of its signature
/// replaced by `i` (base64url alphabet), so a flood of a million costs the client little.
pub fn variant(template: &str, i: u64) -> String {
    let mut t = template.as_bytes().to_vec();
    let n = t.len();
    let suffix = format!("{i:016x}");
    t[n - 16..].copy_from_slice(suffix.as_bytes());
    String::from_utf8(t).expect("ascii")
}

// ------------------------------------------------------------------ CheckRequests

/// Tempo query paths, as Grafana's Tempo datasource sends them.
pub fn tempo_paths(rng: &mut Rng) -> Vec<String> {
    let now = now_secs();
    vec![
        format!(
            "/api/search?tags=service.name%3Dcheckout&minDuration=100ms&limit=20&spss=3&start={}&end={now}",
            now - 3600
        ),
        format!("/api/traces/{}", rng.hex(32)),
        format!(
            "/api/search?q=%7Bresource.service.name%3D%22checkout%22%20%26%26%20duration%3E500ms%7D&limit=20&spss=3&start={}&end={now}",
            now - 900
        ),
        format!("/api/v2/traces/{}?start={}&end={now}", rng.hex(32), now - 3600),
        format!("/api/v2/search/tags?scope=resource&start={}&end={now}", now - 3600),
        "/api/v2/search/tag/resource.service.name/values".to_string(),
    ]
}

fn socket(address: &str, port: u32) -> Option<Address> {
    Some(Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: address.into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    })
}

/// A CheckRequest as Envoy's ext_authz filter sends it for a Grafana query on the query
/// frontend (`envoy/query-frontend.yaml`): peers, request time, the HTTP request with
/// pseudo-headers and the usual Envoy-added headers, and the route's `action=read`.
pub fn check_request(token: &str, tenant: &str, path: &str, rng: &mut Rng) -> CheckRequest {
    let request_id = rng.uuid();
    let client_port = 40_000 + (rng.next() % 20_000) as u32;
    let authority = "tempo-query.example.com:3200";
    let headers: HashMap<String, String> = [
        (":authority", authority.to_string()),
        (":method", "GET".to_string()),
        (":path", path.to_string()),
        (":scheme", "https".to_string()),
        ("authorization", format!("Bearer {token}")),
        ("x-scope-orgid", tenant.to_string()),
        ("user-agent", "Grafana/11.3.0".to_string()),
        ("accept", "application/json, text/plain, */*".to_string()),
        ("accept-encoding", "gzip, deflate, br".to_string()),
        ("x-grafana-org-id", "1".to_string()),
        ("x-forwarded-for", "127.0.0.1".to_string()),
        ("x-forwarded-proto", "https".to_string()),
        ("x-request-id", request_id.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut context_extensions = HashMap::new();
    context_extensions.insert("action".to_string(), "read".to_string());
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: socket("127.0.0.1", client_port),
                ..Default::default()
            }),
            destination: Some(Peer {
                address: socket("127.0.0.1", 3200),
                ..Default::default()
            }),
            request: Some(Request {
                time: Some(Timestamp {
                    seconds: now.as_secs() as i64,
                    nanos: now.subsec_nanos() as i32,
                }),
                http: Some(HttpRequest {
                    id: (rng.next() % 10_000_000_000_000_000_000).to_string(),
                    method: "GET".into(),
                    headers,
                    path: path.into(),
                    host: authority.into(),
                    scheme: "https".into(),
                    protocol: "HTTP/2".into(),
                    size: 0,
                    ..Default::default()
                }),
            }),
            context_extensions,
            metadata_context: Some(Metadata::default()),
            route_metadata_context: Some(Metadata::default()),
            ..Default::default()
        }),
    }
}

// ------------------------------------------------------------------ numbers

/// The `p` quantile (0..=1) of sorted values.
pub fn quantile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    f64::from(sorted[rank - 1])
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A number with thousands separators: 1234567 -> "1 234 567".
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

// ------------------------------------------------------------------ targets and the report

/// One target: what, the measured figure, the bound, met or not.
pub struct Target {
    pub part: u8,
    pub what: String,
    pub measured: String,
    pub bound: String,
    pub met: bool,
}

/// Everything measured: targets for the summary, figures for `--json`.
#[derive(Default)]
pub struct Report {
    pub targets: Vec<Target>,
    pub notes: Vec<String>,
    pub json: serde_json::Map<String, Value>,
}

impl Report {
    pub fn target(&mut self, part: u8, what: &str, measured: String, bound: &str, met: bool) {
        println!(
            "  {} {what}: {measured} (target {bound})",
            if met { "✓" } else { "✗ NOT MET:" }
        );
        self.targets.push(Target {
            part,
            what: what.into(),
            measured,
            bound: bound.into(),
            met,
        });
    }
}
