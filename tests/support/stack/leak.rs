//! The token-leak scanner: full token, 12-char prefix / suffix and every 12-char window.

use std::collections::HashMap;

/// The window of the leak scan: no 12-character piece of a token may show up anywhere.
pub const WINDOW: usize = 12;

/// Every place a token must never show up: `(source name, text)`. Findings name the source,
/// the token index and what matched, never the token.
pub fn scan_for_tokens(tokens: &[(String, String)], sources: &[(String, String)]) -> Vec<String> {
    // Every 12-byte window of every token -> (token index, offset).
    let mut windows: HashMap<&[u8], Vec<(usize, usize)>> = HashMap::new();
    for (i, (_, token)) in tokens.iter().enumerate() {
        assert!(token.len() >= 2 * WINDOW, "token #{i} too short to scan");
        for (off, w) in token.as_bytes().windows(WINDOW).enumerate() {
            windows.entry(w).or_default().push((i, off));
        }
    }
    let mut findings = Vec::new();
    for (source, text) in sources {
        for (i, (label, token)) in tokens.iter().enumerate() {
            let prefix = &token[..WINDOW];
            let suffix = &token[token.len() - WINDOW..];
            if text.contains(token.as_str()) {
                findings.push(format!("{source}: token #{i} ({label}) appears in full"));
            }
            if text.contains(prefix) {
                findings.push(format!(
                    "{source}: token #{i} ({label}) 12-char prefix appears"
                ));
            }
            if text.contains(suffix) {
                findings.push(format!(
                    "{source}: token #{i} ({label}) 12-char suffix appears"
                ));
            }
        }
        // Any other 12-byte piece (first hit per token is enough).
        let mut seen = vec![false; tokens.len()];
        for (text_off, w) in text.as_bytes().windows(WINDOW).enumerate() {
            if let Some(hits) = windows.get(w) {
                for &(i, off) in hits {
                    if !seen[i] {
                        seen[i] = true;
                        findings.push(format!(
                            "{source}: a 12-char piece of token #{i} ({}) at token offset {off} \
                             appears at byte {text_off}",
                            tokens[i].0
                        ));
                    }
                }
            }
        }
    }
    findings
}
