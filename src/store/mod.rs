//! The knowledge base: every alert, decision, verdict, API call and outcome.
//!
//! One code path serves SQLite (embedded default, a file in WAL mode) and PostgreSQL
//! (several replicas sharing one database): sqlx's `Any` driver with one set of
//! portable migrations and `$N` placeholders, which both backends accept. The
//! invariants that keep salve from acting twice live in the schema (UNIQUE incident
//! per firing, UNIQUE remediation per incident, compare-and-set state moves, a lease
//! per target), so they hold across processes, not only inside one.
//!
//! Queries are grouped by what they are about: [`incidents`], [`remediations`],
//! [`targets`].

pub mod approvals;
pub mod chain;
pub mod escalations;
pub mod incidents;
pub mod learning;
pub mod location;
mod nodelay;
pub mod overview;
pub mod owners;
pub mod pauses;
pub mod remediations;
pub mod retention;
pub mod targets;
pub mod writer;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::pool::PoolConnection;
use sqlx::{AnyPool, Executor};

pub use incidents::{IncidentRecord, NewIncidents};
pub use nodelay::disable_nagle;
pub use remediations::{EventKind, NewRemediation, RemediationRecord, TimelineEvent};

/// A failure of the knowledge base, split by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is busy: worth a retry (the webhook answers 503).
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// A query failed for another reason.
    #[error("database error: {0}")]
    Query(#[source] sqlx::Error),
    /// Stored data does not read back as it was written.
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    /// Migrations could not be applied.
    #[error("cannot apply migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// `--database` names no database salve can use.
    #[error(transparent)]
    Location(#[from] location::BadLocation),
    /// A command that only reads (or changes what is there) found no database: it does
    /// not create one, so a typo or the wrong directory is said, not reported from.
    #[error(
        "no database at {0} (salve serve or salve migrate creates it; --database or SALVE_DATABASE_URL names another)"
    )]
    Missing(String),
    /// The database could not be reached at all: names where it was looked for.
    #[error("cannot connect to {place}: {source}")]
    Connect {
        place: String,
        #[source]
        source: sqlx::Error,
    },
    /// The database is not (or not yet) a knowledge base of this salve's schema.
    #[error("{0}")]
    Schema(String),
    /// The writer's thread could not be started (the system is out of threads or memory).
    #[error("cannot start the database writer's thread: {0}")]
    Writer(#[source] std::io::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        if is_transient(&e) {
            StoreError::Unavailable(e)
        } else {
            StoreError::Query(e)
        }
    }
}

/// Whether a database error may pass: the database cannot be reached or is busy.
fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => {
            // SQLite: database is locked/busy. PostgreSQL: serialization failure,
            // deadlock, too many connections, cannot connect now, admin shutdown.
            let code = db.code().unwrap_or_default();
            matches!(
                code.as_ref(),
                "5" | "6" | "517" | "40001" | "40P01" | "53300" | "57P01" | "57P03"
            )
        }
        _ => false,
    }
}

