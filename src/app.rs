//! The application: every module's state, assembled; the one Router (testable without a
//! socket); and the run from start to a clean exit. Each module owns its state and its routes
//! and takes what it needs here; handlers get their part of [`AppState`] through `FromRef`.
//! Nothing imports this module but the binary.
//!
//! [`run`] is the shutdown choreography (see [`crate::lifecycle`]):
//! 1. a stop arrives: the first SIGINT/SIGTERM, or the idle timeout;
//! 2. the listener closes and in-flight HTTP requests get [`crate::server::SHUTDOWN_GRACE`] to
//!    finish; at the same moment shutdown begins, so WebSocket tasks close and background tasks
//!    (the VS Code supervisors among them) stop;
//! 3. upgraded connections and background tasks are awaited, each with a bound;
//! 4. what requests left behind is persisted: settings, then sessions.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use tokio_rustls::rustls::ServerConfig;

use crate::assets::Site;
use crate::auth::device::DeviceKeys;
use crate::auth::limiter::LoginLimiter;
use crate::auth::password::{PasswordChecker, PasswordMethod, PasswordSource};
use crate::auth::session::{FileStore, SessionStore, Sessions};
use crate::auth::{Auth, Mode};
use crate::cli::{AuthMode, CliError, Config};
use crate::clock::{Clock, SystemClock};
use crate::heart::Heart;
use crate::heart::routes::HeartState;
use crate::i18n::Strings;
use crate::identity::UserId;
use crate::lifecycle::Lifecycle;
use crate::multiuser::accounts::Accounts;
use crate::multiuser::registry::Registry;
use crate::multiuser::workspaces::{Fleet, PortOwnership, UserWorkspaces};
use crate::pages::{Pages, PasswordHint};
use crate::proxy::{Proxy, ProxyOptions, ProxyState};
use crate::server::{self, Listener};
use crate::session_socket::OpenRequest;
use crate::update::UpdateChecker;
use crate::vscode::build::Build;
use crate::vscode::{Dirs, Options};
use crate::workbench::Workbench;
use crate::workspaces::placement::{Here, Placement};
use crate::workspaces::spawner::LocalSpawner;
use crate::workspaces::{Layout, Workspace, Workspaces};

/// code-server's body-parser limit for its own routes ("100kb").
pub const BODY_LIMIT: usize = 100 * 1024;
/// How long a request body of ours may pause between bytes (as long as a request head may take).
pub const BODY_IDLE_TIMEOUT: Duration = crate::server::HEADER_READ_TIMEOUT;
/// How long one of our own routes may take in all, body included.
pub const OWN_DEADLINE: Duration = Duration::from_secs(60);

/// Every module's state; cheap to clone. Handlers take their part (see the `FromRef` impls).
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub auth: Arc<Auth>,
    pub heart: Arc<Heart>,
    pub pages: Arc<Pages>,
    pub update: Arc<UpdateChecker>,
    /// Shutdown token and trackers: background tasks and upgraded connections go through it.
    pub lifecycle: Lifecycle,
    pub workspaces: Arc<Workspaces>,
    pub workbench: Arc<Workbench>,
    /// The port proxy: its pool of upstream connections and compiled proxy domains.
    pub proxy: Arc<Proxy>,
    pub site: Arc<Site>,
    /// Multi-user mode's accounts; `None` in single-user mode.
    pub accounts: Option<Arc<Accounts>>,
    /// Multi-user mode: the users' workspaces with their limits (the API and admin page).
    pub fleet: Option<Arc<Fleet>>,
    /// Multi-user mode: which front of the deployment runs which workspace.
    pub registry: Option<Arc<Registry>>,
    /// `--rate-limit`.
    pub rate_limiter: Arc<crate::ratelimit::RateLimiter>,
}

macro_rules! substate {
    ($($ty:ty => $field:ident),* $(,)?) => {
        $(impl FromRef<AppState> for $ty {
            fn from_ref(state: &AppState) -> $ty {
                state.$field.clone()
            }
        })*
    };
}

