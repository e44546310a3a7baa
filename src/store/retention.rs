//! Retention: old raw payloads go, what salve decided and did stays, and every pruned
//! payload stays provable by its SHA-256 (sealing).
//!
//! Pruning empties `deliveries.payload` for deliveries older than the cutoff, keeps
//! each payload's SHA-256 beside it, and records one seal per run with a digest over
//! the pruned deliveries' ids and hashes. Incidents, remediations and their hash-chained
//! timelines are never pruned, so `salve audit verify` still holds after pruning.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::chain::hex;
use super::{Store, StoreError, new_id, timestamp};

/// What one pruning run did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Seal {
    pub id: String,
    pub cutoff: String,
    pub deliveries: i64,
    /// SHA-256 over `id:sha256` of every pruned delivery, in id order.
    pub digest: String,
}

impl Store {
    /// Prunes raw payloads received before `cutoff`, sealing what was pruned.
    pub async fn prune_payloads(
        &self,
        cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Seal, StoreError> {
        let cutoff_s = timestamp(cutoff);
        self.write(move |tx| Box::pin(async move { prune_in(tx, cutoff_s, now).await }))
            .await
    }
}

/// [`Store::prune_payloads`]'s statements, inside the writer's transaction.
async fn prune_in(
    tx: &mut super::writer::WriteTx,
    cutoff_s: String,
    now: DateTime<Utc>,
) -> Result<Seal, StoreError> {
    // A write first, so SQLite takes its write lock before anything is read.
    let seal_id = new_id();
    sqlx::query("INSERT INTO retention_seals (id, sealed_at, cutoff, deliveries, digest) VALUES ($1, $2, $3, 0, '')")
            .bind(&seal_id)
            .bind(timestamp(now))
            .bind(&cutoff_s)
            .execute(tx.conn())
            .await?;
    let rows = sqlx::query(
            "SELECT id, payload FROM deliveries WHERE received_at < $1 AND pruned_at IS NULL ORDER BY id",
        )
        .bind(&cutoff_s)
        .fetch_all(tx.conn())
        .await?;
    let mut digest = Sha256::new();
    for r in &rows {
        let id: String = r.try_get("id")?;
        let payload: String = r.try_get("payload")?;
        let sha = hex(&Sha256::digest(payload.as_bytes()));
        digest.update(format!("{id}:{sha}\n").as_bytes());
        sqlx::query(
            "UPDATE deliveries SET payload = '', payload_sha256 = $1, pruned_at = $2 WHERE id = $3",
        )
        .bind(&sha)
        .bind(timestamp(now))
        .bind(&id)
        .execute(tx.conn())
        .await?;
    }
    let seal = Seal {
        id: seal_id,
        cutoff: cutoff_s,
        deliveries: rows.len() as i64,
        digest: hex(&digest.finalize()),
    };
    sqlx::query("UPDATE retention_seals SET deliveries = $1, digest = $2 WHERE id = $3")
        .bind(seal.deliveries)
        .bind(&seal.digest)
        .bind(&seal.id)
        .execute(tx.conn())
        .await?;
    Ok(seal)
}
