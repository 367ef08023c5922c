//! Instructions per cached Check, counted by `valgrind --tool=callgrind` over every server
//! thread (parts 6 b2 and 7 b): counts that do not drift with this shared machine's load.
//!
//! One run: start tenant-authz under callgrind, ask every request once (warm-up), then
//! `checks` cached Checks one at a time, SIGTERM, and read callgrind's `summary`. Two run
//! lengths per side give per Check = (I(2n) − I(n)) / n, so start-up, sync, warm-up and
//! shutdown cancel out.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;

use crate::common::{Authz, Result, Settings};
use crate::loadgen;

/// Fails naming the fix when valgrind is missing.
pub fn require_valgrind() -> Result<()> {
    match std::process::Command::new("valgrind")
        .arg("--version")
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        _ => Err(
            "valgrind not found: install it (apt-get install valgrind; ./scripts/bench does)"
                .into(),
        ),
    }
}

/// A tenant-authz running under callgrind.
pub struct Run {
    pub authz: Authz,
    out: PathBuf,
}

impl Run {
    /// Starts `tenant-authz args` under callgrind as `name` and waits for `/readyz`.
    pub async fn start(settings: &Settings, name: &str, args: &[&str]) -> Result<Run> {
        let out = settings.dir.join(format!("{name}.callgrind"));
        let wrapper = [
            "valgrind".to_string(),
            "--tool=callgrind".to_string(),
            format!("--callgrind-out-file={}", out.display()),
        ];
        let authz =
            Authz::start_under(settings, name, &wrapper, args, Duration::from_secs(300)).await?;
        Ok(Run { authz, out })
    }

    /// Asks each of `requests` once, then `checks` Checks one at a time, cycling through
    /// them; `before(i)` runs before Check `i`. Every answer must be an allow.
    pub async fn checks(
        &mut self,
        requests: &Arc<Vec<CheckRequest>>,
        checks: u64,
        mut before: impl FnMut(u64),
    ) -> Result<()> {
        let name = &self.authz.proc.name;
        let mut client = loadgen::connect(self.authz.grpc, 1).await?.remove(0);
        for req in requests.iter() {
            if code(&mut client, req.clone()).await? != 0 {
                return Err(format!("{name}: warm-up Check denied"));
            }
        }
        let mut denied = 0;
        for i in 0..checks {
            before(i);
            let req = requests[(i % requests.len() as u64) as usize].clone();
            if code(&mut client, req).await? != 0 {
                denied += 1;
            }
        }
        if denied > 0 {
            return Err(format!("{name}: {denied} cached Checks denied"));
        }
        Ok(())
    }

    /// SIGTERM, then the instructions callgrind counted over the whole run.
    pub async fn finish(mut self) -> Result<u64> {
        self.authz.proc.terminate(Duration::from_secs(120)).await?;
        let text = std::fs::read_to_string(&self.out)
            .map_err(|e| format!("{}: {e}", self.out.display()))?;
        text.lines()
            .find_map(|l| l.strip_prefix("summary:"))
            .or_else(|| text.lines().find_map(|l| l.strip_prefix("totals:")))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .ok_or_else(|| format!("{}: no summary line", self.out.display()))
    }
}

/// The CheckResponse's gRPC code: 0 allowed, 7 denied (403), 16 unauthenticated (401), ...
pub async fn code(client: &mut loadgen::Client, req: CheckRequest) -> Result<i32> {
    client
        .check(req)
        .await
        .map(|r| r.into_inner().status.map_or(0, |s| s.code))
        .map_err(|e| format!("Check: {e}"))
}

/// Per Check from the instruction counts of a run of `n` Checks and one of `2n`.
pub fn per_check(small: u64, large: u64, n: u64) -> f64 {
    large.saturating_sub(small) as f64 / n as f64
}
