//! What an answer from the Kubernetes API means, as pure functions of (HTTP status, body).
//!
//! Every answer is outside input: a proxy in front of the API, a webhook authenticator behind
//! it, or a broken or hostile server can send anything. So nothing here trusts a field it did
//! not check, and no text from the answer leaves this module unless it is bounded, free of
//! control characters and does not quote the token (see [`SafeText`]).
//!
//! The rules follow the API reference (`k8s.io/api/authentication/v1` and
//! `authorization/v1` `types.go`) and the apiserver's own clients of the same answers, the
//! webhook token authenticator and the webhook authorizer
//! (`k8s.io/apiserver/plugin/pkg/{authenticator/token,authorizer}/webhook`), as recorded in
//! `tests/data/kubernetes-answers.md`:
//!
//! | answer | the apiserver's webhook client | tenant-authz |
//! |---|---|---|
//! | HTTP status other than 200/201 (3xx included) | error | 503, the API's message scrubbed |
//! | not JSON, wrong `kind`/`apiVersion`, no `status` | error | 503 |
//! | TokenReview `authenticated: true`, audiences requested, `status.audiences` ∩ requested = ∅ | not authenticated | 401 naming the audiences expected |
//! | TokenReview `authenticated: true`, empty user name | (builds an empty user) | 503: not an identity |
//! | TokenReview user bigger than [`MAX_USER_BYTES`] or quoting the token | - | 503 |
//! | SAR `allowed` and `denied` both true | deny, with an error | 503: contradictory, not cached |
//! | SAR `denied: true` | deny | 403 |
//! | SAR `allowed: true` | allow | allow (an `evaluationError` beside it is logged only) |
//! | SAR neither | no opinion | 403, with `evaluationError` as the reason if any |

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::model::{BearerToken, Identity};
use crate::review::{Authentication, ReviewError, ReviewKind, Verdict};

/// Largest answer body read from the API; a bigger one is refused before it is parsed. Real
/// TokenReview and SAR answers are well under 8 KiB (the TokenReview echoes the token).
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;
/// Largest user (name, uid, groups, extra, in bytes) accepted from a TokenReview. It is kept
/// in the identity cache, so this bounds that cache's memory: a ServiceAccount's user is
/// about 400 bytes.
pub const MAX_USER_BYTES: usize = 16 * 1024;
/// Most groups, and most `extra` keys, accepted in one TokenReview user.
pub const MAX_USER_ITEMS: usize = 256;
/// Longest text from an answer (an error message, a reason) shown to a client or logged.
pub const MAX_TEXT_CHARS: usize = 300;

const WITHHELD: &str = "(withheld: it quoted the credential)";

/// Text from an API answer, made safe to show and log: bounded to [`MAX_TEXT_CHARS`], control
/// characters replaced, and withheld whole if it quotes the token (or any 12-byte piece of it;
/// checked before truncation, so a cut cannot hide a quote).
pub struct SafeText;

impl SafeText {
    pub fn from(text: &str, token: Option<&BearerToken>) -> String {
        if token.is_some_and(|t| t.is_quoted_in(text)) {
            return WITHHELD.to_string();
        }
        let mut out = String::with_capacity(text.len().min(MAX_TEXT_CHARS + 3));
        for (i, c) in text.trim().chars().enumerate() {
            if i == MAX_TEXT_CHARS {
                out.push('…');
                break;
            }
            out.push(if c.is_control() { ' ' } else { c });
        }
        out
    }

    fn optional(text: Option<String>, token: Option<&BearerToken>) -> Option<String> {
        text.map(|t| Self::from(&t, token))
            .filter(|t| !t.is_empty())
    }
}

/// The error for a non-success HTTP status: the message of a `metav1.Status` body, or the
/// start of any other body, scrubbed.
pub fn api_error(
    kind: ReviewKind,
    status: u16,
    body: &[u8],
    token: Option<&BearerToken>,
) -> ReviewError {
    #[derive(Deserialize)]
    struct Status {
        kind: Option<String>,
        message: Option<String>,
    }
    let text = String::from_utf8_lossy(body);
    let message = match serde_json::from_str::<Status>(&text) {
        Ok(Status {
            kind: Some(k),
            message: Some(m),
        }) if k == "Status" => SafeText::from(&m, token),
        _ if (300..400).contains(&status) => "a redirect (not followed)".to_string(),
        _ if text.trim().is_empty() => "(empty body)".to_string(),
        _ => SafeText::from(&text, token),
    };
    let message = if status == 403 {
        format!(
            "{message} (does tenant-authz's ClusterRole allow create on {}?)",
            match kind {
                ReviewKind::Authenticate => "tokenreviews",
                ReviewKind::Authorize => "subjectaccessreviews",
            }
        )
    } else {
        message
    };
    ReviewError::Api {
        kind,
        code: status,
        message,
    }
}

