//! Group commit: every write of this replica goes through one connection, and the writes
//! waiting together are committed together, one transaction and one sync to disk.
//!
//! Under an alert storm the webhook stores each delivery and the engine records each
//! decision, lock, verdict and state move: several writes per alert, each of which used to
//! be a transaction of its own. On SQLite they queued for its single write lock in its busy
//! handler (sleeps of milliseconds) and each paid an `fsync`; on PostgreSQL each paid a
//! WAL flush and took the audit chain's head row in turn. The writer takes every write
//! waiting when it is free and runs them in one transaction, then commits once and only
//! then answers each caller: a returned write is durable, as before.
//!
//! Two queues feed it. Webhook deliveries ([`Coalesced`]) are stored together: all that
//! wait go in a few multi-row statements. Every other write (the engine's) runs in a
//! savepoint of its own (one that fails, or asks to be discarded, is rolled back alone).
//! A batch is a turn of the engine's writes, cut short after 1 ms when deliveries wait
//! (at once when several do), then every delivery waiting by then, in one transaction: a
//! delivery that arrives while the engine's writes run is committed with them, one sync
//! to disk for both, so a webhook waits for little of the engine's work and the engine
//! keeps moving during a flood of webhooks.
//!
//! The audit chain's head is read once per batch and written once at its end ("chain per
//! batch"): events still form one unbroken line that `salve audit verify` checks link by
//! link, and unrelated writes no longer update the same row one after another. On
//! PostgreSQL the head row is locked first in every batch, so batches of several replicas
//! queue on one lock in one order and cannot deadlock over the rows they touch after it.
//! Each remediation's last timeline number is remembered from committed batches, so an
//! append need not read it first (see [`WriteTx::next_seq`]).
//!
//! Every statement is a round trip to the database (on SQLite, to sqlx's worker thread),
//! and the writer is one line of them: fewer statements per alert is what makes it faster.
//! So statements go together where they can: a batch of the engine's writes begins, reads
//! the chain's head and opens its first savepoint in one round trip, and writes the head
//! and commits in one; the last savepoint is not released before the commit (the commit
//! keeps it). And the writer must not be kept waiting at each answer: on SQLite it has a
//! thread of its own (see [`Writer::start`]).

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use sqlx::pool::PoolConnection;
use sqlx::{Any as AnyDb, AnyConnection, AnyPool, Executor, Row};
use tokio::sync::{mpsc, oneshot};

use super::StoreError;

/// Writes committed in one transaction at most.
const MAX_BATCH: usize = 256;

/// Other writes (the engine's) committed in one transaction at most: enough to spread a
/// commit's cost over many.
const MAX_JOBS: usize = 32;

/// How long a batch of other writes runs on while deliveries wait: then the deliveries
/// join it and it commits, so a webhook's answer waits for at most this much of the
/// engine's work (and the commit), and in a flood of webhooks the engine still gets a
/// good share of the writer (a fixed few writes per turn starved it: a storm's decisions
/// trailed its acknowledgements by seconds). 2 ms measured worse for acknowledgements
/// (p50 7.4 against 5.1 ms at 1,000 webhooks/s) and no better for decisions.
const JOBS_TURN_BESIDE_DELIVERIES: Duration = Duration::from_millis(1);

/// How many waiting deliveries end a turn of the engine's writes before its time is up.
/// In a flood of webhooks many wait at once, and each waited out the whole turn: cut
/// once four wait, single-alert webhooks on SQLite went from 3,430–4,170 to 5,680–6,500
/// req/s (on PostgreSQL from 3,050–3,440 to 3,660–4,630). In a storm paced at an alert a
/// millisecond few wait at a time, so the engine keeps its full turns and decides as fast
/// as before (1,000 alerts decided in 1.03–1.08 s against 1.03–1.05 s). A shorter turn
/// instead (250 µs) gained less (4,810–5,170 req/s) and slowed that storm (1.09–1.31 s).
/// The price: in a flood that saturates the writer the engine gets less of it (by the end
/// of a 3 s flood about half as many alerts were decided); it decides the backlog once the
/// flood eases.
const DELIVERIES_END_THE_TURN: usize = 4;

/// The open transaction a write runs in, with the batch's view of the audit chain's head.
pub struct WriteTx {
    conn: PoolConnection<AnyDb>,
    postgres: bool,
    /// The chain's head as this batch has moved it: `(seq, hash)` of its last event.
    chain: Option<(i64, String)>,
    chain_moved: bool,
    discard: bool,
    seqs: Seqs,
    /// Statements that must run before the batch's next one and have not: on SQLite a
    /// delivery batch's `BEGIN IMMEDIATE` (or savepoint), left for the store to send in
    /// the same string as its first statement (see [`Coalesced::SENDS_OPENING`]).
    opening: Option<&'static str>,
    /// See [`WriteTx::sends_whole_statements`].
    whole_statements: bool,
}

/// Each remediation's last timeline number, so that an append need not read it first.
/// What committed batches wrote is kept across batches (`known`, shared with the writer
/// task); what this batch and this write wrote so far count only once they are kept. A
/// number another replica moved on since is found stale by the append that collides
/// with it, which then reads it.
#[derive(Default)]
struct Seqs {
    known: Arc<std::sync::Mutex<HashMap<String, i64>>>,
    batch: HashMap<String, i64>,
    write: HashMap<String, i64>,
}

/// Remediations whose last number `Seqs::known` keeps at most (a miss costs one read).
const KNOWN_SEQS: usize = 4096;

impl Seqs {
    fn last(&self, remediation_id: &str) -> Option<i64> {
        self.write
            .get(remediation_id)
            .or_else(|| self.batch.get(remediation_id))
            .copied()
            .or_else(|| {
                let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
                known.get(remediation_id).copied()
            })
    }

    /// The write's numbers are kept (it was).
    fn keep_write(&mut self) {
        self.batch.extend(self.write.drain());
    }

    /// The batch committed: its numbers are known.
    fn keep_batch(&mut self) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() + self.batch.len() > KNOWN_SEQS {
            known.clear();
        }
        known.extend(self.batch.drain());
    }

    fn forget(&mut self, remediation_id: &str) {
        self.write.remove(remediation_id);
        self.batch.remove(remediation_id);
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.remove(remediation_id);
    }
}

impl WriteTx {
    /// A batch's transaction on `conn`, begun (or, with `opening`, about to be), with the
    /// chain's head as read.
    fn opened(
        conn: PoolConnection<AnyDb>,
        postgres: bool,
        chain: Option<(i64, String)>,
        db: &Db,
        opening: Option<&'static str>,
    ) -> WriteTx {
        WriteTx {
            conn,
            postgres,
            chain,
            chain_moved: false,
            discard: false,
            seqs: Seqs {
                known: db.seqs.clone(),
                ..Seqs::default()
            },
            opening,
            whole_statements: db.whole_statements.load(Ordering::Relaxed),
        }
    }

    /// Whether a statement of any size reaches the database at once: on SQLite (no
    /// socket), and on PostgreSQL where Nagle's algorithm is off on every connection the
    /// pool opened. Otherwise one larger than a TLS record (16 KB) is sent in two writes,
    /// and the second waits up to 40 ms for the server's delayed acknowledgement of the
    /// first.
    pub fn sends_whole_statements(&self) -> bool {
        self.whole_statements
    }

    /// Whether the batch runs on PostgreSQL (where a statement string with bound values
    /// holds one statement; SQLite runs several).
    pub fn is_postgres(&self) -> bool {
        self.postgres
    }

    /// The connection, inside the batch's transaction.
    pub fn conn(&mut self) -> &mut AnyConnection {
        debug_assert!(
            self.opening.is_none(),
            "a statement would run before the batch's opening: {:?}",
            self.opening
        );
        &mut self.conn
    }

