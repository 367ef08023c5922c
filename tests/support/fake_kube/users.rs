//! Who a token is and who a grant is for: [`FakeUser`], [`Subject`] and [`GrantRule`].

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::http::pseudo_uuid;

/// `extra` key of a pod-bound token: the pod's name.
pub const POD_NAME: &str = "authentication.kubernetes.io/pod-name";
/// `extra` key of a pod-bound token: the pod's uid.
pub const POD_UID: &str = "authentication.kubernetes.io/pod-uid";

/// The user a token authenticates as.
#[derive(Clone, Debug)]
pub struct FakeUser {
    pub username: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl FakeUser {
    /// A ServiceAccount user: `system:serviceaccount:<ns>:<name>`, groups
    /// `system:serviceaccounts`, `system:serviceaccounts:<ns>`, `system:authenticated`,
    /// a stable uid derived from the name, and no `extra` (see [`FakeUser::with_pod`]).
    pub fn service_account(namespace: &str, name: &str) -> FakeUser {
        FakeUser {
            username: format!("system:serviceaccount:{namespace}:{name}"),
            uid: pseudo_uuid(&format!("serviceaccount/{namespace}/{name}")),
            groups: vec![
                "system:serviceaccounts".to_string(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".to_string(),
            ],
            extra: BTreeMap::new(),
        }
    }

    /// A plain user with the given groups (plus `system:authenticated`).
    pub fn user(username: &str, groups: &[&str]) -> FakeUser {
        let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".to_string());
        }
        FakeUser {
            username: username.to_string(),
            uid: pseudo_uuid(&format!("user/{username}")),
            groups,
            extra: BTreeMap::new(),
        }
    }

    /// Adds the `extra` of a pod-bound projected ServiceAccount token, like the real server:
    /// `authentication.kubernetes.io/{credential-id,pod-name,pod-uid}`.
    pub fn with_pod(mut self, pod_name: &str) -> FakeUser {
        let pod_uid = pseudo_uuid(&format!("pod/{}/{pod_name}", self.username));
        self.extra.insert(
            "authentication.kubernetes.io/credential-id".to_string(),
            vec![format!(
                "JTI={}",
                pseudo_uuid(&format!("jti/{}/{pod_name}", self.username))
            )],
        );
        self.extra
            .insert(POD_NAME.to_string(), vec![pod_name.to_string()]);
        self.extra.insert(POD_UID.to_string(), vec![pod_uid]);
        self
    }
}

/// The subject of a grant (RBAC binding subject).
#[derive(Clone, Debug)]
pub enum Subject {
    /// Matches `spec.user` of a SubjectAccessReview (e.g. `system:serviceaccount:ns:name`).
    User(String),
    /// Matches any entry of `spec.groups`.
    Group(String),
    /// A ServiceAccount: matches the user `system:serviceaccount:<namespace>:<name>`.
    ServiceAccount { namespace: String, name: String },
}

impl Subject {
    /// The ServiceAccount `namespace/name`, as RBAC names it in a binding.
    pub fn service_account(namespace: &str, name: &str) -> Subject {
        Subject::ServiceAccount {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    /// Whether the user `user` with `groups` is this subject.
    pub fn matches(&self, user: &str, groups: &[String]) -> bool {
        match self {
            Subject::User(u) => !u.is_empty() && u == user,
            Subject::Group(g) => groups.iter().any(|x| x == g),
            Subject::ServiceAccount { namespace, name } => {
                user == format!("system:serviceaccount:{namespace}:{name}")
            }
        }
    }

    /// The `subjects[]` entry of an RBAC binding (`rbac.authorization.k8s.io/v1` Subject).
    pub fn to_rbac(&self) -> Value {
        match self {
            Subject::User(name) => {
                json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": name})
            }
            Subject::Group(name) => {
                json!({"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": name})
            }
            Subject::ServiceAccount { namespace, name } => {
                json!({"kind": "ServiceAccount", "name": name, "namespace": namespace})
            }
        }
    }
}

/// A general RBAC-like rule: `subject` may `verbs` on `api_group`/`resource` (optionally only
/// the object `name`) in `namespace` (`None` = cluster-wide, like a ClusterRoleBinding).
///
/// `api_group`, `resource` and each verb accept `*`. `resource` may be `res/subresource`.
#[derive(Clone, Debug)]
pub struct GrantRule {
    pub subject: Subject,
    pub namespace: Option<String>,
    pub api_group: String,
    pub resource: String,
    pub name: Option<String>,
    pub verbs: Vec<String>,
}

impl GrantRule {
    /// A rule with no `name` restriction.
    pub fn new(
        subject: Subject,
        namespace: Option<&str>,
        api_group: &str,
        resource: &str,
        verbs: &[&str],
    ) -> GrantRule {
        GrantRule {
            subject,
            namespace: namespace.map(str::to_string),
            api_group: api_group.to_string(),
            resource: resource.to_string(),
            name: None,
            verbs: verbs.iter().map(|v| v.to_string()).collect(),
        }
    }

    /// Restricts the rule to one object name (`resourceNames` in RBAC).
    pub fn with_name(mut self, name: &str) -> GrantRule {
        self.name = Some(name.to_string());
        self
    }
}
