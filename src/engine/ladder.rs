//! Driving one remediation: lock, checks, then the rule's ladder of steps.
//!
//! Each step is read → plan → guard → dry-run → write (a conflict starts the step over
//! on fresh state, policy included) → verify. A verified heal ends the remediation; a
//! step that did not heal leads to the next step; a step that made things worse is
//! reverted (when the rule says so) and escalated; an exhausted ladder, a policy that
//! denies every step, or an action that errors is escalated. Every step is an attempt
//! row, so later decisions can learn from it.

use std::future::Future;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tracing::{info, warn};

use super::input::{self, HISTORY_WINDOW};
use super::plan::{self, Plan, Planned};
use super::{Decisions, Engine, EngineError};
use crate::alert::AlertStatus;
use crate::cluster::{ApiCall, Change, ClusterError, TargetRef, Workload};
use crate::notify::Escalation;
use crate::remediation::{Mode, RemediationState};
use crate::rules::{ActionSpec, Rule, StepOrder};
use crate::store::EventKind;
use crate::store::incidents::IncidentRecord;
use crate::store::learning::{AttemptOutcome, NewAttempt, StepStats};
use crate::verify::{self, Outcome};

/// How far back learning looks.
pub const LEARNING_WINDOW: chrono::Duration = chrono::Duration::days(30);

/// How a remediation ends.
pub(super) struct Finish {
    state: RemediationState,
    summary: String,
    reasons: Vec<String>,
    /// Tell humans, with this reason.
    escalate: Option<String>,
}

impl Finish {
    fn new(state: RemediationState, summary: impl Into<String>, reasons: Vec<String>) -> Finish {
        Finish {
            state,
            summary: summary.into(),
            reasons,
            escalate: None,
        }
    }

    fn escalating(mut self, reason: impl Into<String>) -> Finish {
        self.escalate = Some(reason.into());
        self
    }
}

/// One remediation being driven.
pub(super) struct Run<'a> {
    pub id: String,
    pub rule: &'a Rule,
    pub target: TargetRef,
    pub incident: IncidentRecord,
    pub decisions: &'a Decisions,
    pub state: RemediationState,
}

/// How one step went before verification.
enum Step {
    /// The change was made; `before` is the workload as it was, for a revert.
    Applied {
        plan: Box<Plan>,
        before: Box<Workload>,
        acted_at: DateTime<Utc>,
    },
    /// Policy said no: the plan's description and the reasons.
    Denied(String, Vec<String>),
    NoOp(String),
    Failed(String),
    /// Dry-run or offline: salve only records what it would do.
    WouldAct(Finish),
    /// Another worker claimed this remediation.
    ClaimedElsewhere,
}

impl Engine {
    /// Takes the lock, runs the remediation to an end state, records it, releases the lock.
    pub(super) async fn drive(&self, mut run: Run<'_>) -> Result<(), EngineError> {
        let store = &self.inner.store;
        let now = Utc::now();
        // The lease must outlast the whole ladder (every step's verification window), or a
        // second remediation could take the workload while this one still verifies.
        let ladder = run.rule.verify.within * run.rule.steps.len() as u32;
        let lease = chrono::Duration::from_std(self.inner.limits.lock_lease + ladder)
            .unwrap_or(chrono::Duration::hours(1));
        if let Some(holder) = store
            .acquire_target_lock(&run.target, &run.id, now, now + lease)
            .await?
        {
            let reason = format!("{} is being remediated by {holder}", run.target);
            let skip = Finish::new(
                RemediationState::Skipped,
                format!("skipped: {reason}"),
                vec![reason],
            );
            return self.finish(&mut run, skip).await;
        }
        let finish = match self.preconditions(&run).await? {
            Some(skip) => Some(skip),
            None => self.ladder(&mut run).await?,
        };
        // `None`: another worker claimed this remediation and holds the lock for it.
        if let Some(finish) = finish {
            self.finish(&mut run, finish).await?;
            store.release_target_lock(&run.target, &run.id).await?;
        }
        Ok(())
    }

    pub(super) async fn finish(&self, run: &mut Run<'_>, f: Finish) -> Result<(), EngineError> {
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
        if let Some(reason) = &f.escalate {
            self.escalate(run, reason, &f.summary).await?;
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

    /// The rule's steps in the order to try them.
    async fn ordered_steps<'r>(&self, run: &Run<'r>) -> Result<Vec<&'r ActionSpec>, EngineError> {
        let mut steps: Vec<&ActionSpec> = run.rule.steps.iter().collect();
        if run.rule.order == StepOrder::Learned {
            let stats = self.stats(run).await?;
            let healed = |s: &ActionSpec| {
                stats
                    .iter()
                    .find(|x| x.step_key == s.key())
                    .map_or(0, |x| x.healed)
            };
            // Stable: ties keep the written order.
            steps.sort_by_key(|s| std::cmp::Reverse(healed(s)));
        }
        Ok(steps)
    }

