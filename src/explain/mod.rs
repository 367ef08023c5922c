//! `tenant-authz explain`: why a token gets the answer it gets, step by step.
//!
//! It runs the server's own pieces, not a copy of them: the request parser
//! ([`crate::ext_authz::RequestParser`]: token checks, tenant header rules and limits, product
//! and route inference), then the configured [`Reviewer`]'s authenticate and authorize (for
//! Kubernetes, the same SubjectAccessReview body and every answer check of
//! [`crate::review::kube::answer`]). Unlike the server it asks every tenant, even after a
//! denial, so each one's answer is shown; and it uses no cache, so it shows what the backend
//! says now (a server may still answer from its cache for up to `cache.allowed_ttl`).
//!
//! The token goes into the parser's `Authorization` header and to the backend, nowhere else:
//! no field of [`Report`] is built from it except the JWT expiry.

mod fix;
mod text;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use serde::Serialize;

use crate::config::{Backend, Config};
use crate::ext_authz::{normalize_path, RequestParser};
use crate::model::{Action, BearerToken, DenyReason, Identity, Product, Tenant};
use crate::review::kube::KubeReviewer;
use crate::review::static_::{GrantMatch, GrantView, Missing, StaticReviewer};
use crate::review::{Authentication, Authorization, ReviewError, Reviewer};

pub use fix::{kubectl_fix, quote, static_fix, KitRole, SarShape, KIT_ROLES};
pub use text::render_text;

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

/// The whole explanation; `--output json` prints it as is. Field names are stable (README,
/// "Why 403?").
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// `allowed`, `bad_request`, `unauthenticated`, `forbidden`, `unavailable` or
    /// `misconfigured`.
    pub outcome: &'static str,
    /// What the server would answer: 200, 400, 401, 403, 503 or 500.
    pub http_status: u16,
    /// This command's exit code for that answer.
    pub exit_code: u8,
    /// The denial's message, as the server sends it to the client; `None` when allowed.
    pub reason: Option<String>,
    /// `kubernetes` or `static`.
    pub backend: &'static str,
    pub request: RequestReport,
    /// The tenants as parsed, in the header's order; empty when the header did not parse.
    pub tenants: Vec<String>,
    /// Who the token is; `None` when it was not authenticated (or not asked).
    pub identity: Option<IdentityReport>,
    /// One per tenant, in order, each asked even after a denial.
    pub checks: Vec<TenantCheck>,
}

/// The product and action, and with `--method/--path` how the action was inferred.
#[derive(Clone, Debug, Serialize)]
pub struct RequestReport {
    pub product: Product,
    pub method: Option<String>,
    pub path: Option<String>,
    /// The path the route rules see (no query, decoded, dot segments resolved).
    pub normalized_path: Option<String>,
    /// The first rule that matched; `None` with `--action` or when a default applied.
    pub rule: Option<RuleReport>,
    /// `flag` (--action), `rule`, `default` (unmatched GET/HEAD/OPTIONS) or `default_unsafe`.
    pub action_source: &'static str,
    /// `None`: a `deny` rule matched (an operations endpoint, 403 without a review).
    pub action: Option<Action>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RuleReport {
    /// The rule's place in the config: `actions.rules[3]`, `products.loki.actions.rules[0]`.
    pub field: String,
    pub methods: Vec<String>,
    pub path: Option<String>,
    pub path_prefix: Option<String>,
    /// `read`, `write`, `manage` or `deny`.
    pub action: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub struct IdentityReport {
    pub user: String,
    pub uid: String,
    pub groups: Vec<String>,
    /// Audiences the TokenReview accepted the token for, among `kubernetes.audiences`; empty
    /// when none are configured (the API server's own audience applies) or with the static
    /// backend.
    pub audiences: Vec<String>,
    /// `exp` of the token, when it is a JWT (read without verifying: the backend vouched for
    /// the token), RFC 3339.
    pub expires: Option<String>,
    /// Seconds from now to `expires` (0: expired).
    pub expires_in_seconds: Option<u64>,
}

/// One tenant's question and answer.
#[derive(Clone, Debug, Serialize)]
pub struct TenantCheck {
    pub tenant: String,
    /// `allowed`, `denied` or `unavailable`.
    pub decision: &'static str,
    /// Kubernetes: the SubjectAccessReview `spec` sent (user, uid, groups, extra,
    /// resourceAttributes). Static: `{user, groups, tenant, product, action}`.
    pub question: serde_json::Value,
    /// Kubernetes: the answer's `status.reason`.
    pub reason: Option<String>,
    /// Kubernetes: the answer's `status.evaluationError`.
    pub evaluation_error: Option<String>,
    /// Why no decision could be made (`unavailable`).
    pub error: Option<String>,
    /// Static: the grant that allowed it.
    pub grant: Option<GrantView>,
    /// Static: the closest grant when none allowed it, and what it lacks (`subject`, `tenant`,
    /// `product`, `action`).
    pub closest_grant: Option<GrantView>,
    pub missing: Vec<Missing>,
    /// What would grant it (denied only): `kubectl` lines, or the edit of the config file.
    pub fix: Vec<String>,
}

/// Exit code of an HTTP answer: 0 allowed, 3 bad request, 4 unauthenticated, 5 forbidden,
/// 6 cannot decide, 2 a configuration error (500).
pub fn exit_code(http_status: u16) -> u8 {
    match http_status {
        200 => 0,
        400 => 3,
        401 => 4,
        403 => 5,
        503 => 6,
        _ => 2,
    }
}

fn outcome(http_status: u16) -> &'static str {
    match http_status {
        200 => "allowed",
        400 => "bad_request",
        401 => "unauthenticated",
        403 => "forbidden",
        503 => "unavailable",
        _ => "misconfigured",
    }
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
                let client = crate::server::kube_client(config, backstop).await?;
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

    fn remedy(&self, tenant: &Tenant, product: Product, action: Action) -> String {
        match self {
            Engine::Static(r) => r.remedy(tenant, product, action),
            Engine::Kubernetes(r) => r.remedy(tenant, product, action),
        }
    }
}

/// The server's parser, fed the request this question describes. Built as Envoy would send
/// it, so the tenant header, token and route rules are judged by the same code.
fn check_request(config: &Config, question: &Question, token: &BearerToken) -> CheckRequest {
    let (method, path) = match &question.target {
        Target::Action(_) => ("GET".to_string(), "/".to_string()),
        Target::Route { method, path } => (method.to_ascii_uppercase(), path.clone()),
    };
    let mut headers = std::collections::HashMap::new();
    headers.insert(
        "authorization".to_string(),
        format!("Bearer {}", token.expose_secret()),
    );
    headers.insert(config.tenant_header.clone(), question.tenants.clone());
    let mut context_extensions = std::collections::HashMap::new();
    if let Some(p) = question.product {
        context_extensions.insert("product".to_string(), p.to_string());
    }
    if let Target::Action(a) = &question.target {
        context_extensions.insert("action".to_string(), a.to_string());
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method,
                    path,
                    headers,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions,
            ..Default::default()
        }),
    }
}

