//! The one gate every write passes, a ladder's steps and salve's own reverts alike.
//!
//! Two halves, because they happen at two moments:
//! - [`Engine::admit`], before the dry-run: the policy verdict on the exact change,
//!   from the workload as just read (bounds that keep the rule's direction were already
//!   applied by the plan; a workload past them is a no-op, never a write), then whether
//!   an operator paused salve (a stored pause, or the namespace's `salve.io/paused`
//!   annotation, read fresh): a paused write is recorded with the verdict it had;
//! - [`Engine::reserve`], right before the real write, in one transaction: the lease on
//!   the workload is still this holder's (and renewed), no stored pause has landed since,
//!   every budget of changes has a slot left (one is taken in the actions ledger), and
//!   the remediation moves to `executing`.
//!
//! A refusal is recorded with its reason; nothing here is re-checked anywhere else.

use chrono::Utc;
use serde_json::json;

use super::input::{self, HISTORY_WINDOW};
use super::ladder::{LEARNING_WINDOW, Run};
use super::plan::Plan;
use super::{Engine, EngineError};
use crate::cluster::{ApiCall, Workload};
use crate::rules::ActionSpec;
use crate::rules::Unavailable;
use crate::store::EventKind;
use crate::store::pauses::{PAUSED_ANNOTATION, Pause};
use crate::store::targets::{ActionKind, WriteSlot};
use crate::verify::AlertmanagerView;

/// Which write is asking.
pub(super) enum Gate<'a> {
    /// Step `index` (0-based) of `total`.
    Step {
        spec: &'a ActionSpec,
        index: usize,
        total: usize,
    },
    /// Putting back salve's own change.
    Revert,
}

/// Why a write was not sent.
pub(super) enum NotSent {
    /// The lease on the workload lapsed or was taken over: no further change from here.
    LeaseLost,
    /// Another worker moved this remediation on.
    Moved,
    /// The global hourly budget of changes is spent.
    OverBudget(String),
    /// An operator paused salve after the write was admitted.
    Paused(Pause),
}

impl NotSent {
    /// What the remediation's record says about it.
    pub fn reason(&self, run: &Run<'_>) -> String {
        match self {
            NotSent::LeaseLost => format!(
                "salve lost its lock on {} (the lease lapsed or was taken over) and made no further change",
                run.target
            ),
            NotSent::Moved => "another worker claimed this remediation".to_owned(),
            NotSent::OverBudget(why) => why.clone(),
            NotSent::Paused(pause) => pause.describe(),
        }
    }
}

/// The gate's answer.
pub(super) enum Admission {
    Allowed,
    /// Allowed, once a human approves it: policy's `require_approval` reasons.
    NeedsApproval(Vec<String>),
    /// The reasons (a policy that cannot be evaluated denies, with its error).
    Denied(Vec<String>),
    /// Policy allowed it, but an operator paused salve where it would write.
    Paused(Pause),
    /// Alertmanager silences or inhibits the alert: no further step (policy not asked).
    Silenced(AlertmanagerView),
    /// salve cannot tell whether it is paused (the namespace could not be read), or
    /// whether Alertmanager mutes the alert (and the rule says hold): it does not write
    /// blind. The reason.
    Unknown(String),
}