    /// Takes the statements that must precede the next one, if any are left to the
    /// caller: it sends them first in the string of its next statement (SQLite runs a
    /// string's statements in order), one round trip instead of two.
    pub fn take_opening(&mut self) -> Option<&'static str> {
        self.opening.take()
    }

    /// Rolls this write back when it returns, though it returns `Ok` (it found it must not
    /// apply, after writing part of itself).
    pub fn discard(&mut self) {
        self.discard = true;
    }

    /// The audit chain's head before the next event: `(seq, hash)` of the last one (read
    /// as the batch began, or now if it was not, then moved by its appends).
    pub async fn chain_head(&mut self) -> Result<(i64, String), StoreError> {
        if let Some(head) = &self.chain {
            return Ok(head.clone());
        }
        let row = sqlx::query("SELECT seq, hash FROM chain_head WHERE id = 1")
            .fetch_one(&mut *self.conn)
            .await?;
        let head: (i64, String) = (row.try_get("seq")?, row.try_get("hash")?);
        self.chain = Some(head.clone());
        Ok(head)
    }

    /// The number of a remediation's next timeline event: one after its last, as this
    /// writer last wrote it, or as read.
    pub async fn next_seq(&mut self, remediation_id: &str) -> Result<i64, StoreError> {
        if let Some(last) = self.seqs.last(remediation_id) {
            return Ok(last + 1);
        }
        let last: i64 = sqlx::query(
            "SELECT COALESCE(MAX(seq), 0) AS last FROM remediation_events WHERE remediation_id = $1",
        )
        .bind(remediation_id)
        .fetch_one(&mut *self.conn)
        .await?
        .try_get("last")?;
        Ok(last + 1)
    }

    /// Records that `seq` is now the remediation's last timeline number (0: it has none).
    pub fn seq_written(&mut self, remediation_id: &str, seq: i64) {
        self.seqs.write.insert(remediation_id.to_owned(), seq);
    }

    /// The remediation's last number as this writer knew it was taken by someone else:
    /// the next [`WriteTx::next_seq`] reads it.
    pub fn seq_stale(&mut self, remediation_id: &str) {
        self.seqs.forget(remediation_id);
    }

    /// Moves the chain's head to the event just appended (written at the batch's end).
    pub fn chain_moved_to(&mut self, seq: i64, hash: String) {
        self.chain = Some((seq, hash));
        self.chain_moved = true;
    }

    async fn run(&mut self, sql: &'static str) -> Result<(), StoreError> {
        self.conn.execute(sql).await?;
        Ok(())
    }
}

/// A write, type-erased so that writes of every kind share one queue.
type Work = Box<
    dyn for<'c> FnOnce(&'c mut WriteTx) -> BoxFuture<'c, Result<Box<dyn Any + Send>, StoreError>>
        + Send,
>;

struct Job {
    work: Work,
    answer: oneshot::Sender<Result<Box<dyn Any + Send>, StoreError>>,
}

/// Writes of one kind that arrive in floods (the webhook's deliveries), stored together:
/// a batch of them is a few multi-row statements, not a savepoint and a round trip or two
/// per item.
pub trait Coalesced: Send + Sync + 'static {
    /// What one caller asks to store.
    type Item: Send + Sync + 'static;
    /// What the caller learns once it is stored.
    type Stored: Send + 'static;

    /// Whether [`Coalesced::store`] sends what [`WriteTx::take_opening`] gives before its
    /// first statement, as it then must: on SQLite the writer leaves it the batch's
    /// `BEGIN IMMEDIATE` (or savepoint) to send with its first insert.
    const SENDS_OPENING: bool = false;

    /// Stores `items` in this order, as if one after the other: one result per item. An
    /// error fails them all; the writer then stores each alone, so one bad item cannot
    /// refuse the others.
    fn store<'c>(
        tx: &'c mut WriteTx,
        items: &'c [Self::Item],
    ) -> BoxFuture<'c, Result<Vec<Self::Stored>, StoreError>>;
}

struct Flood<C: Coalesced> {
    item: C::Item,
    answer: oneshot::Sender<Result<C::Stored, StoreError>>,
    committed: Option<Committed<C>>,
}

/// What must follow a coalesced item's commit whether or not its caller still waits
/// (handing new incidents to the engine): the writer runs it before it answers.
pub type Committed<C> = Box<dyn FnOnce(&<C as Coalesced>::Stored) + Send>;

/// Hands writes to the writer task; cheap to clone. The task ends with the last handle.
pub struct Writer<C: Coalesced> {
    jobs: mpsc::Sender<Job>,
    floods: mpsc::Sender<Flood<C>>,
    tally: Arc<Tally>,
}

/// What the writer task has committed so far.
#[derive(Default)]
struct Tally {
    /// Transactions committed (each one a batch of writes).
    batches: AtomicU64,
    /// The engine's writes run in committed transactions (one whose savepoint was undone
    /// counts: it ran).
    engine_writes: AtomicU64,
    /// Webhook deliveries stored in committed transactions.
    deliveries: AtomicU64,
    /// Nanoseconds the writer spent on each part of its work (see [`WriterBusy`]).
    engine_nanos: AtomicU64,
    deliveries_nanos: AtomicU64,
    commit_nanos: AtomicU64,
}

impl Tally {
    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Adds the time since `since` to `counter`, and returns now (where the next part starts).
    fn spent(counter: &AtomicU64, since: Instant) -> Instant {
        let now = Instant::now();
        let nanos = u64::try_from((now - since).as_nanos()).unwrap_or(u64::MAX);
        counter.fetch_add(nanos, Ordering::Relaxed);
        now
    }

    fn busy(&self) -> WriterBusy {
        let read = |c: &AtomicU64| Duration::from_nanos(c.load(Ordering::Relaxed));
        WriterBusy {
            engine_writes: read(&self.engine_nanos),
            deliveries: read(&self.deliveries_nanos),
            commits: read(&self.commit_nanos),
        }
    }
}

/// Where the writer's time went, added up since it started: under load, whether the
/// engine's writes, storing deliveries or the commits (the writes to disk and their sync)
/// hold the line up. What is not counted here the writer spent waiting for work, taking it
/// off its queues, or answering its callers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterBusy {
    /// Opening a batch for the engine's writes, and running them (savepoints included).
    pub engine_writes: Duration,
    /// Opening a batch of deliveries (or their savepoint), and storing them.
    pub deliveries: Duration,
    /// Ending the batches: the audit chain's head, and the commit with its sync to disk
    /// (on SQLite also the checkpoints of its log that a commit runs); or the rollback.
    pub commits: Duration,
}

/// What a writer has committed, and what waits for it: in a storm, a backlog that grows
/// scrape after scrape is a writer that cannot keep up, and writes per batch say how well
/// it groups them (so `/metrics` shows both).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterLoad {
    /// Transactions committed.
    pub batches: u64,
    /// The engine's writes run in committed transactions.
    pub engine_writes: u64,
    /// Webhook deliveries stored in committed transactions.
    pub deliveries: u64,
    /// The engine's writes waiting in the writer's queue.
    pub engine_writes_waiting: usize,
    /// Deliveries waiting in the writer's queue.
    pub deliveries_waiting: usize,
    /// Where the writer's time went.
    pub busy: WriterBusy,
}

impl<C: Coalesced> Clone for Writer<C> {
    fn clone(&self) -> Self {
        Writer {
            jobs: self.jobs.clone(),
            floods: self.floods.clone(),
            tally: self.tally.clone(),
        }
    }
}

impl<C: Coalesced> std::fmt::Debug for Writer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("batches", &self.batches())
            .finish_non_exhaustive()
    }
}

impl<C: Coalesced> Writer<C> {
    /// Starts the writer on `pool` (it uses one connection of it at a time, and keeps it
    /// while writes wait if `keep`: not when readers share a one-connection pool).
    ///
    /// On SQLite the writer runs on a thread of its own, with a runtime of its own. Each of
    /// its statements is a round trip to sqlx's thread for the connection, and as a task of
    /// the shared runtime it waited, at every answer, for its turn behind the webhooks' and
    /// the engine's tasks: in a flood of webhooks an engine write took about 780 µs of the
    /// writer's time there, and about 320 µs on its own thread (back to back, a storm of
    /// 1,000 alerts was decided in 1.2–1.8 s instead of 1.7–4.0 s). PostgreSQL's
    /// connections are driven by the shared runtime (the readers' pool is the writer's),
    /// so there the writer stays a task of it; moved to its own thread it measured no
    /// better.
    ///
    /// `whole_statements` says whether the pool's connections send a statement of any
    /// size at once (see [`WriteTx::sends_whole_statements`]); the pool keeps it up to date.
    pub fn start(
        pool: AnyPool,
        postgres: bool,
        keep: bool,
        whole_statements: Arc<AtomicBool>,
    ) -> Result<Writer<C>, StoreError> {
        Self::start_with_turn(
            pool,
            postgres,
            keep,
            whole_statements,
            JOBS_TURN_BESIDE_DELIVERIES,
        )
    }