impl StoreError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_) | StoreError::Connect { .. }
        )
    }
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How long a query waits for the database (a pooled connection, then SQLite's write
/// lock) before it counts as unavailable. Well under Alertmanager's 10 s webhook timeout,
/// so a busy database is answered 503 (and retried) rather than timed out.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(3);

/// A handle on the knowledge base; cheap to clone.
///
/// Writes and reads use separate pools. On SQLite the writer is one connection: SQLite
/// lets one writer in at a time anyway, and several connections taking turns at its write
/// lock wait in its busy handler (sleeps of milliseconds, not a queue), so under load a
/// write waited far longer for the lock than it took. One connection turns that into a
/// fair in-process queue (the pool's), and the readers, opened `query_only`, read beside
/// it (WAL) without touching the lock. On PostgreSQL, which has row locks, both are the
/// same pool.
#[derive(Clone, Debug)]
pub struct Store {
    /// The writer's pool: one connection on SQLite; migrations run on it too.
    writer: AnyPool,
    /// Group commit: every write of this replica goes through it.
    pub(crate) writes: writer::Writer<incidents::Deliveries>,
    reader: Readers,
    wait: Duration,
}

/// The read connections: the pool, and on an SQLite file the connections it handed out
/// kept for the next read. sqlx pings a connection each time it goes back to its pool (a
/// round trip to the connection's thread, as costly as the read itself, and a storm's
/// remediation reads a dozen times); an SQLite file does not go away under an open
/// connection, so a kept one needs no check. A PostgreSQL connection can break (a server
/// restart): those go back to the pool, whose check drops a broken one.
#[derive(Clone, Debug)]
struct Readers {
    pool: AnyPool,
    kept: Option<Arc<Kept>>,
}

/// Read connections kept out of their pool, and the turns to use one: a kept connection
/// still counts against the pool's size, so a reader that finds none kept may open one
/// only while fewer than the pool's size are out.
#[derive(Debug)]
struct Kept {
    idle: std::sync::Mutex<Vec<PoolConnection<sqlx::Any>>>,
    turns: Arc<tokio::sync::Semaphore>,
    wait: Duration,
}

impl Kept {
    fn new(size: u32, wait: Duration) -> Kept {
        Kept {
            idle: std::sync::Mutex::default(),
            turns: Arc::new(tokio::sync::Semaphore::new(size as usize)),
            wait,
        }
    }
}

/// A read connection, back where it came from when dropped.
pub(crate) struct Reader {
    conn: Option<PoolConnection<sqlx::Any>>,
    kept: Option<(Arc<Kept>, tokio::sync::OwnedSemaphorePermit)>,
}

impl Readers {
    async fn get(&self) -> Result<Reader, StoreError> {
        let Some(kept) = &self.kept else {
            return Ok(Reader {
                conn: Some(self.pool.acquire().await?),
                kept: None,
            });
        };
        let timed_out = || StoreError::Unavailable(sqlx::Error::PoolTimedOut);
        let turn = tokio::time::timeout(kept.wait, kept.turns.clone().acquire_owned())
            .await
            .map_err(|_| timed_out())?
            .map_err(|_| timed_out())?;
        let idle = kept.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.pool.acquire().await?,
        };
        Ok(Reader {
            conn: Some(conn),
            kept: Some((kept.clone(), turn)),
        })
    }
}

impl std::ops::Deref for Reader {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &sqlx::AnyConnection {
        self.conn
            .as_ref()
            .expect("a reader holds its connection until dropped")
    }
}

impl std::ops::DerefMut for Reader {
    fn deref_mut(&mut self) -> &mut sqlx::AnyConnection {
        self.conn
            .as_mut()
            .expect("a reader holds its connection until dropped")
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        // The connection is back before the turn (dropped after this) is.
        if let (Some(conn), Some((kept, _turn))) = (self.conn.take(), &self.kept) {
            kept.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(conn);
        }
    }
}

