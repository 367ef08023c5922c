//! TokenReview and SubjectAccessReview through the real Kubernetes client.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::Client;

use super::{Authentication, ReviewError, ReviewKind, Reviewer, Revocable, Verdict};

pub mod answer;
pub mod start;
pub mod watch;
use crate::config::{ProductsConfig, SarConfig, SarMapping};
use crate::model::{Action, BearerToken, Identity, Product, Tenant};
pub use answer::{sar_answer, token_review_answer};

const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
const SUBJECT_ACCESS_REVIEWS: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";

/// Reviews against the Kubernetes API. Needs `create` on `tokenreviews` and
/// `subjectaccessreviews`, nothing else.
#[derive(Clone)]
pub struct KubeReviewer {
    client: Client,
    audiences: Vec<String>,
    sar: SarConfig,
    /// (group, resource) per product, by `Product::index`: Tempo's from `sar`.
    resources: std::sync::Arc<[(String, String); Product::ALL.len()]>,
}

impl KubeReviewer {
    pub fn new(client: Client, audiences: Vec<String>, sar: SarConfig) -> Self {
        let products = ProductsConfig::default();
        let resources = Product::ALL.map(|p| {
            let (group, resource) = products.sar_resource(p, &sar);
            (group.to_string(), resource.to_string())
        });
        Self {
            client,
            audiences,
            sar,
            resources: std::sync::Arc::new(resources),
        }
    }

    /// The SAR group and resource of each product other than Tempo (`products.*`).
    pub fn with_products(mut self, products: &ProductsConfig) -> Self {
        let resources = Product::ALL.map(|p| {
            let (group, resource) = products.sar_resource(p, &self.sar);
            (group.to_string(), resource.to_string())
        });
        self.resources = std::sync::Arc::new(resources);
        self
    }

    fn group_resource(&self, product: Product) -> (&str, &str) {
        let (g, r) = &self.resources[product.index()];
        (g, r)
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

/// Reads at most `limit` bytes of a response body; `None` if it is longer.
async fn read_bounded(body: kube::client::Body, limit: usize) -> Result<Option<Vec<u8>>, String> {
    use http_body_util::BodyExt;
    let mut body = std::pin::pin!(body);
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Ok(None);
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(Some(out))
}

impl KubeReviewer {
    /// What the SAR asks about, by the configured mapping.
    fn resource_attributes(
        &self,
        tenant: &Tenant,
        product: Product,
        action: Action,
    ) -> ResourceAttributes {
        let verb = Some(self.sar.verb(action).to_string());
        let (group, resource) = self.group_resource(product);
        let group = Some(group.to_string());
        match self.sar.mapping {
            SarMapping::Namespace => ResourceAttributes {
                namespace: Some(tenant.to_string()),
                verb,
                group,
                resource: Some(resource.to_string()),
                ..Default::default()
            },
            SarMapping::TempoGateway => ResourceAttributes {
                verb,
                group,
                resource: Some(tenant.to_string()),
                name: Some(resource.to_string()),
                ..Default::default()
            },
        }
    }
}

impl KubeReviewer {
    /// The SubjectAccessReview asked for `identity` doing `action` on `tenant` in `product`:
    /// the TokenReview's user, uid, groups and extra, and the configured resource attributes.
    pub fn subject_access_review(
        &self,
        identity: &Identity,
        tenant: &Tenant,
        product: Product,
        action: Action,
    ) -> SubjectAccessReview {
        SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                resource_attributes: Some(self.resource_attributes(tenant, product, action)),
                user: Some(identity.username.clone()),
                uid: (!identity.uid.is_empty()).then(|| identity.uid.clone()),
                groups: Some(identity.groups.clone()),
                extra: (!identity.extra.is_empty()).then(|| identity.extra.clone()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Asks `review` (from [`KubeReviewer::subject_access_review`]) and returns the decision
    /// with the API's reason and evaluationError: what [`Reviewer::authorize`] does, for
    /// `tenant-authz explain`.
    pub async fn authorize_with_notes(
        &self,
        review: &SubjectAccessReview,
    ) -> Result<(Verdict, answer::SarNotes), ReviewError> {
        let (status, answer) = self.post_access_review(review).await?;
        answer::sar_answer_with_notes(status, &answer)
    }

    async fn post_access_review(
        &self,
        review: &SubjectAccessReview,
    ) -> Result<(u16, Vec<u8>), ReviewError> {
        let kind = ReviewKind::Authorize;
        let body = serde_json::to_vec(review).map_err(|e| ReviewError::InvalidResponse {
            kind,
            message: e.to_string(),
        })?;
        self.post(kind, SUBJECT_ACCESS_REVIEWS, body, None).await
    }

    /// POSTs a review and returns the HTTP status and the body, unread by anything else.
    ///
    /// Not `Api::create` nor `Client::request_text`: on an error status they hand the body to
    /// kube's own logging (`debug!("Unsuccessful: {status:?}")`, and `warn!` of the whole text
    /// when it does not parse) before tenant-authz can see it, and a TokenReview answer, or an
    /// error from a proxy, can quote the token. `Client::send` goes through kube's auth and
    /// tracing layers, which log only the method, URL and status; the body reaches no code but
    /// [`answer`], which scrubs it.
    async fn post(
        &self,
        kind: ReviewKind,
        path: &str,
        body: Vec<u8>,
        token: Option<&BearerToken>,
    ) -> Result<(u16, Vec<u8>), ReviewError> {
        let transport = |message: String| ReviewError::Transport {
            kind,
            message: answer::SafeText::from(&message, token),
        };
        let request = kube::core::Request::new(path)
            .create(&PostParams::default(), body)
            .map_err(|e| ReviewError::InvalidResponse {
                kind,
                message: e.to_string(),
            })?;
        let response = self
            .client
            .send(request.map(kube::client::Body::from))
            .await
            .map_err(|e| transport(e.to_string()))?;
        let status = response.status().as_u16();
        match read_bounded(response.into_body(), answer::MAX_ANSWER_BYTES).await {
            Ok(Some(body)) => Ok((status, body)),
            Ok(None) => Err(ReviewError::InvalidResponse {
                kind,
                message: format!(
                    "HTTP {status} with a body over {} bytes",
                    answer::MAX_ANSWER_BYTES
                ),
            }),
            Err(e) => Err(transport(format!("reading the answer: {e}"))),
        }
    }
}

impl Reviewer for KubeReviewer {
    async fn authenticate(&self, token: &BearerToken) -> Result<Authentication, ReviewError> {
        let kind = ReviewKind::Authenticate;
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.expose_secret().to_string(),
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
            },
            ..Default::default()
        };
        let body = serde_json::to_vec(&review).map_err(|e| ReviewError::InvalidResponse {
            kind,
            message: e.to_string(),
        })?;
        let (status, answer) = self.post(kind, TOKEN_REVIEWS, body, Some(token)).await?;
        answer::token_review_answer(status, &answer, token, &self.audiences)
    }

    async fn authorize(
        &self,
        identity: &Identity,
        tenant: &Tenant,
        product: Product,
        action: Action,
    ) -> Result<Verdict, ReviewError> {
        let review = self.subject_access_review(identity, tenant, product, action);
        let (status, answer) = self.post_access_review(&review).await?;
        answer::sar_answer(status, &answer)
    }

    fn name(&self) -> &'static str {
        "the Kubernetes API"
    }

    fn request_name(&self, kind: ReviewKind) -> &'static str {
        match kind {
            ReviewKind::Authenticate => "TokenReview",
            ReviewKind::Authorize => "SubjectAccessReview",
        }
    }

