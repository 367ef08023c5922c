//! The end-to-end stack: a real Envoy 1.40 in front of a recording Tempo stand-in, calling the
//! real `tenant-authz` binary over ext_authz gRPC, which reviews tokens against a fake
//! Kubernetes API server over real HTTPS.
//!
//! Every test builds its own [`Stack`] (fake API, tenant-authz process, upstream, Envoy) so the
//! tests can run in parallel. Tokens are realistic, JWT-shaped (~1 KB) and deterministic per
//! test, so the token-leak scan ([`scan_for_tokens`]: full token, 12-char prefix / suffix and
//! every 12-char window) is meaningful.

mod grpc;
mod leak;
mod tokens;

use std::time::Duration;

use serde_json::Value;

use super::authz::AuthzProcess;
use super::envoy::{free_port, Envoy};
use super::fake_kube::{FakeKube, FakeUser, Subject};
use super::upstream::{Recorded, Upstream};

pub use grpc::{otlp_grpc_export, raw_grpc_denied, raw_grpc_export, EXPORT_PATH};
pub use leak::{scan_for_tokens, WINDOW};
pub use tokens::{bearer, Minter};

const E2E: &str = include_str!("../envoy/e2e.yaml");
pub const SHOWCASE_QUERY: &str = "system:serviceaccount:showcase:query";
pub const SHOWCASE_INGEST: &str = "system:serviceaccount:showcase:ingest";
pub const PAYMENTS_QUERY: &str = "system:serviceaccount:payments:query";

/// What a client saw.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub version: reqwest::Version,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Everything the client got, as text (for the leak scan).
    pub fn transcript(&self) -> String {
        let mut s = format!("{} {:?}\n", self.status, self.version);
        for (n, v) in &self.headers {
            s.push_str(&format!("{n}: {v}\n"));
        }
        s.push('\n');
        s.push_str(&self.body);
        s.push('\n');
        s
    }
}

/// FakeKube + tenant-authz + recording upstream + Envoy, with three SA tokens.
pub struct Stack {
    pub fake: FakeKube,
    pub authz: AuthzProcess,
    pub upstream: Upstream,
    pub envoy: Envoy,
    /// Listener with `action=read` (`manage` for non-GET `/api/overrides`).
    pub query: u16,
    /// Listener with `action=write`.
    pub ingest: u16,
    /// Listener without context extensions (tenant-authz infers the action).
    pub infer: u16,
    pub minter: Minter,
    /// `showcase/query`: `get` in `showcase`.
    pub showcase_query: String,
    /// `showcase/ingest`: `create` in `showcase`.
    pub showcase_ingest: String,
    /// `payments/query`: `get` in `payments`.
    pub payments_query: String,
    h1: reqwest::Client,
    h2: reqwest::Client,
}

/// A client for the Envoy listeners: HTTP/1.1 only, or h2c with prior knowledge.
fn client(h2: bool) -> reqwest::Client {
    let builder = reqwest::Client::builder().no_proxy();
    let builder = if h2 {
        builder.http2_prior_knowledge()
    } else {
        builder.http1_only()
    };
    builder.timeout(Duration::from_secs(15)).build().unwrap()
}

impl Stack {
    pub async fn new(seed: u64) -> Stack {
        let fake = FakeKube::start().await;
        let mut minter = Minter::new(seed);
        let showcase_query = minter.token("showcase", "query");
        let showcase_ingest = minter.token("showcase", "ingest");
        let payments_query = minter.token("payments", "query");
        fake.add_token(
            &showcase_query,
            FakeUser::service_account("showcase", "query").with_pod("query-0"),
        );
        fake.add_token(
            &showcase_ingest,
            FakeUser::service_account("showcase", "ingest").with_pod("ingest-0"),
        );
        fake.add_token(
            &payments_query,
            FakeUser::service_account("payments", "query"),
        );
        fake.grant(Subject::User(SHOWCASE_QUERY.into()), "showcase", "get");
        fake.grant(Subject::User(SHOWCASE_INGEST.into()), "showcase", "create");
        fake.grant(Subject::User(PAYMENTS_QUERY.into()), "payments", "get");

        let authz = AuthzProcess::start(fake.kubeconfig_path(), &[]).await;
        let upstream = Upstream::start().await;
        let (query, ingest, infer) = (free_port(), free_port(), free_port());
        let envoy = Envoy::start(
            E2E,
            &[
                ("AUTHZ_PORT", authz.grpc_port.to_string()),
                ("UPSTREAM_PORT", upstream.port.to_string()),
                ("QUERY_PORT", query.to_string()),
                ("INGEST_PORT", ingest.to_string()),
                ("INFER_PORT", infer.to_string()),
            ],
        )
        .await;
        Stack {
            fake,
            authz,
            upstream,
            envoy,
            query,
            ingest,
            infer,
            minter,
            showcase_query,
            showcase_ingest,
            payments_query,
            h1: client(false),
            h2: client(true),
        }
    }