fn invalid(kind: ReviewKind, message: impl Into<String>) -> ReviewError {
    ReviewError::InvalidResponse {
        kind,
        message: message.into(),
    }
}

/// `kind` and `apiVersion` must name what was asked for (the API server always sends both): a
/// proxy that answers with another object (a `Status` with HTTP 200, a list, `{}`) is not
/// answering the review.
fn check_type(
    kind: ReviewKind,
    found_kind: Option<&str>,
    found_version: Option<&str>,
    want: (&str, &str),
    token: Option<&BearerToken>,
) -> Result<(), ReviewError> {
    let (want_kind, want_version) = want;
    if found_kind != Some(want_kind) || found_version != Some(want_version) {
        return Err(invalid(
            kind,
            format!(
                "expected a {want_version} {want_kind}, got {} {}",
                SafeText::from(found_version.unwrap_or("(no apiVersion)"), token),
                SafeText::from(found_kind.unwrap_or("(no kind)"), token),
            ),
        ));
    }
    Ok(())
}

fn parse<'a, T: Deserialize<'a>>(
    kind: ReviewKind,
    body: &'a [u8],
    what: &str,
    token: Option<&BearerToken>,
) -> Result<T, ReviewError> {
    if body.len() > MAX_ANSWER_BYTES {
        return Err(invalid(
            kind,
            format!("the answer is over {MAX_ANSWER_BYTES} bytes"),
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        // serde's message can quote a piece of the input: scrub it like any API text.
        invalid(
            kind,
            format!("not a {what}: {}", SafeText::from(&e.to_string(), token)),
        )
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenReviewAnswer {
    kind: Option<String>,
    api_version: Option<String>,
    status: Option<TokenReviewStatus>,
}

#[derive(Deserialize)]
struct TokenReviewStatus {
    #[serde(default)]
    authenticated: bool,
    user: Option<UserInfo>,
    audiences: Option<Vec<String>>,
    error: Option<String>,
}

#[derive(Deserialize, Default)]
struct UserInfo {
    username: Option<String>,
    uid: Option<String>,
    groups: Option<Vec<String>>,
    extra: Option<BTreeMap<String, Vec<String>>>,
}

/// What a TokenReview answer says about `token`, asked with `audiences` (`spec.audiences`).
pub fn token_review_answer(
    status: u16,
    body: &[u8],
    token: &BearerToken,
    audiences: &[String],
) -> Result<Authentication, ReviewError> {
    let kind = ReviewKind::Authenticate;
    if !matches!(status, 200 | 201) {
        return Err(api_error(kind, status, body, Some(token)));
    }
    let answer: TokenReviewAnswer = parse(kind, body, "TokenReview", Some(token))?;
    check_type(
        kind,
        answer.kind.as_deref(),
        answer.api_version.as_deref(),
        ("TokenReview", "authentication.k8s.io/v1"),
        Some(token),
    )?;
    let status = answer
        .status
        .ok_or_else(|| invalid(kind, "the TokenReview answer has no status"))?;
    if !status.authenticated {
        return Ok(Authentication::Unauthenticated {
            detail: SafeText::optional(status.error, Some(token)),
        });
    }
    // The API reference: a client that sets spec.audiences "should validate that a
    // compatible audience identifier is returned in the status.audiences field"; the
    // apiserver's webhook authenticator treats an empty intersection as not authenticated.
    let answered = status.audiences.unwrap_or_default();
    if !audiences.is_empty() && !answered.iter().any(|a| audiences.contains(a)) {
        return Ok(Authentication::Unauthenticated {
            detail: Some(format!(
                "the token is not valid for any audience tenant-authz accepts ({}); \
                 use a token issued for one of them",
                audiences.join(", ")
            )),
        });
    }
    let identity = identity(status.user.unwrap_or_default(), token)?;
    Ok(Authentication::Authenticated {
        identity,
        audiences: answered
            .into_iter()
            .filter(|a| audiences.contains(a))
            .collect(),
    })
}

/// The user of an authenticated TokenReview, checked: a name, bounded size, no control
/// characters (it reaches log lines and 403 messages), and no quote of the token.
fn identity(user: UserInfo, token: &BearerToken) -> Result<Identity, ReviewError> {
    let kind = ReviewKind::Authenticate;
    let identity = Identity {
        username: user.username.unwrap_or_default(),
        uid: user.uid.unwrap_or_default(),
        groups: user.groups.unwrap_or_default(),
        extra: user.extra.unwrap_or_default(),
    };
    if identity.username.trim().is_empty() {
        return Err(invalid(
            kind,
            "authenticated: true without a user name is not an identity",
        ));
    }
    // The name reaches log lines and 403 bodies: no invisible or direction-changing characters
    // that could make one name look like another or forge a line.
    if identity.username.chars().any(is_invisible) {
        return Err(invalid(
            kind,
            "the user name has invisible or bidirectional-control characters",
        ));
    }
    if identity.groups.len() > MAX_USER_ITEMS || identity.extra.len() > MAX_USER_ITEMS {
        return Err(invalid(
            kind,
            format!("the user has more than {MAX_USER_ITEMS} groups or extra keys"),
        ));
    }
    let texts = || {
        [&identity.username, &identity.uid]
            .into_iter()
            .chain(&identity.groups)
            .chain(
                identity
                    .extra
                    .iter()
                    .flat_map(|(k, v)| std::iter::once(k).chain(v)),
            )
    };
    let bytes: usize = texts().map(|s| s.len() + 8).sum();
    if bytes > MAX_USER_BYTES {
        return Err(invalid(
            kind,
            format!("the user is over {MAX_USER_BYTES} bytes ({bytes})"),
        ));
    }
    if texts().any(|s| s.chars().any(char::is_control)) {
        return Err(invalid(
            kind,
            "the user name, a group or an extra value has control characters",
        ));
    }
    // Only the name leaves the server (403 bodies, log lines, metadata); uid, groups and
    // extra go back to the API server alone, in SARs (`explain` prints them, but withholds
    // any that quotes the token: `explain::render`). So only the name must not quote the
    // token: a JWT cannot contain it in clear (its claims are base64url), and a name an API
    // copied from the token would put a piece of it in every log line.
    if token.is_quoted_in(&identity.username) {
        return Err(invalid(kind, "the user name quotes the credential"));
    }
    Ok(identity)
}

/// Unicode format characters that render as nothing or reorder text (zero-width spaces and
/// joiners, bidirectional marks, embeddings, overrides and isolates, the BOM).
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{2069}' | '\u{FEFF}' | '\u{00AD}' | '\u{061C}' | '\u{180E}')
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SarAnswer {
    kind: Option<String>,
    api_version: Option<String>,
    status: Option<SarStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SarStatus {
    // `allowed` is required in the API (no omitempty); `denied` is omitempty.
    allowed: bool,
    #[serde(default)]
    denied: bool,
    reason: Option<String>,
    evaluation_error: Option<String>,
}

/// What a SubjectAccessReview answer decides.
pub fn sar_answer(status: u16, body: &[u8]) -> Result<Verdict, ReviewError> {
    sar_answer_with_notes(status, body).map(|(decision, _)| decision)
}

/// The API's own words beside a SubjectAccessReview decision, scrubbed like every text from
/// an answer (for `tenant-authz explain`, which shows them even for an allow).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SarNotes {
    pub reason: Option<String>,
    pub evaluation_error: Option<String>,
}

/// [`sar_answer`], with the answer's `reason` and `evaluationError`: the same checks, the
/// same decision.
pub fn sar_answer_with_notes(status: u16, body: &[u8]) -> Result<(Verdict, SarNotes), ReviewError> {
    let kind = ReviewKind::Authorize;
    if !matches!(status, 200 | 201) {
        return Err(api_error(kind, status, body, None));
    }
    let answer: SarAnswer = parse(kind, body, "SubjectAccessReview", None)?;
    check_type(
        kind,
        answer.kind.as_deref(),
        answer.api_version.as_deref(),
        ("SubjectAccessReview", "authorization.k8s.io/v1"),
        None,
    )?;
    let status = answer
        .status
        .ok_or_else(|| invalid(kind, "the SubjectAccessReview answer has no status"))?;
    let reason = SafeText::optional(status.reason, None);
    let evaluation_error = SafeText::optional(status.evaluation_error, None);
    let notes = SarNotes {
        reason: reason.clone(),
        evaluation_error: evaluation_error.clone(),
    };
    let decision = match (status.allowed, status.denied) {
        // "Denied may not be true if Allowed is true": an answer that says both is broken.
        // Never an allow; not a 403 either (it would blame RBAC): cannot decide.
        (true, true) => {
            return Err(invalid(
                kind,
                "allowed and denied are both true (the API reference forbids it)",
            ))
        }
        (true, false) => {
            if let Some(e) = &evaluation_error {
                // RBAC found a rule that allows despite an error elsewhere: the allow stands.
                tracing::debug!(evaluation_error = %e, "SubjectAccessReview allowed with an evaluation error");
            }
            Verdict::Allowed
        }
        // Denied, or no opinion. The RBAC authorizer reports a RoleBinding to a missing Role
        // as an evaluationError with allowed false: a real "not allowed" that retrying will
        // not change, so it is a 403 that carries the error, not a 503.
        (false, _) => {
            let detail = [
                reason,
                evaluation_error.map(|e| format!("evaluation error: {e}")),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("; ");
            Verdict::Denied {
                detail: (!detail.is_empty()).then_some(detail),
            }
        }
    };
    Ok((decision, notes))
}

#[cfg(test)]
#[path = "answer_tests.rs"]
mod tests;
