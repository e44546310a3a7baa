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
use crate::cluster::{Cluster, KubeCluster};
use crate::config::ServeSettings;
use crate::engine::{Engine, Seams};
use crate::http::ExternalUrl;
use crate::ingest::{self, IngestState};
use crate::notify::{AlertmanagerNotifier, Notifier, WebhookNotifier};
use crate::reload::{Reloader, load_decisions};
use crate::remediation::Mode;
use crate::store::Store;
use crate::telemetry::Metrics;
use crate::verify::{AlertmanagerApi, Prometheus, PrometheusHttp, Suppressions};

/// Who salve's Kubernetes requests say they come from (audit logs, API priority rules).
pub const USER_AGENT: &str = concat!("salve/", env!("CARGO_PKG_VERSION"));

/// Why salve would not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Load(#[from] crate::reload::LoadError),
    #[error("cannot watch the policy directory: {0}")]
    Watch(#[from] notify::Error),
    #[error("knowledge base: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("Kubernetes configuration: {0}")]
    Kube(String),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
}

/// The cluster salve acts on, as the start-up line names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterName {
    /// The API server's URL.
    pub server: String,
    /// The kubeconfig context, or `in-cluster` for the pod's service account.
    pub context: String,
    /// Where the configuration came from (a file, or the pod's environment).
    pub source: String,
}

impl std::fmt::Display for ClusterName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (context {}, from {})",
            self.server, self.context, self.source
        )
    }
}

/// What [`connect_cluster`] found: a client and the cluster it talks to, or why there is
/// none (salve then runs offline).
pub enum ClusterFound {
    Client(kube::Client, ClusterName),
    Nothing(String),
}

/// Connects to Kubernetes: the given kubeconfig, or what kube-rs infers ($KUBECONFIG or
/// ~/.kube/config, then the pod's in-cluster environment).
pub async fn connect_cluster(kubeconfig: Option<&Path>) -> Result<ClusterFound, StartupError> {
    let unreadable = |path: &Path, e: &dyn std::error::Error| {
        let hint = if path.starts_with("~") {
            " (a ~ is not expanded inside quotes; give the full path)"
        } else {
            ""
        };
        StartupError::Kube(format!(
            "cannot use the kubeconfig {}: {}{hint}",
            path.display(),
            crate::telemetry::sentence(e)
        ))
    };
    let (config, source, context) = match kubeconfig {
        Some(path) => {
            if let Err(e) = std::fs::metadata(path) {
                return Err(unreadable(path, &e));
            }
            let kc = Kubeconfig::read_from(path).map_err(|e| unreadable(path, &e))?;
            let context = kc.current_context.clone().unwrap_or_default();
            let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| unreadable(path, &e))?;
            (config, path.display().to_string(), context)
        }
        // What kube::Config::infer does (the kubeconfig, then the pod's environment), with
        // the kubeconfig read once and kept, for the context the start-up line names.
        None => {
            let from_file = match Kubeconfig::read() {
                Ok(kc) => {
                    let context = kc.current_context.clone().unwrap_or_default();
                    let source = std::env::var("KUBECONFIG")
                        .ok()
                        .filter(|k| !k.is_empty())
                        .map_or_else(
                            || "~/.kube/config".to_owned(),
                            |k| format!("$KUBECONFIG={k}"),
                        );
                    Some(
                        kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                            .await
                            .map(|c| (c, source.clone(), context))
                            .map_err(|e| format!("{source}: {}", crate::telemetry::sentence(&e))),
                    )
                }
                Err(_) => None,
            };
            match from_file {
                Some(Ok(found)) => found,
                unusable => match kube::Config::incluster() {
                    Ok(c) => (
                        c,
                        "the pod's service account".to_owned(),
                        "in-cluster".to_owned(),
                    ),
                    Err(_) => {
                        return Ok(ClusterFound::Nothing(match unusable {
                            Some(Err(why)) => format!(
                                "the kubeconfig cannot be used ({why}) and salve is not in a pod"
                            ),
                            _ => "no Kubernetes configuration was found (no --kubeconfig, no $KUBECONFIG or ~/.kube/config, not in a pod)".to_owned(),
                        }));
                    }
                },
            }
        }
    };
    let mut config = config;
    let name = ClusterName {
        server: config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_owned(),
        context: if context.is_empty() {
            "(none set)".to_owned()
        } else {
            context
        },
        source,
    };
    // kube-rs would otherwise retry 429/503/504 itself, up to 15 times, for writes too and
    // out of the audit trail's sight; salve retries in the engine instead, on the record,
    // and never re-sends a write that may have landed.
    config.default_retry = false;
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(USER_AGENT),
    ));
    kube::Client::try_from(config)
        .map(|c| ClusterFound::Client(c, name))
        .map_err(|e| StartupError::Kube(crate::telemetry::sentence(&e)))
}