impl Engine {
    /// Builds the policy input, evaluates it, and records both with the verdict.
    pub(super) async fn admit(
        &self,
        run: &Run<'_>,
        gate: Gate<'_>,
        workload: Option<&Workload>,
        plan: &Plan,
    ) -> Result<Admission, EngineError> {
        let store = &self.inner.store;
        let now = Utc::now();
        let history = store
            .target_history(&run.target, now - HISTORY_WINDOW, &run.id)
            .await?;
        let changes_last_hour = store
            .target_actions_since(&run.target, now - chrono::Duration::hours(1))
            .await?;
        let budgets = store
            .budget_use(&self.inner.limits.all_budgets(), &run.target, now)
            .await?;
        let mut doc = input::build(&input::InputParts {
            now,
            mode: self.inner.mode,
            alert: &run.incident.alert,
            rule: run.rule,
            target: &run.target,
            plan,
            workload,
            history: &history,
            actions_last_hour: changes_last_hour,
            budgets: &budgets,
            time_intervals: &run.decisions.rules.interval_states(now),
        });
        // Before the policy sees it and the record keeps it: no secret of the workload.
        self.inner.limits.redaction.value(&mut doc["target"]);
        if let Gate::Step { .. } = gate {
            match self.alertmanager_view(run).await {
                None => {}
                Some(Ok(view)) if view.suppressed() => {
                    self.inner.metrics.refused("silenced");
                    return Ok(Admission::Silenced(view));
                }
                Some(Ok(view)) => doc["alertmanager"] = json!(view),
                Some(Err(why)) => {
                    doc["alertmanager"] = json!({"state": "unavailable", "error": why});
                    if run.rule.on_alertmanager_unavailable == Unavailable::Hold {
                        self.inner.metrics.refused("alertmanager_unavailable");
                        return Ok(Admission::Unknown(format!(
                            "cannot tell whether Alertmanager silences this alert ({why}); rule {} says on_alertmanager_unavailable: hold, so salve made no change",
                            run.rule.name
                        )));
                    }
                }
            }
        }
        if let Gate::Step { spec, index, total } = gate {
            let stats = self.stats(run).await?;
            doc["history"]["stats"] = input::stats(&stats, spec, LEARNING_WINDOW);
            doc["step"] = json!({"index": index + 1, "of": total, "key": spec.key()});
        }
        let asked = std::time::Instant::now();
        let verdict = self
            .inner
            .policy
            .evaluate(&run.decisions.policy, doc.clone())
            .await;
        self.inner.metrics.policy_evaluated(
            asked.elapsed(),
            match (&verdict.error, verdict.allowed) {
                (Some(_), _) => "error",
                (None, true) => "allow",
                (None, false) => "deny",
            },
        );
        self.event(
            run,
            EventKind::PolicyEvaluated,
            json!({"input": doc, "verdict": verdict}),
        )
        .await?;
        if !verdict.allowed {
            return Ok(Admission::Denied(verdict.reasons));
        }
        Ok(match self.pause_over(run).await? {
            Ok(None) if !verdict.approval.is_empty() => Admission::NeedsApproval(verdict.approval),
            Ok(None) => Admission::Allowed,
            Ok(Some(pause)) => {
                self.inner.metrics.refused("paused");
                Admission::Paused(pause)
            }
            Err(why) => Admission::Unknown(why),
        })
    }

    /// What Alertmanager says of the alert now; `None` when no Alertmanager is configured.
    async fn alertmanager_view(&self, run: &Run<'_>) -> Option<Result<AlertmanagerView, String>> {
        let alertmanager = self.inner.alertmanager.as_ref()?;
        Some(alertmanager.view(&run.incident.alert).await)
    }

    /// The pause that holds the workload's namespace now, if any: a stored one (every
    /// namespace, or this one), else the namespace's own annotation, read fresh (the
    /// call is on the timeline). `Err`: the namespace could not be read.
    async fn pause_over(
        &self,
        run: &Run<'_>,
    ) -> Result<Result<Option<Pause>, String>, EngineError> {
        let namespace = &run.target.namespace;
        if let Some(pause) = self.inner.store.pause_over(namespace, Utc::now()).await? {
            return Ok(Ok(Some(pause)));
        }
        let Some(cluster) = &self.inner.cluster else {
            return Ok(Ok(None));
        };
        Ok(
            match self
                .call(run, ApiCall::read_namespace(&run.target), || {
                    cluster.namespace_annotations(namespace)
                })
                .await?
            {
                Ok(annotations) => Ok(Pause::from_annotations(namespace, &annotations)),
                Err(e) => Err(format!(
                    "cannot tell whether namespace {namespace} is paused (its {PAUSED_ANNOTATION} annotation could not be read: {e}); salve does not write blind"
                )),
            },
        )
    }

    /// Records the intent to write, or says why it must not happen.
    pub(super) async fn reserve(
        &self,
        run: &mut Run<'_>,
        kind: ActionKind,
        summary: &str,
    ) -> Result<Result<(), NotSent>, EngineError> {
        let Some(lease) = run.lease.clone() else {
            return Ok(Err(NotSent::LeaseLost));
        };
        let now = Utc::now();
        let budgets = self.inner.limits.all_budgets();
        let slot = self
            .inner
            .store
            .reserve_write(
                &run.id,
                run.state,
                (&run.target, &lease),
                kind,
                summary,
                (now, self.lease_until(now)),
                &budgets,
            )
            .await?;
        Ok(match slot {
            WriteSlot::Reserved(state) => {
                run.state = state;
                Ok(())
            }
            WriteSlot::LeaseLost => Err(NotSent::LeaseLost),
            WriteSlot::Moved => Err(NotSent::Moved),
            WriteSlot::OverBudget(why) => Err(NotSent::OverBudget(why)),
            WriteSlot::Paused(pause) => {
                self.inner.metrics.refused("paused");
                Err(NotSent::Paused(pause))
            }
        })
    }
}