substate! {
    Arc<Auth> => auth,
    Arc<Pages> => pages,
    Arc<UpdateChecker> => update,
    Arc<Workbench> => workbench,
    Arc<Site> => site,
    Lifecycle => lifecycle,
}

impl FromRef<AppState> for HeartState {
    fn from_ref(state: &AppState) -> HeartState {
        HeartState { heart: state.heart.clone(), lifecycle: state.lifecycle.clone() }
    }
}

impl FromRef<AppState> for ProxyState {
    fn from_ref(state: &AppState) -> ProxyState {
        ProxyState {
            proxy: state.proxy.clone(),
            auth: state.auth.clone(),
            activity: HeartState::from_ref(state),
            pages: state.pages.clone(),
        }
    }
}

/// What every VS Code server is started with, from the configuration.
pub fn vscode_options(config: &Config) -> Options {
    Options {
        auth_password: config.auth == AuthMode::Password,
        app_name: config.app_name.clone(),
        log_level: config.log_level,
        builtin_extensions_dir: config.builtin_extensions_dir.clone(),
        disable_telemetry: config.disable_telemetry,
        disable_workspace_trust: config.disable_workspace_trust,
        disable_update_check: config.disable_update_check,
        disable_file_downloads: config.disable_file_downloads,
        disable_file_uploads: config.disable_file_uploads,
        disable_getting_started_override: config.disable_getting_started_override,
        locale: config.locale.clone(),
        enable_proposed_api: config.enable_proposed_api.clone(),
        link_protection_trusted_domains: config.link_protection_trusted_domains.clone(),
        reconnection_grace_time: config.reconnection_grace_time.clone(),
        vscode_options: config.vscode_options.clone(),
        github_auth: config.github_auth.clone(),
    }
}

/// The single user's directories.
pub fn owner_dirs(config: &Config) -> Dirs {
    Dirs { user_data: config.user_data_dir.clone(), extensions: config.extensions_dir.clone() }
}

/// The single user's workspace layout.
fn owner_layout(config: &Config) -> Layout {
    Layout {
        dirs: owner_dirs(config),
        session_socket: session_socket(config),
        runtime_dir: config.paths.runtime.clone(),
        front_dir: config.user_data_dir.clone(),
        open: config.paths_to_open.clone(),
        run_as: None,
    }
}

/// The session registry's socket: `--session-socket`, else in the user-data-dir.
pub fn session_socket(config: &Config) -> PathBuf {
    config.session_socket.clone().unwrap_or_else(|| crate::workspaces::session_socket_in(&config.user_data_dir))
}

/// What `code-server PATH...` asks a running instance, from the configuration.
pub fn open_request(config: &Config) -> OpenRequest {
    OpenRequest {
        registry: session_socket(config),
        paths: config.paths_to_open.clone(),
        reuse_window: config.reuse_window,
        new_window: config.new_window,
        only_paths: config.cli_option_names.is_empty(),
    }
}

impl AppState {
    /// Builds the state with the given session store. Fails on configuration that can only be
    /// checked by loading it (custom strings, the password hash).
    pub fn new(config: Config, store: Arc<dyn SessionStore>, build: Build) -> Result<AppState, CliError> {
        let heart = Heart::new(Arc::new(SystemClock), Some(config.paths.data.join("heartbeat")));
        AppState::with_heart(config, store, build, heart)
    }

    /// [`AppState::new`] with the given heart (tests run it on the tokio clock).
    pub fn with_heart(
        config: Config,
        store: Arc<dyn SessionStore>,
        build: Build,
        heart: Heart,
    ) -> Result<AppState, CliError> {
        AppState::assemble(config, store, build, heart, None)
    }

