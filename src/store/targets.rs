//! Per-workload facts: the lock, the cooldown clock, the recent history, the rate.
//!
//! The lock is a lease row per workload: taken if free, expired, or already held by
//! the same remediation (a resumed one after a restart), and released when the
//! remediation ends. The lease bounds how long a crashed holder can block a target.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use super::{Store, StoreError, timestamp};
use crate::cluster::TargetRef;

/// One past remediation on a target, as policy sees it in `input.history.remediations`.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryEntry {
    pub id: String,
    pub created_at: String,
    pub acted_at: Option<String>,
    /// Whether a real change was (or may have been) sent.
    pub acted: bool,
    pub rule: String,
    pub alertname: String,
    pub action: String,
    pub state: String,
    pub summary: String,
}

impl Store {
    /// Takes the workload's lock for `remediation_id` until `expires_at`.
    /// `Ok(None)` when taken; `Ok(Some(holder))` when another remediation holds it.
    pub async fn acquire_target_lock(
        &self,
        target: &TargetRef,
        remediation_id: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError> {
        let key = target.key();
        let taken = sqlx::query(
            "INSERT INTO target_locks (target, remediation_id, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (target) DO UPDATE SET remediation_id = excluded.remediation_id,
                 expires_at = excluded.expires_at
             WHERE target_locks.expires_at < $4 OR target_locks.remediation_id = $2",
        )
        .bind(&key)
        .bind(remediation_id)
        .bind(timestamp(expires_at))
        .bind(timestamp(now))
        .execute(self.pool())
        .await?
        .rows_affected()
            == 1;
        if taken {
            return Ok(None);
        }
        let row = sqlx::query("SELECT remediation_id FROM target_locks WHERE target = $1")
            .bind(&key)
            .fetch_optional(self.pool())
            .await?;
        Ok(Some(match row {
            Some(r) => r.try_get("remediation_id")?,
            // Released between the two statements: report it as briefly busy.
            None => "a remediation that just finished".to_owned(),
        }))
    }

    /// Releases the workload's lock if `remediation_id` holds it.
    pub async fn release_target_lock(
        &self,
        target: &TargetRef,
        remediation_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM target_locks WHERE target = $1 AND remediation_id = $2")
            .bind(target.key())
            .bind(remediation_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The target's remediations since `since`, newest first, at most 50.
    pub async fn target_history(
        &self,
        target: &TargetRef,
        since: DateTime<Utc>,
        excluding: &str,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, created_at, acted_at, rule_name, alertname, action, state, summary FROM remediations
             WHERE target_kind = $1 AND target_namespace = $2 AND target_name = $3 AND created_at >= $4 AND id <> $5
             ORDER BY created_at DESC, id DESC LIMIT 50",
        )
        .bind(target.kind.as_str())
        .bind(&target.namespace)
        .bind(&target.name)
        .bind(timestamp(since))
        .bind(excluding)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let acted_at: Option<String> = r.try_get("acted_at")?;
                Ok(HistoryEntry {
                    id: r.try_get("id")?,
                    created_at: r.try_get("created_at")?,
                    acted: acted_at.is_some(),
                    acted_at,
                    rule: r.try_get("rule_name")?,
                    alertname: r.try_get("alertname")?,
                    action: r.try_get("action")?,
                    state: r.try_get("state")?,
                    summary: r.try_get("summary")?,
                })
            })
            .collect()
    }

    /// When salve last acted (sent a real write) on the target, and in which remediation.
    pub async fn last_action_on_target(
        &self,
        target: &TargetRef,
    ) -> Result<Option<(String, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT id, acted_at FROM remediations
             WHERE target_kind = $1 AND target_namespace = $2 AND target_name = $3 AND acted_at IS NOT NULL
             ORDER BY acted_at DESC LIMIT 1",
        )
        .bind(target.kind.as_str())
        .bind(&target.namespace)
        .bind(&target.name)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| Ok((r.try_get("id")?, r.try_get("acted_at")?)))
            .transpose()
    }

    /// How many real actions salve took on any target since `since` (the global rate limit).
    pub async fn actions_since(&self, since: DateTime<Utc>) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM remediations WHERE acted_at >= $1")
            .bind(timestamp(since))
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get("n")?)
    }
}
