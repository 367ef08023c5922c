//! The benchmark (`./scripts/bench [--smoke] [--json FILE]`): tenant-authz against a null
//! ext_authz measured in the same run, ratios printed, targets reported, nothing asserted.
//!
//! 1. Check over gRPC, directly: `null_authz` vs `tenant-authz` (static backend, warm cache),
//!    both as processes, one Rust load generator; RPS, latency, server CPU per Check.
//! 2. Through Envoy: the shipped `envoy/query-frontend.yaml` in front of each, `wrk` as client.
//! 3. Cold path against the fake Kubernetes API: coalescing, in-flight limit, added latency.
//! 4. Memory: RSS after 100 000 cached allows and after a flood of 1 000 000 unknown tokens.
//! 5. Allocations per cached Check (a counting global allocator, in a child process).
//! 6. Revocation by watches (issue 11): revocation latency, the watches' cost on cached
//!    Checks (on vs `--watch-rbac false`), API load with long TTLs + watches vs short TTLs.
//! 7. Traces of tenant-authz itself: cached Checks with traces off vs sampled at 100 % and 1 %,
//!    exporting to an OTLP receiver in this process.
//!
//! ```text
//! target/release/examples/bench [--smoke] [--json FILE] [--parts 1,2,3,4,5,6,7]
//!     [--authz-bin PATH] [--null-bin PATH] [--envoy PATH] [--wrk PATH] [--keep-dir]
//!     [--levels 1,16,64,256] [--measure SECONDS]
//! ```
//! Every process it starts is killed by PID and waited for when it ends.

#[allow(dead_code, unused_imports)]
#[path = "../tests/support/envoy.rs"]
mod envoy;
#[allow(dead_code, unused_imports)]
#[path = "../tests/support/fake_kube/mod.rs"]
mod fake_kube;
#[allow(dead_code, unused_imports)]
#[path = "../tests/support/otlp.rs"]
mod otlp;
#[allow(dead_code, unused_imports)]
#[path = "../tests/support/tls.rs"]
mod tls;
#[allow(dead_code, unused_imports)]
#[path = "../tests/support/upstream.rs"]
mod upstream;

#[path = "bench/alloc.rs"]
mod alloc;
#[path = "bench/callgrind.rs"]
mod callgrind;
#[path = "bench/cold.rs"]
mod cold;
#[path = "bench/common.rs"]
mod common;
#[path = "bench/direct.rs"]
mod direct;
#[path = "bench/loadgen.rs"]
mod loadgen;
#[path = "bench/memory.rs"]
mod memory;
#[path = "bench/revocation.rs"]
mod revocation;
#[path = "bench/through_envoy.rs"]
mod through_envoy;
#[path = "bench/traces.rs"]
mod traces;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use common::{machine, mib, Report, Settings};