    /// [`Writer::start`], with the engine's turn beside waiting deliveries `turn` long
    /// (a test makes it long, to see what else ends it).
    fn start_with_turn(
        pool: AnyPool,
        postgres: bool,
        keep: bool,
        whole_statements: Arc<AtomicBool>,
        turn: Duration,
    ) -> Result<Writer<C>, StoreError> {
        let (jobs, job_queue) = mpsc::channel(4 * MAX_BATCH);
        let (floods, flood_queue) = mpsc::channel(4 * MAX_BATCH);
        let tally = Arc::new(Tally::default());
        let queues = Queues {
            jobs: job_queue,
            floods: flood_queue,
        };
        let db = Db {
            pool,
            whole_statements,
            postgres,
            seqs: Arc::default(),
            held: None,
            keep,
            turn,
        };
        let writing = write_batches(db, queues, tally.clone());
        if postgres {
            tokio::spawn(writing);
        } else {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(StoreError::Writer)?;
            std::thread::Builder::new()
                .name("salve-writer".into())
                .spawn(move || runtime.block_on(writing))
                .map_err(StoreError::Writer)?;
        }
        Ok(Writer {
            jobs,
            floods,
            tally,
        })
    }

    /// How many batches were committed so far.
    pub fn batches(&self) -> u64 {
        self.tally.batches.load(Ordering::Relaxed)
    }

    /// What this writer has committed so far, and what waits in its queues now.
    pub fn load(&self) -> WriterLoad {
        let waiting = |max: usize, free: usize| max.saturating_sub(free);
        WriterLoad {
            batches: self.batches(),
            engine_writes: self.tally.engine_writes.load(Ordering::Relaxed),
            deliveries: self.tally.deliveries.load(Ordering::Relaxed),
            engine_writes_waiting: waiting(self.jobs.max_capacity(), self.jobs.capacity()),
            deliveries_waiting: waiting(self.floods.max_capacity(), self.floods.capacity()),
            busy: self.tally.busy(),
        }
    }

    /// Runs `work` in the next batch; returns once that batch is committed. A caller that
    /// stops waiting before its batch begins is not written at all; one that stops
    /// waiting later is written all the same.
    pub async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut WriteTx) -> BoxFuture<'c, Result<T, StoreError>> + Send + 'static,
    {
        let work: Work = Box::new(move |tx| {
            Box::pin(async move { work(tx).await.map(|t| Box::new(t) as Box<dyn Any + Send>) })
        });
        let (answer, answered) = oneshot::channel();
        let job = Job { work, answer };
        let out = ask(&self.jobs, job, answered).await?;
        out.downcast::<T>()
            .map(|t| *t)
            .map_err(|_| StoreError::Corrupt("a write answered with the wrong type".into()))
    }

    /// Stores `item` with the others of its kind waiting now (see [`Coalesced`]); returns
    /// once they are committed. Like [`Writer::write`]: not stored if the caller stopped
    /// waiting before its batch began. Once it is committed, `committed` runs on what was
    /// stored, in the writer, before the caller is answered: so it runs even if the caller
    /// stops waiting at that very moment (its answer sent, but never read).
    pub async fn store(
        &self,
        item: C::Item,
        committed: Option<Committed<C>>,
    ) -> Result<C::Stored, StoreError> {
        let (answer, answered) = oneshot::channel();
        let flood = Flood {
            item,
            answer,
            committed,
        };
        ask(&self.floods, flood, answered).await
    }
}

/// Queues `request` for the writer task and waits for its answer (`stopped` if the task
/// is gone first).
async fn ask<R, T>(
    queue: &mpsc::Sender<R>,
    request: R,
    answered: oneshot::Receiver<Result<T, StoreError>>,
) -> Result<T, StoreError> {
    if queue.send(request).await.is_err() {
        return Err(stopped());
    }
    answered.await.unwrap_or_else(|_| Err(stopped()))
}

/// Answers a caller (who may have stopped waiting) with its write's result.
fn answer<T>(caller: oneshot::Sender<Result<T, StoreError>>, result: Result<T, StoreError>) {
    let _ = caller.send(result);
}

/// The writer is gone (salve is stopping): a retryable answer.
fn stopped() -> StoreError {
    StoreError::Unavailable(sqlx::Error::PoolClosed)
}

/// Where the writer task writes, and what it keeps between batches.
struct Db {
    pool: AnyPool,
    /// Whether the pool's connections send a statement of any size at once (see
    /// [`WriteTx::sends_whole_statements`]).
    whole_statements: Arc<AtomicBool>,
    postgres: bool,
    seqs: Arc<std::sync::Mutex<HashMap<String, i64>>>,
    /// The connection of the last batch, kept while more writes wait: sqlx pings a
    /// connection each time it goes back to the pool (a round trip per batch for nothing).
    /// Given back when the queues run empty, so `salve migrate` or a test can have it.
    held: Option<PoolConnection<AnyDb>>,
    /// Whether to keep it (not when readers share a one-connection pool with the writer).
    keep: bool,
    /// How long a turn of the engine's writes runs on while deliveries wait.
    turn: std::time::Duration,
}

/// The writer task's two queues: coalesced items (webhook deliveries) and other writes.
struct Queues<C: Coalesced> {
    jobs: mpsc::Receiver<Job>,
    floods: mpsc::Receiver<Flood<C>>,
}

async fn write_batches<C: Coalesced>(mut db: Db, mut queues: Queues<C>, tally: Arc<Tally>) {
    let mut floods = Vec::with_capacity(MAX_BATCH);
    let mut jobs = Vec::with_capacity(MAX_JOBS);
    loop {
        // Wait for the first write, unless some are left from the last turn.
        if floods.is_empty() && jobs.is_empty() {
            if queues.floods.is_empty() && queues.jobs.is_empty() {
                db.held = None;
            }
            tokio::select! {
                biased;
                n = queues.floods.recv_many(&mut floods, MAX_BATCH) => if n == 0 { break },
                n = queues.jobs.recv_many(&mut jobs, MAX_JOBS) => if n == 0 { break },
            }
        }
        take_waiting(&mut queues.jobs, &mut jobs, MAX_JOBS);
        // A caller that stopped waiting before its batch began (a task cancelled at
        // shutdown) is not written: it will be decided again.
        jobs.retain(|job| !job.answer.is_closed());
        if jobs.is_empty() {
            let (items, callers) = take_deliveries(&mut queues.floods, &mut floods);
            if !items.is_empty() {
                store_floods::<C>(&mut db, items, callers, &tally).await;
            }
        } else {
            commit_cycle(&mut db, &mut queues.floods, &mut floods, &mut jobs, &tally).await;
        }
    }
}

/// Moves what waits in `queue` into `taken`, up to `limit` in all, without waiting.
fn take_waiting<T>(queue: &mut mpsc::Receiver<T>, taken: &mut Vec<T>, limit: usize) {
    while taken.len() < limit {
        match queue.try_recv() {
            Ok(t) => taken.push(t),
            Err(_) => break,
        }
    }
}

/// Every delivery taken or waiting now (up to a batch), but those whose caller stopped
/// waiting: what to store, and whom to answer.
fn take_deliveries<C: Coalesced>(
    waiting: &mut mpsc::Receiver<Flood<C>>,
    floods: &mut Vec<Flood<C>>,
) -> (Vec<C::Item>, Vec<FloodCaller<C>>) {
    take_waiting(waiting, floods, MAX_BATCH);
    floods
        .drain(..)
        .filter(|f| !f.answer.is_closed())
        .map(|f| (f.item, (f.answer, f.committed)))
        .unzip()
}

