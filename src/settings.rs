//! `coder.json` in the user-data-dir (spec §7): small state code-server keeps between runs.
//!
//! Keys: `query` (the last query of the VS Code root route, so a bare `/` reopens the last
//! folder) and `update` (the update checker's cache). Unknown keys are kept as they are.
//!
//! - **Typed, leniently.** [`Settings`] is the typed view; a known key whose value has another
//!   shape (say a `query` value that is a list) reads as absent and stays untouched on disk.
//! - **Shallow merges.** [`SettingsStore::write`] replaces the keys the patch has and keeps the
//!   rest, as code-server does.
//! - **Coalesced, atomic writes.** A write changes memory at once and wakes the writer task
//!   ([`SettingsStore::run`]), which waits [`COALESCE_WINDOW`] for the rest of a burst and then
//!   writes the whole file once: a temporary file in the same directory, fsync, rename
//!   ([`crate::util::atomic_write`]). Pretty-printed with two-space indentation like code-server.
//! - **Flushed at shutdown**, after the last request ([`crate::lifecycle::run`]).
//! - **Never silently lost.** A file that is not a JSON object is moved aside with a warning and
//!   the server starts with empty settings; if it cannot be moved, we never write over it.
//!
//! The in-memory copy is authoritative: one server owns a user-data-dir (its session socket and
//! session store assume the same). Writers in one process never lose an update: each merge is
//! made under one lock, and the file writer takes its snapshot under the write lock, so the last
//! write to land on disk holds every merge before it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub const FILE_NAME: &str = "coder.json";
/// How long the writer waits for the rest of a burst before writing.
pub const COALESCE_WINDOW: Duration = Duration::from_millis(250);

/// The typed view of `coder.json`, and the shape of a patch: absent fields are left alone.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Settings {
    /// The last query string of the VS Code root route, as an object of strings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<BTreeMap<String, String>>,
    /// The update checker's cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateCache>,
    /// Every other key, untouched.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `{"checked": <Unix ms>, "version": "<latest>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateCache {
    pub checked: u64,
    pub version: String,
}

impl Settings {
    /// The typed view of a JSON object. Known keys of another shape read as absent.
    pub fn from_map(map: &Map<String, Value>) -> Settings {
        let typed = |key: &str| map.get(key).cloned();
        Settings {
            query: typed("query").and_then(|v| serde_json::from_value(v).ok()),
            update: typed("update").and_then(|v| serde_json::from_value(v).ok()),
            other: map.iter().filter(|(k, _)| !matches!(k.as_str(), "query" | "update")).map(clone_pair).collect(),
        }
    }

    fn into_map(self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => unreachable!("Settings serialises to an object"),
        }
    }
}

fn clone_pair((k, v): (&String, &Value)) -> (String, Value) {
    (k.clone(), v.clone())
}

#[derive(Debug, thiserror::Error)]
#[error("Failed to write {}: {}", path.display(), crate::errno::describe(source))]
pub struct WriteError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// `coder.json`, held in memory and written behind the callers' backs.
#[derive(Debug)]
pub struct SettingsStore {
    path: PathBuf,
    window: Duration,
    state: Mutex<State>,
    /// Wakes the writer task.
    dirty: Notify,
    /// Serialises file writes, so an older snapshot never lands after a newer one.
    write_lock: tokio::sync::Mutex<()>,
    disk_writes: AtomicU64,
}

#[derive(Debug)]
struct State {
    current: Map<String, Value>,
    /// Bumped by every write; compared with `written` to know whether the file is behind.
    generation: u64,
    written: u64,
    /// The file on disk could not be read or moved aside: never write over it.
    frozen: bool,
}

impl SettingsStore {
    /// Loads `path`. Missing: empty. Not a JSON object: moved aside with a warning, empty.
    /// Unreadable: a warning, empty, and the file is left alone (never overwritten).
    pub fn open(path: impl Into<PathBuf>) -> SettingsStore {
        let path = path.into();
        let (current, frozen) = load(&path);
        SettingsStore {
            path,
            window: COALESCE_WINDOW,
            state: Mutex::new(State { current, generation: 0, written: 0, frozen }),
            dirty: Notify::new(),
            write_lock: tokio::sync::Mutex::new(()),
            disk_writes: AtomicU64::new(0),
        }
    }

    /// `<user-data-dir>/coder.json`.
    pub fn open_in(user_data_dir: &Path) -> SettingsStore {
        SettingsStore::open(user_data_dir.join(FILE_NAME))
    }

