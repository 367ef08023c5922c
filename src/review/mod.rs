//! The one seam to the outside world: who is this token, and may it act on this tenant?

use std::future::Future;
use std::time::Duration;

use crate::model::{Action, BearerToken, Identity, Product, Tenant};

pub mod kube;
pub mod memory;
pub mod static_;

/// Answer of an authentication (with Kubernetes, a TokenReview).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authentication {
    Authenticated {
        identity: Identity,
        /// Audiences the API server accepted the token for.
        audiences: Vec<String>,
    },
    /// Not authenticated; `detail` is a message safe to show (never quotes the token).
    Unauthenticated { detail: Option<String> },
}

/// Answer of an authorization (with Kubernetes, a SubjectAccessReview).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Denied { detail: Option<String> },
}

/// Which review failed: a bounded label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReviewKind {
    /// Who is this token? (Kubernetes: TokenReview)
    Authenticate,
    /// May this identity act on this tenant? (Kubernetes: SubjectAccessReview)
    Authorize,
}

impl ReviewKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewKind::Authenticate => "authenticate",
            ReviewKind::Authorize => "authorize",
        }
    }

    /// The request's name in messages: "authentication", "authorization".
    pub fn noun(self) -> &'static str {
        match self {
            ReviewKind::Authenticate => "authentication",
            ReviewKind::Authorize => "authorization",
        }
    }
}

/// The review could not be answered: tenant-authz cannot decide and fails closed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    #[error("the backend answered the {} request with HTTP {code}: {message}", kind.noun())]
    Api {
        kind: ReviewKind,
        code: u16,
        message: String,
    },
    #[error("cannot reach the backend for the {} request: {message}", kind.noun())]
    Transport { kind: ReviewKind, message: String },
    #[error("the backend did not answer the {} request within {after:?}", kind.noun())]
    Timeout { kind: ReviewKind, after: Duration },
    #[error("unusable answer to the {} request: {message}", kind.noun())]
    InvalidResponse { kind: ReviewKind, message: String },
}

impl ReviewError {
    /// Which review failed.
    pub fn kind(&self) -> ReviewKind {
        match self {
            ReviewError::Api { kind, .. }
            | ReviewError::Transport { kind, .. }
            | ReviewError::Timeout { kind, .. }
            | ReviewError::InvalidResponse { kind, .. } => *kind,
        }
    }

    /// The whole message in a backend's own terms, for the log and `explain` (the client
    /// gets less: see `authorizer::unavailable`).
    pub fn describe<R: Reviewer>(&self, reviewer: &R) -> String {
        let (backend, request) = (reviewer.name(), reviewer.request_name(self.kind()));
        match self {
            ReviewError::Api { code, message, .. } => {
                format!("{backend} answered the {request} with HTTP {code}: {message}")
            }
            ReviewError::Transport { message, .. } => {
                format!("cannot reach {backend} for the {request}: {message}")
            }
            ReviewError::Timeout { after, .. } => {
                format!("{backend} did not answer the {request} within {after:?}")
            }
            ReviewError::InvalidResponse { message, .. } => {
                format!("unusable {request} answer from {backend}: {message}")
            }
        }
    }

    /// Bounded label for metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            ReviewError::Api { .. } => "api_error",
            ReviewError::Transport { .. } => "transport_error",
            ReviewError::Timeout { .. } => "timeout",
            ReviewError::InvalidResponse { .. } => "invalid_response",
        }
    }
}

/// A backend that authenticates tokens and authorizes identities on tenants.
pub trait Reviewer: Send + Sync + 'static {
    fn authenticate(
        &self,
        token: &BearerToken,
    ) -> impl Future<Output = Result<Authentication, ReviewError>> + Send;

    /// May `identity` do `action` on `tenant`'s data in `product` (traces, logs, ...)?
    fn authorize(
        &self,
        identity: &Identity,
        tenant: &Tenant,
        product: Product,
        action: Action,
    ) -> impl Future<Output = Result<Verdict, ReviewError>> + Send;

    /// How messages name this backend: "the Kubernetes API", "the static backend".
    fn name(&self) -> &'static str;

    /// How messages name a review in this backend's terms ("TokenReview" for Kubernetes).
    fn request_name(&self, kind: ReviewKind) -> &'static str {
        kind.noun()
    }

    /// What would allow `action` on `tenant` in `product`, in this backend's terms, for the
    /// 403 message.
    fn remedy(&self, tenant: &Tenant, product: Product, action: Action) -> String;

    /// What this backend's watches can end `identity` by before its TTL runs out, so the
    /// engine knows whether a long identity TTL is safe. Default: nothing (no watches).
    fn revocable<'a>(&self, _identity: &'a Identity) -> Revocable<'a> {
        Revocable::default()
    }
}

/// What a backend's watches can end an identity by before its TTL runs out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Revocable<'a> {
    /// The account's deletion (or re-creation) is watched: with Kubernetes, a ServiceAccount.
    pub by_account: bool,
    /// The object the token is bound to, by UID, whose deletion ends the token: with
    /// Kubernetes, the pod of a pod-bound ServiceAccount token.
    pub bound_to: Option<&'a str>,
}