/// One transaction: a turn of the engine's writes (cut short once its time is up and
/// deliveries wait, or once [`DELIVERIES_END_THE_TURN`] wait; the rest run next), then
/// every delivery waiting by then, committed once. A delivery that arrives while the
/// engine's writes run is committed with them, one sync to disk for both, rather than
/// after their commit in a transaction of its own.
async fn commit_cycle<C: Coalesced>(
    db: &mut Db,
    waiting: &mut mpsc::Receiver<Flood<C>>,
    floods: &mut Vec<Flood<C>>,
    jobs: &mut Vec<Job>,
    tally: &Tally,
) {
    let started = Instant::now();
    let mut tx = match begin(db, Opening::Writes(jobs.len())).await {
        Ok(tx) => tx,
        Err(e) => {
            Tally::spent(&tally.engine_nanos, started);
            let ran = jobs.len();
            return answer_jobs(jobs, ran, Err(e), tally);
        }
    };
    let turn_ends = Instant::now() + db.turn;
    let taken = floods.len();
    let over = || {
        let deliveries = taken + waiting.len();
        deliveries >= DELIVERIES_END_THE_TURN || (deliveries > 0 && Instant::now() >= turn_ends)
    };
    let ran_jobs = run_jobs(&mut tx, jobs, over).await;
    let jobs_ended = Tally::spent(&tally.engine_nanos, started);
    let (results, ran) = match ran_jobs {
        Ok((results, Ending::Commit)) => {
            let ran = results.len();
            (results, ran)
        }
        Ok((results, Ending::RollBack)) => {
            // A lone write that failed or asked to be discarded: the transaction was its
            // own. The deliveries go next.
            let ended = end(db, tx, Ending::RollBack).await.map(|()| results);
            Tally::spent(&tally.commit_nanos, jobs_ended);
            return answer_jobs(jobs, 1, ended, tally);
        }
        Err(e) => {
            let e = abort(db, tx, e).await;
            Tally::spent(&tally.commit_nanos, jobs_ended);
            let ran = jobs.len();
            return answer_jobs(jobs, ran, Err(e), tally);
        }
    };
    // Every delivery waiting by now, in a savepoint: if storing them together fails,
    // the engine's writes still commit, and the deliveries are stored each alone after.
    let (items, callers) = take_deliveries(waiting, floods);
    let (stored, deliveries_stored) = match items.is_empty() {
        true => (Ok(Vec::new()), jobs_ended),
        false => {
            let stored = store_in_savepoint::<C>(&mut tx, &items).await;
            (stored, Tally::spent(&tally.deliveries_nanos, jobs_ended))
        }
    };
    let ended = match stored {
        // The connection failed under them: nothing of the transaction is sure.
        Err(e) if e.is_transient() => Err(abort(db, tx, e).await),
        stored => end(db, tx, Ending::Commit).await.map(|()| stored),
    };
    Tally::spent(&tally.commit_nanos, deliveries_stored);
    match ended {
        Ok(stored) => {
            Tally::add(&tally.engine_writes, ran);
            if let Ok(stored) = &stored {
                Tally::add(&tally.deliveries, stored.len());
            }
            answer_jobs(jobs, ran, Ok(results), tally);
            answer_floods::<C>(db, items, callers, stored, tally).await;
        }
        Err(e) => {
            fail_jobs(jobs, ran, &e);
            answer_floods::<C>(db, items, callers, Err(e), tally).await;
        }
    }
}

/// Stores coalesced items inside the open transaction, in a savepoint that a failure
/// rolls back (a transient failure is returned as is: the transaction is lost). Kept,
/// it is left open for the commit that must follow.
async fn store_in_savepoint<C: Coalesced>(
    tx: &mut WriteTx,
    items: &[C::Item],
) -> Result<Vec<C::Stored>, StoreError> {
    const SAVEPOINT: &str = "SAVEPOINT salve_deliveries";
    if C::SENDS_OPENING && !tx.postgres {
        tx.opening = Some(SAVEPOINT);
    } else {
        tx.run(SAVEPOINT).await?;
    }
    let chain_before = (tx.chain.clone(), tx.chain_moved);
    match store_each::<C>(tx, items).await {
        Ok(stored) => {
            // Left open: the commit that follows keeps it.
            tx.seqs.keep_write();
            Ok(stored)
        }
        Err(e) if e.is_transient() => Err(e),
        Err(e) => {
            tx.seqs.write.clear();
            (tx.chain, tx.chain_moved) = chain_before;
            sqlx::raw_sql(
                "ROLLBACK TO SAVEPOINT salve_deliveries; RELEASE SAVEPOINT salve_deliveries",
            )
            .execute(tx.conn())
            .await?;
            Err(e)
        }
    }
}

/// Stores a batch of coalesced items in one transaction and answers each.
async fn store_floods<C: Coalesced>(
    db: &mut Db,
    items: Vec<C::Item>,
    callers: Vec<FloodCaller<C>>,
    tally: &Tally,
) {
    let stored = store_together::<C>(db, &items, tally).await;
    if stored.is_ok() {
        Tally::add(&tally.batches, 1);
        Tally::add(&tally.deliveries, items.len());
    }
    answer_floods::<C>(db, items, callers, stored, tally).await;
}

/// A flood's caller: where its answer goes, and what must follow its commit.
type FloodCaller<C> = (
    oneshot::Sender<Result<<C as Coalesced>::Stored, StoreError>>,
    Option<Committed<C>>,
);

/// Answers each caller of a batch of coalesced items with what storing them together
/// gave. If that failed for a reason that is not transient, each is stored alone, so that
/// one bad item is refused alone.
async fn answer_floods<C: Coalesced>(
    db: &mut Db,
    items: Vec<C::Item>,
    callers: Vec<FloodCaller<C>>,
    stored: Result<Vec<C::Stored>, StoreError>,
    tally: &Tally,
) {
    let answers = match stored {
        Ok(stored) => stored.into_iter().map(Ok).collect(),
        Err(e) if e.is_transient() || items.len() == 1 => {
            items.iter().map(|_| Err(batch_failed(&e))).collect()
        }
        Err(_) => {
            let mut answers = Vec::with_capacity(items.len());
            for item in &items {
                let alone = store_together::<C>(db, std::slice::from_ref(item), tally).await;
                if alone.is_ok() {
                    Tally::add(&tally.batches, 1);
                    Tally::add(&tally.deliveries, 1);
                }
                answers.push(alone.and_then(|mut stored| {
                    stored
                        .pop()
                        .ok_or_else(|| StoreError::Corrupt("a stored item had no result".into()))
                }));
            }
            answers
        }
    };
    for ((caller, committed), result) in callers.into_iter().zip(answers) {
        if let (Ok(stored), Some(then)) = (&result, committed) {
            then(stored);
        }
        answer(caller, result);
    }
}

/// One transaction storing `items`, committed; one result per item.
async fn store_together<C: Coalesced>(
    db: &mut Db,
    items: &[C::Item],
    tally: &Tally,
) -> Result<Vec<C::Stored>, StoreError> {
    let opening = Opening::Deliveries {
        store_sends_it: C::SENDS_OPENING,
    };
    let started = Instant::now();
    let mut tx = match begin(db, opening).await {
        Ok(tx) => tx,
        Err(e) => {
            Tally::spent(&tally.deliveries_nanos, started);
            return Err(e);
        }
    };
    let stored = store_each::<C>(&mut tx, items).await;
    let stored_at = Tally::spent(&tally.deliveries_nanos, started);
    let ended = match stored {
        Ok(stored) => end(db, tx, Ending::Commit).await.map(|()| stored),
        Err(e) => Err(abort(db, tx, e).await),
    };
    Tally::spent(&tally.commit_nanos, stored_at);
    ended
}

/// Stores `items` in the open transaction: one result per item, or an error.
async fn store_each<C: Coalesced>(
    tx: &mut WriteTx,
    items: &[C::Item],
) -> Result<Vec<C::Stored>, StoreError> {
    let stored = C::store(tx, items).await;
    // A store that failed before its first statement did not send the opening left to
    // it: it is sent now, so that the transaction (or savepoint) the caller ends exists.
    // One that succeeded without sending it broke its word: whatever it wrote ran
    // outside the batch's transaction, and the batch is refused.
    if let Some(opening) = tx.opening.take() {
        tx.run(opening).await?;
        if stored.is_ok() {
            let unsent = "a batch's store did not send the opening left to it";
            return Err(StoreError::Corrupt(unsent.into()));
        }
    }
    let stored = stored?;
    if stored.len() != items.len() {
        let wrong = "a batch answered for the wrong number of items";
        return Err(StoreError::Corrupt(wrong.into()));
    }
    Ok(stored)
}

/// Answers each of the first `ran` writes with its result, or all of them with the
/// batch's failure; the rest wait for the next batch.
fn answer_jobs(
    jobs: &mut Vec<Job>,
    ran: usize,
    answers: Result<Results, StoreError>,
    tally: &Tally,
) {
    match answers {
        Ok(results) => {
            Tally::add(&tally.batches, 1);
            for (job, result) in jobs.drain(..ran).zip(results) {
                answer(job.answer, result);
            }
        }
        Err(e) => fail_jobs(jobs, ran, &e),
    }
}

