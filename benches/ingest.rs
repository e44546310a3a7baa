//! Alert storms: how fast salve acknowledges and decides, next to a bare server.
//!
//! Starts salve in-process (offline, the shipped guardrails and timers, the walkthrough's rules: every
//! alert matches an acting rule and opens a remediation, and the storm brake is off, so
//! each one is driven to its end: the hardest case) and a bare axum server that
//! parses the same JSON (`Delivery::parse`) and answers 200, and drives both with the
//! same built-in load generator:
//! - fixed concurrency (16 connections) for throughput: distinct single-alert webhooks,
//!   and 10-alert batches;
//! - fixed arrival rate for latency, timed from each request's *scheduled* start, so a
//!   stalled server cannot hide its queue (no coordinated omission);
//! - webhook → decision recorded, at 100 alerts/s, and a storm of 1,000 alerts in 1 s;
//!   and how many alerts of the single-alert flood were decided by its end; and, for that
//!   flood, the phase at 1,000 req/s and the storm, how the writer grouped their writes
//!   (its batches, writes per batch) and where its time went (the engine's writes, storing
//!   deliveries, committing).
//!
//! On SQLite, and on PostgreSQL when `SALVE_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) answers. Also prints the raw SQLite
//! reference: one connection, one transaction per insert, `synchronous=FULL`; and, on
//! PostgreSQL, what one 20 KB statement costs on sqlx's socket as it comes and with
//! `TCP_NODELAY` as salve sets it (over TLS the first waits for a delayed ACK).
//! Run: `cargo bench --bench ingest` (`SALVE_BENCH_SECONDS` sets each phase's length,
//! `SALVE_BENCH_ONLY=sqlite` or `postgres` benches one backend).

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use salve::store::writer::WriterLoad;
use serde_json::{Value, json};
use sqlx::{Connection, Executor};
use support::{Options, TestSalve, firing_with, spawn_salve};

const CONNECTIONS: usize = 16;

/// What one run of the load generator saw.
#[derive(Default)]
struct Run {
    ok: usize,
    errors: usize,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Run {
    fn per_second(&self, per_request: usize) -> f64 {
        (self.ok * per_request) as f64 / self.elapsed.as_secs_f64()
    }

    fn quantile(&self, q: f64) -> Duration {
        quantile(&self.latencies, q)
    }
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// A webhook with `alerts` distinct alerts, each on its own Deployment.
fn body(n: usize, alerts: usize) -> String {
    let mut v: Value = serde_json::from_str(&firing_with(json!({}), "0")).unwrap();
    let one = v["alerts"][0].clone();
    v["alerts"] = (0..alerts)
        .map(|k| {
            let id = n * alerts + k;
            let mut a = one.clone();
            a["labels"] = json!({
                "alertname": "HighRequestLatency", "severity": "critical",
                "namespace": "storm", "deployment": format!("web-{id}"),
            });
            a["fingerprint"] = json!(format!("{:016x}", 0xb000_0000_0000u64 + id as u64));
            a
        })
        .collect();
    v.to_string()
}

/// Fixed concurrency for `seconds`: each of the connections sends its next request as
/// soon as the last one is answered. Bodies are numbered from `first`.
async fn closed_loop(url: &str, first: usize, alerts: usize, seconds: f64) -> (Run, usize) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CONNECTIONS)
        .build()
        .unwrap();
    let next = Arc::new(AtomicUsize::new(first));
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let (http, next, url) = (http.clone(), next.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut run = Run::default();
            while Instant::now() < until {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                match http.post(&url).body(body(n, alerts)).send().await {
                    Ok(r) if r.status().is_success() => run.ok += 1,
                    _ => run.errors += 1,
                }
                run.latencies.push(t.elapsed());
            }
            run
        }));
    }
    let mut all = Run::default();
    for t in tasks {
        let r = t.await.unwrap();
        all.ok += r.ok;
        all.errors += r.errors;
        all.latencies.extend(r.latencies);
    }
    all.elapsed = started.elapsed();
    all.latencies.sort();
    (all, next.load(Ordering::Relaxed))
}

