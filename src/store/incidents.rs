//! Deliveries and incidents: what arrived, and which firings are new.
//!
//! [`Store::record_delivery`] is the webhook's one write. It stores the raw payload
//! and folds each alert into its incident in one transaction, so the webhook's 2xx
//! means all of it is on disk, and a re-send finds its incident already there.

use chrono::{DateTime, Utc};
use sqlx::Row;

use futures::future::BoxFuture;

use super::writer::{Coalesced, WriteTx};
use super::{Store, StoreError, new_id, timestamp};
use crate::alert::{Alert, AlertStatus, Delivery};

/// What a delivery changed.
#[derive(Debug, Clone, Default)]
pub struct NewIncidents {
    pub delivery_id: String,
    /// Incidents seen firing for the first time: the engine decides for these.
    pub to_decide: Vec<String>,
    /// Alerts that were re-sends of incidents already known.
    pub repeated: usize,
    /// Incidents this delivery marked resolved.
    pub resolved: usize,
}

/// An incident as stored.
#[derive(Debug, Clone)]
pub struct IncidentRecord {
    pub id: String,
    pub alert: Alert,
    pub status: AlertStatus,
    pub delivery_count: i64,
    pub decision: String,
    pub decision_reason: String,
}

/// Why an incident was settled as [`Decision::ResolvedBeforeDecision`].
const RESOLVED_BEFORE_DECISION: &str = "the alert resolved before salve decided for it";

/// What salve concluded about an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// No rule matched: nothing to do, recorded so an auditor sees it was considered.
    NoRule,
    /// A rule matched but the alert's labels do not name a valid target.
    NoTarget,
    /// A rule matched and a remediation was created.
    Remediation,
    /// The alert resolved before salve decided for it (it arrived while salve was down or
    /// busy): nothing is left to remediate, and the record says so instead of `undecided`.
    ResolvedBeforeDecision,
}

impl Decision {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Decision::NoRule => "no_rule",
            Decision::NoTarget => "no_target",
            Decision::Remediation => "remediation",
            Decision::ResolvedBeforeDecision => "resolved_before_decision",
        }
    }
}

/// An incident as listed by `GET /api/v1/alerts`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IncidentView {
    pub id: String,
    pub fingerprint: String,
    pub alertname: String,
    pub status: String,
    pub starts_at: String,
    pub first_seen_at: String,
    pub last_seen_at: String,
    pub resolved_at: Option<String>,
    /// How many webhook deliveries carried it (re-sends included).
    pub deliveries: i64,
    /// `undecided`, `no_rule`, `no_target`, `remediation` or `resolved_before_decision`,
    /// and why.
    pub decision: String,
    pub decision_reason: String,
    pub remediation_id: Option<String>,
    /// The state of that remediation, when there is one.
    pub remediation_state: Option<String>,
    pub alert: serde_json::Value,
}

