//! Command line: every scalar setting as a flag and a `TENANT_AUTHZ_*` variable, each
//! overriding the config file. Precedence: flag > environment > file > default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::config::{Config, LogFormat};
use crate::error::Error;

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

/// Envoy ext_authz server for multi-tenant Grafana Tempo: Kubernetes TokenReview +
/// SubjectAccessReview per tenant, with a decision cache.
///
/// Without --config it serves with the defaults below and the Kubernetes API from KUBECONFIG
/// (or ~/.kube/config, or the in-cluster service account).
#[derive(Debug, Parser)]
#[command(name = "tenant-authz", version, max_term_width = 100)]
pub struct Cli {
    /// YAML config file; flags and TENANT_AUTHZ_* variables override its fields.
    #[arg(long, global = true, env = "TENANT_AUTHZ_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print the effective configuration as YAML and exit.
    #[arg(long)]
    pub print_config: bool,

    #[command(subcommand)]
    pub command: Option<Command>,

    /// ext_authz gRPC listen address [default: 0.0.0.0:9001]
    #[arg(
        long,
        global = true,
        env = "TENANT_AUTHZ_GRPC_ADDR",
        value_name = "ADDR"
    )]
    pub grpc_addr: Option<SocketAddr>,

    /// Admin HTTP listen address (/healthz, /readyz, /metrics, /debug/*) [default: 0.0.0.0:9090]
    #[arg(
        long,
        global = true,
        env = "TENANT_AUTHZ_ADMIN_ADDR",
        value_name = "ADDR"
    )]
    pub admin_addr: Option<SocketAddr>,

    /// Log format [default: text]
    #[arg(long, global = true, env = "TENANT_AUTHZ_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Share of cached allows logged at info, 0.0 to 1.0 (the rest at debug) [default: 0]
    #[arg(
        long,
        global = true,
        env = "TENANT_AUTHZ_LOG_CACHED_ALLOW_SAMPLE_RATIO",
        value_name = "RATIO"
    )]
    pub log_cached_allow_sample_ratio: Option<f64>,

    /// Header carrying the tenant(s), `a` or `a|b` [default: x-scope-orgid]
    #[arg(
        long,
        global = true,
        env = "TENANT_AUTHZ_TENANT_HEADER",
        value_name = "NAME"
    )]
    pub tenant_header: Option<String>,

    /// Longest bearer token accepted, in bytes [default: 16384]
    #[arg(
        long,
        global = true,
        env = "TENANT_AUTHZ_MAX_TOKEN_BYTES",
        value_name = "BYTES"
    )]
    pub max_token_bytes: Option<usize>,

    /// Deadline of one decision; keep it below Envoy's ext_authz timeout [default: 1s 500ms]
    #[arg(long, global = true, env = "TENANT_AUTHZ_DECISION_TIMEOUT", value_name = "DURATION", value_parser = duration)]
    pub decision_timeout: Option<Duration>,

    /// After SIGTERM, keep serving this long while /readyz says 503 [default: 0s]
    #[arg(long, global = true, env = "TENANT_AUTHZ_SHUTDOWN_DELAY", value_name = "DURATION", value_parser = duration)]
    pub shutdown_delay: Option<Duration>,

    /// Then wait at most this long for in-flight checks [default: 10s]
    #[arg(long, global = true, env = "TENANT_AUTHZ_SHUTDOWN_GRACE", value_name = "DURATION", value_parser = duration)]
    pub shutdown_grace: Option<Duration>,

    /// Kubeconfig file [default: $KUBECONFIG, ~/.kube/config, then in-cluster]
    #[arg(
        long,
        global = true,
        env = "TENANT_AUTHZ_KUBECONFIG",
        value_name = "FILE",
        global = true
    )]
    pub kubeconfig: Option<PathBuf>,

    /// TokenReview audiences, comma-separated [default: none, the API server's]
    #[arg(
        long,
        global = true,
        env = "TENANT_AUTHZ_AUDIENCES",
        value_name = "LIST",
        value_delimiter = ','
    )]
    pub audiences: Option<Vec<String>>,

    /// Most reviews in flight to the API at once: half TokenReviews, half SARs [default: 32]
    #[arg(
        long,
        global = true,
        env = "TENANT_AUTHZ_MAX_CONCURRENT_REVIEWS",
        value_name = "N"
    )]
    pub max_concurrent_reviews: Option<usize>,

    /// Most SubjectAccessReviews in flight for one Check [default: 4]
    #[arg(
        long,
        global = true,
        env = "TENANT_AUTHZ_MAX_REVIEWS_PER_CHECK",
        value_name = "N"
    )]
    pub max_reviews_per_check: Option<usize>,

    /// SAR shape: namespace, or tempo-gateway (the Tempo Operator gateway's) [default: namespace]
    #[arg(long, global = true, env = "TENANT_AUTHZ_SAR_MAPPING", value_enum)]
    pub sar_mapping: Option<crate::config::SarMapping>,

    /// SubjectAccessReview API group of Tempo (other products: products.*.group) [default: tempo.grafana.com]
    #[arg(
        long,
        global = true,
        env = "TENANT_AUTHZ_SAR_GROUP",
        value_name = "GROUP"
    )]
    pub sar_group: Option<String>,

    /// Product of a route that names none and whose port is not in products.by_port:
    /// tempo, loki, mimir or pyroscope [default: tempo]
    #[arg(
        long,
        global = true,
        env = "TENANT_AUTHZ_DEFAULT_PRODUCT",
        value_name = "PRODUCT"
    )]
    pub default_product: Option<crate::model::Product>,

    /// SubjectAccessReview resource of Tempo (other products: products.*.resource) [default: traces]
    #[arg(
        long,
        global = true,
        env = "TENANT_AUTHZ_SAR_RESOURCE",
        value_name = "RESOURCE"
    )]
    pub sar_resource: Option<String>,

    /// Bound of the allowed-decisions cache [default: 100000]
    #[arg(
        long,
        global = true,
        env = "TENANT_AUTHZ_CACHE_MAX_ENTRIES",
        value_name = "N"
    )]
    pub cache_max_entries: Option<u64>,

    /// Bound of the identities cache (TokenReview answers) [default: 10000]
    #[arg(
        long,
        global = true,
        env = "TENANT_AUTHZ_CACHE_MAX_IDENTITIES",
        value_name = "N"
    )]
    pub cache_max_identities: Option<u64>,

    /// Bound of each negative cache (rejected tokens; denials) [default: 10000]
    #[arg(
        long,
        global = true,
        env = "TENANT_AUTHZ_CACHE_MAX_NEGATIVE_ENTRIES",
        value_name = "N"
    )]
    pub cache_max_negative_entries: Option<u64>,

    /// How long an allowed decision is reused [default: 1m]
    #[arg(long, global = true, env = "TENANT_AUTHZ_CACHE_ALLOWED_TTL", value_name = "DURATION", value_parser = duration)]
    pub cache_allowed_ttl: Option<Duration>,

    /// How long a denied decision is reused [default: 10s]
    #[arg(long, global = true, env = "TENANT_AUTHZ_CACHE_DENIED_TTL", value_name = "DURATION", value_parser = duration)]
    pub cache_denied_ttl: Option<Duration>,

    /// How long a rejected token is remembered [default: 10s]
    #[arg(long, global = true, env = "TENANT_AUTHZ_CACHE_UNAUTHENTICATED_TTL", value_name = "DURATION", value_parser = duration)]
    pub cache_unauthenticated_ttl: Option<Duration>,

    /// How long an identity is reused, capped by the token's exp [default: 2m]
    #[arg(long, global = true, env = "TENANT_AUTHZ_CACHE_IDENTITY_TTL", value_name = "DURATION", value_parser = duration)]
    pub cache_identity_ttl: Option<Duration>,

    /// Allowed TTL while the RBAC watches are up [default: 10m]
    #[arg(long, global = true, env = "TENANT_AUTHZ_CACHE_WATCHED_ALLOWED_TTL", value_name = "DURATION", value_parser = duration)]
    pub cache_watched_allowed_ttl: Option<Duration>,

    /// Identity TTL while the ServiceAccount watch is up [default: 10m]
    #[arg(long, global = true, env = "TENANT_AUTHZ_CACHE_WATCHED_IDENTITY_TTL", value_name = "DURATION", value_parser = duration)]
    pub cache_watched_identity_ttl: Option<Duration>,

    /// Watch RBAC, ServiceAccounts and Namespaces to revoke at once: true or false [default: true]
    #[arg(
        long,
        global = true,
        env = "TENANT_AUTHZ_WATCH_RBAC",
        value_name = "BOOL"
    )]
    pub watch_rbac: Option<bool>,

    /// Also watch Pods (metadata), for pod-bound tokens: true or false [default: false]
    #[arg(
        long,
        global = true,
        env = "TENANT_AUTHZ_WATCH_PODS",
        value_name = "BOOL"
    )]
    pub watch_pods: Option<bool>,

    /// A watch silent this long is taken as dead and relisted (the API server sends a bookmark every minute) [default: 2m 30s]
    #[arg(long, global = true, env = "TENANT_AUTHZ_WATCH_IDLE_TIMEOUT", value_name = "DURATION", value_parser = duration)]
    pub watch_idle_timeout: Option<Duration>,

    /// OTLP/gRPC endpoint for tenant-authz's own spans, http://host:4317 [default: none, no traces]
    #[arg(long, env = "TENANT_AUTHZ_TRACES_ENDPOINT", value_name = "URL")]
    pub traces_endpoint: Option<String>,

    /// Share of Checks without a traceparent that are traced, 0 to 1 [default: 0.01]
    #[arg(long, env = "TENANT_AUTHZ_TRACES_SAMPLING_RATIO", value_name = "RATIO")]
    pub traces_sampling_ratio: Option<f64>,

    /// gRPC metadata sent with each export, comma-separated name=value [default: none]
    #[arg(
        long,
        env = "TENANT_AUTHZ_TRACES_HEADERS",
        value_name = "LIST",
        value_delimiter = ','
    )]
    pub traces_headers: Option<Vec<String>>,

    /// service.name of the exported spans [default: tenant-authz]
    #[arg(long, env = "TENANT_AUTHZ_TRACES_SERVICE_NAME", value_name = "NAME")]
    pub traces_service_name: Option<String>,

    /// Follow the sampled flag of a client's own traceparent: true or false [default: false]
    #[arg(
        long,
        env = "TENANT_AUTHZ_TRACES_FOLLOW_CLIENT_SAMPLED",
        value_name = "BOOL"
    )]
    pub traces_follow_client_sampled: Option<bool>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Read a token on stdin and print its SHA-256, for the static backend's identities.
    /// One trailing newline is ignored; the token itself is never printed.
    HashToken,
    /// Explain why a token gets 200, 401, 403 or 503 for a request, step by step.
    ///
    /// Runs the server's parser and the configured backend for one request and prints each step (route rule, identity, each tenant's question and
    /// answer, what would grant a denial). The token is read from --token-file or stdin, never
    /// from the command line. Exit: 0 allowed, 3 bad request (400), 4 unauthenticated (401),
    /// 5 forbidden (403), 6 cannot decide (503), 2 usage or configuration error.
    Explain(ExplainArgs),
}

