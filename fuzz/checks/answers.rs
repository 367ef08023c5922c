//! token_review_answer and sar_answer: what the Kubernetes API (or whatever answers in its
//! place) sends back.

use tenant_authz::model::BearerToken;
use tenant_authz::review::kube;
use tenant_authz::review::{Authentication, ReviewError, Verdict};

use super::{quotes, Input};

const STATUSES: &[u16] = &[
    200, 201, 400, 401, 403, 404, 409, 429, 500, 503, 301, 302, 204, 0,
];
const AUDIENCES: &[&str] = &["tempo", "https://kubernetes.default.svc", "vault"];

fn status(input: &mut Input) -> u16 {
    let b = input.byte();
    match STATUSES.get(usize::from(b)) {
        Some(s) => *s,
        None => u16::from_le_bytes([b, input.byte()]),
    }
}

/// A token whose every 12-byte piece holds a '~', a character no fixed message of
/// tenant-authz contains: if a message quotes a piece of it, the piece came from the answer.
fn marked_token(input: &mut Input) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";
    let raw = input.bytes();
    let mut token = String::from("~");
    for chunk in raw.chunks(6) {
        token.extend(
            chunk
                .iter()
                .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()])),
        );
        token.push('~');
    }
    if token.len() == 1 {
        token.push_str("eyJhbGciOiJSUzI1NiJ9~");
    }
    token
}

/// Text that leaves the answer functions: no control characters (log lines), bounded, and
/// (when there is a token) no piece of the token.
fn check_text(what: &str, text: &str, token: Option<&str>) {
    assert!(
        !text.chars().any(char::is_control),
        "{what} has control characters: {text:?}"
    );
    assert!(
        text.chars().count() <= 2_000,
        "{what} is unbounded: {} chars",
        text.len()
    );
    if let Some(token) = token {
        assert!(
            !quotes(text, token),
            "{what} quotes the token {token:?}: {text:?}"
        );
    }
}

fn check_error(e: &ReviewError, token: Option<&str>) {
    check_text("the error", &e.to_string(), token);
}

/// The fields of an answer that decide, each as plain JSON: read the way the answer functions
/// read a body (unknown fields skipped unparsed, so a number out of f64's range or invalid
/// UTF-8 in a field nobody reads does not make the answer unreadable).
#[derive(serde::Deserialize, serde::Serialize)]
struct Answer<S> {
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<serde_json::Value>,
    #[serde(rename = "apiVersion", skip_serializing_if = "Option::is_none")]
    api_version: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<S>,
}

#[derive(serde::Deserialize, serde::Serialize)]
struct SarStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    denied: Option<serde_json::Value>,
}

#[derive(serde::Deserialize, serde::Serialize)]
struct TokenReviewStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    authenticated: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<User>,
    #[serde(skip_serializing_if = "Option::is_none")]
    audiences: Option<serde_json::Value>,
}

#[derive(serde::Deserialize, serde::Serialize)]
struct User {
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<serde_json::Value>,
}

fn json<S: serde::de::DeserializeOwned + serde::Serialize>(
    body: &[u8],
) -> Option<serde_json::Value> {
    let answer: Answer<S> = serde_json::from_slice(body).ok()?;
    serde_json::to_value(answer).ok()
}

fn body_with_token(input: &mut Input, token: &str) -> Vec<u8> {
    let splice = input.byte() & 1 == 1;
    let body = input.rest();
    if !splice {
        return body.to_vec();
    }
    // Seeds spell the token as TOKEN, so they can echo it without knowing it.
    String::from_utf8_lossy(body)
        .replace("TOKEN", token)
        .into_bytes()
}

