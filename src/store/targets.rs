//! Per-workload facts: the lock, the cooldown clock, the recent history, the rate.
//!
//! The lock is a lease row per workload: taken if free, expired, or already held by
//! the same remediation (a resumed one after its owner died), renewed while the ladder
//! runs, and released in the transaction that ends the remediation. The lease bounds how
//! long a crashed holder can block a target; its epoch fences a holder that lapsed.
//! Every real change is a row in the actions ledger, reserved atomically with the intent
//! to write, so rate limits count changes, across replicas.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use super::{Store, StoreError, timestamp};
use crate::cluster::TargetRef;
use crate::remediation::{Event, RemediationState};

/// What a reserved change is, in the actions ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    /// A step of a rule's ladder.
    Step,
    /// salve putting back its own change.
    Revert,
}

impl ActionKind {
    fn as_str(self) -> &'static str {
        match self {
            ActionKind::Step => "step",
            ActionKind::Revert => "revert",
        }
    }
}

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

/// A workload lock held by one remediation, as this replica took it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub remediation_id: String,
    /// Grows each time the lock is taken: a holder with an older epoch has lost it.
    pub epoch: i64,
}

/// What a request to take a workload's lock found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockAttempt {
    Taken(Lease),
    /// Another remediation holds it (its id).
    Busy(String),
}

/// A limit on real changes in a rolling window, for one scope: every workload together,
/// each namespace, or each workload. Several may hold at once ("3 an hour and 7 a day").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Budget {
    pub scope: BudgetScope,
    pub limit: u32,
    #[serde(rename = "window_seconds", serialize_with = "seconds")]
    pub window: std::time::Duration,
}

fn seconds<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

/// Whose changes a budget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetScope {
    Global,
    Namespace,
    Target,
}

impl Budget {
    /// `scope limit/window`, as `--budget` takes it and the record says it.
    pub fn describe(&self) -> String {
        let scope = match self.scope {
            BudgetScope::Global => "global",
            BudgetScope::Namespace => "namespace",
            BudgetScope::Target => "target",
        };
        format!(
            "{scope} {}/{}",
            self.limit,
            humantime::format_duration(self.window)
        )
    }

    /// The SQL condition (after `at >= $1`) and its binds that select this budget's
    /// changes to `target`'s scope. Namespaces are DNS labels, so they hold neither
    /// `/` nor a LIKE wildcard.
    fn filter(&self, target: &TargetRef) -> (&'static str, Vec<String>) {
        match self.scope {
            BudgetScope::Global => ("", Vec::new()),
            BudgetScope::Namespace => (
                " AND (target LIKE $2 OR target LIKE $3)",
                vec![
                    format!("Deployment/{}/%", target.namespace),
                    format!("StatefulSet/{}/%", target.namespace),
                ],
            ),
            BudgetScope::Target => (" AND target = $2", vec![target.key()]),
        }
    }

    /// Whose changes, in words: "all workloads", "namespace shop", "Deployment shop/web".
    fn whose(&self, target: &TargetRef) -> String {
        match self.scope {
            BudgetScope::Global => "all workloads".to_owned(),
            BudgetScope::Namespace => format!("namespace {}", target.namespace),
            BudgetScope::Target => target.to_string(),
        }
    }
}

/// How much of a budget a workload's next change has: what policy sees as
/// `input.budgets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BudgetUse {
    #[serde(flatten)]
    pub budget: Budget,
    pub used: i64,
    pub left: i64,
}

/// Real changes in `budget`'s window and scope, for a change to `target`, as of `now`.
async fn used<'e, E>(
    executor: E,
    budget: &Budget,
    target: &TargetRef,
    now: DateTime<Utc>,
) -> Result<i64, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let since =
        now - chrono::Duration::from_std(budget.window).unwrap_or(chrono::Duration::hours(1));
    let (condition, binds) = budget.filter(target);
    let sql = format!("SELECT COUNT(*) AS n FROM actions WHERE at >= $1{condition}");
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(timestamp(since));
    for b in binds {
        q = q.bind(b);
    }
    Ok(q.fetch_one(executor).await?.try_get("n")?)
}

/// A workload's recent remediations, newest first: read for every remediation (its policy
/// input's history), so it must stay a range of the workload's own rows in
/// `remediations_target`, however many remediations its namespace has (see migration 7).
const TARGET_HISTORY: &str = "SELECT id, created_at, acted_at, rule_name, alertname, action, state, summary FROM remediations
     WHERE target_kind = $1 AND target_namespace = $2 AND target_name = $3 AND created_at >= $4 AND id <> $5
     ORDER BY created_at DESC, id DESC LIMIT 50";