impl Store {
    /// Incidents newest first (by first sight), strictly older than the cursor. The
    /// remediation filters (namespace, workload, rule, state, outcome) select alerts by
    /// the remediation they led to; `status` is the alert's own (firing, resolved).
    pub async fn list_incidents(
        &self,
        limit: u32,
        before: Option<&super::remediations::Cursor>,
        filter: &super::remediations::RemediationFilter,
        status: Option<&str>,
    ) -> Result<Vec<IncidentView>, StoreError> {
        let (seen, id) = before
            .map(|c| (c.created_at.clone(), c.id.clone()))
            .unwrap_or_else(|| ("9999".to_owned(), String::new()));
        let mut binds = vec![seen, id];
        let mut clauses = vec!["(i.first_seen_at, i.id) < ($1, $2)".to_owned()];
        clauses.extend(filter.clauses(
            &super::remediations::FilterColumns {
                remediation: "r",
                alertname: "i.alertname",
                time: "i.first_seen_at",
            },
            &mut binds,
        ));
        if let Some(status) = status {
            binds.push(status.to_owned());
            clauses.push(format!("i.status = ${}", binds.len()));
        }
        let rows = self
            .page_rows(
                "SELECT i.id, i.fingerprint, i.alertname, i.status, i.starts_at, i.first_seen_at, i.last_seen_at,
                        i.resolved_at, i.delivery_count, i.decision, i.decision_reason, i.alert,
                        r.id AS remediation_id, r.state AS remediation_state
                 FROM incidents i LEFT JOIN remediations r ON r.incident_id = i.id",
                &clauses,
                "i.first_seen_at DESC, i.id DESC",
                binds,
                limit,
            )
            .await?;
        rows.iter()
            .map(|r| {
                let alert: String = r.try_get("alert")?;
                Ok(IncidentView {
                    id: r.try_get("id")?,
                    fingerprint: r.try_get("fingerprint")?,
                    alertname: r.try_get("alertname")?,
                    status: r.try_get("status")?,
                    starts_at: r.try_get("starts_at")?,
                    first_seen_at: r.try_get("first_seen_at")?,
                    last_seen_at: r.try_get("last_seen_at")?,
                    resolved_at: r.try_get("resolved_at")?,
                    deliveries: r.try_get("delivery_count")?,
                    decision: r.try_get("decision")?,
                    decision_reason: r.try_get("decision_reason")?,
                    remediation_id: r.try_get("remediation_id")?,
                    remediation_state: r.try_get("remediation_state")?,
                    alert: serde_json::from_str(&alert)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                })
            })
            .collect()
    }

    /// Stores a webhook delivery and its alerts, atomically: the batch holding it is
    /// committed when this returns.
    pub async fn record_delivery(
        &self,
        d: &Delivery,
        now: DateTime<Utc>,
    ) -> Result<NewIncidents, StoreError> {
        self.writes.store((d.clone(), now), None).await
    }

    /// [`Store::record_delivery`] for the webhook: the writer hands the new incidents to
    /// `sink` as soon as the delivery is committed, before the webhook hears of it. So
    /// they are decided at once, not by the slow sweep, even when the webhook stopped
    /// waiting meanwhile: it answered 503 after `--db-wait`, or its client hung up just as
    /// the commit landed (the answer sent, never read).
    pub async fn record_delivery_handing_on(
        &self,
        d: Delivery,
        now: DateTime<Utc>,
        sink: std::sync::Arc<dyn crate::ingest::IncidentSink>,
    ) -> Result<NewIncidents, StoreError> {
        self.writes
            .store(
                (d, now),
                Some(Box::new(move |stored: &NewIncidents| {
                    sink.submit(stored.to_decide.clone())
                })),
            )
            .await
    }