/// Answers each of the first `ran` writes that their batch failed.
fn fail_jobs(jobs: &mut Vec<Job>, ran: usize, e: &StoreError) {
    for job in jobs.drain(..ran) {
        let _ = job.answer.send(Err(batch_failed(e)));
    }
}

/// What each write of a failed batch is told: retryable if the failure was.
fn batch_failed(e: &StoreError) -> StoreError {
    let cause = sqlx::Error::Protocol(format!("the batch holding this write failed: {e}"));
    if e.is_transient() {
        StoreError::Unavailable(cause)
    } else {
        StoreError::Query(cause)
    }
}

/// What a batch is about to run, which decides how it begins.
#[derive(Clone, Copy)]
enum Opening {
    /// Webhook deliveries alone: they do not touch the audit chain. On SQLite, if their
    /// store sends the opening itself ([`Coalesced::SENDS_OPENING`]), `BEGIN IMMEDIATE` is
    /// left to it.
    Deliveries { store_sends_it: bool },
    /// This many of the engine's writes (most append to the audit chain).
    Writes(usize),
}

/// Opens a batch's transaction, on the connection kept from the last batch if there is one.
/// For the engine's writes it reads the audit chain's head and opens the first write's
/// savepoint (when several will run) in the same round trip. On PostgreSQL every batch
/// reads the head, to lock it first: one lock, one order, no deadlock.
async fn begin(db: &mut Db, opening: Opening) -> Result<WriteTx, StoreError> {
    let postgres = db.postgres;
    let mut conn = match db.held.take() {
        Some(conn) => conn,
        None => db.pool.acquire().await?,
    };
    // SQLite takes the write lock at once (another process, `salve migrate` say, may hold
    // it: busy_timeout waits), rather than fail to upgrade a read later.
    let sql = match (postgres, opening) {
        (false, Opening::Deliveries { store_sends_it }) => {
            if store_sends_it {
                return Ok(WriteTx::opened(
                    conn,
                    postgres,
                    None,
                    db,
                    Some("BEGIN IMMEDIATE"),
                ));
            }
            "BEGIN IMMEDIATE"
        }
        (true, Opening::Deliveries { .. } | Opening::Writes(..=1)) => {
            "BEGIN; SELECT seq, hash FROM chain_head WHERE id = 1 FOR UPDATE"
        }
        (true, Opening::Writes(_)) => {
            "BEGIN; SELECT seq, hash FROM chain_head WHERE id = 1 FOR UPDATE; SAVEPOINT salve_write"
        }
        (false, Opening::Writes(..=1)) => {
            "BEGIN IMMEDIATE; SELECT seq, hash FROM chain_head WHERE id = 1"
        }
        (false, Opening::Writes(_)) => {
            "BEGIN IMMEDIATE; SELECT seq, hash FROM chain_head WHERE id = 1; SAVEPOINT salve_write"
        }
    };
    let reads_head = postgres || matches!(opening, Opening::Writes(_));
    // Statements given as a plain string are prepared once and kept (on SQLite; on
    // PostgreSQL, without bound values, they go as one simple query).
    let head = async {
        let rows = conn.fetch_all(sql).await?;
        match (rows.last(), reads_head) {
            (_, false) => Ok(None),
            (Some(row), true) => Ok(Some((row.try_get("seq")?, row.try_get("hash")?))),
            (None, true) => Err(StoreError::Corrupt(
                "the audit chain's head row is missing".into(),
            )),
        }
    }
    .await;
    match head {
        Ok(chain) => Ok(WriteTx::opened(conn, postgres, chain, db, None)),
        // Whether the transaction began is not known: `roll_back` undoes what did, and
        // closes a connection that had none to undo (its state is not known either).
        Err(e) => Err(roll_back(db, conn, e).await),
    }
}

/// Ends a batch's transaction as its writes asked; the connection is kept for the next.
async fn end(db: &mut Db, mut tx: WriteTx, ending: Ending) -> Result<(), StoreError> {
    let ended = match ending {
        Ending::Commit => finish(&mut tx).await,
        // A lone write that failed or asked to be discarded: its transaction was its own.
        Ending::RollBack => tx.run("ROLLBACK").await,
    };
    match ended {
        Ok(()) => {
            db.held = db.keep.then_some(tx.conn);
            Ok(())
        }
        Err(e) => Err(abort(db, tx, e).await),
    }
}

/// Rolls a failed batch back and returns why it failed. A connection whose rollback
/// failed is closed: its state is unknown, so it must not be used again.
async fn abort(db: &mut Db, tx: WriteTx, why: StoreError) -> StoreError {
    roll_back(db, tx.conn, why).await
}

/// [`abort`] on the bare connection.
async fn roll_back(db: &mut Db, mut conn: PoolConnection<AnyDb>, why: StoreError) -> StoreError {
    if conn.execute("ROLLBACK").await.is_err() {
        let _ = conn.close().await;
    } else {
        db.held = db.keep.then_some(conn);
    }
    why
}

/// How a batch's transaction ends once its writes ran.
enum Ending {
    Commit,
    RollBack,
}

type Results = Vec<Result<Box<dyn Any + Send>, StoreError>>;

/// Each job in a savepoint of its own (a lone job needs none: the transaction is its own;
/// [`begin`] opened the first), until the batch's jobs run out or `over` says its turn is:
/// one result per job that ran. Ending one savepoint and opening the next is one round
/// trip to the database; the last is left open for the commit.
async fn run_jobs(
    tx: &mut WriteTx,
    batch: &mut [Job],
    over: impl Fn() -> bool,
) -> Result<(Results, Ending), StoreError> {
    let alone = batch.len() == 1;
    let mut results = Vec::with_capacity(batch.len());
    let mut last = batch.len() - 1;
    for (i, job) in batch.iter_mut().enumerate() {
        // The last job of a cut-short turn ends the savepoints.
        if i < last && over() {
            last = i;
        }
        let work = std::mem::replace(
            &mut job.work,
            Box::new(|_| Box::pin(async { Err(StoreError::Corrupt("a write ran twice".into())) })),
        );
        let chain_before = (tx.chain.clone(), tx.chain_moved);
        tx.discard = false;
        let result = work(tx).await;
        let keep = result.is_ok() && !tx.discard;
        results.push(result);
        if keep {
            tx.seqs.keep_write();
        } else {
            tx.seqs.write.clear();
            (tx.chain, tx.chain_moved) = chain_before;
            if alone {
                return Ok((results, Ending::RollBack));
            }
        }
        if alone {
            continue;
        }
        // The last write's savepoint stays open, emptied if it is not kept: the commit
        // keeps what it holds.
        let sql = match (keep, i == last) {
            (true, false) => "RELEASE SAVEPOINT salve_write; SAVEPOINT salve_write",
            (true, true) => break,
            (false, false) => {
                "ROLLBACK TO SAVEPOINT salve_write; RELEASE SAVEPOINT salve_write; SAVEPOINT salve_write"
            }
            (false, true) => "ROLLBACK TO SAVEPOINT salve_write",
        };
        tx.run(sql).await?;
        if i == last {
            break;
        }
    }
    Ok((results, Ending::Commit))
}

