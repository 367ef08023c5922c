//! The `traces` section: tenant-authz's own spans, exported over OTLP/gRPC. Off by default.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Error;

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracesConfig {
    /// OTLP/gRPC endpoint of a collector or of Tempo's distributor, `http://host:4317`.
    /// Unset: no tracer at all, and no work per Check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Share of Checks sampled when the request carries no `traceparent` (a root). A Check
    /// with a parent follows the parent's sampled flag, whatever this is.
    pub sampling_ratio: f64,
    /// gRPC metadata sent with each export, e.g. `x-scope-orgid: platform` for a
    /// multi-tenant Tempo. Names lowercase.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Whether a Check whose only parent is the client's own `traceparent` (Envoy sent none)
    /// follows that header's sampled flag. Off: the client's trace is joined, but whether to
    /// trace is decided by `sampling_ratio`, so a client cannot have every Check traced.
    pub follow_client_sampled: bool,
}

impl Default for TracesConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            sampling_ratio: 0.01,
            headers: BTreeMap::new(),
            service_name: "tenant-authz".into(),
            follow_client_sampled: false,
        }
    }
}

impl TracesConfig {
    /// Checks the section; errors name the field (`traces.sampling_ratio`, …).
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |field: &str, reason: String| {
            Err(Error::ConfigInvalid {
                field: format!("traces.{field}"),
                reason,
            })
        };
        if let Some(endpoint) = &self.endpoint {
            // Credentials belong in `traces.headers`; a URL is logged and quoted in errors.
            // Checked before anything quotes the endpoint.
            let authority = endpoint
                .split_once("://")
                .map_or(endpoint.as_str(), |(_, r)| r);
            if authority.split('/').next().unwrap_or("").contains('@') {
                return invalid(
                    "endpoint",
                    "must not carry user information (user:password@); send credentials in \
                     traces.headers"
                        .into(),
                );
            }
            match endpoint.parse::<tonic::transport::Uri>() {
                Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => {}
                Ok(uri) if uri.scheme_str() == Some("https") => {
                    return invalid(
                        "endpoint",
                        format!(
                            "{endpoint:?}: https is not supported; export in plain gRPC to an \
                             in-cluster collector or distributor (http://host:4317)"
                        ),
                    )
                }
                _ => {
                    return invalid(
                        "endpoint",
                        format!("{endpoint:?} is not an http://host:port URL"),
                    )
                }
            }
        }
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return invalid(
                "sampling_ratio",
                format!("{} is outside 0..=1", self.sampling_ratio),
            );
        }
        for (name, value) in &self.headers {
            let lowercase = name.bytes().all(|b| !b.is_ascii_uppercase());
            if !lowercase
                || tonic::metadata::MetadataKey::<tonic::metadata::Ascii>::from_bytes(
                    name.as_bytes(),
                )
                .is_err()
                || name.ends_with("-bin")
            {
                // The name is not shown: a mistyped `authorization: Basic …=` lands here whole.
                return invalid(
                    "headers",
                    "a name is not a lowercase ASCII gRPC metadata name (not shown: it may hold \
                     a credential)"
                        .into(),
                );
            }
            if tonic::metadata::MetadataValue::try_from(value.as_str()).is_err() {
                return invalid(
                    &format!("headers.{name}"),
                    "the value is not visible ASCII".into(),
                );
            }
        }
        if self.service_name.trim().is_empty() {
            return invalid("service_name", "is empty".into());
        }
        Ok(())
    }
}

/// `name=value` pairs, as `--traces-headers` and `TENANT_AUTHZ_TRACES_HEADERS` take them.
pub fn parse_headers(pairs: &[String]) -> Result<BTreeMap<String, String>, Error> {
    pairs
        .iter()
        .filter(|p| !p.trim().is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) => Ok((name.trim().to_string(), value.trim().to_string())),
            // Not quoted: a pair written `authorization: Basic …` would print the credential.
            None => Err(Error::ConfigInvalid {
                field: "traces.headers".into(),
                reason: "an entry is not name=value (its text is not shown: it may hold a \
                         credential)"
                    .into(),
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(c: &TracesConfig) -> String {
        match c.validate() {
            Err(Error::ConfigInvalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn off_by_default_and_valid() {
        let c = TracesConfig::default();
        assert_eq!(c.endpoint, None);
        c.validate().unwrap();
    }

    #[test]
    fn credentials_in_the_endpoint_or_a_bad_header_pair_are_never_quoted() {
        let c = TracesConfig {
            endpoint: Some("http://otel:s3cr3t-pass@collector:4317".into()),
            ..Default::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("traces.endpoint") && !e.contains("s3cr3t"),
            "{e}"
        );
        let e = parse_headers(&["authorization: Basic czNjcjN0LXBhc3M".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("traces.headers") && !e.contains("czNjcjN0"),
            "{e}"
        );
        // With base64 padding the pair parses, and the name is the whole mistake.
        let c = TracesConfig {
            headers: parse_headers(&["authorization: Basic czNjcjN0LXBhc3M=".into()]).unwrap(),
            ..Default::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("traces.headers") && !e.contains("czNjcjN0"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let mut c = TracesConfig {
            endpoint: Some("collector:4317".into()),
            ..Default::default()
        };
        assert_eq!(field_of(&c), "traces.endpoint");
        c.endpoint = Some("https://collector:4317".into());
        assert_eq!(field_of(&c), "traces.endpoint");
        c.endpoint = Some("http://collector.monitoring.svc:4317".into());
        c.validate().unwrap();
        c.sampling_ratio = 1.5;
        assert_eq!(field_of(&c), "traces.sampling_ratio");
        c.sampling_ratio = f64::NAN;
        assert_eq!(field_of(&c), "traces.sampling_ratio");
        c.sampling_ratio = 0.0;
        c.headers.insert("X-Scope-OrgID".into(), "platform".into());
        assert_eq!(field_of(&c), "traces.headers");
        c.headers.clear();
        c.headers
            .insert("x-scope-orgid".into(), "plat\nform".into());
        assert_eq!(field_of(&c), "traces.headers.x-scope-orgid");
        c.headers.clear();
        c.service_name = " ".into();
        assert_eq!(field_of(&c), "traces.service_name");
    }

    #[test]
    fn headers_from_the_command_line() {
        let parsed = parse_headers(&["x-scope-orgid=platform".into(), " a = b ".into()]).unwrap();
        assert_eq!(parsed["x-scope-orgid"], "platform");
        assert_eq!(parsed["a"], "b");
        assert!(parse_headers(&["novalue".into()]).is_err());
    }
}
