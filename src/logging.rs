//! Log output on stderr, one line per event, as plain text or (with
//! `log_format: json`) one JSON object per line. Every secret value is
//! scrubbed from the line before it is written, whatever produced it, at
//! any level; in JSON, from each value before encoding and again, in its
//! escaped form, from the encoded line.
//!
//! A JSON line holds `timestamp` (RFC 3339, UTC), `level` (`error`, `warn`,
//! `info`, `debug`), `message` (the text line's words), the run's `mode` and
//! `key`, and the event's own fields: progress lines carry their numbers,
//! and the last line (`"event": "summary"`) the result file's fields.

use std::fmt;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::summary::Summary;

/// Shortest value treated as a secret; shorter ones would mangle ordinary words.
const MIN_SECRET_LEN: usize = 3;

/// The tracing target of the run's summary, which only JSON logs show (the
/// text log has the mode's own closing line).
const SUMMARY_TARGET: &str = "larder::summary";

/// How lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// `message`, with `WARNING:`/`ERROR:`/`debug:` in front when not info.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Format {
    /// The `log_format` setting's value (`text` or `json`).
    pub fn named(value: &str) -> Format {
        if value.eq_ignore_ascii_case("json") {
            Format::Json
        } else {
            Format::Text
        }
    }
}

/// Installs the logger: larder's own events at `level`, other crates' at
/// warn. `context` (the mode, the key) goes on every JSON line.
pub fn init(
    level: Level,
    format: Format,
    secrets: Vec<String>,
    context: Vec<(&'static str, String)>,
) {
    let secrets: Arc<Vec<String>> = Arc::new(
        secrets
            .into_iter()
            .filter(|s| s.len() >= MIN_SECRET_LEN)
            .collect(),
    );
    let filter = Targets::new()
        .with_target("larder", level)
        .with_default(Level::WARN);
    let writer = Scrubbed {
        patterns: Arc::new(patterns(&secrets, format)),
    };
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    let _ = match format {
        Format::Text => tracing_subscriber::registry()
            .with(filter)
            .with(layer.event_format(Plain))
            .try_init(),
        Format::Json => tracing_subscriber::registry()
            .with(filter)
            .with(layer.event_format(Json { context, secrets }))
            .try_init(),
    };
}

/// Logs the run's summary: the result file's fields, for JSON logs.
pub fn summary(report: &Summary) {
    let json = serde_json::to_string(report).unwrap_or_default();
    tracing::info!(target: SUMMARY_TARGET, event = "summary", summary = %json, "summary");
}

/// Writes an error from before the logger exists (a configuration error),
/// scrubbed, as one line in `format`; `detail` is a second sentence.
pub fn early_error(format: Format, message: &str, detail: &str, secrets: &[String]) {
    let secrets: Vec<String> = secrets
        .iter()
        .filter(|s| s.len() >= MIN_SECRET_LEN)
        .cloned()
        .collect();
    let text = match format {
        Format::Text => format!(
            "larder: {}\nlarder: {}\n",
            scrub(message, &secrets),
            scrub(detail, &secrets)
        ),
        Format::Json => {
            let mut object = Map::new();
            object.insert("timestamp".into(), timestamp().into());
            object.insert("level".into(), "error".into());
            object.insert("message".into(), scrub(message, &secrets).into());
            object.insert("hint".into(), scrub(detail, &secrets).into());
            let line = Value::Object(object).to_string();
            format!("{}\n", scrub(&line, &patterns(&secrets, format)))
        }
    };
    let _ = io::stderr().lock().write_all(text.as_bytes());
}

/// What the writer removes from each line: the secrets as they appear in
/// the format's text (in JSON, escaped as JSON strings escape them).
fn patterns(secrets: &[String], format: Format) -> Vec<String> {
    let mut patterns: Vec<String> = secrets.to_vec();
    if format == Format::Json {
        for secret in secrets {
            let quoted = Value::String(secret.clone()).to_string();
            let escaped = quoted[1..quoted.len() - 1].to_string();
            if escaped != *secret {
                // The raw form cannot occur inside a JSON string, and may
                // match across its quotes: replacing it would break the line.
                patterns.retain(|p| p != secret);
                patterns.push(escaped);
            }
        }
    }
    patterns
}

fn timestamp() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// `message`, with `WARNING:`/`ERROR:`/`debug:` in front when not info.
/// Progress lines show their message only (their fields are for JSON); the
/// summary is not shown (the text log has the mode's closing line).
struct Plain;

impl<S, N> FormatEvent<S, N> for Plain
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let target = event.metadata().target();
        if target == SUMMARY_TARGET {
            return Ok(());
        }
        match *event.metadata().level() {
            Level::ERROR => write!(writer, "ERROR: ")?,
            Level::WARN => write!(writer, "WARNING: ")?,
            Level::DEBUG | Level::TRACE => write!(writer, "debug: ")?,
            Level::INFO => {}
        }
        if target == crate::progress::TARGET {
            let mut message = Message(String::new());
            event.record(&mut message);
            write!(writer, "{}", message.0)?;
        } else {
            ctx.field_format().format_fields(writer.by_ref(), event)?;
        }
        writeln!(writer)
    }
}

