//! code-server's command-line rules (spec §2.1), shared by the config-file reader.
//!
//! Where code-server's parser has a quirk we keep the sane behaviour and say so:
//! * `--flag=false` turns a switch off (code-server turns it on);
//! * numbers must be whole numbers (`8081abc` is an error, not 8081);
//! * `--cert=true` generates a certificate like a bare `--cert`.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use super::CliError;
use super::options::{self, Kind, OptSpec};

/// `--cert`'s three states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertArg {
    Off,
    Generate,
    Path(PathBuf),
}

/// A parsed option value, typed by the option's [`Kind`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Bool(bool),
    Str(String),
    List(Vec<String>),
    Num(u64),
    Cert(CertArg),
}

/// Options and positional arguments from one source (command line or config file).
#[derive(Debug, Default, Clone)]
pub struct Parsed {
    pub values: BTreeMap<&'static str, Value>,
    pub positionals: Vec<String>,
    /// The config file's `multi-user:` mapping, read by [`crate::multiuser::config`] (it is a
    /// nested section, not an option).
    pub multi_user: Option<yaml_serde::Value>,
}

impl Parsed {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }

    pub fn flag(&self, name: &str) -> bool {
        matches!(self.values.get(name), Some(Value::Bool(true)))
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        match self.values.get(name) {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        }
    }

    pub fn num(&self, name: &str) -> Option<u64> {
        match self.values.get(name) {
            Some(Value::Num(n)) => Some(*n),
            _ => None,
        }
    }

    pub fn list(&self, name: &str) -> &[String] {
        match self.values.get(name) {
            Some(Value::List(l)) => l,
            _ => &[],
        }
    }

    /// Records one occurrence of an option: lists accumulate, everything else replaces.
    pub(crate) fn set(&mut self, spec: &'static OptSpec, value: Value) {
        match (self.values.get_mut(spec.name), value) {
            (Some(Value::List(existing)), Value::List(more)) => existing.extend(more),
            (_, value) => {
                self.values.insert(spec.name, value);
            }
        }
    }
}

/// The command line as clap sees it: one argument per option of [`options::OPTIONS`] (long
/// name, single-letter short, value count by kind, possible values, path hints) and the paths
/// to open. Values arrive as text and are typed by [`convert`], so errors keep code-server's
/// words. Shell completions are generated from this.
pub fn command() -> clap::Command {
    use clap::{Arg, ArgAction, ValueHint};
    let mut cmd = clap::Command::new("code-server")
        .no_binary_name(true)
        .disable_help_flag(true)
        .disable_version_flag(true)
        // The last occurrence of a single-valued option wins, as in code-server.
        .args_override_self(true);
    for spec in options::OPTIONS {
        let mut arg = Arg::new(spec.name).long(spec.name);
        if let Some(c) = spec.short.filter(|s| s.len() == 1).and_then(|s| s.chars().next()) {
            arg = arg.short(c);
        }
        arg = match spec.description {
            Some(d) => arg.help(d.replace('\n', " ")),
            None => arg.hide(true),
        };
        arg = match spec.kind {
            // `--flag` or `--flag=true|false`; a following word is never its value.
            Kind::Bool => arg.num_args(0..=1).require_equals(true).default_missing_value("true").action(ArgAction::Set),
            Kind::List => arg.num_args(1).action(ArgAction::Append),
            Kind::OptionalPath => arg.num_args(0..=1).default_missing_value("true").action(ArgAction::Set),
            Kind::Enum(values) => {
                arg.num_args(1).value_parser(clap::builder::PossibleValuesParser::new(values.to_vec()))
            }
            Kind::Str | Kind::Num => arg.num_args(1).action(ArgAction::Set),
        };
        if spec.path {
            arg = arg.value_hint(ValueHint::AnyPath);
        }
        cmd = cmd.arg(arg);
    }
    cmd.arg(Arg::new(PATHS).num_args(0..).action(ArgAction::Append).value_hint(ValueHint::AnyPath))
}

const PATHS: &str = "paths to open";

