//! Users, sessions and the audit log in PostgreSQL, for several fronts (or an operator who
//! already runs one). The pool reconnects by itself; while the server is away each call fails
//! within the acquire timeout as [`StoreError::Unavailable`].

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::sql::{map_error, sql_store};
use crate::multiuser::config::PostgresConfig;

#[derive(Clone)]
pub struct PostgresStore {
    pool: sqlx::PgPool,
    what: String,
}

impl PostgresStore {
    fn fail(&self, e: sqlx::Error) -> StoreError {
        // Class 08 (connection exceptions), 57P01-57P03 (shut down, crashed, starting up),
        // 53300 (too many connections): the server is away for now.
        map_error(&self.what, e, |code| code.starts_with("08") || code.starts_with("57P") || code == "53300")
    }
}

sql_store!(PostgresStore, sqlx::Postgres);

fn migrator() -> sqlx::migrate::Migrator {
    use sqlx::SqlSafeStr;
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            "init".into(),
            MigrationType::Simple,
            include_str!("../../../migrations/postgres/0001_init.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            2,
            "os uids".into(),
            MigrationType::Simple,
            include_str!("../../../migrations/postgres/0002_os_uids.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            3,
            "workspace registry".into(),
            MigrationType::Simple,
            include_str!("../../../migrations/postgres/0003_workspace_registry.sql").into_sql_str(),
            false,
        ),
    ])
}

/// How long a request waits for a connection before it is answered 503.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// Connects to the configured server and migrates it.
pub async fn open(cfg: &PostgresConfig) -> Result<Arc<dyn UserStore>, StoreError> {
    let what = format!("the user database (PostgreSQL at {})", cfg.address());
    let unavailable = |e: sqlx::Error| StoreError::Unavailable { what: what.clone(), detail: e.to_string() };
    let options = match &cfg.url {
        Some(url) => url.expose().parse::<PgConnectOptions>().map_err(unavailable)?,
        None => {
            let mut o =
                PgConnectOptions::new().host(&cfg.host).port(cfg.port).database(&cfg.database).username(&cfg.user);
            if let Some(p) = &cfg.password {
                o = o.password(p.expose());
            }
            o
        }
    }
    .application_name("code-server");
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(unavailable)?;
    let store = PostgresStore { pool, what };
    migrator().run(&store.pool).await.map_err(|e| StoreError::Other(format!("{}: migrating: {e}", store.what)))?;
    Ok(Arc::new(store))
}
