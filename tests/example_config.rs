//! `config.example.yaml` stays in step with the flags: it parses, and names every option.

use std::path::Path;

use code_server::cli::{config_file, options::OPTIONS};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml");

#[test]
fn example_config_parses() {
    let parsed = config_file::read(Path::new(EXAMPLE), Path::new("/")).expect("config.example.yaml parses");
    assert_eq!(parsed.str("auth"), Some("password"));
}

#[test]
fn example_config_names_every_option() {
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    // Options that are actions of the command line (`--completions`) have no place in the file.
    for o in OPTIONS.iter().filter(|o| !o.cli_only) {
        let named = text.lines().any(|l| {
            let l = l.trim_start_matches('#').trim_start();
            l.starts_with(&format!("{}:", o.name))
        });
        assert!(named, "config.example.yaml does not mention {}", o.name);
    }
    for o in OPTIONS.iter().filter(|o| o.cli_only) {
        assert!(!text.contains(&format!("{}:", o.name)), "{} is command-line only", o.name);
    }
}

/// The multi-user blocks of `config.example.yaml` (commented out there), uncommented, are valid
/// configurations: the embedded default, and PostgreSQL with Redis.
#[test]
fn example_multi_user_sections_resolve() {
    use code_server::multiuser::config::{Database, MultiUserConfig, SessionBackend};
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    let mut blocks: Vec<String> = vec![];
    let mut current: Option<String> = None;
    for line in text.lines() {
        let body = line.strip_prefix("# ").or_else(|| line.strip_prefix("#"));
        match (body, current.as_mut()) {
            (Some(b), _) if b.starts_with("multi-user:") => {
                blocks.extend(current.take());
                current = Some(String::new());
            }
            (Some(b), Some(block)) if b.starts_with(' ') => {
                block.push_str(b);
                block.push('\n');
            }
            _ => blocks.extend(current.take()),
        }
    }
    assert_eq!(blocks.len(), 2, "the embedded default and the PostgreSQL + Redis example");
    let env = code_server::environment::Environment::default();
    let data = Path::new("/var/lib/code-server");
    let resolve = |yaml: &str| {
        let value: yaml_serde::Value = yaml_serde::from_str(yaml).unwrap();
        MultiUserConfig::resolve(Some(value), &env, data, Path::new("/")).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
    };
    let embedded = resolve(&blocks[0]);
    assert!(matches!(embedded.database, Database::Sqlite { .. }));
    assert!(matches!(embedded.sessions, SessionBackend::Database));
    let big = resolve(&blocks[1]);
    assert!(matches!(big.database, Database::Postgres(_)));
    assert!(matches!(big.sessions, SessionBackend::Redis(_)));
}