/// Parses command-line arguments (without the program name).
///
/// Before clap sees them, short forms become long ones (code-server's `-vvv` and `-an` are
/// multi-letter shorts, and `-hv` is an error, not `-h -v`), `--name=` counts as "no value yet"
/// (as in code-server: the next word is the value), and unknown or secret options are refused
/// with code-server's messages.
pub fn parse_args(argv: &[String], cwd: &Path) -> Result<Parsed, CliError> {
    let mut words = Vec::with_capacity(argv.len());
    let mut ended = false;
    for arg in argv {
        if ended || !arg.starts_with('-') || arg == "-" {
            words.push(arg.clone());
            ended |= arg == "--";
            continue;
        }
        if arg == "--" {
            ended = true;
            words.push(arg.clone());
            continue;
        }
        let (spec, word) = match arg.strip_prefix("--") {
            Some(long) => {
                let name = long.split_once('=').map_or(long, |(n, _)| n);
                let word =
                    if long.ends_with('=') && long.len() == name.len() + 1 { format!("--{name}") } else { arg.clone() };
                (options::by_name(name), word)
            }
            None => {
                let spec = options::by_short(&arg[1..]);
                (spec, spec.map(|s| format!("--{}", s.name)).unwrap_or_default())
            }
        };
        let Some(spec) = spec else {
            return Err(CliError::new(format!("Unknown option {arg}")));
        };
        if let Some(env) = spec.config_or_env_only {
            return Err(CliError::new(format!(
                "--{} can only be set in the config file or passed in via ${env}",
                spec.name
            )));
        }
        words.push(word);
    }
    let matches = command().try_get_matches_from(&words).map_err(clap_error)?;

    let mut parsed = Parsed::default();
    for spec in options::OPTIONS {
        let Some(values) = matches.get_raw(spec.name) else { continue };
        for text in values {
            let text = text.to_string_lossy();
            parsed.set(spec, convert(spec, &text, cwd)?);
        }
    }
    if let Some(paths) = matches.get_raw(PATHS) {
        parsed.positionals = paths.map(|p| p.to_string_lossy().into_owned()).collect();
    }
    Ok(parsed)
}

/// A clap error in code-server's words.
fn clap_error(e: clap::Error) -> CliError {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let context = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    // `--auth <auth>` → the option's spec.
    let arg = context(ContextKind::InvalidArg);
    let name = arg.trim_start_matches('-').split([' ', '=', '<']).next().unwrap_or_default().to_string();
    let spec = options::by_name(&name);
    match (e.kind(), spec) {
        (ErrorKind::InvalidValue, Some(spec)) if !context(ContextKind::InvalidValue).is_empty() => {
            if let Kind::Enum(values) = spec.kind {
                return CliError::new(format!("--{} valid values: [{}]", spec.name, values.join(", ")));
            }
            CliError::new(format!("--{} has an invalid value", spec.name))
        }
        (ErrorKind::InvalidValue | ErrorKind::NoEquals | ErrorKind::WrongNumberOfValues, Some(spec)) => {
            CliError::new(format!("--{} requires a value", spec.name))
        }
        (ErrorKind::UnknownArgument, _) => CliError::new(format!("Unknown option {arg}")),
        _ => CliError::new(e.kind().as_str().map_or_else(|| "invalid command line".to_string(), str::to_string)),
    }
}

pub(crate) fn bool_from_text(spec: &OptSpec, text: &str) -> Result<bool, CliError> {
    match text {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => {
            Err(CliError::new(format!("--{} is a switch: it takes no value (or true/false), got {text:?}", spec.name)))
        }
    }
}

/// Turns the text of one occurrence into a typed value, with code-server's error messages.
pub(crate) fn convert(spec: &OptSpec, text: &str, cwd: &Path) -> Result<Value, CliError> {
    let resolve = |t: &str| -> String {
        if spec.path { absolute(cwd, Path::new(t)).to_string_lossy().into_owned() } else { t.to_string() }
    };
    Ok(match spec.kind {
        Kind::Bool => Value::Bool(bool_from_text(spec, text)?),
        Kind::Str => Value::Str(resolve(text)),
        Kind::List => Value::List(vec![resolve(text)]),
        Kind::Num => match text.trim().parse::<u64>() {
            Ok(n) => Value::Num(n),
            Err(_) => return Err(CliError::new(format!("--{} must be a number", spec.name))),
        },
        Kind::Enum(values) => {
            if !values.contains(&text) {
                return Err(CliError::new(format!("--{} valid values: [{}]", spec.name, values.join(", "))));
            }
            Value::Str(text.to_string())
        }
        Kind::OptionalPath => match text {
            "false" => Value::Cert(CertArg::Off),
            "true" => Value::Cert(CertArg::Generate),
            _ => Value::Cert(CertArg::Path(PathBuf::from(resolve(text)))),
        },
    })
}