    async fn stats(&self, run: &Run<'_>) -> Result<Vec<StepStats>, EngineError> {
        let since = Utc::now() - LEARNING_WINDOW;
        Ok(self
            .inner
            .store
            .step_stats(run.incident.alert.alertname(), &run.target, since)
            .await?)
    }

    /// Climbs the ladder until a step heals, something goes wrong, or the steps run out.
    async fn ladder(&self, run: &mut Run<'_>) -> Result<Option<Finish>, EngineError> {
        let steps = self.ordered_steps(run).await?;
        let total = steps.len();
        let (mut acted, mut denials, mut denied_plans, mut last) =
            (0u32, Vec::new(), Vec::new(), String::new());
        for (index, spec) in steps.into_iter().enumerate() {
            if acted >= run.rule.max_attempts {
                break;
            }
            let started = Utc::now();
            self.event(
                run,
                EventKind::StepStarted,
                json!({"step": index + 1, "of": total, "step_key": spec.key()}),
            )
            .await?;
            let step = self.attempt(run, spec, index, total).await?;
            let (outcome, acted_at, detail) = match &step {
                Step::ClaimedElsewhere => return Ok(None),
                Step::WouldAct(_) => (None, None, Value::Null),
                Step::Denied(plan, r) => (
                    Some(AttemptOutcome::Denied),
                    None,
                    json!({"plan": plan, "reasons": r}),
                ),
                Step::NoOp(r) => (Some(AttemptOutcome::Skipped), None, json!({"reason": r})),
                Step::Failed(r) => (Some(AttemptOutcome::Failed), None, json!({"reason": r})),
                Step::Applied { acted_at, .. } => (None, Some(*acted_at), Value::Null),
            };
            if let Some(outcome) = outcome {
                self.record_attempt(run, index, spec, started, acted_at, outcome, None, detail)
                    .await?;
            }
            match step {
                Step::ClaimedElsewhere => return Ok(None),
                Step::WouldAct(f) => return Ok(Some(f)),
                Step::Denied(plan, reasons) => {
                    denied_plans.push(plan);
                    denials.extend(reasons);
                }
                Step::NoOp(reason) => last = reason,
                Step::Failed(reason) => {
                    let f = Finish::new(
                        RemediationState::Failed,
                        format!("failed: {reason}"),
                        vec![reason.clone()],
                    );
                    return Ok(Some(f.escalating(reason)));
                }
                Step::Applied {
                    plan,
                    before,
                    acted_at,
                } => {
                    acted += 1;
                    let (outcome, evidence) = self.verify(run, acted_at).await?;
                    let (kind, seconds) = match &outcome {
                        Outcome::Healed { seconds } => (AttemptOutcome::Healed, Some(*seconds)),
                        Outcome::NotHealed(_) => (AttemptOutcome::NotHealed, None),
                        Outcome::RolloutFailed(_) | Outcome::MadeWorse(_) => {
                            (AttemptOutcome::RolloutFailed, None)
                        }
                        Outcome::Unavailable(_) => (AttemptOutcome::VerificationUnavailable, None),
                    };
                    let detail = json!({"plan": plan.description, "outcome": format!("{outcome:?}"), "evidence": evidence});
                    self.record_attempt(
                        run,
                        index,
                        spec,
                        started,
                        Some(acted_at),
                        kind,
                        seconds,
                        detail,
                    )
                    .await?;
                    match outcome {
                        Outcome::Healed { seconds } => {
                            let summary = format!(
                                "healed: {} (verified after {seconds:.1}s)",
                                plan.description
                            );
                            return Ok(Some(Finish::new(
                                RemediationState::Healed,
                                summary,
                                vec![],
                            )));
                        }
                        Outcome::NotHealed(why) => last = format!("{}: {why}", plan.description),
                        Outcome::RolloutFailed(why) | Outcome::MadeWorse(why) => {
                            let reverted = self.revert(run, &plan, &before).await?;
                            let reason =
                                format!("{} made things worse: {why}{reverted}", plan.description);
                            let f = Finish::new(
                                RemediationState::Escalated,
                                format!("escalated: {reason}"),
                                vec![reason.clone()],
                            );
                            return Ok(Some(f.escalating(reason)));
                        }
                        Outcome::Unavailable(why) => {
                            let reason = format!("cannot verify {}: {why}", plan.description);
                            let f = Finish::new(
                                RemediationState::Escalated,
                                format!("escalated: {reason}"),
                                vec![reason.clone()],
                            );
                            return Ok(Some(f.escalating(reason)));
                        }
                    }
                }
            }
        }
        Ok(Some(self.exhausted(
            run,
            acted,
            (denied_plans, denials),
            last,
        )))
    }

