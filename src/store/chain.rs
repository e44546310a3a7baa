//! Tamper evidence for the audit trail: a hash chain over every timeline event.
//!
//! Each event stores `prev_hash` (the hash of the event before it in the chain) and
//! `hash`, the SHA-256 of its own content together with `prev_hash`. Editing an event
//! breaks its own hash; deleting one leaves a gap in `chain_seq`; rewriting a hash to
//! cover an edit breaks the next event's `prev_hash`. `chain_head` holds the last
//! hash, so truncating the tail shows too. [`Store::verify_chain`] walks it all and
//! reports the first broken link.

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{Store, StoreError};

/// The hash of one event's content, chained to the previous event's hash.
pub fn event_hash(
    prev: &str,
    chain_seq: i64,
    remediation_id: &str,
    seq: i64,
    at: &str,
    kind: &str,
    detail: &str,
) -> String {
    // A JSON array is an unambiguous encoding of the fields (no separator games).
    let canonical =
        serde_json::json!([prev, chain_seq, remediation_id, seq, at, kind, detail]).to_string();
    hex(&Sha256::digest(canonical.as_bytes()))
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The first place the chain does not hold.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Break {
    pub chain_seq: i64,
    pub remediation_id: String,
    pub seq: i64,
    pub problem: String,
}

/// What walking the chain found.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChainReport {
    /// Chained events checked.
    pub events: i64,
    /// Events written before the chain existed (no chain fields).
    pub unchained: i64,
    pub head: String,
    pub first_break: Option<Break>,
}

impl Store {
    /// Walks the whole chain in order and reports the first broken link, if any.
    pub async fn verify_chain(&self) -> Result<ChainReport, StoreError> {
        let unchained: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM remediation_events WHERE chain_seq IS NULL")
                .fetch_one(&mut *self.reader().await?)
                .await?
                .try_get("n")?;
        let head = sqlx::query("SELECT seq, hash FROM chain_head WHERE id = 1")
            .fetch_one(&mut *self.reader().await?)
            .await?;
        let (head_seq, head_hash): (i64, String) = (head.try_get("seq")?, head.try_get("hash")?);
        let (mut prev, mut expected_seq, mut events) = (String::new(), 1i64, 0i64);
        let report = |b: Break, events: i64| ChainReport {
            events,
            unchained,
            head: head_hash.clone(),
            first_break: Some(b),
        };
        loop {
            let rows = sqlx::query(
                "SELECT chain_seq, remediation_id, seq, at, kind, detail, prev_hash, hash FROM remediation_events
                 WHERE chain_seq >= $1 ORDER BY chain_seq LIMIT 1000",
            )
            .bind(expected_seq)
            .fetch_all(&mut *self.reader().await?)
            .await?;
            if rows.is_empty() {
                break;
            }
            for r in &rows {
                let chain_seq: i64 = r.try_get("chain_seq")?;
                let remediation_id: String = r.try_get("remediation_id")?;
                let seq: i64 = r.try_get("seq")?;
                let at_break = |problem: String| Break {
                    chain_seq,
                    remediation_id: remediation_id.clone(),
                    seq,
                    problem,
                };
                if chain_seq != expected_seq {
                    let b = at_break(format!(
                        "events {expected_seq}..{} are missing",
                        chain_seq - 1
                    ));
                    return Ok(report(b, events));
                }
                let prev_hash: String = r.try_get("prev_hash")?;
                if prev_hash != prev {
                    return Ok(report(
                        at_break("its link to the previous event does not match".into()),
                        events,
                    ));
                }
                let hash: String = r.try_get("hash")?;
                let content = event_hash(
                    &prev_hash,
                    chain_seq,
                    &remediation_id,
                    seq,
                    &r.try_get::<String, _>("at")?,
                    &r.try_get::<String, _>("kind")?,
                    &r.try_get::<String, _>("detail")?,
                );
                if content != hash {
                    return Ok(report(
                        at_break("its content does not match its hash (edited)".into()),
                        events,
                    ));
                }
                prev = hash;
                expected_seq += 1;
                events += 1;
            }
        }
        if events != head_seq || prev != head_hash {
            let b = Break {
                chain_seq: expected_seq,
                remediation_id: String::new(),
                seq: 0,
                problem: format!(
                    "the chain ends at event {events} but its head records event {head_seq} (events removed from the end)"
                ),
            };
            return Ok(report(b, events));
        }
        Ok(ChainReport {
            events,
            unchained,
            head: head_hash,
            first_break: None,
        })
    }
}
