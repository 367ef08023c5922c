//! Operating tenant-authz: the decision log (JSON fields, sampling of cached allows, never a
//! token), the runtime log filter and `/debug/cache` on the admin port, and the route names
//! the shipped Envoy configs send for the log. The real binary, the fake Kubernetes API or the
//! static backend.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::authz::{check_request, http_status, AuthzProcess};
use support::fake_kube::{FakeKube, FakeUser, Fault, ReviewKind, Subject};

const QUERY: &str = "tok-Zq8v3Lw1Xy7Rb2Nc9Dm4Pk6Hj5Ts0Gf";
const QUERY_USER: &str = "system:serviceaccount:showcase:query";
const STRANGER: &str = "tok-Uu3Wq9Ee1Rr7Tt5Yy2Ii8Oo4Pp6Aa0S";

/// The static example's tokens (examples/static.yaml).
const GRAFANA: &str = "demo-showcase-grafana-token";
const GRAFANA_USER: &str = "system:serviceaccount:showcase:grafana";
const SRE: &str = "demo-sre-token";

async fn fake() -> FakeKube {
    let fake = FakeKube::start().await;
    fake.add_token(QUERY, FakeUser::service_account("showcase", "query"));
    fake.grant(Subject::User(QUERY_USER.into()), "showcase", "get");
    fake.grant(Subject::User(QUERY_USER.into()), "payments", "get");
    fake
}

/// A read Check with Envoy's request id and the route's name.
async fn read(authz: &AuthzProcess, token: &str, tenants: &str, request_id: &str) -> u16 {
    let auth = format!("Bearer {token}");
    let mut req = check_request(
        "GET",
        "/api/search",
        &[
            ("authorization", &auth),
            ("x-scope-orgid", tenants),
            ("x-request-id", request_id),
        ],
        Some("read"),
    );
    if let Some(a) = req.attributes.as_mut() {
        a.context_extensions
            .insert("route".into(), "query_read".into());
    }
    let r = authz.client().await.check(req).await.expect("answered");
    http_status(&r.into_inner())
}

/// The JSON decision lines of the log.
fn decision_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "tenant_authz::decision")
        .collect()
}