impl Store {
    /// Connects (creating an SQLite file and its directory if needed) and applies migrations.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        Store::open_waiting(url, DEFAULT_WAIT).await
    }

    /// [`Store::open`], waiting at most `wait` for a busy database (`--db-wait`).
    pub async fn open_waiting(url: &str, wait: Duration) -> Result<Store, StoreError> {
        let store = Store::connect_waiting(url, wait).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects without migrating, creating a missing SQLite file (for tests and tools
    /// that prepare a database).
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Store::connect_waiting(url, DEFAULT_WAIT).await
    }

    /// [`Store::connect`], waiting at most `wait` for a busy database.
    pub async fn connect_waiting(url: &str, wait: Duration) -> Result<Store, StoreError> {
        let at = location::Location::parse(url)?;
        if let Some(dir) = at.file().and_then(Path::parent) {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| StoreError::Connect {
                    place: at.describe(),
                    source: sqlx::Error::Io(e),
                })?;
            }
        }
        Store::connect_to(&at, true, wait).await
    }

    /// Opens a knowledge base that must already exist, at the current schema, without
    /// creating or migrating anything: what every command but `serve` and `migrate` uses.
    /// A missing SQLite file is [`StoreError::Missing`].
    pub async fn open_existing(url: &str) -> Result<Store, StoreError> {
        let at = location::Location::parse(url)?;
        if let Some(file) = at.file() {
            if !file.is_file() {
                return Err(StoreError::Missing(file.display().to_string()));
            }
        }
        let store = Store::connect_to(&at, false, DEFAULT_WAIT).await?;
        store.check_schema(&at).await?;
        Ok(store)
    }

    /// Refuses a database whose schema is not this salve's: none at all (an empty file,
    /// another program's database) or behind (`salve migrate` brings it up).
    async fn check_schema(&self, at: &location::Location) -> Result<(), StoreError> {
        let applied: Result<Option<i64>, sqlx::Error> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(&mut *self.reader().await?)
                .await;
        let needed = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        match applied {
            Err(sqlx::Error::Database(_)) | Ok(None) => Err(StoreError::Schema(format!(
                "{} holds no salve knowledge base (salve serve or salve migrate sets one up)",
                at.describe()
            ))),
            Err(e) => Err(e.into()),
            Ok(Some(v)) if v < needed => Err(StoreError::Schema(format!(
                "{} is at schema version {v} and this salve needs {needed}: run salve migrate",
                at.describe()
            ))),
            Ok(Some(_)) => Ok(()),
        }
    }

    async fn connect_to(
        at: &location::Location,
        create: bool,
        wait: Duration,
    ) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let url = at.url(create);
        let options = AnyConnectOptions::from_str(&url)?;
        let unreachable = |source: sqlx::Error| StoreError::Connect {
            place: at.describe(),
            source,
        };
        if at.is_postgres() {
            // PostgreSQL connections are kept open ahead of need: opening one (connect,
            // authenticate) on a webhook's path cost it up to 100 ms when the engine's
            // work had taken every open connection.
            let whole_statements = Arc::new(AtomicBool::new(true));
            let pool = match pool_options(Backend::Postgres, wait, 10, 10, whole_statements.clone())
                .connect_with(options.clone())
                .await
            {
                Ok(pool) => pool,
                // A pool that cannot connect says only that it timed out; one connection
                // on its own gives a person the reason (refused, no such host, password).
                Err(pooled) => {
                    let single = <sqlx::AnyConnection as sqlx::Connection>::connect_with(&options);
                    return Err(unreachable(
                        match tokio::time::timeout(wait, single).await {
                            Ok(Err(cause)) => cause,
                            Ok(Ok(_)) | Err(_) => pooled,
                        },
                    ));
                }
            };
            return Ok(Store {
                writes: writer::Writer::start(pool.clone(), true, true, whole_statements)?,
                writer: pool.clone(),
                reader: Readers { pool, kept: None },
                wait,
            });
        }
        let writer = pool_options(Backend::SqliteWriter, wait, 1, 1, whole())
            .connect_with(options.clone())
            .await
            .map_err(unreachable)?;
        // An in-memory database exists once per connection: its readers must be the writer,
        // and neither may keep it.
        let in_memory = matches!(at, location::Location::SqliteMemory { .. });
        let reader = if in_memory {
            Readers {
                pool: writer.clone(),
                kept: None,
            }
        } else {
            Readers {
                pool: pool_options(Backend::SqliteReader, wait, SQLITE_READERS, 0, whole())
                    .connect_with(options)
                    .await
                    .map_err(unreachable)?,
                kept: Some(Arc::new(Kept::new(SQLITE_READERS, wait))),
            }
        };
        Ok(Store {
            writes: writer::Writer::start(writer.clone(), false, !in_memory, whole())?,
            writer,
            reader,
            wait,
        })
    }

    /// Runs one unit of work against the database, giving up after the database wait: a
    /// pool wait plus SQLite's busy wait could otherwise add up to twice the bound. Dropped
    /// work's transaction is rolled back, unless its commit was already under way: then the
    /// caller's retry (Alertmanager's, after the 503) folds into what was stored.
    pub async fn within_wait<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.wait, work)
            .await
            .unwrap_or(Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut)))
    }

    /// This replica's writer: what it has committed, and what waits for it (`/metrics`).
    pub fn writer_load(&self) -> writer::WriterLoad {
        self.writes.load()
    }

    /// Applies the migrations in `migrations/` that have not run yet.
    ///
    /// On SQLite they run with temporary files on disk: the writer keeps them in memory
    /// (see `pool_options`), and there SQLite sorts all of a new index's rows in memory,
    /// hundreds of megabytes for an index over a large table.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.writer.acquire().await?;
        let sqlite = conn.backend_name() == "SQLite";
        if sqlite {
            conn.execute("PRAGMA temp_store = DEFAULT").await?;
        }
        let ran = MIGRATOR.run(&mut *conn).await;
        if sqlite {
            conn.execute("PRAGMA temp_store = MEMORY").await?;
        }
        ran?;
        Ok(())
    }

    /// A trivial query: is the database answering? (`/readyz`)
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&mut *self.reader().await?)
            .await?;
        Ok(())
    }

    /// Runs a write in the writer's next batch (see [`writer`]); returns once it is
    /// committed.
    pub(crate) async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(
                &'c mut writer::WriteTx,
            ) -> futures::future::BoxFuture<'c, Result<T, StoreError>>
            + Send
            + 'static,
    {
        self.writes.write(work).await
    }

    /// One statement as a write of its own (binds owned), returning the rows it touched.
    pub(crate) async fn execute_write(
        &self,
        statement: sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> Result<u64, StoreError> {
        self.write(move |tx| {
            Box::pin(async move { Ok(statement.execute(tx.conn()).await?.rows_affected()) })
        })
        .await
    }

    /// Where the query modules read: on SQLite, connections that cannot write, so a read
    /// never waits behind the writer's queue.
    pub(crate) async fn reader(&self) -> Result<Reader, StoreError> {
        self.reader.get().await
    }
}

