//! Telling humans, once per remediation, until they heard it.
//!
//! The escalation is claimed in the store first (at most one per remediation, so per
//! incident, across replicas), with what it says: that row is an outbox. The first
//! round goes out at once; the outbox retries notifiers that failed (every outbox period,
//! 5 s, doubling, at most 5 min apart), re-posts the `SalveRemediationFailed` alert to
//! every Alertmanager every minute with its `endsAt` 5 minutes ahead while the original
//! alert fires, and resolves it when the original resolves or a human marks it handled
//! (`POST /api/v1/remediations/{id}/handled`). Every round that delivers or fails is on the timeline.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tracing::warn;

use super::ladder::Run;
use super::{Engine, EngineError, stored_target};
use crate::notify::Escalation;
use crate::remediation::{Event, RemediationState};
use crate::store::EventKind;
use crate::store::escalations::EscalationClaim;

/// How long one replica holds an outbox entry it is working on.
const OUTBOX_HOLD: chrono::Duration = chrono::Duration::seconds(30);

impl Engine {
    /// How often a live escalation alert is re-posted (`Limits::escalation_refresh`).
    fn refresh_every(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.inner.limits.escalation_refresh)
            .unwrap_or(chrono::Duration::minutes(1))
    }

    /// How far ahead an escalation alert's `endsAt` is set: five refreshes, so a missed
    /// refresh or two never lets it lapse, and a dead salve's alert ends on its own.
    fn escalation_ends(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + self.refresh_every() * 5
    }

    /// Delay before retry `attempts + 1`: the outbox period, doubling, at most 5 minutes.
    fn retry_backoff(&self, attempts: i64) -> chrono::Duration {
        let base = chrono::Duration::from_std(self.inner.limits.outbox_every)
            .unwrap_or(chrono::Duration::seconds(5));
        (base * (1 << attempts.clamp(0, 6))).min(chrono::Duration::minutes(5))
    }

    /// What an escalation of this run says.
    pub(super) fn escalation_of(&self, run: &Run<'_>, reason: &str, summary: &str) -> Escalation {
        Escalation {
            remediation_id: run.id.clone(),
            incident_id: run.incident.id.clone(),
            rule: run.rule.name.clone(),
            target: run.target.clone(),
            reason: reason.to_owned(),
            summary: summary.to_owned(),
            alert: run.incident.alert.clone(),
            audit_url: self.audit_url(&run.id),
        }
    }

    /// Moves a remediation on with `event`; with an escalation, claims it in the same
    /// transaction (so no crash can leave it `escalated` with nobody told) and then makes
    /// the first delivery round. The outbox ([`Engine::run_outbox`]) retries what failed,
    /// and sends a claimed escalation whose claimer died before its first round.
    pub(super) async fn move_escalating(
        &self,
        id: &str,
        from: RemediationState,
        event: Event,
        (summary, reasons): (&str, &[String]),
        escalation: Option<&Escalation>,
    ) -> Result<Option<RemediationState>, EngineError> {
        let names: Vec<String> = self.inner.notifiers.iter().map(|n| n.name()).collect();
        let now = Utc::now();
        let claim = escalation.map(|e| EscalationClaim {
            reason: &e.reason,
            payload: serde_json::to_value(e).unwrap_or(Value::Null),
            notifiers: &names,
            hold_until: now + OUTBOX_HOLD,
        });
        let (moved, claimed) = self
            .inner
            .store
            .transition_escalating(id, from, event, (summary, reasons), now, claim.as_ref())
            .await?;
        crate::crash_point!("escalation.claimed");
        if let (true, Some(e)) = (claimed, escalation) {
            self.first_round(e, &names).await?;
        }
        Ok(moved)
    }

    /// A link to a remediation's audit page.
    pub(super) fn audit_url(&self, id: &str) -> String {
        self.inner
            .external_url
            .link(&format!("/ui/remediations/{id}"))
    }

    /// The first delivery round of a just-claimed escalation.
    async fn first_round(&self, e: &Escalation, names: &[String]) -> Result<(), EngineError> {
        let id = &e.remediation_id;
        if names.is_empty() {
            warn!(remediation = %id, "escalation recorded, but no notifier is configured (--alertmanager-url)");
        }
        let ends_at = self.escalation_ends(Utc::now());
        let round = self.deliver_round(e, names, 0, ends_at).await?;
        let detail = json!({"reason": e.reason, "delivered": round, "attempt": 1});
        Ok(self
            .inner
            .store
            .append_event(id, EventKind::Escalation, &detail, Utc::now())
            .await?)
    }

    /// Sends `e` to the notifiers named in `to`, valid until `ends_at`, and records who
    /// still has to accept it and when to try again. Returns the delivery log.
    async fn deliver_round(
        &self,
        e: &Escalation,
        to: &[String],
        attempts: i64,
        ends_at: DateTime<Utc>,
    ) -> Result<Value, EngineError> {
        let id = &e.remediation_id;
        let mut log = Vec::new();
        let mut undelivered = Vec::new();
        let mut refreshed = false;
        for notifier in self
            .inner
            .notifiers
            .iter()
            .filter(|n| to.contains(&n.name()))
        {
            let result = notifier.notify(e, ends_at).await;
            self.inner
                .metrics
                .escalation_delivery(&notifier.name(), result.is_ok());
            match &result {
                Ok(()) => refreshed |= notifier.keeps_alert(),
                Err(err) => {
                    warn!(remediation = %id, notifier = %notifier.name(), error = %err, "escalation not delivered; the outbox will retry");
                    undelivered.push(notifier.name());
                }
            }
            log.push(json!({"to": notifier.name(), "ok": result.is_ok(), "error": result.err()}));
        }
        let now = Utc::now();
        let next = if undelivered.is_empty() {
            now + self.refresh_every()
        } else {
            now + self.retry_backoff(attempts)
        };
        let log = Value::Array(log);
        self.inner
            .store
            .record_escalation_round(id, &log, &undelivered, next, refreshed.then_some(now))
            .await?;
        Ok(log)
    }

    /// One pass of the escalation outbox: retries deliveries that failed (with backoff),
    /// re-posts live escalation alerts before they expire, and resolves them once the
    /// original alert resolved.
    pub(super) async fn run_outbox(&self) -> Result<(), EngineError> {
        let store = &self.inner.store;
        let now = Utc::now();
        let due = store
            .due_escalations(now, now - self.refresh_every(), now + OUTBOX_HOLD)
            .await?;
        for entry in due {
            let Ok(e) = serde_json::from_value::<Escalation>(entry.payload.clone()) else {
                warn!(remediation = %entry.remediation_id, "a stored escalation does not read back; resolving it in the outbox");
                store.resolve_escalation(&entry.remediation_id, now).await?;
                continue;
            };
            let live: Vec<String> = self
                .inner
                .notifiers
                .iter()
                .filter(|n| n.keeps_alert())
                .map(|n| n.name())
                .collect();
            if entry.original_resolved || entry.handled_by.is_some() {
                let log = self.deliver_round(&e, &live, entry.attempts, now).await?;
                let all_ok = log
                    .as_array()
                    .is_some_and(|l| l.iter().all(|d| d["ok"] == true));
                if all_ok {
                    store.resolve_escalation(&entry.remediation_id, now).await?;
                    let why = match &entry.handled_by {
                        Some(by) => format!("marked handled by {by}"),
                        None => "the original alert resolved".to_owned(),
                    };
                    let detail = json!({"resolved": true, "reason": why, "delivered": log});
                    store
                        .append_event(&entry.remediation_id, EventKind::Escalation, &detail, now)
                        .await?;
                }
            } else if !entry.undelivered.is_empty() || entry.attempts == 0 {
                // Retries, and a first round whose claimer died before making it.
                let log = self
                    .deliver_round(
                        &e,
                        &entry.undelivered,
                        entry.attempts,
                        self.escalation_ends(now),
                    )
                    .await?;
                let detail =
                    json!({"reason": e.reason, "delivered": log, "attempt": entry.attempts + 1});
                store
                    .append_event(&entry.remediation_id, EventKind::Escalation, &detail, now)
                    .await?;
            } else {
                self.deliver_round(&e, &live, 0, self.escalation_ends(now))
                    .await?;
            }
        }
        Ok(())
    }

    /// What an escalation of a stored remediation says (recovery has no [`Run`]);
    /// `None` if its record is gone.
    pub(super) async fn stored_escalation(
        &self,
        id: &str,
        reason: &str,
        summary: &str,
    ) -> Result<Option<Escalation>, EngineError> {
        let store = &self.inner.store;
        let Some(r) = store.remediation(id).await? else {
            return Ok(None);
        };
        let (Some(incident), Some(target)) = (
            store.incident(&r.incident_id).await?,
            stored_target(&r.target.kind, &r.target.namespace, &r.target.name),
        ) else {
            return Ok(None);
        };
        Ok(Some(Escalation {
            audit_url: self.audit_url(id),
            remediation_id: id.to_owned(),
            incident_id: r.incident_id.clone(),
            rule: r.rule.clone(),
            target,
            reason: reason.to_owned(),
            summary: summary.to_owned(),
            alert: incident.alert,
        }))
    }
}