/// Asks the API server its version once at start, so an unreachable cluster is said at
/// once rather than at the first alert. Not fatal: the server may come back, and
/// `/readyz` reports it meanwhile.
async fn probe_cluster(client: &kube::Client, name: Option<&ClusterName>) {
    let server = name.map(|n| n.server.as_str()).unwrap_or("the cluster");
    match tokio::time::timeout(
        std::time::Duration::from_secs(5),
        client.apiserver_version(),
    )
    .await
    {
        Ok(Ok(v)) => info!(
            "the API server at {server} answers: Kubernetes {}",
            v.git_version
        ),
        Ok(Err(e)) => warn!(
            "the API server at {server} does not answer now: {}; salve keeps trying, and /readyz says not ready until it answers",
            crate::telemetry::root_cause(&e)
        ),
        Err(_) => warn!(
            "the API server at {server} did not answer within 5s; salve keeps trying, and /readyz says not ready until it answers"
        ),
    }
}

/// Prunes raw payloads older than `keep`, at start and then hourly, until `shutdown`.
fn spawn_retention(store: Store, keep: std::time::Duration, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = every.tick() => {}
            }
            let now = chrono::Utc::now();
            let cutoff =
                now - chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::days(90));
            match store.prune_payloads(cutoff, now).await {
                Ok(seal) if seal.deliveries > 0 => {
                    info!(pruned = seal.deliveries, digest = %seal.digest, "pruned old webhook payloads (sealed)")
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(error = %e, "pruning old payloads failed; will try again in an hour")
                }
            }
        }
    });
}

/// A running salve.
pub struct Salve {
    /// Where it listens (the real port when started on port 0).
    pub addr: SocketAddr,
    /// The live rules and policy, and the way to reload them (SIGHUP calls this).
    pub reloader: Arc<Reloader>,
    pub engine: Engine,
    pub store: Store,
    shutdown: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
    worker: JoinHandle<()>,
}

