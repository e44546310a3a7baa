//! Remediations and their timelines.
//!
//! A remediation is created at most once per incident (UNIQUE), moves state only by
//! compare-and-set (so a second worker or replica cannot claim it too), and every step
//! is appended to its timeline in the same transaction as the move it explains.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::incidents::Decision;
use super::writer::WriteTx;
use super::{Store, StoreError, new_id, parse_timestamp, timestamp};
use crate::cluster::TargetRef;
use crate::remediation::{Event, Mode, RemediationState};

/// What the engine knows when it opens a remediation.
#[derive(Debug, Clone)]
pub struct NewRemediation {
    pub incident_id: String,
    pub alertname: String,
    pub rule_name: String,
    pub rule_file: String,
    pub action: &'static str,
    pub target: TargetRef,
    pub mode: Mode,
    pub summary: String,
    /// The replica that drives it (see [`super::owners`]).
    pub owner: String,
}

/// The kinds of timeline entries (the schema's CHECK lists the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    RuleMatched,
    PolicyEvaluated,
    KubeCall,
    StateChanged,
    StepStarted,
    Verification,
    Revert,
    Escalation,
}

impl EventKind {
    fn as_str(self) -> &'static str {
        match self {
            EventKind::RuleMatched => "rule_matched",
            EventKind::PolicyEvaluated => "policy_evaluated",
            EventKind::KubeCall => "kube_call",
            EventKind::StateChanged => "state_changed",
            EventKind::StepStarted => "step_started",
            EventKind::Verification => "verification",
            EventKind::Revert => "revert",
            EventKind::Escalation => "escalation",
        }
    }
}

/// A remediation as stored: the summary line an auditor scans.
#[derive(Debug, Clone, Serialize)]
pub struct RemediationRecord {
    pub id: String,
    pub incident_id: String,
    pub created_at: String,
    pub updated_at: String,
    /// When a real write was (or may have been) sent; `None` if salve never acted.
    pub acted_at: Option<String>,
    pub alertname: String,
    pub rule: String,
    pub rule_file: String,
    pub action: String,
    pub target: TargetView,
    pub mode: String,
    pub state: RemediationState,
    pub summary: String,
    pub reasons: Vec<String>,
}

/// The target as shown in listings.
#[derive(Debug, Clone, Serialize)]
pub struct TargetView {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

/// One entry of a remediation's timeline.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineEvent {
    pub seq: i64,
    pub at: String,
    pub kind: String,
    pub detail: Value,
}

const COLUMNS: &str =
    "id, incident_id, created_at, updated_at, acted_at, alertname, rule_name, rule_file, action,
    target_kind, target_namespace, target_name, mode, state, summary, reasons";

fn target_view(r: &AnyRow) -> Result<TargetView, StoreError> {
    Ok(TargetView {
        kind: r.try_get("target_kind")?,
        namespace: r.try_get("target_namespace")?,
        name: r.try_get("target_name")?,
    })
}

fn record(r: &AnyRow) -> Result<RemediationRecord, StoreError> {
    let state: String = r.try_get("state")?;
    let reasons: String = r.try_get("reasons")?;
    Ok(RemediationRecord {
        id: r.try_get("id")?,
        incident_id: r.try_get("incident_id")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        acted_at: r.try_get("acted_at")?,
        alertname: r.try_get("alertname")?,
        rule: r.try_get("rule_name")?,
        rule_file: r.try_get("rule_file")?,
        action: r.try_get("action")?,
        target: target_view(r)?,
        mode: r.try_get("mode")?,
        state: RemediationState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("state {state:?}")))?,
        summary: r.try_get("summary")?,
        reasons: serde_json::from_str(&reasons).map_err(|e| StoreError::Corrupt(e.to_string()))?,
    })
}