/// What the store said to an intent to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteSlot {
    /// Reserved and recorded: the remediation is now in this state (`executing`).
    Reserved(RemediationState),
    /// The lease lapsed or was taken over: this replica must not write.
    LeaseLost,
    /// A budget of changes is spent: which, and how many were made.
    OverBudget(String),
    /// The remediation was no longer in the expected state (claimed elsewhere).
    Moved,
    /// An operator paused salve (everywhere or in the workload's namespace).
    Paused(super::pauses::Pause),
}

impl Store {
    /// Takes the workload's lock for `remediation_id` (owned by `owner`) until
    /// `expires_at`: if free, if its lease lapsed, or if this remediation already holds it
    /// (resumed after its owner died). Each take bumps the epoch.
    pub async fn acquire_target_lock(
        &self,
        target: &TargetRef,
        remediation_id: &str,
        owner: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<LockAttempt, StoreError> {
        let (key, remediation_id, owner) =
            (target.key(), remediation_id.to_owned(), owner.to_owned());
        self.write(move |tx| {
            Box::pin(async move {
                let taken = sqlx::query(
                    "INSERT INTO target_locks (target, remediation_id, expires_at, owner, epoch) VALUES ($1, $2, $3, $5, 1)
                     ON CONFLICT (target) DO UPDATE SET remediation_id = excluded.remediation_id,
                         expires_at = excluded.expires_at, owner = excluded.owner, epoch = target_locks.epoch + 1
                     WHERE target_locks.expires_at < $4 OR target_locks.remediation_id = $2
                     RETURNING epoch",
                )
                .bind(&key)
                .bind(&remediation_id)
                .bind(timestamp(expires_at))
                .bind(timestamp(now))
                .bind(&owner)
                .fetch_optional(tx.conn())
                .await?;
                if let Some(row) = taken {
                    return Ok(LockAttempt::Taken(Lease {
                        remediation_id,
                        epoch: row.try_get("epoch")?,
                    }));
                }
                let row = sqlx::query("SELECT remediation_id FROM target_locks WHERE target = $1")
                    .bind(&key)
                    .fetch_optional(tx.conn())
                    .await?;
                Ok(LockAttempt::Busy(match row {
                    Some(r) => r.try_get("remediation_id")?,
                    None => "a remediation that just finished".to_owned(),
                }))
            })
        })
        .await
    }

    /// Drops the remediation's workload lock if the remediation has ended (a safety net:
    /// ending a remediation releases its lock in the same transaction already).
    pub async fn release_lock_if_finished(&self, remediation_id: &str) -> Result<(), StoreError> {
        self.execute_write(sqlx::query(
            "DELETE FROM target_locks WHERE remediation_id = $1 AND EXISTS (
                 SELECT 1 FROM remediations WHERE id = $1 AND state NOT IN ('pending', 'executing', 'verifying'))",
        )
        .bind(remediation_id)
        )
        .await?;
        Ok(())
    }

    /// Extends a lease that is still this holder's and has not lapsed; `false` means the
    /// holder lost the workload and must not write to it again.
    pub async fn renew_lease(
        &self,
        target: &TargetRef,
        lease: &Lease,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let (target, lease) = (target.clone(), lease.clone());
        self.write(move |tx| Box::pin(async move { renew(tx, &target, &lease, now, until).await }))
            .await
    }

