//! The update check (spec §6, §3.12): `GET /update/check[?force=true]` answers
//! `{"checked":<ms>,"latest":"<version>|unknown","current":"<ours>","isLatest":<bool>}`.
//!
//! - The latest release comes from a GitHub-style `releases/latest` JSON document at
//!   `--update-url` (default [`DEFAULT_URL`]): its `name`, or `tag_name`, without a leading `v`.
//! - The answer is cached in `coder.json` (`update`) for [`CACHE_TTL`]; `force` skips the cache.
//! - Concurrent checks share one upstream request.
//! - `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY` and `NO_PROXY` are honoured (reqwest reads them);
//!   redirects are followed up to 10 times.
//! - A failure answers `latest: "unknown"` (and `isLatest: true`), logs `Failed to get latest
//!   version`, and leaves the cache as it was.
//! - Nothing runs in the background: the browser asks (every 6 hours, unless
//!   `--disable-update-check`), and the route works either way.
//!
//! TLS is rustls with the ring provider (never aws-lc-rs), verifying with the system's roots, or
//! Mozilla's bundled roots where the system has none. The client is built on first use, so a
//! server that is never asked never reads the CA store.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::{FromRef, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::Value;

use crate::clock::Clock;
use crate::identity::Identity;
use crate::relative::Query;
use crate::settings::{Settings, SettingsStore, UpdateCache};

/// coder/code-server's releases: our version is the code-server release whose VS Code build we
/// run, so a newer one there means a newer VS Code build is available. Override with
/// `--update-url` / `$CODE_SERVER_UPDATE_URL`.
pub const DEFAULT_URL: &str = "https://api.github.com/repos/coder/code-server/releases/latest";
/// How long a fetched answer is reused (code-server: 24 hours).
pub const CACHE_TTL: Duration = Duration::from_secs(24 * 3600);
/// The whole upstream exchange, redirects included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// What `latest` says when the check failed.
pub const UNKNOWN: &str = "unknown";

/// The answer of `/update/check`, in code-server's key order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStatus {
    pub checked: u64,
    pub latest: String,
    pub current: String,
    pub is_latest: bool,
}

pub struct UpdateChecker {
    url: String,
    current: String,
    settings: Arc<SettingsStore>,
    clock: Arc<dyn Clock>,
    client: OnceLock<reqwest::Client>,
    /// Held while fetching; whoever waited for it reuses the result (see `latest_shared`).
    fetching: tokio::sync::Mutex<()>,
    /// Fetches finished so far, and the last one's result.
    last: Mutex<(u64, Result<UpdateCache, Arc<FetchError>>)>,
}

impl std::fmt::Debug for UpdateChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdateChecker").field("url", &self.url).field("current", &self.current).finish()
    }
}

