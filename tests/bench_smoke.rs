//! `./scripts/bench --smoke`: the benchmark harness runs every part end to end with tiny sizes
//! on the debug build, so it cannot rot. Nothing here looks at a figure: these machines are
//! noisy and the smoke sizes are meaningless; it checks only that the run exits 0 and prints
//! each part's table.
//!
//! The script builds `tenant-authz` and the examples itself in the debug profile the tests use
//! (same features, nothing rebuilt), with the test process's CARGO_* variables removed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Generous: on a fresh checkout the script may compile the examples first.
const TIMEOUT: Duration = Duration::from_secs(900);

fn drain(mut from: impl std::io::Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = from.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

#[test]
fn bench_smoke_runs_every_part() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench");
    let mut child = Command::new(script)
        .arg("--smoke")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run scripts/bench --smoke");
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            // SIGTERM first: the benchmark then stops what it started.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            std::thread::sleep(Duration::from_secs(5));
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "scripts/bench --smoke did not finish within {TIMEOUT:?}\n--- stdout ---\n{}\n\
                 --- stderr ---\n{}",
                stdout.join().unwrap(),
                stderr.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (out, err) = (stdout.join().unwrap(), stderr.join().unwrap());
    let transcript = format!("exit: {status}\n--- stdout ---\n{out}\n--- stderr ---\n{err}");
    assert!(
        status.success(),
        "scripts/bench --smoke failed\n{transcript}"
    );

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
        "== Summary: targets",
    ] {
        assert!(out.contains(expected), "no {expected:?}\n{transcript}");
    }
    // Part 2 needs wrk: its table, or the line saying why it was skipped.
    assert!(
        out.contains("side                     requests/s")
            || out.contains("skipped in smoke mode: no wrk"),
        "part 2 printed neither its table nor why it was skipped\n{transcript}"
    );
}
