//! CheckRequest -> (BearerToken, Tenants, Product, Action), or the 400/401 that says why not.
//! Parsing only: no I/O, no cache. After this point no code sees an unvalidated tenant.
//!
//! Client-supplied identity headers (`x-remote-user`, `x-forwarded-user`, `impersonate-*`) are
//! never read: only the bearer token says who the caller is.

use std::borrow::Cow;
use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::{address, socket_address};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};

use crate::config::{ActionConfig, Config};
use crate::model::{Action, BearerToken, DenyReason, Product, Tenant, Tenants};

/// Most tenants one request may name (each costs a SubjectAccessReview on a miss).
pub const MAX_TENANTS: usize = 64;

/// A request that passed parsing.
pub struct ParsedCheck {
    pub token: BearerToken,
    pub tenants: Tenants,
    pub product: Product,
    pub action: Action,
}

/// Turns CheckRequests into typed values, by the configured rules.
#[derive(Clone, Debug)]
pub struct RequestParser {
    tenant_header: String,
    max_token_bytes: usize,
    routes: Routes,
}

/// Which product a request is for, and each served product's action table.
///
/// The product comes from the route's `product` context extension; else from the port the
/// request reached (`by_port`: the CheckRequest's destination, which Envoy fills in, so a
/// client cannot choose it), for listeners without context extensions (Istio); else
/// `default`. A product without a table is not served: its requests are a 500 naming the
/// configuration error, never reviewed as another product's.
#[derive(Clone, Debug)]
pub struct Routes {
    default: Product,
    by_port: BTreeMap<u16, Product>,
    tables: [Option<ActionConfig>; Product::ALL.len()],
}

impl Routes {
    /// Tempo only, with this table.
    pub fn tempo_only(actions: ActionConfig) -> Self {
        let mut tables: [Option<ActionConfig>; Product::ALL.len()] = Default::default();
        tables[Product::Tempo.index()] = Some(actions);
        Self {
            default: Product::Tempo,
            by_port: BTreeMap::new(),
            tables,
        }
    }

    /// Every product, as configured (`actions` for Tempo, `products.*` for the others).
    pub fn from_config(config: &Config) -> Self {
        let tables = Product::ALL.map(|p| match config.products.get(p) {
            None => Some(config.actions.clone()),
            Some(section) => Some(section.actions.clone()),
        });
        Self {
            default: config.products.default,
            by_port: config.products.by_port.clone(),
            tables,
        }
    }

    /// The action table of a served product.
    pub fn table(&self, product: Product) -> Option<&ActionConfig> {
        self.tables[product.index()].as_ref()
    }

    /// The product of a request, or the configuration error that names why not.
    pub fn product(&self, attrs: Option<&AttributeContext>) -> Result<Product, DenyReason> {
        let product = match attrs.and_then(|a| a.context_extensions.get("product")) {
            Some(v) => Product::parse(v).ok_or_else(|| {
                DenyReason::Misconfigured(format!(
                    "the route sets context extension product={:?}; expected tempo, loki, mimir or pyroscope",
                    truncate(v, 32)
                ))
            })?,
            None => destination_port(attrs)
                .and_then(|port| self.by_port.get(&port).copied())
                .unwrap_or(self.default),
        };
        if self.table(product).is_none() {
            return Err(DenyReason::Misconfigured(format!(
                "the route is for {product}, which this tenant-authz does not serve"
            )));
        }
        Ok(product)
    }
}

/// The port of the listener the request reached, as Envoy reports it.
fn destination_port(attrs: Option<&AttributeContext>) -> Option<u16> {
    let address = attrs?
        .destination
        .as_ref()?
        .address
        .as_ref()?
        .address
        .as_ref()?;
    let address::Address::SocketAddress(socket) = address else {
        return None;
    };
    match socket.port_specifier.as_ref()? {
        socket_address::PortSpecifier::PortValue(port) => u16::try_from(*port).ok(),
        socket_address::PortSpecifier::NamedPort(_) => None,
    }
}

/// One header's value(s) in a CheckRequest.
#[derive(Debug, PartialEq, Eq)]
enum Header<'a> {
    Missing,
    One(&'a str),
    /// Sent more than once (only visible when Envoy encodes raw headers).
    Many,
    /// Not UTF-8.
    Invalid,
}

fn header<'a>(http: &'a HttpRequest, name: &str) -> Header<'a> {
    if let Some(v) = http.headers.get(name) {
        return Header::One(v);
    }
    // With `encode_raw_headers: true`, Envoy sends a list instead of the map.
    let Some(map) = &http.header_map else {
        return Header::Missing;
    };
    let mut found = Header::Missing;
    for h in map
        .headers
        .iter()
        .filter(|h| h.key.eq_ignore_ascii_case(name))
    {
        if found != Header::Missing {
            return Header::Many;
        }
        found = if h.raw_value.is_empty() {
            Header::One(&h.value)
        } else {
            match std::str::from_utf8(&h.raw_value) {
                Ok(v) => Header::One(v),
                Err(_) => Header::Invalid,
            }
        };
    }
    found
}

