//! The application: shared state and the one Router (testable without a socket).

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::{self, Next};
use axum::response::Response;

use crate::auth::device::DeviceKeys;
use crate::auth::limiter::LoginLimiter;
use crate::auth::password::{PasswordChecker, PasswordMethod};
use crate::auth::session::{FileStore, SessionStore, Sessions};
use crate::auth::{Auth, Mode};
use crate::cli::{AuthMode, CliError, Config};
use crate::clock::{Clock, SystemClock};
use crate::heart::Heart;
use crate::i18n::Strings;
use crate::lifecycle::Lifecycle;
use crate::pages::Pages;
use crate::proxy::Proxy;
use crate::settings::SettingsStore;
use crate::update::UpdateChecker;
use crate::vscode::VsCode;
use crate::vscode::build::Build;

/// code-server's body-parser limit for its own routes ("100kb").
pub const BODY_LIMIT: usize = 100 * 1024;

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub auth: Arc<Auth>,
    pub heart: Arc<Heart>,
    pub pages: Arc<Pages>,
    /// `coder.json` in the user-data-dir.
    pub settings: Arc<SettingsStore>,
    pub update: Arc<UpdateChecker>,
    /// Shutdown token and trackers: background tasks and upgraded connections go through it.
    pub lifecycle: Lifecycle,
    pub vscode: Arc<VsCode>,
    /// The port proxy: its pool of upstream connections and compiled proxy domains.
    pub proxy: Arc<Proxy>,
}

impl AppState {
    /// Builds the state with the given session store. Fails on configuration that can only be
    /// checked by loading it (custom strings, the password hash).
    pub fn new(config: Config, store: Arc<dyn SessionStore>, build: Build) -> Result<AppState, CliError> {
        let mut strings = Strings::new(&config.app_name, config.locale.as_deref(), build.login_locales().as_deref());
        if let Some(path) = &config.i18n {
            strings.load_custom(path)?;
            tracing::info!("Loaded custom strings");
        }
        let mode = match (&config.auth, &config.password) {
            (AuthMode::Password, Some(p)) => Mode::Password(PasswordChecker::new(
                PasswordMethod::from_config(p).map_err(|e| CliError::new(e.to_string()))?,
            )),
            _ => Mode::None,
        };
        let method = match &mode {
            Mode::Password(c) => Some(Arc::new(c.method().clone())),
            Mode::None => None,
        };
        let fingerprint = Arc::new(move |key: &str| match &method {
            Some(m) => m.fingerprint(key.as_bytes()),
            None => String::new(),
        });
        let device_key = config.user_data_dir.join("code-server-device-key");
        let devices = DeviceKeys::open(&device_key).map_err(|e| {
            CliError::new(format!(
                "cannot keep the device key in {}: {}",
                device_key.display(),
                crate::errno::describe(&e)
            ))
        })?;
        let auth = Auth {
            mode,
            sessions: Sessions::new(store, config.session_timeout, fingerprint),
            limiter: LoginLimiter::default(),
            cookie_name: Auth::cookie_name_for(config.cookie_suffix.as_deref()),
            device_cookie_name: Auth::device_cookie_name_for(config.cookie_suffix.as_deref()),
            devices,
            cookie_domains: Auth::cookie_domains_of(&config.proxy_domains),
            secure_cookies: config.tls.is_some(),
            trusted_proxies: config.trusted_proxies.clone(),
        };
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let settings = Arc::new(SettingsStore::open_in(&config.user_data_dir));
        // What we run is the build's code-server release (ours, unless --vscode-dir names another).
        let running = build.code_server_version.clone().unwrap_or_else(|| crate::cli::help::VERSION.to_string());
        let update = UpdateChecker::new(&config.update_url, running, settings.clone(), clock.clone());
        let lifecycle = Lifecycle::new();
        Ok(AppState {
            vscode: Arc::new(VsCode::new(&config, build, lifecycle.clone())?),
            pages: Arc::new(Pages::new(&config, strings)),
            heart: Arc::new(Heart::new(clock, Some(config.paths.data.join("heartbeat")))),
            proxy: Arc::new(Proxy::new(&config)),
            config: Arc::new(config),
            auth: Arc::new(auth),
            settings,
            update: Arc::new(update),
            lifecycle,
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
            Strings::new(&config.app_name, None, None).load_custom(path)?;
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
}

/// The whole application. Our own routes get the body limit and security headers; forwarded and
/// proxied traffic passes through untouched. Errors render as JSON or HTML everywhere, and every
/// request but `/healthz` counts as activity. The port proxy (proxy-domain hosts, `/proxy`,
/// `/absproxy`) is taken before routing by [`crate::proxy::Front`], which applies those two
/// rules itself, and is what the server serves: the router's own routing would cost every
/// proxied request a route lookup and a layer of boxed futures.
pub fn router(state: AppState) -> crate::proxy::Front {
    let own = Router::new()
        .merge(crate::assets::routes())
        .merge(crate::heart::routes())
        .merge(crate::auth::routes())
        .merge(crate::update::routes())
        .layer(middleware::from_fn(security_headers))
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    let routed = Router::new()
        .merge(own)
        .merge(crate::vscode::routes(&state))
        .layer(middleware::from_fn_with_state(state.clone(), crate::error::render_errors))
        .layer(middleware::from_fn_with_state(state.clone(), crate::heart::record_activity))
        .with_state(state.clone());
    crate::proxy::Front::new(state, routed)
}

/// Headers every page of ours carries (not added to proxied or forwarded responses).
async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    crate::headers::add_own_headers(res.headers_mut());
    res
}
