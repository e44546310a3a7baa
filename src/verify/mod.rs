//! Did it help? Rollout and alert-resolution checks after each step.
//!
//! Reading stays at the edge (a Kubernetes GET, a Prometheus query, the stored incident);
//! judging is pure ([`rollout::rollout_status`], [`alert::judge_series`], [`judge`]), so
//! every rule of evidence is table-tested.
//!
//! The rules of evidence, in the order [`judge`] applies them to each poll:
//! - the rollout of the generation salve wrote failed, or a **new** alert (one that
//!   *started* after the write) fired on the same workload: the change made things worse;
//! - rolled out and the alert resolved: healed;
//! - anything else waits for the next poll, until the window (`verify.within`) has fully
//!   passed: the last poll is at or after it. Then an unfinished rollout that salve's
//!   write started is a failed rollout; evidence that could not be had (the workload
//!   unreadable, Prometheus down) is `verification_unavailable`, never a failure;
//!   everything else is `not_healed`.

pub mod alert;
pub mod prometheus;
pub mod rollout;
pub mod silences;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use crate::alert::Alert;
use crate::cluster::{Cluster, TargetRef, Workload};
use crate::rules::VerifySpec;
use crate::store::targets::Lease;
use crate::store::{Store, StoreError};
pub use alert::{AlertSignal, alert_signal};
pub use prometheus::{Prometheus, PrometheusHttp};
pub use rollout::{RolloutStatus, rollout_status};
pub use silences::{AlertmanagerApi, AlertmanagerView, Suppressions};

/// What verification concluded about one step.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Rolled out and the alert resolved, this many seconds after the write.
    Healed { seconds: f64 },
    /// The change rolled out (or was not salve's to judge) but the alert still fires.
    NotHealed(String),
    /// The rollout of the generation salve wrote failed or did not finish in the window.
    RolloutFailed(String),
    /// A new alert started on the workload after salve's change.
    MadeWorse(String),
    /// The evidence could not be had; salve does not guess.
    Unavailable(String),
}

impl Outcome {
    /// The outcome's name as stored with attempts.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Healed { .. } => "healed",
            Outcome::NotHealed(_) => "not_healed",
            Outcome::RolloutFailed(_) => "rollout_failed",
            Outcome::MadeWorse(_) => "made_worse",
            Outcome::Unavailable(_) => "verification_unavailable",
        }
    }

    /// Why, in words.
    pub fn reason(&self) -> String {
        match self {
            Outcome::Healed { seconds } => format!("verified after {seconds:.1}s"),
            Outcome::NotHealed(r)
            | Outcome::RolloutFailed(r)
            | Outcome::MadeWorse(r)
            | Outcome::Unavailable(r) => r.clone(),
        }
    }
}

/// One look at the workload and the alert, kept on the record with its time.
#[derive(Debug, Clone, Serialize)]
pub struct Poll {
    pub at: String,
    /// Seconds since salve's write.
    pub after_seconds: f64,
    pub rollout: RolloutStatus,
    pub alert: AlertSignal,
    /// A new alert on the workload that started after the write, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_alert: Option<String>,
}

/// What a verification needs to know about the change it judges.
pub struct Check<'a> {
    pub remediation_id: &'a str,
    pub incident_id: &'a str,
    pub alert: &'a Alert,
    pub target: &'a TargetRef,
    /// When the write was accepted.
    pub acted_at: DateTime<Utc>,
    /// The generation salve's write produced: status older than that is not evidence.
    pub written_generation: i64,
    /// The workload as read just before the write.
    pub before: &'a Workload,
    pub spec: VerifySpec,
    /// The remediation's lease on the workload and how far each poll extends it.
    pub lease: Option<(&'a Lease, chrono::Duration)>,
}

/// The conclusion and every poll that led to it.
#[derive(Debug, Clone)]
pub struct Verification {
    pub outcome: Outcome,
    pub polls: Vec<Poll>,
}

