//! The remediation engine: decide → guard → execute → record, one incident at a time
//! per workload.
//!
//! For each new firing incident the engine picks the first matching rule, opens a
//! remediation (once per incident, enforced by the store), takes the workload's lock,
//! checks cooldown and the global rate limit, reads the workload, plans the exact
//! change, asks policy, and only then writes: server-side dry-run first, then the real
//! change, each conditional on the version it read. A conflict starts over from a fresh
//! read, policy included. Every step lands on the remediation's timeline.
//!
//! Crash safety: a remediation is marked `executing` (committed) before the first real
//! write. On start-up, `executing` ones become `interrupted` (never re-sent: whether the
//! write landed is for a human to check), `pending` ones resume from the start (nothing
//! was written), and incidents acknowledged but never decided are decided.

mod input;
mod ladder;
pub mod plan;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::Utc;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::alert::AlertStatus;
use crate::cluster::{Cluster, TargetRef, WorkloadKind};
use crate::notify::Notifier;
use crate::policy::PolicySet;
use crate::remediation::{Mode, RemediationState};
use crate::rules::{Rule, RuleSet};
use crate::store::incidents::Decision;
use crate::store::{NewRemediation, Store, StoreError};
use crate::verify::Prometheus;
pub use input::{HISTORY_WINDOW, INPUT_VERSION};
pub use ladder::LEARNING_WINDOW;
use ladder::Run;

/// The rules and policy salve decides with, loaded together from one directory.
#[derive(Debug, Clone)]
pub struct Decisions {
    /// SHA-256 over every file of the directory: which set this is.
    pub version: String,
    pub rules: RuleSet,
    pub policy: PolicySet,
}

/// The bounds that hold whatever rules and policy say.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Real actions across all workloads per rolling hour; beyond it salve only records.
    pub max_actions_per_hour: u32,
    /// How long a workload's lock lasts if its holder dies.
    pub lock_lease: Duration,
    /// Fresh-state retries after a 409 before giving up.
    pub conflict_retries: u32,
    /// Longest wait for one Kubernetes API call.
    pub call_timeout: Duration,
    /// Remediations handled at once (on different workloads).
    pub concurrency: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_actions_per_hour: 20,
            lock_lease: Duration::from_secs(600),
            conflict_retries: 3,
            call_timeout: Duration::from_secs(30),
            concurrency: 8,
        }
    }
}

/// Errors that stop the engine from handling an incident (the store failed).
/// Everything that goes wrong with the cluster is an outcome on the record instead.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The outside systems the engine talks to.
pub struct Seams {
    /// `None`: offline mode.
    pub cluster: Option<Arc<dyn Cluster>>,
    /// Used to check that an alert's expression cleared; without it only resolved webhooks count.
    pub prometheus: Option<Arc<dyn Prometheus>>,
    /// Where escalations go.
    pub notifiers: Vec<Arc<dyn Notifier>>,
    /// salve's own URL as people reach it, for audit links.
    pub external_url: String,
}

/// The engine; clone it freely (it is a handle).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    cluster: Option<Arc<dyn Cluster>>,
    prometheus: Option<Arc<dyn Prometheus>>,
    notifiers: Vec<Arc<dyn Notifier>>,
    /// Where people reach salve, for links in escalations.
    external_url: String,
    mode: Mode,
    decisions: Arc<ArcSwap<Decisions>>,
    limits: Limits,
    in_flight: Mutex<HashSet<String>>,
}

/// Where the webhook hands new incidents to the engine.
#[derive(Clone)]
pub struct WorkQueue {
    tx: mpsc::Sender<String>,
}

impl crate::ingest::IncidentSink for WorkQueue {
    fn submit(&self, incident_ids: Vec<String>) {
        for id in incident_ids {
            // A full queue loses nothing: the incident is stored as undecided and the
            // periodic sweep picks it up.
            if self.tx.try_send(id.clone()).is_err() {
                warn!(incident = %id, "work queue full; the sweep will pick this incident up");
            }
        }
    }
}

/// How often stored-but-undecided incidents are looked for, and how old they must be.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
const SWEEP_MIN_AGE: chrono::Duration = chrono::Duration::seconds(60);

impl Engine {
    /// Builds an engine. `cluster` is `None` in offline mode; `decisions` is the live set,
    /// which a reload may swap at any time (each remediation keeps the set it started on).
    pub fn new(
        store: Store,
        seams: Seams,
        dry_run: bool,
        decisions: Arc<ArcSwap<Decisions>>,
        limits: Limits,
    ) -> Engine {
        let Seams {
            cluster,
            prometheus,
            notifiers,
            external_url,
        } = seams;
        let mode = match (&cluster, dry_run) {
            (None, _) => Mode::Offline,
            (Some(_), true) => Mode::DryRun,
            (Some(_), false) => Mode::Live,
        };
        Engine {
            inner: Arc::new(Inner {
                store,
                cluster,
                prometheus,
                notifiers,
                external_url,
                mode,
                decisions,
                limits,
                in_flight: Mutex::new(HashSet::new()),
            }),
        }
    }

