//! Command line, environment and `config.yaml`, merged into one validated [`Config`] (spec §2).
//!
//! Precedence, highest first (spec §2.5): environment overrides (`$PASSWORD`, ...), command-line
//! flags, config file, fallback environment (`$LOG_LEVEL`, `$CODE_SERVER_APP_NAME`), defaults.
//! Everything here is synchronous and reads the process environment only through [`Environment`],
//! so tests can resolve configurations side by side.

pub mod config_file;
pub mod help;
pub mod options;
pub mod parse;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::auth::password::{PasswordConfig, PasswordSource};
use crate::environment::Environment;
use crate::logging::LogLevel;
pub use crate::multiuser::admin_cli::AccountCommand;
use crate::multiuser::config::MultiUserConfig;
use crate::paths::Paths;
use crate::secret::Secret;
use crate::server::listen::Listen;
use crate::server::tls::Tls;
use crate::vscode::extensions::Commands;
pub use crate::vscode::signing::store::TrustCommand;
pub use parse::{CertArg, Parsed, Value};

/// Where `/security.txt` sends reports unless `--security-contact` says otherwise: code-server's
/// own contact, as its page has it (the VS Code build we serve is code-server's).
pub const DEFAULT_SECURITY_CONTACT: &str = "mailto:security@coder.com";

/// A start-up error: printed as one line, exit status 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError(String);

impl CliError {
    pub fn new(msg: impl Into<String>) -> CliError {
        CliError(msg.into())
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Password,
    None,
}

/// `deployment-mode`: code-server's one user, or accounts (see [`crate::multiuser`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deployment {
    Single,
    Multi(Box<MultiUserConfig>),
}

impl Deployment {
    pub fn multi(&self) -> Option<&MultiUserConfig> {
        match self {
            Deployment::Multi(m) => Some(m),
            Deployment::Single => None,
        }
    }
}

/// The one account action the options ask for; two are an error.
fn account_command(m: &Parsed) -> Result<Option<AccountCommand>, CliError> {
    let name = |flag: &str| m.str(flag).map(str::to_string);
    let mut found = vec![];
    if let Some(username) = name("add-user") {
        found.push(("add-user", AccountCommand::Add { username, admin: m.flag("admin"), email: name("email") }));
    }
    if m.flag("list-users") {
        found.push(("list-users", AccountCommand::List));
    }
    type Make = fn(String) -> AccountCommand;
    let single: [(&str, Make); 5] = [
        ("reset-password", AccountCommand::ResetPassword),
        ("disable-user", AccountCommand::Disable),
        ("enable-user", AccountCommand::Enable),
        ("remove-user", AccountCommand::Remove),
        ("revoke-sessions", AccountCommand::RevokeSessions),
    ];
    for (flag, make) in single {
        if let Some(n) = name(flag) {
            found.push((flag, make(n)));
        }
    }
    if found.len() > 1 {
        return Err(CliError::new(format!("--{} and --{} cannot be used together", found[0].0, found[1].0)));
    }
    if found.is_empty() && (m.flag("admin") || m.get("email").is_some()) {
        return Err(CliError::new("--admin and --email go with --add-user"));
    }
    Ok(found.pop().map(|(_, c)| c))
}

/// The one trust-store action the command line asks for (`--trust-publisher`, ...); two are an
/// error, and so is one next to extension commands (run them one after the other).
fn trust_command(cli: &Parsed, extensions: &Commands) -> Result<Option<TrustCommand>, CliError> {
    let mut found = vec![];
    if let Some(file) = cli.str("trust-publisher") {
        let publisher = cli.str("publisher").map(str::to_string);
        found.push(("trust-publisher", TrustCommand::Trust { key_file: PathBuf::from(file), publisher }));
    }
    if cli.flag("list-trusted-publishers") {
        found.push(("list-trusted-publishers", TrustCommand::List));
    }
    if let Some(p) = cli.str("untrust-publisher") {
        found.push(("untrust-publisher", TrustCommand::Untrust(p.to_string())));
    }
    if found.len() > 1 {
        return Err(CliError::new(format!("--{} and --{} cannot be used together", found[0].0, found[1].0)));
    }
    if cli.get("publisher").is_some() && !matches!(found.first(), Some((_, TrustCommand::Trust { .. }))) {
        return Err(CliError::new("--publisher goes with --trust-publisher"));
    }
    if let Some((flag, _)) = found.first()
        && extensions.any()
    {
        return Err(CliError::new(format!(
            "--{flag} cannot be used with extension commands (--install-extension, ...): run them one after the other"
        )));
    }
    Ok(found.pop().map(|(_, c)| c))
}

