//! Soak under crashes: a real Alertmanager feeds salve 1,000 alerts while salve is
//! killed with SIGKILL and restarted again and again; then it counts what was lost,
//! doubled or left stuck. Every count should be 0.
//!
//! Run: `cargo bench --bench soak` (SQLite), or with `SALVE_TEST_DATABASE=postgres`.
//! `SALVE_SOAK_ALERTS` (1000) and `SALVE_SOAK_KILLS` (8) change the load and the kills.
//! Needs Debian's `prometheus-alertmanager`. salve acts on the fake API server of the
//! tests (100 Deployments; one scale-up rule with a cooldown, so each Deployment may be
//! changed once), and escalates to the same Alertmanager.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::Path;

use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::Row;
use support::{FakeKube, SalveProcess, fresh_database, policies_with_rules, real};

const RULES: &str = r#"
rules:
  - name: soak-scale-up
    matchers: ['alertname="SoakLatency"']
    target: { kind: Deployment, namespace: "{{ namespace }}", name: "{{ deployment }}" }
    action:
      scale: { by: 1, max: 10 }
    verify: { within: 500ms, every: 100ms }
    cooldown: 1h
    max_attempts: 1
"#;

const DEPLOYMENTS: usize = 100;
const NAMESPACES: usize = 20;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn start_salve(
    dir: &Path,
    database: &str,
    port: u16,
    alertmanager: &str,
    life: usize,
) -> SalveProcess {
    let log = dir.join(format!("salve-{life}.log"));
    let kubeconfig = dir.join("kubeconfig");
    SalveProcess::start(dir, database, &kubeconfig, port, &log, |cmd| {
        cmd.args(["--alertmanager-url", alertmanager])
            // Let every Deployment be changed (the default budget is 20 changes an hour),
            // so the kills land among real writes too.
            .args(["--max-actions-per-hour", "1000"])
            .env("RUST_LOG", "warn");
    })
}

/// Remediations not yet ended: stuck, once the soak has settled.
const OPEN: &str =
    "SELECT COUNT(*) FROM remediations WHERE state IN ('pending', 'executing', 'verifying')";
/// Incidents nobody decided for.
const UNDECIDED: &str = "SELECT COUNT(*) FROM incidents WHERE decision = 'undecided'";

async fn count(pool: &sqlx::AnyPool, sql: &'static str) -> i64 {
    sqlx::query(sql)
        .fetch_one(pool)
        .await
        .unwrap()
        .try_get::<i64, _>(0)
        .unwrap()
}