    /// The intent to write, admitted or refused in one transaction: the lease must still
    /// be held (and is renewed), no pause may hold the workload's namespace, a slot in the
    /// global hourly budget is reserved in the actions ledger, and the remediation moves
    /// to `executing` by compare-and-set. Either all of it is committed or none.
    #[allow(clippy::too_many_arguments)]
    pub async fn reserve_write(
        &self,
        remediation_id: &str,
        from: RemediationState,
        (target, lease): (&TargetRef, &Lease),
        kind: ActionKind,
        summary: &str,
        (now, lease_until): (DateTime<Utc>, DateTime<Utc>),
        budgets: &[Budget],
    ) -> Result<WriteSlot, StoreError> {
        let (id, target, lease, summary, budgets) = (
            remediation_id.to_owned(),
            target.clone(),
            lease.clone(),
            summary.to_owned(),
            budgets.to_vec(),
        );
        self.write(move |tx| {
            Box::pin(async move {
                if !renew(tx, &target, &lease, now, lease_until).await? {
                    return Ok(WriteSlot::LeaseLost);
                }
                if let Some(pause) = super::pauses::pause_over_on(tx.conn(), &target.namespace, now).await? {
                    tx.discard();
                    return Ok(WriteSlot::Paused(pause));
                }
                sqlx::query("UPDATE action_budget SET reservations = reservations + 1 WHERE id = 1")
                    .execute(tx.conn())
                    .await?;
                // Every budget counts under the reservation row's lock: two replicas
                // cannot both take the last slot.
                for budget in &budgets {
                    let made = used(tx.conn(), budget, &target, now).await?;
                    if made >= i64::from(budget.limit) {
                        tx.discard();
                        return Ok(WriteSlot::OverBudget(format!(
                            "salve already made {made} changes to {} in the last {} (budget {}); a human should look",
                            budget.whose(&target),
                            humantime::format_duration(budget.window),
                            budget.describe()
                        )));
                    }
                }
                sqlx::query(
                    "INSERT INTO actions (id, remediation_id, target, kind, at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(super::new_id())
                .bind(&id)
                .bind(target.key())
                .bind(kind.as_str())
                .bind(timestamp(now))
                .execute(tx.conn())
                .await?;
                let moved = super::remediations::transition_in(
                    tx,
                    &id,
                    from,
                    Event::WriteIntent,
                    &summary,
                    &[],
                    now,
                )
                .await?;
                Ok(match moved {
                    Some(to) => WriteSlot::Reserved(to),
                    None => {
                        tx.discard();
                        WriteSlot::Moved
                    }
                })
            })
        })
        .await
    }

    /// Every workload lock held now, as `(workload, remediation)`: for diagnostics and for
    /// checking that no finished remediation holds one.
    pub async fn locks(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query("SELECT target, remediation_id FROM target_locks ORDER BY target")
            .fetch_all(&mut *self.reader().await?)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("target")?, r.try_get("remediation_id")?)))
            .collect()
    }

    /// What is left of each budget for a change to `target` now (`input.budgets`).
    pub async fn budget_use(
        &self,
        budgets: &[Budget],
        target: &TargetRef,
        now: DateTime<Utc>,
    ) -> Result<Vec<BudgetUse>, StoreError> {
        let mut out = Vec::with_capacity(budgets.len());
        for budget in budgets {
            let used = used(&mut *self.reader().await?, budget, target, now).await?;
            out.push(BudgetUse {
                budget: *budget,
                used,
                left: (i64::from(budget.limit) - used).max(0),
            });
        }
        Ok(out)
    }

    /// Real changes salve made to the workload since `since` (steps and reverts).
    pub async fn target_actions_since(
        &self,
        target: &TargetRef,
        since: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM actions WHERE target = $1 AND at >= $2")
            .bind(target.key())
            .bind(timestamp(since))
            .fetch_one(&mut *self.reader().await?)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// The target's remediations since `since`, newest first, at most 50.
    pub async fn target_history(
        &self,
        target: &TargetRef,
        since: DateTime<Utc>,
        excluding: &str,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let rows = sqlx::query(TARGET_HISTORY)
            .bind(target.kind.as_str())
            .bind(&target.namespace)
            .bind(&target.name)
            .bind(timestamp(since))
            .bind(excluding)
            .fetch_all(&mut *self.reader().await?)
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
        .fetch_optional(&mut *self.reader().await?)
        .await?;
        row.map(|r| Ok((r.try_get("id")?, r.try_get("acted_at")?)))
            .transpose()
    }

    /// How many real changes salve made on any target since `since` (the global rate limit).
    pub async fn actions_since(&self, since: DateTime<Utc>) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM actions WHERE at >= $1")
            .bind(timestamp(since))
            .fetch_one(&mut *self.reader().await?)
            .await?;
        Ok(row.try_get("n")?)
    }
}

/// Renews a lease inside a transaction; `false` if it lapsed or changed hands.
async fn renew(
    tx: &mut super::writer::WriteTx,
    target: &TargetRef,
    lease: &Lease,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let renewed = sqlx::query(
        "UPDATE target_locks SET expires_at = $1
         WHERE target = $2 AND remediation_id = $3 AND epoch = $4 AND expires_at >= $5",
    )
    .bind(timestamp(until))
    .bind(target.key())
    .bind(&lease.remediation_id)
    .bind(lease.epoch)
    .bind(timestamp(now))
    .execute(tx.conn())
    .await?
    .rows_affected();
    Ok(renewed == 1)
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use crate::store::Store;

    /// In a storm in one namespace, the history read once took the namespace's index and
    /// read every remediation of the namespace: quadratic, most of the engine's time.
    #[tokio::test]
    async fn a_workloads_history_is_read_through_its_own_index() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = Store::open(&url).await.unwrap();
        let explain = format!("EXPLAIN QUERY PLAN {}", super::TARGET_HISTORY);
        let plan = sqlx::query(sqlx::AssertSqlSafe(explain))
            .bind("Deployment")
            .bind("storm")
            .bind("web-1")
            .bind("2026-01-01T00:00:00.000000Z")
            .bind("none")
            .fetch_all(&mut *store.reader().await.unwrap())
            .await
            .unwrap();
        let plan: Vec<String> = plan
            .iter()
            .map(|r| r.try_get::<String, _>("detail").unwrap())
            .collect();
        assert_eq!(
            plan,
            [
                "SEARCH remediations USING INDEX remediations_target (target_kind=? AND target_namespace=? AND target_name=? AND created_at>?)"
            ]
        );
    }
}
