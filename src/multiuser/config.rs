//! The `multi-user:` section of `config.yaml` and its environment overrides (MULTIUSER.md,
//! "Configuration"), resolved into a validated [`MultiUserConfig`].
//!
//! Precedence, highest first: environment (`CODE_SERVER_DB_*`, `CODE_SERVER_DATABASE_URL`,
//! `CODE_SERVER_SESSION_STORE`, `CODE_SERVER_REDIS_*`, `ADMIN_*`), the file, defaults. Every
//! error names the key (`multi-user.auth.session.ttl`) or the variable it came from. Secrets
//! (database and Redis passwords, URLs that may carry one, `ADMIN_PASSWORD`) are [`Secret`]s and
//! are listed in [`MultiUserConfig::secret_vars`] so start-up removes them from the environment
//! children inherit.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use yaml_serde::Value as Yaml;

use crate::environment::Environment;
use crate::secret::Secret;

/// A configuration error, naming the key or variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// Where users (and, with `store: database`, sessions and the audit log) are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    Sqlite { path: PathBuf },
    Postgres(PostgresConfig),
}

/// A PostgreSQL server: a URL, or its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    pub url: Option<Secret>,
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: Option<Secret>,
}

impl PostgresConfig {
    /// The server's address for messages: never the password.
    pub fn address(&self) -> String {
        match &self.url {
            Some(url) => redact_url(url.expose()),
            None => format!("{}:{}/{}", self.host, self.port, self.database),
        }
    }
}

/// Where sessions live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionBackend {
    Memory,
    Database,
    Redis(RedisConfig),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    pub url: Option<Secret>,
    pub host: String,
    pub port: u16,
    pub password: Option<Secret>,
    pub db: u32,
    /// Prepended to every key, so one Redis can serve several deployments (and tests).
    pub prefix: String,
}

impl RedisConfig {
    /// A `redis://` URL with everything in it (a secret: it may hold the password).
    pub fn connection_url(&self) -> Secret {
        if let Some(url) = &self.url {
            return url.clone();
        }
        let auth = match &self.password {
            Some(p) => format!(":{}@", percent_encoding::utf8_percent_encode(p.expose(), USERINFO)),
            None => String::new(),
        };
        Secret::new(format!("redis://{auth}{}:{}/{}", self.host, self.port, self.db))
    }

    /// The server's address for messages: never the password.
    pub fn address(&self) -> String {
        match &self.url {
            Some(url) => redact_url(url.expose()),
            None => format!("{}:{}", self.host, self.port),
        }
    }
}

/// Characters escaped in a URL's user-info.
const USERINFO: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `scheme://host:port/path` of a URL, without user name or password.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_password(None);
            let _ = u.set_username("");
            u.set_query(None);
            u.to_string()
        }
        Err(_) => "(an unreadable URL)".to_string(),
    }
}

/// Where audit events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditSink {
    File,
    Database,
    Both,
}

impl AuditSink {
    pub fn to_file(self) -> bool {
        matches!(self, AuditSink::File | AuditSink::Both)
    }
    pub fn to_database(self) -> bool {
        matches!(self, AuditSink::Database | AuditSink::Both)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Each user's VS Code runs as that user's own uid.
    OsUser,
    /// Every user runs as the server's uid: no security boundary.
    Directory,
}

/// The base path under os-user isolation unless configured.
pub const DEFAULT_OS_USER_BASE_PATH: &str = "/var/lib/code-server/users";

/// Far above the uids of people's accounts (1000 up) and of common container ranges
/// (100000-165535).
pub const DEFAULT_UID_RANGE: (u32, u32) = (200_000, 299_999);

/// `FIRST-LAST`: at least 1000 (never a system account's), below `(uid_t)-1`.
fn parse_uid_range(text: &str) -> Option<(u32, u32)> {
    let (a, b) = text.trim().split_once('-')?;
    let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (1000 <= a && a < b && b < u32::MAX).then_some((a, b))
}

/// The first admin, from `ADMIN_USERNAME` / `ADMIN_PASSWORD` / `ADMIN_EMAIL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstAdmin {
    pub username: String,
    pub password: Secret,
    pub email: Option<String>,
}

