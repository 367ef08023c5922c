//! static_backend: a config file with `backend: static` -> StaticReviewer lookups.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tenant_authz::config::{Backend, Config, StaticConfig};
use tenant_authz::model::{Action, BearerToken, Identity, Product, Tenant};
use tenant_authz::review::static_::StaticReviewer;
use tenant_authz::review::{Authentication, Reviewer, Verdict};

use super::quotes;

/// The demo's tokens (examples/static.yaml lists their hashes) and one more.
pub const KNOWN_TOKENS: &[&str] = &[
    "demo-showcase-grafana-token",
    "demo-showcase-otel-collector-token",
    "demo-payments-grafana-token",
    "demo-payments-otel-collector-token",
    "demo-sre-token",
    "tok",
];

/// Polls a future that must not wait (the static backend answers from memory).
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the static backend waited"),
    }
}

pub fn static_backend(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // What reload.rs does with a changed file.
    let Ok(config) = Config::from_yaml(text) else {
        return;
    };
    if config.validate().is_err() || config.backend != Backend::Static {
        return;
    }
    let s = &config.static_;
    let reviewer = Arc::new(StaticReviewer::new(s));
    check_static(&reviewer, s);
    // A reload of the same file answers the same.
    reviewer.replace(s);
    check_static(&reviewer, s);
}

fn check_static(reviewer: &Arc<StaticReviewer>, s: &StaticConfig) {
    for token in KNOWN_TOKENS {
        let secret = BearerToken::from_secret(token.to_string());
        let hex = secret.hash().to_hex();
        let expected = s.identities.iter().find(|i| i.sha256 == hex);
        match (ready(reviewer.authenticate(&secret)), expected) {
            (Ok(Authentication::Authenticated { identity, .. }), Some(want)) => {
                assert_eq!(identity.username, want.username);
                assert_eq!(identity.groups, want.groups);
            }
            (Ok(Authentication::Unauthenticated { detail }), None) => {
                // ("tok" is in "unknown token": only a long token can be told apart.)
                let detail = detail.unwrap_or_default();
                assert!(token.len() < 12 || !quotes(&detail, token), "{detail}");
            }
            (got, want) => panic!("token {token}: got {got:?}, config says {want:?}"),
        }
    }
    // Every subject the file names, against every tenant it names and one it does not.
    let mut subjects: Vec<Identity> = s
        .identities
        .iter()
        .map(|i| Identity {
            username: i.username.clone(),
            groups: i.groups.clone(),
            ..Identity::default()
        })
        .collect();
    for g in &s.grants {
        subjects.extend(g.users.iter().map(|u| Identity {
            username: u.clone(),
            ..Identity::default()
        }));
        subjects.extend(g.groups.iter().map(|group| Identity {
            username: "someone-else".into(),
            groups: vec![group.clone()],
            ..Identity::default()
        }));
    }
    subjects.truncate(16);
    let mut tenants: Vec<Tenant> = s
        .grants
        .iter()
        .flat_map(|g| g.tenants.iter())
        .filter_map(|t| Tenant::parse(t).ok())
        .take(16)
        .collect();
    tenants.push(Tenant::parse("zz-not-named").expect("a namespace name"));
    for subject in &subjects {
        for tenant in &tenants {
            for (product, action) in Product::ALL
                .into_iter()
                .flat_map(|p| [Action::Read, Action::Write, Action::Manage].map(|a| (p, a)))
            {
                let want = s.grants.iter().any(|g| {
                    (g.users.contains(&subject.username)
                        || g.groups.iter().any(|x| subject.groups.contains(x)))
                        && g.tenants.iter().any(|t| t == "*" || t == tenant.as_str())
                        && (g.products.is_empty() || g.products.contains(&product))
                        && g.actions.contains(&action)
                });
                let got = ready(reviewer.authorize(subject, tenant, product, action));
                let allowed = match got {
                    Ok(Verdict::Allowed) => true,
                    Ok(Verdict::Denied { .. }) => false,
                    Err(e) => panic!("the static backend failed: {e}"),
                };
                assert_eq!(
                    allowed, want,
                    "{subject:?} {action} on {product} {tenant}: the file says {want}"
                );
            }
        }
    }
}
