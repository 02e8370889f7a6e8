//! The table of every option code-server accepts, in code-server's `--help` order.
//!
//! One table drives the command line (a clap `Command` built from it, see
//! [`super::parse::command`], which also makes the shell completions), the config-file reader
//! and `--help` (code-server's layout, which clap's own help does not have).

/// How an option takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A switch: `--flag` (ours also accepts `--flag=true` / `--flag=false`).
    Bool,
    /// One string; the last occurrence wins.
    Str,
    /// A repeatable string; occurrences accumulate (commas are literal).
    List,
    /// A non-negative integer.
    Num,
    /// One of a fixed set of values.
    Enum(&'static [&'static str]),
    /// `--cert`: no value means "generate one", `false` means off, anything else is a path.
    OptionalPath,
}

/// One option of the command line and config file.
#[derive(Debug)]
pub struct OptSpec {
    pub name: &'static str,
    /// Short form without the dash (`h` for `-h`, `vvv` for `-vvv`).
    pub short: Option<&'static str>,
    pub kind: Kind,
    /// Relative values are made absolute against the working directory.
    pub path: bool,
    /// `None` hides the option from `--help` (it still works).
    pub description: Option<&'static str>,
    pub deprecated: bool,
    /// Secrets that may only come from the config file or this environment variable.
    pub config_or_env_only: Option<&'static str>,
    /// Only on the command line (an action such as printing completions), never in the file.
    pub cli_only: bool,
}

pub const AUTH_VALUES: &[&str] = &["password", "none"];
pub const LOG_VALUES: &[&str] = &["trace", "debug", "info", "warn", "error"];
pub const SHELLS: &[&str] = &["bash", "zsh", "fish", "elvish", "powershell"];

const fn opt(name: &'static str, kind: Kind, description: Option<&'static str>) -> OptSpec {
    OptSpec {
        name,
        short: None,
        kind,
        path: false,
        description,
        deprecated: false,
        config_or_env_only: None,
        cli_only: false,
    }
}

const fn short(mut o: OptSpec, s: &'static str) -> OptSpec {
    o.short = Some(s);
    o
}

const fn path(mut o: OptSpec) -> OptSpec {
    o.path = true;
    o
}

const fn secret(mut o: OptSpec, env: &'static str) -> OptSpec {
    o.config_or_env_only = Some(env);
    o
}

const fn cli_only(mut o: OptSpec) -> OptSpec {
    o.cli_only = true;
    o
}

const fn deprecated(mut o: OptSpec) -> OptSpec {
    o.deprecated = true;
    o
}

use Kind::*;

const DEPLOYMENT_MODES: &[&str] = &["single", "multi"];