/// `tenant-authz explain --tenant 'a|b' (--action A | --method M --path P)`.
#[derive(Debug, clap::Args)]
#[command(
    group(clap::ArgGroup::new("what").required(true).args(["action", "method"])),
    next_help_heading = "What to explain (the server's options above apply too)"
)]
pub struct ExplainArgs {
    /// Tenant header value, `a` or `a|b`, checked as the server checks it
    #[arg(long, value_name = "TENANTS")]
    pub tenant: String,
    /// The action, as a route's `action` context extension: read, write or manage
    #[arg(long, value_name = "ACTION", value_parser = parse_action, conflicts_with_all = ["method", "path"])]
    pub action: Option<crate::model::Action>,
    /// HTTP method of the request whose action is inferred (with --path)
    #[arg(long, value_name = "METHOD", requires = "path")]
    pub method: Option<String>,
    /// Path of the request, with or without a query string (with --method)
    #[arg(long, value_name = "PATH", requires = "method")]
    pub path: Option<String>,
    /// tempo, loki, mimir or pyroscope, as a route's `product` context extension [default: products.default]
    #[arg(long, value_name = "PRODUCT")]
    pub product: Option<crate::model::Product>,
    /// File holding the token (one trailing newline ignored) [default: stdin]
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// text, or json: one document with stable field names
    #[arg(long, value_enum, default_value = "text")]
    pub output: ExplainOutput,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExplainOutput {
    Text,
    Json,
}

fn parse_action(s: &str) -> Result<crate::model::Action, String> {
    crate::model::Action::parse(s)
        .ok_or_else(|| format!("{s:?} is not an action: read, write or manage"))
}

impl ExplainArgs {
    /// What to explain, as the library takes it.
    pub fn question(&self) -> crate::explain::Question {
        use crate::explain::Target;
        let target = match (&self.action, &self.method, &self.path) {
            (Some(a), _, _) => Target::Action(*a),
            (None, Some(method), Some(path)) => Target::Route {
                method: method.clone(),
                path: path.clone(),
            },
            // clap requires --action or both --method and --path.
            _ => Target::Route {
                method: self.method.clone().unwrap_or_else(|| "GET".into()),
                path: self.path.clone().unwrap_or_else(|| "/".into()),
            },
        };
        crate::explain::Question {
            tenants: self.tenant.clone(),
            target,
            product: self.product,
        }
    }
}

/// The static backend's key for a token read from stdin.
pub fn hash_token(input: &str) -> Result<String, &'static str> {
    let token = input
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(input);
    if token.trim().is_empty() {
        return Err("no token on stdin");
    }
    Ok(crate::model::BearerToken::from_secret(token.to_string())
        .hash()
        .to_hex())
}