/// Which remediations a listing shows; every field narrows it. Times are stored-format
/// timestamps (see [`super::timestamp`]).
#[derive(Debug, Clone, Default)]
pub struct RemediationFilter {
    pub namespace: Option<String>,
    pub kind: Option<String>,
    /// The workload's name.
    pub target: Option<String>,
    pub alertname: Option<String>,
    pub rule: Option<String>,
    pub state: Option<String>,
    /// Remediations with at least one step that ended so (`healed`, `rollout_failed`, …).
    pub outcome: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
}

/// Where a [`RemediationFilter`]'s fields are in a query: the remediations table's name
/// (or alias), and the alert-name and time columns the listing is about.
pub(crate) struct FilterColumns<'a> {
    pub remediation: &'a str,
    pub alertname: &'a str,
    pub time: &'a str,
}

impl RemediationFilter {
    /// The SQL conditions of the filter, their values appended to `binds` (placeholders
    /// numbered after what `binds` already holds). Remediations and alerts are listed
    /// with the same filters this way.
    pub(crate) fn clauses(&self, at: &FilterColumns<'_>, binds: &mut Vec<String>) -> Vec<String> {
        let r = at.remediation;
        let mut clauses = Vec::new();
        let mut add = |clause: String, value: &Option<String>| {
            if let Some(v) = value {
                binds.push(v.clone());
                clauses.push(clause.replace('?', &format!("${}", binds.len())));
            }
        };
        add(format!("{r}.target_namespace = ?"), &self.namespace);
        add(format!("{r}.target_kind = ?"), &self.kind);
        add(format!("{r}.target_name = ?"), &self.target);
        add(format!("{} = ?", at.alertname), &self.alertname);
        add(format!("{r}.rule_name = ?"), &self.rule);
        add(format!("{r}.state = ?"), &self.state);
        add(format!("{} >= ?", at.time), &self.since);
        add(format!("{} < ?", at.time), &self.until);
        add(
            format!(
                "EXISTS (SELECT 1 FROM attempts a WHERE a.remediation_id = {r}.id AND a.outcome = ?)"
            ),
            &self.outcome,
        );
        clauses
    }
}

/// A position in the newest-first listing: strictly older than this row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: String,
    pub id: String,
}

impl Cursor {
    /// The opaque text form handed to clients.
    pub fn encode(&self) -> String {
        format!("{}_{}", self.created_at, self.id)
    }

    /// Reads a client's cursor back; `None` if it is not one of ours.
    pub fn decode(s: &str) -> Option<Cursor> {
        let (created_at, id) = s.split_once('_')?;
        parse_timestamp(created_at).ok()?;
        Some(Cursor {
            created_at: created_at.to_owned(),
            id: id.to_owned(),
        })
    }
}

/// A verdict salve gave in the past, with the exact input it judged (for replay).
#[derive(Debug, Clone)]
pub struct PastVerdict {
    pub remediation_id: String,
    pub at: String,
    pub rule: String,
    pub action: String,
    pub target: TargetView,
    pub input: Value,
    pub allowed: bool,
    pub reasons: Vec<String>,
}