pub static OPTIONS: &[OptSpec] = &[
    opt("auth", Enum(AUTH_VALUES), Some("The type of authentication to use.")),
    secret(
        opt(
            "password",
            Str,
            Some("The password for password authentication (can only be passed in via $PASSWORD or the config file)."),
        ),
        "PASSWORD",
    ),
    secret(
        opt(
            "hashed-password",
            Str,
            Some(
                "The password hashed with argon2 for password authentication (can only be passed in via $HASHED_PASSWORD or the config file).\nTakes precedence over 'password'.",
            ),
        ),
        "HASHED_PASSWORD",
    ),
    path(opt(
        "cert",
        OptionalPath,
        Some("Path to certificate. A self signed certificate is generated if none is provided."),
    )),
    opt("cert-host", Str, Some("Hostname to use when generating a self signed certificate.")),
    path(opt("cert-key", Str, Some("Path to certificate key when using non-generated cert."))),
    opt("disable-telemetry", Bool, Some("Disable telemetry.")),
    opt(
        "disable-update-check",
        Bool,
        Some(
            "Disable update check. Without this flag, code-server checks every 6 hours against the latest github release and\nthen notifies you once every week that a new release is available.",
        ),
    ),
    opt("session-socket", Str, None),
    opt(
        "cookie-suffix",
        Str,
        Some(
            "Adds a suffix to the cookie. This can prevent a collision of cookies for subdomains, making them explicit.\nWithout this flag, no suffix is used. This can also be set with CODE_SERVER_COOKIE_SUFFIX environment variable.",
        ),
    ),
    opt(
        "disable-file-downloads",
        Bool,
        Some(
            "Disable file downloads from Code. This can also be set with CS_DISABLE_FILE_DOWNLOADS set to 'true' or '1'.",
        ),
    ),
    opt("disable-file-uploads", Bool, Some("Disable file uploads.")),
    opt(
        "disable-workspace-trust",
        Bool,
        Some("Disable Workspace Trust feature. This switch only affects the current session."),
    ),
    opt(
        "disable-getting-started-override",
        Bool,
        Some("Disable the coder/coder override in the Help: Getting Started page."),
    ),
    opt("disable-proxy", Bool, Some("Disable domain and path proxy routes.")),
    opt("enable", List, None),
    short(opt("help", Bool, Some("Show this output.")), "h"),
    opt("json", Bool, None),
    opt(
        "link-protection-trusted-domains",
        List,
        Some("Links matching a trusted domain can be opened without link protection."),
    ),
    opt("locale", Str, Some("The locale to use (e.g. en). Affects the login page and VS Code's display language.")),
    opt("open", Bool, Some("Open in browser on startup. Does not work remotely.")),
    opt("bind-addr", Str, Some("Address to bind to in host:port. You can also use $PORT to override the port.")),
    opt("config", Str, Some("Path to yaml config file. Every flag maps directly to a key in the config file.")),
    opt("host", Str, None),
    opt("port", Num, None),
    path(opt("socket", Str, Some("Path to a socket (bind-addr will be ignored)."))),
    opt(
        "socket-fd",
        Num,
        Some(
            "Listen on an already open socket file descriptor (systemd socket activation);\nbind-addr and socket are ignored.",
        ),
    ),
    opt("socket-mode", Str, Some("File mode of the socket.")),
    opt(
        "trusted-origins",
        List,
        Some(
            "Disables authenticate origin check for trusted origin. Useful if not able to access reverse proxy configuration.",
        ),
    ),
    short(opt("version", Bool, Some("Display version information.")), "v"),
    path(opt("user-data-dir", Str, Some("Path to the user data directory."))),
    path(opt("extensions-dir", Str, Some("Path to the extensions directory."))),
    path(opt("builtin-extensions-dir", Str, None)),
    opt("list-extensions", Bool, Some("List installed VS Code extensions.")),
    opt("force", Bool, Some("Avoid prompts when installing VS Code extensions.")),
    opt("locate-extension", List, None),
    opt("category", Str, None),
    opt(
        "install-extension",
        List,
        Some(
            "Install or update a VS Code extension by id or vsix. The identifier of an extension is `${publisher}.${name}`.\nTo install a specific version provide `@${version}`. For example: 'vscode.csharp@1.2.3'.",
        ),
    ),
    opt(
        "enable-proposed-api",
        List,
        Some(
            "Enable proposed API features for extensions. Can receive one or more extension IDs to enable individually.",
        ),
    ),
    opt("uninstall-extension", List, Some("Uninstall a VS Code extension by id.")),
    opt("show-versions", Bool, Some("Show VS Code extension versions.")),
    secret(
        opt(
            "github-auth",
            Str,
            Some("GitHub authentication token (can only be passed in via $GITHUB_TOKEN or the config file)."),
        ),
        "GITHUB_TOKEN",
    ),
    opt("proxy-domain", List, Some("Domain used for proxying ports.")),
    opt("skip-auth-preflight", Bool, Some("Allows preflight requests through proxy without authentication.")),
    short(
        opt(
            "ignore-last-opened",
            Bool,
            Some("Ignore the last opened directory or workspace in favor of an empty window."),
        ),
        "e",
    ),
    short(opt("new-window", Bool, Some("Force to open a new window.")), "n"),
    short(opt("reuse-window", Bool, Some("Force to open a file or folder in an already opened window.")), "r"),
    opt("log", Enum(LOG_VALUES), None),
    short(opt("verbose", Bool, Some("Enable verbose logging.")), "vvv"),
    short(
        opt("app-name", Str, Some("The name to use in branding. Will be shown in titlebar and welcome message")),
        "an",
    ),
    short(deprecated(opt("welcome-text", Str, Some("Text to show on login page"))), "w"),
    opt("abs-proxy-base-path", Str, Some("The base path to prefix to all absproxy requests")),
    path(opt(
        "i18n",
        Str,
        Some("Path to JSON file with custom translations. Merges with default strings and supports all i18n keys."),
    )),
    opt("idle-timeout-seconds", Num, Some("Timeout in seconds to wait before shutting down when idle.")),
    opt(
        "reconnection-grace-time",
        Str,
        Some(
            "Override the reconnection grace time in seconds. Clients who disconnect for longer than this duration will need to\nreload the page. Defaults to 10800 (3 hours).",
        ),
    ),
    opt(
        "vscode-option",
        List,
        Some(
            "Pass an option straight to the VS Code server, as flag=value or a bare flag (repeatable).\nAlso read from $VSCODE_OPTIONS (space separated).",
        ),
    ),
    // Options of ours that code-server does not have (see README, "Flags beyond code-server").
    path(opt(
        "vscode-dir",
        Str,
        Some(
            "Path to a VS Code server (reh-web) build to run instead of the provisioned one.\nAlso read from $CODE_SERVER_VSCODE_DIR.",
        ),
    )),
    opt(
        "provision-vscode",
        Bool,
        Some(
            "Download and prepare the VS Code server build, then exit (into --vscode-dir when given,\nelse the data directory). For CI and images.",
        ),
    ),
    opt(
        "session-timeout",
        Str,
        Some("How long a login lasts without being used, e.g. 30d, 12h, 90m or seconds. Default 30d."),
    ),
    opt(
        "proxy-timeout",
        Str,
        Some(
            "How long the port proxy waits for a proxied server to accept and answer a request\n(30s, 5m, ...; streaming bodies have no limit). Default 5m.",
        ),
    ),
    opt(
        "trusted-proxies",
        List,
        Some(
            "Addresses of reverse proxies whose X-Forwarded-For header is believed when telling clients apart\n(login rate limit, logs). Default: none.",
        ),
    ),
    opt(
        "update-url",
        Str,
        Some(
            "URL of the latest-release JSON (GitHub's releases/latest format) that /update/check reads.\nDefault: coder/code-server's releases. Also read from $CODE_SERVER_UPDATE_URL.",
        ),
    ),
    cli_only(opt(
        "completions",
        Enum(SHELLS),
        Some("Print a completion script for this shell (bash, zsh, fish, elvish, powershell) and exit."),
    )),
    opt(
        "reuse-port",
        Bool,
        Some(
            "Let several fronts of one multi-user deployment listen on the same --bind-addr on this host\n(SO_REUSEPORT); the kernel spreads connections across them.",
        ),
    ),
    opt(
        "deployment-mode",
        Enum(DEPLOYMENT_MODES),
        Some(
            "single (default): code-server's one user. multi: accounts with usernames, an admin page and API\n(see the multi-user: section of config.yaml). Also read from $CODE_SERVER_DEPLOYMENT_MODE.",
        ),
    ),
    cli_only(opt(
        "add-user",
        Str,
        Some("Multi-user mode: create this account (password from a prompt or stdin), then exit."),
    )),
    cli_only(opt("admin", Bool, Some("With --add-user: the account is an admin."))),
    cli_only(opt("email", Str, Some("With --add-user: the account's email address."))),
    cli_only(opt("list-users", Bool, Some("Multi-user mode: list the accounts, then exit."))),
    cli_only(opt(
        "reset-password",
        Str,
        Some("Multi-user mode: set this account's password (from a prompt or stdin), then exit."),
    )),
    cli_only(opt(
        "disable-user",
        Str,
        Some("Multi-user mode: disable this account and revoke its sessions, then exit."),
    )),
    cli_only(opt("enable-user", Str, Some("Multi-user mode: enable this account, then exit."))),
    cli_only(opt(
        "remove-user",
        Str,
        Some("Multi-user mode: delete this account with its sessions and tokens, then exit."),
    )),
    cli_only(opt("revoke-sessions", Str, Some("Multi-user mode: sign this account out everywhere, then exit."))),
    cli_only(opt(
        "for-user",
        Str,
        Some("Multi-user mode: run the extension commands (--install-extension, ...) in this account's workspace."),
    )),
    opt(
        "metrics-addr",
        Str,
        Some(
            "Also serve /metrics (and nothing else) on this IP:port. A loopback address needs no credentials;\nany other needs the metrics token. Default: off (/metrics is on the main port, for admins).",
        ),
    ),
    secret(
        opt(
            "metrics-token",
            Str,
            Some(
                "A token that reads /metrics as `Authorization: Bearer <token>` (can only be passed in via\n$CODE_SERVER_METRICS_TOKEN or the config file).",
            ),
        ),
        "CODE_SERVER_METRICS_TOKEN",
    ),
    opt(
        "security-headers",
        Enum(crate::headers::Preset::NAMES),
        Some(
            "Security headers on our responses: balanced (default: CSP, Permissions-Policy, COOP/CORP on our pages,\nHSTS under TLS), strict (also on VS Code's responses), off (code-server's headers only).",
        ),
    ),
    opt(
        "rate-limit",
        Enum(crate::ratelimit::Preset::NAMES),
        Some(
            "Rate limits per signed-in user and per address, beyond the login's: standard (default: 600 API and 6000\nother requests a minute per user), strict (a fifth), off. Never on WebSockets or the port proxy.",
        ),
    ),
    opt(
        "verify-extensions",
        Bool,
        Some(
            "Install only signed .vsix packages whose publisher's key is trusted (see --trust-publisher): marketplace ids,\nunsigned and untrusted packages are refused. Also read from $CODE_SERVER_VERIFY_EXTENSIONS.",
        ),
    ),
    path(cli_only(opt(
        "trust-publisher",
        Str,
        Some(
            "Trust the public key(s) in this file (PEM or DER; RSA 2048-4096, ECDSA P-256 or Ed25519) for signed\nextensions of the publisher named by --publisher, else by the file name (acme.pem is acme's), then exit.",
        ),
    ))),
    cli_only(opt("publisher", Str, Some("With --trust-publisher: the publisher whose key it is."))),
    cli_only(opt(
        "list-trusted-publishers",
        Bool,
        Some("List the trusted publishers' keys with their algorithm and fingerprint, then exit."),
    )),
    cli_only(opt("untrust-publisher", Str, Some("Stop trusting this publisher's keys, then exit."))),
    opt(
        "security-contact",
        Str,
        Some("Contact of /security.txt (a mailto: or https: URI). Default: code-server's, mailto:security@coder.com."),
    ),
];

/// Looks an option up by its long name.
pub fn by_name(name: &str) -> Option<&'static OptSpec> {
    OPTIONS.iter().find(|o| o.name == name)
}

/// Looks an option up by its short form (without the dash).
pub fn by_short(s: &str) -> Option<&'static OptSpec> {
    OPTIONS.iter().find(|o| o.short == Some(s))
}