/// The resolved configuration of one run.
#[derive(Debug, Clone)]
pub struct Config {
    pub paths: Paths,
    pub config_file: PathBuf,
    pub auth: AuthMode,
    /// `Some` whenever `auth` is `Password` (validated).
    pub password: Option<PasswordConfig>,
    pub listen: Listen,
    pub tls: Option<Tls>,
    pub user_data_dir: PathBuf,
    pub extensions_dir: PathBuf,
    pub builtin_extensions_dir: Option<PathBuf>,
    pub log_level: LogLevel,
    pub app_name: String,
    pub welcome_text: Option<String>,
    pub locale: Option<String>,
    pub i18n: Option<PathBuf>,
    /// Sanitised: every character outside `[A-Za-z0-9-]` became `-`.
    pub cookie_suffix: Option<String>,
    pub session_timeout: Duration,
    pub trusted_proxies: Vec<IpAddr>,
    pub trusted_origins: Vec<String>,
    /// Normalised (spec §2.8): lower case, no `*.`, always containing `{{port}}`, no duplicates.
    pub proxy_domains: Vec<String>,
    pub disable_proxy: bool,
    pub skip_auth_preflight: bool,
    pub abs_proxy_base_path: Option<String>,
    /// How long the port proxy waits for an upstream's response headers (connect included).
    pub proxy_timeout: Duration,
    /// The port proxy's express lane (`$CODE_SERVER_EXPRESS_LANE=off` turns it off: every
    /// proxied request then takes hyper's path; a diagnostic switch).
    pub express_lane: bool,
    /// `--reuse-port`: bind the TCP address with SO_REUSEPORT (several fronts, one port).
    pub reuse_port: bool,
    pub idle_timeout: Option<Duration>,
    pub disable_telemetry: bool,
    pub disable_update_check: bool,
    /// Where `/update/check` reads the latest release (`--update-url`, `$CODE_SERVER_UPDATE_URL`);
    /// `None` for the checker's default.
    pub update_url: Option<String>,
    /// The `Contact:` of `/security.txt` (`--security-contact`).
    pub security_contact: String,
    /// `--metrics-addr`: a listener of its own for `/metrics`.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// `metrics-token` / `$CODE_SERVER_METRICS_TOKEN`: reads `/metrics` without a session.
    pub metrics_token: Option<Secret>,
    pub disable_file_downloads: bool,
    pub disable_file_uploads: bool,
    pub disable_workspace_trust: bool,
    pub disable_getting_started_override: bool,
    pub open: bool,
    pub ignore_last_opened: bool,
    pub new_window: bool,
    pub reuse_window: bool,
    pub github_auth: Option<Secret>,
    pub reconnection_grace_time: Option<String>,
    pub link_protection_trusted_domains: Vec<String>,
    pub enable_proposed_api: Vec<String>,
    pub enable: Vec<String>,
    /// `--vscode-option` values followed by `$VSCODE_OPTIONS`.
    pub vscode_options: Vec<String>,
    pub vscode_dir: Option<PathBuf>,
    pub session_socket: Option<PathBuf>,
    pub extensions: Commands,
    /// Positional paths, made absolute.
    pub paths_to_open: Vec<PathBuf>,
    /// Names of the options typed on the command line (for "open in an existing instance").
    pub cli_option_names: Vec<&'static str>,
    /// Environment edits to apply before any thread or child process starts.
    pub env_changes: EnvChanges,
    pub deployment: Deployment,
    /// `--security-headers` (validated by the parser).
    pub security_headers: crate::headers::Preset,
    /// `--rate-limit` (validated by the parser).
    pub rate_limit: crate::ratelimit::Preset,
    /// `--add-user` and the other account actions.
    pub account_command: Option<AccountCommand>,
    /// `--trust-publisher` and the other trust-store actions.
    pub trust_command: Option<TrustCommand>,
    /// `--for-user`: the account whose workspace the extension commands are for.
    pub for_user: Option<String>,
}