impl Cli {
    /// The effective configuration: file (or defaults), then these overrides, validated.
    pub fn load(&self) -> Result<Config, Error> {
        let mut c = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        macro_rules! set {
            ($($flag:ident => $($field:ident).+),* $(,)?) => {
                $( if let Some(v) = &self.$flag { c.$($field).+ = v.clone(); } )*
            };
        }
        set!(
            grpc_addr => grpc_addr,
            admin_addr => admin_addr,
            log_format => log.format,
            log_cached_allow_sample_ratio => log.cached_allow_sample_ratio,
            tenant_header => tenant_header,
            max_token_bytes => max_token_bytes,
            decision_timeout => decision_timeout,
            shutdown_delay => shutdown.delay,
            shutdown_grace => shutdown.grace,
            audiences => kubernetes.audiences,
            max_concurrent_reviews => kubernetes.max_concurrent_reviews,
            max_reviews_per_check => kubernetes.max_reviews_per_check,
            sar_mapping => authorization.mapping,
            sar_group => authorization.group,
            sar_resource => authorization.resource,
            default_product => products.default,
            cache_max_entries => cache.max_entries,
            cache_max_identities => cache.max_identities,
            cache_max_negative_entries => cache.max_negative_entries,
            cache_allowed_ttl => cache.allowed_ttl,
            cache_denied_ttl => cache.denied_ttl,
            cache_unauthenticated_ttl => cache.unauthenticated_ttl,
            cache_identity_ttl => cache.identity_ttl,
            cache_watched_allowed_ttl => cache.watched_allowed_ttl,
            cache_watched_identity_ttl => cache.watched_identity_ttl,
            watch_rbac => kubernetes.watch_rbac,
            watch_pods => kubernetes.watch_pods,
            watch_idle_timeout => kubernetes.watch_idle_timeout,
            traces_sampling_ratio => traces.sampling_ratio,
            traces_service_name => traces.service_name,
            traces_follow_client_sampled => traces.follow_client_sampled,
        );
        if let Some(k) = &self.kubeconfig {
            c.kubernetes.kubeconfig = Some(k.clone());
        }
        if let Some(endpoint) = &self.traces_endpoint {
            c.traces.endpoint = Some(endpoint.clone()).filter(|e| !e.is_empty());
        }
        if let Some(pairs) = &self.traces_headers {
            c.traces.headers = crate::config::parse_trace_headers(pairs)?;
        }
        c.source = self.config.clone();
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn help_states_the_real_defaults() {
        let help = Cli::command().render_long_help().to_string();
        let d = Config::default();
        for expected in [
            format!("[default: {}]", d.grpc_addr),
            format!("[default: {}]", d.admin_addr),
            format!("[default: {}]", d.tenant_header),
            format!("[default: {}]", d.log.cached_allow_sample_ratio),
            format!("[default: {}]", d.max_token_bytes),
            format!(
                "[default: {}]",
                humantime::format_duration(d.decision_timeout)
            ),
            format!(
                "[default: {}]",
                humantime::format_duration(d.shutdown.grace)
            ),
            format!("[default: {}]", d.kubernetes.max_concurrent_reviews),
            format!("[default: {}]", d.kubernetes.max_reviews_per_check),
            format!("[default: {}]", d.authorization.group),
            format!("[default: {}]", d.authorization.resource),
            format!("[default: {}]", d.cache.max_entries),
            format!("[default: {}]", d.cache.max_identities),
            format!("[default: {}]", d.cache.max_negative_entries),
            format!(
                "[default: {}]",
                humantime::format_duration(d.cache.allowed_ttl)
            ),
            format!(
                "[default: {}]",
                humantime::format_duration(d.cache.denied_ttl)
            ),
            format!(
                "[default: {}]",
                humantime::format_duration(d.cache.identity_ttl)
            ),
            format!(
                "[default: {}]",
                humantime::format_duration(d.kubernetes.watch_idle_timeout)
            ),
        ] {
            assert!(help.contains(&expected), "--help lacks {expected}");
        }
    }

    #[test]
    fn flags_override_the_file() {
        let dir = std::env::temp_dir().join(format!("ta-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.yaml");
        std::fs::write(
            &file,
            "tenant_header: x-tenant\ncache:\n  allowed_ttl: 5m\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "tenant-authz",
            "--config",
            file.to_str().unwrap(),
            "--cache-allowed-ttl",
            "30s",
            "--grpc-addr",
            "127.0.0.1:1",
        ])
        .unwrap();
        let c = cli.load().unwrap();
        assert_eq!(c.tenant_header, "x-tenant");
        assert_eq!(c.cache.allowed_ttl, Duration::from_secs(30));
        assert_eq!(c.grpc_addr, "127.0.0.1:1".parse().unwrap());
    }

    #[test]
    fn bad_file_names_the_field() {
        let dir = std::env::temp_dir().join(format!("ta-cli-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.yaml");
        std::fs::write(&file, "cache:\n  denied_ttl: -3\n").unwrap();
        let cli =
            Cli::try_parse_from(["tenant-authz", "--config", file.to_str().unwrap()]).unwrap();
        let err = cli.load().unwrap_err().to_string();
        assert!(err.contains("cache.denied_ttl"), "{err}");
    }
}