    fn exhausted(
        &self,
        run: &Run<'_>,
        acted: u32,
        (plans, denials): (Vec<String>, Vec<String>),
        last: String,
    ) -> Finish {
        if acted == 0 && !plans.is_empty() {
            let summary = match plans.as_slice() {
                [only] => format!("denied: {only}"),
                _ => format!(
                    "denied: all {} steps of rule {} for {}",
                    plans.len(),
                    run.rule.name,
                    run.target
                ),
            };
            let why = format!("policy denied every step: {}", denials.join("; "));
            return Finish::new(RemediationState::Denied, summary, denials).escalating(why);
        }
        if acted == 0 {
            return Finish::new(
                RemediationState::Skipped,
                format!("skipped: {last}"),
                vec![last],
            );
        }
        let reason = format!(
            "not healed after {acted} step(s) of rule {}; last: {last}",
            run.rule.name
        );
        let mut reasons = vec![reason.clone()];
        reasons.extend(denials);
        Finish::new(
            RemediationState::Escalated,
            format!("escalated: {reason}"),
            reasons,
        )
        .escalating(reason)
    }

    /// One step up to the write: read → plan → guard → dry-run → write, with conflict retries.
    async fn attempt(
        &self,
        run: &mut Run<'_>,
        spec: &ActionSpec,
        index: usize,
        total: usize,
    ) -> Result<Step, EngineError> {
        let retries = self.inner.limits.conflict_retries;
        for _ in 0..=retries {
            let (workload, plan) = match self.read_and_plan(run, spec).await? {
                Ok(pair) => pair,
                Err(step) => return Ok(step),
            };
            if let Some(reasons) = self
                .guard(run, spec, workload.as_ref(), &plan, (index, total))
                .await?
            {
                return Ok(Step::Denied(plan.description, reasons));
            }
            let (Some(cluster), Some(workload), Some(change)) =
                (&self.inner.cluster, &workload, &plan.change)
            else {
                let why =
                    "offline mode: no Kubernetes configuration was found, so no call was made"
                        .to_owned();
                return Ok(Step::WouldAct(Finish::new(
                    RemediationState::DryRun,
                    format!("would {}", plan.description),
                    vec![why],
                )));
            };
            match self
                .call(
                    run,
                    ApiCall::write(&run.target, change, true),
                    cluster.write(workload, change, true),
                )
                .await?
            {
                Err(e) if e.is_conflict() => continue,
                Err(e) => {
                    return Ok(Step::Failed(format!(
                        "server-side dry-run of \"{}\" was rejected: {e}",
                        plan.description
                    )));
                }
                Ok(()) if self.inner.mode == Mode::DryRun => {
                    let why = "dry-run mode: the API server accepted the change as a dry-run; nothing was changed".to_owned();
                    return Ok(Step::WouldAct(Finish::new(
                        RemediationState::DryRun,
                        format!("would {}", plan.description),
                        vec![why],
                    )));
                }
                Ok(()) => {}
            }
            if run.state != RemediationState::Executing {
                let from = run.state;
                let summary = format!("executing: {}", plan.description);
                if !self
                    .inner
                    .store
                    .transition(
                        &run.id,
                        from,
                        RemediationState::Executing,
                        &summary,
                        &[],
                        Utc::now(),
                    )
                    .await?
                {
                    return Ok(Step::ClaimedElsewhere);
                }
                run.state = RemediationState::Executing;
                self.inner.store.begin_step(&run.id, spec.kind()).await?;
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
                    let summary = format!("verifying: {}", plan.description);
                    self.inner
                        .store
                        .transition(
                            &run.id,
                            RemediationState::Executing,
                            RemediationState::Verifying,
                            &summary,
                            &[],
                            Utc::now(),
                        )
                        .await?;
                    run.state = RemediationState::Verifying;
                    return Ok(Step::Applied {
                        plan: Box::new(plan),
                        before: Box::new(workload.clone()),
                        acted_at: Utc::now(),
                    });
                }
                Err(e) if e.is_conflict() => continue,
                Err(e) => {
                    return Ok(Step::Failed(format!(
                        "\"{}\" was rejected: {e}",
                        plan.description
                    )));
                }
            }
        }
        Ok(Step::Failed(format!(
            "{} kept changing under salve: {} conflicting writes in a row",
            run.target,
            retries + 1
        )))
    }

    /// Reads the workload (and its revisions, for a rollback) and plans the change.
    async fn read_and_plan(
        &self,
        run: &Run<'_>,
        spec: &ActionSpec,
    ) -> Result<Result<(Option<Workload>, Plan), Step>, EngineError> {
        let mut revisions = Vec::new();
        let workload = match &self.inner.cluster {
            None => None,
            Some(cluster) => {
                let w = match self
                    .call(run, ApiCall::read(&run.target), cluster.read(&run.target))
                    .await?
                {
                    Ok(w) => w,
                    Err(e) => {
                        return Ok(Err(Step::Failed(format!(
                            "cannot read {}: {e}",
                            run.target
                        ))));
                    }
                };
                if *spec == ActionSpec::Rollback {
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
                            return Ok(Err(Step::Failed(format!(
                                "cannot list the revisions of {}: {e}",
                                run.target
                            ))));
                        }
                    }
                }
                Some(w)
            }
        };
        match plan::plan(spec, &run.target, workload.as_ref(), &revisions, Utc::now()) {
            Ok(Planned::Act(plan)) => Ok(Ok((workload, plan))),
            Ok(Planned::NoOp(reason)) => Ok(Err(Step::NoOp(reason))),
            Err(e) => Ok(Err(Step::Failed(format!(
                "cannot {} {}: {e}",
                spec.kind(),
                run.target
            )))),
        }
    }

    /// Builds the policy input, evaluates it, and records both with the verdict.
    /// Returns the deny reasons, or `None` when allowed.
    async fn guard(
        &self,
        run: &Run<'_>,
        spec: &ActionSpec,
        workload: Option<&Workload>,
        plan: &Plan,
        (index, total): (usize, usize),
    ) -> Result<Option<Vec<String>>, EngineError> {
        let now = Utc::now();
        let history = self
            .inner
            .store
            .target_history(&run.target, now - HISTORY_WINDOW, &run.id)
            .await?;
        let stats = self.stats(run).await?;
        let mut doc = input::build(&input::InputParts {
            now,
            mode: self.inner.mode,
            alert: &run.incident.alert,
            rule: run.rule,
            target: &run.target,
            plan,
            workload,
            history: &history,
        });
        doc["history"]["stats"] = input::stats(&stats, spec, LEARNING_WINDOW);
        doc["step"] = json!({"index": index + 1, "of": total, "key": spec.key()});
        let verdict = run.decisions.policy.evaluate(&doc);
        self.event(
            run,
            EventKind::PolicyEvaluated,
            json!({"input": doc, "verdict": verdict}),
        )
        .await?;
        Ok((!verdict.allowed).then_some(verdict.reasons))
    }

    async fn verify(
        &self,
        run: &Run<'_>,
        acted_at: DateTime<Utc>,
    ) -> Result<(Outcome, Value), EngineError> {
        let Some(cluster) = &self.inner.cluster else {
            return Ok((Outcome::Unavailable("no cluster".into()), Value::Null));
        };
        let check = verify::Check {
            remediation_id: &run.id,
            incident_id: &run.incident.id,
            alert: &run.incident.alert,
            workload: &run.target,
            acted_at,
            spec: run.rule.verify,
        };
        let (outcome, evidence) = verify::verify(
            &check,
            cluster.as_ref(),
            &self.inner.store,
            self.inner.prometheus.as_deref(),
            self.inner.limits.call_timeout,
        )
        .await?;
        let detail = json!({"outcome": format!("{outcome:?}"), "evidence": evidence});
        self.event(run, EventKind::Verification, detail.clone())
            .await?;
        Ok((outcome, detail))
    }

    /// Puts back what salve changed, when the rule asks; returns a note for the reason.
    async fn revert(
        &self,
        run: &Run<'_>,
        plan: &Plan,
        before: &Workload,
    ) -> Result<String, EngineError> {
        let Some(cluster) = &self.inner.cluster else {
            return Ok(String::new());
        };
        if !run.rule.revert_on_failure {
            return Ok("; not reverted (the rule does not ask for revert_on_failure)".into());
        }
        let undo = match &plan.change {
            Some(Change::Scale { .. }) => Change::Scale {
                replicas: before.replicas,
            },
            Some(Change::Rollback { .. }) => Change::Rollback {
                to_revision: before.revision.unwrap_or_default(),
                template: crate::cluster::rollback::without_hash_label(&before.template),
                annotations: before.annotations.clone(),
            },
            _ => return Ok("; a restart cannot be reverted".into()),
        };
        let now = match self
            .call(run, ApiCall::read(&run.target), cluster.read(&run.target))
            .await?
        {
            Ok(w) => w,
            Err(e) => {
                return self
                    .revert_failed(run, format!("cannot read {}: {e}", run.target))
                    .await;
            }
        };
        for dry_run in [true, false] {
            if let Err(e) = self
                .call(
                    run,
                    ApiCall::write(&run.target, &undo, dry_run),
                    cluster.write(&now, &undo, dry_run),
                )
                .await?
            {
                return self
                    .revert_failed(run, format!("the revert was rejected: {e}"))
                    .await;
            }
        }
        let what = match &undo {
            Change::Scale { replicas } => format!("scaled back to {replicas} replicas"),
            _ => "restored the previous pod template".to_owned(),
        };
        self.event(
            run,
            EventKind::Revert,
            json!({"reverted": true, "what": what}),
        )
        .await?;
        Ok(format!("; salve reverted its change ({what})"))
    }

    async fn revert_failed(&self, run: &Run<'_>, why: String) -> Result<String, EngineError> {
        self.event(
            run,
            EventKind::Revert,
            json!({"reverted": false, "error": why}),
        )
        .await?;
        Ok(format!("; the revert failed: {why}"))
    }

    /// Tells humans about this run, once per remediation.
    async fn escalate(
        &self,
        run: &Run<'_>,
        reason: &str,
        summary: &str,
    ) -> Result<(), EngineError> {
        let escalation = Escalation {
            remediation_id: run.id.clone(),
            incident_id: run.incident.id.clone(),
            rule: run.rule.name.clone(),
            target: run.target.clone(),
            reason: reason.to_owned(),
            summary: summary.to_owned(),
            alert: run.incident.alert.clone(),
            audit_url: self.audit_url(&run.id),
        };
        self.deliver_escalation(&escalation).await
    }

    /// A link to a remediation's audit record.
    pub(super) fn audit_url(&self, id: &str) -> String {
        format!(
            "{}/api/v1/remediations/{id}",
            self.inner.external_url.trim_end_matches('/')
        )
    }

    /// Sends an escalation through every notifier, unless this remediation already had one.
    pub(super) async fn deliver_escalation(&self, e: &Escalation) -> Result<(), EngineError> {
        let store = &self.inner.store;
        let id = &e.remediation_id;
        if !store.claim_escalation(id, &e.reason, Utc::now()).await? {
            return Ok(());
        }
        let mut delivered = Vec::new();
        for notifier in &self.inner.notifiers {
            let result = notifier.notify(e).await;
            if let Err(err) = &result {
                warn!(remediation = %id, notifier = %notifier.name(), error = %err, "escalation not delivered");
            }
            delivered
                .push(json!({"to": notifier.name(), "ok": result.is_ok(), "error": result.err()}));
        }
        if self.inner.notifiers.is_empty() {
            warn!(remediation = %id, "escalation recorded, but no notifier is configured (--alertmanager-url)");
        }
        let delivered = Value::Array(delivered);
        store.set_escalation_delivery(id, &delivered).await?;
        let detail = json!({"reason": e.reason, "delivered": delivered});
        Ok(store
            .append_event(id, EventKind::Escalation, &detail, Utc::now())
            .await?)
    }

    #[allow(clippy::too_many_arguments)]
    async fn record_attempt(
        &self,
        run: &Run<'_>,
        index: usize,
        spec: &ActionSpec,
        started: DateTime<Utc>,
        acted_at: Option<DateTime<Utc>>,
        outcome: AttemptOutcome,
        seconds_to_heal: Option<f64>,
        detail: Value,
    ) -> Result<(), EngineError> {
        let attempt = NewAttempt {
            remediation_id: &run.id,
            step: index as u32 + 1,
            alertname: run.incident.alert.alertname(),
            target: &run.target,
            action: spec.kind(),
            step_key: spec.key(),
            started_at: started,
            acted_at,
            outcome,
            seconds_to_heal,
            detail,
        };
        Ok(self
            .inner
            .store
            .record_attempt(&attempt, Utc::now())
            .await?)
    }

    async fn event(
        &self,
        run: &Run<'_>,
        kind: EventKind,
        detail: Value,
    ) -> Result<(), EngineError> {
        Ok(self
            .inner
            .store
            .append_event(&run.id, kind, &detail, Utc::now())
            .await?)
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
        self.event(run, EventKind::KubeCall, detail).await?;
        Ok(result)
    }
}