/// What start-up must change in the process environment (spec §2.5): secrets are removed so
/// children never see them; `LOG_LEVEL` and `VSCODE_PROXY_URI` are written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvChanges {
    pub remove: Vec<&'static str>,
    pub set: Vec<(&'static str, String)>,
}

/// What the binary was asked to do.
#[derive(Debug)]
pub enum Command {
    Help,
    /// `--version`; names the VS Code version of the build at `vscode_dir` (or the default)
    /// when one is there.
    Version {
        json: bool,
        vscode_dir: Option<PathBuf>,
    },
    Extensions(Box<Config>),
    /// `--completions SHELL`: print the shell's completion script.
    Completions(String),
    /// `--provision-vscode`: prepare the VS Code build and exit.
    Provision(Box<Config>),
    /// An account action (`--add-user`, ...), in multi-user mode.
    Accounts(Box<Config>),
    /// A trust-store action (`--trust-publisher`, ...) for signed extensions.
    TrustStore(Box<Config>),
    Serve(Box<Config>),
}

/// The outcome of reading the command line and config file.
#[derive(Debug)]
pub struct Loaded {
    pub command: Command,
    /// Info lines to log once logging is set up (e.g. "Wrote default config file to ...").
    pub notes: Vec<String>,
}

/// Reads flags, environment and config file; creates the config file on first run.
pub fn load(argv: &[String], env: &Environment, cwd: &Path) -> Result<Loaded, CliError> {
    let cli = parse::parse_args(argv, cwd)?;
    if cli.flag("help") {
        return Ok(Loaded { command: Command::Help, notes: vec![] });
    }
    if let Some(shell) = cli.str("completions") {
        return Ok(Loaded { command: Command::Completions(shell.to_string()), notes: vec![] });
    }
    if cli.flag("version") {
        let vscode_dir = cli.str("vscode-dir").map(PathBuf::from);
        return Ok(Loaded { command: Command::Version { json: cli.flag("json"), vscode_dir }, notes: vec![] });
    }
    let paths = Paths::from_env(env);
    let config_file = match (cli.str("config"), env.get("CODE_SERVER_CONFIG")) {
        (Some(p), _) => parse::absolute(cwd, Path::new(p)),
        (None, Some(p)) if !p.is_empty() => parse::absolute(cwd, Path::new(p)),
        _ => paths.config.join("config.yaml"),
    };
    let mut notes = vec![];
    if config_file::ensure_exists(&config_file)? {
        notes.push(format!("Wrote default config file to {}", config_file.display()));
    }
    let file = config_file::read(&config_file, cwd)?;
    let config = resolve(&cli, &file, env, cwd, paths, config_file)?;
    let command = if cli.flag("provision-vscode") {
        Command::Provision(Box::new(config))
    } else if config.account_command.is_some() {
        Command::Accounts(Box::new(config))
    } else if config.trust_command.is_some() {
        Command::TrustStore(Box::new(config))
    } else if config.extensions.any() {
        Command::Extensions(Box::new(config))
    } else {
        Command::Serve(Box::new(config))
    };
    Ok(Loaded { command, notes })
}

