//! The test-facing controls of the reviews: tokens, grants, faults, scripts, latency,
//! counters and recorded requests; and a raw HTTPS request for exact-bytes tests.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::faults::{Fault, ReviewKind, Script, Scripted};
use super::server::TokenEntry;
use super::token_review::bind_to_store;
use super::users::{FakeUser, GrantRule, Subject};
use super::{FakeKube, TEMPO_API_GROUP, TEMPO_RESOURCE};

impl FakeKube {
    /// Makes `token` authenticate as `user` (any requested audience is accepted).
    pub fn add_token(&self, token: &str, user: FakeUser) {
        self.add_token_with_audiences(token, user, &[]);
    }

    /// Makes `token` authenticate as `user` only for requests whose `spec.audiences` is empty
    /// or intersects `audiences`.
    ///
    /// If `user` is a ServiceAccount that is in the store now, the token is bound to it, as a
    /// real ServiceAccount token is: `user.uid` becomes the ServiceAccount's uid, and the token
    /// is rejected once the ServiceAccount is deleted or re-created (a new uid). Likewise for
    /// the pod of [`FakeUser::with_pod`] (its `pod-uid` becomes the stored pod's uid).
    pub fn add_token_with_audiences(&self, token: &str, user: FakeUser, audiences: &[&str]) {
        let audiences = audiences.iter().map(|a| a.to_string()).collect();
        let mut user = user;
        let bound = bind_to_store(&self.shared.store(), &mut user);
        self.shared.state().tokens.insert(
            token.to_string(),
            TokenEntry {
                user,
                audiences,
                bound,
            },
        );
    }

    /// Forgets `token` (it then fails to authenticate, like a revoked token).
    pub fn remove_token(&self, token: &str) {
        self.shared.state().tokens.remove(token);
    }

    /// Allows `verb` on `tempo.grafana.com`/`traces` in `namespace` for `subject`.
    pub fn grant(&self, subject: Subject, namespace: &str, verb: &str) {
        self.grant_rule(GrantRule::new(
            subject,
            Some(namespace),
            TEMPO_API_GROUP,
            TEMPO_RESOURCE,
            &[verb],
        ));
    }

    /// Adds a general rule.
    pub fn grant_rule(&self, rule: GrantRule) {
        self.shared.state().grants.push(rule);
    }

    /// Removes every grant.
    pub fn clear_grants(&self) {
        self.shared.state().grants.clear();
    }

    /// Sets the fault of both review endpoints.
    pub fn set_fault(&self, fault: Fault) {
        let mut state = self.shared.state();
        state.token_review_fault = fault;
        state.sar_fault = fault;
    }

    /// Sets the fault of one review endpoint.
    pub fn set_fault_for(&self, kind: ReviewKind, fault: Fault) {
        let mut state = self.shared.state();
        match kind {
            ReviewKind::TokenReview => state.token_review_fault = fault,
            ReviewKind::SubjectAccessReview => state.sar_fault = fault,
        }
    }

    /// Answers every review of `kind` with `script(request)` (after faults and latency, and
    /// only for requests with the right client token), until [`FakeKube::clear_script`].
    pub fn script(
        &self,
        kind: ReviewKind,
        script: impl Fn(&Value) -> Scripted + Send + Sync + 'static,
    ) {
        let script: Script = Arc::new(script);
        let mut state = self.shared.state();
        match kind {
            ReviewKind::TokenReview => state.token_review_script = Some(script),
            ReviewKind::SubjectAccessReview => state.sar_script = Some(script),
        }
    }

    /// Back to the normal answers for `kind`.
    pub fn clear_script(&self, kind: ReviewKind) {
        let mut state = self.shared.state();
        match kind {
            ReviewKind::TokenReview => state.token_review_script = None,
            ReviewKind::SubjectAccessReview => state.sar_script = None,
        }
    }

    /// Latency added to every review answer (on top of a `Fault::Slow`).
    pub fn set_latency(&self, d: Duration) {
        self.shared.state().latency = d;
    }

    /// Number of TokenReview POSTs received (including faulted and unauthorized ones).
    pub fn token_reviews(&self) -> usize {
        self.shared.token_reviews.load(Ordering::SeqCst)
    }

    /// Number of SubjectAccessReview POSTs received (including faulted and unauthorized ones).
    pub fn subject_access_reviews(&self) -> usize {
        self.shared.subject_access_reviews.load(Ordering::SeqCst)
    }

    /// Maximum number of review requests seen in flight at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Resets the counters (reviews, lists, watches opened), the in-flight maximum and the
    /// recorded requests.
    pub fn reset_counts(&self) {
        self.shared.token_reviews.store(0, Ordering::SeqCst);
        self.shared
            .subject_access_reviews
            .store(0, Ordering::SeqCst);
        self.shared.max_in_flight.store(
            self.shared.in_flight.load(Ordering::SeqCst),
            Ordering::SeqCst,
        );
        self.shared.lists.store(0, Ordering::SeqCst);
        self.shared.watches_opened.store(0, Ordering::SeqCst);
        let mut state = self.shared.state();
        state.received_token_reviews.clear();
        state.received_subject_access_reviews.clear();
        state.received_watch_requests.clear();
    }

    /// TokenReview request bodies as received (non-JSON bodies as a JSON string).
    pub fn received_token_reviews(&self) -> Vec<Value> {
        self.shared.state().received_token_reviews.clone()
    }

    /// SubjectAccessReview request bodies as received (non-JSON bodies as a JSON string).
    pub fn received_subject_access_reviews(&self) -> Vec<Value> {
        self.shared.state().received_subject_access_reviews.clone()
    }

    /// Sends one raw HTTP/1.1 request over TLS (trusting the fake's CA), with
    /// `Connection: close`, and returns the status code and the body. `bearer: None` sends
    /// no `Authorization` header. For tests that need exact bytes or malformed input.
    pub async fn raw_request(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: &[u8],
    ) -> (u16, String) {
        let connector = tokio_rustls::TlsConnector::from(self.certs.client_config());
        let tcp = TcpStream::connect(self.addr)
            .await
            .expect("connect to the fake kube-apiserver");
        let server_name = rustls::pki_types::ServerName::try_from("127.0.0.1")
            .expect("127.0.0.1 is a valid server name");
        let mut tls = connector
            .connect(server_name, tcp)
            .await
            .expect("TLS handshake with the fake kube-apiserver");
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        if let Some(token) = bearer {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        head.push_str("\r\n");
        tls.write_all(head.as_bytes())
            .await
            .expect("write request head");
        tls.write_all(body).await.expect("write request body");
        tls.flush().await.expect("flush request");
        let mut raw = Vec::new();
        // The server may close without close_notify; keep what was read.
        let _ = tls.read_to_end(&mut raw).await;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .expect("HTTP response has a head and a body");
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .expect("HTTP response has a status code");
        (status, body.to_string())
    }
}
