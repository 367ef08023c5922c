//! Realistic, deterministic service-account tokens for the end-to-end tests.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::json;

/// splitmix64: deterministic pseudo-random bytes for realistic-looking tokens.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    fn uuid(&mut self) -> String {
        let b = self.bytes(16);
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!(
            "{}-{}-4{}-a{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[13..16],
            &hex[17..20],
            &hex[20..32]
        )
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Mints JWT-shaped projected service-account tokens (never verified by anyone: the fake API
/// server only knows them by value).
pub struct Minter(Rng);

impl Minter {
    pub fn new(seed: u64) -> Minter {
        Minter(Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x5ca1_ab1e))
    }

    /// A ~1 KB RS256-looking token for `system:serviceaccount:<ns>:<name>`.
    pub fn token(&mut self, ns: &str, name: &str) -> String {
        self.token_with_signature(ns, name, 256)
    }

    pub fn token_with_signature(&mut self, ns: &str, name: &str, sig_bytes: usize) -> String {
        let rng = &mut self.0;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = json!({ "alg": "RS256", "kid": b64url(&rng.bytes(32)) });
        let pod_suffix = format!("{:x}", rng.next_u64() & 0xff_ffff_ffff);
        let payload = json!({
            "aud": ["https://kubernetes.default.svc.cluster.local"],
            "exp": now + 3600,
            "iat": now,
            "iss": "https://kubernetes.default.svc.cluster.local",
            "jti": rng.uuid(),
            "kubernetes.io": {
                "namespace": ns,
                "node": { "name": "kind-worker", "uid": rng.uuid() },
                "pod": { "name": format!("{name}-{pod_suffix}"), "uid": rng.uuid() },
                "serviceaccount": { "name": name, "uid": rng.uuid() },
                "warnafter": now + 3000,
            },
            "nbf": now,
            "sub": format!("system:serviceaccount:{ns}:{name}"),
        });
        let sig = rng.bytes(sig_bytes);
        format!(
            "{}.{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(payload.to_string().as_bytes()),
            b64url(&sig)
        )
    }
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}
