//! jwt_exp: the identity TTL read from a token's (unverified) `exp` claim.

use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;

use tenant_authz::authorizer::identity_ttl;
use tenant_authz::model::BearerToken;

use super::Input;

#[derive(serde::Deserialize)]
struct Claims {
    exp: Option<serde_json::Value>,
}

pub fn jwt_exp(data: &[u8]) {
    let mut input = Input::new(data);
    let configured = match input.byte() % 4 {
        0 => Duration::from_secs(120),
        1 => Duration::from_secs(u64::from(input.byte()) << 8 | u64::from(input.byte())),
        2 => Duration::new(input.u64(), (input.u64() % 1_000_000_000) as u32),
        _ => Duration::MAX,
    };
    let now_secs = match input.byte() % 3 {
        0 => 1_750_000_000 + input.u64() % 100_000_000,
        1 => input.u64() % (1 << 40),
        _ => input.u64(),
    };
    let Some(now) = UNIX_EPOCH.checked_add(Duration::from_secs(now_secs)) else {
        return;
    };
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let token = match input.byte() % 4 {
        0 => String::from_utf8_lossy(input.rest()).into_owned(),
        1 => {
            let header = input.string();
            let payload = input.bytes();
            let sig = input.string();
            format!("{header}.{}.{sig}", b64(payload))
        }
        _ => {
            let exp = String::from_utf8_lossy(input.rest()).into_owned();
            format!(
                "eyJhbGciOiJSUzI1NiJ9.{}.c2ln",
                b64(format!("{{\"exp\":{exp}}}").as_bytes())
            )
        }
    };
    let ttl = identity_ttl(configured, &BearerToken::from_secret(token.clone()), now);
    assert!(
        ttl <= configured,
        "{ttl:?} above the configured {configured:?}"
    );
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        assert_eq!(ttl, configured, "not a JWT, so the configured TTL");
        return;
    }
    // A plain integer `exp` within 2^40 s (35 000 years) has one right answer.
    let exp = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[1].trim_end_matches('='))
        .ok()
        .filter(|_| parts[1].len() <= 8 * 1024)
        .and_then(|b| serde_json::from_slice::<Claims>(&b).ok())
        .and_then(|c| c.exp)
        .and_then(|v| v.as_u64())
        .filter(|&e| e < 1 << 40);
    if let Some(exp) = exp {
        let left = (UNIX_EPOCH + Duration::from_secs(exp))
            .duration_since(now)
            .unwrap_or_default();
        assert_eq!(ttl, configured.min(left), "exp {exp}, now {now_secs}");
    }
}
