//! Operators' pauses: the kill switch.
//!
//! A pause stops salve's writes everywhere, or in one namespace, until it is resumed or
//! until the time it was given runs out. It is a row, not a flag in memory: every replica
//! sharing the database honours it, and a restart keeps it. Rows stay after a pause ends
//! (who resumed, when), so the audit trail says when salve was held back and by whom.
//!
//! The engine asks [`Store::pause_over`] before every write (after the policy verdict,
//! so the record still says what would have been done) and asks again inside the
//! transaction that reserves the write ([`pause_over_in`]): a pause that lands between
//! the two still stops the write. A write already reserved when the pause lands is past
//! both checks; it is on its remediation's timeline.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, new_id, timestamp};

/// The namespace annotation that pauses salve in that namespace, for teams that hold
/// their own namespace's automation from `kubectl` (or GitOps) rather than salve's CLI.
pub const PAUSED_ANNOTATION: &str = "salve.io/paused";
/// An optional annotation beside [`PAUSED_ANNOTATION`] saying why.
pub const PAUSED_REASON_ANNOTATION: &str = "salve.io/paused-reason";

/// A pause in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pause {
    /// The stored pause's id; `None` for a namespace annotation.
    pub id: Option<String>,
    /// `None`: every namespace.
    pub namespace: Option<String>,
    pub reason: String,
    /// Who paused: a person or a ticket, as given, and where it was asked (CLI, API).
    pub paused_by: String,
    /// When (RFC 3339); `None` for a namespace annotation.
    pub paused_at: Option<String>,
    /// When it ends by itself; `None`: when resumed.
    pub expires_at: Option<String>,
}

impl Pause {
    /// The pause a namespace's annotations ask for, if they ask for one: the annotation
    /// must be exactly `"true"` (as Kubernetes' own boolean annotations are read).
    pub fn from_annotations(
        namespace: &str,
        annotations: &std::collections::BTreeMap<String, String>,
    ) -> Option<Pause> {
        if annotations.get(PAUSED_ANNOTATION).map(String::as_str) != Some("true") {
            return None;
        }
        let reason = annotations
            .get(PAUSED_REASON_ANNOTATION)
            .map(|r| r.trim())
            .filter(|r| !r.is_empty())
            .unwrap_or("no reason given")
            .to_owned();
        Some(Pause {
            id: None,
            namespace: Some(namespace.to_owned()),
            reason,
            paused_by: format!(
                "the annotation {PAUSED_ANNOTATION}=\"true\" on namespace {namespace}"
            ),
            paused_at: None,
            expires_at: None,
        })
    }

    /// One sentence for the remediation's record and for people: where, who, since
    /// when, until when, why.
    pub fn describe(&self) -> String {
        let scope = match &self.namespace {
            None => "everywhere".to_owned(),
            Some(ns) => format!("in namespace {ns}"),
        };
        let since = self
            .paused_at
            .as_deref()
            .map(|at| format!(" since {at}"))
            .unwrap_or_default();
        let until = match (&self.id, &self.expires_at) {
            (None, _) => String::new(),
            (Some(_), Some(at)) => format!(" until {at}"),
            (Some(_), None) => " until resumed".to_owned(),
        };
        format!(
            "salve is paused {scope} by {}{since}{until} (reason: {})",
            self.paused_by, self.reason
        )
    }
}

/// A pause to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPause {
    /// `None`: every namespace.
    pub namespace: Option<String>,
    pub reason: String,
    pub by: String,
    /// When it ends by itself; `None`: when resumed.
    pub until: Option<DateTime<Utc>>,
}

/// Which pauses a resume ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeScope {
    /// The pauses of every namespace (not those of single namespaces).
    Everywhere,
    /// The pauses of this namespace.
    Namespace(String),
    /// Every pause in force.
    All,
}

const COLUMNS: &str = "id, namespace, reason, paused_by, paused_at, expires_at";
/// In force at `$1`: not resumed, not expired.
const OPEN: &str = "resumed_at IS NULL AND (expires_at IS NULL OR expires_at > $1)";

/// Which pauses are the storm brake's (their ids are `storm-brake-<minute>`).
const BRAKE: &str = "id LIKE 'storm-brake-%'";

fn pause_of(row: &AnyRow) -> Result<Pause, StoreError> {
    Ok(Pause {
        id: Some(row.try_get("id")?),
        namespace: row.try_get("namespace")?,
        reason: row.try_get("reason")?,
        paused_by: row.try_get("paused_by")?,
        paused_at: Some(row.try_get("paused_at")?),
        expires_at: row.try_get("expires_at")?,
    })
}

