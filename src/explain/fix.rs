//! What would grant a denied request, in each backend's terms: `kubectl` lines for the
//! Kubernetes backend (the kit's Roles when one fits), an edit of the config file for the
//! static backend. Pure functions of their inputs.

use crate::config::SarMapping;
use crate::model::{Action, Product, Tenant};
use crate::review::static_::{GrantMatch, Missing};

/// A Role the kit ships in every tenant namespace (`manifests/tenants/`): what it grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KitRole {
    pub name: &'static str,
    pub product: Product,
    pub group: &'static str,
    pub resource: &'static str,
    pub verb: &'static str,
}

/// The kit's Roles (`manifests/tenants/template/role-*.yaml` for Tempo,
/// `manifests/tenants/logs-and-metrics/role-*.yaml` for Loki and Mimir); a unit test checks
/// this list against those files.
pub const KIT_ROLES: &[KitRole] = &[
    KitRole {
        name: "tempo-traces-reader",
        product: Product::Tempo,
        group: "tempo.grafana.com",
        resource: "traces",
        verb: "get",
    },
    KitRole {
        name: "tempo-traces-writer",
        product: Product::Tempo,
        group: "tempo.grafana.com",
        resource: "traces",
        verb: "create",
    },
    KitRole {
        name: "loki-logs-reader",
        product: Product::Loki,
        group: "loki.grafana.com",
        resource: "logs",
        verb: "get",
    },
    KitRole {
        name: "loki-logs-writer",
        product: Product::Loki,
        group: "loki.grafana.com",
        resource: "logs",
        verb: "create",
    },
    KitRole {
        name: "mimir-metrics-reader",
        product: Product::Mimir,
        group: "mimir.grafana.com",
        resource: "metrics",
        verb: "get",
    },
    KitRole {
        name: "mimir-metrics-writer",
        product: Product::Mimir,
        group: "mimir.grafana.com",
        resource: "metrics",
        verb: "create",
    },
];

/// What a SubjectAccessReview asks, as far as a fix needs it.
#[derive(Clone, Debug)]
pub struct SarShape<'a> {
    pub mapping: SarMapping,
    pub product: Product,
    pub action: Action,
    pub group: &'a str,
    pub resource: &'a str,
    pub verb: &'a str,
}

/// `kubectl` lines that would make the SAR for `user` on `tenant` allowed: a RoleBinding to the
/// kit's Role when one grants exactly this, else a Role (named like the kit's) and its binding;
/// with the `tempo-gateway` mapping, a ClusterRole and ClusterRoleBinding.
pub fn kubectl_fix(shape: &SarShape<'_>, tenant: &Tenant, user: &str) -> Vec<String> {
    let subject = subject_flag(user);
    let suffix = match shape.action {
        Action::Read => "reader",
        Action::Write => "writer",
        Action::Manage => "manager",
    };
    let qualified = if shape.group.is_empty() {
        shape.resource.to_string()
    } else {
        format!("{}.{}", shape.resource, shape.group)
    };
    let mut lines = Vec::new();
    match shape.mapping {
        SarMapping::Namespace => {
            let kit = KIT_ROLES.iter().find(|r| {
                r.product == shape.product
                    && r.group == shape.group
                    && r.resource == shape.resource
                    && r.verb == shape.verb
            });
            let role = match kit {
                Some(r) => r.name.to_string(),
                None => {
                    let role = dns_name(&format!("{}-{}-{suffix}", shape.product, shape.resource));
                    lines.push(format!(
                        "kubectl create role {role} --namespace {tenant} --verb {} --resource {}",
                        quote(shape.verb),
                        quote(&qualified),
                    ));
                    role
                }
            };
            lines.push(format!(
                "kubectl create rolebinding {} --namespace {tenant} --role {role} {}",
                dns_name(&format!("{role}-{}", subject.slug)),
                subject.flag,
            ));
        }
        SarMapping::TempoGateway => {
            let role = dns_name(&format!(
                "{}-{tenant}-{}-{suffix}",
                shape.product, shape.resource
            ));
            lines.push(format!(
                "kubectl create clusterrole {role} --verb {} --resource {} --resource-name {}",
                quote(shape.verb),
                quote(&format!(
                    "{tenant}{}",
                    if shape.group.is_empty() {
                        String::new()
                    } else {
                        format!(".{}", shape.group)
                    }
                )),
                quote(shape.resource),
            ));
            lines.push(format!(
                "kubectl create clusterrolebinding {} --clusterrole {role} {}",
                dns_name(&format!("{role}-{}", subject.slug)),
                subject.flag,
            ));
        }
    }
    lines
}

