//! Logging (human-readable text by default, JSON for log pipelines) and metrics.
//!
//! The level comes from `RUST_LOG` (default `info`). Secrets are never logged: the
//! types that hold them redact themselves in `Debug`.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

mod metrics;

pub use metrics::{Exposition, Metrics};

/// Installs the global subscriber; call once, first thing.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_writer(|| OneLine(std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// A text log writer that keeps each event on one line: an error that spans lines (a
/// Rego excerpt, a chain of causes) would otherwise break `grep` and every log shipper
/// that reads a line as an event. Line breaks inside an event become ` | `.
struct OneLine<W>(W);

impl<W: std::io::Write> std::io::Write for OneLine<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let (body, end) = match buf.strip_suffix(b"\n") {
            Some(body) => (body, &b"\n"[..]),
            None => (buf, &b""[..]),
        };
        if !body.contains(&b'\n') {
            return self.0.write(buf);
        }
        let text = String::from_utf8_lossy(body);
        let mut line = one_line(&text).into_bytes();
        line.extend_from_slice(end);
        self.0.write_all(&line)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Text on one line: its lines, trimmed and without the empty ones, joined by ` | `.
pub fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "|")
        .collect::<Vec<_>>()
        .join(" | ")
}

/// An error for a person: one line, its causes after colons (each said once, as crates
/// often repeat their source in their own message).
pub fn sentence(e: &(dyn std::error::Error + '_)) -> String {
    let mut text = one_line(&e.to_string());
    let mut source = e.source();
    while let Some(cause) = source {
        let said = one_line(&cause.to_string());
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

/// Makes ring rustls's process-wide crypto provider, before any TLS client exists.
pub fn install_crypto_provider() {
    // Fails only if a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The innermost cause of an error, on one line: what a person can act on ("connection
/// refused") without the wrapping layers' type names.
pub fn root_cause(e: &(dyn std::error::Error + '_)) -> String {
    let mut inner = e;
    while let Some(cause) = inner.source() {
        inner = cause;
    }
    one_line(&inner.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn a_multi_line_event_is_written_as_one_line() {
        let mut out = OneLine(Vec::new());
        out.write_all(b"WARN reload failed: a.rego:3:\n  |\n3 | allow if {\n\nerror: x\n")
            .unwrap();
        assert_eq!(
            String::from_utf8(out.0).unwrap(),
            "WARN reload failed: a.rego:3: | 3 | allow if { | error: x\n"
        );
    }
}