impl Verification {
    /// The record kept on the timeline.
    pub fn evidence(&self, check: &Check<'_>) -> Value {
        json!({
            "outcome": self.outcome.name(),
            "reason": self.outcome.reason(),
            "window_seconds": check.spec.within.as_secs_f64(),
            "written_generation": check.written_generation,
            "polls": self.polls,
        })
    }
}

/// Polls until the evidence decides, or the window has fully passed. Before every poll
/// it renews the remediation's lease on the workload; once that hold is lost, later status
/// could be anyone's doing, so verification stops as unavailable.
pub async fn verify(
    check: &Check<'_>,
    cluster: &dyn Cluster,
    store: &Store,
    prometheus: Option<&dyn Prometheus>,
    call_timeout: Duration,
) -> Result<Verification, StoreError> {
    let deadline = tokio::time::Instant::now() + check.spec.within;
    let before_done = rollout_status(check.before, check.before.generation, None).is_done();
    let mut polls = Vec::new();
    loop {
        let held = match check.lease {
            Some((lease, extend)) => {
                let now = Utc::now();
                store
                    .renew_lease(check.target, lease, now, now + extend)
                    .await?
            }
            None => true,
        };
        if !held {
            let outcome = Outcome::Unavailable(format!(
                "salve lost its lock on {} during verification (the lease lapsed or was taken over)",
                check.target
            ));
            return Ok(Verification { outcome, polls });
        }
        let poll = look(check, cluster, store, prometheus, call_timeout).await?;
        let now = tokio::time::Instant::now();
        let last = now >= deadline;
        let verdict = judge(&poll, last, before_done, check.spec.within);
        polls.push(poll);
        if let Some(outcome) = verdict {
            return Ok(Verification { outcome, polls });
        }
        tokio::time::sleep(check.spec.every.min(deadline - now)).await;
    }
}

/// One poll: the workload's rollout, a new alert, and the alert's own status.
async fn look(
    check: &Check<'_>,
    cluster: &dyn Cluster,
    store: &Store,
    prometheus: Option<&dyn Prometheus>,
    call_timeout: Duration,
) -> Result<Poll, StoreError> {
    let seen_before = check.before.condition("Progressing");
    let rollout = match tokio::time::timeout(call_timeout, cluster.read(check.target)).await {
        Ok(Ok(w)) => rollout_status(&w, check.written_generation, seen_before),
        Ok(Err(e)) => RolloutStatus::Unknown(format!("cannot read the workload: {e}")),
        Err(_) => RolloutStatus::Unknown(format!(
            "reading the workload took longer than {}s",
            call_timeout.as_secs()
        )),
    };
    let new_alert = store
        .newer_alert_on_target(check.target, check.acted_at, check.remediation_id)
        .await?
        .map(|(id, alertname)| {
            format!(
                "{alertname} started on {} after the change (remediation {id})",
                check.target
            )
        });
    let alert = alert_signal(
        store,
        check.incident_id,
        check.alert,
        prometheus,
        check.spec.no_data,
    )
    .await?;
    let now = Utc::now();
    Ok(Poll {
        at: crate::store::timestamp(now),
        after_seconds: (now - check.acted_at).num_milliseconds() as f64 / 1000.0,
        rollout,
        alert,
        new_alert,
    })
}