    /// How this engine acts: live, dry-run or offline.
    pub fn mode(&self) -> Mode {
        self.inner.mode
    }

    /// The rules and policy in force now (a snapshot: a later reload does not change it).
    pub fn decisions(&self) -> Arc<Decisions> {
        self.inner.decisions.load_full()
    }

    /// Starts the worker: handles queued incidents concurrently (serialised per workload
    /// by the lock) until `shutdown`, then lets in-flight remediations finish.
    pub fn start(&self, shutdown: CancellationToken) -> (WorkQueue, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<String>(1024);
        let engine = self.clone();
        let handle = tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(engine.inner.limits.concurrency));
            let mut tasks = JoinSet::new();
            let mut sweep = tokio::time::interval(SWEEP_EVERY);
            loop {
                let id = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    Some(id) = rx.recv() => id,
                    _ = sweep.tick() => {
                        engine.sweep(&mut tasks, &permits).await;
                        continue;
                    }
                };
                engine.spawn_incident(&mut tasks, &permits, id).await;
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
        });
        (WorkQueue { tx }, handle)
    }

    async fn spawn_incident(&self, tasks: &mut JoinSet<()>, permits: &Arc<Semaphore>, id: String) {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let engine = self.clone();
        tasks.spawn(async move {
            if let Err(e) = engine.handle_incident(&id).await {
                warn!(incident = %id, error = %e, "incident left undecided; it will be retried");
            }
            drop(permit);
        });
    }

    async fn sweep(&self, tasks: &mut JoinSet<()>, permits: &Arc<Semaphore>) {
        match self.inner.store.undecided_firing_incidents().await {
            Ok(ids) => {
                let cutoff = Utc::now() - SWEEP_MIN_AGE;
                for id in ids {
                    let old_enough = uuid::Uuid::parse_str(&id)
                        .ok()
                        .and_then(|u| u.get_timestamp())
                        .map(|ts| {
                            let (secs, _) = ts.to_unix();
                            (secs as i64) < cutoff.timestamp()
                        })
                        .unwrap_or(true);
                    if old_enough {
                        self.spawn_incident(tasks, permits, id).await;
                    }
                }
            }
            Err(e) => warn!(error = %e, "cannot look for undecided incidents"),
        }
    }

    /// Settles what a previous run left: interrupts `executing` remediations, resumes
    /// `pending` ones, and returns the incidents still to be decided.
    pub async fn recover(&self) -> Result<Vec<String>, EngineError> {
        let store = &self.inner.store;
        // A change landed but what it achieved is unknown: escalate rather than guess, and
        // never take the next step blindly.
        self.settle_after_restart(
            RemediationState::Verifying,
            RemediationState::Escalated,
            "escalated: salve restarted while verifying this change; a human should check it",
            "restarted while verifying",
        )
        .await?;
        // A write may or may not have landed: record it, never re-send it.
        self.settle_after_restart(
            RemediationState::Executing,
            RemediationState::Interrupted,
            "salve stopped while sending this change; it was not re-sent. Check the workload.",
            "interrupted by a restart during execution",
        )
        .await?;
        for id in store
            .remediations_in_state(RemediationState::Pending)
            .await?
        {
            if let Err(e) = self.resume(&id).await {
                warn!(remediation = %id, error = %e, "cannot resume pending remediation");
            }
        }
        Ok(store.undecided_firing_incidents().await?)
    }

    /// Ends every remediation left in `from` by a previous run, and frees its workload.
    async fn settle_after_restart(
        &self,
        from: RemediationState,
        to: RemediationState,
        summary: &str,
        reason: &str,
    ) -> Result<(), EngineError> {
        let store = &self.inner.store;
        for id in store.remediations_in_state(from).await? {
            store
                .transition(&id, from, to, summary, &[reason.to_owned()], Utc::now())
                .await?;
            let Some(r) = store.remediation(&id).await? else {
                continue;
            };
            let Some(target) = stored_target(&r.target.kind, &r.target.namespace, &r.target.name)
            else {
                continue;
            };
            store.release_target_lock(&target, &id).await?;
            warn!(remediation = %id, state = %to, "{reason}");
            if to == RemediationState::Escalated {
                if let Some(incident) = store.incident(&r.incident_id).await? {
                    let escalation = crate::notify::Escalation {
                        audit_url: self.audit_url(&id),
                        remediation_id: id.clone(),
                        incident_id: r.incident_id.clone(),
                        rule: r.rule.clone(),
                        target,
                        reason: reason.to_owned(),
                        summary: summary.to_owned(),
                        alert: incident.alert,
                    };
                    self.deliver_escalation(&escalation).await?;
                }
            }
        }
        Ok(())
    }

    async fn resume(&self, id: &str) -> Result<(), EngineError> {
        let store = &self.inner.store;
        let Some(r) = store.remediation(id).await? else {
            return Ok(());
        };
        let Some(incident) = store.incident(&r.incident_id).await? else {
            return Ok(());
        };
        let decisions = self.decisions();
        let (Some(rule), Some(target)) = (
            decisions.rules.by_name(&r.rule),
            stored_target(&r.target.kind, &r.target.namespace, &r.target.name),
        ) else {
            let reason = format!("rule {} is no longer loaded; not resumed", r.rule);
            store
                .transition(
                    id,
                    RemediationState::Pending,
                    RemediationState::Skipped,
                    &reason,
                    std::slice::from_ref(&reason),
                    Utc::now(),
                )
                .await?;
            return Ok(());
        };
        info!(remediation = %id, "resuming pending remediation");
        self.drive(Run {
            id: id.to_owned(),
            rule,
            target,
            incident,
            decisions: &decisions,
            state: RemediationState::Pending,
        })
        .await
    }

    /// Decides for one incident and, if a rule matches, drives its remediation.
    /// Safe to call twice for one incident: only the first opens a remediation.
    pub async fn handle_incident(&self, incident_id: &str) -> Result<(), EngineError> {
        if !self
            .inner
            .in_flight
            .lock()
            .map(|mut s| s.insert(incident_id.to_owned()))
            .unwrap_or(false)
        {
            return Ok(());
        }
        let result = self.decide(incident_id).await;
        if let Ok(mut s) = self.inner.in_flight.lock() {
            s.remove(incident_id);
        }
        result
    }

    async fn decide(&self, incident_id: &str) -> Result<(), EngineError> {
        let store = &self.inner.store;
        let Some(incident) = store.incident(incident_id).await? else {
            return Ok(());
        };
        if incident.decision != "undecided" || incident.status != AlertStatus::Firing {
            return Ok(());
        }
        let decisions = self.decisions();
        let Some(rule) = decisions.rules.first_match(&incident.alert) else {
            store
                .set_decision(incident_id, Decision::NoRule, "no rule matches this alert")
                .await?;
            info!(incident = %incident_id, alertname = incident.alert.alertname(), "no rule matches");
            return Ok(());
        };
        let target = match render_target(rule, &incident.alert.labels) {
            Ok(t) => t,
            Err(reason) => {
                let reason = format!(
                    "rule {} matched but cannot name its target: {reason}",
                    rule.name
                );
                warn!(incident = %incident_id, %reason);
                store
                    .set_decision(incident_id, Decision::NoTarget, &reason)
                    .await?;
                return Ok(());
            }
        };
        let new = NewRemediation {
            incident_id: incident_id.to_owned(),
            alertname: incident.alert.alertname().to_owned(),
            rule_name: rule.name.clone(),
            rule_file: rule.file.clone(),
            action: rule.steps[0].kind(),
            target: target.clone(),
            mode: self.inner.mode,
            summary: format!("{} {target}: pending", rule.steps[0].kind()),
        };
        let matched = json!({
            "rule": rule.name,
            "file": rule.file,
            "matchers": rule.matchers.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
            "target": target,
            "incident_id": incident_id,
            "alert": incident.alert,
            "deliveries_so_far": incident.delivery_count,
        });
        let Some(id) = store.create_remediation(&new, &matched, Utc::now()).await? else {
            return Ok(());
        };
        info!(remediation = %id, rule = %rule.name, %target, "remediation opened");
        self.drive(Run {
            id,
            rule,
            target,
            incident,
            decisions: &decisions,
            state: RemediationState::Pending,
        })
        .await
    }
}

fn render_target(rule: &Rule, labels: &crate::alert::Labels) -> Result<TargetRef, String> {
    let namespace = rule.target.namespace.render(labels)?;
    let name = rule.target.name.render(labels)?;
    TargetRef::new(rule.target.kind, &namespace, &name)
}

fn stored_target(kind: &str, namespace: &str, name: &str) -> Option<TargetRef> {
    TargetRef::new(WorkloadKind::parse(kind)?, namespace, name).ok()
}