/// Writes the chain's head as the batch left it, and commits, in one round trip. A
/// savepoint still open (the batch's last write, its deliveries) is committed with the
/// transaction: releasing it first would be a round trip for nothing.
async fn finish(tx: &mut WriteTx) -> Result<(), StoreError> {
    match (tx.chain_moved, tx.chain.clone()) {
        // SQLite binds values in a statement of several (and keeps it prepared).
        (true, Some((seq, hash))) if !tx.postgres => {
            sqlx::query("UPDATE chain_head SET seq = $1, hash = $2 WHERE id = 1; COMMIT")
                .bind(seq)
                .bind(hash)
                .execute(&mut *tx.conn)
                .await?;
        }
        // PostgreSQL binds none there: the values are written into the statement, a
        // number and a hash that is hex (checked).
        (true, Some((seq, hash))) if hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            let sql =
                format!("UPDATE chain_head SET seq = {seq}, hash = '{hash}' WHERE id = 1; COMMIT");
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(tx.conn())
                .await?;
        }
        (true, Some((seq, hash))) => {
            sqlx::query("UPDATE chain_head SET seq = $1, hash = $2 WHERE id = 1")
                .bind(seq)
                .bind(hash)
                .execute(&mut *tx.conn)
                .await?;
            tx.run("COMMIT").await?;
        }
        _ => tx.run("COMMIT").await?,
    }
    tx.seqs.keep_batch();
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;

    use crate::store::{EventKind, Store, StoreError};

    const FIRING: &str =
        include_str!("../../tests/fixtures/alertmanager/firing-single-api-posted.json");

    async fn store(dir: &tempfile::TempDir) -> Store {
        Store::open(&format!("sqlite://{}", dir.path().join("s.db").display()))
            .await
            .unwrap()
    }

    /// A remediation of a new incident, with its first timeline event.
    async fn remediation(store: &Store) -> String {
        let d = crate::alert::Delivery::parse(FIRING.as_bytes()).unwrap();
        let incident = store
            .record_delivery(&d, Utc::now())
            .await
            .unwrap()
            .to_decide[0]
            .clone();
        let new = crate::store::NewRemediation {
            incident_id: incident,
            alertname: "A".into(),
            rule_name: "r".into(),
            rule_file: "rules.yaml".into(),
            action: "scale",
            target: crate::cluster::TargetRef::new(
                crate::cluster::WorkloadKind::Deployment,
                "ns",
                "web",
            )
            .unwrap(),
            mode: crate::remediation::Mode::Offline,
            summary: "pending".into(),
            owner: "me".into(),
        };
        store
            .create_remediation(&new, &json!({}), Utc::now())
            .await
            .unwrap()
            .unwrap()
    }

    /// Holds the writer inside a write until `release` is sent, so that what is sent
    /// meanwhile queues up for the next batch.
    async fn hold<C: super::Coalesced>(
        writer: &super::Writer<C>,
    ) -> (tokio::sync::oneshot::Sender<()>, impl Future<Output = ()>) {
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let (started, running) = tokio::sync::oneshot::channel::<()>();
        let w = writer.clone();
        let held = tokio::spawn(async move {
            w.write(move |_tx| {
                Box::pin(async move {
                    let _ = started.send(());
                    let _ = released.await;
                    Ok(())
                })
            })
            .await
            .unwrap();
        });
        running.await.unwrap();
        (release, async move { held.await.unwrap() })
    }

    /// Returns once at least `n` items wait in `queue` (the writer is held meanwhile, so
    /// they wait for its next batch).
    async fn queued<T>(queue: &tokio::sync::mpsc::Sender<T>, n: usize) {
        while queue.max_capacity() - queue.capacity() < n {
            tokio::task::yield_now().await;
        }
    }

    /// The writer's load says what waits in its queues while it is busy, and what it
    /// committed once it is done.
    #[tokio::test]
    async fn the_writers_load_counts_what_waits_and_what_it_committed() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let d = crate::alert::Delivery::parse(FIRING.as_bytes()).unwrap();
        let before = store.writer_load();
        let (release, held) = hold(&store.writes).await;
        let mut waiting = Vec::new();
        for _ in 0..2 {
            let (s, d) = (store.clone(), d.clone());
            waiting.push(tokio::spawn(async move {
                s.record_delivery(&d, Utc::now()).await.map(|_| ())
            }));
        }
        for _ in 0..3 {
            let s = store.clone();
            waiting.push(tokio::spawn(async move {
                s.write(|_tx| Box::pin(async { Ok(()) })).await
            }));
        }
        queued(&store.writes.floods, 2).await;
        queued(&store.writes.jobs, 3).await;
        let busy = store.writer_load();
        assert_eq!(
            (busy.deliveries_waiting, busy.engine_writes_waiting),
            (2, 3)
        );
        assert_eq!(busy.batches, before.batches);
        release.send(()).unwrap();
        held.await;
        for w in waiting {
            w.await.unwrap().unwrap();
        }
        let after = store.writer_load();
        assert_eq!(
            (after.deliveries_waiting, after.engine_writes_waiting),
            (0, 0)
        );
        assert_eq!(after.deliveries - before.deliveries, 2);
        // The write that held the writer, and the three behind it.
        assert_eq!(after.engine_writes - before.engine_writes, 4);
        assert!(after.batches > before.batches);
    }

    /// The writer's time is counted in the part that took it: a write of the engine's that
    /// runs for a while shows as the engine's, not as storing deliveries; each batch's end
    /// as a commit; a delivery's storing as its own.
    #[tokio::test]
    async fn the_writers_busy_time_is_counted_in_the_part_that_took_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let before = store.writer_load().busy;
        let slow = std::time::Duration::from_millis(30);
        store
            .write(move |_tx| {
                Box::pin(async move {
                    tokio::time::sleep(slow).await;
                    Ok(())
                })
            })
            .await
            .unwrap();
        let engine = store.writer_load().busy;
        assert!(
            engine.engine_writes - before.engine_writes >= slow,
            "{engine:?}"
        );
        assert_eq!(engine.deliveries, before.deliveries, "{engine:?}");
        assert!(engine.commits > before.commits, "{engine:?}");

        let d = crate::alert::Delivery::parse(FIRING.as_bytes()).unwrap();
        store.record_delivery(&d, Utc::now()).await.unwrap();
        let after = store.writer_load().busy;
        assert!(after.deliveries > engine.deliveries, "{after:?}");
        assert_eq!(after.engine_writes, engine.engine_writes, "{after:?}");
        assert!(after.commits > engine.commits, "{after:?}");
    }

    #[tokio::test]
    async fn writes_that_wait_together_commit_together_and_see_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let d = crate::alert::Delivery::parse(FIRING.as_bytes()).unwrap();
        let (release, held) = hold(&store.writes).await;
        let before = store.writes.batches();
        // The same delivery twice (an HA pair's copies arriving together).
        let (a, b) = (store.clone(), store.clone());
        let (d1, d2) = (d.clone(), d.clone());
        let first = tokio::spawn(async move { a.record_delivery(&d1, Utc::now()).await });
        let second = tokio::spawn(async move { b.record_delivery(&d2, Utc::now()).await });
        queued(&store.writes.floods, 2).await;
        release.send(()).unwrap();
        held.await;
        let (first, second) = (
            first.await.unwrap().unwrap(),
            second.await.unwrap().unwrap(),
        );
        // One batch for both, the same as the write that held the writer (deliveries
        // that arrive while the engine's writes run are committed with them), and the
        // second delivery found the first's incident inside the same transaction.
        assert_eq!(store.writes.batches() - before, 1);
        let mut seen = [
            (first.to_decide.len(), first.repeated),
            (second.to_decide.len(), second.repeated),
        ];
        seen.sort();
        assert_eq!(seen, [(0, 1), (1, 0)]);
        assert_eq!(store.delivery_count().await.unwrap(), 2);
    }

    /// The writer's round trips must not wait behind the runtime's other tasks (see
    /// `Writer::start`): on SQLite its writes run on its own thread.
    #[tokio::test]
    async fn on_sqlite_the_writes_run_on_the_writers_own_thread() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let (ran_on, name) = store
            .writes
            .write(|_| {
                Box::pin(async {
                    let thread = std::thread::current();
                    Ok((thread.id(), thread.name().map(str::to_owned)))
                })
            })
            .await
            .unwrap();
        assert_ne!(ran_on, std::thread::current().id());
        assert_eq!(name.as_deref(), Some("salve-writer"));
    }

    /// What ends a turn of the engine's writes when deliveries arrive during it, with a
    /// turn too long for its time ever to be up: each engine write answers with how many
    /// batches were committed before its own, so writes of one batch answer alike.
    async fn turn_with_deliveries_arriving(deliveries: usize) -> Vec<u64> {
        use std::sync::atomic::Ordering;

        use super::Writer;
        use crate::store::incidents::Deliveries;

        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let hour = std::time::Duration::from_secs(3600);
        let writer = Writer::<Deliveries>::start_with_turn(
            store.writer.clone(),
            false,
            true,
            crate::store::whole(),
            hour,
        )
        .unwrap();
        let (release, held) = hold(&writer).await;
        // Ten writes queue behind the held one, to run together in the next batch; the
        // first waits there until the deliveries queue.
        let (started, running) = tokio::sync::oneshot::channel::<()>();
        let (go, gone) = tokio::sync::oneshot::channel::<()>();
        let mut signals = Some((started, gone));
        let mut writes = Vec::new();
        for _ in 0..10 {
            let (tally, w) = (writer.tally.clone(), writer.clone());
            let first = signals.take();
            writes.push(tokio::spawn(async move {
                w.write(move |_| {
                    Box::pin(async move {
                        if let Some((started, gone)) = first {
                            let _ = started.send(());
                            let _ = gone.await;
                        }
                        Ok(tally.batches.load(Ordering::Relaxed))
                    })
                })
                .await
                .unwrap()
            }));
            queued(&writer.jobs, writes.len()).await;
        }
        release.send(()).unwrap();
        held.await;
        running.await.unwrap();
        let d = crate::alert::Delivery::parse(FIRING.as_bytes()).unwrap();
        let mut stored = Vec::new();
        for _ in 0..deliveries {
            let (w, d) = (writer.clone(), d.clone());
            stored.push(tokio::spawn(
                async move { w.store((d, Utc::now()), None).await },
            ));
        }
        queued(&writer.floods, deliveries).await;
        go.send(()).unwrap();
        for s in stored {
            s.await.unwrap().unwrap();
        }
        let mut before = Vec::new();
        for w in writes {
            before.push(w.await.unwrap());
        }
        before
    }

    #[tokio::test]
    async fn enough_waiting_deliveries_end_the_engines_turn_before_its_time_is_up() {
        // Four deliveries queue while the first write runs: the second is the turn's
        // last, the deliveries commit with those two, and the other eight run after.
        let before = turn_with_deliveries_arriving(super::DELIVERIES_END_THE_TURN).await;
        assert_eq!(before[0], before[1]);
        assert!(
            before[2..].iter().all(|&b| b == before[0] + 1),
            "{before:?}"
        );
        // Fewer wait: the turn runs all ten writes (its time is not up), deliveries after.
        let before = turn_with_deliveries_arriving(super::DELIVERIES_END_THE_TURN - 1).await;
        assert!(before.iter().all(|&b| b == before[0]), "{before:?}");
    }

    #[tokio::test]
    async fn a_failed_or_discarded_write_is_rolled_back_alone_and_the_chain_holds() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let id = remediation(&store).await;

        let (release, held) = hold(&store.writes).await;
        let event = |n: i64| {
            let (store, id) = (store.clone(), id.clone());
            tokio::spawn(async move {
                store
                    .append_event(&id, EventKind::StepStarted, &json!({ "n": n }), Utc::now())
                    .await
            })
        };
        let kept = event(1);
        // Appends an event, then fails or asks to be discarded: its event must not stay,
        // nor move the chain.
        let append_then = |finish: fn(&mut super::WriteTx) -> Result<i32, StoreError>| {
            let (store, id) = (store.clone(), id.clone());
            tokio::spawn(async move {
                store
                    .write(move |tx| {
                        Box::pin(async move {
                            super::super::remediations::append_for_test(tx, &id).await?;
                            finish(tx)
                        })
                    })
                    .await
            })
        };
        let failing = append_then(|_| Err(StoreError::Corrupt("refused on purpose".into())));
        let discarded = append_then(|tx| {
            tx.discard();
            Ok(7)
        });
        let also_kept = event(2);
        queued(&store.writes.jobs, 4).await;
        let before = store.writes.batches();
        release.send(()).unwrap();
        held.await;
        kept.await.unwrap().unwrap();
        assert!(failing.await.unwrap().is_err());
        assert_eq!(discarded.await.unwrap().unwrap(), 7);
        also_kept.await.unwrap().unwrap();
        assert_eq!(store.writes.batches() - before, 2);

        let timeline = store.timeline(&id).await.unwrap();
        let details: Vec<_> = timeline.iter().map(|e| e.detail.clone()).collect();
        assert_eq!(details[1..], [json!({"n": 1}), json!({"n": 2})]);
        // Numbered without a gap: what the rolled-back writes took is given again.
        let seqs: Vec<i64> = timeline.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        let report = store.verify_chain().await.unwrap();
        assert_eq!((report.events, report.first_break), (3, None));
    }

    /// Remembers the incidents handed to it.
    #[derive(Default)]
    struct Handed(std::sync::Mutex<Vec<String>>);

    impl crate::ingest::IncidentSink for Handed {
        fn submit(&self, incident_ids: Vec<String>) {
            self.0.lock().unwrap().extend(incident_ids);
        }
    }

    #[tokio::test]
    async fn a_committed_incident_is_handed_on_though_the_webhook_never_reads_its_answer() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let handed = std::sync::Arc::new(Handed::default());
        let d = crate::alert::Delivery::parse(FIRING.as_bytes()).unwrap();
        let (release, held) = hold(&store.writes).await;
        // The webhook queues its delivery, then waits for the commit; its client hangs up
        // as the commit lands: the future is never polled again.
        let mut webhook = Box::pin(store.record_delivery_handing_on(d, Utc::now(), handed.clone()));
        assert!(futures::poll!(&mut webhook).is_pending());
        release.send(()).unwrap();
        held.await;
        let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while handed.0.lock().unwrap().is_empty() && std::time::Instant::now() < until {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        drop(webhook);
        let ids = handed.0.lock().unwrap().clone();
        assert_eq!(ids.len(), 1, "the new incident is handed on exactly once");
        let incident = store.incident(&ids[0]).await.unwrap().unwrap();
        assert_eq!(incident.decision, "undecided");
    }

    /// A copy of the fixture's alert with `fingerprint`, firing or resolved.
    fn delivery(fingerprint: &str, resolved: bool) -> crate::alert::Delivery {
        let mut v: serde_json::Value = serde_json::from_str(FIRING).unwrap();
        let alert = &mut v["alerts"][0];
        alert["fingerprint"] = json!(fingerprint);
        if resolved {
            alert["status"] = json!("resolved");
            alert["endsAt"] = json!("2026-11-24T15:47:49Z");
            v["status"] = json!("resolved");
        }
        crate::alert::Delivery::parse(v.to_string().as_bytes()).unwrap()
    }

    #[tokio::test]
    async fn deliveries_stored_together_fold_as_if_one_after_the_other() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let (release, held) = hold(&store.writes).await;
        let before = store.writes.batches();
        // Alert a fires, resolves, and a stale firing copy follows; alert b's resolved copy
        // comes first, then a late firing copy; c is a plain repeat of a firing.
        let sent = [
            ("a", false),
            ("b", true),
            ("c", false),
            ("a", true),
            ("b", false),
            ("a", false),
            ("c", false),
        ];
        let mut stored = Vec::new();
        for (k, (fingerprint, resolved)) in sent.iter().enumerate() {
            let (sender, d) = (store.clone(), delivery(fingerprint, *resolved));
            stored.push(tokio::spawn(async move {
                sender.record_delivery(&d, Utc::now()).await
            }));
            // Queued in this order.
            queued(&store.writes.floods, k + 1).await;
        }
        release.send(()).unwrap();
        held.await;
        let mut seen = Vec::new();
        for s in stored {
            let s = s.await.unwrap().unwrap();
            seen.push((s.to_decide.len(), s.repeated, s.resolved));
        }
        assert_eq!(
            store.writes.batches() - before,
            1,
            "one batch for all seven, with the write that held the writer"
        );
        assert_eq!(
            seen,
            [
                (1, 0, 0), // a: new firing, to decide
                (0, 0, 0), // b: first seen resolved, nothing to decide
                (1, 0, 0), // c: new firing
                (0, 1, 1), // a resolves
                (0, 1, 0), // b's late firing copy does not re-open it
                (0, 1, 0), // nor does a's
                (0, 1, 0), // c repeated
            ]
        );
        let incidents = store
            .list_incidents(10, None, &Default::default(), None)
            .await
            .unwrap();
        let mut states: Vec<_> = incidents
            .iter()
            .map(|i| {
                (
                    i.fingerprint.clone(),
                    i.status.clone(),
                    i.decision.clone(),
                    i.deliveries,
                )
            })
            .collect();
        states.sort();
        assert_eq!(
            states,
            [
                (
                    "a".into(),
                    "resolved".into(),
                    "resolved_before_decision".into(),
                    3
                ),
                (
                    "b".into(),
                    "resolved".into(),
                    "resolved_before_decision".into(),
                    2
                ),
                ("c".into(), "firing".into(), "undecided".into(), 2),
            ]
        );
        assert_eq!(store.delivery_count().await.unwrap(), 7);
    }

    /// Numbers stored together; a negative one fails its whole batch.
    struct Numbers;

    impl super::Coalesced for Numbers {
        type Item = i64;
        type Stored = i64;

        fn store<'c>(
            tx: &'c mut super::WriteTx,
            items: &'c [i64],
        ) -> futures::future::BoxFuture<'c, Result<Vec<i64>, StoreError>> {
            Box::pin(async move {
                for n in items {
                    sqlx::query("INSERT INTO numbers (n) VALUES ($1)")
                        .bind(*n)
                        .execute(tx.conn())
                        .await?;
                }
                if items.iter().any(|n| *n < 0) {
                    return Err(StoreError::Corrupt("a negative number".into()));
                }
                Ok(items.to_vec())
            })
        }
    }

    /// [`Numbers`], but sending the batch's opening with its first insert, as the
    /// webhook's deliveries do on SQLite; a batch led by a negative number fails before
    /// any statement, one with a negative number after it after its inserts.
    struct NumbersSendingOpening;

    impl super::Coalesced for NumbersSendingOpening {
        type Item = i64;
        type Stored = i64;
        const SENDS_OPENING: bool = true;

        fn store<'c>(
            tx: &'c mut super::WriteTx,
            items: &'c [i64],
        ) -> futures::future::BoxFuture<'c, Result<Vec<i64>, StoreError>> {
            Box::pin(async move {
                let negative = || Err(StoreError::Corrupt("a negative number".into()));
                if items.first().is_some_and(|n| *n < 0) {
                    return negative();
                }
                let mut opening = tx.take_opening().map(|o| format!("{o}; "));
                for n in items {
                    let sql = format!(
                        "{}INSERT INTO numbers (n) VALUES ($1)",
                        opening.take().unwrap_or_default()
                    );
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(*n)
                        .execute(tx.conn())
                        .await?;
                }
                if items.iter().any(|n| *n < 0) {
                    return negative();
                }
                Ok(items.to_vec())
            })
        }
    }

    /// A fresh SQLite database in `dir` with the numbers' table and the audit chain's
    /// head (which every batch of the engine's writes reads as it begins).
    async fn numbers_db(dir: &tempfile::TempDir) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("n.db").display());
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(&url)
            .await
            .unwrap();
        sqlx::raw_sql(
            "CREATE TABLE numbers (n BIGINT);
             CREATE TABLE chain_head (id INTEGER PRIMARY KEY, seq BIGINT NOT NULL, hash TEXT NOT NULL);
             INSERT INTO chain_head (id, seq, hash) VALUES (1, 0, '')",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool
    }

    /// Says it sends the batch's opening, and stores nothing.
    struct ForgetsItsOpening;

    impl super::Coalesced for ForgetsItsOpening {
        type Item = i64;
        type Stored = i64;
        const SENDS_OPENING: bool = true;

        fn store<'c>(
            _: &'c mut super::WriteTx,
            items: &'c [i64],
        ) -> futures::future::BoxFuture<'c, Result<Vec<i64>, StoreError>> {
            Box::pin(async move { Ok(items.to_vec()) })
        }
    }

    /// A store that leaves the opening unsent cannot have written inside the batch's
    /// transaction: its batch is refused, not acknowledged.
    #[tokio::test]
    async fn a_store_that_does_not_send_its_opening_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pool = numbers_db(&dir).await;
        let writer =
            super::Writer::<ForgetsItsOpening>::start(pool, false, false, crate::store::whole())
                .unwrap();
        let answer = writer.store(7, None).await.map_err(|e| e.to_string());
        assert!(
            answer
                .as_ref()
                .is_err_and(|e| e.contains("did not send the opening")),
            "{answer:?}"
        );
    }

    /// A writer of [`Numbers`] on a fresh database, held inside another write (which
    /// first stores `written`, if given) while 1, -1 and 2 queue behind it, then let go:
    /// each number's answer, the batches committed from when they queued, and the numbers
    /// stored.
    async fn numbers_queued_behind_a_write<C: super::Coalesced<Item = i64, Stored = i64>>(
        written: Option<i64>,
    ) -> (Vec<Result<i64, String>>, u64, Vec<i64>) {
        let dir = tempfile::tempdir().unwrap();
        let pool = numbers_db(&dir).await;
        let writer =
            super::Writer::<C>::start(pool.clone(), false, false, crate::store::whole()).unwrap();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let (started, running) = tokio::sync::oneshot::channel::<()>();
        let held = {
            let writer = writer.clone();
            tokio::spawn(async move {
                writer
                    .write(move |tx| {
                        Box::pin(async move {
                            if let Some(n) = written {
                                sqlx::query("INSERT INTO numbers (n) VALUES ($1)")
                                    .bind(n)
                                    .execute(tx.conn())
                                    .await?;
                            }
                            let _ = started.send(());
                            let _ = released.await;
                            Ok(written)
                        })
                    })
                    .await
            })
        };
        running.await.unwrap();
        let before = writer.batches();
        let mut answers = Vec::new();
        for (k, n) in [1i64, -1, 2].into_iter().enumerate() {
            let sender = writer.clone();
            answers.push(tokio::spawn(async move { sender.store(n, None).await }));
            queued(&writer.floods, k + 1).await;
        }
        release.send(()).unwrap();
        assert_eq!(held.await.unwrap().unwrap(), written);
        let mut got = Vec::new();
        for a in answers {
            got.push(a.await.unwrap().map_err(|e| e.to_string()));
        }
        let stored: Vec<(i64,)> = sqlx::query_as("SELECT n FROM numbers ORDER BY n")
            .fetch_all(&pool)
            .await
            .unwrap();
        let stored = stored.into_iter().map(|(n,)| n).collect();
        (got, writer.batches() - before, stored)
    }

    #[tokio::test]
    async fn a_bad_item_fails_alone_and_the_others_of_its_batch_are_stored() {
        // The three numbers queue up for one batch behind a write that holds the writer.
        // Whether the writer or the store sends the batch's BEGIN, and whether the store
        // fails before or after its first statement, the same holds.
        for (got, _, stored) in [
            numbers_queued_behind_a_write::<Numbers>(None).await,
            numbers_queued_behind_a_write::<NumbersSendingOpening>(None).await,
        ] {
            assert_eq!(got[0], Ok(1));
            assert!(got[1].as_ref().unwrap_err().contains("a negative number"));
            assert_eq!(got[2], Ok(2));
            assert_eq!(stored, [1, 2]);
        }
    }

    /// Deliveries that queue while the engine's writes run join their transaction; when
    /// storing them together fails, the engine's writes still commit, and each delivery
    /// is stored alone after.
    #[tokio::test]
    async fn a_failed_delivery_batch_in_the_engines_transaction_leaves_the_engines_writes() {
        // Also when the store sends the deliveries' savepoint with its first insert.
        for (got, batches, stored) in [
            numbers_queued_behind_a_write::<Numbers>(Some(100)).await,
            numbers_queued_behind_a_write::<NumbersSendingOpening>(Some(100)).await,
        ] {
            assert_eq!(got[0], Ok(1));
            assert!(got[1].as_ref().unwrap_err().contains("a negative number"));
            assert_eq!(got[2], Ok(2));
            // The engine's batch, then 1 and 2 each alone (-1's was rolled back).
            assert_eq!(batches, 3);
            assert_eq!(stored, [1, 2, 100]);
        }
    }

    #[tokio::test]
    async fn an_append_after_another_writer_appended_reads_the_number_again() {
        let dir = tempfile::tempdir().unwrap();
        let (mine, theirs) = (store(&dir).await, store(&dir).await);
        let id = remediation(&mine).await;
        let append = |store: &Store, n: i64| {
            let (store, id) = (store.clone(), id.clone());
            async move {
                store
                    .append_event(&id, EventKind::StepStarted, &json!({ "n": n }), Utc::now())
                    .await
                    .unwrap()
            }
        };
        append(&mine, 1).await;
        // Another replica (its own writer) appends: the number mine knows is taken.
        append(&theirs, 2).await;
        append(&mine, 3).await;
        append(&theirs, 4).await;
        let timeline = mine.timeline(&id).await.unwrap();
        let seen: Vec<_> = timeline.iter().map(|e| (e.seq, e.detail.clone())).collect();
        assert_eq!(
            seen[1..],
            [
                (2, json!({"n": 1})),
                (3, json!({"n": 2})),
                (4, json!({"n": 3})),
                (5, json!({"n": 4}))
            ]
        );
        let report = mine.verify_chain().await.unwrap();
        assert_eq!((report.events, report.first_break), (5, None));
    }
}
