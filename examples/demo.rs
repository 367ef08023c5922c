//! The one-command demo (`./scripts/demo [--keep-running]`), no cluster needed.
//!
//! Starts tenant-authz with the static backend (`examples/static.yaml`), both production Envoy
//! frontends (`envoy/query-frontend.yaml`, `envoy/ingest-frontend.yaml`, templated by exact
//! string replacement of their deployment values: loopback ports, demo certificates, access
//! logs to files) and a recording stand-in for Tempo behind them; plays a short story of
//! queries and trace exports; prints what each got, a few metrics, and proof of what Tempo
//! received. Exits non-zero if anything differs from what the story expects.
//!
//! ```text
//! target/debug/examples/demo --envoy PATH [--authz-bin PATH] [--repo DIR] [--keep-running]
//! ```
//!
//! Every process it starts is stopped (killed by PID, then waited for) on exit, on error, and
//! on Ctrl-C / SIGTERM / SIGHUP. `--keep-running` leaves the stack up with copy-paste `curl`
//! commands until Ctrl-C, unless stdin is not a terminal or `CI=true`.

#[allow(dead_code, unused_imports)]
#[path = "../tests/support/envoy.rs"]
mod envoy;
#[allow(dead_code, unused_imports)]
#[path = "../tests/support/tls.rs"]
mod tls;
#[allow(dead_code, unused_imports)]
#[path = "../tests/support/upstream.rs"]
mod upstream;

#[path = "demo/report.rs"]
mod report;
#[path = "demo/stack.rs"]
mod stack;
#[path = "demo/story.rs"]
mod story;

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tokio::signal::unix::{signal, Signal, SignalKind};

use stack::{Inputs, Stack};

const USAGE: &str = "usage: demo --envoy PATH [--authz-bin PATH] [--repo DIR] [--keep-running]
  --envoy PATH      Envoy 1.40 binary (default: $ENVOY_BIN)
  --authz-bin PATH  tenant-authz binary (default: next to this example, ../tenant-authz)
  --repo DIR        repository root (default: where this example was built)
  --keep-running    leave everything up and print curl commands, until Ctrl-C
                    (ignored when stdin is not a terminal or CI=true)";

struct Args {
    inputs: Inputs,
    keep_running: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut envoy_bin = std::env::var_os("ENVOY_BIN").map(PathBuf::from);
    let mut authz_bin = None;
    let mut repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut keep_running = false;
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .map(PathBuf::from)
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        match arg.to_str() {
            Some("--envoy") => envoy_bin = Some(value("--envoy")?),
            Some("--authz-bin") => authz_bin = Some(value("--authz-bin")?),
            Some("--repo") => repo = value("--repo")?,
            Some("--keep-running") => keep_running = true,
            Some("-h" | "--help") => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {arg:?}\n{USAGE}")),
        }
    }
    let envoy_bin = envoy_bin.ok_or_else(|| {
        format!("no Envoy: pass --envoy (./scripts/install-envoy prints its path)\n{USAGE}")
    })?;
    let authz_bin = match authz_bin {
        Some(p) => p,
        None => std::env::current_exe()
            .map_err(|e| format!("current_exe: {e}"))?
            .parent()
            .and_then(Path::parent)
            .map(|dir| dir.join("tenant-authz"))
            .ok_or("cannot locate the tenant-authz binary: pass --authz-bin")?,
    };
    for (what, path) in [("Envoy", &envoy_bin), ("tenant-authz", &authz_bin)] {
        if !path.is_file() {
            return Err(format!("{what} binary not found at {}", path.display()));
        }
    }
    // The Envoy configs are read by tests/support/envoy.rs from where this was built.
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR"));
    if repo.canonicalize().ok() != built_from.canonicalize().ok() {
        return Err(format!(
            "--repo {} is not the checkout this demo was built from ({})",
            repo.display(),
            built_from.display()
        ));
    }
    Ok(Args {
        inputs: Inputs {
            envoy_bin,
            authz_bin,
            repo,
        },
        keep_running,
    })
}

