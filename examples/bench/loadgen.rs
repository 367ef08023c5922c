//! The gRPC load generator: `concurrency` workers, each with one Check in flight at a time,
//! spread over a few HTTP/2 connections (tonic channels), until a deadline or a count.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use tonic::transport::{Channel, Endpoint};

pub type Client = AuthorizationClient<Channel>;

/// `n` clients, each on its own HTTP/2 connection.
pub async fn connect(addr: SocketAddr, n: usize) -> Result<Vec<Client>, String> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .connect()
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        clients.push(AuthorizationClient::new(channel));
    }
    Ok(clients)
}

/// When to stop.
#[derive(Clone, Copy)]
pub enum Stop {
    /// Run until this instant.
    At(Instant),
    /// Send exactly this many Checks in total.
    Count(u64),
}

/// What a run measured. `latencies_us` is sorted.
#[derive(Default)]
pub struct Outcome {
    pub checks: u64,
    /// gRPC OK with `CheckResponse.status.code == 0`.
    pub allowed: u64,
    /// gRPC OK with another status code (a denial).
    pub denied: u64,
    /// gRPC errors (transport, timeouts).
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    pub latencies_us: Vec<u32>,
}

impl Outcome {
    pub fn rps(&self) -> f64 {
        self.checks as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `concurrency` workers over `clients`; worker `w` uses `clients[w % len]`. Check
/// number `i` (0-based, over all workers) sends `make(i)`.
pub async fn run(
    clients: &[Client],
    concurrency: usize,
    stop: Stop,
    make: Arc<dyn Fn(u64) -> CheckRequest + Send + Sync>,
) -> Outcome {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        let mut client = clients[w % clients.len()].clone();
        let next = next.clone();
        let make = make.clone();
        workers.push(tokio::spawn(async move {
            let mut out = Outcome::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                match stop {
                    Stop::At(at) if Instant::now() >= at => break,
                    Stop::Count(n) if i >= n => break,
                    _ => {}
                }
                let request = make(i);
                let sent = Instant::now();
                let answer = client.check(request).await;
                let took = sent.elapsed();
                out.checks += 1;
                out.latencies_us
                    .push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
                match answer {
                    Ok(resp) => {
                        let code = resp.into_inner().status.map_or(0, |s| s.code);
                        if code == 0 {
                            out.allowed += 1;
                        } else {
                            out.denied += 1;
                        }
                    }
                    Err(status) => {
                        out.errors += 1;
                        if out.first_error.is_none() {
                            out.first_error = Some(status.to_string());
                        }
                    }
                }
            }
            out
        }));
    }
    let mut total = Outcome::default();
    for w in workers {
        let out = w.await.unwrap_or_default();
        total.checks += out.checks;
        total.allowed += out.allowed;
        total.denied += out.denied;
        total.errors += out.errors;
        total.first_error = total.first_error.or(out.first_error);
        total.latencies_us.extend(out.latencies_us);
    }
    total.elapsed = started.elapsed();
    total.latencies_us.sort_unstable();
    total
}

/// Connections for a concurrency level: one per worker up to 4 ("a few HTTP/2 connections",
/// as Envoy opens one per worker thread), then streams are multiplexed.
pub fn connections_for(concurrency: usize) -> usize {
    concurrency.clamp(1, 4)
}

/// One measured window of cached Checks: throughput, p99 and the server's CPU per Check.
pub struct Run {
    pub rps: f64,
    pub p99: f64,
    pub cpu_us: f64,
}

/// Warms for `settings.warmup`, then measures `settings.measure` of `concurrency` workers
/// cycling through `requests` against the server `pid`; every Check must be allowed.
pub async fn measure(
    settings: &crate::common::Settings,
    clients: &[Client],
    concurrency: usize,
    pid: u32,
    requests: &Arc<Vec<CheckRequest>>,
    tck: u64,
) -> crate::common::Result<Run> {
    let reqs = requests.clone();
    let make: Arc<dyn Fn(u64) -> CheckRequest + Send + Sync> =
        Arc::new(move |i| reqs[i as usize % reqs.len()].clone());
    let warm = run(
        clients,
        concurrency,
        Stop::At(Instant::now() + settings.warmup),
        make.clone(),
    )
    .await;
    all_allowed(&warm)?;
    let cpu0 = crate::common::cpu_ticks(pid);
    let out = run(
        clients,
        concurrency,
        Stop::At(Instant::now() + settings.measure),
        make,
    )
    .await;
    let cpu1 = crate::common::cpu_ticks(pid);
    all_allowed(&out)?;
    Ok(Run {
        rps: out.rps(),
        p99: crate::common::quantile(&out.latencies_us, 0.99),
        cpu_us: (cpu1 - cpu0) as f64 * 1e6 / tck as f64 / out.checks.max(1) as f64,
    })
}

/// Fails unless every Check of `out` (and at least one) was allowed.
pub fn all_allowed(out: &Outcome) -> crate::common::Result<()> {
    if out.allowed != out.checks || out.checks == 0 {
        return Err(format!(
            "{} of {} Checks not allowed ({} denied, {} gRPC errors; first error: {})",
            out.checks - out.allowed,
            out.checks,
            out.denied,
            out.errors,
            out.first_error.as_deref().unwrap_or("-")
        ));
    }
    Ok(())
}