struct SubjectFlag {
    flag: String,
    slug: String,
}

/// `--serviceaccount ns:name` for a ServiceAccount's user name, else `--user NAME`.
fn subject_flag(user: &str) -> SubjectFlag {
    if let Some(rest) = user.strip_prefix("system:serviceaccount:") {
        if let Some((ns, name)) = rest.split_once(':') {
            if !ns.is_empty() && !name.is_empty() && !name.contains(':') {
                return SubjectFlag {
                    flag: format!("--serviceaccount {}", quote(&format!("{ns}:{name}"))),
                    slug: format!("{ns}-{name}"),
                };
            }
        }
    }
    SubjectFlag {
        flag: format!("--user {}", quote(user)),
        slug: user.to_string(),
    }
}

/// A valid object name (DNS-1123 subdomain, at most 253) made from `s`.
fn dns_name(s: &str) -> String {
    let mut out: String = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    out.truncate(253);
    let trimmed = out.trim_matches(|c: char| c == '-' || c == '.');
    if trimmed.is_empty() {
        "binding".to_string()
    } else {
        trimmed.to_string()
    }
}

/// `s` as one word for a POSIX shell: as is when it has only safe characters, else single
/// quoted.
pub fn quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The edit of the config file that would allow the request with the static backend: widen
/// the closest grant when one gap separates it, else add a grant.
pub fn static_fix(
    found: &GrantMatch,
    user: &str,
    tenant: &Tenant,
    product: Product,
    action: Action,
) -> Option<String> {
    let new_grant = || {
        format!(
            "add to static.grants: {{users: [{}], tenants: [{tenant}], products: [{product}], actions: [{action}]}}",
            yaml_scalar(user)
        )
    };
    Some(match found {
        GrantMatch::Matched(_) => return None,
        GrantMatch::NoGrants => new_grant(),
        GrantMatch::Closest { grant, missing } => match missing.as_slice() {
            [Missing::Tenant] => format!("add {tenant} to static.grants[{}].tenants", grant.index),
            [Missing::Action] => format!("add {action} to static.grants[{}].actions", grant.index),
            [Missing::Product] => {
                format!("add {product} to static.grants[{}].products", grant.index)
            }
            _ => new_grant(),
        },
    })
}

