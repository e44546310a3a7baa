//! One step of a ladder, up to the write, and its verification.
//!
//! read → plan → admission (the one gate) → server-side dry-run → write intent (lease,
//! rate slot and `executing`, committed together) → the real write. A 409 at any write
//! starts the step over from a fresh read, policy included; a refused real write moves
//! the remediation back (nothing landed), by the transition table.

use chrono::{DateTime, Utc};

use super::admission::{Admission, Gate, NotSent};
use super::approval::Approval;
use super::ladder::{Finish, Run};
use super::plan::{self, Plan, Planned};
use super::{Engine, EngineError};
use crate::cluster::{ApiCall, Change, Cluster, LAST_REMEDIATION_ANNOTATION, Notice, Workload};
use crate::remediation::{Event, Mode};
use crate::rules::{ActionSpec, RuleMode};
use crate::store::EventKind;
use crate::store::pauses::Pause;
use crate::store::targets::ActionKind;
use crate::verify::AlertmanagerView;
use crate::verify::{self, Outcome};

/// How one step went before verification.
pub(super) enum Step {
    /// The change was made; `before` is the workload as it was, for verification and a
    /// revert; `written_generation` is the generation the write produced.
    Applied {
        plan: Box<Plan>,
        before: Box<Workload>,
        acted_at: DateTime<Utc>,
        written_generation: i64,
    },
    /// Policy said no: the plan's description and the reasons.
    Denied(String, Vec<String>),
    /// An operator paused salve: the plan's description and the pause.
    Paused(String, Pause),
    /// Alertmanager mutes the alert: the plan's description and what it said.
    Silenced(String, Box<AlertmanagerView>),
    /// Nothing to do, or not allowed now (budget spent): the reason.
    NoOp(String),
    Failed(String),
    /// End the remediation so, with nothing (more) written: dry-run or offline mode
    /// (what salve would do), an approval that expired or went stale.
    End(Finish),
    /// A shadow rule: everything but the write was done; what was found, for the record.
    Shadow(Box<Plan>, String),
    /// Stop without touching anything more: shutting down, or another worker claimed
    /// this remediation.
    Leave(&'static str),
    /// The workload's lease was lost: end here, saying so, with no further change.
    LeaseLost(String),
}

/// What sending one write found.
pub(super) enum Sent {
    /// Accepted at `at`; `generation` is the one the controller must observe.
    Accepted { generation: i64, at: DateTime<Utc> },
    /// 409: the workload changed since it was read; read again.
    Conflict,
    /// Refused for good (the API's message).
    Refused(String),
    /// The write was not sent.
    NotSent(NotSent),
}

impl Engine {
    /// One step up to the write, with conflict retries.
    pub(super) async fn attempt(
        &self,
        run: &mut Run<'_>,
        spec: &ActionSpec,
        index: usize,
        total: usize,
    ) -> Result<Step, EngineError> {
        let retries = self.inner.limits.conflict_retries;
        // Conflicts count against `retries`; a decision on an approval does not.
        let mut conflicts = 0;
        while conflicts <= retries {
            if self.inner.stopping.is_cancelled() {
                return Ok(Step::Leave("shutting down before the next write"));
            }
            let (workload, plan) = match self.read_and_plan(run, spec).await? {
                Ok(pair) => pair,
                Err(step) => return Ok(step),
            };
            let gate = Gate::Step { spec, index, total };
            let admission = self.admit(run, gate, workload.as_ref(), &plan).await?;
            crate::crash_point!("step.policy_recorded");
            let mut policy_asks = None;
            match admission {
                Admission::Allowed => {}
                Admission::NeedsApproval(reasons) => policy_asks = Some(reasons),
                Admission::Denied(reasons) => return Ok(Step::Denied(plan.description, reasons)),
                Admission::Paused(pause) => return Ok(Step::Paused(plan.description, pause)),
                Admission::Silenced(view) => {
                    return Ok(Step::Silenced(plan.description, Box::new(view)));
                }
                Admission::Unknown(why) => return Ok(Step::Failed(why)),
            }
            let shadow = run.rule.mode == RuleMode::Shadow;
            let (Some(cluster), Some(workload), Some(change)) =
                (&self.inner.cluster, &workload, &plan.change)
            else {
                let why =
                    "salve runs offline (no Kubernetes cluster to call; its start-up line says why), so no call was made"
                        .to_owned();
                if shadow {
                    return Ok(Step::Shadow(Box::new(plan), why));
                }
                return Ok(Step::End(Finish::new(
                    Event::WouldAct,
                    format!("would {}", plan.description),
                    vec![why],
                )));
            };
            match self
                .call(run, ApiCall::write(&run.target, change, true), || {
                    cluster.write(workload, change, true)
                })
                .await?
            {
                Err(e) if e.is_conflict() => {
                    conflicts += 1;
                    continue;
                }
                Err(e) => {
                    return Ok(Step::Failed(format!(
                        "server-side dry-run of \"{}\" was rejected: {e}",
                        plan.description
                    )));
                }
                Ok(_) if shadow => {
                    let why = "the API server accepted the change as a server-side dry-run; the rule is in shadow mode, so nothing was changed".to_owned();
                    return Ok(Step::Shadow(Box::new(plan), why));
                }
                Ok(_) if self.inner.mode == Mode::DryRun => {
                    let why = "dry-run mode: the API server accepted the change as a dry-run; nothing was changed".to_owned();
                    return Ok(Step::End(Finish::new(
                        Event::WouldAct,
                        format!("would {}", plan.description),
                        vec![why],
                    )));
                }
                Ok(_) => {}
            }
            let why_ask = match (run.rule.mode, policy_asks) {
                (_, Some(reasons)) => {
                    Some(format!("policy requires approval: {}", reasons.join("; ")))
                }
                (RuleMode::Approve, None) => {
                    Some(format!("rule {} is in mode approve", run.rule.name))
                }
                _ => None,
            };
            if let Some(why) = why_ask {
                match self.approval(run, index, &plan, why).await? {
                    Approval::Granted => {}
                    Approval::Decided => continue,
                    Approval::End(step) => return Ok(step),
                }
            }
            match self
                .send(
                    run,
                    cluster.as_ref(),
                    workload,
                    change,
                    ActionKind::Step,
                    &plan.description,
                )
                .await?
            {
                Sent::Accepted { generation, at } => {
                    return Ok(Step::Applied {
                        plan: Box::new(plan),
                        before: Box::new(workload.clone()),
                        acted_at: at,
                        written_generation: generation,
                    });
                }
                Sent::Conflict => {
                    conflicts += 1;
                    continue;
                }
                Sent::Refused(e) => {
                    return Ok(Step::Failed(format!(
                        "\"{}\" was rejected: {e}",
                        plan.description
                    )));
                }
                Sent::NotSent(NotSent::Moved) => {
                    return Ok(Step::Leave("another worker claimed this remediation"));
                }
                Sent::NotSent(NotSent::OverBudget(why)) => {
                    self.inner.metrics.refused("rate_limit");
                    return Ok(Step::NoOp(why));
                }
                Sent::NotSent(NotSent::Paused(pause)) => {
                    return Ok(Step::Paused(plan.description, pause));
                }
                Sent::NotSent(lost @ NotSent::LeaseLost) => {
                    return Ok(Step::LeaseLost(lost.reason(run)));
                }
            }
        }
        Ok(Step::Failed(format!(
            "{} kept changing under salve: {} conflicting writes in a row",
            run.target,
            retries + 1
        )))
    }