    /// Multi-user mode: people sign in to `accounts` (opened by the caller, which reports an
    /// unreachable database before anything listens).
    pub fn multi(config: Config, build: Build, accounts: Arc<Accounts>) -> Result<AppState, CliError> {
        let heart = Heart::new(Arc::new(SystemClock), Some(config.paths.data.join("heartbeat")));
        // The single-user session store stays empty: accounts keep their own sessions.
        let store = Arc::new(crate::auth::session::MemoryStore::default());
        AppState::assemble(config, store, build, heart, Some(accounts))
    }

    fn assemble(
        config: Config,
        store: Arc<dyn SessionStore>,
        build: Build,
        heart: Heart,
        accounts: Option<Arc<Accounts>>,
    ) -> Result<AppState, CliError> {
        let mut strings = Strings::new(&config.app_name, config.locale.as_deref(), build.login_locales().as_deref());
        if let Some(path) = &config.i18n {
            strings.load_custom(path).map_err(|e| CliError::new(e.to_string()))?;
            tracing::info!("Loaded custom strings");
        }
        let auth = auth(&config, store, accounts.clone())?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let lifecycle = Lifecycle::new();
        let owner = Workspace::new(
            UserId::owner(),
            owner_layout(&config),
            &vscode_options(&config),
            build.clone(),
            Arc::new(LocalSpawner),
            lifecycle.clone(),
        );
        // What we run is the build's code-server release (ours, unless --vscode-dir names another).
        let running = build.code_server_version.clone().unwrap_or_else(|| crate::version::VERSION.to_string());
        let update_url = config.update_url.as_deref().unwrap_or(crate::update::DEFAULT_URL);
        let update = UpdateChecker::new(update_url, running, owner.settings.clone(), clock);
        let workspaces = Arc::new(match (&accounts, config.deployment.multi()) {
            // Each user their own workspace, made on their first request.
            (Some(accounts), Some(multi)) => {
                let users = UserWorkspaces::new(
                    multi,
                    vscode_options(&config),
                    build.clone(),
                    lifecycle.clone(),
                    accounts.clone(),
                );
                users.check().map_err(CliError::new)?;
                Workspaces::with_factory(Arc::new(users).factory())
            }
            _ => Workspaces::single(owner),
        });
        // Multi-user mode: the fronts of the deployment share who runs which workspace.
        let registry = match (&accounts, config.deployment.multi()) {
            (Some(accounts), Some(multi)) => {
                Some(Arc::new(Registry::new(accounts.store().clone(), multi.isolation, lifecycle.clone())))
            }
            _ => None,
        };
        let placement: Arc<dyn Placement> = match &registry {
            Some(r) => r.clone(),
            None => Arc::new(Here),
        };
        let workbench = Workbench::new(
            workspaces.clone(),
            placement,
            lifecycle.clone(),
            &build,
            config.ignore_last_opened,
            config.trusted_origins.clone(),
        );
        let proxy = Proxy::new(ProxyOptions {
            domains: config.proxy_domains.clone(),
            abs_base_path: config.abs_proxy_base_path.clone(),
            timeout: config.proxy_timeout,
            disabled: config.disable_proxy,
            trusted_origins: config.trusted_origins.clone(),
            skip_auth_preflight: config.skip_auth_preflight,
            gate: match (&accounts, config.deployment.multi()) {
                (Some(accounts), Some(multi)) => Some(Arc::new(PortOwnership {
                    workspaces: workspaces.clone(),
                    isolation: multi.isolation,
                    audit: accounts.audit().clone(),
                })),
                _ => None,
            },
        });
        let fleet = config.deployment.multi().filter(|_| accounts.is_some()).map(|multi| {
            Arc::new(Fleet {
                workspaces: workspaces.clone(),
                registry: registry.clone(),
                isolation: multi.isolation,
                memory_bytes: multi.memory_limit_mb * 1_000_000,
                storage_bytes: multi.storage_quota_mb * 1_000_000,
            })
        });
        let auth = Arc::new(auth);
        let rate_limiter = Arc::new(crate::ratelimit::RateLimiter::new(config.rate_limit, auth.clone()));
        let site = Site { app_name: config.app_name.clone(), security_contact: config.security_contact.clone() };
        Ok(AppState {
            pages: Arc::new(Pages::new(strings, config.welcome_text.clone(), password_hint(&config))),
            heart: Arc::new(heart),
            proxy: Arc::new(proxy),
            auth,
            update: Arc::new(update),
            workbench: Arc::new(workbench),
            workspaces,
            site: Arc::new(site),
            config: Arc::new(config),
            lifecycle,
            fleet,
            registry,
            accounts,
            rate_limiter,
        })
    }

