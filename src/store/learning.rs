//! Attempts and what they teach: per alert signature (alertname + workload) and step,
//! how often salve's action healed and how long it took.
//!
//! Every step of every ladder is one attempt row with its outcome. Policy sees the
//! aggregates as `input.history.stats`; rules with `order: learned` try the step that
//! healed this signature most often first; `salve stats` prints the table.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;

use super::{Store, StoreError, new_id, timestamp};
use crate::cluster::TargetRef;

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Healed,
    NotHealed,
    RolloutFailed,
    VerificationUnavailable,
    Denied,
    Failed,
    Skipped,
}

impl AttemptOutcome {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Healed => "healed",
            AttemptOutcome::NotHealed => "not_healed",
            AttemptOutcome::RolloutFailed => "rollout_failed",
            AttemptOutcome::VerificationUnavailable => "verification_unavailable",
            AttemptOutcome::Denied => "denied",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Skipped => "skipped",
        }
    }
}

/// One finished step.
#[derive(Debug, Clone)]
pub struct NewAttempt<'a> {
    pub remediation_id: &'a str,
    pub step: u32,
    pub alertname: &'a str,
    pub target: &'a TargetRef,
    pub action: &'static str,
    pub step_key: String,
    pub started_at: DateTime<Utc>,
    pub acted_at: Option<DateTime<Utc>>,
    pub outcome: AttemptOutcome,
    pub seconds_to_heal: Option<f64>,
    pub detail: Value,
}

/// What one step achieved for one signature.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StepStats {
    pub action: String,
    pub step_key: String,
    /// Steps that changed the workload and were verified one way or the other.
    pub attempts: i64,
    pub healed: i64,
    pub success_rate: f64,
    pub mean_seconds_to_heal: Option<f64>,
}

/// A signature's row in `salve stats`.
#[derive(Debug, Clone, Serialize)]
pub struct SignatureStats {
    pub alertname: String,
    pub target: String,
    #[serde(flatten)]
    pub stats: StepStats,
}

/// Outcomes that count as a real try of an action (a verified change).
pub(crate) const TRIED: &str = "outcome IN ('healed', 'not_healed', 'rollout_failed')";

