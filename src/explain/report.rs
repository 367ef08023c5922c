//! The facts `explain` found, as one serialisable value: what `--output json` prints and what
//! the text form is rendered from. Field names are stable (README, "Why 403?").

use serde::Serialize;

use crate::model::{Action, DenyReason, Product};
use crate::review::static_::{GrantView, Missing};

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

pub(super) fn outcome(http_status: u16) -> &'static str {
    match http_status {
        200 => "allowed",
        400 => "bad_request",
        401 => "unauthenticated",
        403 => "forbidden",
        503 => "unavailable",
        _ => "misconfigured",
    }
}

impl Report {
    pub(super) fn denied(mut self, reason: &DenyReason) -> Self {
        self.http_status = reason.http_status();
        self.exit_code = exit_code(self.http_status);
        self.outcome = outcome(self.http_status);
        self.reason = Some(reason.to_string());
        self
    }
}