/// RFC 7230 optional whitespace.
fn trim_ows(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

impl RequestParser {
    /// A parser for Tempo only, with this action table.
    pub fn new(tenant_header: String, max_token_bytes: usize, actions: ActionConfig) -> Self {
        Self::with_routes(tenant_header, max_token_bytes, Routes::tempo_only(actions))
    }

    pub fn with_routes(tenant_header: String, max_token_bytes: usize, routes: Routes) -> Self {
        Self {
            tenant_header,
            max_token_bytes,
            routes,
        }
    }

    /// A parser for every product of the configuration.
    pub fn from_config(config: &Config) -> Self {
        Self::with_routes(
            config.tenant_header.clone(),
            config.max_token_bytes,
            Routes::from_config(config),
        )
    }

    /// Parses a CheckRequest. The action is returned even when the rest fails, for metrics.
    pub fn parse(&self, req: &CheckRequest) -> (Option<Action>, Result<ParsedCheck, DenyReason>) {
        let attrs = req.attributes.as_ref();
        let http = attrs
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref());
        let Some(http) = http else {
            return (
                None,
                Err(DenyReason::Misconfigured(
                    "the CheckRequest has no HTTP request attributes".into(),
                )),
            );
        };
        let product = match self.routes.product(attrs) {
            Ok(p) => p,
            Err(reason) => return (None, Err(reason)),
        };
        let action = match attrs.and_then(|a| a.context_extensions.get("action")) {
            Some(v) => match Action::parse(v) {
                Some(a) => a,
                None => {
                    return (
                        None,
                        Err(DenyReason::Misconfigured(format!(
                            "the route sets context extension action={:?}; expected read, write or manage",
                            truncate(v, 32)
                        ))),
                    )
                }
            },
            None => {
                let table = self.routes.table(product);
                match table.and_then(|t| t.infer(&http.method, &normalize_path(&http.path))) {
                    Some(a) => a,
                    None => return (None, Err(DenyReason::NotTenantPath)),
                }
            }
        };
        let parsed = self.token(http).and_then(|token| {
            let tenants = self.tenants(http)?;
            Ok(ParsedCheck {
                token,
                tenants,
                product,
                action,
            })
        });
        (Some(action), parsed)
    }

    fn token(&self, http: &HttpRequest) -> Result<BearerToken, DenyReason> {
        let value = match header(http, "authorization") {
            Header::Missing => return Err(DenyReason::MissingCredentials),
            Header::Many => {
                return Err(DenyReason::MalformedCredentials(
                    "more than one Authorization header",
                ))
            }
            Header::Invalid => {
                return Err(DenyReason::MalformedCredentials(
                    "the Authorization header is not valid UTF-8",
                ))
            }
            Header::One(v) => trim_ows(v),
        };
        if value.is_empty() {
            return Err(DenyReason::MissingCredentials);
        }
        let (scheme, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            // Never echo the value: a bare token would be its "scheme".
            return Err(DenyReason::MalformedCredentials(
                "the Authorization scheme must be Bearer",
            ));
        }
        let token = trim_ows(rest);
        if token.is_empty() {
            return Err(DenyReason::MalformedCredentials(
                "the bearer token is empty",
            ));
        }
        if token.len() > self.max_token_bytes {
            return Err(DenyReason::TokenTooLong {
                limit: self.max_token_bytes,
            });
        }
        let token68 = |b: u8| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b);
        if !token.bytes().all(token68) {
            return Err(DenyReason::MalformedCredentials(
                "the bearer token has characters outside RFC 6750's token68 set",
            ));
        }
        Ok(BearerToken::new(token.to_string()))
    }

    fn tenants(&self, http: &HttpRequest) -> Result<Tenants, DenyReason> {
        let name = &self.tenant_header;
        let bad = DenyReason::BadTenant;
        let value = match header(http, name) {
            Header::Missing => {
                return Err(bad(format!(
                    "missing header {name}: set it to your tenant (your namespace)"
                )))
            }
            Header::Many => return Err(bad(format!("more than one {name} header"))),
            Header::Invalid => return Err(bad(format!("header {name} is not valid UTF-8"))),
            Header::One(v) => trim_ows(v),
        };
        if value.is_empty() {
            return Err(bad(format!(
                "header {name} is empty: set it to your tenant (your namespace)"
            )));
        }
        if value.contains(',') {
            return Err(bad(format!(
                "header {name} was sent more than once or contains ','; send one header, tenants separated by '|'"
            )));
        }
        let mut list = Vec::new();
        for part in value.split('|') {
            if part.is_empty() {
                return Err(bad(format!(
                    "empty tenant in {name}; separate tenants with a single '|'"
                )));
            }
            // The value is not echoed: a misconfigured client may put a credential here.
            let tenant = Tenant::parse(part).map_err(|e| {
                bad(format!(
                    "tenant #{} in {name} is not a namespace name: {e}",
                    list.len() + 1
                ))
            })?;
            if list.contains(&tenant) {
                return Err(bad(format!("tenant {tenant:?} appears twice in {name}")));
            }
            list.push(tenant);
            if list.len() > MAX_TENANTS {
                return Err(bad(format!("more than {MAX_TENANTS} tenants in {name}")));
            }
        }
        Tenants::new(list).ok_or_else(|| bad(format!("no tenant in {name}")))
    }
}

fn truncate(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &s[..end]))
}

/// The path the action rules see: no query string or fragment, percent-decoded, repeated
/// slashes merged, `.` and `..` segments resolved, no trailing slash. A client cannot make a
/// write look like a read by spelling the path differently from how the backend routes it.
pub fn normalize_path(raw: &str) -> String {
    let path = raw.split(['?', '#']).next().unwrap_or("");
    let decoded = percent_decode(path);
    let mut segments: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len() + 1);
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

#[cfg(test)]
#[path = "request_tests.rs"]
pub(crate) mod tests;