    fn remedy(&self, tenant: &Tenant, product: Product, action: Action) -> String {
        let (group, resource) = self.group_resource(product);
        match self.sar.mapping {
            SarMapping::Namespace => format!(
                "grant verb {:?} on {} in namespace \"{tenant}\" with a Role and RoleBinding",
                self.sar.verb(action),
                if group.is_empty() {
                    resource.to_string()
                } else {
                    format!("{resource}.{group}")
                }
            ),
            SarMapping::TempoGateway => format!(
                "grant verb {:?} on resource \"{tenant}\" (resourceNames: [{resource}]) in API group {group} \
                 with a ClusterRole and ClusterRoleBinding",
                self.sar.verb(action),
            ),
        }
    }

    fn revocable<'a>(&self, identity: &'a Identity) -> Revocable<'a> {
        revocable(identity)
    }
}

/// `extra` key of the TokenReview user that names the pod a token is bound to.
pub const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";

/// What the watches can end a TokenReview user by: a ServiceAccount's deletion (the
/// ServiceAccount watch), and, for a pod-bound token, its pod's (the pod watch). The user is
/// the API's answer, so only the exact shapes the API server's ServiceAccount authenticator
/// produces count: `system:serviceaccount:<namespace>:<name>`, which is the name the watch
/// invalidates, and exactly one non-empty pod UID. Anything else is revocable by no watch and
/// keeps the short identity TTL.
pub fn revocable(identity: &Identity) -> Revocable<'_> {
    let account = identity
        .username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .is_some_and(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains(':'));
    let pod = match identity.extra.get(POD_UID_EXTRA).map(Vec::as_slice) {
        None => Ok(None),
        Some([uid]) if !uid.is_empty() => Ok(Some(uid.as_str())),
        // Bound to something no watch can name: nothing revokes it early.
        Some(_) => Err(()),
    };
    match pod {
        Ok(bound_to) => Revocable {
            by_account: account,
            bound_to,
        },
        Err(()) => Revocable::default(),
    }
}