    /// Replaces the coalescing window (tests).
    pub fn with_window(mut self, window: Duration) -> SettingsStore {
        self.window = window;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current settings, including writes not yet on disk.
    pub fn get(&self) -> Settings {
        Settings::from_map(&self.state.lock().unwrap().current)
    }

    /// Merges `patch` shallowly into the settings: its present keys replace what is there.
    /// Visible to [`SettingsStore::get`] at once; on disk after the coalescing window (or the
    /// next [`SettingsStore::flush`]).
    pub fn write(&self, patch: Settings) {
        {
            let mut st = self.state.lock().unwrap();
            st.current.extend(patch.into_map());
            st.generation += 1;
        }
        self.dirty.notify_one();
    }

    /// Writes pending changes now.
    pub async fn flush(&self) -> Result<(), WriteError> {
        let _writing = self.write_lock.lock().await;
        let (generation, bytes) = {
            let st = self.state.lock().unwrap();
            if st.generation == st.written || st.frozen {
                return Ok(());
            }
            let bytes = serde_json::to_vec_pretty(&st.current).expect("JSON values serialise");
            (st.generation, bytes)
        };
        let path = self.path.clone();
        let result = tokio::task::spawn_blocking(move || write_file(&path, &bytes))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        match result {
            Ok(()) => {
                self.disk_writes.fetch_add(1, Ordering::Relaxed);
                let mut st = self.state.lock().unwrap();
                st.written = st.written.max(generation);
                Ok(())
            }
            Err(source) => Err(WriteError { path: self.path.clone(), source }),
        }
    }

    /// The writer task: after each burst of writes, waits out the window and writes once;
    /// writes whatever is pending when `shutdown` is cancelled, then returns.
    pub async fn run(self: std::sync::Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = self.dirty.notified() => {}
                _ = shutdown.cancelled() => break,
            }
            tokio::select! {
                _ = tokio::time::sleep(self.window) => {}
                _ = shutdown.cancelled() => break,
            }
            if let Err(e) = self.flush().await {
                tracing::warn!("{e}");
            }
        }
        if let Err(e) = self.flush().await {
            tracing::warn!("{e}");
        }
    }

    /// How many times the file has been written.
    pub fn disk_writes(&self) -> u64 {
        self.disk_writes.load(Ordering::Relaxed)
    }
}