    /// A new token for an existing SA, registered with the fake API but never seen by
    /// tenant-authz (so not cached).
    pub fn fresh_token(&mut self, ns: &str, name: &str) -> String {
        let t = self.minter.token(ns, name);
        self.fake.add_token(&t, FakeUser::service_account(ns, name));
        t
    }

    pub async fn send(
        &self,
        port: u16,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        h2: bool,
        body: Vec<u8>,
    ) -> Reply {
        let client = if h2 { &self.h2 } else { &self.h1 };
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = client
            .request(method.clone(), format!("http://127.0.0.1:{port}{path}"))
            .body(body);
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path} on :{port}: {e}\n{}", self.diag()));
        let status = resp.status().as_u16();
        let version = resp.version();
        let headers = resp
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = resp.text().await.unwrap_or_default();
        Reply {
            status,
            version,
            headers,
            body,
        }
    }

    pub async fn get(&self, port: u16, path: &str, headers: &[(&str, &str)], h2: bool) -> Reply {
        self.send(port, "GET", path, headers, h2, Vec::new()).await
    }

    /// `GET` with `authorization: <authorization>` (the whole header value, usually
    /// [`bearer`]) and `x-scope-orgid: <tenant>`.
    pub async fn get_as(
        &self,
        port: u16,
        path: &str,
        authorization: &str,
        tenant: &str,
        h2: bool,
    ) -> Reply {
        let headers = [("authorization", authorization), ("x-scope-orgid", tenant)];
        self.get(port, path, &headers, h2).await
    }

    /// OTLP/HTTP protobuf POST (empty body).
    pub async fn otlp_http(&self, port: u16, path: &str, token: &str, tenant: &str) -> Reply {
        let auth = bearer(token);
        self.send(
            port,
            "POST",
            path,
            &[
                ("authorization", &auth),
                ("x-scope-orgid", tenant),
                ("content-type", "application/x-protobuf"),
            ],
            false,
            Vec::new(),
        )
        .await
    }

    /// The tails of both logs, for failure messages.
    pub fn diag(&self) -> String {
        fn tail(s: &str, n: usize) -> &str {
            let mut start = s.len().saturating_sub(n);
            while !s.is_char_boundary(start) {
                start += 1;
            }
            &s[start..]
        }
        format!(
            "--- tenant-authz log (tail) ---\n{}\n--- envoy log (tail) ---\n{}\n--- access log ---\n{}",
            tail(&self.authz.log(), 6000),
            tail(&self.envoy.log(), 3000),
            tail(&self.envoy.access_log(), 4000)
        )
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.upstream.requests()
    }

    /// The access log entry whose `path` is exactly `path` (waits for it to be flushed).
    pub async fn access_entry(&self, path: &str) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(e) = self
                .envoy
                .access_log_entries()
                .into_iter()
                .find(|e| e["path"] == path)
            {
                return e;
            }
            if std::time::Instant::now() > deadline {
                panic!("no access log entry for {path}\n{}", self.diag());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Asserts that each access-log field in `want` holds exactly that string value.
pub fn assert_log_fields(entry: &Value, want: &[(&str, &str)], what: &str) {
    for (field, value) in want {
        assert_eq!(entry[*field], *value, "{what}: {field}: {entry}");
    }
}
