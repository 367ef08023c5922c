//! `tenant-authz explain`: why a token gets the answer it gets, step by step.
//!
//! It runs the server's own pieces, not a copy of them: the request parser
//! ([`crate::ext_authz::RequestParser`]: token checks, tenant header rules and limits, product
//! and route inference), then the configured [`Reviewer`]'s authenticate and authorize (for
//! Kubernetes, the same SubjectAccessReview body and every answer check of
//! [`crate::review::kube::answer`]). Unlike the server it asks every tenant, even after a
//! denial, so each one's answer is shown, one at a time, each review with the whole
//! `decision_timeout` (the server shares one deadline among a Check's reviews); and it uses no
//! cache, so it shows what the backend says now (a server may still answer from its cache for
//! up to `cache.allowed_ttl`).
//!
//! The token goes into the parser's `Authorization` header and to the backend, nowhere else:
//! no field of [`Report`] is built from it except the JWT expiry.

mod fix;
mod report;
mod route;
mod text;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::{Backend, Config};
use crate::ext_authz::RequestParser;
use crate::model::{Action, BearerToken, DenyReason, Identity, Product, Tenant};
use crate::review::kube::KubeReviewer;
use crate::review::static_::{GrantMatch, StaticReviewer};
use crate::review::{Authentication, ReviewError, Reviewer, Verdict};

pub use fix::{kubectl_fix, quote, static_fix, KitRole, SarShape, KIT_ROLES};
pub use report::{exit_code, IdentityReport, Report, RequestReport, RuleReport, TenantCheck};
use route::{check_request, request_report};
pub use text::render_text;

/// What [`render`] prints in place of a string or line that quotes the token.
pub const WITHHELD: &str = "[withheld: it quotes the credential]";

/// The report as printed, text or JSON, with every string (JSON) or line (text) that quotes
/// the token or a 12-byte piece of it withheld. The backend's answers are outside input: a
/// webhook authenticator may copy the credential into the uid, a group or an extra value,
/// which the server only sends back to the API server in SARs but `explain` prints.
pub fn render(report: &Report, json: bool, token: &BearerToken) -> String {
    if json {
        let mut value = serde_json::to_value(report).unwrap_or_default();
        withhold_json(&mut value, token);
        let mut out = serde_json::to_string_pretty(&value).unwrap_or_default();
        out.push('\n');
        out
    } else {
        let text = render_text(report);
        let mut out = String::with_capacity(text.len());
        for line in text.lines() {
            if token.is_quoted_in(line) {
                let indent = line.len() - line.trim_start().len();
                out.push_str(&line[..indent]);
                out.push_str(WITHHELD);
            } else {
                out.push_str(line);
            }
            out.push('\n');
        }
        out
    }
}

fn withhold_json(value: &mut serde_json::Value, token: &BearerToken) {
    use serde_json::Value;
    match value {
        Value::String(s) if token.is_quoted_in(s) => *s = WITHHELD.into(),
        Value::Array(items) => items.iter_mut().for_each(|v| withhold_json(v, token)),
        Value::Object(map) => {
            // Keys too: `extra` is a map whose keys come from the API.
            let quoted: Vec<String> = map
                .keys()
                .filter(|k| token.is_quoted_in(k))
                .cloned()
                .collect();
            for (i, key) in quoted.into_iter().enumerate() {
                if let Some(v) = map.remove(&key) {
                    map.insert(format!("{WITHHELD} {}", i + 1), v);
                }
            }
            map.values_mut().for_each(|v| withhold_json(v, token));
        }
        _ => {}
    }
}

/// What to explain: the tenant header's value and either an action or a request line.
#[derive(Clone, Debug)]
pub struct Question {
    /// The `X-Scope-OrgID` value, `a` or `a|b`, parsed by the server's rules.
    pub tenants: String,
    pub target: Target,
    /// The route's `product` context extension; `None`: `products.default`.
    pub product: Option<Product>,
}

#[derive(Clone, Debug)]
pub enum Target {
    /// As a route with `context_extensions: {action: ...}`.
    Action(Action),
    /// As a route without one: the action is inferred from the method and path.
    Route { method: String, path: String },
}

/// What can stop explain before it has an answer (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("no token: give a file with --token-file or the token on stdin")]
    NoToken,
    #[error("the token is not valid UTF-8")]
    TokenNotUtf8,
    #[error(transparent)]
    Setup(#[from] crate::Error),
}