/// Merges the command line over the config file and applies the environment and defaults.
pub fn resolve(
    cli: &Parsed,
    file: &Parsed,
    env: &Environment,
    cwd: &Path,
    paths: Paths,
    config_file: PathBuf,
) -> Result<Config, CliError> {
    // Command-line values replace config-file values key by key (lists wholesale).
    let mut merged = file.clone();
    for (k, v) in &cli.values {
        merged.values.insert(k, v.clone());
    }
    let m = &merged;
    let env_flag = |name: &str| matches!(env.get(name), Some("1") | Some("true"));
    let env_nonempty = |name: &str| env.get(name).filter(|v| !v.is_empty());
    let mut env_changes = EnvChanges::default();

    // Passwords: the environment wins over the config file; a hash wins over a plain password.
    let mut password = m.str("password").map(Secret::new);
    let mut hashed = m.str("hashed-password").map(Secret::new);
    let mut password_from_env = false;
    let mut hashed_from_env = false;
    if let Some(p) = env.get("PASSWORD") {
        password = Some(Secret::new(p));
        password_from_env = true;
    }
    if let Some(h) = env.get("HASHED_PASSWORD") {
        hashed = Some(Secret::new(h));
        hashed_from_env = true;
    }
    let github_auth = env.get("GITHUB_TOKEN").map(Secret::new).or_else(|| m.str("github-auth").map(Secret::new));
    let metrics_token =
        env_nonempty("CODE_SERVER_METRICS_TOKEN").or_else(|| m.str("metrics-token")).map(|t| Secret::new(t.trim()));
    for var in ["PASSWORD", "HASHED_PASSWORD", "GITHUB_TOKEN", "CODE_SERVER_METRICS_TOKEN"] {
        if env.get(var).is_some() {
            env_changes.remove.push(var);
        }
    }

    let auth = match m.str("auth") {
        Some("none") => AuthMode::None,
        _ => AuthMode::Password,
    };
    let deployment = match env_nonempty("CODE_SERVER_DEPLOYMENT_MODE").or_else(|| m.str("deployment-mode")) {
        None | Some("single") => Deployment::Single,
        Some("multi") => {
            let multi = MultiUserConfig::resolve(file.multi_user.clone(), env, &paths.data, cwd)
                .map_err(|e| CliError::new(e.to_string()))?;
            Deployment::Multi(Box::new(multi))
        }
        Some(other) => {
            return Err(CliError::new(format!("CODE_SERVER_DEPLOYMENT_MODE must be single or multi, got {other:?}")));
        }
    };
    let account_command = account_command(cli)?;
    if let Deployment::Multi(multi) = &deployment {
        if auth == AuthMode::None {
            return Err(CliError::new("--auth none cannot be used with deployment-mode multi: every user signs in"));
        }
        // Children never see the database's or Redis' credentials, nor the first admin's.
        for var in &multi.secret_vars {
            if env.get(var).is_some() && !env_changes.remove.contains(var) {
                env_changes.remove.push(var);
            }
        }
    } else if account_command.is_some() {
        return Err(CliError::new(
            "account actions (--add-user, --list-users, ...) need deployment-mode: multi (in config.yaml, --deployment-mode multi or $CODE_SERVER_DEPLOYMENT_MODE)",
        ));
    }
    let password = match (&hashed, &password) {
        (Some(_), _) => Some(PasswordConfig {
            password: None,
            hashed_password: hashed.clone(),
            source: if hashed_from_env {
                PasswordSource::EnvHashedPassword
            } else {
                PasswordSource::ConfigHashedPassword
            },
        }),
        (None, Some(_)) => Some(PasswordConfig {
            password: password.clone(),
            hashed_password: None,
            source: if password_from_env { PasswordSource::EnvPassword } else { PasswordSource::ConfigPassword },
        }),
        (None, None) => None,
    };
    if auth == AuthMode::Password && password.is_none() && deployment.multi().is_none() {
        return Err(CliError::new(
            "Please pass in a password via the config file or environment variable ($PASSWORD or $HASHED_PASSWORD)",
        ));
    }

    let listen = resolve_listen(cli, file, env)?;
    let reuse_port = m.flag("reuse-port");
    if reuse_port {
        // Two single-user servers on one port would run two VS Code servers on one user-data-dir;
        // fronts of a multi-user deployment share who runs which workspace.
        if deployment.multi().is_none() {
            return Err(CliError::new(
                "--reuse-port needs deployment-mode: multi (fronts that share the user database and its workspace registry)",
            ));
        }
        if !matches!(listen, Listen::Tcp { .. }) {
            return Err(CliError::new("--reuse-port applies to --bind-addr, not to --socket or --socket-fd"));
        }
    }

    let tls = match m.get("cert") {
        None | Some(Value::Cert(CertArg::Off)) => None,
        Some(Value::Cert(CertArg::Generate)) => {
            Some(Tls::SelfSigned { host: m.str("cert-host").unwrap_or("localhost").to_string() })
        }
        Some(Value::Cert(CertArg::Path(cert))) => match m.str("cert-key") {
            Some(key) => Some(Tls::Files { cert: cert.clone(), key: PathBuf::from(key) }),
            None => return Err(CliError::new("--cert-key is missing")),
        },
        Some(_) => unreachable!("cert is always parsed as a CertArg"),
    };

    let user_data_dir = m.str("user-data-dir").map(PathBuf::from).unwrap_or_else(|| paths.data.clone());
    let extensions_dir = m.str("extensions-dir").map(PathBuf::from).unwrap_or_else(|| user_data_dir.join("extensions"));

    // --verbose beats --log, which beats $LOG_LEVEL (ignored when it is not a level).
    let log_level = if m.flag("verbose") {
        LogLevel::Trace
    } else if let Some(l) = m.str("log") {
        LogLevel::parse(l).expect("validated by the parser")
    } else {
        env.get("LOG_LEVEL").and_then(LogLevel::parse).unwrap_or(LogLevel::Info)
    };
    env_changes.set.push(("LOG_LEVEL", log_level.as_str().to_string()));

    let app_name =
        m.str("app-name").or_else(|| env_nonempty("CODE_SERVER_APP_NAME")).unwrap_or("code-server").to_string();

    let cookie_suffix = env_nonempty("CODE_SERVER_COOKIE_SUFFIX")
        .or_else(|| m.str("cookie-suffix"))
        .filter(|s| !s.is_empty())
        .map(|s| s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect());

    // Unlike code-server, the limit applies to both `--idle-timeout-seconds=30` and
    // `--idle-timeout-seconds 30`, and a malformed environment value is an error.
    let idle_seconds = match env_nonempty("CODE_SERVER_IDLE_TIMEOUT_SECONDS") {
        Some(v) => Some(
            v.trim().parse::<u64>().map_err(|_| CliError::new("CODE_SERVER_IDLE_TIMEOUT_SECONDS must be a number"))?,
        ),
        None => m.num("idle-timeout-seconds"),
    };
    if let Some(s) = idle_seconds
        && s <= 60
    {
        return Err(CliError::new("--idle-timeout-seconds must be greater than 60 seconds."));
    }

    let session_timeout = match m.str("session-timeout") {
        Some(s) => parse_duration(s).ok_or_else(|| {
            CliError::new(format!("--session-timeout must be a duration such as 30d, 12h, 90m or 3600, got {s:?}"))
        })?,
        None => Duration::from_secs(30 * 24 * 3600),
    };

    let proxy_timeout = match m.str("proxy-timeout") {
        Some(s) => parse_duration(s).ok_or_else(|| {
            CliError::new(format!("--proxy-timeout must be a duration such as 30s, 5m or 300, got {s:?}"))
        })?,
        None => DEFAULT_PROXY_TIMEOUT,
    };

    let trusted_proxies = m
        .list("trusted-proxies")
        .iter()
        .map(|p| {
            p.trim()
                .parse::<IpAddr>()
                .map_err(|_| CliError::new(format!("--trusted-proxies: {p:?} is not an IP address")))
        })
        .collect::<Result<Vec<_>, _>>()?;

    let proxy_domains = normalize_proxy_domains(m.list("proxy-domain"))?;
    if let Some(first) = proxy_domains.first()
        && env.get("VSCODE_PROXY_URI").is_none_or(str::is_empty)
    {
        env_changes.set.push(("VSCODE_PROXY_URI", format!("//{first}")));
    }

    let mut vscode_options = m.list("vscode-option").to_vec();
    if let Some(extra) = env.get("VSCODE_OPTIONS") {
        vscode_options.extend(extra.split_whitespace().map(str::to_string));
    }
    // As code-server: `flag=value` or a bare `flag`, leading `--` optional; no name is an error,
    // reported before anything starts.
    if let Some(bad) =
        vscode_options.iter().find(|o| o.trim_start_matches("--").split('=').next().is_none_or(str::is_empty))
    {
        return Err(CliError::new(format!("--vscode-option requires a flag name, got {bad:?}")));
    }

    let vscode_dir = m
        .str("vscode-dir")
        .map(PathBuf::from)
        .or_else(|| env_nonempty("CODE_SERVER_VSCODE_DIR").map(|p| parse::absolute(cwd, Path::new(p))));

    // `None`: the update checker's own default feed.
    let update_url =
        m.str("update-url").or_else(|| env_nonempty("CODE_SERVER_UPDATE_URL")).map(|u| u.trim().to_string());
    if let Some(url) = &update_url {
        match url::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => {}
            _ => return Err(CliError::new(format!("--update-url must be an http or https URL, got {url:?}"))),
        }
    }
    let (metrics_addr, metrics_token) = metrics_options(m.str("metrics-addr"), metrics_token)?;
    let security_contact = m.str("security-contact").unwrap_or(DEFAULT_SECURITY_CONTACT).trim().to_string();
    match url::Url::parse(&security_contact) {
        Ok(u) if matches!(u.scheme(), "mailto" | "https") && !security_contact.contains(['\n', '\r']) => {}
        _ => {
            return Err(CliError::new(format!(
                "--security-contact must be a mailto: or https: URI, got {security_contact:?}"
            )));
        }
    }

    let extensions = Commands {
        list: m.flag("list-extensions"),
        install: m.list("install-extension").to_vec(),
        uninstall: m.list("uninstall-extension").to_vec(),
        locate: m.list("locate-extension").to_vec(),
        force: m.flag("force"),
        show_versions: m.flag("show-versions"),
        category: m.str("category").map(str::to_string),
        // Enforcement is on when any source turns it on: `--verify-extensions=false` cannot undo
        // the operator's config file or environment.
        verify: cli.flag("verify-extensions")
            || file.flag("verify-extensions")
            || env_flag("CODE_SERVER_VERIFY_EXTENSIONS"),
    };
    let trust_command = trust_command(cli, &extensions)?;
    let for_user = cli.str("for-user").map(str::to_string);
    if for_user.is_some() && !extensions.any() {
        return Err(CliError::new("--for-user goes with the extension commands (--install-extension, ...)"));
    }

    let paths_to_open = cli.positionals.iter().map(|p| parse::absolute(cwd, Path::new(p))).collect();

    Ok(Config {
        config_file,
        auth,
        password,
        listen,
        tls,
        user_data_dir,
        extensions_dir,
        builtin_extensions_dir: m.str("builtin-extensions-dir").map(PathBuf::from),
        log_level,
        app_name,
        welcome_text: m.str("welcome-text").map(str::to_string),
        locale: m.str("locale").map(str::to_string),
        i18n: m.str("i18n").map(PathBuf::from),
        cookie_suffix,
        session_timeout,
        trusted_proxies,
        trusted_origins: m.list("trusted-origins").to_vec(),
        proxy_domains,
        disable_proxy: m.flag("disable-proxy") || env_flag("CS_DISABLE_PROXY"),
        skip_auth_preflight: m.flag("skip-auth-preflight"),
        abs_proxy_base_path: m.str("abs-proxy-base-path").map(str::to_string),
        proxy_timeout,
        reuse_port,
        express_lane: !matches!(env.get("CODE_SERVER_EXPRESS_LANE"), Some("off" | "0" | "false")),
        idle_timeout: idle_seconds.map(Duration::from_secs),
        disable_telemetry: m.flag("disable-telemetry"),
        disable_update_check: m.flag("disable-update-check"),
        update_url,
        security_contact,
        metrics_addr,
        metrics_token,
        disable_file_downloads: m.flag("disable-file-downloads") || env_flag("CS_DISABLE_FILE_DOWNLOADS"),
        disable_file_uploads: m.flag("disable-file-uploads"),
        disable_workspace_trust: m.flag("disable-workspace-trust"),
        disable_getting_started_override: m.flag("disable-getting-started-override")
            || env_flag("CS_DISABLE_GETTING_STARTED_OVERRIDE"),
        open: m.flag("open"),
        ignore_last_opened: m.flag("ignore-last-opened"),
        new_window: m.flag("new-window"),
        reuse_window: m.flag("reuse-window"),
        github_auth,
        reconnection_grace_time: env_nonempty("CODE_SERVER_RECONNECTION_GRACE_TIME")
            .or_else(|| m.str("reconnection-grace-time"))
            .map(str::to_string),
        link_protection_trusted_domains: m.list("link-protection-trusted-domains").to_vec(),
        enable_proposed_api: m.list("enable-proposed-api").to_vec(),
        enable: m.list("enable").to_vec(),
        vscode_options,
        vscode_dir,
        session_socket: m.str("session-socket").map(|p| parse::absolute(cwd, Path::new(p))),
        extensions,
        paths_to_open,
        cli_option_names: cli.values.keys().copied().collect(),
        env_changes,
        paths,
        deployment,
        account_command,
        trust_command,
        for_user,
        security_headers: m.str("security-headers").and_then(crate::headers::Preset::parse).unwrap_or_default(),
        rate_limit: m.str("rate-limit").and_then(crate::ratelimit::Preset::parse).unwrap_or_default(),
    })
}

