//! The embedded default: users, sessions and the audit log in one SQLite file (mode 0600) in the
//! data directory, in WAL mode so the server and the admin command line can use it at once.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

use super::sql::{map_error, sql_store};

#[derive(Clone)]
pub struct SqliteStore {
    pool: sqlx::SqlitePool,
    what: String,
}

impl SqliteStore {
    fn fail(&self, e: sqlx::Error) -> StoreError {
        // SQLITE_BUSY (5) and SQLITE_LOCKED (6) outlast busy_timeout only under contention:
        // try again shortly. SQLITE_CANTOPEN (14), SQLITE_IOERR (10), SQLITE_FULL (13): the disk.
        map_error(&self.what, e, |code| matches!(code, "5" | "6" | "10" | "13" | "14"))
    }
}

sql_store!(SqliteStore, sqlx::Sqlite);

fn migrator() -> sqlx::migrate::Migrator {
    use sqlx::SqlSafeStr;
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            "init".into(),
            MigrationType::Simple,
            include_str!("../../../migrations/sqlite/0001_init.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            2,
            "os uids".into(),
            MigrationType::Simple,
            include_str!("../../../migrations/sqlite/0002_os_uids.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            3,
            "workspace registry".into(),
            MigrationType::Simple,
            include_str!("../../../migrations/sqlite/0003_workspace_registry.sql").into_sql_str(),
            false,
        ),
    ])
}

/// Opens (creating it, mode 0600, if need be) the database at `path` and migrates it.
pub async fn open(path: &Path) -> Result<Arc<dyn UserStore>, StoreError> {
    let what = format!("the user database (SQLite at {})", path.display());
    let io = |e: std::io::Error| StoreError::Unavailable { what: what.clone(), detail: crate::errno::describe(&e) };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Created private before SQLite opens it; its -wal and -shm files take its mode.
        std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path).map_err(io)?;
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .map_err(|e| StoreError::Unavailable { what: what.clone(), detail: e.to_string() })?;
    let store = SqliteStore { pool, what };
    migrator().run(&store.pool).await.map_err(|e| StoreError::Other(format!("{}: migrating: {e}", store.what)))?;
    Ok(Arc::new(store))
}
