//! Part 5: heap allocations per cached Check, in-process, with the counting global allocator
//! of bench.rs. Runs in a child process (`bench alloc N`) so that no other thread of the
//! benchmark allocates while it counts; the parent prints the table.

use std::alloc::{GlobalAlloc, Layout, System};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::ext_authz::v3::pb::{Authorization, CheckRequest};
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use tenant_authz::authorizer::{Authorizer, AuthorizerSettings};
use tenant_authz::config::{ActionConfig, CacheConfig, Config, LogFormat};
use tenant_authz::ext_authz::{CheckService, RequestParser};
use tenant_authz::metrics::Metrics;
use tenant_authz::model::Action;
use tenant_authz::review::memory::MemoryReviewer;

use crate::common::{check_request, jwt, tempo_paths, Report, Result, Rng, Settings};

/// Wraps the system allocator; counts only while `ON`, so it costs one relaxed load
/// elsewhere (the load generator of the other parts).
pub struct Counting;

#[global_allocator]
static GLOBAL: Counting = Counting;

static ON: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

fn count(size: usize) {
    if ON.load(Ordering::Relaxed) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(size as u64, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to `System`; counting has no effect on memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

/// Allocations, bytes and wall time of `n` calls of `f`, counted from the first to the last.
struct Counted {
    allocs: f64,
    bytes: f64,
    ns: f64,
}

fn counted(n: usize, started: Instant) -> Counted {
    let elapsed = started.elapsed();
    ON.store(false, Ordering::SeqCst);
    let allocs = ALLOCS.swap(0, Ordering::SeqCst);
    let bytes = BYTES.swap(0, Ordering::SeqCst);
    Counted {
        allocs: allocs as f64 / n as f64,
        bytes: bytes as f64 / n as f64,
        ns: elapsed.as_nanos() as f64 / n as f64,
    }
}

fn start_counting() -> Instant {
    ALLOCS.store(0, Ordering::SeqCst);
    BYTES.store(0, Ordering::SeqCst);
    ON.store(true, Ordering::SeqCst);
    Instant::now()
}

/// The child: counts and prints one JSON line.
pub fn child(n: usize) -> std::result::Result<(), String> {
    // tenant-authz's own log set-up (info, text): cached allows log at debug, so nothing is
    // written, but the filter is consulted as in the server.
    tenant_authz::telemetry::init(LogFormat::Text);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let token = jwt("showcase", "grafana", 5);
        let reviewer = MemoryReviewer::new();
        reviewer.add_token(&token, "system:serviceaccount:showcase:grafana");
        reviewer.grant(
            "system:serviceaccount:showcase:grafana",
            "showcase",
            Action::Read,
        );
        let defaults = Config::default();
        let mut registry = Registry::with_prefix("tenant_authz");
        let metrics = Arc::new(Metrics::register(&mut registry));
        let authorizer = Arc::new(Authorizer::new(
            reviewer,
            AuthorizerSettings {
                cache: CacheConfig::default(),
                decision_timeout: Duration::from_millis(1500),
                max_concurrent_reviews: defaults.kubernetes.max_concurrent_reviews,
                max_reviews_per_check: 4,
            },
            metrics.clone(),
        ));
        let parser = RequestParser::new(
            defaults.tenant_header.clone(),
            defaults.max_token_bytes,
            ActionConfig::default(),
        );
        let service = CheckService::new(authorizer, parser, metrics, &defaults.tenant_header);
        let mut rng = Rng::new(5);
        let path = tempo_paths(&mut rng)[0].clone();
        let req: CheckRequest = check_request(&token, "showcase", &path, &mut rng);

        // Warm: the first Check reviews and caches; then a few cached ones.
        for _ in 0..100 {
            let resp = service.decide(&req).await;
            if resp.status.as_ref().map_or(0, |s| s.code) != 0 {
                return Err("the warm-up Check was denied".to_string());
            }
        }

        // decide(): parse, cache lookups, metrics, response.
        let started = start_counting();
        for _ in 0..n {
            let resp = service.decide(&req).await;
            drop(std::hint::black_box(resp));
        }
        let decide = counted(n, started);

        // The tonic handler: span with the request id, decide, Response. The requests are
        // built before counting; only `check` (and dropping its answer) is counted.
        let requests: Vec<_> = (0..n).map(|_| tonic::Request::new(req.clone())).collect();
        let started = start_counting();
        for r in requests {
            let resp = service.check(r).await;
            drop(std::hint::black_box(resp));
        }
        let check = counted(n, started);

        // What tonic does before the handler: prost decode of the same request.
        let bytes = prost::Message::encode_to_vec(&req);
        let started = start_counting();
        for _ in 0..n {
            let decoded: CheckRequest =
                prost::Message::decode(bytes.as_slice()).map_err(|e| e.to_string())?;
            drop(std::hint::black_box(decoded));
        }
        let decode = counted(n, started);

        // And after it: encoding the answer.
        let resp = service.decide(&req).await;
        let mut buf = Vec::with_capacity(4096);
        let started = start_counting();
        for _ in 0..n {
            buf.clear();
            prost::Message::encode(&resp, &mut buf).map_err(|e| e.to_string())?;
            std::hint::black_box(&buf);
        }
        let encode = counted(n, started);

        let row = |c: &Counted| json!({"allocs": c.allocs, "bytes": c.bytes, "ns": c.ns});
        println!(
            "{}",
            json!({
                "checks": n,
                "request_bytes": bytes.len(),
                "response_bytes": prost::Message::encoded_len(&resp),
                "decide": row(&decide),
                "check": row(&check),
                "decode": row(&decode),
                "encode": row(&encode),
            })
        );
        Ok(())
    })
}

