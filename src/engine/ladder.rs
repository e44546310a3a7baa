//! Driving one remediation: lock, preconditions, then the rule's ladder of steps.
//!
//! Each step is taken by [`super::step`] (read → plan → admission → dry-run → write) and
//! then verified. A verified heal ends the remediation; a step that did not heal leads to
//! the next step, once the alert is confirmed still firing; a step that made things worse
//! is reverted (when the rule says so, by compare-and-revert) and escalated; an exhausted
//! ladder, a policy that denies every step, unverifiable evidence or an action that errors
//! is escalated. Every step is an attempt row, so later decisions can learn from it.
//!
//! Every way out of [`Engine::drive`] ends the remediation in a terminal state (which
//! releases its lock in the same transaction), except two that leave it owned on purpose:
//! shutdown (this replica stops before its next write; another resumes or settles the work
//! once this one is gone) and a store failure (the next recovery settles it).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tracing::info;

use super::plan::Plan;
use super::step::Step;
use super::{Decisions, Engine, EngineError};
use crate::alert::AlertStatus;
use crate::cluster::{TargetRef, Workload};
use crate::remediation::{Event, RemediationState};
use crate::rules::{ActionSpec, Rule, RuleMode, StepOrder};
use crate::store::EventKind;
use crate::store::incidents::IncidentRecord;
use crate::store::learning::{AttemptOutcome, StepStats};
use crate::store::pauses::Pause;
use crate::store::targets::{Lease, LockAttempt};
use crate::verify::{self, AlertSignal, Outcome};

/// How far back learning looks.
pub const LEARNING_WINDOW: chrono::Duration = chrono::Duration::days(30);

/// How a remediation ends.
pub(super) struct Finish {
    pub event: Event,
    pub summary: String,
    pub reasons: Vec<String>,
    /// Tell humans, with this reason.
    pub escalate: Option<String>,
}

impl Finish {
    pub fn new(event: Event, summary: impl Into<String>, reasons: Vec<String>) -> Finish {
        Finish {
            event,
            summary: summary.into(),
            reasons,
            escalate: None,
        }
    }

    /// Ends skipped on purpose: `reason` is the summary and the record's reason.
    pub fn skipped(reason: String) -> Finish {
        Finish::new(Event::Skip, format!("skipped: {reason}"), vec![reason])
    }

    /// Ends escalated: `reason` is what humans are told, and the summary.
    pub fn escalated(reason: String) -> Finish {
        Finish::new(
            Event::Escalate,
            format!("escalated: {reason}"),
            vec![reason.clone()],
        )
        .escalating(reason)
    }

    pub fn escalating(mut self, reason: impl Into<String>) -> Finish {
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
    /// The workload lock, once taken.
    pub lease: Option<Lease>,
    /// Real changes this remediation made so far (steps and reverts).
    pub changed: u32,
}

/// How the ladder ended: with a state to record, or by leaving the work to its next owner.
pub(super) enum Ending {
    Finish(Finish),
    /// Stop without a terminal state: shutting down, or another worker claimed the work.
    Leave(&'static str),
}

impl Engine {
    /// Takes the lock, runs the remediation to an end, records it.
    pub(super) async fn drive(&self, mut run: Run<'_>) -> Result<(), EngineError> {
        // A turn to drive (a storm's remediations were opened before they wait here). A
        // stop ends the wait: the remediation stays pending with this replica, and the
        // next owner resumes it once this one is gone.
        let turn = self.unless_stopping(self.inner.drives.acquire()).await;
        let Some(Ok(_turn)) = turn else {
            info!(remediation = %run.id, "stopping before this remediation's turn to drive; it stays pending for the next owner");
            return Ok(());
        };
        if run.rule.mode == RuleMode::Shadow {
            // A shadow rule writes nothing, so it takes no workload lock: watching an
            // alert for minutes must not make a real remediation of the workload skip.
            return self.drive_unlocked(run).await;
        }
        let store = &self.inner.store;
        let now = Utc::now();
        match store
            .acquire_target_lock(
                &run.target,
                &run.id,
                &self.inner.owner,
                now,
                self.lease_until(now),
            )
            .await?
        {
            LockAttempt::Taken(lease) => {
                run.lease = Some(lease);
                crate::crash_point!("drive.lock_taken");
            }
            LockAttempt::Busy(holder) => {
                self.inner.metrics.workload_busy();
                let reason = format!("{} is being remediated by {holder}", run.target);
                return self.finish(&mut run, Finish::skipped(reason)).await;
            }
        }
        self.drive_unlocked(run).await
    }