/// How the route tables see the question: product, normalised path, the rule that matched.
fn request_report(config: &Config, question: &Question) -> RequestReport {
    let product = question.product.unwrap_or(config.products.default);
    match &question.target {
        Target::Action(action) => RequestReport {
            product,
            method: None,
            path: None,
            normalized_path: None,
            rule: None,
            action_source: "flag",
            action: Some(*action),
        },
        Target::Route { method, path } => {
            let method = method.to_ascii_uppercase();
            let normalized = normalize_path(path);
            let routes = crate::ext_authz::request::Routes::from_config(config);
            let field = match product {
                Product::Tempo => "actions".to_string(),
                p => format!("products.{p}.actions"),
            };
            let (rule, action_source, action) = match routes.table(product) {
                None => (None, "default", None),
                Some(table) => match table.matching_rule(&method, &normalized) {
                    Some((i, r)) => (
                        Some(RuleReport {
                            field: format!("{field}.rules[{i}]"),
                            methods: r.methods.clone(),
                            path: r.path.clone(),
                            path_prefix: r.path_prefix.clone(),
                            action: r.action.as_str(),
                        }),
                        "rule",
                        r.action.action(),
                    ),
                    None if matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS") => {
                        (None, "default", Some(table.default))
                    }
                    None => (None, "default_unsafe", Some(table.default_unsafe)),
                },
            };
            RequestReport {
                product,
                method: Some(method),
                path: Some(path.clone()),
                normalized_path: Some(normalized),
                rule,
                action_source,
                action,
            }
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
            kind: crate::review::ReviewKind::TokenReview,
            after: limit,
        }),
        Ok(answer) => answer,
    };
    let identity = match authenticated {
        Err(e) => return Ok(report.denied(&DenyReason::Unavailable(e.to_string()))),
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

impl Report {
    fn denied(mut self, reason: &DenyReason) -> Self {
        self.http_status = reason.http_status();
        self.exit_code = exit_code(self.http_status);
        self.outcome = outcome(self.http_status);
        self.reason = Some(reason.to_string());
        self
    }
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
                    kind: crate::review::ReviewKind::SubjectAccessReview,
                    after: limit,
                }),
                Ok(a) => a,
            };
            answer.map(|(decision, notes)| {
                check.reason = notes.reason;
                check.evaluation_error = notes.evaluation_error;
                if matches!(decision, Authorization::Denied { .. }) {
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
        Ok(Authorization::Allowed) => {
            check.decision = "allowed";
            check.fix.clear();
        }
        Ok(Authorization::Denied { .. }) => check.decision = "denied",
        Err(e) => {
            check.decision = "unavailable";
            check.error = Some(e.to_string());
            check.fix.clear();
        }
    }
    check
}

#[cfg(test)]
mod tests;