/// Where to listen: `--socket-fd` > `--socket` > TCP from `bindAddrFromAllSources` (spec §2.5).
fn resolve_listen(cli: &Parsed, file: &Parsed, env: &Environment) -> Result<Listen, CliError> {
    let pick = |name: &str| cli.get(name).or_else(|| file.get(name));
    if let Some(Value::Num(fd)) = pick("socket-fd") {
        let fd = i32::try_from(*fd).map_err(|_| CliError::new("--socket-fd is out of range"))?;
        return Ok(Listen::Fd(fd));
    }
    if let Some(Value::Str(path)) = pick("socket") {
        let mode = match pick("socket-mode") {
            Some(Value::Str(m)) => {
                Some(u32::from_str_radix(m.trim(), 8).ok().filter(|m| *m <= 0o7777).ok_or_else(|| {
                    CliError::new(format!("--socket-mode must be an octal file mode such as 600, got {m:?}"))
                })?)
            }
            _ => None,
        };
        return Ok(Listen::Socket { path: PathBuf::from(path), mode });
    }

    let env_port = match env.get("PORT").filter(|p| !p.is_empty()) {
        Some(p) => Some(parse_port(p).ok_or_else(|| CliError::new(format!("$PORT must be a port number, got {p:?}")))?),
        None => None,
    };
    let mut host = "localhost".to_string();
    let mut port = 8080u16;
    // Two passes, config file then command line, each: bind-addr, $CODE_SERVER_HOST, --host,
    // $PORT, --port. So $PORT beats a port from the config file but not --port.
    for source in [file, cli] {
        if let Some(addr) = source.str("bind-addr") {
            (host, port) = parse_bind_addr(addr)?;
        }
        if let Some(h) = env.get("CODE_SERVER_HOST").filter(|h| !h.is_empty()) {
            host = strip_brackets(h).to_string();
        }
        if let Some(h) = source.str("host") {
            host = strip_brackets(h).to_string();
        }
        if let Some(p) = env_port {
            port = p;
        }
        if let Some(p) = source.num("port") {
            port =
                u16::try_from(p).map_err(|_| CliError::new(format!("--port must be between 0 and 65535, got {p}")))?;
        }
    }
    Ok(Listen::Tcp { host, port })
}

