//! Log lines in logfmt (`ts=... level=info msg="..." key=value`), the default format of the
//! Prometheus ecosystem, for `--log.format=logfmt`.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats each event as one logfmt line.
#[derive(Debug, Default, Clone, Copy)]
pub struct Logfmt;

impl<S, N> FormatEvent<S, N> for Logfmt
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
        let meta = event.metadata();
        let ts = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        let mut line = format!(
            "ts={ts} level={} caller={}",
            meta.level().as_str().to_ascii_lowercase(),
            meta.module_path().unwrap_or(meta.target())
        );
        let mut visitor = Fields {
            message: None,
            rest: String::new(),
        };
        event.record(&mut visitor);
        if let Some(message) = visitor.message {
            line.push_str(" msg=");
            push_value(&mut line, &message);
        }
        line.push_str(&visitor.rest);
        writeln!(writer, "{line}")
    }
}

struct Fields {
    message: Option<String>,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record(field, format!("{value:?}"));
    }
}

impl Fields {
    fn record(&mut self, field: &Field, value: String) {
        if field.name() == "message" {
            self.message = Some(value);
            return;
        }
        let _ = write!(self.rest, " {}=", field.name());
        push_value(&mut self.rest, &value);
    }
}

/// Appends a value, quoted when it holds spaces, quotes, `=` or nothing at all.
fn push_value(out: &mut String, value: &str) {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| !c.is_whitespace() && c != '"' && c != '=' && !c.is_control());
    if plain {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writes_one_logfmt_line_per_event() {
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(Logfmt)
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                group = "support",
                account = "inbox 1",
                "started failing: auth_rejected"
            );
            tracing::warn!(count = 3, "plain");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].starts_with("ts=") && lines[0].contains(" level=info "),
            "{text}"
        );
        assert!(
            lines[0].ends_with(
                "msg=\"started failing: auth_rejected\" group=support account=\"inbox 1\""
            ),
            "{text}"
        );
        assert!(
            lines[1]
                .ends_with("level=warn caller=mailbox_exporter::logfmt::tests msg=plain count=3"),
            "{text}"
        );
    }

    #[test]
    fn quotes_what_needs_quoting() {
        let mut s = String::new();
        push_value(&mut s, "a \"b\"\nc=d");
        assert_eq!(s, r#""a \"b\"\nc=d""#);
        let mut s = String::new();
        push_value(&mut s, "");
        assert_eq!(s, "\"\"");
    }
}
