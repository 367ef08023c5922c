//! TokenReview and SubjectAccessReview through the real Kubernetes client.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};

use super::{Authentication, Authorization, ReviewError, ReviewKind, Reviewer};
use crate::config::{SarConfig, SarMapping};
use crate::model::{Action, BearerToken, Identity, Tenant};

const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

/// Reviews against the Kubernetes API. Needs `create` on `tokenreviews` and
/// `subjectaccessreviews`, nothing else.
#[derive(Clone)]
pub struct KubeReviewer {
    client: Client,
    audiences: Vec<String>,
    sar: SarConfig,
}

impl KubeReviewer {
    pub fn new(client: Client, audiences: Vec<String>, sar: SarConfig) -> Self {
        Self {
            client,
            audiences,
            sar,
        }
    }

    /// Whether the API server answers at all (`GET /version`), for readiness.
    pub async fn reachable(&self) -> Result<String, String> {
        self.client
            .apiserver_version()
            .await
            .map(|v| v.git_version)
            .map_err(|e| e.to_string())
    }
}

/// Maps a kube error, making sure it cannot quote the token.
fn review_error(kind: ReviewKind, err: kube::Error, token: Option<&BearerToken>) -> ReviewError {
    let scrub = |s: String| match token {
        Some(t) if t.is_quoted_in(&s) => "(message withheld: it quoted the credential)".to_string(),
        _ => s,
    };
    match err {
        kube::Error::Api(status) => ReviewError::Api {
            kind,
            code: status.code,
            message: scrub(if status.code == 403 {
                format!(
                    "{} (does tenant-authz's ClusterRole allow create on {}s?)",
                    status.message,
                    kind.as_str()
                )
            } else {
                status.message
            }),
        },
        kube::Error::SerdeError(e) => ReviewError::InvalidResponse {
            kind,
            message: scrub(e.to_string()),
        },
        other => ReviewError::Transport {
            kind,
            message: scrub(other.to_string()),
        },
    }
}

impl KubeReviewer {
    /// What the SAR asks about, by the configured mapping.
    fn resource_attributes(&self, tenant: &Tenant, action: Action) -> ResourceAttributes {
        let verb = Some(self.sar.verb(action).to_string());
        let group = Some(self.sar.group.clone());
        match self.sar.mapping {
            SarMapping::Namespace => ResourceAttributes {
                namespace: Some(tenant.to_string()),
                verb,
                group,
                resource: Some(self.sar.resource.clone()),
                ..Default::default()
            },
            SarMapping::TempoGateway => ResourceAttributes {
                verb,
                group,
                resource: Some(tenant.to_string()),
                name: Some(self.sar.resource.clone()),
                ..Default::default()
            },
        }
    }
}

impl Reviewer for KubeReviewer {
    async fn authenticate(&self, token: &BearerToken) -> Result<Authentication, ReviewError> {
        let kind = ReviewKind::TokenReview;
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.expose_secret().to_string(),
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
            },
            ..Default::default()
        };
        // Not `Api::create`: on a body it cannot parse, kube logs the whole response at WARN,
        // and a TokenReview response echoes `spec.token`. We parse it ourselves.
        let invalid = |message: String| ReviewError::InvalidResponse { kind, message };
        let body = serde_json::to_vec(&review).map_err(|e| invalid(e.to_string()))?;
        let request = kube::core::Request::new(TOKEN_REVIEWS)
            .create(&PostParams::default(), body)
            .map_err(|e| invalid(e.to_string()))?;
        let text = self
            .client
            .request_text(request)
            .await
            .map_err(|e| review_error(kind, e, Some(token)))?;
        let answer: TokenReview = serde_json::from_str(&text).map_err(|e| {
            let message = format!("not a TokenReview: {e}");
            invalid(if token.is_quoted_in(&message) {
                "not a TokenReview".to_string()
            } else {
                message
            })
        })?;
        drop(text);
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Ok(Authentication::Unauthenticated {
                detail: status.error.filter(|e| !token.is_quoted_in(e)),
            });
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        if username.is_empty() {
            return Err(ReviewError::InvalidResponse {
                kind,
                message: "authenticated TokenReview without a username".into(),
            });
        }
        Ok(Authentication::Authenticated {
            identity: Identity {
                username,
                uid: user.uid.unwrap_or_default(),
                groups: user.groups.unwrap_or_default(),
                extra: user.extra.unwrap_or_default(),
            },
            audiences: status.audiences.unwrap_or_default(),
        })
    }

    async fn authorize(
        &self,
        identity: &Identity,
        tenant: &Tenant,
        action: Action,
    ) -> Result<Authorization, ReviewError> {
        let kind = ReviewKind::SubjectAccessReview;
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                resource_attributes: Some(self.resource_attributes(tenant, action)),
                user: Some(identity.username.clone()),
                uid: (!identity.uid.is_empty()).then(|| identity.uid.clone()),
                groups: Some(identity.groups.clone()),
                extra: (!identity.extra.is_empty()).then(|| identity.extra.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| review_error(kind, e, None))?;
        let status = answer.status.unwrap_or_default();
        if status.allowed {
            return Ok(Authorization::Allowed);
        }
        let detail = [status.reason, status.evaluation_error]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        Ok(Authorization::Denied {
            detail: (!detail.is_empty()).then_some(detail),
        })
    }

    fn remedy(&self, tenant: &Tenant, action: Action) -> String {
        match self.sar.mapping {
            SarMapping::Namespace => format!(
                "grant verb {:?} on {} in namespace \"{tenant}\" with a Role and RoleBinding",
                self.sar.verb(action),
                self.sar.resource_display()
            ),
            SarMapping::TempoGateway => format!(
                "grant verb {:?} on resource \"{tenant}\" (resourceNames: [{}]) in API group {} \
                 with a ClusterRole and ClusterRoleBinding",
                self.sar.verb(action),
                self.sar.resource,
                self.sar.group
            ),
        }
    }
}
