//! Escalations: humans told, at most once per remediation (and so per incident).

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{Store, StoreError, timestamp};
use crate::cluster::TargetRef;

impl Store {
    /// Claims the remediation's one escalation; `false` when it was already escalated.
    pub async fn claim_escalation(
        &self,
        remediation_id: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO escalations (remediation_id, created_at, reason, delivered) VALUES ($1, $2, $3, '[]')
             ON CONFLICT (remediation_id) DO NOTHING",
        )
        .bind(remediation_id)
        .bind(timestamp(now))
        .bind(reason)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// Records where the escalation was delivered (or why not).
    pub async fn set_escalation_delivery(
        &self,
        remediation_id: &str,
        delivered: &Value,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE escalations SET delivered = $1 WHERE remediation_id = $2")
            .bind(delivered.to_string())
            .bind(remediation_id)
            .execute(self.pool())
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
        use sqlx::Row;
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
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| Ok((r.try_get("id")?, r.try_get("alertname")?)))
            .transpose()
    }

    /// Notes that a remediation is taking its next step (its current action and step count).
    pub async fn begin_step(&self, remediation_id: &str, action: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE remediations SET action = $1, steps_taken = steps_taken + 1 WHERE id = $2",
        )
        .bind(action)
        .bind(remediation_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
