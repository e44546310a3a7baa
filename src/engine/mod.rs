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
//! Crash safety: a remediation is marked `executing` (committed, with its rate slot and
//! its lease checked in the same transaction) before every real write. Each replica has an
//! owner id and a heartbeat; work is settled only when its owner is dead: `executing`
//! becomes `interrupted` (never re-sent: whether the write landed is for a human to check),
//! `verifying` is escalated, `pending` is adopted and resumed from a fresh read. Recovery
//! runs in the background, after the port is bound, and again every few seconds.
//!
//! The modules follow one remediation's path: [`ladder`] drives it (lock, preconditions,
//! steps in order), `step` takes one step up to the write, `admission` is the one gate
//! every write passes (steps and reverts), `revert` is compare-and-revert, `escalation`
//! tells humans, and `record` writes the timeline.

mod admission;
mod approval;
mod escalation;
mod input;
mod ladder;
pub mod plan;
mod record;
mod revert;
mod shadow;
mod step;

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
use crate::policy::pool::{EvaluationPool, PoolLimits};
use crate::remediation::{Event, Mode, RemediationState};
use crate::rules::{Rule, RuleSet};
use crate::store::incidents::Decision;
use crate::store::targets::{Budget, BudgetScope};
use crate::store::{NewRemediation, RemediationRecord, Store, StoreError};
use crate::telemetry::Metrics;
use crate::verify::{Prometheus, Suppressions};
pub use input::{HISTORY_WINDOW, INPUT_VERSION};
pub use ladder::LEARNING_WINDOW;
use ladder::Run;

/// The host (or pod) name, for the owner id people read.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "salve".to_owned())
}

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
    /// Real changes across all workloads per rolling hour; beyond it salve only records.
    pub max_actions_per_hour: u32,
    /// More budgets of real changes (per namespace, per workload, global; any windows),
    /// all holding at once beside `max_actions_per_hour`.
    pub budgets: Vec<Budget>,
    /// How long a workload's lock outlives its holder's last renewal (the holder renews
    /// it before every write and every verification poll).
    pub lock_lease: Duration,
    /// How long a replica counts as alive after its last heartbeat.
    pub heartbeat_ttl: Duration,
    /// How often recovery runs again (dead owners' work, this replica's stalled work) and
    /// undecided incidents are looked for.
    pub sweep_every: Duration,
    /// How often the escalation outbox looks for retries, refreshes and resolutions (and
    /// the first retry's delay).
    pub outbox_every: Duration,
    /// How often a live escalation alert is re-posted to Alertmanager.
    pub escalation_refresh: Duration,
    /// How long a stop waits for running remediations (each stops before its next write)
    /// before it leaves them to the next owner; below Kubernetes' 30 s grace period.
    pub shutdown_grace: Duration,
    /// Fresh-state retries after a 409 before giving up.
    pub conflict_retries: u32,
    /// Longest wait for one Kubernetes API call.
    pub call_timeout: Duration,
    /// Remediations driven at once (on different workloads). Above the hourly budget of
    /// real changes, so remediations verifying their change (minutes each) never hold
    /// every turn. Deciding is not bounded by it (up to 512 incidents are decided at once).
    pub concurrency: usize,
    /// Policy evaluation threads, their queue and memory ceiling.
    pub policy: PoolLimits,
    /// What salve never keeps of the workloads it reads (see [`crate::redact`]).
    pub redaction: crate::redact::Redaction,
    /// Pauses automation when remediations open faster than a storm allows; `None`: off.
    pub storm_brake: Option<StormBrake>,
}

/// The storm brake: a flood of remediations is itself the alarm. Many workloads "need"
/// fixing at once when something shared broke (a node pool, the network, a bad config),
/// and changing them all one by one deepens the outage; past `per_minute` remediations
/// opened in one minute, salve pauses itself everywhere for `pause_for` and tells humans,
/// once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StormBrake {
    pub per_minute: u32,
    pub pause_for: Duration,
}

