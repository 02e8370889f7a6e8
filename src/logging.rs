//! code-server's log format (spec §1.2): `[<ISO-8601 UTC>] <level padded to 5> <message>`,
//! structured fields appended as a JSON object; info and below on stdout, warn and error on
//! stderr. Test harnesses grep these lines, so the format is part of the interface.
//!
//! A server also mirrors both streams to `<data dir>/coder-logs/code-server-stdout.log` and
//! `code-server-stderr.log`, as code-server's wrapper does (spec §8), where people look first;
//! each rotates at [`LOG_FILE_MAX`] bytes and keeps [`LOG_FILES_KEPT`] files, so the logs of a
//! long-running server stay bounded.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// Log verbosity, code-server's five levels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn parse(s: &str) -> Option<LogLevel> {
        Some(match s {
            "trace" => LogLevel::Trace,
            "debug" => LogLevel::Debug,
            "info" => LogLevel::Info,
            "warn" => LogLevel::Warn,
            "error" => LogLevel::Error,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// A log file rotates when it would grow past this.
pub const LOG_FILE_MAX: u64 = 10 * 1024 * 1024;
/// Files kept per stream: the current one and the rotated ones (`.1` is the newest).
pub const LOG_FILES_KEPT: usize = 10;

/// Installs the global subscriber. Our own crate logs at `level`; libraries only at warn and
/// above (or debug when we trace), so their chatter never drowns ours.
pub fn init(level: LogLevel) {
    let ours = to_filter(level);
    let libraries = if level >= LogLevel::Trace { LevelFilter::DEBUG } else { LevelFilter::WARN };
    let filter = Targets::new().with_target("code_server", ours).with_default(libraries.min(ours));
    let layer = tracing_subscriber::fmt::layer().event_format(CodeServerFormat).with_writer(Streams);
    // A second init (tests calling main paths twice) keeps the first subscriber.
    let _ = tracing_subscriber::registry().with(layer).with(filter).try_init();
}

/// From now on, every line is also appended to the rotating log files in `dir` (a server's
/// `<data dir>/coder-logs`, made 0700). A directory that cannot be made is reported, and the
/// server logs to the terminal only.
pub fn mirror_to(dir: &Path) {
    match Files::open(dir) {
        Ok(files) => {
            let _ = FILES.set(files);
        }
        Err(e) => tracing::warn!("cannot write log files in {}: {}", dir.display(), crate::errno::describe(&e)),
    }
}

static FILES: std::sync::OnceLock<Files> = std::sync::OnceLock::new();

/// Where lines go: warn and error to stderr, the rest to stdout, each mirrored to its file.
struct Streams;

struct Files {
    stdout: Arc<Mutex<Rotating>>,
    stderr: Arc<Mutex<Rotating>>,
}

impl Files {
    fn open(dir: &Path) -> io::Result<Files> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        Ok(Files {
            stdout: Arc::new(Mutex::new(Rotating::open(dir.join("code-server-stdout.log"), LOG_FILE_MAX)?)),
            stderr: Arc::new(Mutex::new(Rotating::open(dir.join("code-server-stderr.log"), LOG_FILE_MAX)?)),
        })
    }
}

impl<'a> MakeWriter<'a> for Streams {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line { to_stderr: false, file: FILES.get().map(|f| f.stdout.clone()), buf: Vec::new() }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Line {
        let to_stderr = *meta.level() <= Level::WARN;
        let file = FILES.get().map(|f| if to_stderr { f.stderr.clone() } else { f.stdout.clone() });
        Line { to_stderr, file, buf: Vec::new() }
    }
}

/// One formatted line, written out whole when dropped (so lines from several threads never
/// interleave in the file).
pub struct Line {
    to_stderr: bool,
    file: Option<Arc<Mutex<Rotating>>>,
    buf: Vec<u8>,
}

impl Write for Line {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        // A closed terminal must not stop the server, nor a full disk: both are best effort.
        let _ = if self.to_stderr { io::stderr().write_all(&self.buf) } else { io::stdout().write_all(&self.buf) };
        if let Some(file) = &self.file {
            let _ = file.lock().unwrap().write_line(&self.buf);
        }
    }
}

/// A log file that rotates by size: `name` → `name.1` → … → `name.<kept-1>`, the oldest dropped.
pub struct Rotating {
    path: PathBuf,
    file: File,
    size: u64,
    max: u64,
}

impl Rotating {
    pub fn open(path: PathBuf, max: u64) -> io::Result<Rotating> {
        let file = OpenOptions::new().create(true).append(true).mode(0o600).open(&path)?;
        let size = file.metadata()?.len();
        Ok(Rotating { path, file, size, max })
    }

    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 > self.max {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let numbered = |n: usize| PathBuf::from(format!("{}.{n}", self.path.display()));
        for n in (1..LOG_FILES_KEPT - 1).rev() {
            let _ = std::fs::rename(numbered(n), numbered(n + 1));
        }
        std::fs::rename(&self.path, numbered(1))?;
        self.file = OpenOptions::new().create(true).append(true).mode(0o600).open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

fn to_filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Trace => LevelFilter::TRACE,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Error => LevelFilter::ERROR,
    }
}

/// One line in code-server's format, for messages printed before logging is set up.
pub fn line(level: &str, message: &str) -> String {
    format!("[{}] {level:<5} {message}", crate::util::iso8601(crate::util::now_ms()))
}

struct CodeServerFormat;

impl<S, N> FormatEvent<S, N> for CodeServerFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let level = match *event.metadata().level() {
            Level::TRACE => "trace",
            Level::DEBUG => "debug",
            Level::INFO => "info",
            Level::WARN => "warn",
            Level::ERROR => "error",
        };
        let mut fields = Fields::default();
        event.record(&mut fields);
        write!(w, "[{}] {level:<5} {}", crate::util::iso8601(crate::util::now_ms()), fields.message)?;
        if !fields.extra.is_empty() {
            write!(w, " {}", serde_json::Value::Object(fields.extra))?;
        }
        writeln!(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_files_rotate_and_stay_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("code-server-stdout.log");
        let mut log = Rotating::open(path.clone(), 100).unwrap();
        for i in 0..200 {
            log.write_line(format!("line {i:03} of forty bytes, or close enough\n").as_bytes()).unwrap();
        }
        let mut names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names.len(), LOG_FILES_KEPT, "{names:?}");
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            assert!(entry.unwrap().metadata().unwrap().len() <= 100);
        }
        let newest = std::fs::read_to_string(&path).unwrap();
        assert!(newest.ends_with("line 199 of forty bytes, or close enough\n"), "{newest}");
        let previous = std::fs::read_to_string(format!("{}.1", path.display())).unwrap();
        assert!(previous.contains("line 197"), "{previous}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    extra: serde_json::Map<String, serde_json::Value>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.extra.insert(field.name().to_string(), value.into());
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.extra.insert(field.name().to_string(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.extra.insert(field.name().to_string(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.extra.insert(field.name().to_string(), value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.extra.insert(field.name().to_string(), format!("{value:?}").into());
        }
    }
}