    /// What [`AppState::new`] would refuse in the configuration, checked without a VS Code
    /// build: the password hash and the custom strings file. The binary checks this before it
    /// listens, so a bad configuration never opens the port.
    pub fn check(config: &Config) -> Result<(), CliError> {
        if let (AuthMode::Password, Some(p)) = (&config.auth, &config.password) {
            PasswordMethod::from_config(p).map_err(|e| CliError::new(e.to_string()))?;
        }
        if let Some(path) = &config.i18n {
            Strings::new(&config.app_name, None, None).load_custom(path).map_err(|e| CliError::new(e.to_string()))?;
        }
        Ok(())
    }

    /// The default persistent session store's file.
    pub fn session_file(config: &Config) -> PathBuf {
        config.user_data_dir.join("code-server-sessions.json")
    }

    /// State with the default store: sessions persisted in the user-data-dir.
    pub fn with_file_store(config: Config, build: Build) -> Result<AppState, CliError> {
        let store = FileStore::open(&Self::session_file(&config)).map_err(|e| CliError::new(e.to_string()))?;
        AppState::new(config, Arc::new(store), build)
    }

    /// The single user's workspace.
    pub fn owner(&self) -> Arc<Workspace> {
        self.workspaces.made(&UserId::owner()).expect("single-user mode has the owner's workspace")
    }
}

/// Where the login page says the password is.
fn password_hint(config: &Config) -> PasswordHint {
    if config.deployment.multi().is_some() {
        return PasswordHint::Accounts;
    }
    match config.password.as_ref().map(|p| p.source) {
        Some(PasswordSource::EnvPassword) => PasswordHint::EnvPassword,
        Some(PasswordSource::EnvHashedPassword) => PasswordHint::EnvHashedPassword,
        _ => PasswordHint::ConfigFile,
    }
}

/// Authentication as configured: the password's checker, sessions on `store`, the limiter,
/// the cookies' names and scope.
fn auth(config: &Config, store: Arc<dyn SessionStore>, accounts: Option<Arc<Accounts>>) -> Result<Auth, CliError> {
    let multi = accounts.is_some();
    let mode = match (accounts, &config.auth, &config.password) {
        (Some(accounts), _, _) => Mode::Accounts(accounts),
        (None, AuthMode::Password, Some(p)) => Mode::Password(PasswordChecker::new(
            PasswordMethod::from_config(p).map_err(|e| CliError::new(e.to_string()))?,
        )),
        _ => Mode::None,
    };
    let method = match &mode {
        Mode::Password(c) => Some(Arc::new(c.method().clone())),
        Mode::None | Mode::Accounts(_) => None,
    };
    let fingerprint = Arc::new(move |key: &str| match &method {
        Some(m) => m.fingerprint(key.as_bytes()),
        None => String::new(),
    });
    let device_key = config.user_data_dir.join("code-server-device-key");
    let devices = DeviceKeys::open(&device_key).map_err(|e| {
        CliError::new(format!("cannot keep the device key in {}: {}", device_key.display(), crate::errno::describe(&e)))
    })?;
    Ok(Auth {
        mode,
        sessions: Sessions::new(store, config.session_timeout, fingerprint),
        limiter: if multi { LoginLimiter::per_account() } else { LoginLimiter::default() },
        cookie_name: Auth::cookie_name_for(config.cookie_suffix.as_deref()),
        device_cookie_name: Auth::device_cookie_name_for(config.cookie_suffix.as_deref()),
        devices,
        cookie_domains: Auth::cookie_domains_of(&config.proxy_domains),
        secure_cookies: config.tls.is_some(),
        trusted_proxies: config.trusted_proxies.clone(),
        owner_name: std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| "owner".into()),
    })
}

