//! Log output: plain lines on stderr, one per event, with every secret
//! value scrubbed from the text before it is written (whatever produced it,
//! at any level).

use std::fmt;
use std::io::{self, Write};
use std::sync::Arc;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// Shortest value treated as a secret; shorter ones would mangle ordinary words.
const MIN_SECRET_LEN: usize = 3;

/// Installs the logger: larder's own events at `level`, other crates' at warn.
pub fn init(level: Level, secrets: Vec<String>) {
    let secrets: Vec<String> = secrets
        .into_iter()
        .filter(|s| s.len() >= MIN_SECRET_LEN)
        .collect();
    let filter = Targets::new()
        .with_target("larder", level)
        .with_default(Level::WARN);
    let layer = tracing_subscriber::fmt::layer()
        .event_format(Plain)
        .with_writer(Scrubbed {
            secrets: Arc::new(secrets),
        });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init();
}

/// `message`, with `WARNING:`/`ERROR:`/`debug:` in front when not info.
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
        match *event.metadata().level() {
            Level::ERROR => write!(writer, "ERROR: ")?,
            Level::WARN => write!(writer, "WARNING: ")?,
            Level::DEBUG | Level::TRACE => write!(writer, "debug: ")?,
            Level::INFO => {}
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

struct Scrubbed {
    secrets: Arc<Vec<String>>,
}

impl<'a> MakeWriter<'a> for Scrubbed {
    type Writer = ScrubbedLine;

    fn make_writer(&'a self) -> ScrubbedLine {
        ScrubbedLine {
            secrets: Arc::clone(&self.secrets),
            buf: Vec::new(),
        }
    }
}

/// Collects one event and writes it, scrubbed, when dropped.
struct ScrubbedLine {
    secrets: Arc<Vec<String>>,
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
        let text = scrub(&String::from_utf8_lossy(&self.buf), &self.secrets);
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
    #[test]
    fn scrub_replaces_every_occurrence() {
        let s = super::scrub("key=abcd, again abcd", &["abcd".into()]);
        assert_eq!(s, "key=***, again ***");
    }
}