impl Limits {
    /// Every budget a change must fit: the global hourly one, then the others.
    pub fn all_budgets(&self) -> Vec<Budget> {
        let mut all = vec![Budget {
            scope: BudgetScope::Global,
            limit: self.max_actions_per_hour,
            window: Duration::from_secs(3600),
        }];
        all.extend(self.budgets.iter().copied());
        all
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_actions_per_hour: 20,
            budgets: Vec::new(),
            lock_lease: Duration::from_secs(120),
            heartbeat_ttl: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(20),
            sweep_every: Duration::from_secs(30),
            outbox_every: Duration::from_secs(5),
            escalation_refresh: Duration::from_secs(60),
            conflict_retries: 3,
            call_timeout: Duration::from_secs(30),
            concurrency: 64,
            policy: PoolLimits::default(),
            redaction: crate::redact::Redaction::default(),
            storm_brake: Some(StormBrake {
                per_minute: 20,
                pause_for: Duration::from_secs(15 * 60),
            }),
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
    /// Asked before each step whether the alert is silenced or inhibited; `None`: no
    /// Alertmanager configured, nothing to ask.
    pub alertmanager: Option<Arc<dyn Suppressions>>,
    /// Where escalations go.
    pub notifiers: Vec<Arc<dyn Notifier>>,
    /// Where approval requests are posted as JSON (a chat bridge); `None`: they wait in
    /// the store, the API and the CLI only.
    pub approval_webhook: Option<Arc<crate::notify::WebhookNotifier>>,
    /// salve's own URL as people reach it, for audit links.
    pub external_url: crate::http::ExternalUrl,
    /// Where the engine counts what it does (served at `/metrics`).
    pub metrics: Arc<Metrics>,
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
    alertmanager: Option<Arc<dyn Suppressions>>,
    notifiers: Vec<Arc<dyn Notifier>>,
    approval_webhook: Option<Arc<crate::notify::WebhookNotifier>>,
    /// Where people reach salve, for links in escalations.
    external_url: crate::http::ExternalUrl,
    metrics: Arc<Metrics>,
    mode: Mode,
    decisions: Arc<ArcSwap<Decisions>>,
    limits: Limits,
    /// Where Rego runs: off the async runtime, bounded in time, memory and queue.
    policy: EvaluationPool,
    in_flight: Mutex<HashSet<String>>,
    /// Turns to drive a remediation (`Limits::concurrency` at once). Deciding takes none:
    /// in a storm every alert is decided (its remediation opened, or no rule recorded)
    /// at the pace of the store, while the remediations drive at their own.
    drives: Arc<Semaphore>,
    /// This replica: `host/incarnation`, the owner of what it creates and adopts.
    owner: String,
    /// Cancelled on shutdown: ladders stop before their next write.
    stopping: CancellationToken,
    /// When this replica started: recovery decides incidents acknowledged before it.
    started_at: chrono::DateTime<Utc>,
}

/// What recovery found: incidents to decide, and pending remediations it adopted.
#[derive(Debug, Default)]
pub struct Recovered {
    pub undecided: Vec<String>,
    pub resumed: Vec<String>,
}

/// Where the webhook (and recovery, and the sweep) hand incidents to the engine.
///
/// Each incident is queued at most once at a time: recovery and the sweep offer every
/// old undecided incident again, and a storm must not fill the queue with copies. The
/// queue holds ids only (the incidents are in the store), so it is not bounded: a
/// bounded one that drops ids would leave their incidents undecided until the slow sweep.
/// An id leaves the queue only when a permit to decide it is free (see
/// [`DECIDING_AT_ONCE`]): a storm's backlog waits here as ids, not as tasks.
#[derive(Clone)]
pub struct WorkQueue {
    tx: mpsc::UnboundedSender<String>,
    queued: Arc<Mutex<HashSet<String>>>,
    /// Where the queue shows how many incidents wait in it.
    metrics: Arc<Metrics>,
}

impl WorkQueue {
    /// Marks an id as taken off the queue (it may be queued again from now on).
    fn taken(&self, id: &str) {
        if let Ok(mut q) = self.queued.lock() {
            q.remove(id);
            self.metrics.incidents_waiting(q.len());
        }
    }
}

impl crate::ingest::IncidentSink for WorkQueue {
    fn submit(&self, incident_ids: Vec<String>) {
        for id in incident_ids {
            let new = self
                .queued
                .lock()
                .map(|mut q| {
                    let new = q.insert(id.clone());
                    self.metrics.incidents_waiting(q.len());
                    new
                })
                .unwrap_or(true);
            // A closed queue (salve is stopping) loses nothing: the incident is stored as
            // undecided and the next start decides it.
            if new && self.tx.send(id.clone()).is_err() {
                warn!(incident = %id, "salve is stopping; the next start decides this incident");
            }
        }
    }
}

/// Incidents being decided at once (each then waits for its turn to drive): enough that
/// a storm's decisions share the writer's batches, few enough to bound what it holds.
/// Each is a task holding a decision's whole state (about 10 KB); the rest of a storm
/// waits in the [`WorkQueue`] as ids.
pub const DECIDING_AT_ONCE: usize = 512;

/// An incident being decided (or a resumed remediation being driven): its permit, and its
/// place in the engine's `deciding` count, both given back when the task ends (or is
/// aborted at shutdown).
struct Deciding {
    _permit: tokio::sync::OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Deciding {
    fn new(permit: tokio::sync::OwnedSemaphorePermit, metrics: &Arc<Metrics>) -> Deciding {
        metrics.incident_deciding(true);
        Deciding {
            _permit: permit,
            metrics: metrics.clone(),
        }
    }
}

impl Drop for Deciding {
    fn drop(&mut self) {
        self.metrics.incident_deciding(false);
    }
}

/// How old a stored-but-undecided incident must be before the sweep decides it.
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
            alertmanager,
            notifiers,
            approval_webhook,
            external_url,
            metrics,
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
                alertmanager,
                notifiers,
                approval_webhook,
                external_url,
                metrics,
                mode,
                decisions,
                policy: EvaluationPool::start(limits.policy.clone()),
                drives: Arc::new(Semaphore::new(limits.concurrency)),
                limits,
                in_flight: Mutex::new(HashSet::new()),
                owner: format!("{}/{}", host_name(), uuid::Uuid::now_v7().simple()),
                stopping: CancellationToken::new(),
                started_at: Utc::now(),
            }),
        }
    }

    /// This replica's owner id (`host/incarnation`).
    pub fn owner(&self) -> &str {
        &self.inner.owner
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
    /// by the lock), keeps this replica's heartbeat, and settles dead owners' work, all in
    /// the background, until `shutdown`. Then ladders stop before their next write, the
    /// worker waits at most `Limits::shutdown_grace` for them, and the replica retires (so another replica,
    /// or the next start, may resume what it left at once).
    pub fn start(&self, shutdown: CancellationToken) -> (WorkQueue, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let engine = self.clone();
        let queue = WorkQueue {
            tx,
            queued: Arc::default(),
            metrics: self.inner.metrics.clone(),
        };
        let sink = queue.clone();
        let handle = tokio::spawn(async move {
            // Everything below stops waiting the moment a stop is asked for: a backlog, a
            // slow notifier or a full set of permits never holds SIGTERM up.
            let stopping = engine.inner.stopping.clone();
            let asked = shutdown.clone();
            tokio::spawn(async move {
                asked.cancelled().await;
                stopping.cancel();
            });
            let permits = Arc::new(Semaphore::new(DECIDING_AT_ONCE));
            let mut tasks = JoinSet::new();
            let mut sweep = tokio::time::interval(engine.inner.limits.sweep_every);
            let mut heartbeat = tokio::time::interval(engine.inner.limits.heartbeat_ttl / 3);
            let mut outbox = tokio::time::interval(engine.inner.limits.outbox_every);
            let mut recovered = false;
            loop {
                let id = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    // A finished task gave its permit back: the queue may go on.
                    Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
                    // An id is taken off the queue only while a permit to decide it is free.
                    Some(id) = rx.recv(), if permits.available_permits() > 0 => {
                        sink.taken(&id);
                        id
                    }
                    _ = heartbeat.tick() => {
                        engine.unless_stopping(engine.beat()).await;
                        if !recovered {
                            let done = engine
                                .unless_stopping(engine.recover_into(&sink, &mut tasks, &permits))
                                .await;
                            recovered = done.unwrap_or(false);
                        }
                        continue;
                    }
                    _ = outbox.tick() => {
                        if let Some(Err(e)) = engine.unless_stopping(engine.run_outbox()).await {
                            warn!(error = %e, "the escalation outbox could not run; trying again shortly");
                        }
                        continue;
                    }
                    _ = sweep.tick() => {
                        engine
                            .unless_stopping(async {
                                if recovered {
                                    engine.recover_into(&sink, &mut tasks, &permits).await;
                                }
                                engine.sweep(&sink).await;
                            })
                            .await;
                        continue;
                    }
                };
                engine.spawn_incident(&mut tasks, &permits, id);
            }
            engine.inner.stopping.cancel();
            let drained = tokio::time::timeout(engine.inner.limits.shutdown_grace, async {
                while tasks.join_next().await.is_some() {}
            })
            .await;
            if drained.is_err() {
                warn!(
                    "{} remediation(s) still running after the grace period; they stay owned by this replica and are resumed once it is gone",
                    tasks.len()
                );
                tasks.abort_all();
            }
            if let Err(e) = engine
                .inner
                .store
                .retire(&engine.inner.owner, Utc::now())
                .await
            {
                warn!(error = %e, "could not mark this replica retired; others resume its work when its heartbeat expires");
            }
        });
        (queue, handle)
    }

    /// Runs `work` unless (or until) a stop is asked for; `None` if the stop came first.
    /// What it drops midway is left as a crash would leave it, which recovery handles.
    async fn unless_stopping<T>(&self, work: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::select! {
            biased;
            _ = self.inner.stopping.cancelled() => None,
            out = work => Some(out),
        }
    }

    /// Renews this replica's heartbeat.
    async fn beat(&self) {
        let now = Utc::now();
        let ttl = chrono::Duration::from_std(self.inner.limits.heartbeat_ttl)
            .unwrap_or(chrono::Duration::seconds(30));
        // The owner id is `host/incarnation`: the host part names the replica for people.
        let owner = &self.inner.owner;
        let name = owner
            .rsplit_once('/')
            .map_or(owner.as_str(), |(host, _)| host);
        if let Err(e) = self
            .inner
            .store
            .heartbeat(owner, name, now, now + ttl)
            .await
        {
            warn!(error = %e, "cannot renew this replica's heartbeat");
        }
    }

    /// Runs [`Engine::recover`], resumes the pending remediations it adopted (as tasks of
    /// this worker, so a stop stops them too) and queues what it found undecided; `false`
    /// if the store failed (it is tried again at the next tick).
    async fn recover_into(
        &self,
        queue: &WorkQueue,
        tasks: &mut JoinSet<()>,
        permits: &Arc<Semaphore>,
    ) -> bool {
        match self.recover().await {
            Ok(Recovered { undecided, resumed }) => {
                for id in resumed {
                    let engine = self.clone();
                    self.spawn_with_permit(tasks, permits, async move {
                        if let Err(e) = engine.resume(&id).await {
                            warn!(remediation = %id, error = %e, "resuming a pending remediation failed; it stays pending with this replica, whose next sweep resumes it");
                        }
                    });
                }
                if !undecided.is_empty() {
                    info!(
                        count = undecided.len(),
                        "deciding incidents acknowledged but not decided"
                    );
                    crate::ingest::IncidentSink::submit(queue, undecided);
                }
                true
            }
            Err(e) => {
                warn!(error = %e, "recovery could not run; trying again shortly");
                false
            }
        }
    }

    /// Hands an incident to a task of its own (see [`Engine::spawn_with_permit`]).
    fn spawn_incident(&self, tasks: &mut JoinSet<()>, permits: &Arc<Semaphore>, id: String) {
        let engine = self.clone();
        self.spawn_with_permit(tasks, permits, async move {
            if let Err(e) = engine.handle_incident(&id).await {
                engine.inner.metrics.database_error("write");
                warn!(incident = %id, error = %e, "handling this incident failed; recovery settles what it left and the sweep decides it if it is still undecided");
            }
        });
    }

    /// Runs `work` as a task of the worker, holding a permit: one taken now, as the worker
    /// loop takes an id only while one is free (should a resumed remediation have taken
    /// the last meanwhile, the task waits for the next). The loop itself never waits on a
    /// decision, so this replica's heartbeat, recovery and outbox keep their pace however
    /// many remediations are running. The permit and the `deciding` count are given back
    /// when the work ends.
    fn spawn_with_permit(
        &self,
        tasks: &mut JoinSet<()>,
        permits: &Arc<Semaphore>,
        work: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let taken = permits.clone().try_acquire_owned().ok();
        let (permits, metrics) = (permits.clone(), self.inner.metrics.clone());
        tasks.spawn(async move {
            let permit = match taken {
                Some(permit) => permit,
                None => match permits.acquire_owned().await {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            let _deciding = Deciding::new(permit, &metrics);
            work.await;
        });
    }

    /// Queues the undecided incidents old enough that their webhook's hand-off was lost.
    async fn sweep(&self, queue: &WorkQueue) {
        match self.undecided_before(Utc::now() - SWEEP_MIN_AGE).await {
            Ok(ids) => crate::ingest::IncidentSink::submit(queue, ids),
            Err(e) => warn!(error = %e, "cannot look for undecided incidents"),
        }
    }

    /// Undecided firing incidents first seen before `cutoff`. Younger ones are on their
    /// way through the work queue of the replica that acknowledged them; taking them here
    /// would only race it.
    async fn undecided_before(
        &self,
        cutoff: chrono::DateTime<Utc>,
    ) -> Result<Vec<String>, EngineError> {
        Ok(self
            .inner
            .store
            .undecided_firing_incidents_before(cutoff)
            .await?)
    }

    /// Settles what dead replicas (this one's earlier runs included) left: interrupts
    /// their `executing` remediations, escalates their `verifying` ones, adopts their
    /// `pending` ones (to be resumed by the caller), and returns those with the incidents
    /// still to be decided. A live replica's work is never touched.
    pub async fn recover(&self) -> Result<Recovered, EngineError> {
        let store = &self.inner.store;
        // A change landed but what it achieved is unknown: escalate rather than guess, and
        // never take the next step blindly.
        self.settle_orphans(
            RemediationState::Verifying,
            Event::Escalate,
            "escalated: the salve verifying this change stopped; a human should check it",
            "its owner stopped while verifying",
        )
        .await?;
        // A write may or may not have landed: record it, never re-send it.
        self.settle_orphans(
            RemediationState::Executing,
            Event::Interrupt,
            "salve stopped while sending this change; it was not re-sent. Check the workload.",
            "interrupted: its owner stopped during execution",
        )
        .await?;
        let now = Utc::now();
        let mut resumed = Vec::new();
        // Nothing was written for these: a new owner starts them over from a fresh read
        // (an approval request waits on, with its decision if one came meanwhile).
        for state in [
            RemediationState::Pending,
            RemediationState::AwaitingApproval,
        ] {
            for orphan in store
                .orphaned_remediations(state, &self.inner.owner, now)
                .await?
            {
                if store
                    .adopt_remediation(&orphan, state, &self.inner.owner)
                    .await?
                {
                    resumed.push(orphan.id);
                }
            }
        }
        resumed.extend(self.settle_stalled().await?);
        let settled = store.settle_resolved_undecided().await?;
        if settled > 0 {
            info!(
                count = settled,
                "incidents that resolved before a decision are recorded as resolved_before_decision"
            );
        }
        // Incidents acknowledged before this replica started (by its earlier life, or a
        // replica since gone), or long enough ago that their decision was lost.
        let cutoff = self.inner.started_at.max(now - SWEEP_MIN_AGE);
        Ok(Recovered {
            undecided: self.undecided_before(cutoff).await?,
            resumed,
        })
    }

    /// Settles this replica's own remediations that nothing here is working on (a database
    /// error ended the task driving them): `verifying` is escalated, `executing` is
    /// interrupted (never re-sent), and `pending` ones are returned to be resumed.
    async fn settle_stalled(&self) -> Result<Vec<String>, EngineError> {
        let store = &self.inner.store;
        let idle = |incident: &str| {
            self.inner
                .in_flight
                .lock()
                .map(|s| !s.contains(incident))
                .unwrap_or(false)
        };
        let settle = [
            (
                RemediationState::Verifying,
                Event::Escalate,
                "escalated: salve lost track of this change's verification (an error cut it short); a human should check it",
            ),
            (
                RemediationState::Executing,
                Event::Interrupt,
                "salve lost track of this change while sending it (an error cut it short); it was not re-sent. Check the workload.",
            ),
        ];
        for (state, event, summary) in settle {
            for (id, incident) in store.owned_remediations(state, &self.inner.owner).await? {
                if !idle(&incident) {
                    continue;
                }
                let reason = "its task ended on an error; settled by this replica's recovery";
                self.settle(&id, state, event, summary, reason).await?;
                warn!(remediation = %id, "{summary}");
            }
        }
        let mut pending = store
            .owned_remediations(RemediationState::Pending, &self.inner.owner)
            .await?;
        pending.extend(
            store
                .owned_remediations(RemediationState::AwaitingApproval, &self.inner.owner)
                .await?,
        );
        Ok(pending
            .into_iter()
            .filter(|(_, incident)| idle(incident))
            .map(|(id, _)| id)
            .collect())
    }

    /// Resumes a pending remediation this replica adopted (see [`Engine::recover`]).
    pub async fn resume_adopted(&self, id: &str) -> Result<(), EngineError> {
        self.resume(id).await
    }

    /// Ends every remediation a dead owner left in `from` (adopting it first, so exactly
    /// one replica settles it); the terminal move frees its workload.
    async fn settle_orphans(
        &self,
        from: RemediationState,
        event: Event,
        summary: &str,
        reason: &str,
    ) -> Result<(), EngineError> {
        let store = &self.inner.store;
        let now = Utc::now();
        for orphan in store
            .orphaned_remediations(from, &self.inner.owner, now)
            .await?
        {
            if !store
                .adopt_remediation(&orphan, from, &self.inner.owner)
                .await?
            {
                continue;
            }
            if let Some(to) = self
                .settle(&orphan.id, from, event, summary, reason)
                .await?
            {
                if let Some(r) = store.remediation(&orphan.id).await? {
                    self.inner
                        .metrics
                        .remediation_finished(&r.rule, &r.action, to.as_str());
                }
                warn!(remediation = %orphan.id, previous_owner = %orphan.owner, state = %to, "{reason}");
            }
        }
        Ok(())
    }

    /// Ends a remediation recovery found, escalating (atomically, see
    /// [`Engine::move_escalating`]) when the move ends it `escalated`.
    async fn settle(
        &self,
        id: &str,
        from: RemediationState,
        event: Event,
        summary: &str,
        reason: &str,
    ) -> Result<Option<RemediationState>, EngineError> {
        let escalation = match from.on(event) {
            Some(RemediationState::Escalated) => {
                self.stored_escalation(id, reason, summary).await?
            }
            _ => None,
        };
        self.move_escalating(
            id,
            from,
            event,
            (summary, &[reason.to_owned()]),
            escalation.as_ref(),
        )
        .await
    }

    async fn resume(&self, id: &str) -> Result<(), EngineError> {
        let store = &self.inner.store;
        let Some(r) = store.remediation(id).await? else {
            return Ok(());
        };
        // One task per incident in this process: a resume never races a decision.
        let incident_id = r.incident_id.clone();
        if !self.claim_in_flight(&incident_id) {
            return Ok(());
        }
        // Read again under the claim: another task may have finished it meanwhile.
        let result = match store.remediation(id).await? {
            Some(r)
                if matches!(
                    r.state,
                    RemediationState::Pending | RemediationState::AwaitingApproval
                ) =>
            {
                self.resume_claimed(r).await
            }
            _ => Ok(()),
        };
        self.release_in_flight(&incident_id);
        result
    }

    async fn resume_claimed(&self, r: RemediationRecord) -> Result<(), EngineError> {
        let store = &self.inner.store;
        let id = r.id.as_str();
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
                    r.state,
                    Event::Skip,
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
            state: r.state,
            lease: None,
            changed: 0,
        })
        .await
    }

    /// Marks an incident as being worked on in this process; `false` if it already is.
    fn claim_in_flight(&self, incident_id: &str) -> bool {
        self.inner
            .in_flight
            .lock()
            .map(|mut s| s.insert(incident_id.to_owned()))
            .unwrap_or(false)
    }

    fn release_in_flight(&self, incident_id: &str) {
        if let Ok(mut s) = self.inner.in_flight.lock() {
            s.remove(incident_id);
        }
    }

    /// Decides for one incident and, if a rule matches, drives its remediation.
    /// Safe to call twice for one incident: only the first opens a remediation.
    pub async fn handle_incident(&self, incident_id: &str) -> Result<(), EngineError> {
        if !self.claim_in_flight(incident_id) {
            return Ok(());
        }
        let result = self.decide(incident_id).await;
        self.release_in_flight(incident_id);
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
            self.inner
                .metrics
                .incident_decided(Decision::NoRule.as_str());
            info!(incident = %incident_id, alertname = incident.alert.alertname(), "no rule matches");
            return Ok(());
        };
        let (target, found_through) = match self.resolve_target(rule, &incident.alert.labels).await
        {
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
                self.inner
                    .metrics
                    .incident_decided(Decision::NoTarget.as_str());
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
            owner: self.inner.owner.clone(),
        };
        let matched = json!({
            "rule": rule.name,
            "file": rule.file,
            "matchers": rule.matchers.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
            "target": target,
            "found_through": found_through,
            "incident_id": incident_id,
            "alert": incident.alert,
            "deliveries_so_far": incident.delivery_count,
        });
        let Some(id) = store.create_remediation(&new, &matched, Utc::now()).await? else {
            return Ok(());
        };
        crate::crash_point!("decide.remediation_created");
        self.inner
            .metrics
            .incident_decided(Decision::Remediation.as_str());
        info!(remediation = %id, rule = %rule.name, %target, "remediation opened");
        let mut run = Run {
            id,
            rule,
            target,
            incident,
            decisions: &decisions,
            state: RemediationState::Pending,
            lease: None,
            changed: 0,
        };
        if let Some(tripped) = self.storm_brake().await? {
            // The remediation that tripped the brake carries the one escalation.
            return self.finish(&mut run, tripped).await;
        }
        self.drive(run).await
    }

    /// Counts the remediations opened in the last minute (every replica's); past the
    /// brake's limit, pauses automation everywhere, unless the brake holds already.
    /// Exactly one remediation trips it (the store refuses a second brake while one is
    /// in force, and a second in the same minute by its id), and that one gets the ending
    /// that tells humans; every other remediation meets the pause before its write.
    async fn storm_brake(&self) -> Result<Option<ladder::Finish>, EngineError> {
        let Some(brake) = self.inner.limits.storm_brake else {
            return Ok(None);
        };
        let store = &self.inner.store;
        let now = Utc::now();
        let reading = store
            .storm_reading(now - chrono::Duration::minutes(1), now)
            .await?;
        // A brake that holds already pauses this remediation before its write; only the
        // first past the limit trips one (and the store settles a race between replicas).
        let opened = reading.opened;
        if opened <= i64::from(brake.per_minute) || reading.braking {
            return Ok(None);
        }
        let pause_for =
            chrono::Duration::from_std(brake.pause_for).unwrap_or(chrono::Duration::minutes(15));
        let until = now + pause_for;
        let reason = format!(
            "storm brake: {opened} remediations opened in the last minute, more than {}; automation is paused everywhere until {} (salve resume ends it sooner)",
            brake.per_minute,
            crate::store::timestamp(until)
        );
        let minute = now.timestamp() / 60;
        let new = crate::store::pauses::NewPause {
            namespace: None,
            reason: reason.clone(),
            by: format!("salve's storm brake ({})", host_name()),
            until: Some(until),
        };
        if !store
            .trip_brake(&format!("storm-brake-{minute}"), &new, now)
            .await?
        {
            return Ok(None);
        }
        self.inner.metrics.refused("storm_brake");
        warn!(%reason, "storm brake tripped");
        Ok(Some(
            ladder::Finish::new(
                Event::Pause,
                "paused: the storm brake tripped as this remediation opened",
                vec![reason.clone()],
            )
            .escalating(reason),
        ))
    }
}