/// The whole application. Our own routes get the body limit and security headers; forwarded and
/// proxied traffic passes through untouched. Errors render as JSON or HTML everywhere, and every
/// request but `/healthz` counts as activity. The port proxy (proxy-domain hosts, `/proxy`,
/// `/absproxy`) is taken before routing by [`crate::proxy::Front`], which applies those two
/// rules itself, and is what the server serves: the router's own routing would cost every
/// proxied request a route lookup and a layer of boxed futures.
pub fn router(state: AppState) -> crate::proxy::Front {
    // Our dynamic pages and JSON, compressed by Accept-Encoding (brotli or gzip). Not the static
    // files (they leave the disk precompressed), never what is forwarded or proxied.
    let mut dynamic = Router::new().merge(crate::auth::routes()).merge(crate::update::routes());
    if let Some(accounts) = &state.accounts {
        // Multi-user mode's own routes; in single-user mode /api is VS Code's, as in code-server.
        let fleet = state.fleet.clone().expect("multi-user mode has its workspaces");
        dynamic = dynamic.merge(crate::multiuser::routes(
            accounts.clone(),
            state.auth.clone(),
            &state.config.app_name,
            fleet,
        ));
    }
    let dynamic = dynamic.layer(tower_http::compression::CompressionLayer::new().br(true).gzip(true));
    let own = Router::new()
        .merge(crate::assets::routes())
        .merge(crate::heart::routes::routes())
        .merge(crate::scrape::routes(state.auth.clone(), state.config.metrics_token.clone()))
        .merge(dynamic)
        .layer(middleware::from_fn_with_state(headers_of(&state), security_headers))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        // Our routes answer quickly or not at all: a body that stops arriving is dropped, and
        // a request that takes too long in all is a 408. (Not on what goes to VS Code or a
        // proxied app: their long polls, streams and WebSockets have no deadline.)
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(BODY_IDLE_TIMEOUT))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            OWN_DEADLINE,
        ));
    let routed = Router::new()
        .merge(own)
        .merge(
            crate::workbench::routes(&state.workbench)
                .layer(middleware::from_fn_with_state(headers_of(&state), forwarded_headers)),
        )
        .layer(middleware::from_fn_with_state(state.rate_limiter.clone(), crate::ratelimit::limit))
        .layer(middleware::from_fn_with_state(state.pages.clone(), crate::pages::render_errors))
        .layer(middleware::from_fn_with_state(HeartState::from_ref(&state), crate::heart::routes::record_activity))
        .with_state(state.clone());
    crate::proxy::Front::new(ProxyState::from_ref(&state), routed)
}

/// The security headers' preset, and whether we serve TLS.
type HeaderPolicy = (crate::headers::Preset, bool);

fn headers_of(state: &AppState) -> HeaderPolicy {
    (state.config.security_headers, state.config.tls.is_some())
}

/// Headers every response of ours carries, by `--security-headers` (never on proxied ones).
async fn security_headers(State((preset, tls)): State<HeaderPolicy>, req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    crate::headers::secure_own(res.headers_mut(), preset, tls);
    res
}

/// What `--security-headers` adds to VS Code's responses (and our workbench routes').
async fn forwarded_headers(State((preset, tls)): State<HeaderPolicy>, req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    crate::headers::secure_forwarded(res.headers_mut(), preset, tls);
    res
}

/// Why the server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGINT or SIGTERM (or the caller's own stop future).
    Signal,
    /// `--idle-timeout-seconds` passed with nothing happening.
    Idle(Duration),
}

