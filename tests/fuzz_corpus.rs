//! The fuzz targets' checks (fuzz/checks/) over the checked-in corpus, the regressions and the
//! seeds, on every `cargo test`: cheap (no fuzz build), and the targets cannot rot.
//!
//! `FUZZ_WRITE_SEEDS=1 cargo test --test fuzz_corpus` also writes the seeds into
//! `fuzz/corpus/<target>/seed-<name>`. Running the fuzzers themselves: `./scripts/fuzz`.

#[allow(dead_code)]
#[path = "../fuzz/checks/mod.rs"]
mod checks;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Every file of `fuzz/<kind>/<target>/`, sorted; none if the directory does not exist.
fn files(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = root().join(kind).join(target);
    let mut out: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .map(|e| e.expect("readable corpus directory").path())
            .filter(|p| p.is_file())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("{}: {e}", dir.display()),
    };
    out.sort();
    out
}

/// Runs every corpus file, regression and seed of `target` through `check`; names every input
/// that fails, then fails.
fn replay(target: &str, check: fn(&[u8])) {
    let mut inputs: Vec<(String, Vec<u8>)> = Vec::new();
    let write = std::env::var_os("FUZZ_WRITE_SEEDS").is_some();
    for (t, name, bytes) in checks::seeds() {
        if t != target {
            continue;
        }
        if write {
            let dir = root().join("corpus").join(target);
            std::fs::create_dir_all(&dir).expect("corpus directory");
            std::fs::write(dir.join(format!("seed-{name}")), &bytes).expect("seed written");
        }
        inputs.push((format!("seed {name}"), bytes));
    }
    let corpus = files("corpus", target);
    assert!(
        corpus.len() >= 3,
        "fuzz/corpus/{target} has {} files: the checked-in corpus is missing",
        corpus.len()
    );
    for path in corpus.iter().chain(files("regressions", target).iter()) {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        inputs.push((path.display().to_string(), bytes));
    }
    let failed: Vec<&str> = inputs
        .iter()
        .filter(|(_, bytes)| catch_unwind(AssertUnwindSafe(|| check(bytes))).is_err())
        .map(|(name, _)| name.as_str())
        .collect();
    assert!(
        failed.is_empty(),
        "{target}: {} of {} inputs break an invariant (reproduce with \
         `./scripts/fuzz --repro {target} <file>`): {failed:#?}",
        failed.len(),
        inputs.len()
    );
}

#[test]
fn check_request_corpus_holds_its_invariants() {
    replay("check_request", checks::check_request);
}

#[test]
fn jwt_exp_corpus_holds_its_invariants() {
    replay("jwt_exp", checks::jwt_exp);
}

#[test]
fn static_backend_corpus_holds_its_invariants() {
    replay("static_backend", checks::static_backend);
}

#[test]
fn config_corpus_holds_its_invariants() {
    replay("config", checks::config);
}

#[test]
fn token_review_answer_corpus_holds_its_invariants() {
    replay("token_review_answer", checks::token_review_answer);
}

#[test]
fn sar_answer_corpus_holds_its_invariants() {
    replay("sar_answer", checks::sar_answer);
}
