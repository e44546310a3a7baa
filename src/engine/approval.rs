//! Approval: a rule in `mode: approve` (or a policy's `require_approval`) asks a human
//! before each write.
//!
//! After the fresh read, the plan, the verdict and the server-side dry-run, the exact
//! change is recorded as a request and the remediation waits `awaiting_approval` (its
//! workload lock renewed, so nothing else acts on the workload meanwhile). A decision
//! comes through the store (`salve approve|reject`, the API, from any replica). Approved,
//! the step starts over: the workload is read again, policy judges again, and the change
//! is written only if the fresh plan is the very change approved; a stale approval
//! writes nothing. Rejected, the remediation has ended. Unanswered by `approval_timeout`,
//! it is escalated.

use std::time::Duration;

use chrono::Utc;
use serde_json::json;

use super::ladder::{Finish, Run};
use super::plan::Plan;
use super::step::Step;
use super::{Engine, EngineError};
use crate::remediation::RemediationState;
use crate::store::EventKind;
use crate::store::approvals::NewApproval;

/// How often a waiting remediation looks for a decision.
const POLL: Duration = Duration::from_millis(500);

/// Where the approval of one step stands.
pub(super) enum Approval {
    /// Approved, for exactly this change: write it.
    Granted,
    /// A decision came while waiting: read, plan and judge again before anything else.
    Decided,
    /// Stop here with this step (rejected, expired, stale, shutting down).
    End(Step),
}

impl Engine {
    /// The approval of step `index` for `plan`: asks for it (once), waits for it, or
    /// finds it given.
    pub(super) async fn approval(
        &self,
        run: &mut Run<'_>,
        index: usize,
        plan: &Plan,
        why: String,
    ) -> Result<Approval, EngineError> {
        let store = &self.inner.store;
        let step = index as i64 + 1;
        let Some(asked) = store.approval(&run.id, step).await? else {
            return self.ask_approval(run, step, plan, why).await;
        };
        match asked.decision.as_deref() {
            Some("approved") if asked.plan == plan.description => Ok(Approval::Granted),
            Some("approved") => {
                let by = asked.decided_by.unwrap_or_default();
                Ok(Approval::End(Step::End(Finish::escalated(format!(
                    "{} changed since {by} approved \"{}\": salve would now {}; a stale approval writes nothing",
                    run.target, asked.plan, plan.description
                )))))
            }
            // The decision ended the remediation already (in the same transaction).
            Some(_) => Ok(Approval::End(Step::Leave("a human rejected the change"))),
            None => self.await_decision(run, &asked.expires_at, plan).await,
        }
    }

    /// Records the request (and `awaiting_approval`), posts it to the approval webhook.
    async fn ask_approval(
        &self,
        run: &mut Run<'_>,
        step: i64,
        plan: &Plan,
        why: String,
    ) -> Result<Approval, EngineError> {
        let now = Utc::now();
        let timeout = run.rule.approval_timeout;
        let expires_at =
            now + chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::minutes(15));
        let request = json!({
            "rule": run.rule.name,
            "why": why,
            "target": run.target,
            "step": step,
            "plan": plan.description,
            "action": plan.action,
            "from": plan.from,
            "to": plan.to,
        });
        let summary = format!(
            "awaiting approval until {}: would {} (salve approve {} / salve reject {} --reason …)",
            crate::store::timestamp(expires_at),
            plan.description,
            run.id,
            run.id
        );
        let new = NewApproval {
            remediation_id: &run.id,
            step,
            plan: &plan.description,
            request: &request,
            from: run.state,
            summary: &summary,
            expires_at,
        };
        let Some(to) = self.inner.store.request_approval(&new, now).await? else {
            return Ok(Approval::End(Step::Leave(
                "another worker claimed this remediation",
            )));
        };
        run.state = to;
        if let Some(webhook) = &self.inner.approval_webhook {
            let api = self
                .inner
                .external_url
                .link(&format!("/api/v1/remediations/{}", run.id));
            let body = json!({
                "remediation_id": run.id,
                "request": request,
                "expires_at": crate::store::timestamp(expires_at),
                "approve_url": format!("{api}/approve"),
                "reject_url": format!("{api}/reject"),
                "audit_url": self.audit_url(&run.id),
                "cli": {"approve": format!("salve approve {}", run.id), "reject": format!("salve reject {} --reason …", run.id)},
            });
            let delivered = webhook.post(&body).await;
            self.event(
                run,
                EventKind::Escalation,
                json!({"approval_requested": true, "delivered": [{"notifier": "approval webhook", "ok": delivered.is_ok(), "error": delivered.err()}]}),
            )
            .await?;
        }
        self.await_decision(run, &crate::store::timestamp(expires_at), plan)
            .await
    }

    /// Waits for a decision until `expires_at`, renewing the workload's lease.
    async fn await_decision(
        &self,
        run: &mut Run<'_>,
        expires_at: &str,
        plan: &Plan,
    ) -> Result<Approval, EngineError> {
        let store = &self.inner.store;
        let expires = crate::store::parse_timestamp(expires_at)?;
        let mut renewed = Utc::now();
        loop {
            let now = Utc::now();
            if now >= expires {
                return Ok(Approval::End(Step::End(Finish::escalated(format!(
                    "no one approved or rejected \"{}\" by {expires_at} (approval_timeout {}); nothing was written",
                    plan.description,
                    humantime::format_duration(run.rule.approval_timeout)
                )))));
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = self.inner.stopping.cancelled() => {
                    return Ok(Approval::End(Step::Leave(
                        "shutting down while awaiting approval; the request stays, and the next owner waits on",
                    )));
                }
            }
            if let Some(lease) = &run.lease {
                let now = Utc::now();
                if (now - renewed).to_std().unwrap_or_default() >= self.inner.limits.lock_lease / 3
                {
                    if !store
                        .renew_lease(&run.target, lease, now, self.lease_until(now))
                        .await?
                    {
                        return Ok(Approval::End(Step::LeaseLost(format!(
                            "salve lost its lock on {} while awaiting approval; nothing was written",
                            run.target
                        ))));
                    }
                    renewed = now;
                }
            }
            if let Some(i) = store.incident(&run.incident.id).await? {
                if i.status == crate::alert::AlertStatus::Resolved {
                    return Ok(Approval::End(Step::End(Finish::skipped(format!(
                        "the alert resolved while \"{}\" awaited approval; nothing was written",
                        plan.description
                    )))));
                }
            }
            let Some(r) = store.remediation(&run.id).await? else {
                return Ok(Approval::End(Step::Leave("the remediation is gone")));
            };
            if r.state != RemediationState::AwaitingApproval {
                run.state = r.state;
                if r.state.is_terminal() {
                    return Ok(Approval::End(Step::Leave(
                        "the approval was decided: the remediation has ended",
                    )));
                }
                return Ok(Approval::Decided);
            }
        }
    }
}
