//! `./scripts/bench --smoke`: the benchmark harness runs every part end to end with tiny sizes
//! on the debug build, so it cannot rot. Nothing here looks at a figure: these machines are
//! noisy and the smoke sizes are meaningless; it checks only that the run exits 0 and prints
//! each part's table.
//!
//! The script builds `tenant-authz` and the examples itself in the debug profile the tests use
//! (same features, nothing rebuilt), with the test process's CARGO_* variables removed.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::script;

/// Generous: on a fresh checkout the script may compile the examples first.
const TIMEOUT: Duration = Duration::from_secs(900);

#[test]
fn bench_smoke_runs_every_part() {
    let mut cmd = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench"));
    cmd.arg("--smoke");
    let run = script::run(cmd, TIMEOUT);
    let transcript = run.transcript();
    assert!(
        run.status.success(),
        "scripts/bench --smoke failed\n{transcript}"
    );
    let out = &run.stdout;

    for expected in [
        "machine: ",
        "== 1. Check, direct gRPC",
        "conc conns server        checks/s",
        "== 2. Through Envoy",
        "== 3. Cold path",
        "case                                      checks  allowed  TokenReviews",
        "== 4. Memory",
        "state                                         RSS MiB",
        "== 5. Allocations per cached Check",
        "step                                             allocs/Check",
        "== 6. Revocation by watches",
        "side                        TokenReviews  SARs  reviews/min",
        "== 7. Traces of tenant-authz itself",
        "sampled 1 %",
        "traces 1pct ",
        "== Summary: targets",
    ] {
        assert!(out.contains(expected), "no {expected:?}\n{transcript}");
    }
    // Part 2 needs wrk, which scripts/bench installs; without it the run says how to get it,
    // and this test fails rather than pass without part 2.
    assert!(
        out.contains("side                     requests/s"),
        "part 2 printed no table (wrk missing? `apt-get install -y wrk`)\n{transcript}"
    );
}