fn strip_brackets(h: &str) -> &str {
    h.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(h)
}

fn parse_port(s: &str) -> Option<u16> {
    s.trim().parse::<u16>().ok()
}

/// `host:port`, `[v6]:port`, or a bare host. A bare host keeps port 8080 (code-server would
/// listen on 80, which a normal user cannot bind anyway).
pub fn parse_bind_addr(addr: &str) -> Result<(String, u16), CliError> {
    let bad = |why: &str| CliError::new(format!("--bind-addr {addr:?} is not a valid address: {why}"));
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| bad("missing ']'"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("not an IPv6 address inside the brackets"));
        }
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None => return Err(bad("expected ':<port>' after ']'")),
            },
        }
    } else {
        match addr.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => {
                return Err(bad("put IPv6 addresses in brackets, e.g. [::1]:8080"));
            }
            Some((h, p)) => (h, Some(p)),
            None => (addr, None),
        }
    };
    if host.is_empty() {
        return Err(bad("the host is missing"));
    }
    if host.contains(['/', ' ', '@', '?', '#']) {
        return Err(bad("the host contains characters a host name cannot have"));
    }
    let port = match port {
        None => 8080,
        Some(p) => parse_port(p).ok_or_else(|| bad("the port must be a number from 0 to 65535"))?,
    };
    Ok((host.to_string(), port))
}