#[tokio::main]
async fn main() {
    if !real::binaries_present() {
        eprintln!(
            "soak: prometheus-alertmanager is not installed (apt install prometheus-alertmanager)"
        );
        return;
    }
    salve::telemetry::install_crypto_provider();
    sqlx::any::install_default_drivers();
    let alerts = env_number("SALVE_SOAK_ALERTS", 1000);
    let kills = env_number("SALVE_SOAK_KILLS", 8);
    let backend = std::env::var("SALVE_TEST_DATABASE").unwrap_or_else(|_| "sqlite".into());

    let kube = FakeKube::start().await;
    for d in 0..DEPLOYMENTS {
        kube.add_deployment(
            &format!("ns-{}", d % NAMESPACES),
            &format!("web-{d}"),
            2,
            "web:1.0",
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let database = fresh_database(dir.path()).await;
    policies_with_rules(dir.path(), Some(RULES));
    kube.write_kubeconfig(dir.path());

    let salve_port = real::free_port();
    let am_port = real::free_port();
    let webhook = format!("http://127.0.0.1:{salve_port}/api/v1/alerts");
    let alertmanager_url = format!("http://127.0.0.1:{am_port}/");
    let mut life = 0;
    let mut salve = start_salve(dir.path(), &database, salve_port, &alertmanager_url, life);
    let am = real::alertmanager_on(dir.path(), &webhook, am_port).await;
    let http = reqwest::Client::new();
    let started = Instant::now();

    // Alerts go in batches of 50, as Prometheus sends them; salve is killed in between.
    let batches: Vec<Vec<serde_json::Value>> = (0..alerts)
        .map(|i| {
            let d = i % DEPLOYMENTS;
            json!({
                "labels": {
                    "alertname": "SoakLatency", "severity": "critical",
                    "namespace": format!("ns-{}", d % NAMESPACES),
                    "deployment": format!("web-{d}"), "instance": format!("i-{i}"),
                },
                "annotations": {"summary": "soak"},
                "startsAt": chrono::Utc::now().to_rfc3339(),
            })
        })
        .collect::<Vec<_>>()
        .chunks(50)
        .map(<[_]>::to_vec)
        .collect();
    let kill_every = (batches.len() / kills.max(1)).max(1);
    let mut killed = 0;
    for (n, batch) in batches.iter().enumerate() {
        let resp = http
            .post(am.url.join("api/v2/alerts").unwrap())
            .json(batch)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "Alertmanager refused a batch");
        tokio::time::sleep(Duration::from_millis(150)).await;
        if killed < kills && n % kill_every == kill_every - 1 {
            drop(salve); // SIGKILL: no clean-up, no retirement
            killed += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
            life += 1;
            salve = start_salve(dir.path(), &database, salve_port, &alertmanager_url, life);
        }
    }
    while killed < kills {
        tokio::time::sleep(Duration::from_millis(700)).await;
        drop(salve);
        killed += 1;
        life += 1;
        salve = start_salve(dir.path(), &database, salve_port, &alertmanager_url, life);
    }

    // Let the last life finish: every alert stored and decided, every remediation ended.
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(2)
        .connect(&database)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let stored = count(&pool, "SELECT COUNT(*) FROM incidents").await;
        let open = count(&pool, OPEN).await;
        let undecided = count(&pool, UNDECIDED).await;
        if (stored as usize >= alerts && open == 0 && undecided == 0) || Instant::now() > deadline {
            break;
        }
        if started.elapsed().as_millis() % 5000 < 500 {
            eprintln!(
                "  {:>5.1?}: {stored} incidents stored, {undecided} undecided, {open} remediations open",
                started.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let settled_after = started.elapsed();

    let stored = count(&pool, "SELECT COUNT(DISTINCT fingerprint) FROM incidents").await;
    let duplicate_incidents = count(
        &pool,
        "SELECT COUNT(*) FROM (SELECT fingerprint FROM incidents GROUP BY fingerprint, starts_at HAVING COUNT(*) > 1) d",
    )
    .await;
    let duplicate_remediations = count(
        &pool,
        "SELECT COUNT(*) FROM (SELECT incident_id FROM remediations GROUP BY incident_id HAVING COUNT(*) > 1) d",
    )
    .await;
    let open = count(&pool, OPEN).await;
    let undecided = count(&pool, UNDECIDED).await;
    let stale_locks = count(
        &pool,
        "SELECT COUNT(*) FROM target_locks l JOIN remediations r ON r.id = l.remediation_id
         WHERE r.state NOT IN ('pending', 'executing', 'verifying')",
    )
    .await;
    let remediations = count(&pool, "SELECT COUNT(*) FROM remediations").await;
    let interrupted = count(
        &pool,
        "SELECT COUNT(*) FROM remediations WHERE state = 'interrupted'",
    )
    .await;
    let deliveries = count(&pool, "SELECT COUNT(*) FROM deliveries").await;
    let states: Vec<String> =
        sqlx::query("SELECT state, COUNT(*) AS n FROM remediations GROUP BY state ORDER BY state")
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{} {}",
                    r.try_get::<i64, _>("n").unwrap(),
                    r.try_get::<String, _>("state").unwrap()
                )
            })
            .collect();

    // A Deployment changed twice was acted on twice: the cooldown allows one change.
    let mut writes: BTreeMap<String, usize> = BTreeMap::new();
    for w in kube.writes().iter().filter(|w| w.status < 300) {
        *writes.entry(w.path.clone()).or_default() += 1;
    }
    let doubled_actions = writes.values().filter(|n| **n > 1).count();

    let lost = alerts.saturating_sub(stored as usize);
    println!(
        "soak ({backend}): {alerts} alerts through Alertmanager, {kills} SIGKILLs of salve, settled after {settled_after:.1?}"
    );
    println!("  webhook deliveries stored:    {deliveries}");
    println!("  incidents stored:             {stored}");
    println!(
        "  remediations:                 {remediations}: {}",
        states.join(", ")
    );
    println!(
        "  Deployments changed:          {} ({interrupted} changes interrupted by a kill)",
        writes.len()
    );
    println!("  lost alerts:                  {lost}");
    println!("  duplicate incidents:          {duplicate_incidents}");
    println!("  duplicate remediations:       {duplicate_remediations}");
    println!("  Deployments changed twice:    {doubled_actions}");
    println!("  stuck remediations:           {open}");
    println!("  undecided incidents:          {undecided}");
    println!("  locks of ended remediations:  {stale_locks}");
    drop(salve);
    let bad = lost as i64
        + duplicate_incidents
        + duplicate_remediations
        + doubled_actions as i64
        + open
        + undecided
        + stale_locks;
    if bad > 0 {
        eprintln!("soak FAILED; logs in {}", dir.keep().display());
        std::process::exit(1);
    }
    if std::env::var_os("SALVE_SOAK_KEEP").is_some() {
        eprintln!("logs kept in {}", dir.keep().display());
    }
}