/// SIGINT (Ctrl-C), SIGTERM and SIGHUP: each stops the demo and everything it started.
struct Signals([(Signal, &'static str); 3]);

impl Signals {
    fn new() -> std::io::Result<Signals> {
        Ok(Signals([
            (signal(SignalKind::interrupt())?, "SIGINT"),
            (signal(SignalKind::terminate())?, "SIGTERM"),
            (signal(SignalKind::hangup())?, "SIGHUP"),
        ]))
    }

    async fn recv(&mut self) -> &'static str {
        let [(int, a), (term, b), (hup, c)] = &mut self.0;
        tokio::select! {
            _ = int.recv() => a,
            _ = term.recv() => b,
            _ = hup.recv() => c,
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("demo: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = runtime.block_on(async_main(args));
    // Let the stand-in's connection tasks go before the process ends.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

async fn async_main(args: Args) -> ExitCode {
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("demo: install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    // On a signal, `run` is dropped wherever it is: dropping the Stack stops every child.
    let (ok, mut stack) = tokio::select! {
        biased;
        sig = signals.recv() => {
            eprintln!("demo: {sig}: stopped everything it had started");
            return ExitCode::from(130);
        }
        r = run(&args) => match r {
            Ok(done) => done,
            Err(e) => {
                eprintln!("demo: {e}");
                eprintln!("demo: stopped everything it had started");
                return ExitCode::FAILURE;
            }
        },
    };

    let interactive =
        std::io::stdin().is_terminal() && std::env::var("CI").map_or(true, |ci| ci != "true");
    if args.keep_running && !interactive {
        println!("\n--keep-running ignored: stdin is not a terminal or CI=true.");
    } else if args.keep_running {
        keep_running(&stack);
        tokio::select! {
            sig = signals.recv() => println!("\n{sig}"),
            gone = wait_exit(&mut stack) => println!("\n{gone}: stopping the rest"),
        }
    }
    let stopped = stack.procs.stop_all();
    if !ok {
        println!(
            "\nDemo files (configs, logs) kept for a look: {}",
            stack.keep_files().display()
        );
    }
    println!(
        "\nStopped (killed by PID and reaped): {}.",
        stopped
            .iter()
            .map(|s| s.split(" (pid").next().unwrap_or(s))
            .collect::<Vec<_>>()
            .join(", ")
    );
    drop(stack);
    if ok {
        ExitCode::SUCCESS
    } else {
        println!("demo: FAILED (see ✗ above)");
        ExitCode::FAILURE
    }
}

/// Starts the stack and plays the story; `Ok((every check passed, the stack))`.
async fn run(args: &Args) -> Result<(bool, Stack), String> {
    println!("tenant-authz demo: the production Envoy configs (envoy/) asking tenant-authz");
    println!("(static backend: examples/static.yaml) in front of a stand-in Tempo that records");
    println!("what reaches it. No cluster needed.");
    println!();
    let stack = Stack::start(&args.inputs).await?;
    let addr = |port: u16| format!("127.0.0.1:{port}");
    let up = [
        (
            "tenant-authz",
            addr(stack.authz_grpc_port),
            "ext_authz gRPC, static backend: examples/static.yaml".to_string(),
        ),
        (
            "",
            format!("http://{}", addr(stack.authz_admin_port)),
            "admin: /readyz, /metrics".to_string(),
        ),
        (
            "query frontend",
            format!("https://{}", addr(stack.query_port)),
            format!("envoy/{}: read, manage", stack.query.file),
        ),
        (
            "ingest frontend",
            format!("https://{}", addr(stack.otlp_grpc_port)),
            format!("envoy/{}: OTLP/gRPC, write", stack.ingest.file),
        ),
        (
            "",
            format!("https://{}", addr(stack.otlp_http_port)),
            "OTLP/HTTP, write".to_string(),
        ),
        (
            "stand-in Tempo",
            format!("http://{}", addr(stack.upstream.port)),
            "query frontend and distributor; records every request".to_string(),
        ),
    ];
    for (what, address, detail) in up {
        println!(
            "{}",
            report::fit(&format!("  {what:<16} {address:<24} {detail}"))
        );
    }
    println!();
    println!("Tokens (examples/static.yaml holds only their SHA-256):");
    for t in [story::GRAFANA, story::COLLECTOR, story::SRE] {
        println!("  {:<10} {:<36} {}", t.alias, t.value, t.grants);
    }
    println!();

    let clients = story::Clients::new(&stack.certs)?;
    let rows = story::rows();
    println!("{}", report::header());
    let mut matched = 0;
    for (i, row) in rows.iter().enumerate() {
        let result = story::play(&stack, &clients, row).await;
        if result.mismatches.is_empty() {
            matched += 1;
        }
        for line in report::row(i + 1, row, &result) {
            println!("{line}");
        }
    }
    let rows_ok = matched == rows.len();
    println!();
    println!(
        "{} {matched} of {} requests got what the story expects.",
        if rows_ok { "✓" } else { "✗" },
        rows.len()
    );
    let note =
        "(reason: the first line of the denial's body; for the OTLP exporter, which reports \
                only the gRPC code, tenant-authz's log line for that request. cached: authz_cached \
                in the frontend's access log, from tenant-authz's dynamic metadata.)";
    report::wrap(note, "", "", 4)
        .iter()
        .for_each(|l| println!("{l}"));
    println!();
    println!("tenant-authz's /metrics (tenant_authz_*):");
    match stack.metrics().await {
        Ok(text) => report::metrics(&text).iter().for_each(|l| println!("{l}")),
        Err(e) => println!("  (unavailable: {e})"),
    }

    println!();
    let (lines, proof_ok) = report::tempo_proof(&rows, &stack.upstream.requests());
    lines.iter().for_each(|l| println!("{l}"));
    Ok((rows_ok && proof_ok, stack))
}

/// Copy-paste commands against the running stack.
fn keep_running(stack: &Stack) {
    let dir = stack.dir.path();
    let span = dir.join("span.pb");
    let _ = std::fs::write(&span, story::otlp_http_body());
    println!();
    println!("Everything keeps running; Ctrl-C stops it.");
    println!(
        "Demo files (configs, certificates, logs): {}",
        dir.display()
    );
    let pids: Vec<String> = stack
        .procs
        .pids()
        .iter()
        .map(|(name, pid)| format!("{name} {pid}"))
        .collect();
    println!("PIDs: {}", pids.join(", "));
    println!();

    // curl through a frontend, trusting only the demo's CA; prints the status after the body.
    let curl = |method: &str, token: Option<&str>, tenant: &str, body: Option<&Path>, url: &str| {
        let mut lines = vec![format!(
            "curl -sS -w ' -> %{{http_code}}\\n' --cacert {}{}",
            stack.ca_path.display(),
            if method == "GET" {
                String::new()
            } else {
                format!(" -X {method}")
            }
        )];
        let auth = token.map_or(String::new(), |t| {
            format!("-H 'Authorization: Bearer {t}' ")
        });
        lines.push(format!("    {auth}-H 'X-Scope-OrgID: {tenant}'"));
        if let Some(file) = body {
            lines.push(format!(
                "    -H 'Content-Type: application/x-protobuf' --data-binary @{}",
                file.display()
            ));
        }
        lines.push(format!("    '{url}'"));
        lines.join(" \\\n")
    };
    let search = format!("https://127.0.0.1:{}{}", stack.query_port, story::SEARCH);
    let overrides = format!("https://127.0.0.1:{}/api/overrides", stack.query_port);
    let traces = format!("https://127.0.0.1:{}/v1/traces", stack.otlp_http_port);
    let (g, c, sre, pg) = (
        Some(story::GRAFANA.value),
        Some(story::COLLECTOR.value),
        Some(story::SRE.value),
        Some(story::PAYMENTS_GRAFANA.value),
    );
    let cases = [
        (
            "showcase's Grafana searches showcase: 200",
            curl("GET", g, "showcase", None, &search),
        ),
        (
            "... and payments: 403, with the reason",
            curl("GET", g, "payments", None, &search),
        ),
        (
            "no token: 401",
            curl("GET", None, "showcase", None, &search),
        ),
        (
            "payments' Grafana (demo-payments-grafana-token) on showcase: 403",
            curl("GET", pg, "showcase", None, &search),
        ),
        (
            "the SRE across tenants: 200",
            curl("GET", sre, "showcase|payments", None, &search),
        ),
        (
            "changing overrides with a read token: 403",
            curl("PUT", g, "showcase", None, &overrides),
        ),
        (
            "OTLP/HTTP export of one span (protobuf) by showcase's collector: 200",
            curl("POST", c, "showcase", Some(&span), &traces),
        ),
        (
            "tenant-authz's decisions so far",
            format!(
                "curl -s http://127.0.0.1:{}/metrics | grep '^tenant_authz_checks_total'",
                stack.authz_admin_port
            ),
        ),
        (
            "what the frontends logged (JSON lines)",
            format!(
                "tail -f {} \\\n    {}",
                stack.query.access_log.display(),
                stack.ingest.access_log.display()
            ),
        ),
    ];
    for (what, cmd) in cases {
        println!("# {what}");
        println!("{cmd}");
    }
}

/// Resolves when a child exits on its own.
async fn wait_exit(stack: &mut Stack) -> String {
    loop {
        if let Some(gone) = stack.procs.exited() {
            return gone;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}
