//! Shadow mode: what a rule would have done, and what the alert did without it.
//!
//! A rule in `mode: shadow` runs its first step through everything but the write (a
//! fresh read, the plan, the policy verdict and a server-side dry-run, all on the
//! timeline), then watches the alert alone for the rule's `verify.within`, with the same
//! witnesses verification uses. The record ends `shadowed`, saying what would have been
//! done and whether the alert resolved on its own: that is what `salve rules report`
//! sums up before someone promotes the rule to `auto`.

use chrono::Utc;
use serde_json::json;

use super::ladder::{Ending, Finish, Run};
use super::plan::Plan;
use super::{Engine, EngineError};
use crate::remediation::Event;
use crate::store::EventKind;
use crate::verify::AlertSignal;

impl Engine {
    /// Watches the alert after a shadow rule's would-be change, records the watch, and
    /// ends the remediation `shadowed`; a stop midway leaves it `pending` for its next
    /// owner (who starts the shadow run over: it writes nothing).
    pub(super) async fn watch_alone(
        &self,
        run: &Run<'_>,
        plan: &Plan,
        found: String,
    ) -> Result<Ending, EngineError> {
        let spec = run.rule.verify;
        let started = Utc::now();
        let within = chrono::Duration::from_std(spec.within).unwrap_or(chrono::Duration::zero());
        let mut polls = Vec::new();
        let resolved = loop {
            let signal = self.alert_now(run).await?;
            let at = Utc::now();
            let detail = match &signal {
                AlertSignal::Resolved(w)
                | AlertSignal::StillFiring(w)
                | AlertSignal::Unknown(w) => w.clone(),
            };
            polls.push(json!({"at": crate::store::timestamp(at), "alert": {"status": signal.name(), "detail": detail}}));
            if let AlertSignal::Resolved(why) = signal {
                break Some((why, (at - started).num_milliseconds() as f64 / 1000.0));
            }
            if at - started >= within {
                break None;
            }
            tokio::select! {
                _ = tokio::time::sleep(spec.every) => {}
                _ = self.inner.stopping.cancelled() => {
                    return Ok(Ending::Leave("shutting down while a shadow rule watched its alert; the next owner runs it again"));
                }
            }
        };
        let watched = humantime::format_duration(spec.within);
        let (summary, outcome) = match &resolved {
            Some((why, seconds)) => (
                format!(
                    "shadow: would {}; the alert resolved on its own after {seconds:.1}s ({why})",
                    plan.description
                ),
                "resolved_on_its_own",
            ),
            None => (
                format!(
                    "shadow: would {}; the alert still fired {watched} later (the rule would then have tried its next step or escalated)",
                    plan.description
                ),
                "still_firing",
            ),
        };
        self.event(
            run,
            EventKind::Verification,
            json!({
                "shadow": true,
                "would": plan.description,
                "action": plan.action,
                "from": plan.from,
                "to": plan.to,
                "outcome": outcome,
                "seconds": resolved.as_ref().map(|(_, s)| *s),
                "within_seconds": spec.within.as_secs_f64(),
                "polls": polls,
            }),
        )
        .await?;
        Ok(Ending::Finish(Finish::new(
            Event::Shadow,
            summary,
            vec![found],
        )))
    }
}
