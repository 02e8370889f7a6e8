//! Multi-user mode (`deployment-mode: multi`): accounts, their sessions and API tokens, the
//! audit log, and the stores behind them. See MULTIUSER.md in the shared folder for the design.

pub mod accounts;
pub mod admin_cli;
pub mod api;
pub mod audit;
pub mod config;
pub mod limits;
pub mod openapi;
pub mod pages;
pub mod passwords;
pub mod registry;
pub mod sessions;
pub mod store;
pub mod workspaces;

use std::sync::Arc;

use accounts::Accounts;
use audit::Audit;
use config::{AuditSink, MultiUserConfig, SessionBackend};
use sessions::{MemorySessions, SessionStore, UserSessions};
use store::{StoreError, UserStore};

/// Opens what the configuration names: the user database (running its migrations), the
/// session store and the audit log. An unreachable server is an error naming its address.
pub async fn open(config: &MultiUserConfig) -> Result<Arc<Accounts>, StoreError> {
    let store: Arc<dyn UserStore> = store::open(&config.database).await?;
    let session_store: Arc<dyn SessionStore> = match &config.sessions {
        SessionBackend::Memory => Arc::new(MemorySessions::default()),
        SessionBackend::Database => store.sessions(),
        SessionBackend::Redis(redis) => Arc::new(sessions::redis::RedisSessions::connect(redis).await?),
    };
    let audit = if config.audit_logging {
        let file = matches!(config.audit_sink, AuditSink::File | AuditSink::Both).then(|| config.audit_dir.clone());
        let database = matches!(config.audit_sink, AuditSink::Database | AuditSink::Both).then(|| store.clone());
        Audit::start(file, database)?
    } else {
        Audit::off()
    };
    let sessions = Arc::new(UserSessions::new(session_store, config.session_ttl, config.max_sessions_per_user));
    Ok(Arc::new(Accounts::new(store, sessions, audit)))
}

/// What the server says at start about where accounts live (no secrets).
pub fn describe(accounts: &Accounts) -> (String, String) {
    (accounts.store().describe(), accounts.sessions().store().describe())
}

/// Multi-user mode's routes: `/api`, and the admin and account pages.
pub fn routes<S: Clone + Send + Sync + 'static>(
    accounts: Arc<Accounts>,
    auth: Arc<crate::auth::Auth>,
    app_name: &str,
    fleet: Arc<workspaces::Fleet>,
) -> axum::Router<S> {
    let state = api::ApiState { accounts, auth, app_name: api::AppName(app_name.into()), fleet };
    api::routes(state.clone()).merge(pages::routes(state))
}