/// Serves `state` on `listener` until `signal` resolves or the idle timeout passes, then shuts
/// down in order (see the module docs). Returns why it stopped; both reasons are a clean exit.
pub async fn run(
    state: AppState,
    listener: Listener,
    tls: Option<Arc<ServerConfig>>,
    signal: impl Future<Output = ()> + Send,
) -> Stop {
    let lifecycle = state.lifecycle.clone();
    if let Some(registry) = &state.registry {
        // Before the first request can claim a workspace for this front.
        if let Err(e) = registry.register().await {
            tracing::warn!("Could not enter the workspace registry ({e}); trying again every few seconds");
        }
        let (registry, workspaces) = (registry.clone(), state.workspaces.clone());
        lifecycle.spawn("workspace registry", move |t| registry.maintain(workspaces, t));
    }
    lifecycle.spawn("heartbeat", |t| state.heart.clone().run(t));
    lifecycle.spawn("session maintenance", |t| state.auth.sessions.clone().maintain(t));
    if let Some(accounts) = &state.accounts {
        lifecycle.spawn("account session maintenance", |t| accounts.sessions().clone().maintain(t));
    }
    if let Some(multi) = state.config.deployment.multi() {
        let (workspaces, idle) = (state.workspaces.clone(), multi.idle_timeout);
        lifecycle.spawn("idle workspaces", move |t| workspaces.stop_idle(idle, t));
        if let (Some(accounts), Some(fleet)) = (&state.accounts, &state.fleet) {
            let limits = crate::multiuser::limits::Limits {
                memory_bytes: fleet.memory_bytes,
                storage_bytes: fleet.storage_bytes,
            };
            let (workspaces, audit) = (state.workspaces.clone(), accounts.audit().clone());
            lifecycle
                .spawn("workspace limits", move |t| crate::multiuser::limits::enforce(workspaces, limits, audit, t));
            let (workspaces, accounts) = (state.workspaces.clone(), accounts.clone());
            lifecycle.spawn("closed accounts", move |t| {
                crate::multiuser::workspaces::stop_for_closed_accounts(workspaces, accounts, t)
            });
        }
    }
    for workspace in state.workspaces.all() {
        lifecycle.spawn("settings writer", |t| workspace.settings.clone().run(t));
        // The editor-session registry lives as long as the server.
        let registry = workspace.layout.session_socket.clone();
        lifecycle.spawn("session registry", |t| crate::session_socket::serve(registry, None, t.cancelled_owned()));
    }

    let mut stopped = None;
    let stop = async {
        let why = tokio::select! {
            _ = signal => Stop::Signal,
            t = idle(&state) => Stop::Idle(t),
        };
        match why {
            Stop::Signal => tracing::info!("Shutting down"),
            Stop::Idle(t) => tracing::warn!("Idle timeout of {} seconds exceeded", t.as_secs()),
        }
        lifecycle.begin_shutdown();
        stopped = Some(why);
    };
    let lane = state.config.express_lane.then(|| crate::proxy::lane::Lane::new(ProxyState::from_ref(&state)));
    server::serve(listener, router(state.clone()), lane, tls, stop).await;
    lifecycle.finish().await;

    // Requests have finished: persist what they left behind.
    for workspace in state.workspaces.all() {
        workspace.end_session().await;
        if let Err(e) = workspace.settings.flush().await {
            tracing::warn!("{e}");
        }
    }
    if let Err(e) = state.auth.sessions.flush().await {
        tracing::warn!("{e}");
    }
    if let Some(registry) = &state.registry {
        // This front's workspaces have stopped: their users may start them on another front.
        registry.retire().await;
    }
    if let Some(accounts) = &state.accounts {
        // Last: what requests and the shutdown itself recorded is written before the pool closes.
        accounts.audit().close().await;
        accounts.store().close().await;
    }
    stopped.unwrap_or(Stop::Signal)
}

