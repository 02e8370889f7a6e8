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
