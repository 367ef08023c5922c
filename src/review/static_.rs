//! The static backend: identities by token SHA-256 and grants from the config file, swapped
//! atomically on reload so no check ever sees half a file.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::{Authentication, ReviewError, Reviewer, Verdict};
use crate::config::StaticConfig;
use crate::model::{Action, BearerToken, Identity, Product, Tenant, TokenHash};

/// Identities and grants, compiled for lookups.
#[derive(Debug, Default)]
struct Data {
    identities: HashMap<TokenHash, Identity>,
    grants: Vec<Grant>,
}

#[derive(Debug)]
struct Grant {
    users: Vec<String>,
    groups: Vec<String>,
    /// `None`: every tenant.
    tenants: Option<Vec<String>>,
    /// Empty: every product.
    products: Vec<Product>,
    actions: Vec<Action>,
}

impl Grant {
    fn allows(
        &self,
        identity: &Identity,
        tenant: &Tenant,
        product: Product,
        action: Action,
    ) -> bool {
        self.misses(identity, tenant, product, action).is_empty()
    }

    /// What this grant lacks to allow the request; empty when it allows it.
    fn misses(
        &self,
        identity: &Identity,
        tenant: &Tenant,
        product: Product,
        action: Action,
    ) -> Vec<Missing> {
        let subject = self.users.contains(&identity.username)
            || self
                .groups
                .iter()
                .any(|g| identity.groups.iter().any(|ig| ig == g));
        let tenant_ok = self
            .tenants
            .as_ref()
            .is_none_or(|ts| ts.iter().any(|t| t == tenant.as_str()));
        let product_ok = self.products.is_empty() || self.products.contains(&product);
        [
            (!subject).then_some(Missing::Subject),
            (!tenant_ok).then_some(Missing::Tenant),
            (!product_ok).then_some(Missing::Product),
            (!self.actions.contains(&action)).then_some(Missing::Action),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    fn view(&self, index: usize) -> GrantView {
        GrantView {
            index,
            users: self.users.clone(),
            groups: self.groups.clone(),
            tenants: self.tenants.clone().unwrap_or_else(|| vec!["*".into()]),
            products: self.products.clone(),
            actions: self.actions.clone(),
        }
    }
}

/// What a grant does not cover of a request (`tenant-authz explain`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Missing {
    /// Names neither the user nor any of its groups.
    Subject,
    Tenant,
    Product,
    Action,
}

impl Missing {
    pub fn as_str(self) -> &'static str {
        match self {
            Missing::Subject => "subject",
            Missing::Tenant => "tenant",
            Missing::Product => "product",
            Missing::Action => "action",
        }
    }
}

/// A grant as the config file states it, with its position in `static.grants`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct GrantView {
    pub index: usize,
    pub users: Vec<String>,
    pub groups: Vec<String>,
    /// Names, or `["*"]`.
    pub tenants: Vec<String>,
    /// Empty: every product.
    pub products: Vec<Product>,
    pub actions: Vec<Action>,
}

/// Which grant decides a request (`tenant-authz explain`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GrantMatch {
    /// The first grant that allows it.
    Matched(GrantView),
    /// No grant allows it; this one comes closest, lacking `missing`.
    Closest {
        grant: GrantView,
        missing: Vec<Missing>,
    },
    /// There are no grants at all.
    NoGrants,
}

/// Closeness of a grant that does not allow a request: lower is closer. A grant for another
/// subject weighs twice as much as any other gap, so "your own grant, on another tenant" (or
/// "the right tenant, a different action") is shown before someone else's grant.
fn distance(missing: &[Missing]) -> usize {
    missing
        .iter()
        .map(|m| if *m == Missing::Subject { 2 } else { 1 })
        .sum()
}

/// Parses a validated config's hex hash.
fn parse_hash(hex: &str) -> Option<TokenHash> {
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(TokenHash(out))
}

impl Data {
    fn compile(config: &StaticConfig) -> Self {
        let identities = config
            .identities
            .iter()
            .filter_map(|id| {
                Some((
                    parse_hash(&id.sha256)?,
                    Identity {
                        username: id.username.clone(),
                        uid: String::new(),
                        groups: id.groups.clone(),
                        extra: Default::default(),
                    },
                ))
            })
            .collect();
        let grants = config
            .grants
            .iter()
            .map(|g| Grant {
                users: g.users.clone(),
                groups: g.groups.clone(),
                tenants: (!g.tenants.iter().any(|t| t == "*")).then(|| g.tenants.clone()),
                products: g.products.clone(),
                actions: g.actions.clone(),
            })
            .collect();
        Self { identities, grants }
    }
}