impl UpdateChecker {
    /// A checker of `url` for the running version `current`, caching in `settings`.
    pub fn new(
        url: impl Into<String>,
        current: impl Into<String>,
        settings: Arc<SettingsStore>,
        clock: Arc<dyn Clock>,
    ) -> UpdateChecker {
        UpdateChecker {
            url: url.into(),
            current: current.into(),
            settings,
            clock,
            client: OnceLock::new(),
            fetching: tokio::sync::Mutex::new(()),
            last: Mutex::new((0, Err(Arc::new(FetchError::NeverFetched)))),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The cached answer while it is fresh (unless `force`), else a fetched one.
    pub async fn check(&self, force: bool) -> UpdateStatus {
        if !force && let Some(cache) = self.fresh_cache() {
            return self.status(cache);
        }
        match self.latest_shared(force).await {
            Ok(cache) => self.status(cache),
            Err(e) => {
                tracing::error!(error = %e, "Failed to get latest version");
                self.status(UpdateCache { checked: self.clock.now_ms(), version: UNKNOWN.into() })
            }
        }
    }

    fn fresh_cache(&self) -> Option<UpdateCache> {
        let now = self.clock.now_ms();
        self.settings.get().update.filter(|c| c.checked <= now && now - c.checked < CACHE_TTL.as_millis() as u64)
    }

    fn status(&self, cache: UpdateCache) -> UpdateStatus {
        UpdateStatus {
            checked: cache.checked,
            is_latest: is_latest(&cache.version, &self.current),
            latest: cache.version,
            current: self.current.clone(),
        }
    }

    /// One upstream request at a time. A caller that waited while another fetched takes that
    /// result (or, unforced, the cache it filled) instead of asking again.
    async fn latest_shared(&self, force: bool) -> Result<UpdateCache, Arc<FetchError>> {
        let seen = self.last.lock().unwrap().0;
        let _fetching = self.fetching.lock().await;
        if !force && let Some(cache) = self.fresh_cache() {
            return Ok(cache);
        }
        {
            let last = self.last.lock().unwrap();
            if last.0 > seen {
                return last.1.clone();
            }
        }
        let result =
            self.fetch().await.map(|version| UpdateCache { checked: self.clock.now_ms(), version }).map_err(Arc::new);
        if let Ok(cache) = &result {
            self.settings.write(Settings { update: Some(cache.clone()), ..Default::default() });
            if !is_latest(&cache.version, &self.current) {
                tracing::info!(
                    "code-server {} is available: a newer VS Code build than this one ({})",
                    cache.version,
                    self.current
                );
            }
        }
        let mut last = self.last.lock().unwrap();
        *last = (last.0 + 1, result.clone());
        result
    }

    async fn fetch(&self) -> Result<String, FetchError> {
        let client = self.client()?;
        let res = client
            .get(&self.url)
            .header(reqwest::header::ACCEPT, "application/vnd.github+json, application/json")
            .send()
            .await
            .map_err(FetchError::Request)?;
        let status = res.status();
        if !status.is_success() {
            return Err(FetchError::Status { url: self.url.clone(), status: status.as_u16() });
        }
        let release: Value = res.json().await.map_err(FetchError::Request)?;
        latest_version(&release).ok_or_else(|| FetchError::NoVersion(self.url.clone()))
    }

    fn client(&self) -> Result<&reqwest::Client, FetchError> {
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let built = crate::net::builder()
            .and_then(|b| Ok(b.timeout(REQUEST_TIMEOUT).build()?))
            .map_err(|e| FetchError::Client(e.to_string()))?;
        Ok(self.client.get_or_init(|| built))
    }
}

/// Why the latest release could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("never fetched")]
    NeverFetched,
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
    /// The cause chain is what a person needs (connection refused, certificate, proxy).
    #[error("{}", crate::net::error_chain(.0))]
    Request(reqwest::Error),
    #[error("{url}: {status}")]
    Status { url: String, status: u16 },
    #[error("{0}: the release has no name or tag_name")]
    NoVersion(String),
}

/// The version a release document names: `name`, else `tag_name` (whichever is a semantic
/// version, preferring `name`), without one leading `v`.
pub fn latest_version(release: &Value) -> Option<String> {
    let candidates: Vec<&str> = ["name", "tag_name"]
        .iter()
        .filter_map(|k| release.get(k)?.as_str())
        .map(|s| s.trim())
        .map(|s| s.strip_prefix('v').unwrap_or(s))
        .filter(|s| !s.is_empty())
        .collect();
    candidates.iter().find(|c| semver::Version::parse(c).is_ok()).or(candidates.first()).map(|s| s.to_string())
}

/// `latest <= current` by semantic versioning; anything unparseable (`unknown`, odd tags)
/// counts as latest, so nobody is nagged about a version we cannot read.
pub fn is_latest(latest: &str, current: &str) -> bool {
    match (semver::Version::parse(latest), semver::Version::parse(current)) {
        (Ok(l), Ok(c)) => l <= c,
        _ => true,
    }
}

pub fn routes<S>() -> Router<S>
where
    Arc<UpdateChecker>: FromRef<S>,
    Arc<crate::auth::Auth>: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new().route("/update/check", get(check))
}

