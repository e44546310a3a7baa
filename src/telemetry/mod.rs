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
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Makes ring rustls's process-wide crypto provider, before any TLS client exists.
pub fn install_crypto_provider() {
    // Fails only if a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