/// The one decision line of `request_id`, waiting a little for it to be written.
async fn line_of(authz: &AuthzProcess, request_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let found: Vec<Value> = decision_lines(&authz.log())
            .into_iter()
            .filter(|v| v["request_id"] == request_id)
            .collect();
        if found.len() == 1 {
            return found.into_iter().next().unwrap();
        }
        assert!(
            found.len() < 2 && Instant::now() < deadline,
            "want one decision line for {request_id}, got {}; log:\n{}",
            found.len(),
            authz.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// No 12-byte piece of `token` anywhere in `log`.
fn assert_no_piece_of(token: &str, log: &str) {
    for i in 0..=token.len().saturating_sub(12) {
        let piece = &token[i..i + 12];
        assert!(!log.contains(piece), "the log holds {piece:?} of a token");
    }
}

async fn admin(authz: &AuthzProcess, method: &str, path: &str, body: &str) -> (u16, String) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://127.0.0.1:{}{path}", authz.admin_port);
    let req = match method {
        "PUT" => client.put(url).body(body.to_string()),
        _ => client.get(url),
    };
    let r = req
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("admin");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

fn static_config(dir: &Path) -> std::path::PathBuf {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/static.yaml"))
            .unwrap();
    let path = dir.join("static.yaml");
    std::fs::write(&path, example).unwrap();
    path
}

async fn static_authz(env: &[(&str, &str)], args: &[&str]) -> (AuthzProcess, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = static_config(dir.path());
    let mut all = vec!["--config", config.to_str().unwrap(), "--log-format", "json"];
    all.extend_from_slice(args);
    let authz = AuthzProcess::spawn_args(&all, env);
    authz.wait_ready(Duration::from_secs(20)).await;
    (authz, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_decision_lines_carry_every_field_and_never_a_token() {
    let fake = fake().await;
    let authz = AuthzProcess::start(fake.kubeconfig_path(), &["--log-format", "json"]).await;

    assert_eq!(read(&authz, QUERY, "showcase", "rid-reviewed").await, 200);
    assert_eq!(read(&authz, QUERY, "showcase", "rid-cached").await, 200);
    assert_eq!(read(&authz, STRANGER, "showcase", "rid-401").await, 401);
    assert_eq!(read(&authz, QUERY, "secret-ns", "rid-403").await, 403);
    fake.set_fault_for(ReviewKind::SubjectAccessReview, Fault::Status500);
    assert_eq!(read(&authz, QUERY, "payments", "rid-503").await, 503);

    let reviewed = line_of(&authz, "rid-reviewed").await;
    assert_eq!(reviewed["level"], "INFO");
    assert_eq!(reviewed["message"], "check");
    assert_eq!(reviewed["decision"], "allow");
    assert_eq!(reviewed["status"], 200);
    assert_eq!(reviewed["reason"], "ok");
    assert_eq!(reviewed["user"], QUERY_USER);
    assert_eq!(reviewed["tenants"], "showcase");
    assert_eq!(reviewed["product"], "tempo");
    assert_eq!(reviewed["action"], "read");
    assert_eq!(reviewed["cached"], false);
    assert_eq!(reviewed["route"], "query_read");
    assert!(reviewed["latency_us"].is_u64(), "{reviewed}");

    // RUST_LOG=debug in these tests: cached allows are there, at debug.
    let cached = line_of(&authz, "rid-cached").await;
    assert_eq!(cached["level"], "DEBUG");
    assert_eq!(cached["decision"], "allow");
    assert_eq!(cached["cached"], true);

    let unauthenticated = line_of(&authz, "rid-401").await;
    assert_eq!(unauthenticated["decision"], "deny");
    assert_eq!(unauthenticated["status"], 401);
    assert_eq!(unauthenticated["reason"], "unauthenticated");
    assert_eq!(unauthenticated["tenants"], "showcase");
    assert!(unauthenticated.get("user").is_none(), "{unauthenticated}");

    let forbidden = line_of(&authz, "rid-403").await;
    assert_eq!(forbidden["level"], "INFO");
    assert_eq!(forbidden["status"], 403);
    assert_eq!(forbidden["reason"], "forbidden");
    assert_eq!(forbidden["user"], QUERY_USER);
    assert_eq!(forbidden["tenants"], "secret-ns");
    assert!(
        forbidden["detail"].as_str().unwrap().contains("secret-ns"),
        "{forbidden}"
    );

    let unavailable = line_of(&authz, "rid-503").await;
    assert_eq!(unavailable["level"], "WARN");
    assert_eq!(unavailable["status"], 503);
    assert_eq!(unavailable["reason"], "unavailable");
    assert_eq!(unavailable["cached"], false);

    let log = authz.log();
    assert_no_piece_of(QUERY, &log);
    assert_no_piece_of(STRANGER, &log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_in_the_request_id_do_not_reach_the_log() {
    let (authz, _dir) = static_authz(&[], &[]).await;
    assert_eq!(
        read(&authz, GRAFANA, "showcase", "rid\u{1b}[31m-x").await,
        200
    );
    let line = line_of(&authz, "rid[31m-x").await;
    assert_eq!(line["user"], GRAFANA_USER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_allows_are_logged_at_info_at_ratio_one_and_not_at_zero() {
    for (ratio, logged) in [("1.0", true), ("0", false)] {
        let (authz, _dir) = static_authz(
            &[("RUST_LOG", "info")],
            &["--log-cached-allow-sample-ratio", ratio],
        )
        .await;
        assert_eq!(read(&authz, GRAFANA, "showcase", "rid-first").await, 200);
        assert_eq!(read(&authz, GRAFANA, "showcase", "rid-second").await, 200);
        assert_eq!(line_of(&authz, "rid-first").await["cached"], false);
        // The decision lines are written in order: the sentinel's line comes after.
        assert_eq!(
            read(&authz, STRANGER, "showcase", "rid-sentinel").await,
            401
        );
        line_of(&authz, "rid-sentinel").await;
        let second: Vec<Value> = decision_lines(&authz.log())
            .into_iter()
            .filter(|v| v["request_id"] == "rid-second")
            .collect();
        if logged {
            assert_eq!(second.len(), 1, "ratio {ratio}: {}", authz.log());
            assert_eq!(second[0]["level"], "INFO");
            assert_eq!(second[0]["cached"], true);
        } else {
            assert!(second.is_empty(), "ratio {ratio}: {second:?}");
        }
    }
}

#[tokio::test]
async fn sample_ratio_outside_zero_to_one_is_refused_naming_the_field() {
    let out = std::process::Command::new(support::authz::binary())
        .args(["--log-cached-allow-sample-ratio", "1.5", "--print-config"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("log.cached_allow_sample_ratio"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_log_keys_still_work_and_are_warned_about_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = static_config(dir.path());
    let mut text = std::fs::read_to_string(&config).unwrap();
    assert!(!text.contains("log_format"), "examples/static.yaml changed");
    text.push_str("\nlog_format: json\n");
    std::fs::write(&config, text).unwrap();
    let authz = AuthzProcess::spawn_args(&["--config", config.to_str().unwrap()], &[]);
    authz.wait_ready(Duration::from_secs(20)).await;
    let log = authz.log();
    let warning = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("old key") && m.contains("log.format"))
        })
        .unwrap_or_else(|| {
            panic!(
                "no JSON warning about the old key (so log_format: json took effect too):\n{log}"
            )
        });
    assert_eq!(warning["level"], "WARN", "{warning}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_filter_changes_without_restart_and_a_bad_one_is_refused() {
    let (authz, _dir) = static_authz(&[("RUST_LOG", "info")], &[]).await;
    assert_eq!(
        admin(&authz, "GET", "/debug/log-filter", "").await,
        (200, "info\n".into())
    );
    assert_eq!(read(&authz, GRAFANA, "showcase", "rid-warm").await, 200);
    assert_eq!(read(&authz, GRAFANA, "showcase", "rid-quiet").await, 200);

    let (status, body) = admin(
        &authz,
        "PUT",
        "/debug/log-filter",
        "info,tenant_authz::decision=debug\n",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("tenant_authz::decision=debug"), "{body}");
    assert_eq!(read(&authz, GRAFANA, "showcase", "rid-loud").await, 200);
    let loud = line_of(&authz, "rid-loud").await;
    assert_eq!(
        (&loud["level"], &loud["cached"]),
        (&"DEBUG".into(), &true.into())
    );
    let quiet = decision_lines(&authz.log())
        .into_iter()
        .filter(|v| v["request_id"] == "rid-quiet")
        .count();
    assert_eq!(quiet, 0, "a cached allow at debug before the change");

    let (status, body) = admin(&authz, "PUT", "/debug/log-filter", "info,tenant_authz=loud").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid filter"), "{body}");
    let (_, current) = admin(&authz, "GET", "/debug/log-filter", "").await;
    assert!(
        current.contains("tenant_authz::decision=debug"),
        "{current}"
    );
    assert_eq!(admin(&authz, "PUT", "/debug/log-filter", " ").await.0, 400);

    // A filter that silences everything is still recorded: the line is written before it
    // takes effect.
    assert_eq!(
        admin(&authz, "PUT", "/debug/log-filter", "off").await.0,
        200
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !authz.log().contains(r#""requested":"\"off\"""#) {
        assert!(
            std::time::Instant::now() < deadline,
            "the change to off was not logged:\n{}",
            authz.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_cache_counts_tiers_and_one_user_without_names() {
    let (authz, _dir) = static_authz(&[], &[]).await;
    let report = |body: String| -> Value { serde_json::from_str(&body).expect("JSON") };
    let (status, before) = admin(&authz, "GET", "/debug/cache", "").await;
    assert_eq!(status, 200);
    let before = report(before);
    assert_eq!(before["allowed"]["entries"], 0);
    assert_eq!(before["allowed"]["ttl_seconds"], 60.0);
    assert_eq!(before["allowed"]["watched_ttl_seconds"], 600.0);
    assert_eq!(before["allowed"]["watched_ttl_in_force"], false);
    assert_eq!(before["allowed"]["effective_ttl_seconds"], 60.0);
    assert_eq!(before["identities"]["entries"], 0);

    assert_eq!(read(&authz, GRAFANA, "showcase", "r1").await, 200);
    assert_eq!(read(&authz, GRAFANA, "payments", "r2").await, 403);
    assert_eq!(read(&authz, SRE, "showcase|payments", "r3").await, 200);
    assert_eq!(read(&authz, STRANGER, "showcase", "r4").await, 401);

    let (_, body) = admin(&authz, "GET", "/debug/cache", "").await;
    assert!(
        !body.contains("grafana") && !body.contains("sre"),
        "names in {body}"
    );
    let after = report(body);
    assert_eq!(after["identities"]["entries"], 2);
    assert_eq!(after["unauthenticated"]["entries"], 1);
    assert_eq!(after["allowed"]["entries"], 3);
    assert_eq!(after["denied"]["entries"], 1);
    assert!(after.get("user").is_none());

    let (_, one) = admin(
        &authz,
        "GET",
        &format!("/debug/cache?user={GRAFANA_USER}"),
        "",
    )
    .await;
    let one = report(one);
    assert_eq!(one["user"]["identities"], 1);
    assert_eq!(one["user"]["allowed"], 1);
    assert_eq!(one["user"]["denied"], 1);
    let (_, sre) = admin(&authz, "GET", "/debug/cache?user=sre%40example.com", "").await;
    let sre = report(sre);
    assert_eq!(sre["user"]["allowed"], 2);
    assert_eq!(sre["user"]["denied"], 0);
}

/// Every route of the shipped Envoy configs that asks tenant-authz names itself in the
/// `route` context extension, with its own route name (what the decision log shows).
#[test]
fn shipped_routes_name_themselves_for_the_decision_log() {
    fn walk<'a>(v: &'a serde_yaml_ng::Value, out: &mut Vec<&'a serde_yaml_ng::Value>) {
        match v {
            serde_yaml_ng::Value::Mapping(m) => {
                if m.contains_key("match") && m.contains_key("name") {
                    out.push(v);
                }
                m.values().for_each(|x| walk(x, out));
            }
            serde_yaml_ng::Value::Sequence(s) => s.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut checked = 0;
    for file in [
        "query-frontend.yaml",
        "ingest-frontend.yaml",
        "loki-frontend.yaml",
        "mimir-frontend.yaml",
    ] {
        let path = format!("{}/envoy/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
        let yaml = {
            let mut y = yaml;
            y.apply_merge().unwrap();
            y
        };
        let mut routes = Vec::new();
        walk(&yaml, &mut routes);
        for route in routes {
            let name = route["name"].as_str().unwrap();
            let ext = &route["typed_per_filter_config"]["envoy.filters.http.ext_authz"]
                ["check_settings"]["context_extensions"];
            if ext.is_mapping() {
                assert_eq!(ext["route"].as_str(), Some(name), "{file}: route {name}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "only {checked} checked routes found");
}