    /// The real write, fenced: the intent (lease held, rate slot, `executing`) is
    /// committed first; then the PATCH; then `verifying` if it landed (and the change is
    /// announced on the workload), or back where the remediation was if the API server
    /// refused it.
    pub(super) async fn send(
        &self,
        run: &mut Run<'_>,
        cluster: &dyn Cluster,
        workload: &Workload,
        change: &Change,
        kind: ActionKind,
        description: &str,
    ) -> Result<Sent, EngineError> {
        let summary = format!("executing: {description}");
        if let Err(not_sent) = self.reserve(run, kind, &summary).await? {
            return Ok(Sent::NotSent(not_sent));
        }
        crate::crash_point!("send.write_reserved");
        if kind == ActionKind::Step {
            // The listing's `action` and step count follow the ladder before the write,
            // so a crash mid-write is recorded against the right step.
            self.inner
                .store
                .begin_step(&run.id, change.action())
                .await?;
        }
        crate::crash_point!("send.before_write");
        let result = self
            .call(run, ApiCall::write(&run.target, change, false), || {
                cluster.write(workload, change, false)
            })
            .await?;
        crate::crash_point!("send.after_write");
        let store = &self.inner.store;
        let now = Utc::now();
        let (event, sent) = match result {
            Ok(written) => {
                run.changed += 1;
                // The change's time: a new alert that started after it is evidence
                // against it, so it is taken the moment the API server accepted it.
                (
                    Event::WriteAccepted,
                    Sent::Accepted {
                        generation: written.generation_after(workload, change),
                        at: now,
                    },
                )
            }
            Err(e) => {
                let event = Event::WriteRefused {
                    changed_before: run.changed > 0,
                };
                let sent = if e.is_conflict() {
                    Sent::Conflict
                } else {
                    Sent::Refused(e.to_string())
                };
                (event, sent)
            }
        };
        let summary = match &sent {
            Sent::Accepted { .. } => format!("verifying: {description}"),
            _ => format!("{summary} (refused by the API server; nothing changed)"),
        };
        if let Some(to) = store
            .transition(&run.id, run.state, event, &summary, &[], now)
            .await?
        {
            run.state = to;
        }
        crate::crash_point!("send.verifying");
        if let Sent::Accepted { .. } = sent {
            self.announce(run, cluster, workload, change, kind, description)
                .await?;
        }
        Ok(sent)
    }

