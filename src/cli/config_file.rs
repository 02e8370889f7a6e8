//! `config.yaml`: found, created on first run, and read through the command-line rules (spec §2.4).
//!
//! Differences from code-server, all deliberate:
//! * the file is created with mode 0600 (code-server leaves it world-readable, #7104);
//! * `--help` and `--version` do not create it;
//! * `key: false` turns a switch off (code-server's string conversion turns it on);
//! * `key: null` and a file of only comments mean "not set" instead of an error.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use yaml_serde::Value as Yaml;

use super::CliError;
use super::options::{self, Kind};
use super::parse::{CertArg, Parsed, Value, bool_from_text, convert};

/// Creates the default config file if nothing is at `path`. Returns whether it wrote one.
pub fn ensure_exists(path: &Path) -> Result<bool, CliError> {
    if path.exists() {
        return Ok(false);
    }
    let fail = |e: std::io::Error| {
        CliError::new(format!("could not create {}: {}", path.display(), crate::errno::describe(&e)))
    };
    // The directory holds the password: ours alone when we make it, whatever the umask.
    if let Some(dir) = path.parent() {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(fail)?;
    }
    let mut file = match fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(f) => f,
        // Another process created it between our check and the open: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(fail(e)),
    };
    let body = format!("bind-addr: 127.0.0.1:8080\nauth: password\npassword: {}\ncert: false\n", generate_password());
    file.write_all(body.as_bytes()).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    Ok(true)
}

/// 24 lowercase hex characters from 12 random bytes, like code-server's `generatePassword`.
fn generate_password() -> String {
    crate::util::random_hex(12)
}

/// Reads and parses the config file into option values.
pub fn read(path: &Path, cwd: &Path) -> Result<Parsed, CliError> {
    let prefix = |msg: String| CliError::new(format!("error reading {}: {msg}", path.display()));
    let text = fs::read_to_string(path).map_err(|e| prefix(e.to_string()))?;
    parse_text(&text, cwd).map_err(|e| prefix(e.to_string()))
}

/// The file's text read into option values (crate-visible for the `config` fuzz target).
pub(crate) fn parse_text(text: &str, cwd: &Path) -> Result<Parsed, CliError> {
    let mut parsed = Parsed::default();
    let doc: Yaml = yaml_serde::from_str(text).map_err(|e| CliError::new(e.to_string()))?;
    let map = match doc {
        Yaml::Null => return Ok(parsed),
        Yaml::Mapping(m) => m,
        other => {
            return Err(CliError::new(format!(
                "invalid config: expected option names with values, found {}",
                kind_name(&other)
            )));
        }
    };
    for (key, value) in map {
        let Yaml::String(key) = key else {
            return Err(CliError::new(format!("invalid config: option names must be text, found {}", kind_name(&key))));
        };
        if key == "multi-user" {
            parsed.multi_user = Some(value);
            continue;
        }
        let spec = options::by_name(&key).ok_or_else(|| CliError::new(format!("Unknown option --{key}")))?;
        if spec.cli_only {
            return Err(CliError::new(format!("--{key} can only be given on the command line")));
        }
        let items = match value {
            Yaml::Null => continue,
            Yaml::Sequence(items) if spec.kind == Kind::List => items,
            Yaml::Sequence(_) => {
                return Err(CliError::new(format!("--{key} takes one value, not a list")));
            }
            Yaml::Mapping(_) | Yaml::Tagged(_) => {
                return Err(CliError::new(format!("--{key} has an invalid value")));
            }
            scalar => vec![scalar],
        };
        for item in items {
            let value = match (spec.kind, &item) {
                (Kind::Bool, Yaml::Bool(b)) => Value::Bool(*b),
                (Kind::Bool, Yaml::String(s)) => Value::Bool(bool_from_text(spec, s)?),
                (Kind::OptionalPath, Yaml::Bool(true)) => Value::Cert(CertArg::Generate),
                (Kind::OptionalPath, Yaml::Bool(false)) => Value::Cert(CertArg::Off),
                (_, Yaml::String(s)) => convert(spec, s, cwd)?,
                (_, Yaml::Number(n)) => convert(spec, &n.to_string(), cwd)?,
                (_, Yaml::Bool(b)) => convert(spec, &b.to_string(), cwd)?,
                _ => return Err(CliError::new(format!("--{key} has an invalid value"))),
            };
            parsed.set(spec, value);
        }
    }
    Ok(parsed)
}

fn kind_name(v: &Yaml) -> &'static str {
    match v {
        Yaml::Null => "nothing",
        Yaml::Bool(_) => "a boolean",
        Yaml::Number(_) => "a number",
        Yaml::String(_) => "a string",
        Yaml::Sequence(_) => "a list",
        Yaml::Mapping(_) => "a mapping",
        Yaml::Tagged(_) => "a tagged value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Parsed, CliError> {
        parse_text(text, Path::new("/cfg"))
    }

    #[test]
    fn reads_every_value_shape() {
        let p = parse(
            "bind-addr: 127.0.0.1:8080\nauth: none\npassword: 123\ncert: false\nport: 9000\n\
             proxy-domain:\n  - a.com\n  - b.com\ntrusted-origins: one.com\nopen: false\n\
             disable-proxy: true\nuser-data-dir: data\napp-name: null\n",
        )
        .unwrap();
        assert_eq!(p.str("bind-addr"), Some("127.0.0.1:8080"));
        assert_eq!(p.str("auth"), Some("none"));
        assert_eq!(p.str("password"), Some("123"));
        assert_eq!(p.get("cert"), Some(&Value::Cert(CertArg::Off)));
        assert_eq!(p.num("port"), Some(9000));
        assert_eq!(p.list("proxy-domain"), &["a.com", "b.com"]);
        assert_eq!(p.list("trusted-origins"), &["one.com"]);
        assert_eq!(p.get("open"), Some(&Value::Bool(false)));
        assert!(p.flag("disable-proxy"));
        assert_eq!(p.str("user-data-dir"), Some("/cfg/data"));
        assert_eq!(p.get("app-name"), None);
    }

    #[test]
    fn cert_true_generates() {
        let p = parse("cert: true\n").unwrap();
        assert_eq!(p.get("cert"), Some(&Value::Cert(CertArg::Generate)));
    }

    #[test]
    fn empty_and_comment_only_files_set_nothing() {
        assert!(parse("").unwrap().values.is_empty());
        assert!(parse("# just a comment\n").unwrap().values.is_empty());
    }

    #[test]
    fn bad_files_are_errors() {
        let e = |t: &str| parse(t).unwrap_err().to_string();
        assert_eq!(e("nonsense: 1\n"), "Unknown option --nonsense");
        assert!(e("just a string").starts_with("invalid config"));
        assert_eq!(e("port: eighty\n"), "--port must be a number");
        assert_eq!(e("auth: maybe\n"), "--auth valid values: [password, none]");
        assert_eq!(e("port: [1, 2]\n"), "--port takes one value, not a list");
        assert!(!e("bind-addr: [unclosed\n").is_empty());
    }
}