/// Answers reviews from the static section of the config.
#[derive(Debug, Default)]
pub struct StaticReviewer {
    data: RwLock<Arc<Data>>,
}

impl StaticReviewer {
    /// Built from a validated config (`Config::validate` checks hashes and tenants).
    pub fn new(config: &StaticConfig) -> Self {
        Self {
            data: RwLock::new(Arc::new(Data::compile(config))),
        }
    }

    /// Swaps in new identities and grants; checks in flight finish on the old ones.
    pub fn replace(&self, config: &StaticConfig) {
        let data = Arc::new(Data::compile(config));
        *self.data.write().unwrap_or_else(|p| p.into_inner()) = data;
    }

    /// The grant that allows `identity` to do `action` on `tenant` in `product`, or the
    /// closest one that does not (fewest gaps, by [`distance`]; the first in the file on a
    /// tie). Same rules as [`Reviewer::authorize`], which allows exactly when this matches.
    pub fn explain_access(
        &self,
        identity: &Identity,
        tenant: &Tenant,
        product: Product,
        action: Action,
    ) -> GrantMatch {
        let data = self.snapshot();
        let mut closest: Option<(usize, usize, Vec<Missing>)> = None;
        for (i, grant) in data.grants.iter().enumerate() {
            let missing = grant.misses(identity, tenant, product, action);
            if missing.is_empty() {
                return GrantMatch::Matched(grant.view(i));
            }
            let d = distance(&missing);
            if closest.as_ref().is_none_or(|(best, _, _)| d < *best) {
                closest = Some((d, i, missing));
            }
        }
        match closest {
            Some((_, i, missing)) => GrantMatch::Closest {
                grant: data.grants[i].view(i),
                missing,
            },
            None => GrantMatch::NoGrants,
        }
    }

