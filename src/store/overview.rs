//! What the audit page shows at a glance: how remediations ended over a filtered period,
//! how long healing took, the alerts behind a page of rows, each workload's previous and
//! next remediation, and every attempt the knowledge page sums up.

use std::collections::HashMap;

use sqlx::Row;

use super::remediations::{FilterColumns, RemediationFilter};
use super::{Store, StoreError};

/// One attempt (a step of a remediation) as the knowledge page reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptFact {
    pub alertname: String,
    pub rule: String,
    pub step_key: String,
    pub outcome: String,
    pub seconds_to_heal: Option<f64>,
    /// When the attempt ended (stored timestamp).
    pub finished_at: String,
}

/// What a listed remediation's alert says now: its status and its summary annotation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AlertBrief {
    pub status: String,
    pub summary: String,
}

const REMEDIATIONS: FilterColumns<'static> = FilterColumns {
    remediation: "remediations",
    alertname: "remediations.alertname",
    time: "remediations.created_at",
};

impl Store {
    /// How many remediations under `filter` are in each state (all of them, not a page).
    pub async fn state_counts(
        &self,
        filter: &RemediationFilter,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let mut binds = Vec::new();
        let mut clauses = vec!["1 = 1".to_owned()];
        clauses.extend(filter.clauses(&REMEDIATIONS, &mut binds));
        let sql = format!(
            "SELECT state, COUNT(*) AS n FROM remediations WHERE {} GROUP BY state ORDER BY state",
            clauses.join(" AND ")
        );
        let rows = self.fetch_bound(sql, binds).await?;
        rows.iter()
            .map(|r| Ok((r.try_get("state")?, r.try_get("n")?)))
            .collect()
    }

    /// Seconds from salve's change to the verified heal, of every healing step of the
    /// remediations under `filter`.
    pub async fn heal_seconds(&self, filter: &RemediationFilter) -> Result<Vec<f64>, StoreError> {
        let mut binds = Vec::new();
        let mut clauses = vec![
            "a.outcome = 'healed'".to_owned(),
            "a.seconds_to_heal IS NOT NULL".to_owned(),
        ];
        clauses.extend(filter.clauses(&REMEDIATIONS, &mut binds));
        let sql = format!(
            "SELECT a.seconds_to_heal AS s FROM attempts a JOIN remediations ON remediations.id = a.remediation_id WHERE {}",
            clauses.join(" AND ")
        );
        let rows = self.fetch_bound(sql, binds).await?;
        rows.iter().map(|r| Ok(r.try_get("s")?)).collect()
    }

    /// Runs a read whose `$N` placeholders are `binds`, in order.
    async fn fetch_bound(
        &self,
        sql: String,
        binds: Vec<String>,
    ) -> Result<Vec<sqlx::any::AnyRow>, StoreError> {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for b in binds {
            query = query.bind(b);
        }
        Ok(query.fetch_all(&mut *self.reader().await?).await?)
    }

    /// The status and summary annotation of each of these incidents' alerts.
    pub async fn alert_briefs(
        &self,
        incident_ids: &[&str],
    ) -> Result<HashMap<String, AlertBrief>, StoreError> {
        if incident_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let marks: Vec<String> = (1..=incident_ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT id, status, alert FROM incidents WHERE id IN ({})",
            marks.join(", ")
        );
        let ids = incident_ids.iter().map(|i| (*i).to_owned()).collect();
        let rows = self.fetch_bound(sql, ids).await?;
        rows.iter()
            .map(|r| {
                let alert: String = r.try_get("alert")?;
                let alert: serde_json::Value =
                    serde_json::from_str(&alert).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                Ok((
                    r.try_get("id")?,
                    AlertBrief {
                        status: r.try_get("status")?,
                        summary: alert["annotations"]["summary"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                    },
                ))
            })
            .collect()
    }

    /// The ids of the remediations of the same workload just before and just after this
    /// one, when there are.
    pub async fn workload_neighbours(
        &self,
        id: &str,
    ) -> Result<(Option<String>, Option<String>), StoreError> {
        let near = |newer: bool| {
            let (cmp, order) = if newer { (">", "ASC") } else { ("<", "DESC") };
            format!(
                "SELECT o.id FROM remediations o JOIN remediations r ON r.id = $1
                 WHERE o.target_kind = r.target_kind AND o.target_namespace = r.target_namespace
                   AND o.target_name = r.target_name AND (o.created_at, o.id) {cmp} (r.created_at, r.id)
                 ORDER BY o.created_at {order}, o.id {order} LIMIT 1"
            )
        };
        let previous: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(near(false)))
            .bind(id)
            .fetch_optional(&mut *self.reader().await?)
            .await?;
        let next: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(near(true)))
            .bind(id)
            .fetch_optional(&mut *self.reader().await?)
            .await?;
        Ok((previous, next))
    }

    /// Every attempt that was tried and judged (as `salve stats` counts them) and ended
    /// at or after `since` (a stored timestamp), with its remediation's rule.
    pub async fn attempt_facts(&self, since: &str) -> Result<Vec<AttemptFact>, StoreError> {
        let sql = format!(
            "SELECT a.alertname, r.rule_name, a.step_key, a.outcome, a.seconds_to_heal, a.finished_at
             FROM attempts a JOIN remediations r ON r.id = a.remediation_id
             WHERE a.finished_at >= $1 AND a.{}
             ORDER BY a.finished_at",
            super::learning::TRIED
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(since)
            .fetch_all(&mut *self.reader().await?)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AttemptFact {
                    alertname: r.try_get("alertname")?,
                    rule: r.try_get("rule_name")?,
                    step_key: r.try_get("step_key")?,
                    outcome: r.try_get("outcome")?,
                    seconds_to_heal: r.try_get("seconds_to_heal")?,
                    finished_at: r.try_get("finished_at")?,
                })
            })
            .collect()
    }
}