/// Which kind of connection a pool holds: each is set up differently.
#[derive(Clone, Copy, PartialEq)]
enum Backend {
    Postgres,
    SqliteWriter,
    SqliteReader,
}

/// SQLite's connections have no socket: a statement of any size reaches the database at
/// once.
fn whole() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(true))
}

/// SQLite read connections at most.
const SQLITE_READERS: u32 = 4;

/// How long a PostgreSQL connection may sit idle in the pool before it is checked with a
/// ping as it is handed out.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);

/// A pool of at most `max` connections (`min` kept open), waiting at most `wait` for one.
/// On PostgreSQL, `whole_statements` is cleared for good once a connection opens on which
/// Nagle's algorithm could not be turned off (see [`nodelay::disable_nagle`]).
fn pool_options(
    backend: Backend,
    wait: Duration,
    max: u32,
    min: u32,
    whole_statements: Arc<AtomicBool>,
) -> AnyPoolOptions {
    let busy_ms = wait.as_millis().max(1);
    AnyPoolOptions::new()
        .max_connections(max)
        .min_connections(min)
        .acquire_timeout(wait)
        // sqlx pings every connection it hands out: one more round trip per read, as
        // costly as the read. A SQLite file does not go away under an open connection; a
        // PostgreSQL connection can (a server restart), but one in use a moment ago is
        // alive, so only one idle for a while is checked first. (A dead one that slips
        // through fails its query as unavailable: the caller's 503 or retry, and sqlx
        // drops it on release.)
        .test_before_acquire(false)
        .before_acquire(move |conn, meta| {
            Box::pin(async move {
                if backend == Backend::Postgres && meta.idle_for > IDLE_BEFORE_PING {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .after_connect(move |conn, _meta| {
            let whole_statements = whole_statements.clone();
            Box::pin(async move {
                if backend == Backend::Postgres {
                    if !nodelay::disable_nagle(conn).await? {
                        whole_statements.store(false, Ordering::Relaxed);
                    }
                    return Ok(());
                }
                // WAL lets readers run beside the writer; FULL sync makes a commit (and so
                // a 2xx to Alertmanager) survive power loss; busy_timeout waits for another
                // process's writer (a second salve, `salve migrate`) instead of failing.
                conn.execute("PRAGMA journal_mode = WAL").await?;
                conn.execute("PRAGMA synchronous = FULL").await?;
                let busy = format!("PRAGMA busy_timeout = {busy_ms}");
                conn.execute(sqlx::AssertSqlSafe(busy)).await?;
                conn.execute("PRAGMA foreign_keys = ON").await?;
                match backend {
                    Backend::SqliteReader => {
                        conn.execute("PRAGMA query_only = ON").await?;
                    }
                    // Every write runs in a savepoint of its own within its batch (see
                    // `writer`), and SQLite copies each page a savepoint changes into a
                    // statement journal first: a temporary file once it passes 64 KiB,
                    // so under a storm about 2,000 copies a second went to disk as write
                    // calls beside the WAL's 3,600 frames. That journal only undoes a
                    // savepoint of the open transaction (a crash loses the transaction
                    // anyway and the WAL undoes it), so it need not be a file: in memory
                    // it costs a copy, and its size is bounded by a batch's writes. The
                    // readers keep temporary files on disk: a large sort of theirs may
                    // not fit in memory.
                    Backend::SqliteWriter => {
                        conn.execute("PRAGMA temp_store = MEMORY").await?;
                    }
                    Backend::Postgres => {}
                }
                Ok(())
            })
        })
}

/// The one text form of a time in the database: fixed width, UTC, so text order is time order.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Reads a stored time back.
pub fn parse_timestamp(s: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("time {s:?}: {e}")))
}

/// A new time-ordered id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Row;

    /// Read connections are kept out of their pool between reads; more readers at once
    /// than there are connections must wait their turn, not for a pool that never gets
    /// one back (the pool's wait would run out and every one of them fail).
    #[tokio::test]
    async fn more_readers_at_once_than_connections_all_read() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = Store::open_waiting(&url, Duration::from_millis(500))
            .await
            .unwrap();
        let mut reads = tokio::task::JoinSet::new();
        for _ in 0..4 * SQLITE_READERS {
            let store = store.clone();
            reads.spawn(async move {
                let mut reader = store.reader().await?;
                // Hold the connection across a pause, as a slow read would.
                tokio::time::sleep(Duration::from_millis(100)).await;
                sqlx::query("SELECT 1").execute(&mut *reader).await?;
                Ok::<_, StoreError>(())
            });
        }
        while let Some(read) = reads.join_next().await {
            read.unwrap().unwrap();
        }
        let kept = store.reader.kept.as_ref().unwrap();
        let idle = kept.idle.lock().unwrap().len();
        assert!(idle >= 1 && idle <= SQLITE_READERS as usize, "{idle} kept");
    }

    /// The writer keeps its savepoints' statement journal in memory (no write calls for
    /// it), again once the migrations that opened the store (which sort on disk) are
    /// done; the readers keep temporary files on disk, where a large sort fits.
    #[tokio::test]
    async fn only_the_writer_keeps_temporary_files_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = Store::open(&url).await.unwrap();
        const MEMORY: i64 = 2;
        let writer: i64 = store
            .write(|tx| {
                Box::pin(async move {
                    let row = sqlx::query("PRAGMA temp_store")
                        .fetch_one(tx.conn())
                        .await?;
                    Ok(row.try_get(0)?)
                })
            })
            .await
            .unwrap();
        assert_eq!(writer, MEMORY);
        let row = sqlx::query("PRAGMA temp_store")
            .fetch_one(&mut *store.reader().await.unwrap())
            .await
            .unwrap();
        let reader: i64 = row.try_get(0).unwrap();
        assert_ne!(reader, MEMORY);
    }

    #[test]
    fn timestamps_sort_as_text() {
        let a = timestamp(
            DateTime::parse_from_rfc3339("2026-01-02T03:04:05.1Z")
                .unwrap()
                .to_utc(),
        );
        let b = timestamp(
            DateTime::parse_from_rfc3339("2026-01-02T03:04:05.25Z")
                .unwrap()
                .to_utc(),
        );
        assert_eq!(a, "2026-01-02T03:04:05.100000Z");
        assert!(a < b);
        assert_eq!(parse_timestamp(&a).unwrap().timestamp_subsec_millis(), 100);
    }
}
