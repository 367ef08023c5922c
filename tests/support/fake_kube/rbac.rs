//! RBAC evaluation as the real authorizer does it (`plugin/pkg/auth/authorizer/rbac`):
//! ClusterRoleBindings to ClusterRoles cluster-wide, then the RoleBindings of the request's
//! namespace to a Role there or a ClusterRole; subjects User, Group and ServiceAccount; rules
//! with `apiGroups`, `resources` (with `*` and `*/sub`), `verbs`, `resourceNames`.
//! Not modelled: ClusterRole aggregation, non-resource URLs.
//! Also the fake's older grant list ([`GrantRule`]), which the fake OR's with RBAC.

use k8s_openapi::api::authorization::v1::ResourceAttributes;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject as RbacSubject,
};
use serde_json::Value;

use super::kinds::Kind;
use super::store::Store;
use super::users::{GrantRule, Subject};

/// The outcome of an evaluation: the reason of an allow, or the errors met on the way to
/// "no opinion" (bindings to roles that do not exist).
#[derive(Debug, Default)]
pub(super) struct Decision {
    pub allowed_by: Option<String>,
    pub errors: Vec<String>,
}

impl Decision {
    pub(super) fn allow(reason: String) -> Decision {
        Decision {
            allowed_by: Some(reason),
            errors: Vec::new(),
        }
    }
}

/// The first grant of the fake's list that allows the request, as an RBAC-worded reason.
pub(super) fn allowed_by_grants(
    grants: &[GrantRule],
    user: &str,
    groups: &[String],
    ra: &ResourceAttributes,
) -> Option<String> {
    grants.iter().enumerate().find_map(|(index, grant)| {
        grant_matches(grant, user, groups, ra).then(|| allow_reason(index, grant))
    })
}

/// RBAC over the stored objects, in the real authorizer's order: ClusterRoleBindings, then
/// the RoleBindings of the request's namespace.
pub(super) fn evaluate(
    store: &Store,
    user: &str,
    groups: &[String],
    ra: &ResourceAttributes,
) -> Decision {
    let mut decision = Decision::default();
    for value in store.list(Kind::ClusterRoleBinding, None) {
        let Ok(binding) = serde_json::from_value::<ClusterRoleBinding>(value) else {
            continue;
        };
        let name = binding.metadata.name.clone().unwrap_or_default();
        let subjects = binding.subjects.as_deref().unwrap_or_default();
        let Some(subject) = subjects.iter().find(|s| applies_to(s, user, groups, "")) else {
            continue;
        };
        match role_rules(store, &binding.role_ref, "") {
            Err(error) => decision.errors.push(error),
            Ok(rules) if rules.iter().any(|r| rule_allows(r, ra)) => {
                return Decision::allow(format!(
                    "RBAC: allowed by ClusterRoleBinding {name:?} of {} {:?} to {}",
                    binding.role_ref.kind,
                    binding.role_ref.name,
                    describe(subject, "")
                ));
            }
            Ok(_) => {}
        }
    }
    let namespace = ra.namespace.as_deref().unwrap_or("");
    if namespace.is_empty() {
        return decision;
    }
    for value in store.list(Kind::RoleBinding, Some(namespace)) {
        let Ok(binding) = serde_json::from_value::<RoleBinding>(value) else {
            continue;
        };
        let name = binding.metadata.name.clone().unwrap_or_default();
        let subjects = binding.subjects.as_deref().unwrap_or_default();
        let Some(subject) = subjects
            .iter()
            .find(|s| applies_to(s, user, groups, namespace))
        else {
            continue;
        };
        match role_rules(store, &binding.role_ref, namespace) {
            Err(error) => decision.errors.push(error),
            Ok(rules) if rules.iter().any(|r| rule_allows(r, ra)) => {
                return Decision::allow(format!(
                    "RBAC: allowed by RoleBinding \"{name}/{namespace}\" of {} {:?} to {}",
                    binding.role_ref.kind,
                    binding.role_ref.name,
                    describe(subject, namespace)
                ));
            }
            Ok(_) => {}
        }
    }
    decision
}

/// The rules of the role a binding refers to, or the lister's NotFound message.
fn role_rules(
    store: &Store,
    role_ref: &RoleRef,
    namespace: &str,
) -> Result<Vec<PolicyRule>, String> {
    let rules = match role_ref.kind.as_str() {
        "Role" => store
            .get(Kind::Role, namespace, &role_ref.name)
            .and_then(|v| serde_json::from_value::<Role>(v.clone()).ok())
            .map(|r| r.rules.unwrap_or_default())
            .ok_or_else(|| {
                format!(
                    "role.rbac.authorization.k8s.io {:?} not found",
                    role_ref.name
                )
            }),
        "ClusterRole" => store
            .get(Kind::ClusterRole, "", &role_ref.name)
            .and_then(|v| serde_json::from_value::<ClusterRole>(v.clone()).ok())
            .map(|r| r.rules.unwrap_or_default())
            .ok_or_else(|| {
                format!(
                    "clusterrole.rbac.authorization.k8s.io {:?} not found",
                    role_ref.name
                )
            }),
        other => Err(format!("unsupported role reference kind: {other:?}")),
    }?;
    Ok(rules)
}