/// The rules of evidence for one poll. `last`: the window has passed, so a conclusion is
/// due. `before_done`: the workload had finished rolling out before salve wrote, so any
/// unfinished rollout now was started by salve's change.
pub fn judge(poll: &Poll, last: bool, before_done: bool, within: Duration) -> Option<Outcome> {
    if let RolloutStatus::Failed(why) = &poll.rollout {
        return Some(Outcome::RolloutFailed(why.clone()));
    }
    if let Some(why) = &poll.new_alert {
        return Some(Outcome::MadeWorse(why.clone()));
    }
    if let (RolloutStatus::Done(_), AlertSignal::Resolved(_)) = (&poll.rollout, &poll.alert) {
        return Some(Outcome::Healed {
            seconds: poll.after_seconds,
        });
    }
    if !last {
        return None;
    }
    let within = humantime::format_duration(within);
    Some(match (&poll.rollout, &poll.alert) {
        (RolloutStatus::Progressing(why), _) if before_done => {
            Outcome::RolloutFailed(format!("not rolled out within {within}: {why}"))
        }
        (RolloutStatus::Unknown(why), _) | (_, AlertSignal::Unknown(why)) => {
            Outcome::Unavailable(format!("no evidence at the end of {within}: {why}"))
        }
        (RolloutStatus::Progressing(why), _) => Outcome::NotHealed(format!(
            "the rollout was unfinished before salve's change and still is after {within}: {why}"
        )),
        (_, AlertSignal::StillFiring(why)) => {
            Outcome::NotHealed(format!("the alert did not resolve within {within} ({why})"))
        }
        (RolloutStatus::Done(_) | RolloutStatus::Failed(_), AlertSignal::Resolved(_)) => {
            unreachable!("decided above")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll(rollout: RolloutStatus, alert: AlertSignal) -> Poll {
        Poll {
            at: String::new(),
            after_seconds: 1.5,
            rollout,
            alert,
            new_alert: None,
        }
    }

    fn done() -> RolloutStatus {
        RolloutStatus::Done("rolled out".into())
    }
    fn progressing() -> RolloutStatus {
        RolloutStatus::Progressing("1 of 2 updated".into())
    }
    fn firing() -> AlertSignal {
        AlertSignal::StillFiring("still".into())
    }
    fn unknown() -> AlertSignal {
        AlertSignal::Unknown("Prometheus down".into())
    }
    fn resolved() -> AlertSignal {
        AlertSignal::Resolved("gone".into())
    }

    const W: Duration = Duration::from_secs(45);

    #[test]
    fn nothing_is_concluded_before_the_window_ends_unless_the_evidence_decides() {
        for p in [
            poll(progressing(), firing()),
            poll(done(), firing()),
            poll(done(), unknown()),
            poll(RolloutStatus::Unknown("x".into()), resolved()),
        ] {
            assert_eq!(judge(&p, false, true, W), None, "{p:?}");
        }
        assert_eq!(
            judge(&poll(done(), resolved()), false, true, W),
            Some(Outcome::Healed { seconds: 1.5 })
        );
        assert!(matches!(
            judge(
                &poll(RolloutStatus::Failed("deadline".into()), resolved()),
                false,
                true,
                W
            ),
            Some(Outcome::RolloutFailed(_))
        ));
        let mut worse = poll(done(), firing());
        worse.new_alert = Some("PodCrashLooping started after the change".into());
        assert!(matches!(
            judge(&worse, false, true, W),
            Some(Outcome::MadeWorse(_))
        ));
    }

    #[test]
    fn unknown_evidence_at_the_end_is_unavailable_never_not_healed() {
        assert!(matches!(
            judge(&poll(done(), unknown()), true, true, W),
            Some(Outcome::Unavailable(m)) if m.contains("Prometheus down")
        ));
        assert!(matches!(
            judge(
                &poll(RolloutStatus::Unknown("403".into()), firing()),
                true,
                true,
                W
            ),
            Some(Outcome::Unavailable(_))
        ));
        assert!(matches!(
            judge(&poll(done(), firing()), true, true, W),
            Some(Outcome::NotHealed(_))
        ));
    }

    #[test]
    fn an_unfinished_rollout_is_salves_failure_only_if_salve_started_it() {
        assert!(matches!(
            judge(&poll(progressing(), firing()), true, true, W),
            Some(Outcome::RolloutFailed(m)) if m.contains("not rolled out within 45s")
        ));
        assert!(matches!(
            judge(&poll(progressing(), firing()), true, false, W),
            Some(Outcome::NotHealed(m)) if m.contains("unfinished before salve's change")
        ));
        assert!(matches!(
            judge(&poll(progressing(), resolved()), true, false, W),
            Some(Outcome::NotHealed(_))
        ));
    }
}