const USAGE: &str =
    "usage: bench [--smoke] [--json FILE] [--parts 1,2,3,4,5,6,7] [--authz-bin PATH]
             [--null-bin PATH] [--envoy PATH] [--wrk PATH] [--keep-dir]
             [--levels 1,16,64,256] [--measure SECONDS]
  --smoke      tiny sizes on whatever build this is (the test suite's mode), < 60 s
  --json FILE  also write every figure as JSON
  --parts      run only these parts (default: all)
  --authz-bin  tenant-authz binary (default: ../tenant-authz next to this example)
  --null-bin   null ext_authz binary (default: null_authz next to this example)
  --envoy      Envoy 1.40 (default: $ENVOY_BIN, then .cache/envoy-1.40.0/envoy/_bin/envoy)
  --wrk        wrk (default: wrk on PATH)
  --keep-dir   keep the temp dir (configs, logs) after the run
  --levels     part 1's concurrency levels (default 1,16,64,256; smoke 1,16)
  --measure S  part 1's measured seconds per run (default 5), e.g. longer for a profile";

struct Args {
    smoke: bool,
    json: Option<PathBuf>,
    parts: Vec<u8>,
    authz_bin: Option<PathBuf>,
    null_bin: Option<PathBuf>,
    envoy: Option<PathBuf>,
    wrk: Option<PathBuf>,
    keep_dir: bool,
    levels: Option<Vec<usize>>,
    measure: Option<f64>,
}

fn parse_args(args: Vec<String>) -> Result<Args, String> {
    let mut a = Args {
        smoke: false,
        json: None,
        parts: vec![1, 2, 3, 4, 5, 6, 7],
        authz_bin: None,
        null_bin: None,
        envoy: None,
        wrk: None,
        keep_dir: false,
        levels: None,
        measure: None,
    };
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--smoke" => a.smoke = true,
            "--keep-dir" => a.keep_dir = true,
            "--json" => a.json = Some(value("--json")?.into()),
            "--authz-bin" => a.authz_bin = Some(value("--authz-bin")?.into()),
            "--null-bin" => a.null_bin = Some(value("--null-bin")?.into()),
            "--envoy" => a.envoy = Some(value("--envoy")?.into()),
            "--wrk" => a.wrk = Some(value("--wrk")?.into()),
            "--levels" => {
                a.levels = Some(
                    value("--levels")?
                        .split(',')
                        .map(|p| p.trim().parse().map_err(|e| format!("--levels: {e}")))
                        .collect::<Result<_, _>>()?,
                );
            }
            "--measure" => {
                a.measure = Some(
                    value("--measure")?
                        .parse()
                        .map_err(|e| format!("--measure: {e}"))?,
                );
            }
            "--parts" => {
                a.parts = value("--parts")?
                    .split(',')
                    .map(|p| p.trim().parse::<u8>().map_err(|e| format!("--parts: {e}")))
                    .collect::<Result<_, _>>()?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(a)
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The allocation counter's child (part 5): nothing else runs in that process.
    if args.first().map(String::as_str) == Some("alloc") {
        let n = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(10_000);
        return match alloc::child(n) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench alloc: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let args = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::from(2);
        }
    };
    // The load generator's runtime: tokio's default multi-thread runtime, like the servers.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // On SIGTERM / SIGINT the benchmark future is dropped: every child process is killed by
    // PID and waited for, and the temp dir removed.
    rt.block_on(async {
        tokio::select! {
            code = bench(args) => code,
            () = interrupted() => {
                eprintln!("bench: interrupted; stopping what it started");
                ExitCode::from(130)
            }
        }
    })
}

async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

async fn bench(args: Args) -> ExitCode {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let dir = match tempfile::Builder::new()
        .prefix("tenant-authz-bench-")
        .tempdir()
    {
        Ok(d) => d,
        Err(e) => {
            eprintln!("bench: temp dir: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut settings = Settings::new(
        args.smoke,
        args.authz_bin
            .unwrap_or_else(|| exe_dir.join("../tenant-authz")),
        args.null_bin.unwrap_or_else(|| exe_dir.join("null_authz")),
        dir.path().to_path_buf(),
    );
    settings.envoy_bin = args
        .envoy
        .or_else(|| std::env::var_os("ENVOY_BIN").map(PathBuf::from))
        .or_else(|| {
            Some(Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/envoy-1.40.0/envoy/_bin/envoy"))
        })
        .filter(|p| p.is_file());
    if let Some(levels) = args.levels {
        settings.levels = levels;
    }
    if let Some(secs) = args.measure {
        settings.measure = std::time::Duration::from_secs_f64(secs);
    }
    settings.wrk_bin = args.wrk.or_else(|| on_path("wrk")).filter(|p| p.is_file());
    for (what, bin) in [
        ("tenant-authz", &settings.authz_bin),
        ("null_authz", &settings.null_bin),
    ] {
        if !bin.is_file() {
            eprintln!(
                "bench: {what} not found at {}: build it first (./scripts/bench does)",
                bin.display()
            );
            return ExitCode::FAILURE;
        }
    }

    let m = machine();
    let started = Instant::now();
    println!("tenant-authz benchmark: ratios to a null ext_authz measured in the same run");
    if args.smoke {
        println!("SMOKE MODE: tiny sizes on a debug build; the figures mean nothing.");
    }
    println!(
        "machine: {} cores ({}), {:.1} GiB RAM; load average at start {}",
        m.cores,
        m.model,
        mib(m.mem_total_kib) / 1024.0,
        m.loadavg
    );
    println!(
        "  the load generators run on the same {} cores as the servers (and take ~1 of them):",
        m.cores
    );
    println!("  RPS ratios are flattened by that; server CPU per Check is the sharper comparison.");
    let show = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    println!(
        "binaries ({} build of the bench): {}",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        show(&settings.authz_bin).display()
    );
    println!("  and {}", show(&settings.null_bin).display());

    let mut report = Report::default();
    report.json.insert(
        "machine".into(),
        serde_json::json!({"cores": m.cores, "cpu": m.model, "mem_total_kib": m.mem_total_kib,
                           "loadavg_at_start": m.loadavg, "smoke": args.smoke}),
    );
    let mut failures = Vec::new();
    let want = |p: u8| args.parts.contains(&p);

    if want(1) || want(2) {
        match direct::start(&settings).await {
            Ok(servers) => {
                if want(1) {
                    header("1. Check, direct gRPC: null ext_authz vs tenant-authz (cached)");
                    if let Err(e) = direct::run(&settings, &servers, &mut report).await {
                        println!("  FAILED: {e}");
                        failures.push(format!("part 1: {e}"));
                    }
                }
                if want(2) {
                    header("2. Through Envoy: Envoy + null ext_authz vs Envoy + tenant-authz");
                    if let Err(e) = through_envoy::run(&settings, &servers, &mut report).await {
                        println!("  FAILED: {e}");
                        failures.push(format!("part 2: {e}"));
                    }
                }
            }
            Err(e) => {
                println!("  FAILED to start the servers of parts 1 and 2: {e}");
                failures.push(format!("parts 1-2: {e}"));
            }
        }
    }
    if want(3) {
        header("3. Cold path: fake Kubernetes API");
        if let Err(e) = cold::run(&settings, &mut report).await {
            println!("  FAILED: {e}");
            failures.push(format!("part 3: {e}"));
        }
    }
    if want(4) {
        header("4. Memory: cached allows, then a flood of unknown tokens");
        if let Err(e) = memory::run(&settings, &mut report).await {
            println!("  FAILED: {e}");
            failures.push(format!("part 4: {e}"));
        }
    }
    if want(5) {
        header("5. Allocations per cached Check");
        if let Err(e) = alloc::run(&settings, &mut report) {
            println!("  FAILED: {e}");
            failures.push(format!("part 5: {e}"));
        }
    }
    if want(6) {
        header("6. Revocation by watches: latency, cost on cached Checks, API load");
        if let Err(e) = revocation::run(&settings, &mut report).await {
            println!("  FAILED: {e}");
            failures.push(format!("part 6: {e}"));
        }
    }

    if want(7) {
        header(
            "7. Traces of tenant-authz itself: cached Checks, traces off vs sampled 100 % and 1 %",
        );
        if let Err(e) = traces::run(&settings, &mut report).await {
            println!("  FAILED: {e}");
            failures.push(format!("part 7: {e}"));
        }
    }

    header("Summary: targets (✓ met, ✗ not met)");
    for t in &report.targets {
        println!(
            "  {} {}. {}: {} (target {})",
            if t.met { "✓" } else { "✗" },
            t.part,
            t.what,
            t.measured,
            t.bound
        );
    }
    let met = report.targets.iter().filter(|t| t.met).count();
    println!(
        "  {met} of {} targets met; took {:.0} s; load average at the end {}.",
        report.targets.len(),
        started.elapsed().as_secs_f64(),
        machine().loadavg
    );
    for n in &report.notes {
        println!("  note: {n}");
    }
    for f in &failures {
        println!("  FAILED {f}");
    }

    if let Some(path) = &args.json {
        let targets: Vec<_> = report
            .targets
            .iter()
            .map(|t| {
                serde_json::json!({"part": t.part, "what": t.what, "measured": t.measured,
                                   "target": t.bound, "met": t.met})
            })
            .collect();
        report
            .json
            .insert("targets".into(), serde_json::Value::Array(targets));
        let text = serde_json::to_string_pretty(&report.json).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("bench: write {}: {e}", path.display());
            failures.push(format!("--json: {e}"));
        } else {
            println!("  figures written to {}", path.display());
        }
    }
    if args.keep_dir {
        let kept = dir.keep();
        println!("  temp dir kept: {}", kept.display());
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn header(title: &str) {
    println!();
    println!("== {title} ==");
}
