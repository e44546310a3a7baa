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
pub mod plan;

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use chrono::Utc;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::alert::AlertStatus;
use crate::cluster::{ApiCall, Cluster, ClusterError, TargetRef, Workload, WorkloadKind};
use crate::policy::PolicySet;
use crate::remediation::{Mode, RemediationState};
use crate::rules::{Rule, RuleSet};
use crate::store::incidents::{Decision, IncidentRecord};
use crate::store::{EventKind, NewRemediation, Store, StoreError};
pub use input::{HISTORY_WINDOW, INPUT_VERSION};
use plan::{Plan, Planned};

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

/// How a remediation ends.
struct Finish {
    state: RemediationState,
    summary: String,
    reasons: Vec<String>,
}

impl Finish {
    fn new(state: RemediationState, summary: impl Into<String>, reasons: Vec<String>) -> Finish {
        Finish {
            state,
            summary: summary.into(),
            reasons,
        }
    }
}

/// One remediation being driven.
struct Run<'a> {
    id: String,
    rule: &'a Rule,
    target: TargetRef,
    incident: IncidentRecord,
    decisions: &'a Decisions,
    state: RemediationState,
}

/// The engine; clone it freely (it is a handle).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    cluster: Option<Arc<dyn Cluster>>,
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
        cluster: Option<Arc<dyn Cluster>>,
        dry_run: bool,
        decisions: Arc<ArcSwap<Decisions>>,
        limits: Limits,
    ) -> Engine {
        let mode = match (&cluster, dry_run) {
            (None, _) => Mode::Offline,
            (Some(_), true) => Mode::DryRun,
            (Some(_), false) => Mode::Live,
        };
        Engine {
            inner: Arc::new(Inner {
                store,
                cluster,
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
        for id in store
            .remediations_in_state(RemediationState::Executing)
            .await?
        {
            let summary =
                "salve stopped while sending this change; it was not re-sent. Check the workload.";
            store
                .transition(
                    &id,
                    RemediationState::Executing,
                    RemediationState::Interrupted,
                    summary,
                    &["interrupted by a restart during execution".to_owned()],
                    Utc::now(),
                )
                .await?;
            if let Some(r) = store.remediation(&id).await? {
                if let Some(t) = stored_target(&r.target.kind, &r.target.namespace, &r.target.name)
                {
                    store.release_target_lock(&t, &id).await?;
                }
            }
            warn!(remediation = %id, "marked interrupted: salve stopped while executing it");
        }
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
            action: rule.action.kind(),
            target: target.clone(),
            mode: self.inner.mode,
            summary: format!("{} {target}: pending", rule.action.kind()),
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

    /// Takes the lock, runs the remediation to an end state, records it, releases the lock.
    async fn drive(&self, mut run: Run<'_>) -> Result<(), EngineError> {
        let store = &self.inner.store;
        let now = Utc::now();
        let lease = chrono::Duration::from_std(self.inner.limits.lock_lease)
            .unwrap_or(chrono::Duration::minutes(10));
        if let Some(holder) = store
            .acquire_target_lock(&run.target, &run.id, now, now + lease)
            .await?
        {
            let reason = format!("{} is being remediated by {holder}", run.target);
            return self
                .finish(
                    &mut run,
                    Finish::new(
                        RemediationState::Skipped,
                        format!("skipped: {reason}"),
                        vec![reason],
                    ),
                )
                .await;
        }
        let finish = match self.preconditions(&run).await? {
            Some(skip) => Some(skip),
            None => self.act(&mut run).await?,
        };
        // `None`: another worker claimed this remediation and holds the lock for it.
        if let Some(finish) = finish {
            self.finish(&mut run, finish).await?;
            store.release_target_lock(&run.target, &run.id).await?;
        }
        Ok(())
    }

    async fn finish(&self, run: &mut Run<'_>, f: Finish) -> Result<(), EngineError> {
        let moved = self
            .inner
            .store
            .transition(
                &run.id,
                run.state,
                f.state,
                &f.summary,
                &f.reasons,
                Utc::now(),
            )
            .await?;
        if moved {
            run.state = f.state;
            info!(remediation = %run.id, state = %f.state, summary = %f.summary, "remediation finished");
        }
        Ok(())
    }

    /// The checks that need no cluster: still firing, global rate, target cooldown.
    async fn preconditions(&self, run: &Run<'_>) -> Result<Option<Finish>, EngineError> {
        let store = &self.inner.store;
        let now = Utc::now();
        let skip = |reason: String| {
            Some(Finish::new(
                RemediationState::Skipped,
                format!("skipped: {reason}"),
                vec![reason],
            ))
        };
        if let Some(i) = store.incident(&run.incident.id).await? {
            if i.status == AlertStatus::Resolved {
                return Ok(skip("the alert resolved before salve acted".into()));
            }
        }
        if self.inner.mode == Mode::Live {
            let limit = self.inner.limits.max_actions_per_hour;
            let recent = store
                .actions_since(now - chrono::Duration::hours(1))
                .await?;
            if recent >= i64::from(limit) {
                return Ok(skip(format!(
                    "salve already made {recent} changes in the last hour (limit {limit}); a human should look"
                )));
            }
        }
        if let Some((last_id, acted_at)) = store.last_action_on_target(&run.target).await? {
            let acted = crate::store::parse_timestamp(&acted_at)?;
            let cooldown =
                chrono::Duration::from_std(run.rule.cooldown).unwrap_or(chrono::Duration::zero());
            if acted + cooldown > now {
                return Ok(skip(format!(
                    "cooldown: salve changed {} at {acted_at} (remediation {last_id}); rule {} waits {} until {}",
                    run.target,
                    run.rule.name,
                    humantime::format_duration(run.rule.cooldown),
                    crate::store::timestamp(acted + cooldown)
                )));
            }
        }
        Ok(None)
    }

    /// Read → plan → guard → write, starting over on a conflict.
    /// `None` means another worker claimed the remediation; it will finish it.
    async fn act(&self, run: &mut Run<'_>) -> Result<Option<Finish>, EngineError> {
        let retries = self.inner.limits.conflict_retries;
        for _ in 0..=retries {
            let (workload, plan) = match self.read_and_plan(run).await? {
                Ok(pair) => pair,
                Err(finish) => return Ok(Some(finish)),
            };
            if let Some(denied) = self.guard(run, workload.as_ref(), &plan).await? {
                return Ok(Some(denied));
            }
            let (Some(cluster), Some(workload), Some(change)) =
                (&self.inner.cluster, &workload, &plan.change)
            else {
                let why =
                    "offline mode: no Kubernetes configuration was found, so no call was made"
                        .to_owned();
                return Ok(Some(Finish::new(
                    RemediationState::DryRun,
                    format!("would {}", plan.description),
                    vec![why],
                )));
            };
            let dry = self
                .call(
                    run,
                    ApiCall::write(&run.target, change, true),
                    cluster.write(workload, change, true),
                )
                .await?;
            match dry {
                Err(e) if e.is_conflict() => continue,
                Err(e) => {
                    return Ok(Some(failed(
                        format!(
                            "server-side dry-run of \"{}\" was rejected",
                            plan.description
                        ),
                        &e,
                    )));
                }
                Ok(()) if self.inner.mode == Mode::DryRun => {
                    let why = "dry-run mode: the API server accepted the change as a dry-run; nothing was changed".to_owned();
                    return Ok(Some(Finish::new(
                        RemediationState::DryRun,
                        format!("would {}", plan.description),
                        vec![why],
                    )));
                }
                Ok(()) => {}
            }
            if run.state == RemediationState::Pending {
                let claimed = self
                    .inner
                    .store
                    .transition(
                        &run.id,
                        RemediationState::Pending,
                        RemediationState::Executing,
                        &format!("executing: {}", plan.description),
                        &[],
                        Utc::now(),
                    )
                    .await?;
                if !claimed {
                    return Ok(None);
                }
                run.state = RemediationState::Executing;
            }
            match self
                .call(
                    run,
                    ApiCall::write(&run.target, change, false),
                    cluster.write(workload, change, false),
                )
                .await?
            {
                Ok(()) => {
                    return Ok(Some(Finish::new(
                        RemediationState::Applied,
                        format!("applied: {}", plan.description),
                        vec![],
                    )));
                }
                Err(e) if e.is_conflict() => continue,
                Err(e) => {
                    return Ok(Some(failed(
                        format!("\"{}\" was rejected", plan.description),
                        &e,
                    )));
                }
            }
        }
        let reason = format!(
            "{} kept changing under salve: {} conflicting writes in a row",
            run.target,
            retries + 1
        );
        Ok(Some(Finish::new(
            RemediationState::Failed,
            format!("failed: {reason}"),
            vec![reason],
        )))
    }

    /// Reads the workload (and its revisions, for a rollback) and plans the change.
    async fn read_and_plan(
        &self,
        run: &Run<'_>,
    ) -> Result<Result<(Option<Workload>, Plan), Finish>, EngineError> {
        let mut revisions = Vec::new();
        let workload = match &self.inner.cluster {
            None => None,
            Some(cluster) => {
                let w = match self
                    .call(run, ApiCall::read(&run.target), cluster.read(&run.target))
                    .await?
                {
                    Ok(w) => w,
                    Err(e) => return Ok(Err(failed(format!("cannot read {}", run.target), &e))),
                };
                if run.rule.action == crate::rules::ActionSpec::Rollback {
                    match self
                        .call(
                            run,
                            ApiCall::list_revisions(&run.target),
                            cluster.revisions(&w),
                        )
                        .await?
                    {
                        Ok(r) => revisions = r,
                        Err(e) => {
                            return Ok(Err(failed(
                                format!("cannot list the revisions of {}", run.target),
                                &e,
                            )));
                        }
                    }
                }
                Some(w)
            }
        };
        match plan::plan(
            &run.rule.action,
            &run.target,
            workload.as_ref(),
            &revisions,
            Utc::now(),
        ) {
            Ok(Planned::Act(plan)) => Ok(Ok((workload, plan))),
            Ok(Planned::NoOp(reason)) => Ok(Err(Finish::new(
                RemediationState::Skipped,
                format!("skipped: {reason}"),
                vec![reason],
            ))),
            Err(e) => Ok(Err(failed(
                format!("cannot {} {}", run.rule.action.kind(), run.target),
                &e,
            ))),
        }
    }

    /// Builds the policy input, evaluates it, and records both with the verdict.
    async fn guard(
        &self,
        run: &Run<'_>,
        workload: Option<&Workload>,
        plan: &Plan,
    ) -> Result<Option<Finish>, EngineError> {
        let store = &self.inner.store;
        let now = Utc::now();
        let history = store
            .target_history(&run.target, now - HISTORY_WINDOW, &run.id)
            .await?;
        let doc = input::build(&input::InputParts {
            now,
            mode: self.inner.mode,
            alert: &run.incident.alert,
            rule: run.rule,
            target: &run.target,
            plan,
            workload,
            history: &history,
        });
        let verdict = run.decisions.policy.evaluate(&doc);
        store
            .append_event(
                &run.id,
                EventKind::PolicyEvaluated,
                &json!({"input": doc, "verdict": verdict}),
                Utc::now(),
            )
            .await?;
        if verdict.allowed {
            return Ok(None);
        }
        Ok(Some(Finish::new(
            RemediationState::Denied,
            format!("denied: {}", plan.description),
            verdict.reasons,
        )))
    }

    /// Runs one API call with a time limit and records it on the timeline.
    async fn call<T>(
        &self,
        run: &Run<'_>,
        call: ApiCall,
        fut: impl Future<Output = Result<T, ClusterError>>,
    ) -> Result<Result<T, ClusterError>, EngineError> {
        let started = Instant::now();
        let result = match tokio::time::timeout(self.inner.limits.call_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(ClusterError::Transport(format!(
                "no answer within {}s",
                self.inner.limits.call_timeout.as_secs()
            ))),
        };
        let (status, message): (Value, String) = match &result {
            Ok(_) => (json!(200), String::new()),
            Err(e) => (json!(e.code()), e.to_string()),
        };
        let detail = json!({
            "verb": call.verb,
            "path": call.path,
            "dry_run": call.dry_run,
            "status": status,
            "error": message,
            "duration_ms": started.elapsed().as_millis() as u64,
        });
        self.inner
            .store
            .append_event(&run.id, EventKind::KubeCall, &detail, Utc::now())
            .await?;
        Ok(result)
    }
}

fn failed(what: String, e: &ClusterError) -> Finish {
    let reason = format!("{what}: {e}");
    Finish::new(
        RemediationState::Failed,
        format!("failed: {reason}"),
        vec![reason],
    )
}

fn render_target(rule: &Rule, labels: &crate::alert::Labels) -> Result<TargetRef, String> {
    let namespace = rule.target.namespace.render(labels)?;
    let name = rule.target.name.render(labels)?;
    TargetRef::new(rule.target.kind, &namespace, &name)
}

fn stored_target(kind: &str, namespace: &str, name: &str) -> Option<TargetRef> {
    TargetRef::new(WorkloadKind::parse(kind)?, namespace, name).ok()
}