/// A YAML flow scalar: plain when it cannot be misread, else double quoted.
fn yaml_scalar(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_.:/@".contains(c);
    if !s.is_empty() && s.chars().all(plain) && !s.ends_with(':') {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::review::static_::GrantView;

    fn t(s: &str) -> Tenant {
        Tenant::parse(s).unwrap()
    }

    fn shape(
        product: Product,
        action: Action,
        group: &'static str,
        resource: &'static str,
        verb: &'static str,
    ) -> SarShape<'static> {
        SarShape {
            mapping: SarMapping::Namespace,
            product,
            action,
            group,
            resource,
            verb,
        }
    }

    #[test]
    fn a_kit_role_needs_only_a_rolebinding_of_the_service_account() {
        let lines = kubectl_fix(
            &shape(
                Product::Tempo,
                Action::Read,
                "tempo.grafana.com",
                "traces",
                "get",
            ),
            &t("payments"),
            "system:serviceaccount:showcase:grafana",
        );
        assert_eq!(
            lines,
            ["kubectl create rolebinding tempo-traces-reader-showcase-grafana --namespace payments \
              --role tempo-traces-reader --serviceaccount showcase:grafana"]
        );
    }

    #[test]
    fn without_a_kit_role_the_role_is_created_first_and_a_user_is_quoted() {
        let lines = kubectl_fix(
            &shape(
                Product::Loki,
                Action::Manage,
                "loki.grafana.com",
                "logs",
                "update",
            ),
            &t("team-a"),
            "Jane O'Neil",
        );
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(
            lines[0],
            "kubectl create role loki-logs-manager --namespace team-a --verb update --resource logs.loki.grafana.com"
        );
        assert!(
            lines[1].starts_with("kubectl create rolebinding loki-logs-manager-jane-o-neil --namespace team-a --role loki-logs-manager --user 'Jane O'\\''Neil'"),
            "{}",
            lines[1]
        );
    }

    #[test]
    fn a_changed_resource_is_not_the_kit_role() {
        let lines = kubectl_fix(
            &shape(
                Product::Tempo,
                Action::Read,
                "tempo.grafana.com",
                "spans",
                "get",
            ),
            &t("a"),
            "alice",
        );
        assert!(
            lines[0].starts_with("kubectl create role tempo-spans-reader "),
            "{lines:?}"
        );
    }

    #[test]
    fn the_gateway_mapping_needs_a_cluster_role_on_the_tenant_resource() {
        let mut s = shape(
            Product::Tempo,
            Action::Write,
            "tempo.grafana.com",
            "traces",
            "create",
        );
        s.mapping = SarMapping::TempoGateway;
        let lines = kubectl_fix(&s, &t("payments"), "system:serviceaccount:otel:collector");
        assert_eq!(
            lines,
            [
                "kubectl create clusterrole tempo-payments-traces-writer --verb create --resource payments.tempo.grafana.com --resource-name traces",
                "kubectl create clusterrolebinding tempo-payments-traces-writer-otel-collector --clusterrole tempo-payments-traces-writer --serviceaccount otel:collector",
            ]
        );
    }

    #[test]
    fn kit_roles_are_the_ones_the_manifests_ship() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/tenants");
        for role in KIT_ROLES {
            let file = ["template", "logs-and-metrics"]
                .iter()
                .map(|d| format!("{root}/{d}/role-{}.yaml", role.name))
                .find(|p| std::path::Path::new(p).exists())
                .unwrap_or_else(|| panic!("no manifest for the kit Role {}", role.name));
            let text = std::fs::read_to_string(&file).unwrap();
            for needle in [
                format!("name: {}", role.name),
                format!("apiGroups: [{}]", role.group),
                format!("resources: [{}]", role.resource),
                format!("verbs: [{}]", role.verb),
            ] {
                assert!(text.contains(&needle), "{file} lacks {needle:?}");
            }
            let preset = crate::routes::preset(role.product);
            assert_eq!((preset.group, preset.resource), (role.group, role.resource));
        }
    }

    fn grant(index: usize) -> GrantView {
        GrantView {
            index,
            users: vec!["alice".into()],
            groups: vec![],
            tenants: vec!["a".into()],
            products: vec![],
            actions: vec![Action::Read],
        }
    }

    #[test]
    fn one_gap_widens_the_closest_grant_more_adds_one() {
        let closest = |missing| GrantMatch::Closest {
            grant: grant(2),
            missing,
        };
        let fix = |m| static_fix(&closest(m), "alice", &t("b"), Product::Loki, Action::Write);
        assert_eq!(
            fix(vec![Missing::Tenant]).as_deref(),
            Some("add b to static.grants[2].tenants")
        );
        assert_eq!(
            fix(vec![Missing::Action]).as_deref(),
            Some("add write to static.grants[2].actions")
        );
        assert_eq!(
            fix(vec![Missing::Product]).as_deref(),
            Some("add loki to static.grants[2].products")
        );
        assert_eq!(
            fix(vec![Missing::Tenant, Missing::Action]).as_deref(),
            Some("add to static.grants: {users: [alice], tenants: [b], products: [loki], actions: [write]}")
        );
        assert_eq!(
            static_fix(&GrantMatch::NoGrants, "a user", &t("b"), Product::Tempo, Action::Read).as_deref(),
            Some("add to static.grants: {users: [\"a user\"], tenants: [b], products: [tempo], actions: [read]}")
        );
        assert_eq!(
            static_fix(
                &GrantMatch::Matched(grant(0)),
                "alice",
                &t("a"),
                Product::Tempo,
                Action::Read
            ),
            None
        );
    }

    #[test]
    fn quoting_keeps_plain_words_and_wraps_the_rest() {
        assert_eq!(quote("showcase:grafana"), "showcase:grafana");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("$(x)"), "'$(x)'");
    }
}
