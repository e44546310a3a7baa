//! Compare-and-revert: putting back salve's own change, and only salve's.
//!
//! A revert is a write like any other: it is judged by policy (as `action.type:
//! "revert"`), fenced by the lease, counted in the budget, dry-run first, and retried on
//! a 409 from a fresh read. It restores only if the workload still holds exactly what
//! salve wrote (the replica count, or the pod template); if anyone changed it since (a
//! human's emergency scale-up, a fix deployed meanwhile), salve leaves it alone and says
//! so in the escalation. If the alert resolved meanwhile, nothing is reverted either.

use serde_json::json;

use super::admission::{Admission, Gate, NotSent};
use super::ladder::{Ending, Run};
use super::plan::Plan;
use super::step::Sent;
use super::{Engine, EngineError};
use crate::cluster::rollback::normalized_template;
use crate::cluster::{ApiCall, Change, Workload};
use crate::store::EventKind;
use crate::store::targets::ActionKind;
use crate::verify::AlertSignal;

/// Whether the workload still holds what salve's `change` wrote, and if not, what it
/// holds instead.
pub fn still_salves(change: &Change, now: &Workload) -> Result<(), String> {
    match change {
        Change::Scale { replicas } if now.replicas == *replicas => Ok(()),
        Change::Scale { replicas } => Err(format!(
            "it has {} replicas, not the {replicas} salve set",
            now.replicas
        )),
        Change::Rollback { template, .. } if normalized_template(&now.template) == *template => {
            Ok(())
        }
        Change::Rollback { .. } => {
            Err("its pod template is no longer the one salve restored".to_owned())
        }
        Change::Restart { restarted_at } if now.restarted_at.as_ref() == Some(restarted_at) => {
            Ok(())
        }
        Change::Restart { .. } => Err("it was restarted again since".to_owned()),
        Change::AutoscalerMin { min_replicas, .. } => match &now.autoscaler {
            Some(a) if a.min_replicas == *min_replicas => Ok(()),
            Some(a) => Err(format!(
                "its autoscaler's minReplicas is {}, not the {min_replicas} salve set",
                a.min_replicas
            )),
            None => Err("no autoscaler manages it any more".to_owned()),
        },
    }
}

/// The change that undoes `change`, given the workload as it was before it.
fn undo(change: &Change, before: &Workload) -> Option<(Change, String)> {
    match change {
        Change::Scale { .. } => Some((
            Change::Scale {
                replicas: before.replicas,
            },
            format!("scaled back to {} replicas", before.replicas),
        )),
        Change::Rollback { .. } => Some((
            Change::Rollback {
                to_revision: before.revision.unwrap_or_default(),
                template: normalized_template(&before.template),
                annotations: before.annotations.clone(),
            },
            "restored the previous pod template".to_owned(),
        )),
        Change::Restart { .. } => None,
        Change::AutoscalerMin { autoscaler, .. } => {
            let min = before.autoscaler.as_ref()?.min_replicas;
            Some((
                Change::AutoscalerMin {
                    autoscaler: autoscaler.clone(),
                    min_replicas: min,
                },
                format!("restored the autoscaler's minReplicas to {min}"),
            ))
        }
    }
}