fn load(path: &Path) -> (Map<String, Value>, bool) {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (Map::new(), false),
        Err(e) => {
            tracing::warn!("Could not read {}: {e}; starting with empty settings and leaving it alone", path.display());
            return (Map::new(), true);
        }
    };
    let why = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => return (map, false),
        Ok(_) => "not a JSON object".to_string(),
        Err(e) => e.to_string(),
    };
    let aside = path.with_extension(format!("corrupt-{}", crate::util::now_ms()));
    match std::fs::rename(path, &aside) {
        Ok(()) => {
            tracing::warn!(
                "Settings file {} was unreadable ({why}); moved it to {} and started with empty settings",
                path.display(),
                aside.display()
            );
            (Map::new(), false)
        }
        Err(e) => {
            tracing::warn!(
                "Settings file {} is unreadable ({why}) and could not be moved aside ({e}); settings will not be saved",
                path.display()
            );
            (Map::new(), true)
        }
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    crate::util::atomic_write(path, bytes, 0o600)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::sync::Arc;

    use super::*;

    fn update(checked: u64, version: &str) -> Settings {
        Settings { update: Some(UpdateCache { checked, version: version.into() }), ..Default::default() }
    }

    fn query(pairs: &[(&str, &str)]) -> Settings {
        Settings {
            query: Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..Default::default()
        }
    }

    fn read_json(path: &Path) -> Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn writes_merge_shallowly_and_keep_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, r#"{"theirs": {"deep": [1, 2]}, "query": {"folder": "/old", "n": ["a", "b"]}}"#).unwrap();
        let s = SettingsStore::open(&path);
        // A `query` of another shape reads as absent but is kept.
        assert_eq!(s.get().query, None);
        assert_eq!(s.get().other["theirs"], serde_json::json!({"deep": [1, 2]}));

        s.write(update(5, "1.2.3"));
        s.flush().await.unwrap();
        let v = read_json(&path);
        assert_eq!(v["update"], serde_json::json!({"checked": 5, "version": "1.2.3"}));
        assert_eq!(v["query"], serde_json::json!({"folder": "/old", "n": ["a", "b"]}));
        assert_eq!(v["theirs"], serde_json::json!({"deep": [1, 2]}));

        // Shallow: a new query replaces the old one whole.
        s.write(query(&[("workspace", "/w")]));
        s.flush().await.unwrap();
        let v = read_json(&path);
        assert_eq!(v["query"], serde_json::json!({"workspace": "/w"}));
        assert_eq!(v["update"]["version"], "1.2.3");

        // Pretty-printed with two spaces, as code-server writes it.
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("{\n  \""), "{text}");
        // A fresh store sees the same thing.
        let again = SettingsStore::open(&path).get();
        assert_eq!(again.query, Some(BTreeMap::from([("workspace".to_string(), "/w".to_string())])));
        assert_eq!(again.update, Some(UpdateCache { checked: 5, version: "1.2.3".into() }));
    }

    #[tokio::test]
    async fn nothing_to_write_means_no_write() {
        let dir = tempfile::tempdir().unwrap();
        let s = SettingsStore::open_in(dir.path());
        s.flush().await.unwrap();
        assert_eq!(s.disk_writes(), 0);
        assert!(!s.path().exists());
        s.write(update(1, "1.0.0"));
        s.flush().await.unwrap();
        s.flush().await.unwrap();
        assert_eq!(s.disk_writes(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_writes_reaches_the_disk_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(SettingsStore::open_in(dir.path()));
        s.write(update(0, "0.0.1"));
        s.flush().await.unwrap();
        let inode = std::fs::metadata(s.path()).unwrap().ino();

        let token = CancellationToken::new();
        let writer = tokio::spawn(s.clone().run(token.clone()));
        // A hundred concurrent writers, each to its own key, plus one key they all fight over.
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move {
                    let mut patch = update(i, &format!("1.0.{i}"));
                    patch.other.insert(format!("k{i}"), Value::from(i));
                    s.write(patch);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        // Long after the window: exactly one more write, holding every update.
        tokio::time::sleep(COALESCE_WINDOW * 10).await;
        assert_eq!(s.disk_writes(), 2);
        let v = read_json(s.path());
        for i in 0..100 {
            assert_eq!(v[format!("k{i}")], i, "update {i} was lost");
        }
        assert_eq!(v["update"], serde_json::to_value(s.get().update.unwrap()).unwrap());
        // The file was replaced (rename), not rewritten in place, and no temporary is left.
        assert_ne!(std::fs::metadata(s.path()).unwrap().ino(), inode);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        // A write just before shutdown is not lost to the window.
        s.write(query(&[("folder", "/last")]));
        token.cancel();
        writer.await.unwrap();
        assert_eq!(s.disk_writes(), 3);
        assert_eq!(read_json(s.path())["query"]["folder"], "/last");
    }

    #[tokio::test]
    async fn concurrent_writers_on_many_threads_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(SettingsStore::open_in(dir.path()).with_window(Duration::ZERO));
        let token = CancellationToken::new();
        let writer = tokio::spawn(s.clone().run(token.clone()));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let mut patch = Settings::default();
                        patch.other.insert(format!("t{t}-{i}"), Value::Bool(true));
                        s.write(patch);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        token.cancel();
        writer.await.unwrap();
        let v = read_json(s.path());
        assert_eq!(v.as_object().unwrap().len(), 8 * 50);
    }

    #[test]
    fn a_corrupt_file_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        for bad in ["{not json", "[1, 2]"] {
            std::fs::write(&path, bad).unwrap();
            let s = SettingsStore::open(&path);
            assert_eq!(s.get(), Settings::default());
            assert!(!path.exists());
            let aside: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.to_string_lossy().contains(".corrupt-"))
                .collect();
            assert_eq!(aside.len(), 1);
            assert_eq!(std::fs::read_to_string(&aside[0]).unwrap(), bad, "the old contents are kept");
            std::fs::remove_file(&aside[0]).unwrap();
        }
    }

    #[tokio::test]
    async fn a_file_that_cannot_be_read_is_never_overwritten() {
        // Something we cannot read as a file (here a directory, which fails even for root).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("precious"), "data").unwrap();
        let s = SettingsStore::open(&path);
        s.write(update(1, "1.0.0"));
        assert_eq!(s.get().update.unwrap().version, "1.0.0", "settings still work in memory");
        s.flush().await.unwrap();
        assert_eq!(s.disk_writes(), 0);
        assert_eq!(std::fs::read_to_string(path.join("precious")).unwrap(), "data");
    }

    #[tokio::test]
    async fn write_failures_are_reported_and_retried() {
        let dir = tempfile::tempdir().unwrap();
        let s = SettingsStore::open(dir.path().join("missing/coder.json"));
        s.write(update(1, "1.0.0"));
        let e = s.flush().await.unwrap_err();
        assert!(e.to_string().starts_with("Failed to write "), "{e}");
        std::fs::create_dir(dir.path().join("missing")).unwrap();
        s.flush().await.unwrap();
        assert_eq!(s.disk_writes(), 1);
    }
}