/// `appliesTo` of the real authorizer; `namespace` is the binding's ("" for a
/// ClusterRoleBinding), the default of a ServiceAccount subject without one.
fn applies_to(subject: &RbacSubject, user: &str, groups: &[String], namespace: &str) -> bool {
    match subject.kind.as_str() {
        "User" => !user.is_empty() && subject.name == user,
        "Group" => groups.contains(&subject.name),
        "ServiceAccount" => {
            let ns = subject
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(namespace);
            !ns.is_empty() && user == format!("system:serviceaccount:{ns}:{}", subject.name)
        }
        _ => false,
    }
}

/// `describeSubject` of the real authorizer (`ServiceAccount "name/ns"`, `User "name"`).
fn describe(subject: &RbacSubject, namespace: &str) -> String {
    match subject.kind.as_str() {
        "ServiceAccount" => {
            let ns = subject
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(namespace);
            format!("ServiceAccount \"{}/{ns}\"", subject.name)
        }
        kind => format!("{kind} {:?}", subject.name),
    }
}

/// `RuleAllows` for resource requests: verb, API group, resource (`*`, `res/sub`, `*/sub`),
/// and `resourceNames` (empty: any name).
fn rule_allows(rule: &PolicyRule, ra: &ResourceAttributes) -> bool {
    let has = |list: &[String], wanted: &str| list.iter().any(|x| x == "*" || x == wanted);
    let verb = ra.verb.as_deref().unwrap_or("");
    let group = ra.group.as_deref().unwrap_or("");
    let resource = ra.resource.as_deref().unwrap_or("");
    let subresource = ra.subresource.as_deref().unwrap_or("");
    let combined = if subresource.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}/{subresource}")
    };
    let resource_ok = rule
        .resources
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|r| {
            r == "*"
                || *r == combined
                || (!subresource.is_empty() && r.strip_prefix("*/") == Some(subresource))
        });
    let names = rule.resource_names.as_deref().unwrap_or_default();
    let name_ok = names.is_empty() || names.iter().any(|n| Some(n.as_str()) == ra.name.as_deref());
    has(&rule.verbs, verb)
        && has(rule.api_groups.as_deref().unwrap_or_default(), group)
        && resource_ok
        && name_ok
}

fn grant_matches(
    grant: &GrantRule,
    user: &str,
    groups: &[String],
    ra: &ResourceAttributes,
) -> bool {
    let subject_ok = grant.subject.matches(user, groups);
    let namespace = ra.namespace.as_deref().unwrap_or("");
    let namespace_ok = match &grant.namespace {
        None => true,
        Some(ns) => !namespace.is_empty() && ns == namespace,
    };
    let group_ok = grant.api_group == "*" || grant.api_group == ra.group.as_deref().unwrap_or("");
    let resource = ra.resource.as_deref().unwrap_or("");
    let full_resource = match ra.subresource.as_deref() {
        Some(sub) if !sub.is_empty() => format!("{resource}/{sub}"),
        _ => resource.to_string(),
    };
    let resource_ok = grant.resource == "*" || grant.resource == full_resource;
    let verb = ra.verb.as_deref().unwrap_or("");
    let verb_ok = grant.verbs.iter().any(|v| v == "*" || v == verb);
    let name_ok = match &grant.name {
        None => true,
        Some(n) => ra.name.as_deref() == Some(n.as_str()),
    };
    subject_ok && namespace_ok && group_ok && resource_ok && verb_ok && name_ok
}

/// `RBAC: allowed by RoleBinding "b/ns" of Role "r" to ServiceAccount "sa/ns"`, as the real
/// RBAC authorizer words it.
fn allow_reason(index: usize, grant: &GrantRule) -> String {
    let subject = match &grant.subject {
        Subject::User(u) => match u.strip_prefix("system:serviceaccount:") {
            Some(rest) => match rest.split_once(':') {
                Some((ns, name)) => format!("ServiceAccount \"{name}/{ns}\""),
                None => format!("User {u:?}"),
            },
            None => format!("User {u:?}"),
        },
        Subject::Group(g) => format!("Group {g:?}"),
        Subject::ServiceAccount { namespace, name } => {
            format!("ServiceAccount \"{name}/{namespace}\"")
        }
    };
    match &grant.namespace {
        Some(ns) => format!(
            "RBAC: allowed by RoleBinding \"fake-grant-{index}/{ns}\" of Role \"fake-role-{index}\" to {subject}"
        ),
        None => format!(
            "RBAC: allowed by ClusterRoleBinding \"fake-grant-{index}\" of ClusterRole \"fake-role-{index}\" to {subject}"
        ),
    }
}