/// The validated multi-user configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiUserConfig {
    pub database: Database,
    pub sessions: SessionBackend,
    /// Sliding: a session unused this long is gone.
    pub session_ttl: Duration,
    pub max_sessions_per_user: usize,
    pub isolation: Isolation,
    pub base_path: PathBuf,
    /// The uids given to users without a system account (os-user isolation), inclusive.
    pub uid_range: (u32, u32),
    /// Whether a user whose name is a system account's runs as that account (with its home).
    pub system_accounts: bool,
    pub storage_quota_mb: u64,
    pub memory_limit_mb: u64,
    pub idle_timeout: Duration,
    pub audit_logging: bool,
    pub audit_sink: AuditSink,
    /// The audit file sink's directory (one JSON-lines file per UTC day).
    pub audit_dir: PathBuf,
    pub first_admin: Option<FirstAdmin>,
    /// Environment variables holding secrets, to remove before children start.
    pub secret_vars: Vec<&'static str>,
}

// The file's shape. Every level refuses unknown keys, so a typo is an error, not a default.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRoot {
    isolation: Option<RawIsolation>,
    limits: Option<RawLimits>,
    features: Option<RawFeatures>,
    audit: Option<RawAudit>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawAuth {
    provider: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDatabase {
    #[serde(rename = "type")]
    kind: Option<String>,
    path: Option<PathBuf>,
    url: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    database: Option<String>,
    user: Option<String>,
    password: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawSession {
    store: Option<String>,
    ttl: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRedis {
    url: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    password: Option<String>,
    db: Option<u32>,
    prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawIsolation {
    strategy: Option<String>,
    base_path: Option<PathBuf>,
    uid_range: Option<String>,
    system_accounts: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawLimits {
    max_sessions_per_user: Option<u64>,
    storage_quota_mb: Option<u64>,
    memory_limit_mb: Option<u64>,
    idle_timeout_minutes: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawFeatures {
    audit_logging: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawAudit {
    sink: Option<String>,
    dir: Option<PathBuf>,
}

/// Each level of the file is read on its own, so an error names its full key.
fn section<T: for<'de> Deserialize<'de> + Default>(value: Option<Yaml>, key: &str) -> Result<T, ConfigError> {
    match value {
        None | Some(Yaml::Null) => Ok(T::default()),
        Some(v @ Yaml::Mapping(_)) => {
            yaml_serde::from_value(v).map_err(|e| err(format!("{key}: {}", clean_serde_message(&e.to_string()))))
        }
        Some(_) => Err(err(format!("{key}: expected a mapping of keys to values"))),
    }
}

/// serde's messages, without the location suffix a `Value` has no use for.
fn clean_serde_message(msg: &str) -> String {
    msg.split(" at line ").next().unwrap_or(msg).to_string()
}

/// Splits a mapping into its nested mappings (read on their own) and the rest.
fn take(map: &mut yaml_serde::Mapping, key: &str) -> Option<Yaml> {
    map.remove(Yaml::String(key.to_string()))
}

fn mapping(value: Option<Yaml>, key: &str) -> Result<yaml_serde::Mapping, ConfigError> {
    match value {
        None | Some(Yaml::Null) => Ok(Default::default()),
        Some(Yaml::Mapping(m)) => Ok(m),
        Some(_) => Err(err(format!("{key}: expected a mapping of keys to values"))),
    }
}

impl MultiUserConfig {
    /// Resolves the file's `multi-user:` value (`None` when absent) with the environment.
    /// `data_dir` holds the defaults (`users.db`, `users/`, `audit/`); relative paths in the
    /// file are taken from `cwd`.
    pub fn resolve(
        value: Option<Yaml>,
        env: &Environment,
        data_dir: &Path,
        cwd: &Path,
    ) -> Result<MultiUserConfig, ConfigError> {
        let mut root = mapping(value, "multi-user")?;
        let mut auth = mapping(take(&mut root, "auth"), "multi-user.auth")?;
        let database_yaml = take(&mut auth, "database");
        let mut session = mapping(take(&mut auth, "session"), "multi-user.auth.session")?;
        let redis_yaml = take(&mut session, "redis");
        let raw_session: RawSession = section(Some(Yaml::Mapping(session)), "multi-user.auth.session")?;
        let raw_auth: RawAuth = section(Some(Yaml::Mapping(auth)), "multi-user.auth")?;
        let raw_db: RawDatabase = section(database_yaml, "multi-user.auth.database")?;
        let raw_redis: RawRedis = section(redis_yaml, "multi-user.auth.session.redis")?;
        let rest: RawRoot = section(Some(Yaml::Mapping(root)), "multi-user")?;
        let absolute = |p: PathBuf| if p.is_absolute() { p } else { cwd.join(p) };
        let mut secret_vars = vec![];
        let env_var = |name: &'static str, secret_vars: &mut Vec<&'static str>, secret: bool| {
            let v = env.get(name).filter(|v| !v.is_empty()).map(str::to_string);
            if secret && env.get(name).is_some() {
                secret_vars.push(name);
            }
            v
        };

        if let Some(p) = raw_auth.provider.as_deref()
            && p != "database"
        {
            return Err(err(format!("multi-user.auth.provider: {p:?} is not supported (only \"database\")")));
        }

        // The user database.
        let (db_type, db_type_key) = match env_var("CODE_SERVER_DB_TYPE", &mut secret_vars, false) {
            Some(t) => (Some(t), "CODE_SERVER_DB_TYPE"),
            None => (raw_db.kind.clone(), "multi-user.auth.database.type"),
        };
        let db_url = env_var("CODE_SERVER_DATABASE_URL", &mut secret_vars, true).or(raw_db.url.clone());
        let db_type = match db_type.as_deref() {
            Some(t) => t.to_string(),
            // A URL says what it is.
            None => match &db_url {
                Some(u) if u.starts_with("postgres") => "postgres".to_string(),
                _ => "sqlite".to_string(),
            },
        };
        let database = match db_type.as_str() {
            "sqlite" => {
                let path = env_var("CODE_SERVER_DB_PATH", &mut secret_vars, false)
                    .map(PathBuf::from)
                    .or(raw_db.path.clone())
                    .map(absolute)
                    .unwrap_or_else(|| data_dir.join("users.db"));
                if db_url.is_some() {
                    return Err(err("multi-user.auth.database.url: a URL is for type postgres; SQLite takes a path"));
                }
                Database::Sqlite { path }
            }
            "postgres" | "postgresql" => {
                let port = match env_var("CODE_SERVER_DB_PORT", &mut secret_vars, false) {
                    Some(p) => {
                        p.parse().map_err(|_| err(format!("CODE_SERVER_DB_PORT: {p:?} is not a port number")))?
                    }
                    None => raw_db.port.unwrap_or(5432),
                };
                if let Some(url) = &db_url
                    && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
                {
                    return Err(err("multi-user.auth.database.url: must start with postgres:// or postgresql://"));
                }
                let pg = PostgresConfig {
                    url: db_url.map(Secret::new),
                    host: env_var("CODE_SERVER_DB_HOST", &mut secret_vars, false)
                        .or(raw_db.host.clone())
                        .unwrap_or_else(|| "localhost".into()),
                    port,
                    database: env_var("CODE_SERVER_DB_NAME", &mut secret_vars, false)
                        .or(raw_db.database.clone())
                        .unwrap_or_else(|| "code_server".into()),
                    user: env_var("CODE_SERVER_DB_USER", &mut secret_vars, false)
                        .or(raw_db.user.clone())
                        .unwrap_or_else(|| "code_server".into()),
                    password: env_var("CODE_SERVER_DB_PASSWORD", &mut secret_vars, true)
                        .or(raw_db.password.clone())
                        .map(Secret::new),
                };
                Database::Postgres(pg)
            }
            other => {
                return Err(err(format!("{db_type_key}: {other:?} is not a database type (sqlite or postgres)")));
            }
        };

        // Sessions.
        let (store, store_key) = match env_var("CODE_SERVER_SESSION_STORE", &mut secret_vars, false) {
            Some(s) => (s, "CODE_SERVER_SESSION_STORE"),
            None => (raw_session.store.clone().unwrap_or_else(|| "database".into()), "multi-user.auth.session.store"),
        };
        let redis_url = env_var("CODE_SERVER_REDIS_URL", &mut secret_vars, true).or(raw_redis.url.clone());
        let sessions = match store.as_str() {
            "memory" => SessionBackend::Memory,
            "database" => SessionBackend::Database,
            "redis" => {
                if let Some(url) = &redis_url
                    && !(url.starts_with("redis://") || url.starts_with("rediss://"))
                {
                    return Err(err("multi-user.auth.session.redis.url: must start with redis:// or rediss://"));
                }
                let port = match env_var("CODE_SERVER_REDIS_PORT", &mut secret_vars, false) {
                    Some(p) => {
                        p.parse().map_err(|_| err(format!("CODE_SERVER_REDIS_PORT: {p:?} is not a port number")))?
                    }
                    None => raw_redis.port.unwrap_or(6379),
                };
                let prefix = raw_redis.prefix.clone().unwrap_or_else(|| "code-server:".into());
                if prefix.chars().any(|c| c.is_whitespace() || c.is_control() || "*?[]\\".contains(c)) {
                    return Err(err(
                        "multi-user.auth.session.redis.prefix: must not contain spaces, control characters or * ? [ ] \\",
                    ));
                }
                SessionBackend::Redis(RedisConfig {
                    url: redis_url.map(Secret::new),
                    host: env_var("CODE_SERVER_REDIS_HOST", &mut secret_vars, false)
                        .or(raw_redis.host.clone())
                        .unwrap_or_else(|| "127.0.0.1".into()),
                    port,
                    password: env_var("CODE_SERVER_REDIS_PASSWORD", &mut secret_vars, true)
                        .or(raw_redis.password.clone())
                        .map(Secret::new),
                    db: raw_redis.db.unwrap_or(0),
                    prefix,
                })
            }
            other => {
                return Err(err(format!("{store_key}: {other:?} is not a session store (memory, database or redis)")));
            }
        };
        let ttl = raw_session.ttl.unwrap_or(86_400);
        if !(60..=365 * 86_400).contains(&ttl) {
            return Err(err("multi-user.auth.session.ttl: must be between 60 and 31536000 seconds"));
        }

        let isolation_raw = rest.isolation.unwrap_or_default();
        let running_as_root = crate::private_dir::current_uid() == 0;
        let isolation = match isolation_raw.strategy.as_deref() {
            None if running_as_root => Isolation::OsUser,
            None => Isolation::Directory,
            Some("os-user") => Isolation::OsUser,
            Some("directory") => Isolation::Directory,
            Some(other) => {
                return Err(err(format!(
                    "multi-user.isolation.strategy: {other:?} is not a strategy (os-user or directory)"
                )));
            }
        };
        // Under os-user isolation the users' accounts must pass through the base path, which
        // they cannot inside our private data dir.
        let base_path = isolation_raw.base_path.map(absolute).unwrap_or_else(|| match isolation {
            Isolation::OsUser => PathBuf::from(DEFAULT_OS_USER_BASE_PATH),
            Isolation::Directory => data_dir.join("users"),
        });
        let uid_range = match isolation_raw.uid_range.as_deref() {
            None => DEFAULT_UID_RANGE,
            Some(text) => parse_uid_range(text).ok_or_else(|| {
                err(format!(
                    "multi-user.isolation.uid-range: {text:?} is not a range of uids like \"200000-299999\" \
                     (first at least 1000, last at most 4294967294, first before last)"
                ))
            })?,
        };
        let system_accounts = isolation_raw.system_accounts.unwrap_or(false);

        let limits = rest.limits.unwrap_or_default();
        let max_sessions = limits.max_sessions_per_user.unwrap_or(5);
        if !(1..=1000).contains(&max_sessions) {
            return Err(err("multi-user.limits.max-sessions-per-user: must be between 1 and 1000"));
        }
        // Fractions are allowed (0.5 is 30 seconds): a short timeout is how it is tried out.
        let idle_minutes = limits.idle_timeout_minutes.unwrap_or(30.0);
        if !(idle_minutes.is_finite() && (0.01..=525_600.0).contains(&idle_minutes)) {
            return Err(err("multi-user.limits.idle-timeout-minutes: must be between 0.01 and 525600"));
        }
        let storage_quota_mb = limits.storage_quota_mb.unwrap_or(5000);
        let memory_limit_mb = limits.memory_limit_mb.unwrap_or(4096);
        for (v, key) in [
            (storage_quota_mb, "multi-user.limits.storage-quota-mb"),
            (memory_limit_mb, "multi-user.limits.memory-limit-mb"),
        ] {
            if v == 0 {
                return Err(err(format!("{key}: must be at least 1")));
            }
        }

        let audit = rest.audit.unwrap_or_default();
        let audit_sink = match audit.sink.as_deref() {
            None | Some("both") => AuditSink::Both,
            Some("file") => AuditSink::File,
            Some("database") => AuditSink::Database,
            Some(other) => {
                return Err(err(format!("multi-user.audit.sink: {other:?} is not a sink (file, database or both)")));
            }
        };

        let first_admin = match (
            env_var("ADMIN_USERNAME", &mut secret_vars, false),
            env_var("ADMIN_PASSWORD", &mut secret_vars, true),
        ) {
            (Some(username), Some(password)) => Some(FirstAdmin {
                username,
                password: Secret::new(password),
                email: env_var("ADMIN_EMAIL", &mut secret_vars, false),
            }),
            (Some(_), None) => return Err(err("ADMIN_USERNAME is set without ADMIN_PASSWORD")),
            (None, Some(_)) => return Err(err("ADMIN_PASSWORD is set without ADMIN_USERNAME")),
            (None, None) => None,
        };

        Ok(MultiUserConfig {
            database,
            sessions,
            session_ttl: Duration::from_secs(ttl),
            max_sessions_per_user: max_sessions as usize,
            isolation,
            base_path,
            uid_range,
            system_accounts,
            storage_quota_mb,
            memory_limit_mb,
            idle_timeout: Duration::from_secs_f64(idle_minutes * 60.0),
            audit_logging: rest.features.unwrap_or_default().audit_logging.unwrap_or(true),
            audit_sink,
            audit_dir: audit.dir.map(absolute).unwrap_or_else(|| data_dir.join("audit")),
            first_admin,
            secret_vars,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(yaml: &str, env: &[(&str, &str)]) -> Result<MultiUserConfig, ConfigError> {
        let value: Option<Yaml> = if yaml.is_empty() { None } else { Some(yaml_serde::from_str(yaml).unwrap()) };
        MultiUserConfig::resolve(value, &env.iter().copied().collect(), Path::new("/data"), Path::new("/cwd"))
    }

    #[test]
    fn defaults_are_the_embedded_database() {
        let c = resolve("", &[]).unwrap();
        assert_eq!(c.database, Database::Sqlite { path: "/data/users.db".into() });
        assert_eq!(c.sessions, SessionBackend::Database);
        assert_eq!(c.session_ttl, Duration::from_secs(86_400));
        assert_eq!(c.max_sessions_per_user, 5);
        assert_eq!(c.audit_sink, AuditSink::Both);
        assert_eq!(c.audit_dir, PathBuf::from("/data/audit"));
        assert!(c.audit_logging);
        assert!(c.first_admin.is_none());
    }

    #[test]
    fn the_seed_example_reads() {
        let c = resolve(
            "auth:\n  provider: database\n  database:\n    type: sqlite\n    path: db/users.db\n  session:\n    store: database\n    ttl: 3600\nisolation:\n  strategy: directory\n  base-path: /srv/users\nlimits:\n  max-sessions-per-user: 3\n  storage-quota-mb: 10\n  memory-limit-mb: 20\n  idle-timeout-minutes: 5\nfeatures:\n  audit-logging: true\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.database, Database::Sqlite { path: "/cwd/db/users.db".into() });
        assert_eq!(c.session_ttl, Duration::from_secs(3600));
        assert_eq!(c.isolation, Isolation::Directory);
        assert_eq!(c.base_path, PathBuf::from("/srv/users"));
        assert_eq!(c.max_sessions_per_user, 3);
        assert_eq!(c.idle_timeout, Duration::from_secs(300));
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let c = resolve(
            "auth:\n  database:\n    type: sqlite\n  session:\n    store: memory\n",
            &[
                ("CODE_SERVER_DB_TYPE", "postgres"),
                ("CODE_SERVER_DB_HOST", "db.internal"),
                ("CODE_SERVER_DB_PORT", "6543"),
                ("CODE_SERVER_DB_NAME", "cs"),
                ("CODE_SERVER_DB_USER", "cs_user"),
                ("CODE_SERVER_DB_PASSWORD", "pw"),
                ("CODE_SERVER_SESSION_STORE", "redis"),
                ("CODE_SERVER_REDIS_HOST", "cache"),
                ("CODE_SERVER_REDIS_PORT", "7000"),
                ("CODE_SERVER_REDIS_PASSWORD", "p@ss"),
                ("ADMIN_USERNAME", "root2"),
                ("ADMIN_PASSWORD", "correct horse"),
            ],
        )
        .unwrap();
        let Database::Postgres(pg) = &c.database else { panic!("{:?}", c.database) };
        assert_eq!(
            (pg.host.as_str(), pg.port, pg.database.as_str(), pg.user.as_str()),
            ("db.internal", 6543, "cs", "cs_user")
        );
        assert_eq!(pg.password.as_ref().unwrap().expose(), "pw");
        let SessionBackend::Redis(r) = &c.sessions else { panic!() };
        assert_eq!(r.connection_url().expose(), "redis://:p%40ss@cache:7000/0");
        assert_eq!(r.address(), "cache:7000");
        assert_eq!(c.first_admin.as_ref().unwrap().username, "root2");
        for var in ["CODE_SERVER_DB_PASSWORD", "CODE_SERVER_REDIS_PASSWORD", "ADMIN_PASSWORD"] {
            assert!(c.secret_vars.contains(&var), "{var}");
        }
        assert!(!format!("{c:?}").contains("correct horse"), "secrets never print");
    }

    #[test]
    fn a_url_decides_the_type_and_never_prints_its_password() {
        let c = resolve("", &[("CODE_SERVER_DATABASE_URL", "postgres://u:hunter2@h:1/d")]).unwrap();
        let Database::Postgres(pg) = &c.database else { panic!() };
        assert_eq!(pg.address(), "postgres://h:1/d");
        assert!(c.secret_vars.contains(&"CODE_SERVER_DATABASE_URL"));
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("auth:\n  database:\n    type: mysql\n", "multi-user.auth.database.type: \"mysql\""),
            ("auth:\n  database:\n    tpye: sqlite\n", "multi-user.auth.database: unknown field `tpye`"),
            ("auth:\n  session:\n    store: file\n", "multi-user.auth.session.store"),
            ("auth:\n  session:\n    ttl: 5\n", "multi-user.auth.session.ttl"),
            ("auth:\n  session:\n    ttl: soon\n", "multi-user.auth.session: invalid type"),
            (
                "auth:\n  session:\n    store: redis\n    redis:\n      url: http://x\n",
                "multi-user.auth.session.redis.url",
            ),
            ("auth:\n  session:\n    redis:\n      hots: x\n", "multi-user.auth.session.redis: unknown field `hots`"),
            ("limits:\n  max-sessions-per-user: 0\n", "multi-user.limits.max-sessions-per-user"),
            ("limit:\n  x: 1\n", "multi-user: unknown field `limit`"),
            ("isolation:\n  strategy: chroot\n", "multi-user.isolation.strategy"),
            ("audit:\n  sink: syslog\n", "multi-user.audit.sink"),
            ("auth: yes\n", "multi-user.auth: expected a mapping"),
            ("[1, 2]", "multi-user: expected a mapping"),
        ];
        for (yaml, want) in cases {
            let e = resolve(yaml, &[]).unwrap_err().0;
            assert!(e.contains(want), "{yaml:?}: {e}");
        }
        let e = resolve("", &[("CODE_SERVER_SESSION_STORE", "disk")]).unwrap_err().0;
        assert!(e.starts_with("CODE_SERVER_SESSION_STORE:"), "{e}");
        let e = resolve("", &[("CODE_SERVER_DB_TYPE", "postgres"), ("CODE_SERVER_DB_PORT", "x")]).unwrap_err().0;
        assert!(e.starts_with("CODE_SERVER_DB_PORT:"), "{e}");
        let e = resolve("", &[("ADMIN_USERNAME", "a")]).unwrap_err().0;
        assert!(e.contains("ADMIN_PASSWORD"), "{e}");
    }
}
