//! Logging: human-readable text by default, JSON for log pipelines.
//!
//! The level comes from `RUST_LOG` (default `info`). Secrets are never logged: the
//! types that hold them redact themselves in `Debug`.

use tracing_subscriber::EnvFilter;

use prometheus_client::metrics::family::Family;

use crate::config::LogFormat;
use crate::engine::Decisions;

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

/// salve's Prometheus metrics, served at `/metrics`.
pub struct Metrics {
    registry: prometheus_client::registry::Registry,
    reload_successful: prometheus_client::metrics::gauge::Gauge,
    reload_success_time: prometheus_client::metrics::gauge::Gauge,
    rules_loaded: prometheus_client::metrics::gauge::Gauge,
    policy_info: Family<Vec<(String, String)>, prometheus_client::metrics::gauge::Gauge>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric, named as Prometheus and Alertmanager name theirs.
    pub fn new() -> Metrics {
        let mut registry = prometheus_client::registry::Registry::default();
        let reload_successful = prometheus_client::metrics::gauge::Gauge::default();
        let reload_success_time = prometheus_client::metrics::gauge::Gauge::default();
        registry.register(
            "salve_config_last_reload_successful",
            "Whether the last reload of rules and policy succeeded (1) or kept the old set (0)",
            reload_successful.clone(),
        );
        registry.register(
            "salve_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful reload of rules and policy",
            reload_success_time.clone(),
        );
        let rules_loaded = prometheus_client::metrics::gauge::Gauge::default();
        registry.register(
            "salve_rules_loaded",
            "Remediation rules in force (0 means salve records alerts but remediates none)",
            rules_loaded.clone(),
        );
        let policy_info = Family::default();
        registry.register(
            "salve_policy",
            "The policy set in force: 1, labelled with its hash and the directory's version",
            policy_info.clone(),
        );
        Metrics {
            registry,
            reload_successful,
            reload_success_time,
            rules_loaded,
            policy_info,
        }
    }

    /// Records a reload's outcome and describes the set now in force (after a failed
    /// reload, still the old one).
    pub fn reloaded(&self, ok: bool, in_force: &Decisions) {
        self.reload_successful.set(i64::from(ok));
        if ok {
            self.reload_success_time.set(chrono::Utc::now().timestamp());
        }
        self.rules_loaded
            .set(i64::try_from(in_force.rules.rules.len()).unwrap_or(i64::MAX));
        self.policy_info.clear();
        self.policy_info
            .get_or_create(&vec![
                ("policy_hash".to_owned(), in_force.policy.hash.clone()),
                ("version".to_owned(), in_force.version.clone()),
            ])
            .set(1);
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