/// `path.resolve` without touching the filesystem: joins onto `cwd` and folds `.` and `..`.
pub fn absolute(cwd: &Path, p: &Path) -> PathBuf {
    let joined = if p.is_absolute() { p.to_path_buf() } else { cwd.join(p) };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn parse(a: &[&str]) -> Result<Parsed, CliError> {
        parse_args(&args(a), Path::new("/work"))
    }

    #[test]
    fn long_short_and_values() {
        let p = parse(&[
            "--bind-addr=0.0.0.0:80",
            "-vvv",
            "-an",
            "My App",
            "--port",
            "8081",
            "--port",
            "8082",
            "./proj",
            "--proxy-domain",
            "a,b",
            "--proxy-domain=c",
            "--socket",
            "x/../s.sock",
            "--",
            "--not-a-flag",
        ])
        .unwrap();
        assert_eq!(p.str("bind-addr"), Some("0.0.0.0:80"));
        assert!(p.flag("verbose"));
        assert_eq!(p.str("app-name"), Some("My App"));
        assert_eq!(p.num("port"), Some(8082));
        assert_eq!(p.list("proxy-domain"), &["a,b".to_string(), "c".to_string()]);
        assert_eq!(p.str("socket"), Some("/work/s.sock"));
        assert_eq!(p.positionals, args(&["./proj", "--not-a-flag"]));
    }

    #[test]
    fn value_may_contain_equals() {
        let p = parse(&["--app-name=a=b$c,/d"]).unwrap();
        assert_eq!(p.str("app-name"), Some("a=b$c,/d"));
        // `--name=` then takes the next token.
        let p = parse(&["--app-name=", "next"]).unwrap();
        assert_eq!(p.str("app-name"), Some("next"));
    }

    #[test]
    fn errors_match_code_server() {
        let e = |a: &[&str]| parse(a).unwrap_err().to_string();
        assert_eq!(e(&["--foo"]), "Unknown option --foo");
        assert_eq!(e(&["-hv"]), "Unknown option -hv");
        assert_eq!(e(&["--auth", "--log", "info"]), "--auth requires a value");
        assert_eq!(e(&["--auth", "magic"]), "--auth valid values: [password, none]");
        assert_eq!(e(&["--log=loud"]), "--log valid values: [trace, debug, info, warn, error]");
        assert_eq!(e(&["--port", "80a"]), "--port must be a number");
        assert_eq!(e(&["--password", "x"]), "--password can only be set in the config file or passed in via $PASSWORD");
        assert_eq!(
            e(&["--hashed-password=x"]),
            "--hashed-password can only be set in the config file or passed in via $HASHED_PASSWORD"
        );
        assert_eq!(
            e(&["--github-auth", "x"]),
            "--github-auth can only be set in the config file or passed in via $GITHUB_TOKEN"
        );
    }

    #[test]
    fn cert_is_optional() {
        let p = parse(&["--cert", "--port", "1"]).unwrap();
        assert_eq!(p.get("cert"), Some(&Value::Cert(CertArg::Generate)));
        let p = parse(&["--cert=false"]).unwrap();
        assert_eq!(p.get("cert"), Some(&Value::Cert(CertArg::Off)));
        let p = parse(&["--cert", "c.pem"]).unwrap();
        assert_eq!(p.get("cert"), Some(&Value::Cert(CertArg::Path("/work/c.pem".into()))));
    }

    #[test]
    fn switches_accept_explicit_false() {
        let p = parse(&["--open=false", "--disable-proxy=true", "-e"]).unwrap();
        assert_eq!(p.get("open"), Some(&Value::Bool(false)));
        assert!(p.flag("disable-proxy"));
        assert!(p.flag("ignore-last-opened"));
        assert!(parse(&["--open=maybe"]).is_err());
    }
}
