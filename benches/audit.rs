//! The audit listing at scale: 1,000,000 remediations, then p50/p99 of a filtered
//! first page and of a deep page (cursor ~900,000 rows back), through the real
//! `Store::list_remediations`, on SQLite and (when reachable) PostgreSQL.
//! Target: p99 <= 20 ms. Run: `cargo bench --bench audit`
//! (`SALVE_BENCH_ROWS` changes the row count; `SALVE_TEST_POSTGRES_URL` the server).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Instant;

use salve::store::Store;
use salve::store::remediations::{Cursor, RemediationFilter};
use sqlx::{Connection, Row};

const ITERATIONS: usize = 300;

fn seed_sql(postgres: bool, rows: u64) -> Vec<String> {
    // Rows are generated inside the database: 7 s apart, 50 namespaces, 20 alerts, 30 rules.
    let (series, ts, id) = if postgres {
        (
            format!("generate_series(1, {rows}) AS s(x)"),
            "to_char(to_timestamp(1700000000 + x * 7) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') || '.000000Z'",
            "lpad(x::text, 12, '0')",
        )
    } else {
        (
            "s".to_owned(),
            "strftime('%Y-%m-%dT%H:%M:%S', 1700000000 + x * 7, 'unixepoch') || '.000000Z'",
            "printf('%012d', x)",
        )
    };
    let with = if postgres {
        String::new()
    } else {
        format!("WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < {rows}) ")
    };
    let m = |n: u32| format!("(x % {n})");
    vec![
        format!(
            "{with}INSERT INTO deliveries (id, received_at, receiver, status, group_key, alert_count, truncated_alerts, payload)
             SELECT 'd' || {id}, {ts}, 'salve', 'firing', 'g', 1, 0, '{{}}' FROM {series}"
        ),
        format!(
            "{with}INSERT INTO incidents (id, fingerprint, starts_at, alertname, status, alert, first_seen_at, last_seen_at,
                 delivery_count, first_delivery_id, decision, decision_reason)
             SELECT 'i' || {id}, 'f' || {id}, {ts}, 'Alert' || {a}, 'resolved', '{{}}', {ts}, {ts}, 1, 'd' || {id}, 'remediation', ''
             FROM {series}",
            a = m(20)
        ),
        format!(
            "{with}INSERT INTO remediations (id, incident_id, created_at, updated_at, acted_at, alertname, rule_name, rule_file,
                 action, target_kind, target_namespace, target_name, mode, state, summary, reasons, steps_taken)
             SELECT 'r' || {id}, 'i' || {id}, {ts}, {ts}, {ts}, 'Alert' || {a}, 'rule-' || {r}, 'rules.yaml', 'scale',
                    'Deployment', 'ns-' || {n}, 'app-' || {w}, 'live',
                    CASE WHEN {s} = 0 THEN 'escalated' WHEN {s} = 1 THEN 'denied' ELSE 'healed' END,
                    'healed: scale Deployment', '[]', 1
             FROM {series}",
            a = m(20),
            r = m(30),
            n = m(50),
            w = m(500),
            s = m(10)
        ),
        "ANALYZE".to_owned(),
    ]
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn measure(
    store: &Store,
    cursor: Option<&Cursor>,
    filter: &RemediationFilter,
) -> (f64, f64, usize) {
    let mut times = Vec::with_capacity(ITERATIONS);
    let mut rows = 0;
    for _ in 0..ITERATIONS {
        let start = Instant::now();
        rows = store
            .list_remediations(50, cursor, filter)
            .await
            .unwrap()
            .len();
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    (percentile(&times, 0.5), percentile(&times, 0.99), rows)
}

async fn run(label: &str, url: &str, postgres: bool, rows: u64) {
    let store = Store::open(url).await.unwrap();
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    let start = Instant::now();
    for sql in seed_sql(postgres, rows) {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let seeded = start.elapsed().as_secs_f64();
    let deep_id = format!("r{:012}", rows / 10);
    let deep_at: String = sqlx::query("SELECT created_at FROM remediations WHERE id = $1")
        .bind(&deep_id)
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .try_get("created_at")
        .unwrap();
    let deep = Cursor {
        created_at: deep_at,
        id: deep_id,
    };
    let ns = RemediationFilter {
        namespace: Some("ns-7".into()),
        ..Default::default()
    };
    // Namespace ns-10 rows are the escalated ones of every fifth ten (x = 10 mod 50).
    let escalated = RemediationFilter {
        namespace: Some("ns-10".into()),
        state: Some("escalated".into()),
        since: Some("2023-11-20T00:00:00.000000Z".into()),
        ..Default::default()
    };
    println!("{label}: seeded {rows} remediations in {seeded:.1}s");
    for (what, cursor, filter) in [
        ("first page, no filter", None, RemediationFilter::default()),
        ("first page, namespace", None, ns.clone()),
        ("first page, namespace+state+since", None, escalated),
        (
            "deep page (90% back), no filter",
            Some(&deep),
            RemediationFilter::default(),
        ),
        ("deep page (90% back), namespace", Some(&deep), ns),
    ] {
        let (p50, p99, n) = measure(&store, cursor, &filter).await;
        println!("  {what:<36} p50 {p50:>7.2} ms  p99 {p99:>7.2} ms  ({n} rows)");
    }
}

#[tokio::main]
async fn main() {
    let rows: u64 = std::env::var("SALVE_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    );
    run("SQLite", &sqlite, false, rows).await;

    let admin = support::postgres_admin_url();
    match sqlx::PgConnection::connect(&admin).await {
        Ok(mut conn) => {
            let url = support::create_database(&mut conn, &admin, "salve_bench_").await;
            run("PostgreSQL", &url, true, rows).await;
            let name = url.rsplit('/').next().unwrap_or_default();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE {name} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await
            .unwrap();
        }
        Err(e) => println!("PostgreSQL: skipped, {admin} unreachable: {e}"),
    }
}
