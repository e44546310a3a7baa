//! Approvals: a human's yes or no to one exact change, before salve writes it.
//!
//! A rule in `mode: approve` records a request per step (the planned change, its
//! verdict) and moves the remediation to `awaiting_approval` in one transaction. A
//! decision (CLI, API, any replica) is taken in one transaction too: the request is
//! marked with who decided, when and why, and the remediation moves on by the transition
//! table, so the approver's identity and time are on the audit-chained timeline at once.
//! An approved change is not written on the approval's word alone: the owner reads the
//! workload again, asks policy again and writes only if the fresh plan is the one that
//! was approved.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;

use super::remediations::transition_in;
use super::{Store, StoreError, timestamp};
use crate::remediation::{Event, RemediationState};

/// One approval request as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApprovalRecord {
    pub remediation_id: String,
    pub step: i64,
    /// The change asked for, as people read it ("scale Deployment shop/checkout from 2
    /// to 3 replicas").
    pub plan: String,
    /// The change, its verdict and why approval is needed.
    pub request: Value,
    pub requested_at: String,
    pub expires_at: String,
    /// `approved`, `rejected`, or `None` while it waits.
    pub decision: Option<String>,
    pub decided_by: Option<String>,
    pub decided_at: Option<String>,
    pub reason: Option<String>,
}

/// What a decision did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    /// Recorded; the remediation is now in this state.
    Moved(RemediationState),
    /// No request of this remediation waits for a decision (none was asked, or it was
    /// decided already).
    NothingWaits,
    /// The request expired at this time; it can no longer be decided.
    Expired(String),
}

/// A new approval request.
pub struct NewApproval<'a> {
    pub remediation_id: &'a str,
    pub step: i64,
    pub plan: &'a str,
    pub request: &'a Value,
    /// Where the remediation is now (`pending` or `verifying`); it returns there if approved.
    pub from: RemediationState,
    pub summary: &'a str,
    pub expires_at: DateTime<Utc>,
}

fn record_of(row: &sqlx::any::AnyRow) -> Result<ApprovalRecord, StoreError> {
    let request: String = row.try_get("request")?;
    Ok(ApprovalRecord {
        remediation_id: row.try_get("remediation_id")?,
        step: row.try_get("step")?,
        plan: row.try_get("plan")?,
        request: serde_json::from_str(&request)
            .map_err(|e| StoreError::Corrupt(format!("approval request: {e}")))?,
        requested_at: row.try_get("requested_at")?,
        expires_at: row.try_get("expires_at")?,
        decision: row.try_get("decision")?,
        decided_by: row.try_get("decided_by")?,
        decided_at: row.try_get("decided_at")?,
        reason: row.try_get("reason")?,
    })
}

const COLUMNS: &str = "remediation_id, step, plan, request, requested_at, expires_at, decision, decided_by, decided_at, reason";

impl Store {
    /// Records the request and moves the remediation to `awaiting_approval`, together;
    /// `None` (and nothing recorded) if the remediation was no longer in `from`.
    pub async fn request_approval(
        &self,
        new: &NewApproval<'_>,
        now: DateTime<Utc>,
    ) -> Result<Option<RemediationState>, StoreError> {
        let (id, step, plan, summary, from) = (
            new.remediation_id.to_owned(),
            new.step,
            new.plan.to_owned(),
            new.summary.to_owned(),
            new.from,
        );
        let request = new.request.to_string();
        let expires = timestamp(new.expires_at);
        self.write(move |tx| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO approvals (remediation_id, step, plan, request, requested_at, expires_at, resume_state)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&id)
                .bind(step)
                .bind(plan)
                .bind(request)
                .bind(timestamp(now))
                .bind(expires)
                .bind(from.as_str())
                .execute(tx.conn())
                .await?;
                let moved =
                    transition_in(tx, &id, from, Event::AwaitApproval, &summary, &[], now).await?;
                if moved.is_none() {
                    tx.discard();
                }
                Ok(moved)
            })
        })
        .await
    }

    /// The request of `step` of a remediation, if one was made.
    pub async fn approval(
        &self,
        remediation_id: &str,
        step: i64,
    ) -> Result<Option<ApprovalRecord>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM approvals WHERE remediation_id = $1 AND step = $2");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(remediation_id)
            .bind(step)
            .fetch_optional(&mut *self.reader().await?)
            .await?
            .as_ref()
            .map(record_of)
            .transpose()
    }

    /// The request of a remediation that waits for a decision, if one does.
    pub async fn open_approval(
        &self,
        remediation_id: &str,
    ) -> Result<Option<ApprovalRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM approvals WHERE remediation_id = $1 AND decision IS NULL"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(remediation_id)
            .fetch_optional(&mut *self.reader().await?)
            .await?
            .as_ref()
            .map(record_of)
            .transpose()
    }

    /// A human's decision on the request that waits: marks it and moves the remediation
    /// (`approved`: back to where its ladder was; `rejected`: ended), in one transaction.
    pub async fn decide_approval(
        &self,
        remediation_id: &str,
        approve: bool,
        by: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<Decided, StoreError> {
        let (id, by, reason) = (remediation_id.to_owned(), by.to_owned(), reason.to_owned());
        self.write(move |tx| {
            Box::pin(async move {
                let sql = format!(
                    "SELECT {COLUMNS}, resume_state FROM approvals WHERE remediation_id = $1 AND decision IS NULL"
                );
                let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(&id)
                    .fetch_optional(tx.conn())
                    .await?
                else {
                    return Ok(Decided::NothingWaits);
                };
                let open = record_of(&row)?;
                if open.expires_at.as_str() <= timestamp(now).as_str() {
                    return Ok(Decided::Expired(open.expires_at));
                }
                let resume: String = row.try_get("resume_state")?;
                let decision = if approve { "approved" } else { "rejected" };
                sqlx::query(
                    "UPDATE approvals SET decision = $1, decided_by = $2, decided_at = $3, reason = $4
                      WHERE remediation_id = $5 AND step = $6 AND decision IS NULL",
                )
                .bind(decision)
                .bind(&by)
                .bind(timestamp(now))
                .bind(&reason)
                .bind(&id)
                .bind(open.step)
                .execute(tx.conn())
                .await?;
                let (event, summary) = if approve {
                    (
                        Event::Approve {
                            changed_before: resume == "verifying",
                        },
                        format!("approved by {by}: {}", open.plan),
                    )
                } else {
                    (Event::Reject, format!("rejected by {by}: {}", open.plan))
                };
                let reasons: Vec<String> = [reason.clone()]
                    .into_iter()
                    .filter(|r| !r.is_empty())
                    .collect();
                let moved = transition_in(
                    tx,
                    &id,
                    RemediationState::AwaitingApproval,
                    event,
                    &summary,
                    &reasons,
                    now,
                )
                .await?;
                Ok(match moved {
                    Some(to) => Decided::Moved(to),
                    None => {
                        tx.discard();
                        Decided::NothingWaits
                    }
                })
            })
        })
        .await
    }
}
