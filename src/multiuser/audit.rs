//! The audit log: every security-relevant event (MULTIUSER.md, "Audit"), written off the
//! request path to a file sink (JSON lines, one file per UTC day, mode 0600), the database, or
//! both.
//!
//! Nothing is dropped silently: [`Audit::record`] queues without a bound; a sink that fails is
//! logged (once per outage) and retried with back-off while events keep queueing; at shutdown
//! [`Audit::close`] writes what is queued, and whatever a sink still refuses after the deadline
//! is printed to the log, record by record, so it is not lost either.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::store::{AuditEvent, AuditQuery, StoreError, UserStore};
use crate::util::{hex, now_ms, random_bytes};

/// Event types, as stored and filtered on.
pub mod kind {
    pub const LOGIN: &str = "login";
    pub const LOGOUT: &str = "logout";
    pub const SESSION_CREATED: &str = "session.created";
    pub const SESSION_REVOKED: &str = "session.revoked";
    pub const USER_CREATED: &str = "user.created";
    pub const USER_CHANGED: &str = "user.changed";
    pub const USER_DISABLED: &str = "user.disabled";
    pub const USER_ENABLED: &str = "user.enabled";
    pub const USER_DELETED: &str = "user.deleted";
    pub const PASSWORD_CHANGED: &str = "password.changed";
    pub const TOKEN_CREATED: &str = "token.created";
    pub const TOKEN_REVOKED: &str = "token.revoked";
    pub const WORKSPACE_STARTED: &str = "workspace.started";
    pub const WORKSPACE_STOPPED: &str = "workspace.stopped";
    pub const PROXY_REFUSED: &str = "proxy.refused";
    pub const QUOTA: &str = "quota";
    pub const MEMORY: &str = "memory";
    pub const ALL: &[&str] = &[
        LOGIN,
        LOGOUT,
        SESSION_CREATED,
        SESSION_REVOKED,
        USER_CREATED,
        USER_CHANGED,
        USER_DISABLED,
        USER_ENABLED,
        USER_DELETED,
        PASSWORD_CHANGED,
        TOKEN_CREATED,
        TOKEN_REVOKED,
        WORKSPACE_STARTED,
        WORKSPACE_STOPPED,
        PROXY_REFUSED,
        QUOTA,
        MEMORY,
    ];
}

/// An event about to be recorded; [`Audit::record`] gives it its id and time.
#[derive(Debug, Clone, Default)]
pub struct Event {
    pub kind: &'static str,
    pub success: bool,
    pub user_id: Option<String>,
    pub username: Option<String>,
    pub actor: Option<String>,
    pub ip: Option<String>,
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl Event {
    pub fn new(kind: &'static str, success: bool) -> Event {
        Event { kind, success, ..Event::default() }
    }

    pub fn user(mut self, id: &str, name: &str) -> Event {
        self.user_id = Some(id.to_string());
        self.username = Some(name.to_string());
        self
    }

    pub fn actor(mut self, actor: Option<&str>) -> Event {
        self.actor = actor.map(str::to_string);
        self
    }

    pub fn ip(mut self, ip: Option<&str>) -> Event {
        self.ip = ip.map(str::to_string);
        self
    }

    pub fn detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Event {
        self.details.insert(key.to_string(), value.into());
        self
    }
}

enum Msg {
    Event(AuditEvent),
    Flush(FlushRequest),
}

/// Reply once everything queued before it is written, or at `deadline`; then, with
/// `print_unwritten` (at shutdown), print what a sink still refuses to the log.
struct FlushRequest {
    deadline: tokio::time::Instant,
    print_unwritten: bool,
    done: oneshot::Sender<()>,
}

/// The audit log's handle: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Audit {
    tx: Option<mpsc::UnboundedSender<Msg>>,
    file_dir: Option<PathBuf>,
    database: Option<Arc<dyn UserStore>>,
}

/// How long [`Audit::close`] keeps retrying a failing sink.
pub const CLOSE_DEADLINE: Duration = Duration::from_secs(5);

