//! code-server's log format (spec §1.2): `[<ISO-8601 UTC>] <level padded to 5> <message>`,
//! structured fields appended as a JSON object; info and below on stdout, warn and error on
//! stderr. Test harnesses grep these lines, so the format is part of the interface.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::cli::LogLevel;

/// Installs the global subscriber. Our own crate logs at `level`; libraries only at warn and
/// above (or debug when we trace), so their chatter never drowns ours.
pub fn init(level: LogLevel) {
    let ours = to_filter(level);
    let libraries = if level >= LogLevel::Trace { LevelFilter::DEBUG } else { LevelFilter::WARN };
    let filter = Targets::new().with_target("code_server", ours).with_default(libraries.min(ours));
    let writer = std::io::stderr.with_max_level(Level::WARN).or_else(std::io::stdout);
    let layer = tracing_subscriber::fmt::layer().event_format(CodeServerFormat).with_writer(writer);
    // A second init (tests calling main paths twice) keeps the first subscriber.
    let _ = tracing_subscriber::registry().with(layer).with(filter).try_init();
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