    /// Preconditions, the ladder, the record: the part of [`Engine::drive`] after the lock.
    async fn drive_unlocked(&self, mut run: Run<'_>) -> Result<(), EngineError> {
        let ending = match self.preconditions(&run).await? {
            Some(skip) => Ending::Finish(skip),
            None => self.ladder(&mut run).await?,
        };
        match ending {
            Ending::Finish(finish) => self.finish(&mut run, finish).await,
            Ending::Leave(why) => {
                info!(remediation = %run.id, state = %run.state, "{why}");
                Ok(())
            }
        }
    }

    /// When a lease taken or renewed now runs out.
    pub(super) fn lease_until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + chrono::Duration::from_std(self.inner.limits.lock_lease)
            .unwrap_or(chrono::Duration::minutes(2))
    }

    pub(super) async fn finish(&self, run: &mut Run<'_>, mut f: Finish) -> Result<(), EngineError> {
        crate::crash_point!("finish.before_terminal");
        if run.rule.mode == RuleMode::Shadow && f.event != Event::Pause {
            // A rule on trial tells no one at 3 a.m.: its record (and `salve rules
            // report`) says what it met; it made no change a human must look at. (A
            // pause it meets is no verdict on it: the storm brake it tripped is told.)
            f.escalate = None;
        }
        let escalation = f
            .escalate
            .as_deref()
            .map(|reason| self.escalation_of(run, reason, &f.summary));
        let moved = self
            .move_escalating(
                &run.id,
                run.state,
                f.event,
                (&f.summary, &f.reasons),
                escalation.as_ref(),
            )
            .await?;
        match moved {
            Some(to) => {
                run.state = to;
                if to.is_terminal() {
                    self.inner.metrics.remediation_finished(
                        &run.rule.name,
                        run.rule.steps[0].kind(),
                        to.as_str(),
                    );
                }
                info!(remediation = %run.id, state = %to, summary = %f.summary, "remediation finished");
            }
            // Someone else moved it on; if that ended it, no lock of it may outlive it.
            None => self.inner.store.release_lock_if_finished(&run.id).await?,
        }
        Ok(())
    }