/// The token from a file or stdin: one trailing newline (`\n` or `\r\n`) is ignored, as
/// `hash-token` does; anything else is the server's to judge.
pub fn token_from_input(input: Vec<u8>) -> Result<BearerToken, ExplainError> {
    let mut text = String::from_utf8(input).map_err(|_| ExplainError::TokenNotUtf8)?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.trim().is_empty() {
        return Err(ExplainError::NoToken);
    }
    Ok(BearerToken::from_secret(text))
}

/// The configured backend, built as the server builds it.
enum Engine {
    Static(Arc<StaticReviewer>),
    // Boxed: one is built per run, and the static variant need not be 256 bytes.
    Kubernetes(Box<KubeReviewer>),
}

impl Engine {
    async fn new(config: &Config) -> Result<Self, ExplainError> {
        Ok(match config.backend {
            Backend::Static => Engine::Static(Arc::new(StaticReviewer::new(&config.static_))),
            Backend::Kubernetes => {
                let backstop = config.decision_timeout + Duration::from_secs(1);
                let client = crate::review::kube::start::client(config, backstop).await?;
                Engine::Kubernetes(Box::new(
                    KubeReviewer::new(
                        client,
                        config.kubernetes.audiences.clone(),
                        config.authorization.clone(),
                    )
                    .with_products(&config.products),
                ))
            }
        })
    }

    async fn authenticate(&self, token: &BearerToken) -> Result<Authentication, ReviewError> {
        match self {
            Engine::Static(r) => r.authenticate(token).await,
            Engine::Kubernetes(r) => r.authenticate(token).await,
        }
    }

    /// A review's failure in the backend's own terms.
    fn describe(&self, e: &ReviewError) -> String {
        match self {
            Engine::Static(r) => e.describe(r),
            Engine::Kubernetes(r) => e.describe(r.as_ref()),
        }
    }

    fn remedy(&self, tenant: &Tenant, product: Product, action: Action) -> String {
        match self {
            Engine::Static(r) => r.remedy(tenant, product, action),
            Engine::Kubernetes(r) => r.remedy(tenant, product, action),
        }
    }
}

fn identity_report(
    identity: &Identity,
    audiences: Vec<String>,
    token: &BearerToken,
) -> IdentityReport {
    let now = SystemTime::now();
    // The server's own reading of `exp`: it caps the identity TTL to it. Unbounded here, so
    // `Duration::MAX` means no readable `exp`.
    let left = crate::authorizer::identity_ttl(Duration::MAX, token, now);
    let (expires, expires_in_seconds) = if left == Duration::MAX {
        (None, None)
    } else {
        // `now + left` is `exp` itself: `left` was computed from this `now`.
        let at = now
            .checked_add(left)
            .map(|t| humantime::format_rfc3339_seconds(t).to_string());
        (at, Some(left.as_secs()))
    };
    IdentityReport {
        user: identity.username.clone(),
        uid: identity.uid.clone(),
        groups: identity.groups.clone(),
        audiences,
        expires,
        expires_in_seconds,
    }
}

/// Runs the explanation. Errors only when the backend cannot be set up (exit 2); every
/// answer, including "cannot decide", is a [`Report`].
pub async fn explain(
    config: &Config,
    question: &Question,
    token: &BearerToken,
) -> Result<Report, ExplainError> {
    let backend = match config.backend {
        Backend::Static => "static",
        Backend::Kubernetes => "kubernetes",
    };
    let mut report = Report {
        outcome: "allowed",
        http_status: 200,
        exit_code: 0,
        reason: None,
        backend,
        request: request_report(config, question),
        tenants: Vec::new(),
        identity: None,
        checks: Vec::new(),
    };
    let (_, parsed) =
        RequestParser::from_config(config).parse(&check_request(config, question, token));
    let parsed = match parsed {
        Ok(p) => p,
        Err(reason) => return Ok(report.denied(&reason)),
    };
    report.tenants = parsed.tenants.iter().map(|t| t.to_string()).collect();
    let engine = Engine::new(config).await?;
    let limit = config.decision_timeout;

    let authenticated = match tokio::time::timeout(limit, engine.authenticate(token)).await {
        Err(_) => Err(ReviewError::Timeout {
            kind: crate::review::ReviewKind::Authenticate,
            after: limit,
        }),
        Ok(answer) => answer,
    };
    let identity = match authenticated {
        Err(e) => return Ok(report.denied(&DenyReason::Unavailable(engine.describe(&e)))),
        Ok(Authentication::Unauthenticated { detail }) => {
            let detail = detail.filter(|d| !token.is_quoted_in(d));
            return Ok(report.denied(&DenyReason::Unauthenticated { detail }));
        }
        Ok(Authentication::Authenticated {
            identity,
            audiences,
        }) => {
            report.identity = Some(identity_report(&identity, audiences, token));
            identity
        }
    };

    let (product, action) = (parsed.product, parsed.action);
    let mut forbidden = None;
    let mut unavailable = None;
    for tenant in parsed.tenants.iter() {
        let check = ask(&engine, config, &identity, tenant, product, action).await;
        match check.decision {
            "denied" if forbidden.is_none() => {
                forbidden = Some(DenyReason::Forbidden {
                    user: identity.username.clone(),
                    tenant: tenant.clone(),
                    product,
                    action,
                    remedy: engine.remedy(tenant, product, action),
                    detail: denial_detail(&check),
                });
            }
            "unavailable" if unavailable.is_none() => {
                unavailable = Some(DenyReason::Unavailable(
                    check.error.clone().unwrap_or_default(),
                ));
            }
            _ => {}
        }
        report.checks.push(check);
    }
    // As the server: a definite denial of one tenant answers, whatever the others are.
    Ok(match forbidden.or(unavailable) {
        Some(reason) => report.denied(&reason),
        None => report,
    })
}