/// `GET /update/check[?force=true]` (authenticated).
async fn check(State(update): State<Arc<UpdateChecker>>, _: Identity, RawQuery(query): RawQuery) -> Response {
    let force = Query::parse(query.as_deref()).get("force") == Some("true");
    let mut res = Json(update.check(force).await).into_response();
    crate::headers::add_private_headers(res.headers_mut());
    res
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn versions_from_release_documents() {
        assert_eq!(latest_version(&json!({"name": "v4.99.1", "tag_name": "v4.99.1"})).as_deref(), Some("4.99.1"));
        assert_eq!(latest_version(&json!({"tag_name": "v1.2.3"})).as_deref(), Some("1.2.3"));
        assert_eq!(latest_version(&json!({"name": "1.0.0-rc.1"})).as_deref(), Some("1.0.0-rc.1"));
        // A prose name gives way to a tag that is a version.
        assert_eq!(latest_version(&json!({"name": "Spring release", "tag_name": "v2.0.0"})).as_deref(), Some("2.0.0"));
        assert_eq!(latest_version(&json!({"name": "Spring release"})).as_deref(), Some("Spring release"));
        assert_eq!(latest_version(&json!({"name": "vv1.0.0"})).as_deref(), Some("v1.0.0"));
        assert_eq!(latest_version(&json!({"name": "", "body": "x"})), None);
        assert_eq!(latest_version(&json!([])), None);
    }

    #[test]
    fn semver_comparison() {
        assert!(is_latest("0.1.0", "0.1.0"));
        assert!(is_latest("0.0.9", "0.1.0"));
        assert!(!is_latest("0.1.1", "0.1.0"));
        assert!(!is_latest("0.10.0", "0.9.0"), "numeric, not lexical");
        assert!(is_latest("0.9.0", "0.10.0"));
        assert!(!is_latest("1.0.0", "1.0.0-rc.1"), "a release is newer than its pre-release");
        assert!(is_latest("1.0.0-rc.1", "1.0.0"));
        assert!(is_latest(UNKNOWN, "0.1.0"));
        assert!(is_latest("4.1", "0.1.0"), "unparseable counts as latest");
    }

    /// The cache's 24 hours, with a clock that only moves when told (no network: the URL is
    /// unreachable, so a refetch shows up as `unknown`).
    #[tokio::test]
    async fn the_cache_lasts_a_day() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Arc::new(SettingsStore::open_in(dir.path()));
        let t0 = 1_700_000_000_000;
        let clock = Arc::new(ManualClock::new(t0));
        settings.write(Settings {
            update: Some(UpdateCache { checked: t0, version: "9.9.9".into() }),
            ..Default::default()
        });
        let checker = UpdateChecker::new("http://127.0.0.1:1/latest", "0.1.0", settings.clone(), clock.clone());

        let fresh = UpdateStatus { checked: t0, latest: "9.9.9".into(), current: "0.1.0".into(), is_latest: false };
        assert_eq!(checker.check(false).await, fresh);
        clock.advance(CACHE_TTL.as_millis() as u64 - 1);
        assert_eq!(checker.check(false).await, fresh);

        // A day old: refetched; the fetch fails, so `unknown`, and the stale cache is kept.
        clock.advance(1);
        let failed = checker.check(false).await;
        assert_eq!(failed.latest, UNKNOWN);
        assert!(failed.is_latest);
        assert_eq!(failed.checked, t0 + CACHE_TTL.as_millis() as u64);
        assert_eq!(settings.get().update.unwrap().version, "9.9.9");

        // A cache from the future (the clock went back) is not trusted.
        clock.set(t0 - 1);
        assert_eq!(checker.check(false).await.latest, UNKNOWN);
        // Forced checks skip a fresh cache.
        clock.set(t0);
        assert_eq!(checker.check(true).await.latest, UNKNOWN);
    }
}