impl Engine {
    /// Puts back what salve changed, when the rule asks and it is still salve's to put
    /// back. `Ok(note)`: a note for the escalation's reason; `Err(ending)`: stop here.
    pub(super) async fn revert(
        &self,
        run: &mut Run<'_>,
        plan: &Plan,
        before: &Workload,
    ) -> Result<Result<String, Ending>, EngineError> {
        let (Some(cluster), Some(change)) = (self.inner.cluster.clone(), &plan.change) else {
            return Ok(Ok(String::new()));
        };
        if !run.rule.revert_on_failure {
            return Ok(Ok(
                "; not reverted (the rule does not ask for revert_on_failure)".into(),
            ));
        }
        let Some((undo, what)) = undo(change, before) else {
            return Ok(Ok("; a restart cannot be reverted".into()));
        };
        if let AlertSignal::Resolved(why) = self.alert_now(run).await? {
            return self
                .not_reverted(
                    run,
                    format!("the alert resolved meanwhile ({why}), so salve leaves the workload as it is"),
                )
                .await;
        }
        let retries = self.inner.limits.conflict_retries;
        for _ in 0..=retries {
            if self.inner.stopping.is_cancelled() {
                return Ok(Err(Ending::Leave("shutting down before the revert")));
            }
            let with_autoscaler = !change.writes_workload();
            let now = match self
                .read_workload(run, cluster.as_ref(), with_autoscaler)
                .await?
            {
                Ok(w) => w,
                Err(why) => {
                    return self
                        .not_reverted(run, format!("the revert failed: {why}"))
                        .await;
                }
            };
            if let Err(held) = still_salves(change, &now) {
                return self
                    .not_reverted(
                        run,
                        format!(
                            "{} changed since salve's write ({held}); salve does not undo a change it did not make",
                            run.target
                        ),
                    )
                    .await;
            }
            let revert_plan = Plan {
                change: Some(undo.clone()),
                action: "revert",
                from: plan.to.clone(),
                to: plan.from.clone(),
                description: format!("revert salve's change to {} ({what})", run.target),
            };
            let refused = match self
                .admit(run, Gate::Revert, Some(&now), &revert_plan)
                .await?
            {
                // Putting back salve's own change that made things worse does not wait:
                // every minute of waiting is a minute more of the harm.
                Admission::Allowed | Admission::NeedsApproval(_) => None,
                Admission::Denied(reasons) => {
                    Some(format!("policy denied the revert: {}", reasons.join("; ")))
                }
                Admission::Paused(pause) => {
                    Some(format!("{}, so the revert was not sent", pause.describe()))
                }
                Admission::Unknown(why) => Some(why),
                // Not asked for a revert: putting back salve's own change is no step.
                Admission::Silenced(_) => None,
            };
            if let Some(why) = refused {
                return self.not_reverted(run, why).await;
            }
            match self
                .call(run, ApiCall::write(&run.target, &undo, true), || {
                    cluster.write(&now, &undo, true)
                })
                .await?
            {
                Err(e) if e.is_conflict() => continue,
                Err(e) => {
                    return self
                        .not_reverted(run, format!("the revert's dry-run was rejected: {e}"))
                        .await;
                }
                Ok(_) => {}
            }
            match self
                .send(
                    run,
                    cluster.as_ref(),
                    &now,
                    &undo,
                    ActionKind::Revert,
                    &revert_plan.description,
                )
                .await?
            {
                Sent::Accepted { .. } => {
                    self.event(
                        run,
                        EventKind::Revert,
                        json!({"reverted": true, "what": what}),
                    )
                    .await?;
                    return Ok(Ok(format!("; salve reverted its change ({what})")));
                }
                Sent::Conflict => continue,
                Sent::Refused(e) => {
                    return self
                        .not_reverted(run, format!("the revert was rejected: {e}"))
                        .await;
                }
                Sent::NotSent(NotSent::Moved) => {
                    return Ok(Err(Ending::Leave(
                        "another worker claimed this remediation",
                    )));
                }
                Sent::NotSent(why) => {
                    let reason = why.reason(run);
                    return self.not_reverted(run, reason).await;
                }
            }
        }
        self.not_reverted(
            run,
            format!(
                "{} kept changing under salve: {} conflicting writes in a row",
                run.target,
                retries + 1
            ),
        )
        .await
    }

    async fn not_reverted(
        &self,
        run: &Run<'_>,
        why: String,
    ) -> Result<Result<String, Ending>, EngineError> {
        self.event(
            run,
            EventKind::Revert,
            json!({"reverted": false, "reason": why}),
        )
        .await?;
        Ok(Ok(format!("; not reverted: {why}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{TargetRef, WorkloadKind};

    fn workload(replicas: i32) -> Workload {
        let t = TargetRef::new(WorkloadKind::Deployment, "shop", "checkout").unwrap();
        Workload::from_object(t, &json!({"spec": {"replicas": replicas}}))
    }

    #[test]
    fn a_revert_restores_only_what_salve_wrote() {
        let wrote = Change::Scale { replicas: 3 };
        assert_eq!(still_salves(&wrote, &workload(3)), Ok(()));
        let human = still_salves(&wrote, &workload(8)).unwrap_err();
        assert!(human.contains("8 replicas, not the 3"), "{human}");
        let (back, what) = undo(&wrote, &workload(2)).unwrap();
        assert_eq!(back, Change::Scale { replicas: 2 });
        assert_eq!(what, "scaled back to 2 replicas");
        assert!(
            undo(
                &Change::Restart {
                    restarted_at: "t".into()
                },
                &workload(2)
            )
            .is_none()
        );
    }
}
