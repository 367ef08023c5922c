//! Part 7: what tenant-authz's own traces cost on the cached path. Three tenant-authz on part
//! 1's static config and workload: traces off (the default), on with every Check sampled, and
//! on at 1 % (the default ratio), both exporting over OTLP/gRPC to a receiver in this process.
//! The Checks carry no `traceparent`, so the ratio decides (with Envoy's, the parent's flag
//! would, at the same cost per Check).
//!
//! a) Wall clock: throughput and CPU per Check at concurrency 64, sides rotated.
//! b) Instructions per cached Check (callgrind, every server thread, one Check at a time):
//!    the same three sides in counts that do not drift with this shared machine's load.

use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use serde_json::json;

use crate::callgrind;
use crate::common::{clk_tck, median, Authz, Report, Result, Settings};
use crate::direct;
use crate::loadgen::{self, connections_for, Run};
use crate::otlp::OtlpReceiver;

struct Side {
    name: &'static str,
    authz: Authz,
    clients: Vec<loadgen::Client>,
    runs: Vec<Run>,
}

pub async fn run(settings: &Settings, report: &mut Report) -> Result<()> {
    let tck = clk_tck();
    let receiver = OtlpReceiver::start().await;
    let endpoint = receiver.endpoint();
    // Part 1's identities, grants and 64 requests (its own tenant-authz stays idle).
    let servers = direct::start(settings).await?;
    let config = settings.dir.join("bench-static.yaml").display().to_string();
    let base = ["--config", config.as_str()];
    let with = |extra: &[&'static str]| -> Vec<String> {
        base.iter()
            .map(|s| s.to_string())
            .chain(["--traces-endpoint".to_string(), endpoint.clone()])
            .chain(extra.iter().map(|s| s.to_string()))
            .collect()
    };
    let on_all = with(&["--traces-sampling-ratio", "1"]);
    let on_1pct = with(&["--traces-sampling-ratio", "0.01"]);
    fn args(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }

    let c = if settings.levels.contains(&64) {
        64
    } else {
        *settings.levels.iter().max().unwrap_or(&16)
    };
    let conns = connections_for(c);
    let mut sides = Vec::new();
    for (name, side_args) in [
        ("traces off", base.to_vec()),
        ("sampled 100 %", args(&on_all)),
        ("sampled 1 %", args(&on_1pct)),
    ] {
        let authz = Authz::start(settings, &name.replace([' ', '%'], "-"), &side_args).await?;
        let clients = loadgen::connect(authz.grpc, conns).await?;
        sides.push(Side {
            name,
            authz,
            clients,
            runs: Vec::new(),
        });
    }
    let rounds = if settings.smoke { settings.rounds } else { 6 };
    println!(
        "  three tenant-authz (static backend, part 1's 64 requests, warm caches): traces off,"
    );
    println!(
        "  on with every Check sampled, on at 1 % (no traceparent: the ratio decides), the last"
    );
    println!(
        "  two exporting over OTLP/gRPC (batches) to a receiver in this process. Concurrency {c}"
    );
    println!(
        "  over {conns} connections; {rounds} rounds, the order rotated each round, {:.1} s measured",
        settings.measure.as_secs_f64()
    );
    println!(
        "  after {:.1} s warm-up; medians.",
        settings.warmup.as_secs_f64()
    );
    let requests = servers.requests.clone();
    let spans0 = receiver.spans().len();
    let started = Instant::now();
    for round in 0..rounds {
        for k in 0..sides.len() {
            let i = (k + round) % sides.len();
            let side = &sides[i];
            let run = loadgen::measure(
                settings,
                &side.clients,
                c,
                side.authz.proc.pid,
                &requests,
                tck,
            )
            .await
            .map_err(|e| format!("{}: {e}", side.name))?;
            sides[i].runs.push(run);
        }
    }
    // Let the last batches arrive (the batch processor exports every 5 s).
    tokio::time::sleep(std::time::Duration::from_secs(if settings.smoke {
        1
    } else {
        6
    }))
    .await;
    let spans = receiver.spans().len() - spans0;
    let elapsed = started.elapsed().as_secs_f64();

    let m = |runs: &[Run], f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
    let figures: Vec<(f64, f64, f64)> = sides
        .iter()
        .map(|s| {
            (
                m(&s.runs, |r| r.rps),
                m(&s.runs, |r| r.p99),
                m(&s.runs, |r| r.cpu_us),
            )
        })
        .collect();
    let (off_rps, off_p99, off_cpu) = figures[0];
    println!();
    println!("     side                 checks/s   p99 µs  CPU µs/chk   vs off: checks/s  CPU/chk");
    for (side, (rps, p99, cpu)) in sides.iter().zip(&figures) {
        println!(
            "     {:<18} {rps:>10.0} {p99:>8.0} {cpu:>11.1}            {:>6.3}×  {:>6.3}×",
            side.name,
            rps / off_rps,
            cpu / off_cpu
        );
    }
    println!(
        "     spans received: {spans} in {elapsed:.0} s (the 100 % side exports a span per Check)"
    );
    let (all_rps, _, all_cpu) = figures[1];
    let (pct_rps, _, pct_cpu) = figures[2];
    report.target(
        7,
        &format!("traces sampled at 1 % vs off: CPU/Check, concurrency {c}"),
        format!(
            "{:.3}× ({pct_cpu:.1} vs {off_cpu:.1} µs)",
            pct_cpu / off_cpu
        ),
        "≤ 1.10×",
        pct_cpu / off_cpu <= 1.10,
    );
    report.target(
        7,
        &format!("traces sampled at 1 % vs off: throughput, concurrency {c}"),
        format!(
            "{:.3}× ({pct_rps:.0} vs {off_rps:.0} checks/s)",
            pct_rps / off_rps
        ),
        "≥ 0.90×",
        pct_rps / off_rps >= 0.90,
    );
    report.notes.push(format!(
        "part 7: every Check traced (100 %) costs {:.2}× the CPU per Check of traces off ({all_cpu:.1} vs {off_cpu:.1} µs), {:.2}× the throughput",
        all_cpu / off_cpu,
        all_rps / off_rps
    ));
    let fig = |(rps, p99, cpu): (f64, f64, f64)| {
        json!({"rps": rps, "p99_us": p99, "server_cpu_us_per_check": cpu,
               "ratio_to_off": {"rps": rps / off_rps, "p99": p99 / off_p99, "cpu": cpu / off_cpu}})
    };
    report.json.insert(
        "part7_traces_cost".into(),
        json!({"concurrency": c, "connections": conns, "rounds": rounds,
               "off": fig(figures[0]), "sampled_100": fig(figures[1]), "sampled_1": fig(figures[2]),
               "spans_received": spans}),
    );
    drop(sides);

    let sides = [
        ("off", base.to_vec()),
        ("1pct", args(&on_1pct)),
        ("100pct", args(&on_all)),
    ];
    instructions(settings, report, &sides, &requests).await
}

