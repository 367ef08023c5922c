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
            products: vec![],
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

/// Source files under `dir` (recursively) whose file stem is `stem`.
fn files_named(dir: &std::path::Path, stem: &str, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                files_named(&path, stem, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_stem().is_some_and(|s| s == stem)
        {
            out.push(path);
        }
    }
}

/// Every test the README's threat table names exists, so the table cannot drift from the
/// suite: `file::name`, `file::{a, b}` (a test file, or a `*_tests.rs` / module in `src/`), and
/// fuzz targets.
#[test]
fn threat_table_names_tests_that_exist() {
    let readme = readme();
    let start = readme
        .find("### Threats, and the tests that hold them")
        .expect("README has the threat table");
    let table = &readme[start..];
    let table = &table[..table.find("\n\n###").unwrap_or(table.len())];
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for cell in table.split('`') {
        let Some((module, names)) = cell.split_once("::") else {
            continue;
        };
        if module.is_empty() || !module.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            continue;
        }
        let names: Vec<&str> = names
            .trim_matches(|c| c == '{' || c == '}')
            .split(',')
            .map(str::trim)
            .collect();
        let mut files = Vec::new();
        for dir in ["src", "tests"] {
            files_named(&root.join(dir), module, &mut files);
        }
        assert!(
            !files.is_empty(),
            "README names `{module}::…`: no {module}.rs"
        );
        let sources: String = files
            .iter()
            .map(|f| std::fs::read_to_string(f).expect("read source"))
            .collect();
        for name in names {
            if name == "tests" {
                assert!(
                    sources.contains("mod tests"),
                    "{module} has no tests module"
                );
            } else {
                assert!(
                    sources.contains(&format!("fn {name}(")),
                    "README names `{module}::{name}`, which does not exist"
                );
            }
            checked += 1;
        }
    }
    for target in table.split("fuzz target").skip(1) {
        for name in target.split('`').skip(1).step_by(2).take(3) {
            if !name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                break;
            }
            assert!(
                root.join(format!("fuzz/fuzz_targets/{name}.rs")).is_file(),
                "README names fuzz target `{name}`, which does not exist"
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 30,
        "only {checked} names found in the threat table"
    );
}