    /// The checks made once per remediation: still firing, the rule's time intervals,
    /// target cooldown.
    async fn preconditions(&self, run: &Run<'_>) -> Result<Option<Finish>, EngineError> {
        let store = &self.inner.store;
        let now = Utc::now();
        let skip = |reason: String| Some(Finish::skipped(reason));
        if let Some(i) = store.incident(&run.incident.id).await? {
            if i.status == AlertStatus::Resolved {
                return Ok(skip("the alert resolved before salve acted".into()));
            }
        }
        let intervals = run.decisions.rules.interval_states(now);
        let active = |n: &String| intervals.iter().any(|(name, on)| name == n && *on);
        if let Some(muted) = run.rule.mute_time_intervals.iter().find(|n| active(n)) {
            return Ok(skip(format!(
                "rule {} is muted while time interval {muted} is active (now {})",
                run.rule.name,
                crate::store::timestamp(now)
            )));
        }
        let windows = &run.rule.active_time_intervals;
        if !windows.is_empty() && !windows.iter().any(active) {
            return Ok(skip(format!(
                "rule {} acts only during the time interval(s) {}, and none is active now ({})",
                run.rule.name,
                windows.join(", "),
                crate::store::timestamp(now)
            )));
        }
        if let Some((last_id, acted_at)) = store.last_action_on_target(&run.target).await? {
            let acted = crate::store::parse_timestamp(&acted_at)?;
            let cooldown =
                chrono::Duration::from_std(run.rule.cooldown).unwrap_or(chrono::Duration::zero());
            if last_id != run.id && acted + cooldown > now {
                self.inner.metrics.refused("cooldown");
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

    pub(super) async fn stats(&self, run: &Run<'_>) -> Result<Vec<StepStats>, EngineError> {
        let since = Utc::now() - LEARNING_WINDOW;
        Ok(self
            .inner
            .store
            .step_stats(run.incident.alert.alertname(), &run.target, since)
            .await?)
    }

    /// Whether the alert still fires, asked before every step after the first and before
    /// every revert (the same witnesses verification uses).
    pub(super) async fn alert_now(&self, run: &Run<'_>) -> Result<AlertSignal, EngineError> {
        Ok(verify::alert_signal(
            &self.inner.store,
            &run.incident.id,
            &run.incident.alert,
            self.inner.prometheus.as_deref(),
            run.rule.verify.no_data,
        )
        .await?)
    }

    /// Climbs the ladder until a step heals, something goes wrong, or the steps run out.
    async fn ladder(&self, run: &mut Run<'_>) -> Result<Ending, EngineError> {
        let steps = self.ordered_steps(run).await?;
        let total = steps.len();
        let (mut acted, mut denials, mut denied_plans, mut last) =
            (0u32, Vec::new(), Vec::new(), String::new());
        for (index, spec) in steps.into_iter().enumerate() {
            if acted >= run.rule.max_attempts {
                break;
            }
            let started = Utc::now();
            if index > 0 {
                match self.alert_now(run).await? {
                    AlertSignal::StillFiring(_) => {}
                    AlertSignal::Resolved(why) => {
                        let reason =
                            format!("the alert resolved before step {} ({why})", index + 1);
                        let detail = json!({"reason": reason});
                        self.record_attempt(
                            run,
                            index,
                            spec,
                            started,
                            None,
                            AttemptOutcome::Skipped,
                            None,
                            detail,
                        )
                        .await?;
                        return Ok(Ending::Finish(
                            self.resolved_between_steps(acted, &last, reason),
                        ));
                    }
                    AlertSignal::Unknown(why) => {
                        return Ok(Ending::Finish(Finish::escalated(format!(
                            "cannot tell whether the alert still fires before step {} ({why}); salve does not climb blind",
                            index + 1
                        ))));
                    }
                }
            }
            self.event(
                run,
                EventKind::StepStarted,
                json!({"step": index + 1, "of": total, "step_key": spec.key()}),
            )
            .await?;
            let step = self.attempt(run, spec, index, total).await?;
            let (outcome, detail) = match &step {
                Step::Denied(plan, r) => (
                    Some(AttemptOutcome::Denied),
                    json!({"plan": plan, "reasons": r}),
                ),
                Step::Paused(plan, pause) => (
                    Some(AttemptOutcome::Skipped),
                    json!({"plan": plan, "paused": pause}),
                ),
                Step::Silenced(plan, view) => (
                    Some(AttemptOutcome::Skipped),
                    json!({"plan": plan, "alertmanager": view}),
                ),
                Step::NoOp(r) => (Some(AttemptOutcome::Skipped), json!({"reason": r})),
                Step::Failed(r) => (Some(AttemptOutcome::Failed), json!({"reason": r})),
                Step::Applied { .. }
                | Step::End(_)
                | Step::Shadow(..)
                | Step::Leave(_)
                | Step::LeaseLost(_) => (None, Value::Null),
            };
            if let Some(outcome) = outcome {
                self.record_attempt(run, index, spec, started, None, outcome, None, detail)
                    .await?;
            }
            match step {
                Step::Leave(why) => return Ok(Ending::Leave(why)),
                Step::LeaseLost(why) => return Ok(Ending::Finish(Finish::escalated(why))),
                Step::End(f) => return Ok(Ending::Finish(f)),
                // A shadow rule shows its first would-be step and what the alert did
                // without it; a later step would be judged on a workload it never saw.
                Step::Shadow(plan, why) => return self.watch_alone(run, &plan, why).await,
                Step::Denied(plan, reasons) => {
                    denied_plans.push(plan);
                    denials.extend(reasons);
                }
                Step::NoOp(reason) => last = reason,
                Step::Paused(plan, pause) => {
                    return Ok(Ending::Finish(paused(run, &plan, &pause)));
                }
                Step::Silenced(plan, view) => {
                    let why = format!("{}; salve takes no further step", view.describe());
                    let summary = format!("silenced: would {plan}");
                    return Ok(Ending::Finish(Finish::new(
                        Event::Silence,
                        summary,
                        vec![why],
                    )));
                }
                Step::Failed(reason) => {
                    let f = Finish::new(
                        Event::Fail,
                        format!("failed: {reason}"),
                        vec![reason.clone()],
                    );
                    return Ok(Ending::Finish(f.escalating(reason)));
                }
                Step::Applied {
                    plan,
                    before,
                    acted_at,
                    written_generation,
                } => {
                    acted += 1;
                    let verdict = self
                        .verify_step(run, &before, acted_at, written_generation)
                        .await?;
                    let Some(outcome) = verdict else {
                        return Ok(Ending::Leave(
                            "shutting down during verification; the remediation stays with this replica until it is gone",
                        ));
                    };
                    let seconds = match &outcome {
                        Outcome::Healed { seconds } => Some(*seconds),
                        _ => None,
                    };
                    let detail = json!({"plan": plan.description, "outcome": outcome.name(), "reason": outcome.reason()});
                    self.record_attempt(
                        run,
                        index,
                        spec,
                        started,
                        Some(acted_at),
                        attempt_outcome(&outcome),
                        seconds,
                        detail,
                    )
                    .await?;
                    crate::crash_point!("ladder.attempt_recorded");
                    match outcome {
                        Outcome::Healed { seconds } => {
                            let summary = format!(
                                "healed: {} (verified after {seconds:.1}s)",
                                plan.description
                            );
                            return Ok(Ending::Finish(Finish::new(Event::Heal, summary, vec![])));
                        }
                        Outcome::NotHealed(why) => last = format!("{}: {why}", plan.description),
                        Outcome::RolloutFailed(why) | Outcome::MadeWorse(why) => {
                            return self.made_worse(run, &plan, &before, why).await;
                        }
                        Outcome::Unavailable(why) => {
                            return Ok(Ending::Finish(Finish::escalated(format!(
                                "cannot verify {}: {why}",
                                plan.description
                            ))));
                        }
                    }
                }
            }
        }
        Ok(Ending::Finish(self.exhausted(
            run,
            acted,
            (denied_plans, denials),
            last,
        )))
    }

    /// A change made things worse: revert it (if the rule says so and it is still
    /// salve's to revert), then tell humans. Never climbs further.
    async fn made_worse(
        &self,
        run: &mut Run<'_>,
        plan: &Plan,
        before: &Workload,
        why: String,
    ) -> Result<Ending, EngineError> {
        let reverted = match self.revert(run, plan, before).await? {
            Ok(note) => note,
            Err(leave) => return Ok(leave),
        };
        Ok(Ending::Finish(Finish::escalated(format!(
            "{} made things worse: {why}{reverted}",
            plan.description
        ))))
    }

    /// The alert resolved after a step's window closed and before the next step.
    fn resolved_between_steps(&self, acted: u32, last: &str, reason: String) -> Finish {
        if acted == 0 {
            return Finish::skipped(reason);
        }
        Finish::new(
            Event::Heal,
            format!("healed: {reason}; last change: {last}"),
            vec![reason],
        )
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
            return Finish::new(Event::Deny, summary, denials).escalating(why);
        }
        if acted == 0 {
            return Finish::skipped(last);
        }
        let reason = format!(
            "not healed after {acted} step(s) of rule {}; last: {last}",
            run.rule.name
        );
        let mut f = Finish::escalated(reason);
        f.reasons.extend(denials);
        f
    }
}

/// Ends a remediation whose next write an operator's pause held back. When an earlier
/// step of it did change the workload, that change stands while the alert still fires:
/// humans are told.
fn paused(run: &Run<'_>, plan: &str, pause: &Pause) -> Finish {
    let why = pause.describe();
    let finish = Finish::new(
        Event::Pause,
        format!("paused: would {plan}"),
        vec![why.clone()],
    );
    if run.changed == 0 {
        return finish;
    }
    finish.escalating(format!(
        "{why}; salve stopped before its next step, and its earlier change to {} stands while the alert still fires",
        run.target
    ))
}

/// How a verified step is remembered for learning. Only evidence counts as a try:
/// `verification_unavailable` is not a failure (the learning queries skip it).
fn attempt_outcome(outcome: &Outcome) -> AttemptOutcome {
    match outcome {
        Outcome::Healed { .. } => AttemptOutcome::Healed,
        Outcome::NotHealed(_) => AttemptOutcome::NotHealed,
        Outcome::RolloutFailed(_) | Outcome::MadeWorse(_) => AttemptOutcome::RolloutFailed,
        Outcome::Unavailable(_) => AttemptOutcome::VerificationUnavailable,
    }
}