/// Resolves with the timeout once the server has been idle that long; never without one.
async fn idle(state: &AppState) -> Duration {
    match state.config.idle_timeout {
        Some(t) => {
            state.heart.idle(t).await;
            t
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use std::time::Duration;

    use super::*;
    use crate::auth::session::MemoryStore;
    use crate::cli::{self, Parsed};
    use crate::clock::TokioClock;
    use crate::environment::Environment;
    use crate::paths::Paths;
    use crate::settings::{Settings, UpdateCache};

    fn config(home: &Path, args: &[&str]) -> Config {
        let mut argv = vec!["--auth", "none", "--bind-addr", "127.0.0.1:0"];
        argv.extend_from_slice(args);
        let argv: Vec<String> = argv.into_iter().map(String::from).collect();
        let cli = cli::parse::parse_args(&argv, home).unwrap();
        let env: Environment = [("HOME", home.to_str().unwrap())].into_iter().collect();
        let paths = Paths::from_env(&env);
        cli::resolve(&cli, &Parsed::default(), &env, home, paths, home.join("config.yaml")).unwrap()
    }

    /// State on the tokio clock, so paused-time tests drive the idle timeout.
    async fn state_and_listener(home: &Path, args: &[&str]) -> (AppState, Listener) {
        let config = config(home, args);
        std::fs::create_dir_all(&config.user_data_dir).unwrap();
        let listener = Listener::bind(&config.listen).await.unwrap();
        // VS Code starts lazily, on the first request that needs it; these tests send none.
        let build = crate::vscode::build::Build {
            root: home.join("vscode"),
            node: home.join("node"),
            version: "1.0.0".into(),
            commit: "0000000".into(),
            quality: "stable".into(),
            code_server_version: None,
        };
        let state = AppState::with_heart(
            config,
            Arc::new(MemoryStore::default()),
            build,
            Heart::new(Arc::new(TokioClock::new()), None),
        )
        .unwrap();
        (state, listener)
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_stops_the_server_cleanly() {
        let home = tempfile::tempdir().unwrap();
        let (state, listener) = state_and_listener(home.path(), &["--idle-timeout-seconds", "61"]).await;
        // Something a request left behind, still inside the coalescing window at the end.
        state.owner().settings.write(Settings {
            update: Some(UpdateCache { checked: 1, version: "1.0.0".into() }),
            ..Default::default()
        });

        let start = tokio::time::Instant::now();
        let stop = run(state.clone(), listener, None, std::future::pending()).await;
        assert_eq!(stop, Stop::Idle(Duration::from_secs(61)));
        assert_eq!(start.elapsed().as_secs(), 61, "nobody came: idle N seconds after start");
        assert_eq!(state.lifecycle.background_tasks(), 0, "no task outlives the run");
        assert!(state.lifecycle.is_shutting_down());
        assert_eq!(state.owner().settings.get().update.unwrap().version, "1.0.0");
        assert!(state.owner().settings.path().exists(), "settings were flushed");
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_connection_holds_off_the_idle_timeout() {
        let home = tempfile::tempdir().unwrap();
        let (state, listener) = state_and_listener(home.path(), &["--idle-timeout-seconds", "61"]).await;
        // A browser tab: what the server parks on an upgraded connection (see the next test).
        let tab = state.heart.connection_guard();
        let server = tokio::spawn(run(state.clone(), listener, None, std::future::pending()));

        tokio::time::sleep(Duration::from_secs(6 * 3600)).await;
        assert!(!server.is_finished(), "an open tab keeps the server up");
        assert_eq!(state.heart.health().status, "alive", "and the heart beating");

        let closed = tokio::time::Instant::now();
        drop(tab);
        assert_eq!(server.await.unwrap(), Stop::Idle(Duration::from_secs(61)));
        assert_eq!(closed.elapsed().as_secs(), 61, "the countdown starts when the tab closes");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_closes_upgraded_connections() {
        let home = tempfile::tempdir().unwrap();
        let (state, listener) = state_and_listener(home.path(), &[]).await;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(run(state.clone(), listener, None, async {
            let _ = stop_rx.await;
        }));

        // One connection that says goodbye when asked, one that never ends by itself.
        let (bye_tx, bye_rx) = tokio::sync::oneshot::channel();
        let polite = state.lifecycle.shutting_down();
        let guard = state.heart.connection_guard();
        tokio::spawn(state.lifecycle.connection(async move {
            let _guard = guard;
            polite.await;
            let _ = bye_tx.send("close frame sent");
        }));
        let guard = state.heart.connection_guard();
        tokio::spawn(state.lifecycle.connection(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        }));
        tokio::task::yield_now().await;
        assert_eq!(state.lifecycle.open_connections(), 2);
        assert_eq!(state.heart.open_connections(), 2);

        stop_tx.send(()).unwrap();
        assert_eq!(server.await.unwrap(), Stop::Signal);
        assert_eq!(bye_rx.await.unwrap(), "close frame sent");
        assert_eq!(state.lifecycle.open_connections(), 0, "the stubborn one was dropped");
        assert_eq!(state.heart.open_connections(), 0, "and its guard released");
        assert_eq!(state.lifecycle.background_tasks(), 0);
    }

    /// Through the real server: a WebSocket, whoever serves it, counts as an open connection for
    /// exactly as long as its socket lives, and shutdown waits for it; `/healthz`'s does not count.
    #[tokio::test]
    async fn every_upgraded_connection_is_counted_by_the_server() {
        use axum::extract::ws::WebSocketUpgrade;
        use axum::routing::get;
        use futures_util::StreamExt;

        let home = tempfile::tempdir().unwrap();
        let (state, listener) = state_and_listener(home.path(), &[]).await;
        let addr = listener.local_addr().unwrap();
        // A handler that knows nothing of hearts or lifecycles, like a proxy's splice.
        let app = axum::Router::<AppState>::new()
            .route(
                "/ws",
                get(|ws: WebSocketUpgrade| async move {
                    ws.on_upgrade(|mut socket| async move { while let Some(Ok(_)) = socket.recv().await {} })
                }),
            )
            .merge(crate::heart::routes::routes())
            .layer(axum::middleware::from_fn_with_state(
                HeartState::from_ref(&state),
                crate::heart::routes::record_activity,
            ))
            .with_state(state.clone());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(server::serve(listener, app, None::<server::NoLane>, None, async {
            let _ = stop_rx.await;
        }));

        let connect = |path: &'static str| async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tokio_tungstenite::client_async(format!("ws://{addr}{path}"), tcp).await.unwrap().0
        };
        let settle = |what: &'static str, cond: &dyn Fn() -> bool| {
            for _ in 0..2000 {
                if cond() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            panic!("timed out waiting for {what}");
        };

        let tab = connect("/ws").await;
        let monitor = connect("/healthz").await;
        // Parked before the 101 went out, so already visible.
        assert_eq!(state.heart.open_connections(), 1, "the tab counts, the monitor does not");
        assert_eq!(state.heart.health().status, "alive");
        // Both are waited for at shutdown (the monitor twice: its handler also wraps itself).
        let lifecycle = state.lifecycle.clone();
        tokio::task::spawn_blocking(move || settle("tracking", &|| lifecycle.open_connections() == 3)).await.unwrap();

        drop(tab);
        let heart = state.heart.clone();
        tokio::task::spawn_blocking(move || settle("the tab to close", &|| heart.open_connections() == 0))
            .await
            .unwrap();

        // Shutdown: the monitor's socket gets a Close frame and everything ends.
        stop_tx.send(()).unwrap();
        state.lifecycle.begin_shutdown();
        let mut monitor = monitor;
        loop {
            match monitor.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(frame)))) => {
                    assert_eq!(u16::from(frame.code), 1001, "going away");
                    break;
                }
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(None))) => {
                    panic!("a Close frame without a code")
                }
                Some(Ok(_)) => continue,
                other => panic!("expected a Close frame, got {other:?}"),
            }
        }
        drop(monitor);
        server.await.unwrap();
        state.lifecycle.finish().await;
        assert_eq!(state.lifecycle.open_connections(), 0);
    }
}