impl Audit {
    /// Audit off (`features.audit-logging: false`): nothing is recorded.
    pub fn off() -> Audit {
        Audit { tx: None, file_dir: None, database: None }
    }

    /// Starts the writer: to files in `file_dir`, to `database`, or both.
    pub fn start(file_dir: Option<PathBuf>, database: Option<Arc<dyn UserStore>>) -> Result<Audit, StoreError> {
        if let Some(dir) = &file_dir {
            crate::private_dir::ensure(dir).map_err(|e| StoreError::Other(format!("audit directory: {e}")))?;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = Writer { file_dir: file_dir.clone(), database: database.clone() };
        tokio::spawn(writer.run(rx));
        Ok(Audit { tx: Some(tx), file_dir, database })
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues `event`.
    pub fn record(&self, event: Event) {
        let Some(tx) = &self.tx else { return };
        let record = AuditEvent {
            id: hex(&random_bytes::<16>()),
            at: now_ms() as i64,
            kind: event.kind.to_string(),
            status: if event.success { "success" } else { "failure" }.to_string(),
            user_id: event.user_id,
            username: event.username,
            actor: event.actor,
            ip: event.ip,
            details: serde_json::Value::Object(event.details),
        };
        if tx.send(Msg::Event(record.clone())).is_err() {
            // The writer is gone (after close): the log keeps it.
            tracing::error!(target: "audit", "Audit event after shutdown: {}", serde_json::to_string(&record).unwrap_or_default());
        }
    }

    /// Waits until everything recorded so far is written (or `deadline` passed).
    pub async fn flush(&self, deadline: Duration) {
        self.flush_with(deadline, false).await
    }

    async fn flush_with(&self, deadline: Duration, print_unwritten: bool) {
        let Some(tx) = &self.tx else { return };
        let (done, wait) = oneshot::channel();
        let req = FlushRequest { deadline: tokio::time::Instant::now() + deadline, print_unwritten, done };
        if tx.send(Msg::Flush(req)).is_ok() {
            let _ = wait.await;
        }
    }

    /// Flushes at shutdown (see the module docs).
    pub async fn close(&self) {
        self.flush_with(CLOSE_DEADLINE, true).await;
    }

    /// Events, newest first: from the database when it is a sink, else from the files.
    pub async fn query(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        if let Some(db) = &self.database {
            return db.query_audit(q).await;
        }
        match &self.file_dir {
            Some(dir) => {
                let dir = dir.clone();
                let q = q.clone();
                tokio::task::spawn_blocking(move || query_files(&dir, &q))
                    .await
                    .map_err(|e| StoreError::Other(e.to_string()))?
            }
            None => Ok(vec![]),
        }
    }
}

struct Writer {
    file_dir: Option<PathBuf>,
    database: Option<Arc<dyn UserStore>>,
}

/// One sink's queue and its failure state.
struct Pending {
    events: Vec<AuditEvent>,
    failing: bool,
    retry_in: Duration,
}

impl Pending {
    fn new() -> Pending {
        Pending { events: vec![], failing: false, retry_in: Duration::from_millis(250) }
    }
}

impl Writer {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let mut file = Pending::new();
        let mut db = Pending::new();
        let mut flushes: Vec<FlushRequest> = vec![];
        loop {
            // Wake for the next message, a retry of a failing sink, or a flush's deadline.
            let mut wake: Option<tokio::time::Instant> = None;
            let now = tokio::time::Instant::now();
            for p in [&file, &db] {
                if p.failing {
                    wake = Some(wake.map_or(now + p.retry_in, |w| w.min(now + p.retry_in)));
                }
            }
            if let Some(first) = flushes.iter().map(|f| f.deadline).min() {
                wake = Some(wake.map_or(first, |w| w.min(first)));
            }
            let msg = match wake {
                Some(at) => tokio::select! {
                    m = rx.recv() => m.map(Some),
                    _ = tokio::time::sleep_until(at) => Some(None),
                },
                None => rx.recv().await.map(Some),
            };
            let Some(msg) = msg else {
                // Every handle is gone: write what is left, then stop.
                self.write_all(&mut file, &mut db).await;
                print_unwritten(&mut file, &mut db);
                return;
            };
            if let Some(msg) = msg {
                self.take(msg, &mut file, &mut db, &mut flushes);
                // Take whatever else is queued, so a burst is one write.
                while let Ok(msg) = rx.try_recv() {
                    self.take(msg, &mut file, &mut db, &mut flushes);
                }
            }
            self.write_all(&mut file, &mut db).await;
            answer_flushes(&mut flushes, &mut file, &mut db);
        }
    }

    fn take(&self, msg: Msg, file: &mut Pending, db: &mut Pending, flushes: &mut Vec<FlushRequest>) {
        match msg {
            Msg::Event(ev) => {
                if self.file_dir.is_some() {
                    file.events.push(ev.clone());
                }
                if self.database.is_some() {
                    db.events.push(ev);
                }
            }
            Msg::Flush(req) => flushes.push(req),
        }
    }

    async fn write_all(&self, file: &mut Pending, db: &mut Pending) {
        if let Some(dir) = &self.file_dir
            && !file.events.is_empty()
        {
            let dir = dir.clone();
            let batch = file.events.clone();
            let result = tokio::task::spawn_blocking(move || append_files(&dir, &batch))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
            settle(file, result.map_err(|e| crate::errno::describe(&e)), "file");
        }
        if let Some(store) = &self.database
            && !db.events.is_empty()
        {
            let result = store.append_audit(&db.events).await;
            settle(db, result.map_err(|e| e.to_string()), "database");
        }
    }
}

/// Answers every flush when nothing is pending; else those past their deadline.
fn answer_flushes(flushes: &mut Vec<FlushRequest>, file: &mut Pending, db: &mut Pending) {
    if file.events.is_empty() && db.events.is_empty() {
        for f in flushes.drain(..) {
            let _ = f.done.send(());
        }
        return;
    }
    let now = tokio::time::Instant::now();
    let (due, keep): (Vec<_>, Vec<_>) = flushes.drain(..).partition(|f| f.deadline <= now);
    *flushes = keep;
    if due.iter().any(|f| f.print_unwritten) {
        print_unwritten(file, db);
    }
    for f in due {
        let _ = f.done.send(());
    }
}

/// The last resort at shutdown: each event a sink would not take goes to the log.
fn print_unwritten(file: &mut Pending, db: &mut Pending) {
    for (sink, p) in [("file", file), ("database", db)] {
        for ev in p.events.drain(..) {
            tracing::error!(
                target: "audit",
                "Audit event not written to the {sink} sink: {}",
                serde_json::to_string(&ev).unwrap_or_default()
            );
        }
    }
}

fn settle(p: &mut Pending, result: Result<(), String>, sink: &str) {
    match result {
        Ok(()) => {
            if p.failing {
                tracing::info!("The audit {sink} sink works again; {} queued event(s) written", p.events.len());
            }
            p.events.clear();
            p.failing = false;
            p.retry_in = Duration::from_millis(250);
        }
        Err(e) => {
            if !p.failing {
                tracing::warn!("Audit {sink} sink failed ({e}); {} event(s) queued, retrying", p.events.len());
            }
            p.failing = true;
            p.retry_in = (p.retry_in * 2).min(Duration::from_secs(5));
        }
    }
}

/// `audit-YYYY-MM-DD.jsonl` for a time (UTC).
fn file_for(dir: &Path, at_ms: i64) -> PathBuf {
    let date = crate::util::iso8601(at_ms.max(0) as u64);
    dir.join(format!("audit-{}.jsonl", &date[..10]))
}

/// Appends each event to its day's file (created 0600), then syncs.
fn append_files(dir: &Path, events: &[AuditEvent]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut by_file: Vec<(PathBuf, Vec<u8>)> = vec![];
    for ev in events {
        let path = file_for(dir, ev.at);
        let mut line = serde_json::to_vec(ev).expect("audit events serialise");
        line.push(b'\n');
        match by_file.iter_mut().find(|(p, _)| *p == path) {
            Some((_, buf)) => buf.extend_from_slice(&line),
            None => by_file.push((path, line)),
        }
    }
    for (path, buf) in by_file {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(&path)?;
        f.write_all(&buf)?;
        f.sync_data()?;
    }
    Ok(())
}

/// The file sink's events matching `q`, newest first.
fn query_files(dir: &Path, q: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
    let io = |e: std::io::Error| StoreError::Other(format!("audit files in {}: {}", dir.display(), e));
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("audit-") && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    let upper = q.to.map(|t| file_for(dir, t));
    let lower = q.from.map(|f| file_for(dir, f));
    let mut out = vec![];
    for path in files.iter().rev() {
        if upper.as_ref().is_some_and(|u| path > u) {
            continue;
        }
        if lower.as_ref().is_some_and(|l| path < l) {
            break;
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let mut day: Vec<AuditEvent> =
            text.lines().filter_map(|l| serde_json::from_str(l).ok()).filter(|e| matches(e, q)).collect();
        day.sort_by(|a, b| (b.at, &b.id).cmp(&(a.at, &a.id)));
        out.extend(day);
        if out.len() >= q.limit as usize {
            break;
        }
    }
    out.truncate(q.limit as usize);
    Ok(out)
}

fn matches(e: &AuditEvent, q: &AuditQuery) -> bool {
    q.user_id.as_ref().is_none_or(|u| e.user_id.as_ref() == Some(u))
        && q.kind.as_ref().is_none_or(|k| &e.kind == k)
        && q.status.as_ref().is_none_or(|s| &e.status == s)
        && q.from.is_none_or(|f| e.at >= f)
        && q.to.is_none_or(|t| e.at <= t)
        && q.before.as_ref().is_none_or(|(at, id)| e.at < *at || (e.at == *at && e.id < *id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_file_sink_writes_a_private_file_per_day_and_answers_queries() {
        let dir = tempfile::tempdir().unwrap();
        let audit_dir = dir.path().join("audit");
        let audit = Audit::start(Some(audit_dir.clone()), None).unwrap();
        for i in 0..5 {
            audit.record(Event::new(kind::LOGIN, i % 2 == 0).user(&format!("u{i}"), "alice").ip(Some("10.0.0.1")));
        }
        audit.flush(Duration::from_secs(5)).await;
        let files: Vec<_> = std::fs::read_dir(&audit_dir).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(files.len(), 1, "{files:?}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&files[0]).unwrap().lines().count(), 5);
        let q = AuditQuery { status: Some("failure".into()), limit: 10, ..Default::default() };
        let failures = audit.query(&q).await.unwrap();
        assert_eq!(failures.len(), 2);
        assert!(failures[0].at >= failures[1].at, "newest first");
        let all = audit.query(&AuditQuery { limit: 3, ..Default::default() }).await.unwrap();
        assert_eq!(all.len(), 3);
        let last = all.last().unwrap();
        let rest = audit
            .query(&AuditQuery { limit: 10, before: Some((last.at, last.id.clone())), ..Default::default() })
            .await
            .unwrap();
        assert_eq!(rest.len(), 2, "the cursor continues where the page ended");
        assert!(rest.iter().all(|e| !all.iter().any(|a| a.id == e.id)));
    }

    #[tokio::test]
    async fn a_failing_sink_keeps_its_events_and_writes_them_when_it_heals() {
        let dir = tempfile::tempdir().unwrap();
        let audit_dir = dir.path().join("audit");
        let audit = Audit::start(Some(audit_dir.clone()), None).unwrap();
        // The directory becomes a file: every append fails.
        std::fs::remove_dir(&audit_dir).unwrap();
        std::fs::write(&audit_dir, b"in the way").unwrap();
        audit.record(Event::new(kind::USER_CREATED, true).user("u1", "bob"));
        audit.flush(Duration::from_millis(300)).await;
        std::fs::remove_file(&audit_dir).unwrap();
        crate::private_dir::ensure(&audit_dir).unwrap();
        audit.flush(Duration::from_secs(10)).await;
        let files: Vec<_> = std::fs::read_dir(&audit_dir).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(files.len(), 1);
        assert!(std::fs::read_to_string(&files[0]).unwrap().contains("\"bob\""));
    }
}