    /// Makes a change visible in Kubernetes itself: an Event on the workload and its
    /// `salve.io/last-remediation` annotation. Best effort: each call is on the timeline,
    /// and a refusal (say, RBAC without `events`) never fails the remediation.
    async fn announce(
        &self,
        run: &Run<'_>,
        cluster: &dyn Cluster,
        workload: &Workload,
        change: &Change,
        kind: ActionKind,
        description: &str,
    ) -> Result<(), EngineError> {
        let (reason, action) = match (kind, change) {
            (ActionKind::Revert, _) => ("SalveReverted", "Revert"),
            (_, Change::Scale { .. } | Change::AutoscalerMin { .. }) => ("SalveScaled", "Scale"),
            (_, Change::Rollback { .. }) => ("SalveRolledBack", "Rollback"),
            (_, Change::Restart { .. }) => ("SalveRestarted", "Restart"),
        };
        let notice = Notice {
            reason,
            action,
            note: format!(
                "salve: {description} for alert {} (rule {}, remediation {})",
                run.incident.alert.alertname(),
                run.rule.name,
                run.id
            ),
            reporting_instance: self.inner.owner.clone(),
        };
        let target = &run.target;
        self.call(run, ApiCall::record_event(target), || {
            cluster.record_event(workload, &notice)
        })
        .await?
        .ok();
        let stamp = format!("{} {}", run.id, crate::store::timestamp(Utc::now()));
        let key = LAST_REMEDIATION_ANNOTATION;
        self.call(run, ApiCall::annotate(target), || {
            cluster.annotate(workload, key, &stamp)
        })
        .await?
        .ok();
        Ok(())
    }

    /// Reads the workload, and for a scale the autoscaler that may manage it (if salve
    /// cannot tell whether one does, it does not guess: the read fails).
    pub(super) async fn read_workload(
        &self,
        run: &Run<'_>,
        cluster: &dyn Cluster,
        with_autoscaler: bool,
    ) -> Result<Result<Workload, String>, EngineError> {
        let mut w = match self
            .call(run, ApiCall::read(&run.target), || {
                cluster.read(&run.target)
            })
            .await?
        {
            Ok(w) => w,
            Err(e) => return Ok(Err(format!("cannot read {}: {e}", run.target))),
        };
        if with_autoscaler {
            match self
                .call(run, ApiCall::list_autoscalers(&run.target), || {
                    cluster.autoscaler(&run.target)
                })
                .await?
            {
                Ok(a) => w.autoscaler = a,
                Err(e) => {
                    return Ok(Err(format!(
                        "cannot tell whether an autoscaler manages {}: {e}",
                        run.target
                    )));
                }
            }
        }
        Ok(Ok(w))
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
                let scale = matches!(spec, ActionSpec::Scale(_));
                let w = match self.read_workload(run, cluster.as_ref(), scale).await? {
                    Ok(w) => w,
                    Err(why) => return Ok(Err(Step::Failed(why))),
                };
                if *spec == ActionSpec::Rollback {
                    match self
                        .call(run, ApiCall::list_revisions(&run.target), || {
                            cluster.revisions(&w)
                        })
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

    /// Verifies an applied step and records the evidence; `None` when salve is shutting
    /// down (the remediation is left `verifying`, owned by this replica until it is gone).
    pub(super) async fn verify_step(
        &self,
        run: &Run<'_>,
        before: &Workload,
        acted_at: DateTime<Utc>,
        written_generation: i64,
    ) -> Result<Option<Outcome>, EngineError> {
        let Some(cluster) = &self.inner.cluster else {
            return Ok(Some(Outcome::Unavailable("no cluster".into())));
        };
        let check = verify::Check {
            remediation_id: &run.id,
            incident_id: &run.incident.id,
            alert: &run.incident.alert,
            target: &run.target,
            acted_at,
            written_generation,
            before,
            spec: run.rule.verify,
            lease: run
                .lease
                .as_ref()
                .map(|l| (l, self.lease_until(acted_at) - acted_at)),
        };
        let verification = tokio::select! {
            v = verify::verify(
                &check,
                cluster.as_ref(),
                &self.inner.store,
                self.inner.prometheus.as_deref(),
                self.inner.limits.call_timeout,
            ) => v?,
            _ = self.inner.stopping.cancelled() => return Ok(None),
        };
        for poll in &verification.polls {
            self.inner
                .metrics
                .verification_poll(poll.rollout.name(), poll.alert.name());
        }
        self.event(run, EventKind::Verification, verification.evidence(&check))
            .await?;
        crate::crash_point!("verify.recorded");
        Ok(Some(verification.outcome))
    }
}
