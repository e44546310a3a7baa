//! Wiring: load what decides, connect what acts, serve what listens.
//!
//! [`Salve::start`] is everything `salve serve` does, as a library call, so tests run
//! the real server on port 0 in-process. Start-up refuses (before listening) a policy
//! directory whose rules or Rego do not load, or whose policy tests fail.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;
use tracing::{info, warn};

use crate::api::{self, ApiState};
use crate::bundle::Bundle;
use crate::cluster::{Cluster, KubeCluster};
use crate::config::ServeSettings;
use crate::engine::{Decisions, Engine};
use crate::ingest::{self, IngestState};
use crate::policy::PolicySet;
use crate::policy::testing::{self, Outcome};
use crate::remediation::Mode;
use crate::rules::RuleSet;
use crate::store::Store;

/// Why salve would not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("policy directory: {0}")]
    Bundle(#[from] crate::bundle::BundleError),
    #[error("rules: {0}")]
    Rules(#[from] crate::rules::RuleError),
    #[error("policy: {0}")]
    Policy(#[from] crate::policy::PolicyError),
    #[error("policy tests failed, refusing to run with these guardrails:\n{0}")]
    PolicyTests(String),
    #[error("knowledge base: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("engine: {0}")]
    Engine(#[from] crate::engine::EngineError),
    #[error("Kubernetes configuration: {0}")]
    Kube(String),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
}

/// Loads rules and policy from one directory and checks the policy's own tests.
pub fn load_decisions(dir: &Path) -> Result<Decisions, StartupError> {
    let bundle = Bundle::read(dir)?;
    let rules = RuleSet::load(&bundle)?;
    let policy = PolicySet::load(&bundle)?;
    let failures: Vec<String> = testing::run(&policy, &bundle)
        .into_iter()
        .filter_map(|t| match t.outcome {
            Outcome::Pass => None,
            Outcome::Fail => Some(format!("  FAIL: {} ({})", t.name, t.file)),
            Outcome::Error(e) => Some(format!("  ERROR: {} ({}): {e}", t.name, t.file)),
        })
        .collect();
    if !failures.is_empty() {
        return Err(StartupError::PolicyTests(failures.join("\n")));
    }
    Ok(Decisions { rules, policy })
}

/// Connects to Kubernetes: the given kubeconfig, or whatever kube-rs infers
/// (in-cluster, then $KUBECONFIG / ~/.kube/config). `None` means offline.
pub async fn connect_cluster(
    kubeconfig: Option<&Path>,
) -> Result<Option<kube::Client>, StartupError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| StartupError::Kube(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| StartupError::Kube(format!("{}: {e}", path.display())))?
        }
        None => match kube::Config::infer().await {
            Ok(c) => c,
            Err(e) => {
                warn!("no Kubernetes configuration found ({e})");
                return Ok(None);
            }
        },
    };
    kube::Client::try_from(config)
        .map(Some)
        .map_err(|e| StartupError::Kube(e.to_string()))
}

/// A running salve.
pub struct Salve {
    /// Where it listens (the real port when started on port 0).
    pub addr: SocketAddr,
    pub engine: Engine,
    pub store: Store,
    shutdown: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
    worker: JoinHandle<()>,
}

impl Salve {
    /// Loads, connects, recovers what a previous run left, and starts serving.
    pub async fn start(settings: &ServeSettings) -> Result<Salve, StartupError> {
        let decisions = load_decisions(&settings.policies)?;
        info!(
            rules = decisions.rules.rules.len(),
            policy_hash = %decisions.policy.hash,
            "loaded rules and policy from {}",
            settings.policies.display()
        );
        let store = Store::open(&settings.database_url).await?;
        let client = match settings.offline {
            true => None,
            false => connect_cluster(settings.kubeconfig.as_deref()).await?,
        };
        let cluster = client.map(|c| Arc::new(KubeCluster::new(c)) as Arc<dyn Cluster>);
        let policy_hash = decisions.policy.hash.clone();
        let engine = Engine::new(
            store.clone(),
            cluster,
            settings.dry_run,
            decisions,
            settings.limits.clone(),
        );
        match engine.mode() {
            Mode::Live => {
                info!("mode: LIVE: allowed changes are applied after a server-side dry-run")
            }
            Mode::DryRun => warn!("mode: DRY-RUN: salve reads the cluster and sends dry-runs only"),
            Mode::Offline => warn!(
                "mode: OFFLINE DRY-RUN: no Kubernetes configuration, so salve records what it would do and calls nothing"
            ),
        }

        let shutdown = CancellationToken::new();
        let (queue, worker) = engine.start(shutdown.clone());
        let leftover = engine.recover().await?;
        if !leftover.is_empty() {
            info!(
                count = leftover.len(),
                "deciding incidents acknowledged before the last stop"
            );
            ingest::IncidentSink::submit(&queue, leftover);
        }

        let router = ingest::router(
            IngestState {
                store: store.clone(),
                sink: Arc::new(queue),
                auth: Arc::new(settings.auth.clone()),
            },
            settings.max_body_bytes,
        )
        .merge(api::router(ApiState {
            store: store.clone(),
            mode: engine.mode().as_str(),
            policy_hash,
        }))
        .layer(TraceLayer::new_for_http());

        let listener = TcpListener::bind(settings.listen)
            .await
            .map_err(|e| StartupError::Listen(settings.listen, e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| StartupError::Listen(settings.listen, e))?;
        if settings.auth.is_required() {
            info!(%addr, "listening; webhook authentication required");
        } else {
            info!(%addr, "listening; webhook authentication NOT configured");
        }
        let stop = shutdown.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        });
        Ok(Salve {
            addr,
            engine,
            store,
            shutdown,
            server,
            worker,
        })
    }

    /// Stops listening, lets in-flight remediations finish, and returns.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.server.await;
        let _ = self.worker.await;
    }

    /// A token that stops this salve when cancelled (for signal handling).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the server stops (after the token is cancelled).
    pub async fn wait(self) {
        let _ = self.server.await;
        let _ = self.worker.await;
    }
}
