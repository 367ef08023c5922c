//! Part 2: through Envoy. The shipped `envoy/query-frontend.yaml` (templated for loopback
//! ports like the demo does), once in front of the null ext_authz and once in front of
//! tenant-authz (part 1's processes, cache warm), a stand-in Tempo behind both, and `wrk`
//! (HTTPS, HTTP/1.1 keep-alive) as the client. Sides alternate: null, target, null, target.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{cpu_ticks, free_port, median, Proc, Report, Result, Settings};
use crate::direct::Servers;
use crate::envoy::{
    localize, socket, write_server_certs, ACCESS_LOG_PATH, ADMIN_ADDRESS, DISTRIBUTOR_OTLP_GRPC,
    PROBES_LISTENER, QUERY_LISTENER, TEMPO_QUERY_FRONTEND, TENANT_AUTHZ,
};
use crate::tls::TestCerts;
use crate::upstream::Upstream;

pub const WRK_INSTALL: &str = "apt-get install -y wrk";

struct Frontend {
    name: &'static str,
    proc: Proc,
    port: u16,
    authz_pid: u32,
}

/// What one wrk run reported.
#[derive(Debug, Default)]
struct Wrk {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    requests: u64,
    non_2xx: u64,
    socket_errors: u64,
}

pub async fn run(settings: &Settings, servers: &Servers, report: &mut Report) -> Result<()> {
    let Some(wrk) = settings.wrk_bin.clone() else {
        let msg = format!("no wrk (HTTP load generator); install it with: {WRK_INSTALL}");
        if settings.smoke {
            println!("  skipped in smoke mode: {msg}");
            report.notes.push(format!("part 2 skipped: {msg}"));
            return Ok(());
        }
        return Err(msg);
    };
    let Some(envoy_bin) = settings.envoy_bin.clone() else {
        let msg = "no Envoy 1.40 binary: run ./scripts/install-envoy or set ENVOY_BIN";
        if settings.smoke {
            println!("  skipped in smoke mode: {msg}");
            report.notes.push(format!("part 2 skipped: {msg}"));
            return Ok(());
        }
        return Err(msg.into());
    };

    let dir = settings.dir.join("envoy");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let certs = TestCerts::generate();
    let ca_path = dir.join("ca.crt");
    std::fs::write(&ca_path, &certs.ca_cert_pem).map_err(|e| e.to_string())?;
    let cert_paths = write_server_certs(&dir, &certs);
    let upstream = Upstream::start().await;

    let mut frontends = Vec::new();
    for (i, (name, authz_port, authz_pid)) in [
        (
            "Envoy + null_authz",
            servers.null_addr.port(),
            servers.null.pid,
        ),
        (
            "Envoy + tenant-authz",
            servers.target.grpc.port(),
            servers.target.proc.pid,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let port = free_port();
        let admin = free_port();
        let mut replacements = vec![
            (QUERY_LISTENER, socket("127.0.0.1", port)),
            (TEMPO_QUERY_FRONTEND, socket("127.0.0.1", upstream.port)),
            (TENANT_AUTHZ, socket("127.0.0.1", authz_port)),
            (PROBES_LISTENER, socket("127.0.0.1", free_port())),
            (ADMIN_ADDRESS, socket("127.0.0.1", admin)),
            // Envoy's own spans (1 % of requests, as shipped) go to a closed port: no DNS.
            (DISTRIBUTOR_OTLP_GRPC, socket("127.0.0.1", free_port())),
            // Formatted as in production, written nowhere: disk I/O is not what is measured.
            (ACCESS_LOG_PATH, "/dev/null".to_string()),
        ];
        replacements.extend(cert_paths.iter().cloned());
        let yaml = std::panic::catch_unwind(|| localize("query-frontend.yaml", &replacements))
            .map_err(|_| "envoy/query-frontend.yaml: a deployment value was not found")?;
        let config = dir.join(format!("query-frontend-{i}.yaml"));
        std::fs::write(&config, yaml).map_err(|e| e.to_string())?;
        let proc = start_envoy(&envoy_bin, &config, &dir, i, admin).await?;
        frontends.push(Frontend {
            name,
            proc,
            port,
            authz_pid,
        });
    }

    let (token, tenant) = &servers.callers[0];
    let path = "/api/search?tags=service.name%3Dcheckout&minDuration=100ms&limit=20&spss=3";
    // One request each through the TLS listener first: both must answer 200.
    let client = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(
            reqwest::Certificate::from_pem(certs.ca_cert_pem.as_bytes())
                .map_err(|e| e.to_string())?,
        )
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    for f in &frontends {
        let url = format!("https://localhost:{}{path}", f.port);
        let resp = client
            .get(&url)
            .header("authorization", format!("Bearer {token}"))
            .header("x-scope-orgid", tenant)
            .send()
            .await
            .map_err(|e| format!("{}: GET {url}: {e}", f.name))?;
        if resp.status() != 200 {
            return Err(format!("{}: GET {url}: {}", f.name, resp.status()));
        }
    }

    let tck = crate::common::clk_tck() as f64;
    let rounds = 2;
    println!(
        "  envoy/query-frontend.yaml (TLS, --concurrency 2, access log to /dev/null) → stand-in \
         Tempo;"
    );
    println!(
        "  wrk -t2 -c{} -d{}s --latency: GET /api/search with a 1.1 KiB bearer token (HTTPS,",
        settings.wrk_connections, settings.wrk_secs
    );
    println!("  HTTP/1.1); a 1 s warm-up, then {rounds} rounds × (null, tenant-authz); medians.");
    let mut results: Vec<Vec<(Wrk, f64, f64)>> = vec![Vec::new(), Vec::new()];
    for round in 0..=rounds {
        for (i, f) in frontends.iter().enumerate() {
            let secs = if round == 0 { 1 } else { settings.wrk_secs };
            let (a0, e0) = (cpu_ticks(f.authz_pid), f.proc.cpu_ticks());
            let w = run_wrk(
                &wrk,
                settings.wrk_connections,
                secs,
                f.port,
                path,
                token,
                tenant,
            )?;
            let (a1, e1) = (cpu_ticks(f.authz_pid), f.proc.cpu_ticks());
            upstream.clear();
            if w.non_2xx > 0 || w.socket_errors > 0 || w.requests == 0 {
                return Err(format!(
                    "{}: {} requests, {} non-2xx, {} socket errors",
                    f.name, w.requests, w.non_2xx, w.socket_errors
                ));
            }
            if round == 0 {
                continue; // warm-up
            }
            let per = |ticks: u64| ticks as f64 * 1e6 / tck / w.requests as f64;
            let (authz_cpu, envoy_cpu) = (per(a1 - a0), per(e1 - e0));
            results[i].push((w, authz_cpu, envoy_cpu));
        }
    }

    println!();
    println!("  side                     requests/s  p50 ms  p99 ms  ext_authz CPU µs/req  Envoy CPU µs/req");
    let fig = |runs: &Vec<(Wrk, f64, f64)>| {
        (
            median(runs.iter().map(|r| r.0.rps).collect()),
            median(runs.iter().map(|r| r.0.p50_us).collect()),
            median(runs.iter().map(|r| r.0.p99_us).collect()),
            median(runs.iter().map(|r| r.1).collect()),
            median(runs.iter().map(|r| r.2).collect()),
        )
    };
    let figs: Vec<_> = results.iter().map(fig).collect();
    for (f, (rps, p50, p99, a, e)) in frontends.iter().zip(&figs) {
        println!(
            "  {:<24} {rps:>10.0} {:>7.2} {:>7.2} {a:>21.1} {e:>17.1}",
            f.name,
            p50 / 1000.0,
            p99 / 1000.0
        );
    }
    let (n, t) = (figs[0], figs[1]);
    println!(
        "  {:<24} {:>10.2} {:>7.2} {:>7.2} {:>21.2} {:>17.2}",
        "ratio (× null)",
        t.0 / n.0,
        t.1 / n.1,
        t.2 / n.2,
        t.3 / n.3,
        t.4 / n.4
    );
    report.target(
        2,
        "via Envoy: throughput vs null",
        format!("{:.3}×", t.0 / n.0),
        "≥ 0.9×",
        t.0 / n.0 >= 0.9,
    );
    report.target(
        2,
        "via Envoy: p99 vs null",
        format!(
            "{:.3}× ({:.2} vs {:.2} ms)",
            t.2 / n.2,
            t.2 / 1000.0,
            n.2 / 1000.0
        ),
        "≤ 1.2×",
        t.2 / n.2 <= 1.2,
    );
    let side = |f: (f64, f64, f64, f64, f64)| {
        json!({"rps": f.0, "p50_us": f.1, "p99_us": f.2, "ext_authz_cpu_us_per_req": f.3,
               "envoy_cpu_us_per_req": f.4})
    };
    report.json.insert(
        "part2_through_envoy".into(),
        json!({"wrk_connections": settings.wrk_connections, "seconds": settings.wrk_secs,
               "rounds": rounds, "null": side(n), "tenant_authz": side(t)}),
    );
    Ok(())
}

async fn start_envoy(bin: &Path, config: &Path, dir: &Path, i: usize, admin: u16) -> Result<Proc> {
    let base_id = std::process::id() as usize % 100_000 * 10 + 5 + i;
    let mut cmd = Command::new(bin);
    cmd.arg("-c")
        .arg(config)
        .arg("--disable-hot-restart")
        .args(["--base-id", &base_id.to_string()])
        .args(["--concurrency", "2"])
        .args(["-l", "warning"])
        .arg("--log-path")
        .arg(dir.join(format!("envoy-{i}.log")));
    let mut proc = Proc::spawn("envoy", cmd, &dir.join(format!("envoy-{i}.stdout")))?;
    let url = format!("http://127.0.0.1:{admin}/ready");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Err(e) = proc.check_alive() {
            let log = std::fs::read_to_string(dir.join(format!("envoy-{i}.log")));
            return Err(format!(
                "{e}\n{}",
                crate::common::tail(&log.unwrap_or_default(), 2000)
            ));
        }
        if let Ok((200, body)) = crate::common::http_get(&url).await {
            if body.trim() == "LIVE" {
                return Ok(proc);
            }
        }
        if Instant::now() > deadline {
            return Err(format!("Envoy not ready within 30 s ({url})"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn run_wrk(
    wrk: &Path,
    connections: usize,
    secs: u32,
    port: u16,
    path: &str,
    token: &str,
    tenant: &str,
) -> Result<Wrk> {
    let out = Command::new(wrk)
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{secs}s"),
            "--latency",
        ])
        .args(["-H", &format!("authorization: Bearer {token}")])
        .args(["-H", &format!("x-scope-orgid: {tenant}")])
        .args(["-H", "user-agent: Grafana/11.3.0"])
        .args(["-H", "accept: application/json, text/plain, */*"])
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .map_err(|e| format!("run {}: {e}", wrk.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "wrk failed ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    parse_wrk(&text).ok_or_else(|| format!("cannot read wrk's output:\n{text}"))
}

/// `1.23ms` / `456.00us` / `1.02s` -> microseconds.
fn duration_us(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => v,
        "ms" => v * 1e3,
        "s" => v * 1e6,
        "m" => v * 60e6,
        _ => return None,
    })
}

fn parse_wrk(text: &str) -> Option<Wrk> {
    let mut w = Wrk::default();
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => w.p50_us = duration_us(v)?,
            ["99%", v] => w.p99_us = duration_us(v)?,
            ["Requests/sec:", v] => w.rps = v.parse().ok()?,
            [n, "requests", "in", ..] => w.requests = n.parse().ok()?,
            ["Non-2xx", "or", "3xx", "responses:", n] => w.non_2xx = n.parse().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                w.socket_errors = rest
                    .iter()
                    .filter_map(|t| t.trim_end_matches(',').parse::<u64>().ok())
                    .sum()
            }
            _ => {}
        }
    }
    (w.rps > 0.0).then_some(w)
}