    fn snapshot(&self) -> Arc<Data> {
        self.data.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Reviewer for Arc<StaticReviewer> {
    async fn authenticate(&self, token: &BearerToken) -> Result<Authentication, ReviewError> {
        Ok(match self.snapshot().identities.get(&token.hash()) {
            Some(identity) => Authentication::Authenticated {
                identity: identity.clone(),
                audiences: Vec::new(),
            },
            None => Authentication::Unauthenticated {
                detail: Some("unknown token".into()),
            },
        })
    }

    async fn authorize(
        &self,
        identity: &Identity,
        tenant: &Tenant,
        product: Product,
        action: Action,
    ) -> Result<Verdict, ReviewError> {
        let data = self.snapshot();
        Ok(
            if data
                .grants
                .iter()
                .any(|g| g.allows(identity, tenant, product, action))
            {
                Verdict::Allowed
            } else {
                Verdict::Denied { detail: None }
            },
        )
    }

    fn name(&self) -> &'static str {
        "the static backend"
    }

    fn remedy(&self, tenant: &Tenant, product: Product, action: Action) -> String {
        match product {
            // Tempo's wording is unchanged from before there were products.
            Product::Tempo => format!(
                "add a grant with action {action} on tenant \"{tenant}\" to the static backend's config"
            ),
            _ => format!(
                "add a grant with action {action} on tenant \"{tenant}\" for product {product} to the static backend's config"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{StaticGrant, StaticIdentity};

    fn config() -> StaticConfig {
        StaticConfig {
            identities: vec![StaticIdentity {
                sha256: BearerToken::from_secret("tok".into()).hash().to_hex(),
                username: "alice".into(),
                groups: vec!["team".into()],
            }],
            grants: vec![
                StaticGrant {
                    users: vec![],
                    groups: vec!["team".into()],
                    tenants: vec!["a".into()],
                    products: vec![],
                    actions: vec![Action::Read],
                },
                StaticGrant {
                    users: vec!["alice".into()],
                    groups: vec![],
                    tenants: vec!["*".into()],
                    products: vec![Product::Tempo],
                    actions: vec![Action::Write],
                },
            ],
        }
    }

    fn t(name: &str) -> Tenant {
        Tenant::parse(name).unwrap()
    }

    #[tokio::test]
    async fn tokens_are_known_by_hash_only() {
        let r = Arc::new(StaticReviewer::new(&config()));
        let ok = r
            .authenticate(&BearerToken::from_secret("tok".into()))
            .await;
        assert!(
            matches!(ok, Ok(Authentication::Authenticated { identity, .. }) if identity.username == "alice")
        );
        let no = r
            .authenticate(&BearerToken::from_secret("other".into()))
            .await;
        assert!(matches!(no, Ok(Authentication::Unauthenticated { .. })));
    }

    #[tokio::test]
    async fn grants_match_users_groups_tenants_and_actions() {
        let r = Arc::new(StaticReviewer::new(&config()));
        let alice = Identity {
            username: "alice".into(),
            groups: vec!["team".into()],
            ..Default::default()
        };
        let bob = Identity {
            username: "bob".into(),
            groups: vec!["team".into()],
            ..Default::default()
        };
        let allowed = |r: Result<Verdict, ReviewError>| r == Ok(Verdict::Allowed);
        assert!(allowed(
            r.authorize(&bob, &t("a"), Product::Tempo, Action::Read)
                .await
        ));
        assert!(!allowed(
            r.authorize(&bob, &t("b"), Product::Tempo, Action::Read)
                .await
        ));
        assert!(!allowed(
            r.authorize(&bob, &t("a"), Product::Tempo, Action::Write)
                .await
        ));
        assert!(allowed(
            r.authorize(&alice, &t("anything"), Product::Tempo, Action::Write)
                .await
        ));
        assert!(!allowed(
            r.authorize(&alice, &t("b"), Product::Tempo, Action::Manage)
                .await
        ));
        // A grant without products applies to every product; one naming products, to those.
        assert!(allowed(
            r.authorize(&bob, &t("a"), Product::Loki, Action::Read)
                .await
        ));
        assert!(!allowed(
            r.authorize(&alice, &t("anything"), Product::Loki, Action::Write)
                .await
        ));
    }

    #[test]
    fn explain_access_names_the_matching_or_the_closest_grant() {
        let r = StaticReviewer::new(&config());
        let bob = Identity {
            username: "bob".into(),
            groups: vec!["team".into()],
            ..Default::default()
        };
        let carol = Identity {
            username: "carol".into(),
            ..Default::default()
        };
        assert!(matches!(
            r.explain_access(&bob, &t("a"), Product::Tempo, Action::Read),
            GrantMatch::Matched(GrantView { index: 0, .. })
        ));
        // bob's own grant on another tenant is closer than alice's grant that has the tenant.
        assert_eq!(
            r.explain_access(&bob, &t("b"), Product::Tempo, Action::Read),
            GrantMatch::Closest {
                grant: Data::compile(&config()).grants[0].view(0),
                missing: vec![Missing::Tenant],
            }
        );
        // Right tenant, wrong action.
        match r.explain_access(&bob, &t("a"), Product::Tempo, Action::Manage) {
            GrantMatch::Closest { grant, missing } => {
                assert_eq!((grant.index, missing), (0, vec![Missing::Action]));
            }
            other => panic!("{other:?}"),
        }
        // Nobody's grant: the subject is missing everywhere; the first of the closest wins.
        match r.explain_access(&carol, &t("z"), Product::Loki, Action::Write) {
            GrantMatch::Closest { grant, missing } => {
                assert_eq!(grant.index, 1);
                assert_eq!(grant.tenants, vec!["*".to_string()]);
                assert_eq!(missing, vec![Missing::Subject, Missing::Product]);
            }
            other => panic!("{other:?}"),
        }
        let empty = StaticReviewer::new(&StaticConfig::default());
        assert_eq!(
            empty.explain_access(&bob, &t("a"), Product::Tempo, Action::Read),
            GrantMatch::NoGrants
        );
    }

    #[tokio::test]
    async fn replace_swaps_the_data() {
        let r = Arc::new(StaticReviewer::new(&config()));
        r.replace(&StaticConfig::default());
        let no = r
            .authenticate(&BearerToken::from_secret("tok".into()))
            .await;
        assert!(matches!(no, Ok(Authentication::Unauthenticated { .. })));
    }
}