impl Store {
    /// Every policy verdict recorded since `since`, oldest first.
    pub async fn verdicts_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<PastVerdict>, StoreError> {
        let rows = sqlx::query(
            "SELECT e.remediation_id, e.at, e.detail, r.rule_name, r.action, r.target_kind, r.target_namespace,
                    r.target_name
             FROM remediation_events e JOIN remediations r ON r.id = e.remediation_id
             WHERE e.kind = 'policy_evaluated' AND e.at >= $1
             ORDER BY e.at, e.remediation_id, e.seq",
        )
        .bind(timestamp(since))
        .fetch_all(&mut *self.reader().await?)
        .await?;
        rows.iter()
            .map(|r| {
                let detail: String = r.try_get("detail")?;
                let mut detail: Value = serde_json::from_str(&detail)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let mut verdict = detail["verdict"].take();
                Ok(PastVerdict {
                    remediation_id: r.try_get("remediation_id")?,
                    at: r.try_get("at")?,
                    rule: r.try_get("rule_name")?,
                    action: r.try_get("action")?,
                    target: target_view(r)?,
                    input: detail["input"].take(),
                    allowed: verdict["allowed"].as_bool().unwrap_or(false),
                    reasons: serde_json::from_value(verdict["reasons"].take()).unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Opens the remediation for an incident; `None` if the incident already has one.
    pub async fn create_remediation(
        &self,
        r: &NewRemediation,
        rule_matched: &Value,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError> {
        let (r, rule_matched) = (r.clone(), rule_matched.clone());
        self.write(move |tx| Box::pin(async move { create_in(tx, &r, &rule_matched, now).await }))
            .await
    }

    /// Adds one entry to a remediation's timeline.
    pub async fn append_event(
        &self,
        remediation_id: &str,
        kind: EventKind,
        detail: &Value,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (id, detail) = (remediation_id.to_owned(), detail.clone());
        self.write(move |tx| {
            Box::pin(async move { append(tx, &id, kind, &detail, &timestamp(now)).await })
        })
        .await
    }

    /// Applies `event` to a remediation that is still in `from` (compare-and-set), by the
    /// lifecycle's transition table. Returns the new state when this caller made the move,
    /// `None` when the remediation had already left `from`. Entering `executing` stamps
    /// `acted_at` (going back to `pending` after a refused write clears it); entering a
    /// terminal state releases the workload's lock in the same transaction, so no
    /// finished remediation can leave its workload locked.
    pub async fn transition(
        &self,
        id: &str,
        from: RemediationState,
        event: Event,
        summary: &str,
        reasons: &[String],
        now: DateTime<Utc>,
    ) -> Result<Option<RemediationState>, StoreError> {
        let (id, summary, reasons) = (id.to_owned(), summary.to_owned(), reasons.to_vec());
        self.write(move |tx| {
            Box::pin(
                async move { transition_in(tx, &id, from, event, &summary, &reasons, now).await },
            )
        })
        .await
    }

    /// One remediation.
    pub async fn remediation(&self, id: &str) -> Result<Option<RemediationRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM remediations WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&mut *self.reader().await?)
            .await?;
        row.as_ref().map(record).transpose()
    }

    /// A remediation's timeline, in order.
    pub async fn timeline(&self, id: &str) -> Result<Vec<TimelineEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at, kind, detail FROM remediation_events WHERE remediation_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&mut *self.reader().await?)
        .await?;
        rows.iter()
            .map(|r| {
                let detail: String = r.try_get("detail")?;
                Ok(TimelineEvent {
                    seq: r.try_get("seq")?,
                    at: r.try_get("at")?,
                    kind: r.try_get("kind")?,
                    detail: serde_json::from_str(&detail)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                })
            })
            .collect()
    }

    /// Remediations newest first, `limit` at a time, strictly older than `before`.
    pub async fn list_remediations(
        &self,
        limit: u32,
        before: Option<&Cursor>,
        filter: &RemediationFilter,
    ) -> Result<Vec<RemediationRecord>, StoreError> {
        let (created, id) = before
            .map(|c| (c.created_at.clone(), c.id.clone()))
            .unwrap_or_else(|| ("9999".to_owned(), String::new()));
        let mut binds = vec![created, id];
        // A row-value comparison lets both databases walk the (created_at, id) index from the cursor.
        let mut clauses = vec!["(created_at, id) < ($1, $2)".to_owned()];
        clauses.extend(filter.clauses(
            &FilterColumns {
                remediation: "remediations",
                alertname: "alertname",
                time: "created_at",
            },
            &mut binds,
        ));
        let rows = self
            .page_rows(
                &format!("SELECT {COLUMNS} FROM remediations"),
                &clauses,
                "created_at DESC, id DESC",
                binds,
                limit,
            )
            .await?;
        rows.iter().map(record).collect()
    }

    /// One page of a listing: `select` narrowed by `clauses` (whose `$N` are `binds`, in
    /// order), in `order`, at most `limit` rows. Remediations and alerts page this way.
    pub(crate) async fn page_rows(
        &self,
        select: &str,
        clauses: &[String],
        order: &str,
        binds: Vec<String>,
        limit: u32,
    ) -> Result<Vec<sqlx::any::AnyRow>, StoreError> {
        let sql = format!(
            "{select} WHERE {} ORDER BY {order} LIMIT ${}",
            clauses.join(" AND "),
            binds.len() + 1
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for b in binds {
            query = query.bind(b);
        }
        Ok(query
            .bind(i64::from(limit))
            .fetch_all(&mut *self.reader().await?)
            .await?)
    }

    /// Ids of remediations in a state (crash recovery looks for `pending` and `executing`).
    pub async fn remediations_in_state(
        &self,
        state: RemediationState,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT id FROM remediations WHERE state = $1 ORDER BY created_at")
            .bind(state.as_str())
            .fetch_all(&mut *self.reader().await?)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }
}

/// [`Store::create_remediation`]'s statements, inside the writer's transaction.
async fn create_in(
    tx: &mut WriteTx,
    r: &NewRemediation,
    rule_matched: &Value,
    now: DateTime<Utc>,
) -> Result<Option<String>, StoreError> {
    let id = new_id();
    let now_s = timestamp(now);
    let inserted = sqlx::query(
        "INSERT INTO remediations (id, incident_id, created_at, updated_at, acted_at, alertname, rule_name,
             rule_file, action, target_kind, target_namespace, target_name, mode, state, summary, reasons, owner)
         VALUES ($1, $2, $3, $3, NULL, $4, $5, $6, $7, $8, $9, $10, $11, 'pending', $12, '[]', $13)
         ON CONFLICT (incident_id) DO NOTHING",
    )
    .bind(&id)
    .bind(&r.incident_id)
    .bind(&now_s)
    .bind(&r.alertname)
    .bind(&r.rule_name)
    .bind(&r.rule_file)
    .bind(r.action)
    .bind(r.target.kind.as_str())
    .bind(&r.target.namespace)
    .bind(&r.target.name)
    .bind(r.mode.as_str())
    .bind(&r.summary)
    .bind(&r.owner)
    .execute(tx.conn())
    .await?
    .rows_affected()
        == 1;
    if !inserted {
        return Ok(None);
    }
    sqlx::query("UPDATE incidents SET decision = $1, decision_reason = $2 WHERE id = $3")
        .bind(Decision::Remediation.as_str())
        .bind(format!("rule {} matched", r.rule_name))
        .bind(&r.incident_id)
        .execute(tx.conn())
        .await?;
    // A remediation created just now has no timeline yet.
    tx.seq_written(&id, 0);
    append(tx, &id, EventKind::RuleMatched, rule_matched, &now_s).await?;
    Ok(Some(id))
}

/// [`Store::transition`] inside an open transaction (the write intent shares one).
pub(super) async fn transition_in(
    tx: &mut WriteTx,
    id: &str,
    from: RemediationState,
    event: Event,
    summary: &str,
    reasons: &[String],
    now: DateTime<Utc>,
) -> Result<Option<RemediationState>, StoreError> {
    let Some(to) = from.on(event) else {
        return Err(StoreError::Corrupt(format!(
            "refused state move: {event:?} from {from} for {id}"
        )));
    };
    let now_s = timestamp(now);
    let reasons_json =
        serde_json::to_string(reasons).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let moved = sqlx::query(
        "UPDATE remediations SET state = $1, summary = $2, reasons = $3, updated_at = $4,
             acted_at = CASE WHEN $1 = 'executing' THEN $4 WHEN $1 = 'pending' THEN NULL ELSE acted_at END
         WHERE id = $5 AND state = $6",
    )
    .bind(to.as_str())
    .bind(summary)
    .bind(&reasons_json)
    .bind(&now_s)
    .bind(id)
    .bind(from.as_str())
    .execute(tx.conn())
    .await?
    .rows_affected()
        == 1;
    if !moved {
        return Ok(None);
    }
    let detail =
        serde_json::json!({"from": from, "to": to, "summary": summary, "reasons": reasons});
    append(tx, id, EventKind::StateChanged, &detail, &now_s).await?;
    if to.is_terminal() {
        sqlx::query("DELETE FROM target_locks WHERE remediation_id = $1")
            .bind(id)
            .execute(tx.conn())
            .await?;
    }
    Ok(Some(to))
}

/// Appends a timeline entry inside the writer's transaction: numbered after the
/// remediation's last entry, and linked into the audit hash chain after the batch's last
/// event (the batch writes the chain's head once, at its end; see [`super::writer`]).
async fn append(
    tx: &mut WriteTx,
    remediation_id: &str,
    kind: EventKind,
    detail: &Value,
    at: &str,
) -> Result<(), StoreError> {
    let (last_seq, prev) = tx.chain_head().await?;
    let chain_seq = last_seq + 1;
    let detail = detail.to_string();
    // The number this writer expects next; if another replica took it meanwhile (it
    // adopted the remediation), the insert finds it taken and the number is read.
    for first_try in [true, false] {
        let seq = tx.next_seq(remediation_id).await?;
        let hash = super::chain::event_hash(
            &prev,
            chain_seq,
            remediation_id,
            seq,
            at,
            kind.as_str(),
            &detail,
        );
        let inserted = sqlx::query(
            "INSERT INTO remediation_events (id, remediation_id, seq, at, kind, detail, chain_seq, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (remediation_id, seq) DO NOTHING",
        )
        .bind(new_id())
        .bind(remediation_id)
        .bind(seq)
        .bind(at)
        .bind(kind.as_str())
        .bind(&detail)
        .bind(chain_seq)
        .bind(&prev)
        .bind(&hash)
        .execute(tx.conn())
        .await?
        .rows_affected()
            == 1;
        if inserted {
            tx.seq_written(remediation_id, seq);
            tx.chain_moved_to(chain_seq, hash);
            return Ok(());
        }
        if !first_try {
            break;
        }
        tx.seq_stale(remediation_id);
    }
    Err(StoreError::Corrupt(format!(
        "remediation {remediation_id}: its next timeline number was taken as it was read"
    )))
}

/// A test's way to append inside a write it controls (see `writer`'s tests).
#[cfg(test)]
pub(super) async fn append_for_test(tx: &mut WriteTx, id: &str) -> Result<(), StoreError> {
    append(
        tx,
        id,
        EventKind::StepStarted,
        &serde_json::json!({"n": "never"}),
        &timestamp(Utc::now()),
    )
    .await
}

impl Store {
    /// Unfinished remediations by state (every unfinished state, zeros included), across
    /// all replicas: what `/metrics` shows as in flight.
    pub async fn remediations_in_flight(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let unfinished: Vec<RemediationState> = RemediationState::ALL
            .into_iter()
            .filter(|s| !s.is_terminal())
            .collect();
        let names: Vec<String> = unfinished
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        let sql = format!(
            "SELECT state, COUNT(*) AS n FROM remediations WHERE state IN ({}) GROUP BY state",
            names.join(", ")
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&mut *self.reader().await?)
            .await?;
        let mut counts: Vec<(String, i64)> = unfinished
            .iter()
            .map(|s| (s.as_str().to_owned(), 0))
            .collect();
        for row in rows {
            let state: String = row.try_get("state")?;
            let n: i64 = row.try_get("n")?;
            match counts.iter_mut().find(|(s, _)| *s == state) {
                Some(entry) => entry.1 = n,
                None => counts.push((state, n)),
            }
        }
        Ok(counts)
    }
}