/// Long enough for a dev server that compiles on the first request or holds a long poll; short
/// enough that a hung one ends in a 504 rather than a browser spinning forever.
pub const DEFAULT_PROXY_TIMEOUT: Duration = Duration::from_secs(300);

/// `30d`, `12h`, `90m`, `45s` or plain seconds; zero is not a duration.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = digits.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// Spec §2.8: drop a leading `*.`, add `{{port}}.` where no `{{port}}` is given, dedupe.
pub fn normalize_proxy_domains(domains: &[String]) -> Result<Vec<String>, CliError> {
    let mut out: Vec<String> = Vec::new();
    for d in domains {
        let d = d.trim().to_ascii_lowercase();
        let d = d.strip_prefix("*.").unwrap_or(&d);
        if d.is_empty() {
            continue;
        }
        // code-server takes any text; one that cannot be part of a Host header never matches
        // and only hides a typo, so it is refused by name (this also keeps the result
        // normalised: nothing is left that a second trim or `*.` strip would change).
        let bare = d.replace("{{port}}", "").replace("{{host}}", "");
        if !bare.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b)) {
            return Err(CliError::new(format!("--proxy-domain: {d:?} is not a host name")));
        }
        let d = if d.contains("{{port}}") { d.to_string() } else { format!("{{{{port}}}}.{d}") };
        if !out.contains(&d) {
            out.push(d);
        }
    }
    Ok(out)
}

