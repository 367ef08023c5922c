//! The `products` section: which product a request is for when its route does not say, and
//! each product's SAR resource and action table. Tempo's are `authorization.group`,
//! `authorization.resource` and `actions`, where they were before there were products.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::Product;
use crate::routes::{self, ActionConfig};

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProductsConfig {
    /// Product of a request whose route sets no `product` context extension and whose
    /// listener port is not in `by_port`.
    pub default: Product,
    /// Product by the port the request reached (the CheckRequest's destination, which Envoy
    /// sets, never the client): for listeners without context extensions, such as Istio's
    /// inbound sidecar listeners (`{3100: loki, 8080: mimir}`).
    pub by_port: BTreeMap<u16, Product>,
    pub loki: ProductConfig,
    pub mimir: ProductConfig,
    pub pyroscope: ProductConfig,
}

impl Default for ProductsConfig {
    fn default() -> Self {
        Self {
            default: Product::Tempo,
            by_port: BTreeMap::new(),
            loki: ProductConfig::preset(Product::Loki),
            mimir: ProductConfig::preset(Product::Mimir),
            pyroscope: ProductConfig::preset(Product::Pyroscope),
        }
    }
}

/// One product's SAR resource and action table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProductConfig {
    /// SAR `resourceAttributes.group`.
    pub group: String,
    /// SAR `resourceAttributes.resource` (with `mapping: tempo-gateway`, the SAR's `name`).
    pub resource: String,
    /// Action inference when the route sets no `action`.
    pub actions: ActionConfig,
}

impl ProductConfig {
    /// The built-in preset (`crate::routes`).
    pub fn preset(product: Product) -> Self {
        let p = routes::preset(product);
        Self {
            group: p.group.into(),
            resource: p.resource.into(),
            actions: (p.actions)(),
        }
    }
}

/// A product's section as written: a missing field takes that product's preset.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartialProduct {
    group: Option<String>,
    resource: Option<String>,
    actions: Option<ActionConfig>,
}

impl PartialProduct {
    fn fill(self, product: Product) -> ProductConfig {
        let preset = ProductConfig::preset(product);
        ProductConfig {
            group: self.group.unwrap_or(preset.group),
            resource: self.resource.unwrap_or(preset.resource),
            actions: self.actions.unwrap_or(preset.actions),
        }
    }
}

impl<'de> Deserialize<'de> for ProductsConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            #[serde(default)]
            default: Option<Product>,
            #[serde(default)]
            by_port: BTreeMap<u16, Product>,
            #[serde(default)]
            loki: Option<PartialProduct>,
            #[serde(default)]
            mimir: Option<PartialProduct>,
            #[serde(default)]
            pyroscope: Option<PartialProduct>,
        }
        let raw = Raw::deserialize(d)?;
        let fill = |p: Option<PartialProduct>, product| match p {
            Some(p) => p.fill(product),
            None => ProductConfig::preset(product),
        };
        Ok(Self {
            default: raw.default.unwrap_or(Product::Tempo),
            by_port: raw.by_port,
            loki: fill(raw.loki, Product::Loki),
            mimir: fill(raw.mimir, Product::Mimir),
            pyroscope: fill(raw.pyroscope, Product::Pyroscope),
        })
    }
}

impl ProductsConfig {
    /// The (group, resource) a product's SAR asks about, Tempo's from `authorization`.
    pub fn sar_resource<'a>(
        &'a self,
        product: Product,
        tempo: &'a super::SarConfig,
    ) -> (&'a str, &'a str) {
        match product {
            Product::Tempo => (&tempo.group, &tempo.resource),
            other => {
                let p = self
                    .get(other)
                    .expect("every product but Tempo has a section");
                (&p.group, &p.resource)
            }
        }
    }

    /// The section of a product other than Tempo.
    pub fn get(&self, product: Product) -> Option<&ProductConfig> {
        match product {
            Product::Tempo => None,
            Product::Loki => Some(&self.loki),
            Product::Mimir => Some(&self.mimir),
            Product::Pyroscope => Some(&self.pyroscope),
        }
    }

    /// Checks each section, errors naming the field (`products.loki.actions.rules[2]`).
    pub fn validate(&self) -> Result<(), (String, String)> {
        for product in Product::ALL {
            let Some(p) = self.get(product) else { continue };
            let field = |f: &str| format!("products.{product}.{f}");
            for (f, value) in [("group", &p.group), ("resource", &p.resource)] {
                if value.chars().any(|c| c.is_whitespace()) || (f == "resource" && value.is_empty())
                {
                    return Err((field(f), format!("{value:?} is empty or has whitespace")));
                }
            }
            p.actions.validate(&field("actions"))?;
        }
        Ok(())
    }
}