/// The pause a write to `namespace` must honour at `now` (one of every namespace first):
/// read by the engine before a write, and inside the writer's transaction that would
/// reserve it, by this one query.
pub(super) async fn pause_over_on<'e, E>(
    executor: E,
    namespace: &str,
    now: DateTime<Utc>,
) -> Result<Option<Pause>, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let sql = format!(
        "SELECT {COLUMNS} FROM pauses WHERE {OPEN} AND (namespace IS NULL OR namespace = $2)
         ORDER BY CASE WHEN namespace IS NULL THEN 0 ELSE 1 END, paused_at, id LIMIT 1"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(timestamp(now))
        .bind(namespace)
        .fetch_optional(executor)
        .await?
        .as_ref()
        .map(pause_of)
        .transpose()
}

/// What [`Store::storm_reading`] found.
#[derive(Debug, Clone, Copy)]
pub struct StormReading {
    /// Remediations opened in the window, by every replica.
    pub opened: i64,
    /// A storm brake holds now (tripped by any replica, not resumed, not expired).
    pub braking: bool,
}

impl Store {
    /// Records a pause; it holds from now, for every replica.
    pub async fn pause(&self, new: &NewPause, now: DateTime<Utc>) -> Result<Pause, StoreError> {
        let pause = Pause {
            id: Some(new_id()),
            namespace: new.namespace.clone(),
            reason: new.reason.clone(),
            paused_by: new.by.clone(),
            paused_at: Some(timestamp(now)),
            expires_at: new.until.map(timestamp),
        };
        let row = pause.clone();
        self.write(move |tx| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO pauses (id, namespace, reason, paused_by, paused_at, expires_at)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(row.id)
                .bind(row.namespace)
                .bind(row.reason)
                .bind(row.paused_by)
                .bind(row.paused_at)
                .bind(row.expires_at)
                .execute(tx.conn())
                .await?;
                Ok(())
            })
        })
        .await?;
        Ok(pause)
    }

    /// What the storm brake reads before each remediation, in one read: how many were
    /// opened since `since` by every replica, and whether a storm brake holds at `now`.
    /// Past the limit in a storm, every remediation would otherwise ask the writer to trip
    /// a brake that holds already (a write, refused, per remediation).
    pub async fn storm_reading(
        &self,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<StormReading, StoreError> {
        let sql = format!(
            "SELECT (SELECT COUNT(*) FROM remediations WHERE created_at >= $2) AS opened,
                    (SELECT COUNT(*) FROM pauses WHERE {OPEN} AND {BRAKE}) AS braking"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(timestamp(now))
            .bind(timestamp(since))
            .fetch_one(&mut *self.reader().await?)
            .await?;
        Ok(StormReading {
            opened: row.try_get("opened")?,
            braking: row.try_get::<i64, _>("braking")? > 0,
        })
    }

    /// The storm brake's pause, recorded unless one is in force already or `id` (the
    /// minute it trips in) was taken by another replica: `false` then, and nothing is
    /// recorded. So a storm trips the brake once, however long it lasts while paused;
    /// after a resume, a storm that goes on trips it again.
    pub async fn trip_brake(
        &self,
        id: &str,
        new: &NewPause,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let (id, new) = (id.to_owned(), new.clone());
        self.write(move |tx| {
            Box::pin(async move {
                let sql = format!("SELECT id FROM pauses WHERE {OPEN} AND {BRAKE}");
                let braking = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(timestamp(now))
                    .fetch_optional(tx.conn())
                    .await?;
                if braking.is_some() {
                    return Ok(false);
                }
                let added = sqlx::query(
                    "INSERT INTO pauses (id, namespace, reason, paused_by, paused_at, expires_at)
                     VALUES ($1, NULL, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
                )
                .bind(id)
                .bind(new.reason)
                .bind(new.by)
                .bind(timestamp(now))
                .bind(new.until.map(timestamp))
                .execute(tx.conn())
                .await?
                .rows_affected();
                Ok(added == 1)
            })
        })
        .await
    }

    /// Ends the pauses of `scope` that are in force; returns them (empty: none was).
    pub async fn resume(
        &self,
        scope: &ResumeScope,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Pause>, StoreError> {
        let which = match scope {
            ResumeScope::Everywhere => "AND namespace IS NULL",
            ResumeScope::Namespace(_) => "AND namespace = $4",
            ResumeScope::All => "",
        };
        let sql = format!(
            "UPDATE pauses SET resumed_at = $2, resumed_by = $3 WHERE {OPEN} {which} RETURNING {COLUMNS}"
        );
        let (now_s, by, namespace) = (
            timestamp(now),
            by.to_owned(),
            match scope {
                ResumeScope::Namespace(ns) => Some(ns.clone()),
                _ => None,
            },
        );
        let mut ended = self
            .write(move |tx| {
                Box::pin(async move {
                    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(now_s.clone())
                        .bind(now_s)
                        .bind(by);
                    if let Some(ns) = namespace {
                        q = q.bind(ns);
                    }
                    let rows = q.fetch_all(tx.conn()).await?;
                    rows.iter().map(pause_of).collect::<Result<Vec<_>, _>>()
                })
            })
            .await?;
        ended.sort_by(|a, b| (&a.paused_at, &a.id).cmp(&(&b.paused_at, &b.id)));
        Ok(ended)
    }

    /// Every pause in force at `now`, oldest first: for `/readyz`, `/metrics` and
    /// `salve pauses`.
    pub async fn active_pauses(&self, now: DateTime<Utc>) -> Result<Vec<Pause>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM pauses WHERE {OPEN} ORDER BY paused_at, id");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(timestamp(now))
            .fetch_all(&mut *self.reader().await?)
            .await?
            .iter()
            .map(pause_of)
            .collect()
    }

    /// The stored pause a write to `namespace` must honour at `now`, if any (one of every
    /// namespace first).
    pub async fn pause_over(
        &self,
        namespace: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Pause>, StoreError> {
        pause_over_on(&mut *self.reader().await?, namespace, now).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("p.db").display());
        let store = Store::open(&url).await.unwrap();
        (dir, store)
    }

    fn new(namespace: Option<&str>, until: Option<DateTime<Utc>>) -> NewPause {
        NewPause {
            namespace: namespace.map(str::to_owned),
            reason: "deploy freeze".into(),
            by: "alice (salve pause)".into(),
            until,
        }
    }

    #[tokio::test]
    async fn a_pause_holds_in_its_scope_until_resumed_or_expired() {
        let (_dir, store) = store().await;
        let now = Utc::now();
        assert_eq!(store.pause_over("shop", now).await.unwrap(), None);

        let shop = store.pause(&new(Some("shop"), None), now).await.unwrap();
        assert_eq!(
            store.pause_over("shop", now).await.unwrap(),
            Some(shop.clone())
        );
        assert_eq!(
            store.pause_over("other", now).await.unwrap(),
            None,
            "another namespace"
        );

        let hour = chrono::Duration::hours(1);
        let everywhere = store
            .pause(&new(None, Some(now + hour)), now)
            .await
            .unwrap();
        assert_eq!(
            store.pause_over("shop", now).await.unwrap(),
            Some(everywhere.clone()),
            "a pause of every namespace is named first"
        );
        assert_eq!(
            store.pause_over("other", now).await.unwrap(),
            Some(everywhere.clone())
        );
        assert_eq!(
            store.pause_over("other", now + hour).await.unwrap(),
            None,
            "expired at the time it was given"
        );
        assert_eq!(
            store.active_pauses(now).await.unwrap(),
            [shop.clone(), everywhere.clone()]
        );

        let ended = store
            .resume(&ResumeScope::Everywhere, "bob", now)
            .await
            .unwrap();
        assert_eq!(ended, [everywhere]);
        assert_eq!(store.pause_over("other", now).await.unwrap(), None);
        assert_eq!(
            store.pause_over("shop", now).await.unwrap(),
            Some(shop.clone())
        );
        let ended = store
            .resume(&ResumeScope::Namespace("shop".into()), "bob", now)
            .await
            .unwrap();
        assert_eq!(ended, [shop]);
        assert!(store.active_pauses(now).await.unwrap().is_empty());
        assert!(
            store
                .resume(&ResumeScope::All, "bob", now)
                .await
                .unwrap()
                .is_empty(),
            "nothing left to resume"
        );
    }

    #[tokio::test]
    async fn the_reserving_transaction_sees_a_pause() {
        let (_dir, store) = store().await;
        let now = Utc::now();
        let p = store.pause(&new(Some("shop"), None), now).await.unwrap();
        let seen = store
            .write(move |tx| Box::pin(async move { pause_over_on(tx.conn(), "shop", now).await }))
            .await
            .unwrap();
        assert_eq!(seen, Some(p));
    }

    #[test]
    fn a_namespace_annotation_pauses_only_when_it_says_true() {
        let mut a = std::collections::BTreeMap::new();
        assert_eq!(Pause::from_annotations("shop", &a), None);
        a.insert(PAUSED_ANNOTATION.to_owned(), "false".to_owned());
        assert_eq!(Pause::from_annotations("shop", &a), None);
        a.insert(PAUSED_ANNOTATION.to_owned(), "true".to_owned());
        a.insert(
            PAUSED_REASON_ANNOTATION.to_owned(),
            "black friday".to_owned(),
        );
        let p = Pause::from_annotations("shop", &a).unwrap();
        assert_eq!(
            p.describe(),
            "salve is paused in namespace shop by the annotation salve.io/paused=\"true\" on namespace shop (reason: black friday)"
        );
    }
}
