//! The README's configuration reference and `examples/config.yaml` agree with the code.

use clap::CommandFactory;
use tenant_authz::cli::Cli;
use tenant_authz::Config;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md")
}

#[test]
fn readme_documents_every_flag_and_its_env_var() {
    let readme = readme();
    for arg in Cli::command().get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if matches!(long, "help" | "version") {
            continue;
        }
        assert!(
            readme.contains(&format!("`--{long}`")),
            "README lacks `--{long}`"
        );
        if let Some(env) = arg.get_env() {
            let env = env.to_string_lossy();
            assert!(readme.contains(&format!("`{env}`")), "README lacks `{env}`");
        }
    }
}

fn field_paths(prefix: &str, value: &serde_yaml_ng::Value, out: &mut Vec<String>) {
    if let serde_yaml_ng::Value::Mapping(map) = value {
        for (k, v) in map {
            let key = k.as_str().expect("string keys");
            let path = if prefix.is_empty() {
                key.to_string()
            } else {
                format!("{prefix}.{key}")
            };
            match v {
                serde_yaml_ng::Value::Mapping(_) if path != "authorization.verbs" => {
                    field_paths(&path, v, out)
                }
                _ => out.push(path),
            }
        }
    }
}

#[test]
fn readme_documents_every_config_field() {
    let readme = readme();
    let mut config = Config::default();
    config.kubernetes.kubeconfig = Some("/k".into());
    config
        .static_
        .grants
        .push(tenant_authz::config::StaticGrant {
            users: vec!["u".into()],
            groups: vec![],
            tenants: vec!["*".into()],
            actions: vec![],
        });
    let yaml = serde_yaml_ng::to_value(&config).unwrap();
    let mut paths = Vec::new();
    field_paths("", &yaml, &mut paths);
    assert!(paths.len() > 15, "{paths:?}");
    for path in paths {
        let documented = readme.contains(&format!("`{path}`"))
            || readme.contains(&format!("`{path}` / "))
            || (path.starts_with("authorization.verbs")
                && readme.contains("`authorization.verbs.read`"))
            || (path.starts_with("actions.") && readme.contains("`actions.rules`"))
            || (path.starts_with("static.") && readme.contains("`static.grants`"));
        assert!(documented, "README lacks config field `{path}`");
    }
}

#[test]
fn example_config_is_valid_and_states_the_real_defaults() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/config.yaml"))
            .unwrap();
    let example = Config::from_yaml(&text).expect("examples/config.yaml parses");
    example.validate().expect("examples/config.yaml is valid");
    assert_eq!(example, Config::default());
}
