//! The static backend's section: identities by token hash, and grants.

use serde::{Deserialize, Serialize};

use crate::model::{Action, Product};

/// The static backend's data: who a token is (by SHA-256, never the token), and what they
/// may do.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StaticConfig {
    pub identities: Vec<StaticIdentity>,
    pub grants: Vec<StaticGrant>,
}

impl StaticConfig {
    pub fn is_empty(&self) -> bool {
        self.identities.is_empty() && self.grants.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StaticIdentity {
    /// Lowercase hex SHA-256 of the token (`tenant-authz hash-token`).
    pub sha256: String,
    pub username: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StaticGrant {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Namespace names, or `*` for every tenant.
    pub tenants: Vec<String>,
    /// Products the grant applies to (`tempo`, `loki`, `mimir`, `pyroscope`); empty or
    /// absent: every product.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub products: Vec<Product>,
    pub actions: Vec<Action>,
}