impl Engine {
    /// The rule's target for this alert: named by its labels, or (`target.pod`) the
    /// workload that runs the Pod they name, looked up through the Pod's and its
    /// ReplicaSet's owner references; with the objects read on the way. The lookup is a
    /// read only, and offline there is no cluster to ask, so no target.
    async fn resolve_target(
        &self,
        rule: &Rule,
        labels: &crate::alert::Labels,
    ) -> Result<(TargetRef, Option<Vec<String>>), String> {
        let namespace = rule.target.namespace.render(labels)?;
        let pod = match &rule.target.by {
            crate::rules::TargetBy::Name(name) => {
                let name = name.render(labels)?;
                return Ok((TargetRef::new(rule.target.kind, &namespace, &name)?, None));
            }
            crate::rules::TargetBy::Pod(pod) => pod.render(labels)?,
        };
        let Some(cluster) = &self.inner.cluster else {
            return Err(format!(
                "the target is the workload running Pod {namespace}/{pod}, and salve runs offline, so it cannot look that up"
            ));
        };
        let found = tokio::time::timeout(
            self.inner.limits.call_timeout,
            cluster.pod_owner(&namespace, &pod),
        )
        .await
        .map_err(|_| {
            format!(
                "looking up the workload running Pod {namespace}/{pod} took longer than {}s",
                self.inner.limits.call_timeout.as_secs()
            )
        })?
        .map_err(|e| format!("cannot look up the workload running Pod {namespace}/{pod}: {e}"))?;
        let target = found.workload?;
        if target.kind != rule.target.kind {
            return Err(format!(
                "Pod {namespace}/{pod} is run by {target}, and the rule acts on a {}",
                rule.target.kind
            ));
        }
        Ok((target, Some(found.chain)))
    }
}

fn stored_target(kind: &str, namespace: &str, name: &str) -> Option<TargetRef> {
    TargetRef::new(WorkloadKind::parse(kind)?, namespace, name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::IncidentSink;

    #[tokio::test]
    async fn an_incident_is_queued_once_until_it_is_taken() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let queue = WorkQueue {
            tx,
            queued: Arc::default(),
            metrics: Arc::new(Metrics::new()),
        };
        // Recovery offers what the webhook already queued, again and again.
        queue.submit(vec!["a".into(), "b".into()]);
        queue.submit(vec!["a".into(), "b".into(), "c".into()]);
        let mut got = Vec::new();
        while let Ok(id) = rx.try_recv() {
            queue.taken(&id);
            got.push(id);
        }
        assert_eq!(got, ["a", "b", "c"]);
        // Taken off the queue, it may be offered again (it may still be undecided).
        queue.submit(vec!["a".into()]);
        assert_eq!(rx.try_recv().ok().as_deref(), Some("a"));
    }
}