pub fn token_review_answer(data: &[u8]) {
    let mut input = Input::new(data);
    let code = status(&mut input);
    let token = marked_token(&mut input);
    let mut audiences: Vec<String> = Vec::new();
    for _ in 0..input.byte() % 4 {
        let a = input.pick(AUDIENCES).replace('~', "");
        // Audiences come from the operator's config, not from outside: only plausible ones.
        if !a.trim().is_empty() && !a.chars().any(char::is_control) {
            audiences.push(a);
        }
    }
    let body = body_with_token(&mut input, &token);
    let secret = BearerToken::from_secret(token.clone());
    // The fast is_quoted_in agrees with the definition.
    let body_text = String::from_utf8_lossy(&body);
    assert_eq!(secret.is_quoted_in(&body_text), quotes(&body_text, &token));
    match kube::token_review_answer(code, &body, &secret, &audiences) {
        Ok(Authentication::Authenticated {
            identity,
            audiences: accepted,
        }) => {
            assert!(matches!(code, 200 | 201), "authenticated by HTTP {code}");
            let v = json::<TokenReviewStatus>(&body).expect("authenticated, so the body is JSON");
            let status = &v["status"];
            assert_eq!(status["authenticated"], serde_json::Value::Bool(true));
            assert!(!identity.username.is_empty(), "an identity without a name");
            assert_eq!(
                status["user"]["username"].as_str(),
                Some(identity.username.as_str())
            );
            for (k, want) in [
                ("kind", "TokenReview"),
                ("apiVersion", "authentication.k8s.io/v1"),
            ] {
                assert!(v[k].is_null() || v[k] == want, "{k} {:?}", v[k]);
            }
            if !audiences.is_empty() {
                let answered: Vec<&str> = status["audiences"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
                    .unwrap_or_default();
                assert!(
                    answered.iter().any(|a| audiences.iter().any(|r| r == a)),
                    "authenticated for {answered:?}, asked for {audiences:?}"
                );
                assert!(!accepted.is_empty());
            }
            assert!(accepted.iter().all(|a| audiences.contains(a)));
            assert!(identity.groups.len() <= 256 && identity.extra.len() <= 256);
            let texts = [&identity.username, &identity.uid]
                .into_iter()
                .chain(&identity.groups)
                .chain(
                    identity
                        .extra
                        .iter()
                        .flat_map(|(k, v)| std::iter::once(k).chain(v)),
                );
            // What decides the identity TTL and the revocation scopes comes only from the
            // ServiceAccount authenticator's own shapes.
            let revocable = kube::revocable(&identity);
            if revocable.by_account {
                let rest = identity.username.strip_prefix("system:serviceaccount:");
                let parts: Vec<&str> = rest.map(|r| r.split(':').collect()).unwrap_or_default();
                assert!(
                    parts.len() == 2 && parts.iter().all(|p| !p.is_empty()),
                    "revocable by a ServiceAccount watch: {:?}",
                    identity.username
                );
            }
            if let Some(uid) = revocable.bound_to {
                assert!(!uid.is_empty());
                assert_eq!(
                    identity.extra.get(kube::POD_UID_EXTRA).map(Vec::as_slice),
                    Some(&[uid.to_string()][..])
                );
            }
            // Only the name leaves tenant-authz (403 bodies, logs): it must not quote the
            // token; uid, groups and extra only go back to the API server, in SARs.
            check_text("the user name", &identity.username, Some(&token));
            for t in texts {
                check_text("the identity", t, None);
            }
        }
        Ok(Authentication::Unauthenticated { detail }) => {
            assert!(matches!(code, 200 | 201), "an answer from HTTP {code}");
            if let Some(d) = detail {
                check_text("the detail", &d, Some(&token));
            }
        }
        Err(e) => check_error(&e, Some(&token)),
    }
}

pub fn sar_answer(data: &[u8]) {
    let mut input = Input::new(data);
    let code = status(&mut input);
    let body = input.rest();
    match kube::sar_answer(code, body) {
        Ok(Verdict::Allowed) => {
            assert!(matches!(code, 200 | 201), "allowed by HTTP {code}");
            let v = json::<SarStatus>(body).expect("allowed, so the body is JSON");
            let status = &v["status"];
            assert_eq!(status["allowed"], serde_json::Value::Bool(true), "{v}");
            assert_ne!(
                status["denied"],
                serde_json::Value::Bool(true),
                "allowed although denied: {v}"
            );
            for (k, want) in [
                ("kind", "SubjectAccessReview"),
                ("apiVersion", "authorization.k8s.io/v1"),
            ] {
                assert!(v[k].is_null() || v[k] == want, "{k} {:?}", v[k]);
            }
        }
        Ok(Verdict::Denied { detail }) => {
            assert!(matches!(code, 200 | 201), "an answer from HTTP {code}");
            if let Some(d) = detail {
                check_text("the detail", &d, None);
            }
        }
        Err(e) => check_error(&e, None),
    }
}