/// An event's message alone.
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

/// One JSON object per event.
struct Json {
    context: Vec<(&'static str, String)>,
    secrets: Arc<Vec<String>>,
}

impl<S, N> FormatEvent<S, N> for Json
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let object = self.object(event);
        writeln!(writer, "{}", Value::Object(object))
    }
}

impl Json {
    fn object(&self, event: &Event<'_>) -> Map<String, Value> {
        let meta = event.metadata();
        let mut object = Map::new();
        object.insert("timestamp".into(), timestamp().into());
        object.insert("level".into(), level_name(*meta.level()).into());
        if !meta.target().starts_with("larder") {
            object.insert("target".into(), meta.target().into());
        }
        for (name, value) in &self.context {
            object.insert(name.to_string(), scrub(value, &self.secrets).into());
        }
        let mut fields = JsonFields {
            object,
            secrets: &self.secrets,
        };
        event.record(&mut fields);
        fields.object
    }
}

/// Collects an event's fields as JSON values, secrets scrubbed.
struct JsonFields<'a> {
    object: Map<String, Value>,
    secrets: &'a [String],
}

impl JsonFields<'_> {
    fn text(&mut self, field: &Field, text: &str) {
        if field.name() == "summary" && merge(&mut self.object, text, self.secrets) {
            return;
        }
        let text = scrub(text, self.secrets);
        self.object.insert(field.name().to_string(), text.into());
    }
}

/// Adds the fields of the JSON object `text` to `object`, secrets scrubbed;
/// false if `text` is no JSON object.
fn merge(object: &mut Map<String, Value>, text: &str, secrets: &[String]) -> bool {
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(text) else {
        return false;
    };
    for (name, mut value) in fields {
        scrub_value(&mut value, secrets);
        object.insert(name, value);
    }
    true
}

impl Visit for JsonFields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.text(field, &format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.object.insert(field.name().to_string(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.object.insert(field.name().to_string(), value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.object.insert(field.name().to_string(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.object.insert(field.name().to_string(), value.into());
    }
}

fn scrub_value(value: &mut Value, secrets: &[String]) {
    match value {
        Value::String(text) => *text = scrub(text, secrets),
        Value::Array(items) => items.iter_mut().for_each(|v| scrub_value(v, secrets)),
        Value::Object(map) => map.values_mut().for_each(|v| scrub_value(v, secrets)),
        _ => {}
    }
}

struct Scrubbed {
    patterns: Arc<Vec<String>>,
}

impl<'a> MakeWriter<'a> for Scrubbed {
    type Writer = ScrubbedLine;

    fn make_writer(&'a self) -> ScrubbedLine {
        ScrubbedLine {
            patterns: Arc::clone(&self.patterns),
            buf: Vec::new(),
        }
    }
}

/// Collects one event and writes it, scrubbed, when dropped.
struct ScrubbedLine {
    patterns: Arc<Vec<String>>,
    buf: Vec<u8>,
}

impl Write for ScrubbedLine {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for ScrubbedLine {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let text = scrub(&String::from_utf8_lossy(&self.buf), &self.patterns);
        let _ = io::stderr().lock().write_all(text.as_bytes());
    }
}

pub fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for secret in secrets {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "***");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_replaces_every_occurrence() {
        let s = super::scrub("key=abcd, again abcd", &["abcd".into()]);
        assert_eq!(s, "key=***, again ***");
    }

    #[test]
    fn json_lines_are_scrubbed_in_their_escaped_form_and_stay_json() {
        let secret = r#"pa"ss\word"#.to_string();
        let patterns = patterns(std::slice::from_ref(&secret), Format::Json);
        assert_eq!(patterns, vec![r#"pa\"ss\\word"#.to_string()]);
        let line = Value::Object(Map::from_iter([(
            "message".to_string(),
            Value::String(format!("key is {secret}")),
        )]))
        .to_string();
        let scrubbed = scrub(&line, &patterns);
        let back: Value = serde_json::from_str(&scrubbed).unwrap();
        assert_eq!(back["message"], "key is ***");
        // A plain secret is its own JSON form.
        assert_eq!(patterns_of("hunter2"), vec!["hunter2".to_string()]);
    }

    fn patterns_of(secret: &str) -> Vec<String> {
        patterns(&[secret.to_string()], Format::Json)
    }

    #[test]
    fn summary_fields_are_merged_and_scrubbed() {
        let secrets = vec!["hunter2".to_string()];
        let mut object = Map::new();
        object.insert("message".into(), "summary".into());
        let report = serde_json::json!({"result": "stored", "key": "k-hunter2", "files": 3});
        assert!(merge(&mut object, &report.to_string(), &secrets));
        assert_eq!(object["result"], "stored");
        assert_eq!(object["key"], "k-***");
        assert_eq!(object["files"], 3);
        assert_eq!(object["message"], "summary");
        assert!(!merge(&mut object, "not json", &secrets));
    }
}