impl Salve {
    /// Loads, connects, binds the port, and starts serving; recovery of what a previous
    /// run left runs in the background.
    pub async fn start(settings: &ServeSettings) -> Result<Salve, StartupError> {
        let decisions = load_decisions(&settings.policies, settings.rego)?;
        info!(
            rules = decisions.rules.rules.len(),
            policy_hash = %decisions.policy.hash,
            verdicts = %decisions.policy.evaluator(),
            "loaded rules and policy from {}",
            settings.policies.display()
        );
        let store = Store::open_waiting(&settings.database_url, settings.db_wait).await?;
        let (client, cluster_name, offline_because) = match settings.offline {
            true => (None, None, "--offline was given".to_owned()),
            false => match connect_cluster(settings.kubeconfig.as_deref()).await? {
                ClusterFound::Client(c, name) => (Some(c), Some(name), String::new()),
                // Asked to read the cluster and send dry-runs, salve must not quietly do
                // less: an operator who trusts the dry-runs would be reading nothing.
                ClusterFound::Nothing(why) if settings.dry_run => {
                    return Err(StartupError::Kube(format!(
                        "--dry-run reads the cluster and sends server-side dry-runs, but {why}; give --kubeconfig, or --offline to record without a cluster"
                    )));
                }
                ClusterFound::Nothing(why) => (None, None, why),
            },
        };
        if let Some(client) = &client {
            probe_cluster(client, cluster_name.as_ref()).await;
        }
        let cluster = client.map(|c| Arc::new(KubeCluster::new(c)) as Arc<dyn Cluster>);
        let cluster_probe = api::ClusterProbe::new(cluster.clone());
        let metrics = Arc::new(Metrics::new());
        let reloader = Arc::new(Reloader::new(
            &settings.policies,
            settings.rego,
            decisions,
            metrics.clone(),
        ));
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(15))
            .build()
            .map_err(|e| StartupError::Kube(format!("HTTP client: {e}")))?;
        let mut notifiers: Vec<Arc<dyn Notifier>> = Vec::new();
        // Every Alertmanager gets every escalation, as Prometheus sends to each of an HA set.
        for url in &settings.alertmanager_url {
            notifiers.push(Arc::new(AlertmanagerNotifier::new(
                url.clone(),
                http.clone(),
            )));
        }
        if let Some(url) = &settings.escalation_webhook_url {
            notifiers.push(Arc::new(WebhookNotifier::new(url.clone(), http.clone())));
        }
        let listener = TcpListener::bind(settings.listen)
            .await
            .map_err(|e| StartupError::Listen(settings.listen, e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| StartupError::Listen(settings.listen, e))?;
        let external_url = settings
            .external_url
            .clone()
            .unwrap_or_else(|| ExternalUrl::default_for(addr, &crate::engine::host_name()));
        let seams = Seams {
            cluster,
            prometheus: settings
                .prometheus_url
                .clone()
                .map(|u| Arc::new(PrometheusHttp::new(u, http.clone())) as Arc<dyn Prometheus>),
            alertmanager: (!settings.alertmanager_url.is_empty()).then(|| {
                Arc::new(AlertmanagerApi::new(
                    settings.alertmanager_url.clone(),
                    http.clone(),
                )) as Arc<dyn Suppressions>
            }),
            notifiers,
            approval_webhook: settings
                .approval_webhook_url
                .clone()
                .map(|u| Arc::new(WebhookNotifier::new(u, http.clone()))),
            external_url: external_url.clone(),
            metrics: metrics.clone(),
        };
        let engine = Engine::new(
            store.clone(),
            seams,
            settings.dry_run,
            reloader.live(),
            settings.limits.clone(),
        );
        let on = cluster_name.map(|n| n.to_string()).unwrap_or_default();
        match engine.mode() {
            Mode::Live => {
                info!("mode: LIVE on {on}: allowed changes are applied after a server-side dry-run")
            }
            Mode::DryRun => {
                warn!("mode: DRY-RUN on {on}: salve reads the cluster and sends dry-runs only")
            }
            Mode::Offline => warn!(
                "mode: OFFLINE DRY-RUN: {offline_because}, so salve records what it would do and calls nothing"
            ),
        }

        let shutdown = CancellationToken::new();
        if settings.watch_policies {
            reloader.clone().watch(shutdown.clone())?;
        }
        if let Some(keep) = settings.retention {
            spawn_retention(store.clone(), keep, shutdown.clone());
        }
        // Recovery of what a previous run left happens in the worker, in the background:
        // the port answers /healthz and webhooks while it runs.
        let (queue, worker) = engine.start(shutdown.clone());
        info!(owner = %engine.owner(), "this replica's owner id");

        let router = ingest::router(
            IngestState {
                store: store.clone(),
                sink: Arc::new(queue),
                auth: Arc::new(settings.auth.clone()),
                metrics: metrics.clone(),
            },
            settings.max_body_bytes,
        )
        .merge(api::router(ApiState {
            store: store.clone(),
            mode: engine.mode().as_str(),
            reloader: reloader.clone(),
            metrics,
            admin_token: settings.admin_token.clone().map(Arc::new),
            read_token: settings.read_token.clone().map(Arc::new),
            external_url: external_url.clone(),
            cluster_probe: cluster_probe.clone(),
        }));
        // Served under the external URL's path, as Alertmanager serves under its route prefix.
        let router = match external_url.prefix() {
            "" => router,
            prefix => axum::Router::new().nest(prefix, router),
        }
        .layer(TraceLayer::new_for_http());

        info!(external_url = %external_url.as_str(), "links salve sends start here");
        if settings.auth.is_required() {
            info!(%addr, "listening; webhook authentication required");
        } else {
            info!(%addr, "listening; webhook authentication NOT configured");
        }
        let server = tokio::spawn(crate::server::serve(
            listener,
            router,
            settings.connections.clone(),
            shutdown.clone(),
        ));
        Ok(Salve {
            addr,
            reloader,
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