/// The parent: runs the child, prints the table.
pub fn run(settings: &Settings, report: &mut Report) -> Result<()> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = Command::new(exe)
        .args(["alloc", &settings.alloc_checks.to_string()])
        .env("RUST_LOG", "info")
        .output()
        .map_err(|e| format!("run the allocation child: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "allocation child failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| format!("no JSON from the allocation child: {stdout}"))?;
    let f = |k: &str, m: &str| v[k][m].as_f64().unwrap_or(f64::NAN);
    println!(
        "  in-process: CheckService over MemoryReviewer, warm cache, {} cached Checks, one \
         thread;",
        v["checks"]
    );
    println!(
        "  request {} B encoded (1.1 KiB JWT, 13 headers), response {} B.",
        v["request_bytes"], v["response_bytes"]
    );
    println!();
    println!(
        "  step                                             allocs/Check  bytes/Check  ns/Check"
    );
    let row = |what: &str, k: &str| {
        println!(
            "  {what:<48} {:>12.1} {:>12.0} {:>9.0}",
            f(k, "allocs"),
            f(k, "bytes"),
            f(k, "ns")
        );
    };
    row("prost decode of the CheckRequest (tonic)", "decode");
    row("CheckService::decide (parse, caches, response)", "decide");
    row("Authorization::check (handler + decide)", "check");
    row("prost encode of the CheckResponse (tonic)", "encode");
    let total_allocs = f("decode", "allocs") + f("check", "allocs") + f("encode", "allocs");
    let total_bytes = f("decode", "bytes") + f("check", "bytes") + f("encode", "bytes");
    println!(
        "  {:<48} {:>12.1} {:>12.0}",
        "total: decode + check + encode", total_allocs, total_bytes
    );
    report.notes.push(format!(
        "part 5: {:.1} allocs ({:.0} B) per cached decide(); {:.1} ({:.0} B) with the \
         handler and prost",
        f("decide", "allocs"),
        f("decide", "bytes"),
        total_allocs,
        total_bytes
    ));
    report.json.insert("part5_allocations".into(), v);
    Ok(())
}