/// b) Instructions per cached Check for each side: per Check = (I(2n) − I(n)) / n.
async fn instructions(
    settings: &Settings,
    report: &mut Report,
    sides: &[(&str, Vec<&str>)],
    requests: &Arc<Vec<CheckRequest>>,
) -> Result<()> {
    callgrind::require_valgrind()?;
    let n: u64 = if settings.smoke { 100 } else { 10_000 };
    println!();
    println!("  b) instructions per cached Check (callgrind, every server thread), one Check at a");
    println!(
        "     time; runs of {n} and {} Checks, per Check = (I(2n) − I(n)) / n.",
        2 * n
    );
    let mut per = Vec::new();
    for (side, args) in sides {
        let mut counts = [0u64; 2];
        for (k, checks) in [n, 2 * n].into_iter().enumerate() {
            let name = format!("tenant-authz-traces-callgrind-{side}-{checks}");
            let mut run = callgrind::Run::start(settings, &name, args).await?;
            run.checks(requests, checks, |_| {}).await?;
            counts[k] = run.finish().await?;
        }
        let p = callgrind::per_check(counts[0], counts[1], n);
        per.push(p);
        println!(
            "     traces {side:<7} I({n}) {:>14}  I({}) {:>14}  per Check {p:>9.0}  vs off {:.3}×",
            counts[0],
            2 * n,
            counts[1],
            p / per[0]
        );
    }
    let (off, pct, all) = (per[0], per[1], per[2]);
    report.target(
        7,
        "traces sampled at 1 % vs off: instructions per cached Check (callgrind)",
        format!("{:.3}× ({pct:.0} vs {off:.0})", pct / off),
        "≤ 1.05×",
        pct / off <= 1.05,
    );
    report.notes.push(format!(
        "part 7 b: every Check traced costs {:.2}× the instructions of traces off ({all:.0} vs {off:.0} per cached Check)",
        all / off
    ));
    report.json.insert(
        "part7_traces_instructions".into(),
        json!({"checks": [n, 2 * n],
               "per_check": {"off": off, "sampled_1": pct, "sampled_100": all},
               "ratio_to_off": {"sampled_1": pct / off, "sampled_100": all / off}}),
    );
    Ok(())
}
