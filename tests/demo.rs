//! `./scripts/demo`, as a platform engineer runs it, non-interactively: it exits 0, prints the
//! table with every row as expected and the proof of what Tempo received, fits in 100
//! columns, and leaves nothing running (its ports are free, no process mentions its files).
//!
//! The script builds `tenant-authz` and the `demo` example itself (debug profile, the tests'
//! features, so nothing is rebuilt twice) and installs Envoy 1.40 unless `ENVOY_BIN` is set.

mod support;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::script::{self, Run};

/// Generous: on a fresh checkout the script compiles the example first.
const TIMEOUT: Duration = Duration::from_secs(900);

/// Runs `scripts/demo args` with stdin closed and `TMPDIR=tmp` (so its temp dir is known).
fn run_demo(args: &[&str], ci: bool, tmp: &Path) -> Run {
    let mut cmd = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo"));
    cmd.args(args).env("TMPDIR", tmp);
    if ci {
        cmd.env("CI", "true");
    } else {
        cmd.env_remove("CI");
    }
    script::run(cmd, TIMEOUT)
}

/// Every `127.0.0.1:<port>` the demo printed before its table.
fn printed_ports(stdout: &str) -> Vec<u16> {
    let before_table = stdout.split("  request  ").next().unwrap_or("");
    before_table
        .split("127.0.0.1:")
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

/// PIDs of processes whose command line contains `needle`.
fn processes_mentioning(needle: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        // Not Linux: ask pgrep.
        let out = Command::new("pgrep")
            .args(["-fl", needle])
            .output()
            .expect("pgrep");
        return String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (pid, cmd) = l.split_once(' ')?;
                Some((pid.parse().ok()?, cmd.to_string()))
            })
            .collect();
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push((pid, cmdline));
        }
    }
    found
}

/// Nothing the demo started is left: no process mentions its temp dir (the Envoys' configs)
/// or tenant-authz's address, every port it printed can be bound again, and the temp dir is gone.
fn assert_nothing_left(run: &Run, tmp: &Path) {
    let ports = printed_ports(&run.stdout);
    assert!(
        ports.len() >= 6,
        "ports printed: {ports:?}\n{}",
        run.transcript()
    );
    let mut leftovers = processes_mentioning(&tmp.display().to_string());
    leftovers.extend(processes_mentioning(&format!("127.0.0.1:{}", ports[0])));
    assert!(
        leftovers.is_empty(),
        "processes left running: {leftovers:#?}\n{}",
        run.transcript()
    );
    for port in &ports {
        TcpListener::bind(("127.0.0.1", *port)).unwrap_or_else(|e| {
            panic!(
                "port {port} printed by the demo is still taken after it exited: {e}\n{}",
                run.transcript()
            )
        });
    }
    let left: Vec<_> = std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "temp files left: {left:?}");
}

#[test]
fn demo_runs_the_story_and_cleans_up() {
    // One test, two runs in sequence: both prefer the same ports.
    let tmp = tempfile::tempdir().expect("temp dir");

    // CI=true, stdin closed.
    let run = run_demo(&[], true, tmp.path());
    assert!(run.status.success(), "{}", run.transcript());
    let lines: Vec<&str> = run.stdout.lines().collect();
    let header = lines
        .iter()
        .position(|l| {
            l.trim_start().starts_with("#  request")
                && ["token", "X-Scope-OrgID", "expected", "got", "cached"]
                    .iter()
                    .all(|c| l.contains(c))
        })
        .unwrap_or_else(|| panic!("no table header\n{}", run.transcript()));
    // Rows: "<mark> <n>  <request> ...", one per request of the story.
    let rows: Vec<&str> = lines[header + 1..]
        .iter()
        .copied()
        .take_while(|l| !l.is_empty())
        .filter(|l| {
            let mut words = l.split_whitespace();
            matches!(words.next(), Some("✓" | "✗"))
                && words.next().is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .collect();
    assert_eq!(rows.len(), 11, "rows: {rows:#?}\n{}", run.transcript());
    for (i, row) in rows.iter().enumerate() {
        let n = (i + 1).to_string();
        assert!(
            row.starts_with('✓') && row.split_whitespace().nth(1) == Some(n.as_str()),
            "row {n} not marked as matching: {row}\n{}",
            run.transcript()
        );
    }
    for needle in [
        "✓ 11 of 11 requests got what the story expects.",
        "✓ stand-in Tempo received 5 requests (the 5 allowed rows): none with an authorization header",
        "x-scope-orgid: showcase, showcase, showcase|payments, showcase, showcase",
        "PERMISSION_DENIED  PERMISSION_DENIED",
        "checks_total         11: 5 allow",
        "Stopped (killed by PID and reaped): envoy ingest-frontend, envoy query-frontend, tenant-authz.",
    ] {
        assert!(
            run.stdout.contains(needle),
            "missing {needle:?}\n{}",
            run.transcript()
        );
    }
    assert!(!run.stdout.contains('✗'), "{}", run.transcript());
    for line in &lines {
        assert!(
            line.chars().count() <= 100,
            "line wider than 100 columns ({}): {line}",
            line.chars().count()
        );
    }
    assert_nothing_left(&run, tmp.path());

    // --keep-running with stdin not a terminal: it does not wait, and still cleans up.
    let run = run_demo(&["--keep-running"], false, tmp.path());
    assert!(run.status.success(), "{}", run.transcript());
    assert!(
        run.stdout
            .contains("--keep-running ignored: stdin is not a terminal or CI=true."),
        "{}",
        run.transcript()
    );
    assert_nothing_left(&run, tmp.path());
}