    /// One incident, with its alert as last stored.
    pub async fn incident(&self, id: &str) -> Result<Option<IncidentRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, alert, status, delivery_count, decision, decision_reason FROM incidents WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&mut *self.reader().await?)
        .await?;
        row.map(|r| {
            let alert_json: String = r.try_get("alert")?;
            let status: String = r.try_get("status")?;
            Ok(IncidentRecord {
                id: r.try_get("id")?,
                alert: serde_json::from_str(&alert_json)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                status: if status == "resolved" {
                    AlertStatus::Resolved
                } else {
                    AlertStatus::Firing
                },
                delivery_count: r.try_get("delivery_count")?,
                decision: r.try_get("decision")?,
                decision_reason: r.try_get("decision_reason")?,
            })
        })
        .transpose()
    }

    /// Firing incidents nobody has decided for yet (acked, then salve stopped).
    pub async fn undecided_firing_incidents(&self) -> Result<Vec<String>, StoreError> {
        self.undecided_firing(None).await
    }

    /// The undecided firing incidents first seen before `cutoff`, oldest first: those the
    /// sweep and recovery decide. A storm's backlog of younger ones is on its way through
    /// the work queue; the index on (decision, status, first_seen_at) leaves it unread.
    pub async fn undecided_firing_incidents_before(
        &self,
        cutoff: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        self.undecided_firing(Some(cutoff)).await
    }

    async fn undecided_firing(
        &self,
        cutoff: Option<DateTime<Utc>>,
    ) -> Result<Vec<String>, StoreError> {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(undecided_firing_sql(cutoff.is_some())));
        if let Some(cutoff) = cutoff {
            query = query.bind(timestamp(cutoff));
        }
        let rows = query.fetch_all(&mut *self.reader().await?).await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// Settles incidents that are resolved but were never decided (stored before this
    /// rule existed, or resolved on their first sight); returns how many.
    pub async fn settle_resolved_undecided(&self) -> Result<u64, StoreError> {
        self.write(|tx| {
            Box::pin(async move {
                Ok(sqlx::query(
                    "UPDATE incidents SET decision = 'resolved_before_decision', decision_reason = $1
                     WHERE decision = 'undecided' AND status = 'resolved'",
                )
                .bind(RESOLVED_BEFORE_DECISION)
                .execute(tx.conn())
                .await?
                .rows_affected())
            })
        })
        .await
    }

    /// Records what salve concluded about an incident.
    pub async fn set_decision(
        &self,
        id: &str,
        decision: Decision,
        reason: &str,
    ) -> Result<(), StoreError> {
        let (id, reason) = (id.to_owned(), reason.to_owned());
        self.write(move |tx| {
            Box::pin(async move {
                sqlx::query(
                    "UPDATE incidents SET decision = $1, decision_reason = $2 WHERE id = $3",
                )
                .bind(decision.as_str())
                .bind(reason)
                .bind(id)
                .execute(tx.conn())
                .await?;
                Ok(())
            })
        })
        .await
    }

    /// How many deliveries are stored (for tests and the readiness summary).
    pub async fn delivery_count(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM deliveries")
            .fetch_one(&mut *self.reader().await?)
            .await?;
        Ok(row.try_get("n")?)
    }
}

/// The undecided firing incidents, oldest first; only those first seen before `$1` if
/// `seen_before`.
fn undecided_firing_sql(seen_before: bool) -> String {
    format!(
        "SELECT id FROM incidents WHERE decision = 'undecided' AND status = 'firing' {}
         ORDER BY first_seen_at",
        if seen_before {
            "AND first_seen_at < $1"
        } else {
            ""
        }
    )
}

/// The webhook's deliveries, stored together: the writer gathers the deliveries that wait
/// at once and [`record_deliveries_in`] stores them with a few multi-row statements.
pub struct Deliveries;

impl Coalesced for Deliveries {
    type Item = (Delivery, DateTime<Utc>);
    type Stored = NewIncidents;
    const SENDS_OPENING: bool = true;

    fn store<'c>(
        tx: &'c mut WriteTx,
        items: &'c [Self::Item],
    ) -> BoxFuture<'c, Result<Vec<NewIncidents>, StoreError>> {
        Box::pin(record_deliveries_in(tx, items))
    }
}

/// Rows in one multi-row INSERT at most: well under either backend's limit of bound values.
const ROWS_PER_INSERT: usize = 64;

/// Bytes of bound values in one multi-row INSERT at most (unless one row holds more),
/// where a statement of any size goes out at once ([`WriteTx::sends_whole_statements`]):
/// past that a round trip more is small beside the bytes, and what sqlx copies into its
/// buffer stays bounded.
const BYTES_PER_INSERT: usize = 1024 * 1024;

/// [`BYTES_PER_INSERT`] where a statement may be sent in pieces: a statement within one
/// TLS record (16 KB) goes in one write. Over TLS, sqlx writes a larger one in several,
/// and without `TCP_NODELAY` the last waits 40 ms for the server's delayed ACK. Salve sets
/// that option on its connections (`nodelay`), but cannot where a proxy hides the
/// socket's ports: there this keeps a flood's deliveries off that path. Where it is set,
/// a flood of single-alert webhooks on PostgreSQL is one insert of deliveries a batch,
/// not two (16 of 1.2 KB), and one of 10-alert webhooks not eight.
const BYTES_PER_INSERT_IN_ONE_RECORD: usize = 16 * 1024;

