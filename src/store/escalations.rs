//! Escalations: humans told, at most once per remediation (and so per incident), through
//! an outbox that retries until every notifier accepted, keeps the alert active in
//! Alertmanager while the original fires, and resolves it when the original resolves.

use chrono::{DateTime, Utc};
use serde_json::Value;

use sqlx::Row;

use super::remediations::transition_in;
use super::{Store, StoreError, timestamp};
use crate::cluster::TargetRef;
use crate::remediation::{Event, RemediationState};

/// One escalation as the outbox sees it.
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    pub remediation_id: String,
    /// The escalation as first claimed (JSON of [`crate::notify::Escalation`]).
    pub payload: Value,
    /// Notifiers (by name) that have not accepted it yet.
    pub undelivered: Vec<String>,
    pub attempts: i64,
    /// Whether the original alert has resolved since (the escalation should resolve too).
    pub original_resolved: bool,
    /// Who marked it handled, if a human did (the escalation should resolve too).
    pub handled_by: Option<String>,
    pub refreshed_at: Option<String>,
}

/// What an escalation says and to whom, claimed together with the move that ends a
/// remediation (see [`Store::transition_escalating`]).
#[derive(Debug, Clone)]
pub struct EscalationClaim<'a> {
    pub reason: &'a str,
    /// The escalation as sent, so the outbox can send it again after a crash.
    pub payload: Value,
    /// Notifiers that still have to accept it: all of them, at first.
    pub notifiers: &'a [String],
    /// Until when the claimer's own first round has it; after that the outbox may.
    pub hold_until: DateTime<Utc>,
}

impl Store {
    /// Moves a remediation on and, in the same transaction, claims its one escalation
    /// (the outbox row, with what it says) when `claim` is given: a remediation is never
    /// `escalated` without the escalation that tells humans, whatever crashes after.
    /// Returns the new state (`None`: it was no longer in `from`) and whether this call
    /// made the claim (`false`: another replica, or an earlier round, already did).
    pub async fn transition_escalating(
        &self,
        id: &str,
        from: RemediationState,
        event: Event,
        (summary, reasons): (&str, &[String]),
        now: DateTime<Utc>,
        claim: Option<&EscalationClaim<'_>>,
    ) -> Result<(Option<RemediationState>, bool), StoreError> {
        let (id, summary, reasons) = (id.to_owned(), summary.to_owned(), reasons.to_vec());
        let claim = claim.map(|c| {
            (
                c.reason.to_owned(),
                c.payload.to_string(),
                serde_json::to_string(c.notifiers).unwrap_or_else(|_| "[]".into()),
                timestamp(c.hold_until),
            )
        });
        self.write(move |tx| {
            Box::pin(async move {
                let moved = transition_in(tx, &id, from, event, &summary, &reasons, now).await?;
                let mut claimed = false;
                if let (Some(_), Some((reason, payload, notifiers, hold_until))) = (moved, claim) {
                    claimed = sqlx::query(
                        "INSERT INTO escalations (remediation_id, created_at, reason, delivered, payload, undelivered, next_attempt_at)
                         VALUES ($1, $2, $3, '[]', $4, $5, $6)
                         ON CONFLICT (remediation_id) DO NOTHING",
                    )
                    .bind(&id)
                    .bind(timestamp(now))
                    .bind(reason)
                    .bind(payload)
                    .bind(notifiers)
                    .bind(hold_until)
                    .execute(tx.conn())
                    .await?
                    .rows_affected()
                        == 1;
                }
                Ok((moved, claimed))
            })
        })
        .await
    }

    /// Records a delivery round: the delivery log, who still has to accept it, and when
    /// to try them again.
    pub async fn record_escalation_round(
        &self,
        remediation_id: &str,
        delivered: &Value,
        undelivered: &[String],
        next_attempt_at: DateTime<Utc>,
        refreshed_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        self.execute_write(
            sqlx::query(
                "UPDATE escalations SET delivered = $1, undelivered = $2, attempts = attempts + 1,
                 next_attempt_at = $3, refreshed_at = COALESCE($4, refreshed_at)
             WHERE remediation_id = $5",
            )
            .bind(delivered.to_string())
            .bind(serde_json::to_string(undelivered).unwrap_or_else(|_| "[]".into()))
            .bind(timestamp(next_attempt_at))
            .bind(refreshed_at.map(timestamp))
            .bind(remediation_id),
        )
        .await?;
        Ok(())
    }

