//! The decision log: one structured line per Check, under its own target
//! (`tenant_authz::decision`) so it can be filtered apart from the rest of the log.
//!
//! Levels: `warn` for 5xx denials, `info` for other denials and reviewed allows, `debug` for
//! cached allows except a sampled share (`log.cached_allow_sample_ratio`), which is `info`.
//! A cached allow costs a few microseconds; a log line costs more, and Envoy's access log
//! already records every request, so by default they are not logged at `info`.
//!
//! What is logged comes from the decision and from Envoy's configuration, never from the
//! token: the user is the one the backend named, the route is the route's `route` context
//! extension (set in Envoy's config; a client cannot send context extensions), the request id
//! is Envoy's. Strings that reach the log are length-capped and stripped of control
//! characters (the request id can come from the client side).

use std::borrow::Cow;
use std::cell::Cell;
use std::hash::BuildHasher;
use std::time::Duration;

use envoy_types::ext_authz::v3::pb::CheckRequest;

use crate::model::{Action, Decision, DenyReason, Product};

/// `tracing` needs the level at compile time: one call site per level, same fields.
macro_rules! decision_line {
    ($level:expr, $($fields:tt)*) => {
        match $level {
            Level::Debug => tracing::debug!(target: TARGET, $($fields)*),
            Level::Info => tracing::info!(target: TARGET, $($fields)*),
            Level::Warn => tracing::warn!(target: TARGET, $($fields)*),
        }
    };
}

/// The tracing target of decision lines (`RUST_LOG=tenant_authz::decision=debug` shows every
/// cached allow).
pub const TARGET: &str = "tenant_authz::decision";

/// Context extension a route sets to name itself in the decision log.
pub const ROUTE_EXTENSION: &str = "route";

/// Longest route name and request id logged, in bytes.
const MAX_FIELD_BYTES: usize = 64;

/// What the log needs besides the decision, borrowed from the request.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// The request id and route are read from it only when a line is written.
    pub req: &'a CheckRequest,
    /// The tenants asked for (`a|b`), if the tenant header parsed.
    pub tenants: Option<&'a str>,
    pub product: Option<Product>,
    pub action: Option<Action>,
    pub latency: Duration,
}

/// Envoy's request id: `x-request-id`, else the attribute id. Logs carry it as a field
/// instead of a span per Check, which would cost about as much as a cached decision.
pub fn request_id(req: &CheckRequest) -> &str {
    req.attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
        .map(|h| {
            h.headers
                .get("x-request-id")
                .map(String::as_str)
                .unwrap_or(h.id.as_str())
        })
        .unwrap_or("")
}

/// The route's name as its `route` context extension gives it, if set.
pub fn route(req: &CheckRequest) -> Option<&str> {
    req.attributes
        .as_ref()
        .and_then(|a| a.context_extensions.get(ROUTE_EXTENSION))
        .map(String::as_str)
        .filter(|r| !r.is_empty())
}

/// Writes decision lines; holds the sampling of cached allows.
#[derive(Clone, Copy, Debug, Default)]
pub struct DecisionLog {
    cached_allows: Sampler,
}

impl DecisionLog {
    /// `ratio` of cached allows at `info` (0.0: none, 1.0: all; validated by the config).
    pub fn new(cached_allow_sample_ratio: f64) -> Self {
        Self {
            cached_allows: Sampler::new(cached_allow_sample_ratio),
        }
    }

    /// One line for `decision`.
    pub fn write(&self, decision: &Decision, cx: &Context<'_>) {
        let level = match decision {
            Decision::Allow { cached: true, .. } if !self.cached_allows.sample() => Level::Debug,
            Decision::Allow { .. } => Level::Info,
            Decision::Deny { reason, .. } if reason.http_status() >= 500 => Level::Warn,
            Decision::Deny { .. } => Level::Info,
        };
        let action = cx.action.map(Action::as_str);
        let product = cx.product.map(Product::as_str);
        let latency_us = u64::try_from(cx.latency.as_micros()).unwrap_or(u64::MAX);
        // Field expressions are evaluated only when the level is enabled: a cached allow at
        // `debug` costs the level check and nothing else.
        match decision {
            Decision::Allow {
                user,
                tenants,
                cached,
                ..
            } => decision_line!(
                level,
                request_id = &*bounded(request_id(cx.req)),
                route = route(cx.req).map(bounded).as_deref(),
                decision = "allow",
                status = 200u16,
                reason = "ok",
                user = &**user,
                tenants = tenants.canonical(),
                product,
                action,
                cached,
                latency_us,
                "check"
            ),
            Decision::Deny { reason, cached } => decision_line!(
                level,
                request_id = &*bounded(request_id(cx.req)),
                route = route(cx.req).map(bounded).as_deref(),
                decision = "deny",
                status = reason.http_status(),
                reason = reason.kind(),
                detail = %reason,
                user = denied_user(reason),
                tenants = cx.tenants,
                product,
                action,
                cached,
                latency_us,
                "check"
            ),
        }
    }
}

/// The user a denial names (only a SubjectAccessReview's denial has one).
fn denied_user(reason: &DenyReason) -> Option<&str> {
    match reason {
        DenyReason::Forbidden { user, .. } => Some(user),
        _ => None,
    }
}

#[derive(Clone, Copy)]
enum Level {
    Debug,
    Info,
    Warn,
}

