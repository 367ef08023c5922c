//! Fuzz target `jwt_exp`: the invariants live in ../checks/, shared with tests/fuzz_corpus.rs.
#![no_main]

#[allow(dead_code, unused_imports)]
#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::jwt_exp(data));