    /// Takes the escalations that need the outbox now (a retry is due, the alert needs
    /// refreshing, or the original alert resolved), each claimed by compare-and-set on
    /// its `next_attempt_at` so one replica handles it at a time.
    pub async fn due_escalations(
        &self,
        now: DateTime<Utc>,
        refresh_before: DateTime<Utc>,
        hold_until: DateTime<Utc>,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT e.remediation_id, e.payload, e.undelivered, e.attempts, e.next_attempt_at, e.refreshed_at,
                    e.handled_by, i.status AS incident_status
             FROM escalations e JOIN remediations r ON r.id = e.remediation_id
                  JOIN incidents i ON i.id = r.incident_id
             WHERE e.resolved_at IS NULL AND e.payload IS NOT NULL
               AND (e.next_attempt_at <= $1 OR i.status = 'resolved' OR e.handled_at IS NOT NULL
                    OR (e.undelivered = '[]' AND (e.refreshed_at IS NULL OR e.refreshed_at <= $2)))
             ORDER BY e.created_at LIMIT 100",
        )
        .bind(timestamp(now))
        .bind(timestamp(refresh_before))
        .fetch_all(&mut *self.reader().await?)
        .await?;
        let mut due = Vec::new();
        for r in &rows {
            let id: String = r.try_get("remediation_id")?;
            let next: Option<String> = r.try_get("next_attempt_at")?;
            let claimed = self.execute_write(sqlx::query(
                "UPDATE escalations SET next_attempt_at = $1
                 WHERE remediation_id = $2 AND COALESCE(next_attempt_at, '') = $3 AND resolved_at IS NULL",
            )
            .bind(timestamp(hold_until))
            .bind(&id)
            .bind(next.unwrap_or_default())
            )
            .await?
                == 1;
            if !claimed {
                continue;
            }
            let payload: String = r.try_get("payload")?;
            let undelivered: String = r.try_get("undelivered")?;
            let status: String = r.try_get("incident_status")?;
            due.push(OutboxEntry {
                remediation_id: id,
                payload: serde_json::from_str(&payload)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                undelivered: serde_json::from_str(&undelivered).unwrap_or_default(),
                attempts: r.try_get("attempts")?,
                original_resolved: status == "resolved",
                handled_by: r.try_get("handled_by")?,
                refreshed_at: r.try_get("refreshed_at")?,
            });
        }
        Ok(due)
    }

    /// Whether a remediation's escalation was claimed (it is in the outbox, delivered or
    /// still to be delivered).
    pub async fn escalation_claimed(&self, remediation_id: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM escalations WHERE remediation_id = $1")
            .bind(remediation_id)
            .fetch_one(&mut *self.reader().await?)
            .await?;
        Ok(row.try_get::<i64, _>("n")? == 1)
    }

    /// A human says the escalation is handled; the outbox resolves its alert. `false`
    /// when the remediation has no open escalation.
    pub async fn mark_escalation_handled(
        &self,
        remediation_id: &str,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let marked = self
            .execute_write(
                sqlx::query(
                    "UPDATE escalations SET handled_at = $1, handled_by = $2
             WHERE remediation_id = $3 AND resolved_at IS NULL AND handled_at IS NULL",
                )
                .bind(timestamp(now))
                .bind(by)
                .bind(remediation_id),
            )
            .await?;
        Ok(marked == 1)
    }

    /// The escalation's alert was resolved in Alertmanager; the outbox is done with it.
    pub async fn resolve_escalation(
        &self,
        remediation_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.execute_write(
            sqlx::query("UPDATE escalations SET resolved_at = $1 WHERE remediation_id = $2")
                .bind(timestamp(now))
                .bind(remediation_id),
        )
        .await?;
        Ok(())
    }

    /// A new alert on the same workload: an incident whose alert *started* after `after`
    /// (salve's write) and that a rule tied to this workload. An alert that started before
    /// the write, however late its webhook arrived, is not evidence against the write.
    pub async fn newer_alert_on_target(
        &self,
        target: &TargetRef,
        after: DateTime<Utc>,
        excluding: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT r.id, r.alertname FROM remediations r JOIN incidents i ON i.id = r.incident_id
             WHERE r.target_kind = $1 AND r.target_namespace = $2 AND r.target_name = $3
               AND i.starts_at > $4 AND r.id <> $5
             ORDER BY i.starts_at LIMIT 1",
        )
        .bind(target.kind.as_str())
        .bind(&target.namespace)
        .bind(&target.name)
        .bind(timestamp(after))
        .bind(excluding)
        .fetch_optional(&mut *self.reader().await?)
        .await?;
        row.map(|r| Ok((r.try_get("id")?, r.try_get("alertname")?)))
            .transpose()
    }

    /// Notes that a remediation is taking its next step (its current action and step count).
    pub async fn begin_step(&self, remediation_id: &str, action: &str) -> Result<(), StoreError> {
        self.execute_write(
            sqlx::query(
                "UPDATE remediations SET action = $1, steps_taken = steps_taken + 1 WHERE id = $2",
            )
            .bind(action)
            .bind(remediation_id),
        )
        .await?;
        Ok(())
    }
}