/// `s` cut to [`MAX_FIELD_BYTES`] (at a character boundary) and without control characters.
pub fn bounded(s: &str) -> Cow<'_, str> {
    let mut end = s.len().min(MAX_FIELD_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let s = &s[..end];
    if s.chars().any(char::is_control) {
        Cow::Owned(s.chars().filter(|c| !c.is_control()).collect())
    } else {
        Cow::Borrowed(s)
    }
}

/// Chooses a share of events without a lock: a per-thread xorshift generator (a few
/// nanoseconds), compared against a threshold. Never and always need no random number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Sampler {
    /// `0`: never; `u64::MAX`: always; else sample when a random `u64` is below it.
    threshold: u64,
}

impl Sampler {
    fn new(ratio: f64) -> Self {
        let threshold = if ratio.is_nan() || ratio <= 0.0 {
            0
        } else if ratio >= 1.0 {
            u64::MAX
        } else {
            // Saturating float-to-int conversion; a ratio this side of 1.0 stays below MAX.
            ((ratio * u64::MAX as f64) as u64).min(u64::MAX - 1)
        };
        Self { threshold }
    }

    fn sample(&self) -> bool {
        match self.threshold {
            0 => false,
            u64::MAX => true,
            t => next_random() < t,
        }
    }
}

thread_local! {
    static RANDOM: Cell<u64> = Cell::new(std::hash::RandomState::new().hash_one(0u8) | 1);
}

/// xorshift64 (Marsaglia): statistical quality enough to pick log lines, not for secrets.
fn next_random() -> u64 {
    RANDOM.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        x
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_never_always_and_about_the_ratio() {
        let never = Sampler::new(0.0);
        let always = Sampler::new(1.0);
        let quarter = Sampler::new(0.25);
        let n = 100_000;
        assert_eq!((0..n).filter(|_| never.sample()).count(), 0);
        assert_eq!((0..n).filter(|_| always.sample()).count(), n);
        let got = (0..n).filter(|_| quarter.sample()).count() as f64 / n as f64;
        assert!((0.23..0.27).contains(&got), "{got}");
        assert_eq!(Sampler::new(f64::NAN), never);
    }

    #[test]
    fn logged_strings_are_capped_and_without_control_characters() {
        assert_eq!(bounded("query_read"), "query_read");
        assert_eq!(bounded("a\r\nb\u{1b}[31mc"), "ab[31mc");
        assert_eq!(bounded(&"x".repeat(200)).len(), MAX_FIELD_BYTES);
        let wide = "é".repeat(40); // 80 bytes
        let cut = bounded(&wide);
        assert!(cut.len() <= MAX_FIELD_BYTES && cut.chars().all(|c| c == 'é'));
    }

    /// The JSON lines `f` writes at `debug` and above.
    fn captured(f: impl FnOnce()) -> Vec<serde_json::Value> {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn allow(cached: bool) -> Decision {
        use crate::model::{Tenant, Tenants};
        Decision::Allow {
            user: "alice".into(),
            tenants: Tenants::new(vec![Tenant::parse("a").unwrap()]).unwrap(),
            action: Action::Read,
            cached,
        }
    }

    #[test]
    fn levels_follow_the_outcome_and_the_sampling() {
        use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
        use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
        let req = CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(Request {
                    http: Some(HttpRequest {
                        headers: [("x-request-id".to_string(), "rid".to_string())].into(),
                        id: "attribute-id".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                context_extensions: [("route".to_string(), "query_read".to_string())].into(),
                ..Default::default()
            }),
        };
        let cx = Context {
            req: &req,
            tenants: Some("a"),
            product: Some(Product::Tempo),
            action: Some(Action::Read),
            latency: Duration::from_micros(7),
        };
        let lines = captured(|| {
            let never = DecisionLog::new(0.0);
            let always = DecisionLog::new(1.0);
            never.write(&allow(false), &cx);
            never.write(&allow(true), &cx);
            always.write(&allow(true), &cx);
            let outage = Decision::deny(DenyReason::Unavailable("the API timed out".into()));
            never.write(&outage, &cx);
            never.write(&Decision::deny(DenyReason::MissingCredentials), &cx);
        });
        let levels: Vec<_> = lines.iter().map(|l| l["level"].as_str().unwrap()).collect();
        assert_eq!(levels, ["INFO", "DEBUG", "INFO", "WARN", "INFO"]);
        for l in &lines {
            assert_eq!(l["target"], TARGET);
            assert_eq!(l["request_id"], "rid");
            assert_eq!(l["route"], "query_read");
            assert_eq!(l["tenants"], "a");
            assert_eq!(l["product"], "tempo");
            assert_eq!(l["latency_us"], 7);
        }
        assert_eq!(lines[0]["user"], "alice");
        assert_eq!(lines[3]["status"], 503);
        assert_eq!(lines[3]["reason"], "unavailable");
        assert!(lines[3]["detail"].as_str().unwrap().contains("timed out"));
        assert!(lines[4].get("user").is_none());
    }

    #[test]
    fn route_comes_from_the_route_context_extension() {
        use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
        let mut req = CheckRequest {
            attributes: Some(AttributeContext::default()),
        };
        assert_eq!(route(&req), None);
        if let Some(a) = req.attributes.as_mut() {
            a.context_extensions
                .insert("route".into(), "query_read".into());
        }
        assert_eq!(route(&req), Some("query_read"));
    }
}