/// `--metrics-addr` and the metrics token, checked together: a token is long enough to resist
/// guessing, and a listener off loopback (which has no other protection) has one.
fn metrics_options(
    addr: Option<&str>,
    token: Option<Secret>,
) -> Result<(Option<std::net::SocketAddr>, Option<Secret>), CliError> {
    if let Some(t) = &token
        && (t.expose().len() < 16 || t.expose().contains(char::is_whitespace))
    {
        return Err(CliError::new("the metrics token must be at least 16 characters, without spaces"));
    }
    let Some(addr) = addr.map(str::trim) else { return Ok((None, token)) };
    let addr: std::net::SocketAddr = addr.parse().map_err(|_| {
        CliError::new(format!("--metrics-addr must be an IP address and port such as 127.0.0.1:9100, got {addr:?}"))
    })?;
    crate::scrape::check_dedicated(addr, token.as_ref()).map_err(CliError::new)?;
    Ok((Some(addr), token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_addr_forms() {
        assert_eq!(parse_bind_addr("0.0.0.0:80").unwrap(), ("0.0.0.0".into(), 80));
        assert_eq!(parse_bind_addr("[::1]:8081").unwrap(), ("::1".into(), 8081));
        assert_eq!(parse_bind_addr("[::]").unwrap(), ("::".into(), 8080));
        assert_eq!(parse_bind_addr("localhost").unwrap(), ("localhost".into(), 8080));
        for bad in ["::1:80", "host:port", ":8080", "host:70000", "[::1", "[nope]:1", "a/b:1"] {
            assert!(parse_bind_addr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d"), Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("90m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("3600"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0"), None);
        assert_eq!(parse_duration("1w"), None);
        assert_eq!(parse_duration("d"), None);
    }

    #[test]
    fn proxy_domains_are_normalised() {
        let d = |v: &[&str]| normalize_proxy_domains(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            d(&["*.coder.com", "coder.com", "Coder.org", "code-{{port}}.x.tld", " {{port}}-{{host}}"]).unwrap(),
            vec!["{{port}}.coder.com", "{{port}}.coder.org", "code-{{port}}.x.tld", "{{port}}-{{host}}"]
        );
        for bad in ["*. coder.com", "*.\u{b}x.tld", "coder.com/x", "a b.tld", "{{port}.x"] {
            let e = d(&[bad]).unwrap_err().to_string();
            assert!(e.contains("--proxy-domain") && e.contains("not a host name"), "{bad:?}: {e}");
        }
    }
}