/// Fixed arrival rate: request `i` is due at `start + i / rate` and its latency counts
/// from then, whether or not the server was ready to take it.
async fn open_loop(url: &str, first: usize, rate: f64, seconds: f64) -> Run {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let total = (rate * seconds) as usize;
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        let (http, url, body) = (http.clone(), url.to_owned(), body(first + i, 1));
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(due).await;
            let ok =
                matches!(http.post(&url).body(body).send().await, Ok(r) if r.status().is_success());
            (ok, due.elapsed())
        }));
    }
    let mut run = Run::default();
    for t in tasks {
        let (ok, latency) = t.await.unwrap();
        if ok {
            run.ok += 1;
        } else {
            run.errors += 1;
        }
        run.latencies.push(latency);
    }
    run.elapsed = Duration::from_secs_f64(seconds);
    run.latencies.sort();
    run
}

/// The bare reference: the same parsing, no storage.
async fn bare_server() -> String {
    let app = axum::Router::new().route(
        "/api/v1/alerts",
        axum::routing::post(|body: axum::body::Bytes| async move {
            match salve::alert::Delivery::parse(&body) {
                Ok(d) => (
                    axum::http::StatusCode::OK,
                    axum::Json(json!({"alerts": d.alerts.len()})),
                ),
                Err(e) => (
                    axum::http::StatusCode::BAD_REQUEST,
                    axum::Json(json!({"error": e.to_string()})),
                ),
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/v1/alerts", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// The fingerprints of the bench's alerts decided so far.
const DECIDED: &str = "SELECT fingerprint FROM incidents WHERE decision <> 'undecided' AND alertname = 'HighRequestLatency'";

/// Watches the store (every 2 ms) on `pool`, connected before the first webhook is sent,
/// until every one of `count` alerts (numbered from 0) is decided; when each was first
/// seen decided. (Connecting here, after the sending began, made the first alerts look
/// decided as late as the connection was ready: 100 ms on PostgreSQL over TLS.)
async fn watch_decisions(
    pool: sqlx::AnyPool,
    count: usize,
    within: Duration,
) -> std::collections::HashMap<String, Instant> {
    let mut seen = std::collections::HashMap::new();
    let until = Instant::now() + within;
    while seen.len() < count && Instant::now() < until {
        let rows: Vec<(String,)> = sqlx::query_as(DECIDED).fetch_all(&pool).await.unwrap();
        let now = Instant::now();
        for (fp,) in rows {
            seen.entry(fp).or_insert(now);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    seen
}

/// Sends `count` alerts over `seconds` while watching decisions: the sorted
/// webhook-to-decision times, and how long after the first send the last was decided.
async fn decisions(
    s: &TestSalve,
    url: &str,
    count: usize,
    seconds: f64,
) -> (Vec<Duration>, Duration) {
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .connect(&s.database)
        .await
        .unwrap();
    let watcher = tokio::spawn(watch_decisions(pool, count, Duration::from_secs(120)));
    let sent = paced(url, 0, count, seconds).await;
    let decided = watcher.await.unwrap();
    let first = sent.iter().map(|(_, t)| *t).min().unwrap();
    let mut latencies: Vec<Duration> = sent
        .iter()
        .filter_map(|(fp, t)| decided.get(fp).map(|d| d.saturating_duration_since(*t)))
        .collect();
    latencies.sort();
    let last = decided
        .values()
        .max()
        .map(|d| d.saturating_duration_since(first))
        .unwrap_or_default();
    (latencies, last)
}

/// Sends `count` single-alert webhooks spread evenly over `seconds`; when each was sent.
async fn paced(url: &str, first: usize, count: usize, seconds: f64) -> Vec<(String, Instant)> {
    let http = reqwest::Client::new();
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..count {
        let due = start + Duration::from_secs_f64(i as f64 * seconds / count as f64);
        let (http, url, body) = (http.clone(), url.to_owned(), body(first + i, 1));
        let fp = format!("{:016x}", 0xb000_0000_0000u64 + (first + i) as u64);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(due).await;
            let sent = Instant::now();
            let _ = http.post(&url).body(body).send().await;
            (fp, sent)
        }));
    }
    let mut sent = Vec::new();
    for t in tasks {
        sent.push(t.await.unwrap());
    }
    sent
}

async fn raw_sqlite_commits(seconds: f64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("raw.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    conn.execute("PRAGMA journal_mode = WAL").await.unwrap();
    conn.execute("PRAGMA synchronous = FULL").await.unwrap();
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed().as_secs_f64() < seconds {
        let mut tx = conn.begin().await.unwrap();
        sqlx::query("INSERT INTO t (v) VALUES ($1)")
            .bind("x".repeat(200))
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        n += 1;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// Median time of a transaction holding one 20 KB INSERT on a new PostgreSQL connection,
/// on sqlx's socket as it comes or after [`salve::store::disable_nagle`]; and whether the
/// connection runs over TLS (where a statement that large is two writes).
async fn large_statement(nagle_off: bool) -> (Duration, bool) {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&support::postgres_admin_url())
        .await
        .unwrap();
    if nagle_off {
        salve::store::disable_nagle(&mut conn).await.unwrap();
    }
    let (tls,): (bool,) = sqlx::query_as(
        "SELECT COALESCE((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    conn.execute("CREATE TEMPORARY TABLE big (v TEXT)")
        .await
        .unwrap();
    let value = "x".repeat(20 * 1024);
    let mut took = Vec::new();
    for _ in 0..40 {
        let started = Instant::now();
        let mut tx = conn.begin().await.unwrap();
        sqlx::query("INSERT INTO big (v) VALUES ($1)")
            .bind(&value)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        took.push(started.elapsed());
    }
    took.sort();
    (quantile(&took, 0.5), tls)
}

async fn postgres_reachable() -> bool {
    sqlx::PgConnection::connect(&support::postgres_admin_url())
        .await
        .is_ok()
}

/// How many of the bench's alerts are decided so far: in a flood that saturates the
/// writer, how much of it the engine got beside the webhooks.
async fn decided_count(s: &TestSalve) -> usize {
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&s.database)
        .await
        .unwrap();
    let rows: Vec<(String,)> = sqlx::query_as(DECIDED).fetch_all(&pool).await.unwrap();
    rows.len()
}

/// What the writer committed between two readings of its load, per batch: how well it
/// grouped the phase's writes.
fn writer_batches(before: WriterLoad, after: WriterLoad, elapsed: Duration) -> String {
    let batches = after.batches - before.batches;
    let per_batch = |n: u64| n as f64 / batches.max(1) as f64;
    let share = |part: Duration| 100.0 * part.as_secs_f64() / elapsed.as_secs_f64();
    let (b, a) = (before.busy, after.busy);
    format!(
        "{batches} batches, {:.1} deliveries and {:.1} engine writes per batch; of the phase's time it spent {:.0}% on the engine's writes, {:.0}% storing deliveries, {:.0}% committing",
        per_batch(after.deliveries - before.deliveries),
        per_batch(after.engine_writes - before.engine_writes),
        share(a.engine_writes - b.engine_writes),
        share(a.deliveries - b.deliveries),
        share(a.commits - b.commits),
    )
}

/// A fresh salve for each phase, so no phase pays for the backlog an earlier one left.
/// Its timers (sweep, outbox, escalation refresh) are the shipped ones, not the tests'
/// quick ones: the bench measures salve as it runs. Only the storm brake is off.
async fn fresh() -> (TestSalve, String) {
    let s = spawn_salve(Options {
        limits: salve::engine::Limits {
            storm_brake: None,
            ..salve::engine::Limits::default()
        },
        ..Options::default()
    })
    .await;
    let url = format!("{}/api/v1/alerts", s.url);
    (s, url)
}

async fn bench_backend(name: &str, bare_single: &Run, bare_batch: &Run, seconds: f64) {
    let (s, url) = fresh().await;
    let (before, started) = (s.salve.store.writer_load(), Instant::now());
    let (single, _) = closed_loop(&url, 0, 1, seconds).await;
    let single_writer = writer_batches(before, s.salve.store.writer_load(), started.elapsed());
    let decided_in_flood = decided_count(&s).await;
    s.salve.stop().await;
    let (s, url) = fresh().await;
    let (batch, _) = closed_loop(&url, 0, 10, seconds).await;
    s.salve.stop().await;
    let (s, url) = fresh().await;
    let (before, started) = (s.salve.store.writer_load(), Instant::now());
    let at_1000 = open_loop(&url, 0, 1000.0, seconds).await;
    let writer_1000 = writer_batches(before, s.salve.store.writer_load(), started.elapsed());
    s.salve.stop().await;
    let (s, url) = fresh().await;
    let at_2000 = open_loop(&url, 0, 2000.0, seconds.min(3.0)).await;
    s.salve.stop().await;

    let (s, url) = fresh().await;
    let sent = (100.0 * seconds) as usize;
    let (decided_100, _) = decisions(&s, &url, sent, seconds).await;
    s.salve.stop().await;
    let (s, url) = fresh().await;
    let (before, started) = (s.salve.store.writer_load(), Instant::now());
    let (decided_storm, storm_all) = decisions(&s, &url, 1000, 1.0).await;
    let storm_writer = writer_batches(before, s.salve.store.writer_load(), started.elapsed());
    let storm_done = decided_storm.len();
    s.salve.stop().await;

    println!("\n## salve on {name}");
    println!(
        "distinct single-alert webhooks, {CONNECTIONS} connections: {:.0} req/s ({} errors), bare {:.0} req/s, ratio {:.2}",
        single.per_second(1),
        single.errors,
        bare_single.per_second(1),
        single.per_second(1) / bare_single.per_second(1)
    );
    println!(
        "  of them decided by the flood's end (the engine's share of the writer): {decided_in_flood} of {}",
        single.ok
    );
    println!("  the writer in the flood: {single_writer}");
    println!(
        "10-alert batches, {CONNECTIONS} connections: {:.0} alerts/s ({} errors), bare {:.0} alerts/s, ratio {:.2}",
        batch.per_second(10),
        batch.errors,
        bare_batch.per_second(10),
        batch.per_second(10) / bare_batch.per_second(10)
    );
    for (rate, run) in [(1000, &at_1000), (2000, &at_2000)] {
        println!(
            "ack latency at a fixed {rate} req/s: p50 {}, p99 {}, max {} ({} of {} answered 2xx, {} errors or timeouts)",
            ms(run.quantile(0.5)),
            ms(run.quantile(0.99)),
            ms(run.quantile(1.0)),
            run.ok,
            run.ok + run.errors,
            run.errors
        );
        if rate == 1000 {
            println!("  the writer at 1000 req/s: {writer_1000}");
        }
    }
    println!(
        "webhook -> decision recorded at 100 alerts/s: p50 {}, p99 {} ({} of {} decided)",
        ms(quantile(&decided_100, 0.5)),
        ms(quantile(&decided_100, 0.99)),
        decided_100.len(),
        sent
    );
    println!(
        "storm of 1,000 distinct alerts in 1 s: {storm_done} decided, the last {:.2} s after the first was sent (p50 {}, p99 {})",
        storm_all.as_secs_f64(),
        ms(quantile(&decided_storm, 0.5)),
        ms(quantile(&decided_storm, 0.99))
    );
    println!("  the writer in the storm: {storm_writer}");
}

#[tokio::main]
async fn main() {
    salve::telemetry::install_crypto_provider();
    let seconds: f64 = std::env::var("SALVE_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4.0);
    let bare = bare_server().await;
    let (bare_single, n) = closed_loop(&bare, 0, 1, seconds).await;
    let (bare_batch, _) = closed_loop(&bare, n, 10, seconds).await;
    let bare_1000 = open_loop(&bare, 0, 1000.0, seconds).await;
    println!("## reference");
    println!(
        "bare axum, same parsing: {:.0} req/s single-alert, {:.0} alerts/s in 10-alert batches, p99 {} at 1,000 req/s",
        bare_single.per_second(1),
        bare_batch.per_second(10),
        ms(bare_1000.quantile(0.99))
    );
    println!(
        "raw SQLite, one connection, one transaction per insert, synchronous=FULL: {:.0} commits/s",
        raw_sqlite_commits(seconds.min(3.0)).await
    );

    let only = std::env::var("SALVE_BENCH_ONLY").unwrap_or_default();
    // SAFETY: set before any other thread reads the environment for it.
    unsafe { std::env::remove_var("SALVE_TEST_DATABASE") };
    if only != "postgres" {
        bench_backend("SQLite", &bare_single, &bare_batch, seconds).await;
    }
    if only == "sqlite" {
        return;
    }
    if postgres_reachable().await {
        let (nagle, tls) = large_statement(false).await;
        let (no_nagle, _) = large_statement(true).await;
        println!("\n## PostgreSQL reference");
        println!(
            "PostgreSQL ({}), one 20 KB INSERT per transaction: p50 {} on sqlx's socket as it comes, {} with TCP_NODELAY as salve sets it",
            if tls { "over TLS" } else { "no TLS" },
            ms(nagle),
            ms(no_nagle)
        );
        // SAFETY: as above; spawn_salve reads it to pick the backend.
        unsafe { std::env::set_var("SALVE_TEST_DATABASE", "postgres") };
        bench_backend("PostgreSQL", &bare_single, &bare_batch, seconds).await;
    } else {
        println!("\n(PostgreSQL not reachable: set SALVE_TEST_POSTGRES_URL to bench it)");
    }
}