fn denial_detail(check: &TenantCheck) -> Option<String> {
    let detail = [
        check.reason.clone(),
        check
            .evaluation_error
            .as_ref()
            .map(|e| format!("evaluation error: {e}")),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join("; ");
    (!detail.is_empty()).then_some(detail)
}

/// One tenant: the backend's question, its answer, and what would grant a denial.
async fn ask(
    engine: &Engine,
    config: &Config,
    identity: &Identity,
    tenant: &Tenant,
    product: Product,
    action: Action,
) -> TenantCheck {
    let mut check = TenantCheck {
        tenant: tenant.to_string(),
        decision: "denied",
        question: serde_json::Value::Null,
        reason: None,
        evaluation_error: None,
        error: None,
        grant: None,
        closest_grant: None,
        missing: Vec::new(),
        fix: Vec::new(),
    };
    let answer = match engine {
        Engine::Static(r) => {
            check.question = serde_json::json!({
                "user": identity.username,
                "groups": identity.groups,
                "tenant": tenant.as_str(),
                "product": product,
                "action": action,
            });
            let answer = r.authorize(identity, tenant, product, action).await;
            let found = r.explain_access(identity, tenant, product, action);
            check.fix = static_fix(&found, &identity.username, tenant, product, action)
                .into_iter()
                .collect();
            match found {
                GrantMatch::Matched(g) => check.grant = Some(g),
                GrantMatch::Closest { grant, missing } => {
                    check.closest_grant = Some(grant);
                    check.missing = missing;
                }
                GrantMatch::NoGrants => {}
            }
            answer
        }
        Engine::Kubernetes(r) => {
            let review = r.subject_access_review(identity, tenant, product, action);
            check.question = serde_json::to_value(&review.spec).unwrap_or_default();
            let limit = config.decision_timeout;
            let answer = match tokio::time::timeout(limit, r.authorize_with_notes(&review)).await {
                Err(_) => Err(ReviewError::Timeout {
                    kind: crate::review::ReviewKind::Authorize,
                    after: limit,
                }),
                Ok(a) => a,
            };
            answer.map(|(decision, notes)| {
                check.reason = notes.reason;
                check.evaluation_error = notes.evaluation_error;
                if matches!(decision, Verdict::Denied { .. }) {
                    let (group, resource) =
                        config.products.sar_resource(product, &config.authorization);
                    let shape = SarShape {
                        mapping: config.authorization.mapping,
                        product,
                        action,
                        group,
                        resource,
                        verb: config.authorization.verb(action),
                    };
                    check.fix = kubectl_fix(&shape, tenant, &identity.username);
                }
                decision
            })
        }
    };
    match answer {
        Ok(Verdict::Allowed) => {
            check.decision = "allowed";
            check.fix.clear();
        }
        Ok(Verdict::Denied { .. }) => check.decision = "denied",
        Err(e) => {
            check.decision = "unavailable";
            check.error = Some(engine.describe(&e));
            check.fix.clear();
        }
    }
    check
}

#[cfg(test)]
mod tests;
