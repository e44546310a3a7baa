//! The policy directory as a live set: load aside, test, swap atomically, or keep the old.
//!
//! A reload (from `POST /-/reload`, SIGHUP, or a change to a file in the directory)
//! reads and compiles the new rules and Rego off the request path, runs the policy's
//! `test_*` rules, and only if everything loads and passes swaps the new set in with
//! one atomic pointer store. Otherwise salve keeps serving with the last good set and
//! says why (log, the reload reply, and `salve_config_last_reload_successful`).
//! Remediations already running hold their own snapshot, so they finish on the set
//! they started with.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::bundle::{Bundle, BundleError, FileKind};
use crate::engine::Decisions;
use crate::policy::testing::{self, Outcome};
use crate::policy::{PolicyError, PolicySet, RegoOptions};
use crate::rules::{RuleError, RuleSet};
use crate::telemetry::Metrics;

/// Why a policy directory was not (re)loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("policy directory: {0}")]
    Bundle(#[from] BundleError),
    #[error("rules: {0}")]
    Rules(#[from] RuleError),
    #[error("policy: {0}")]
    Policy(#[from] PolicyError),
    #[error("policy tests failed, so these guardrails are not used:\n{0}")]
    Tests(String),
}

/// Reads, compiles and tests a policy directory.
pub fn load_decisions(dir: &Path, rego: RegoOptions) -> Result<Decisions, LoadError> {
    let bundle = Bundle::read(dir)?;
    let rules = RuleSet::load(&bundle)?;
    let policy = PolicySet::load(&bundle, rego)?;
    let failures: Vec<String> = testing::run(&policy, &bundle)
        .into_iter()
        .filter_map(|t| match t.outcome {
            Outcome::Pass => None,
            Outcome::Fail => Some(format!("  FAIL: {} ({}:{})", t.name, t.file, t.line)),
            Outcome::Error(e) => Some(format!("  ERROR: {} ({}:{}): {e}", t.name, t.file, t.line)),
        })
        .collect();
    if !failures.is_empty() {
        return Err(LoadError::Tests(failures.join("\n")));
    }
    if rules.rules.is_empty() {
        warn!(
            "no remediation rules are loaded from {}: salve records and decides alerts but will not remediate any",
            dir.display()
        );
    }
    Ok(Decisions {
        version: bundle.hash(&[FileKind::Rules, FileKind::Rego, FileKind::Data]),
        rules,
        policy,
    })
}

/// What a successful reload did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadReport {
    pub version: String,
    pub policy_hash: String,
    pub rules: usize,
    /// False when the directory was unchanged (nothing swapped).
    pub changed: bool,
}

/// Owns the live set and reloads it.
pub struct Reloader {
    dir: PathBuf,
    rego: RegoOptions,
    current: Arc<ArcSwap<Decisions>>,
    serial: tokio::sync::Mutex<()>,
    metrics: Arc<Metrics>,
}

impl Reloader {
    /// Starts from an already loaded set.
    pub fn new(
        dir: &Path,
        rego: RegoOptions,
        initial: Decisions,
        metrics: Arc<Metrics>,
    ) -> Reloader {
        metrics.reloaded(true, &initial);
        Reloader {
            dir: dir.to_owned(),
            rego,
            current: Arc::new(ArcSwap::from_pointee(initial)),
            serial: tokio::sync::Mutex::new(()),
            metrics,
        }
    }

    /// The live set, shared with the engine.
    pub fn live(&self) -> Arc<ArcSwap<Decisions>> {
        self.current.clone()
    }

    /// The set in force now.
    pub fn current(&self) -> Arc<Decisions> {
        self.current.load_full()
    }

    /// Loads the directory aside and swaps it in if it loads and its tests pass.
    /// Reloads are serialised; the old set stays in force on any error.
    pub async fn reload(&self, trigger: &str) -> Result<ReloadReport, LoadError> {
        let _one_at_a_time = self.serial.lock().await;
        let (dir, rego) = (self.dir.clone(), self.rego);
        let loaded = tokio::task::spawn_blocking(move || load_decisions(&dir, rego))
            .await
            .unwrap_or_else(|e| Err(LoadError::Tests(format!("the loader panicked: {e}"))));
        match loaded {
            Ok(next) => {
                let changed = next.version != self.current.load().version;
                let report = ReloadReport {
                    version: next.version.clone(),
                    policy_hash: next.policy.hash.clone(),
                    rules: next.rules.rules.len(),
                    changed,
                };
                if changed {
                    self.current.store(Arc::new(next));
                }
                self.metrics.reloaded(true, &self.current.load());
                info!(trigger, changed, policy_hash = %report.policy_hash, rules = report.rules, "reload succeeded");
                Ok(report)
            }
            Err(e) => {
                self.metrics.reloaded(false, &self.current.load());
                warn!(trigger, error = %e, "reload failed; still serving the last good policy set");
                Err(e)
            }
        }
    }

    /// Reloads when a file in the directory changes (debounced), until `shutdown`.
    pub fn watch(
        self: Arc<Self>,
        shutdown: CancellationToken,
    ) -> notify::Result<tokio::task::JoinHandle<()>> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok_and(|e| !e.kind.is_access()) {
                    let _ = tx.send(());
                }
            })?;
        watcher.watch(&self.dir, RecursiveMode::Recursive)?;
        Ok(tokio::spawn(async move {
            let _keep_watching = watcher;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    got = rx.recv() => if got.is_none() { break },
                }
                // Editors write in bursts (temp file, rename, chmod): settle first.
                tokio::time::sleep(Duration::from_millis(300)).await;
                while rx.try_recv().is_ok() {}
                let _ = self.reload("file change").await;
            }
        }))
    }
}