/// Bytes of bound values in one multi-row INSERT at most in `tx`.
fn bytes_per_insert(tx: &WriteTx) -> usize {
    match tx.sends_whole_statements() {
        true => BYTES_PER_INSERT,
        false => BYTES_PER_INSERT_IN_ONE_RECORD,
    }
}

/// Splits `0..sizes.len()` into runs of at most [`ROWS_PER_INSERT`] rows and
/// `max_bytes` bytes (a row larger than that is a run of its own).
fn insert_runs(
    sizes: impl IntoIterator<Item = usize>,
    max_bytes: usize,
) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let (mut start, mut bytes, mut end) = (0, 0, 0);
    for size in sizes {
        if end > start && (end - start == ROWS_PER_INSERT || bytes + size > max_bytes) {
            runs.push(start..end);
            (start, bytes) = (end, 0);
        }
        bytes += size;
        end += 1;
    }
    if end > start {
        runs.push(start..end);
    }
    runs
}

/// One alert of a delivery in the batch, in arrival order.
struct Sighting<'a> {
    delivery: usize,
    alert: &'a Alert,
    starts_at: String,
    /// When it resolved, if it did (its end, or when it was received).
    resolved_at: Option<String>,
    /// The incident's id if this sighting creates it.
    id: String,
}

/// Stores deliveries (each with the time it was received) as if one after the other: the
/// raw payloads, then each alert folded into its incident. A firing seen for the first
/// time becomes an incident to decide; a later sighting, in this batch or a later one, is
/// a repeat (and a resolved one settles its incident).
async fn record_deliveries_in(
    tx: &mut WriteTx,
    items: &[(Delivery, DateTime<Utc>)],
) -> Result<Vec<NewIncidents>, StoreError> {
    let mut out: Vec<NewIncidents> = items
        .iter()
        .map(|_| NewIncidents {
            delivery_id: new_id(),
            ..NewIncidents::default()
        })
        .collect();
    let received: Vec<String> = items.iter().map(|(_, now)| timestamp(*now)).collect();
    let max_bytes = bytes_per_insert(tx);
    let delivery_runs = insert_runs(
        items
            .iter()
            .map(|(d, _)| d.raw.len() + d.group_key.len() + 128),
        max_bytes,
    );

    let sightings: Vec<Sighting> = items
        .iter()
        .enumerate()
        .flat_map(|(delivery, (d, now))| {
            d.alerts.iter().map(move |alert| Sighting {
                delivery,
                alert,
                starts_at: timestamp(alert.starts_at),
                resolved_at: (alert.status == AlertStatus::Resolved)
                    .then(|| timestamp(alert.ends_at.unwrap_or(*now))),
                id: new_id(),
            })
        })
        .collect();
    // The first sighting of each firing in the batch may create its incident.
    let mut first = std::collections::HashMap::new();
    for (k, s) in sightings.iter().enumerate() {
        first
            .entry((s.alert.fingerprint.as_str(), s.starts_at.as_str()))
            .or_insert(k);
    }
    let mut creating: Vec<usize> = first.into_values().collect();
    creating.sort_unstable();
    // Only an incident being created stores its alert; a re-send's is not serialised.
    let creating = creating
        .into_iter()
        .map(|k| {
            let json = serde_json::to_string(sightings[k].alert)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            Ok((&sightings[k], json))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let incident_runs = insert_runs(creating.iter().map(|(_, json)| json.len() + 256), max_bytes);

    // The batch's BEGIN or savepoint, if the writer left it to go with the first insert.
    let opening = tx
        .take_opening()
        .map(|o| format!("{o}; "))
        .unwrap_or_default();
    let stored = Stored {
        items,
        out: &out,
        received: &received,
    };
    let created: std::collections::HashSet<String> = match (&delivery_runs[..], &incident_runs[..])
    {
        // On SQLite a batch that fits one insert of each goes in one round trip: sqlx runs
        // the statements of a string one after the other, each bound from the same values
        // (the second's follow the first's).
        ([deliveries], [incidents]) if !tx.is_postgres() => {
            let sql = format!(
                "{}{}; {}",
                opening,
                insert_deliveries_sql(deliveries.len(), Numbering::Anonymous),
                insert_incidents_sql(incidents.len(), Numbering::Anonymous)
            );
            let insert = sqlx::query(sqlx::AssertSqlSafe(sql));
            let insert = stored.bind_deliveries(insert, deliveries.clone());
            let insert = stored.bind_incidents(insert, &creating[incidents.clone()]);
            let rows = insert.fetch_all(tx.conn()).await?;
            rows.iter()
                .map(|r| Ok(r.try_get("id")?))
                .collect::<Result<_, StoreError>>()?
        }
        _ => {
            let numbering = Numbering::of(tx);
            for (k, run) in delivery_runs.into_iter().enumerate() {
                let opening = if k == 0 { opening.as_str() } else { "" };
                let sql = format!("{opening}{}", insert_deliveries_sql(run.len(), numbering));
                let insert = sqlx::query(sqlx::AssertSqlSafe(sql));
                stored
                    .bind_deliveries(insert, run)
                    .execute(tx.conn())
                    .await?;
            }
            let mut created = std::collections::HashSet::new();
            for run in incident_runs {
                let sql = insert_incidents_sql(run.len(), numbering);
                let insert = sqlx::query(sqlx::AssertSqlSafe(sql));
                let insert = stored.bind_incidents(insert, &creating[run]);
                for row in insert.fetch_all(tx.conn()).await? {
                    created.insert(row.try_get("id")?);
                }
            }
            created
        }
    };

    for s in &sightings {
        let stored = &mut out[s.delivery];
        if created.contains(&s.id) {
            if s.alert.status == AlertStatus::Firing {
                stored.to_decide.push(s.id.clone());
            }
            continue;
        }
        stored.repeated += 1;
        if fold_repeat(tx, s, &received[s.delivery]).await? {
            stored.resolved += 1;
        }
    }
    Ok(out)
}

/// How a statement names the values bound to it.
#[derive(Clone, Copy)]
enum Numbering {
    /// `$1`, `$2`, ...: PostgreSQL's only form (one statement per string there).
    Dollar,
    /// `?` for each, bound in order (in a string of several statements, each takes its
    /// values after the last one's). On SQLite: sqlx binds a named value by asking SQLite
    /// each name, which it finds by a scan of the statement's names, so binding a statement
    /// of `$N` costs the square of its values. In a flood of 10-alert webhooks that took
    /// 14% of all CPU samples for inserts of up to 64 rows (4.7% when cut at 16 KB).
    Anonymous,
}

impl Numbering {
    /// How a batch's inserts number their values.
    fn of(tx: &WriteTx) -> Numbering {
        match tx.is_postgres() {
            true => Numbering::Dollar,
            false => Numbering::Anonymous,
        }
    }
}

/// `rows` parenthesised groups of placeholders, `per_row` values each, each bound once
/// in the order written; `row` may add literals among a row's placeholders.
fn placeholders(
    rows: usize,
    per_row: usize,
    numbering: Numbering,
    row: impl Fn(Vec<String>) -> Vec<String>,
) -> String {
    (0..rows)
        .map(|r| {
            let values: Vec<String> = (1..=per_row)
                .map(|k| match numbering {
                    Numbering::Dollar => format!("${}", r * per_row + k),
                    Numbering::Anonymous => "?".to_owned(),
                })
                .collect();
            format!("({})", row(values).join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Values bound per delivery stored.
const DELIVERY_VALUES: usize = 8;

/// Stores `rows` deliveries.
fn insert_deliveries_sql(rows: usize, numbering: Numbering) -> String {
    format!(
        "INSERT INTO deliveries (id, received_at, receiver, status, group_key, alert_count, truncated_alerts, payload)
         VALUES {}",
        placeholders(rows, DELIVERY_VALUES, numbering, |values| values)
    )
}

/// Creates `rows` incidents that do not exist yet; returns the ids of those it created.
fn insert_incidents_sql(rows: usize, numbering: Numbering) -> String {
    format!(
        "INSERT INTO incidents (id, fingerprint, starts_at, alertname, status, alert, first_seen_at,
             last_seen_at, resolved_at, delivery_count, first_delivery_id, decision, decision_reason)
         VALUES {}
         ON CONFLICT (fingerprint, starts_at) DO NOTHING
         RETURNING id",
        placeholders(rows, 12, numbering, |mut values| {
            values.insert(9, "1".into()); // delivery_count
            values
        })
    )
}

/// A multi-row statement being bound.
type Insert<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// A batch of deliveries as they are stored: what each is, the id it is given, and when
/// it was received.
struct Stored<'a> {
    items: &'a [(Delivery, DateTime<Utc>)],
    out: &'a [NewIncidents],
    received: &'a [String],
}

impl<'a> Stored<'a> {
    /// Binds the deliveries of `run` in the order of [`insert_deliveries_sql`].
    fn bind_deliveries(&self, mut insert: Insert<'a>, run: std::ops::Range<usize>) -> Insert<'a> {
        for i in run {
            let d = &self.items[i].0;
            insert = insert
                .bind(&self.out[i].delivery_id)
                .bind(&self.received[i])
                .bind(&d.receiver)
                .bind(d.status.as_str())
                .bind(&d.group_key)
                .bind(d.alerts.len() as i64)
                .bind(d.truncated_alerts as i64)
                .bind(&d.raw);
        }
        insert
    }

    /// Binds the incidents of `creating` (each sighting with its alert as stored) in the
    /// order of [`insert_incidents_sql`].
    fn bind_incidents(
        &self,
        mut insert: Insert<'a>,
        creating: &'a [(&'a Sighting<'a>, String)],
    ) -> Insert<'a> {
        for (s, json) in creating {
            // First seen already resolved (salve was down while it fired): nothing to decide.
            let (decision, reason) = match s.alert.status {
                AlertStatus::Firing => ("undecided", ""),
                AlertStatus::Resolved => (
                    Decision::ResolvedBeforeDecision.as_str(),
                    RESOLVED_BEFORE_DECISION,
                ),
            };
            insert = insert
                .bind(&s.id)
                .bind(s.alert.fingerprint.as_str())
                .bind(&s.starts_at)
                .bind(s.alert.alertname())
                .bind(s.alert.status.as_str())
                .bind(json)
                .bind(&self.received[s.delivery])
                // last_seen_at: first seen now.
                .bind(&self.received[s.delivery])
                .bind(&s.resolved_at)
                .bind(&self.out[s.delivery].delivery_id)
                .bind(decision)
                .bind(reason);
        }
        insert
    }
}

/// Folds a re-sent alert into its incident; whether this settled the incident resolved.
/// A firing re-send never re-opens a resolved incident: Alertmanager gives a re-fire a new
/// startsAt, so a late firing copy is stale news. An incident that resolves while still
/// undecided is settled here and now: the engine decides only firing incidents, so it
/// would otherwise stay undecided.
async fn fold_repeat(tx: &mut WriteTx, s: &Sighting<'_>, now_s: &str) -> Result<bool, StoreError> {
    let alert = s.alert;
    let was_firing = sqlx::query(
        "UPDATE incidents SET last_seen_at = $1, delivery_count = delivery_count + 1,
             status = CASE WHEN $2 = 'resolved' THEN 'resolved' ELSE status END,
             decision = CASE WHEN $2 = 'resolved' AND decision = 'undecided'
                             THEN 'resolved_before_decision' ELSE decision END,
             decision_reason = CASE WHEN $2 = 'resolved' AND decision = 'undecided'
                             THEN $6 ELSE decision_reason END,
             resolved_at = CASE WHEN $2 = 'resolved' AND resolved_at IS NULL THEN $3 ELSE resolved_at END
         WHERE fingerprint = $4 AND starts_at = $5 AND status = 'firing'",
    )
    .bind(now_s)
    .bind(alert.status.as_str())
    .bind(&s.resolved_at)
    .bind(alert.fingerprint.as_str())
    .bind(&s.starts_at)
    .bind(RESOLVED_BEFORE_DECISION)
    .execute(tx.conn())
    .await?
    .rows_affected()
        > 0;
    if !was_firing {
        sqlx::query(
            "UPDATE incidents SET last_seen_at = $1, delivery_count = delivery_count + 1
             WHERE fingerprint = $2 AND starts_at = $3",
        )
        .bind(now_s)
        .bind(alert.fingerprint.as_str())
        .bind(&s.starts_at)
        .execute(tx.conn())
        .await?;
    }
    Ok(was_firing && alert.status == AlertStatus::Resolved)
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, Utc};
    use serde_json::json;
    use sqlx::Row;

    use crate::store::Store;

    const FIRING: &str =
        include_str!("../../tests/fixtures/alertmanager/firing-single-api-posted.json");

    fn firing(fingerprint: &str) -> crate::alert::Delivery {
        let mut v: serde_json::Value = serde_json::from_str(FIRING).unwrap();
        v["alerts"][0]["fingerprint"] = json!(fingerprint);
        crate::alert::Delivery::parse(v.to_string().as_bytes()).unwrap()
    }

    /// A batch's rows go in as few inserts as the limits allow: 64 rows, and the bytes a
    /// statement may hold where the connection sends it (a flood of 16 single-alert
    /// webhooks is one insert where statements go whole, two where each must fit a TLS
    /// record); a row larger than the bytes allowed is an insert of its own.
    #[test]
    fn inserts_are_cut_only_where_rows_or_bytes_run_out() {
        use super::{BYTES_PER_INSERT, BYTES_PER_INSERT_IN_ONE_RECORD, insert_runs};
        let flood = [1_300; 16];
        let whole = insert_runs(flood, BYTES_PER_INSERT);
        assert_eq!((whole.len(), &whole[0]), (1, &(0..16)));
        assert_eq!(
            insert_runs(flood, BYTES_PER_INSERT_IN_ONE_RECORD),
            [0..12, 12..16]
        );
        assert_eq!(insert_runs([10; 100], BYTES_PER_INSERT), [0..64, 64..100]);
        assert_eq!(
            insert_runs([100, 20_000, 100, 100], BYTES_PER_INSERT_IN_ONE_RECORD),
            [0..1, 1..2, 2..4]
        );
        assert!(insert_runs([0usize; 0], BYTES_PER_INSERT).is_empty());
    }

    /// The sweep takes only incidents old enough that their hand-off was lost, and reads
    /// them through the index: a storm's backlog of young ones is neither returned nor
    /// scanned.
    #[tokio::test]
    async fn the_sweep_reads_only_undecided_incidents_older_than_its_cutoff() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.path().join("s.db").display()))
            .await
            .unwrap();
        let now = Utc::now();
        let mut ids = Vec::new();
        for (fingerprint, seen) in [
            ("00000000000000e2", now - Duration::minutes(5)),
            ("00000000000000e1", now - Duration::minutes(10)),
            ("00000000000000e3", now),
        ] {
            let stored = store.record_delivery(&firing(fingerprint), seen).await;
            ids.push(stored.unwrap().to_decide.remove(0));
        }
        let cutoff = now - Duration::minutes(1);
        let old = store
            .undecided_firing_incidents_before(cutoff)
            .await
            .unwrap();
        assert_eq!(old, [ids[1].clone(), ids[0].clone()]);
        let all = store.undecided_firing_incidents().await.unwrap();
        assert_eq!(all, [ids[1].clone(), ids[0].clone(), ids[2].clone()]);

        let plan = sqlx::query(sqlx::AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN {}",
            super::undecided_firing_sql(true)
        )))
        .bind(crate::store::timestamp(cutoff))
        .fetch_all(&mut *store.reader().await.unwrap())
        .await
        .unwrap();
        let plan: Vec<String> = plan.iter().map(|r| r.get("detail")).collect();
        assert_eq!(
            plan,
            [
                "SEARCH incidents USING INDEX incidents_undecided (decision=? AND status=? AND first_seen_at<?)"
            ]
        );
    }
}
