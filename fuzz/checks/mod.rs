//! The invariants of every fuzz target, in one place. Compiled twice: by each fuzz target
//! (`fuzz_targets/*.rs`, under libFuzzer) and by `tests/fuzz_corpus.rs`, which replays the
//! checked-in corpus and regressions through the same checks on every `cargo test`.
//!
//! Each `pub fn <target>(data: &[u8])` panics when an invariant breaks; a panic inside
//! tenant-authz is a finding too. Structured targets read their input with [`Input`], a
//! length-prefixed byte reader (no `arbitrary`, so the main crate needs no extra dependency);
//! [`Seed`] writes the same format for the seed corpus ([`seeds`]).

mod answers;
mod config_file;
mod jwt;
mod request;
mod seeds;
mod static_file;

pub use answers::{sar_answer, token_review_answer};
pub use config_file::config;
pub use jwt::jwt_exp;
pub use request::check_request;
pub use seeds::seeds;
pub use static_file::static_backend;

// Input: the structured targets' byte format.

/// Reads a fuzzer's bytes as a structure. Past the end every read is zero/empty, so every
/// input is valid.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u64(&mut self) -> u64 {
        let mut v = [0u8; 8];
        for b in &mut v {
            *b = self.byte();
        }
        u64::from_le_bytes(v)
    }

    /// An index below `n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        let v = (usize::from(self.byte()) << 8) | usize::from(self.byte());
        v % n.max(1)
    }

    /// Length-prefixed bytes: one length byte, or 255 then a little-endian u16.
    pub fn bytes(&mut self) -> &'a [u8] {
        let len = match self.byte() {
            255 => usize::from(u16::from_le_bytes([self.byte(), self.byte()])),
            n => usize::from(n),
        };
        let (head, rest) = self.data.split_at(len.min(self.data.len()));
        self.data = rest;
        head
    }

    pub fn string(&mut self) -> String {
        String::from_utf8_lossy(self.bytes()).into_owned()
    }

    /// One of `known` (by index), or any string when the index is past the list.
    fn pick(&mut self, known: &[&str]) -> String {
        match known.get(usize::from(self.byte())) {
            Some(s) => s.to_string(),
            None => self.string(),
        }
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// Writes what [`Input`] reads, for seeds.
#[derive(Default)]
pub struct Seed(pub Vec<u8>);

impl Seed {
    pub fn byte(mut self, b: u8) -> Self {
        self.0.push(b);
        self
    }

    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn bytes(mut self, b: &[u8]) -> Self {
        if b.len() < 255 {
            self.0.push(b.len() as u8);
        } else {
            let len = u16::try_from(b.len()).expect("seed values are below 64 KiB");
            self.0.push(255);
            self.0.extend_from_slice(&len.to_le_bytes());
        }
        self.0.extend_from_slice(b);
        self
    }

    pub fn string(self, s: &str) -> Self {
        self.bytes(s.as_bytes())
    }

    /// A string that [`Input::pick`] reads as itself (index past every list).
    pub fn pick_any(self, s: &str) -> Self {
        self.byte(200).string(s)
    }
}

/// `is_quoted_in` as its doc says, the slow way: the whole token, or any 12-byte piece of it.
pub fn quotes(text: &str, token: &str) -> bool {
    if token.is_empty() {
        return false;
    }
    if token.len() < 12 {
        return text.contains(token);
    }
    let token = token.as_bytes();
    // Each piece searched for on its own (str::contains is linear), not the set of the text's
    // pieces that BearerToken::is_quoted_in builds: a different way to the same answer.
    token
        .windows(12)
        .any(|piece| match std::str::from_utf8(piece) {
            Ok(piece) => text.contains(piece),
            Err(_) => text.as_bytes().windows(12).any(|w| w == piece),
        })
}
