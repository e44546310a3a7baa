//! Replicas and what they own: identity, heartbeat, and the settling of dead owners' work.
//!
//! Several salves may share one PostgreSQL. Each registers as an *owner*
//! (`host/incarnation`: the host or pod name, for people, and an id new at each start)
//! and keeps a heartbeat. A remediation belongs to the owner that created or resumed it;
//! only work whose owner is dead may be settled by another: its heartbeat expired (or it
//! retired on a clean stop). A live replica's work is never touched, whatever its name.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{Store, StoreError, timestamp};
use crate::remediation::RemediationState;

/// A remediation whose owner is dead, with that owner ("" if it never had one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub id: String,
    pub owner: String,
}

impl Store {
    /// Registers this replica, or renews its heartbeat, until `expires_at`.
    pub async fn heartbeat(
        &self,
        owner: &str,
        name: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.execute_write(sqlx::query(
            "INSERT INTO replicas (owner, name, started_at, heartbeat_at, expires_at) VALUES ($1, $2, $3, $3, $4)
             ON CONFLICT (owner) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, expires_at = excluded.expires_at",
        )
        .bind(owner)
        .bind(name)
        .bind(timestamp(now))
        .bind(timestamp(expires_at))
        )
        .await?;
        Ok(())
    }

    /// Marks this replica gone at once (a clean stop), so others need not wait for its
    /// heartbeat to expire before resuming what it left.
    pub async fn retire(&self, owner: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.execute_write(
            sqlx::query("UPDATE replicas SET expires_at = $1, retired_at = $1 WHERE owner = $2")
                .bind(timestamp(now))
                .bind(owner),
        )
        .await?;
        Ok(())
    }

    /// Replicas alive now (heartbeat current), and replicas whose heartbeat lapsed in the
    /// last hour without a clean stop (crashed, killed, or cut off from the database).
    pub async fn replica_counts(&self, now: DateTime<Utc>) -> Result<(i64, i64), StoreError> {
        let row = sqlx::query(
            "SELECT
               COALESCE(SUM(CASE WHEN expires_at > $1 THEN 1 ELSE 0 END), 0) AS live,
               COALESCE(SUM(CASE WHEN expires_at <= $1 AND expires_at > $2 AND retired_at IS NULL
                        THEN 1 ELSE 0 END), 0) AS lapsed
             FROM replicas",
        )
        .bind(timestamp(now))
        .bind(timestamp(now - chrono::Duration::hours(1)))
        .fetch_one(&mut *self.reader().await?)
        .await?;
        Ok((row.try_get("live")?, row.try_get("lapsed")?))
    }

    /// Remediations in `state` whose owner is dead, as seen by replica `me`, oldest first.
    /// Remediations from before owners existed (no owner) count as dead.
    pub async fn orphaned_remediations(
        &self,
        state: RemediationState,
        me: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Orphan>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.id, COALESCE(r.owner, '') AS owner FROM remediations r LEFT JOIN replicas p ON p.owner = r.owner
             WHERE r.state = $1 AND (r.owner IS NULL OR (r.owner <> $2 AND
                   (p.owner IS NULL OR p.expires_at < $3)))
             ORDER BY r.created_at",
        )
        .bind(state.as_str())
        .bind(me)
        .bind(timestamp(now))
        .fetch_all(&mut *self.reader().await?)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Orphan {
                    id: r.try_get("id")?,
                    owner: r.try_get("owner")?,
                })
            })
            .collect()
    }

    /// This replica's own remediations in `state`, with their incidents, oldest first: the
    /// engine settles those it is not working on (a database error cut them short).
    pub async fn owned_remediations(
        &self,
        state: RemediationState,
        me: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, incident_id FROM remediations WHERE state = $1 AND owner = $2 ORDER BY created_at",
        )
        .bind(state.as_str())
        .bind(me)
        .fetch_all(&mut *self.reader().await?)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("incident_id")?)))
            .collect()
    }

    /// Takes over a dead owner's remediation; `false` when someone else already did (or
    /// it moved on), so exactly one replica settles each.
    pub async fn adopt_remediation(
        &self,
        orphan: &Orphan,
        state: RemediationState,
        me: &str,
    ) -> Result<bool, StoreError> {
        let adopted = self.execute_write(sqlx::query(
            "UPDATE remediations SET owner = $1 WHERE id = $2 AND state = $3 AND COALESCE(owner, '') = $4",
        )
        .bind(me)
        .bind(&orphan.id)
        .bind(state.as_str())
        .bind(&orphan.owner)
        )
        .await?;
        Ok(adopted == 1)
    }
}