impl Store {
    /// Records a finished step. A remediation resumed after its owner died (nothing was
    /// written: it was `pending`) takes its ladder again from the start, so a step it
    /// already recorded is recorded again with its new outcome, not refused.
    pub async fn record_attempt(
        &self,
        a: &NewAttempt<'_>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.execute_write(sqlx::query(
            "INSERT INTO attempts (id, remediation_id, step, alertname, target_kind, target_namespace, target_name,
                 action, step_key, started_at, acted_at, finished_at, outcome, seconds_to_heal, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, CAST($14 AS DOUBLE PRECISION), $15)
             ON CONFLICT (remediation_id, step) DO UPDATE SET action = excluded.action,
                 step_key = excluded.step_key, started_at = excluded.started_at, acted_at = excluded.acted_at,
                 finished_at = excluded.finished_at, outcome = excluded.outcome,
                 seconds_to_heal = excluded.seconds_to_heal, detail = excluded.detail",
        )
        .bind(new_id())
        .bind(a.remediation_id)
        .bind(i64::from(a.step))
        .bind(a.alertname)
        .bind(a.target.kind.as_str())
        .bind(&a.target.namespace)
        .bind(&a.target.name)
        .bind(a.action)
        .bind(&a.step_key)
        .bind(timestamp(a.started_at))
        .bind(a.acted_at.map(timestamp))
        .bind(timestamp(now))
        .bind(a.outcome.as_str())
        // Bound as text: sqlx's Any driver types a NULL as text, and PostgreSQL keeps the
        // first execution's parameter types for the cached statement.
        .bind(a.seconds_to_heal.map(|s| s.to_string()))
        .bind(a.detail.to_string())
        )
        .await?;
        Ok(())
    }

    /// Per-step results for one signature since `since`.
    pub async fn step_stats(
        &self,
        alertname: &str,
        target: &TargetRef,
        since: DateTime<Utc>,
    ) -> Result<Vec<StepStats>, StoreError> {
        let sql = format!(
            "SELECT action, step_key, COUNT(*) AS attempts,
                    SUM(CASE WHEN outcome = 'healed' THEN 1 ELSE 0 END) AS healed,
                    AVG(CASE WHEN outcome = 'healed' THEN seconds_to_heal END) AS mean_heal
             FROM attempts
             WHERE alertname = $1 AND target_kind = $2 AND target_namespace = $3 AND target_name = $4
               AND finished_at >= $5 AND {TRIED}
             GROUP BY action, step_key ORDER BY action, step_key"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(alertname)
            .bind(target.kind.as_str())
            .bind(&target.namespace)
            .bind(&target.name)
            .bind(timestamp(since))
            .fetch_all(&mut *self.reader().await?)
            .await?;
        rows.iter().map(stats_row).collect()
    }

    /// Every signature's per-step results since `since` (`salve stats`).
    pub async fn all_stats(&self, since: DateTime<Utc>) -> Result<Vec<SignatureStats>, StoreError> {
        let sql = format!(
            "SELECT alertname, target_kind, target_namespace, target_name, action, step_key, COUNT(*) AS attempts,
                    SUM(CASE WHEN outcome = 'healed' THEN 1 ELSE 0 END) AS healed,
                    AVG(CASE WHEN outcome = 'healed' THEN seconds_to_heal END) AS mean_heal
             FROM attempts WHERE finished_at >= $1 AND {TRIED}
             GROUP BY alertname, target_kind, target_namespace, target_name, action, step_key
             ORDER BY alertname, target_kind, target_namespace, target_name, action, step_key"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(timestamp(since))
            .fetch_all(&mut *self.reader().await?)
            .await?;
        rows.iter()
            .map(|r| {
                let target = format!(
                    "{}/{}/{}",
                    r.try_get::<String, _>("target_kind")?,
                    r.try_get::<String, _>("target_namespace")?,
                    r.try_get::<String, _>("target_name")?
                );
                Ok(SignatureStats {
                    alertname: r.try_get("alertname")?,
                    target,
                    stats: stats_row(r)?,
                })
            })
            .collect()
    }
}

fn stats_row(r: &sqlx::any::AnyRow) -> Result<StepStats, StoreError> {
    let attempts: i64 = r.try_get("attempts")?;
    let healed: i64 = r.try_get("healed")?;
    Ok(StepStats {
        action: r.try_get("action")?,
        step_key: r.try_get("step_key")?,
        attempts,
        healed,
        success_rate: if attempts > 0 {
            healed as f64 / attempts as f64
        } else {
            0.0
        },
        mean_seconds_to_heal: r.try_get("mean_heal")?,
    })
}

/// One remediation of a rule, as `salve rules report` sums them up.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleOutcome {
    pub id: String,
    pub created_at: String,
    pub state: String,
    pub reasons: Vec<String>,
    /// A shadow rule's watch (`outcome`: `resolved_on_its_own` or `still_firing`,
    /// `seconds`), when it had one.
    pub shadow: Option<Value>,
}

impl Store {
    /// The remediations `rule` opened since `since`, oldest first, with their shadow
    /// watches: what a rule did (or would have done) and what came of it.
    pub async fn rule_outcomes(
        &self,
        rule: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<RuleOutcome>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.id, r.created_at, r.state, r.reasons, e.detail
               FROM remediations r
               LEFT JOIN remediation_events e ON e.remediation_id = r.id AND e.kind = 'verification'
              WHERE r.rule_name = $1 AND r.created_at >= $2
              ORDER BY r.created_at, r.id",
        )
        .bind(rule)
        .bind(timestamp(since))
        .fetch_all(&mut *self.reader().await?)
        .await?;
        let mut out: Vec<RuleOutcome> = Vec::new();
        for row in rows {
            let id: String = row.try_get("id")?;
            let detail: Option<String> = row.try_get("detail")?;
            let shadow = detail
                .and_then(|d| serde_json::from_str::<Value>(&d).ok())
                .filter(|d| d["shadow"] == true);
            // A remediation with several verifications (a real ladder) is one row here.
            if let Some(last) = out.last_mut().filter(|o| o.id == id) {
                last.shadow = last.shadow.take().or(shadow);
                continue;
            }
            let reasons: String = row.try_get("reasons")?;
            out.push(RuleOutcome {
                id,
                created_at: row.try_get("created_at")?,
                state: row.try_get("state")?,
                reasons: serde_json::from_str(&reasons)
                    .map_err(|e| StoreError::Corrupt(format!("reasons: {e}")))?,
                shadow,
            });
        }
        Ok(out)
    }
}
