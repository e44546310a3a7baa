//! Crash at every point between "decided" and "terminal", restart, and check that
//! nothing is stuck and nothing is repeated.
//!
//! For each crash point of `salve::crash::POINTS`, a real `salve serve` process (built
//! with the `failpoints` feature, against the fake API server) is armed to abort there,
//! as `kill -9` would, and handed one firing alert. Once it has died at that point, a
//! second process starts on the same database and settles what the first left. Then:
//! the remediation is terminal (resumed by its new owner, or recorded), no workload lock
//! outlives it, the workload was written at most once (a write that may have landed is
//! never re-sent), an `escalated` remediation has its escalation, and no incident is
//! left undecided. Runs on SQLite, and on PostgreSQL with `SALVE_TEST_DATABASE=postgres`.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use salve::store::Store;
use serde_json::Value;
use support::{
    FakeKube, SalveProcess as Serve, eventually, fixture, fresh_database, policies_with_rules, real,
};

/// One scale step; without Prometheus or a resolved webhook its verification ends
/// unknown, so the remediation ends escalated: every crash point lies on this path.
const RULES: &str = r#"
rules:
  - name: checkout-scale
    matchers: ['alertname="HighRequestLatency"']
    target: { kind: Deployment, name: "{{ deployment }}" }
    action:
      scale: { by: 1, max: 10 }
    verify: { within: 1s, every: 100ms }
    cooldown: 0s
"#;

/// Where to crash: a point, on its first or second pass. `reverting` runs the rule with
/// revert on failure against a workload whose rollouts never finish: the change is
/// reverted (a second write), so the crash points of `send` are passed twice.
struct Case {
    point: &'static str,
    pass: u32,
    reverting: bool,
}

fn serve(
    dir: &Path,
    database: &str,
    kubeconfig: &Path,
    crash_at: Option<&Case>,
    log: &str,
) -> Serve {
    let log = dir.join(log);
    Serve::start(dir, database, kubeconfig, real::free_port(), &log, |cmd| {
        cmd.args(["--shutdown-grace", "2s"]).env("RUST_LOG", "info");
        if let Some(case) = crash_at {
            // `N*off->return`: pass the point N times, then crash on the next pass.
            let skip = match case.pass {
                1 => String::new(),
                n => format!("{}*off->", n - 1),
            };
            cmd.env("FAILPOINTS", format!("{}={skip}return", case.point));
        }
    })
}

/// [`serve`] with the storm brake off: a test that opens more remediations in a minute
/// than the brake allows (20) would otherwise see them paused before any reaches its
/// write, however fast the store is (the brake has its own tests).
fn serve_without_brake(dir: &Path, database: &str, kubeconfig: &Path, log: &str) -> Serve {
    let log = dir.join(log);
    Serve::start(dir, database, kubeconfig, real::free_port(), &log, |cmd| {
        cmd.args(["--shutdown-grace", "2s", "--storm-brake-per-minute", "0"])
            .env("RUST_LOG", "info");
    })
}

async fn post(http: &reqwest::Client, s: &Serve, body: &str) -> Result<u16, String> {
    http.post(format!("{}/api/v1/alerts", s.url))
        .body(body.to_owned())
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

async fn get(http: &reqwest::Client, s: &Serve, path: &str) -> Result<Value, String> {
    let resp = http
        .get(format!("{}{path}", s.url))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    resp.json().await.map_err(|e| e.to_string())
}

const TERMINAL: &[&str] = &[
    "healed",
    "escalated",
    "failed",
    "denied",
    "skipped",
    "dry_run",
    "interrupted",
];

/// One crash, one restart; the invariants after.
async fn crash_and_recover(case: &Case) {
    let point = case.point;
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    let mut rules = RULES.to_owned();
    if case.reverting {
        kube.stall_rollouts("deployments", "shop", "checkout");
        rules = rules.replace("cooldown: 0s", "revert_on_failure: true\n    cooldown: 0s");
    }
    let dir = tempfile::tempdir().unwrap();
    let database = fresh_database(dir.path()).await;
    policies_with_rules(dir.path(), Some(&rules));
    let kubeconfig = kube.write_kubeconfig(dir.path());
    salve::telemetry::install_crypto_provider();
    let http = reqwest::Client::new();
    let log = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();

    // The first life: acknowledges the alert, then dies at the crash point.
    let mut first = serve(dir.path(), &database, &kubeconfig, Some(case), "first.log");
    let firing = fixture("firing-from-prometheus-rule.json");
    eventually(
        "the first salve to acknowledge the alert",
        Duration::from_secs(30),
        async || match post(&http, &first, &firing).await? {
            200 => Ok(()),
            other => Err(format!("status {other}")),
        },
    )
    .await;
    let status = eventually(
        &format!("salve to crash at {point}"),
        Duration::from_secs(20),
        async || {
            first
                .child
                .try_wait()
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("still running; its log:\n{}", log("first.log")))
        },
    )
    .await;
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "{point}: the first salve ended with {status:?}, not at the crash point; its log:\n{}",
        log("first.log")
    );
    assert!(log("first.log").contains(&format!("crash point {point} reached")));
    let writes_before_restart = kube.writes().len();

    // The second life settles or resumes what the first left.
    let second = serve(dir.path(), &database, &kubeconfig, None, "second.log");
    let remediation = eventually(
        &format!("{point}: the remediation to end"),
        Duration::from_secs(30),
        async || {
            let list = get(&http, &second, "/api/v1/remediations").await?;
            let items = list["items"].as_array().cloned().unwrap_or_default();
            match items.as_slice() {
                [r] if TERMINAL.contains(&r["state"].as_str().unwrap_or_default()) => Ok(r.clone()),
                _ => Err(format!("{items:?}\nsecond log:\n{}", log("second.log"))),
            }
        },
    )
    .await;
    let id = remediation["id"].as_str().unwrap().to_owned();
    let state = remediation["state"].as_str().unwrap().to_owned();

    let store = Store::connect(&database).await.unwrap();
    // No workload lock outlives a finished remediation.
    let locks = store.locks().await.unwrap();
    assert!(
        locks.is_empty(),
        "{point}: locks left after {state}: {locks:?}"
    );
    // No incident is left undecided.
    assert!(
        store.undecided_firing_incidents().await.unwrap().is_empty(),
        "{point}: an incident is still undecided"
    );
    // A write that may have landed is never sent again: once the first life had
    // reserved a write (its remediation `executing`), the restart writes nothing more.
    let writes = kube.writes();
    let order = |p: &str| salve::crash::POINTS.iter().position(|q| *q == p);
    let reserved = case.pass > 1 || order(point) >= order("send.write_reserved");
    if reserved {
        assert_eq!(
            writes.len(),
            writes_before_restart,
            "{point} (pass {}): the restart wrote again: {writes:?}",
            case.pass
        );
    } else {
        assert!(
            writes.len() <= 1,
            "{point}: written {} times: {writes:?}",
            writes.len()
        );
    }
    // The workload shows exactly the writes made: +1 for the change, -1 for its revert.
    let replicas =
        kube.get("deployments", "shop", "checkout").unwrap()["spec"]["replicas"].as_i64();
    let expected = match writes.len() {
        0 | 2 => 2,
        _ => 3,
    };
    assert_eq!(
        replicas,
        Some(expected),
        "{point}: replicas after {} write(s)",
        writes.len()
    );
    // An executing remediation whose owner died is interrupted, never re-sent.
    if matches!(
        point,
        "send.write_reserved" | "send.before_write" | "send.after_write"
    ) {
        assert_eq!(state, "interrupted", "{point} (pass {})", case.pass);
    }
    // An escalated remediation has its escalation: claimed in the same transaction, and
    // delivered by the outbox even when its claimer died before the first round.
    if state == "escalated" {
        assert!(
            store.escalation_claimed(&id).await.unwrap(),
            "{point}: escalated without an escalation"
        );
        eventually(
            &format!("{point}: the escalation round on the timeline"),
            Duration::from_secs(60),
            async || {
                let detail = get(&http, &second, &format!("/api/v1/remediations/{id}")).await?;
                let rounds = detail["timeline"].as_array().map_or(0, |t| {
                    t.iter().filter(|e| e["kind"] == "escalation").count()
                });
                match rounds {
                    1 => Ok(()),
                    n => Err(format!("{n} escalation rounds: {detail:#}")),
                }
            },
        )
        .await;
    }
    eprintln!(
        "crash at {point} (pass {}): ended {state} after the restart, {} write(s)",
        case.pass,
        writes.len()
    );
}

#[tokio::test]
async fn every_crash_point_resumes_or_records_and_never_repeats_a_write() {
    for point in salve::crash::POINTS {
        crash_and_recover(&Case {
            point,
            pass: 1,
            reverting: false,
        })
        .await;
    }
}

#[tokio::test]
async fn a_crash_around_a_revert_never_reverts_twice() {
    for point in [
        "send.write_reserved",
        "send.before_write",
        "send.after_write",
        "send.verifying",
    ] {
        crash_and_recover(&Case {
            point,
            pass: 2,
            reverting: true,
        })
        .await;
    }
}

#[tokio::test]
async fn sigterm_under_a_backlog_stops_within_the_grace_period_and_loses_nothing() {
    let kube = FakeKube::start().await;
    for i in 0..30 {
        kube.add_deployment("shop", &format!("web-{i}"), 2, "web:1.0");
    }
    let dir = tempfile::tempdir().unwrap();
    let database = fresh_database(dir.path()).await;
    // Long verification windows: every permit is busy, the rest wait in the queue.
    policies_with_rules(
        dir.path(),
        Some(&RULES.replace("within: 1s", "within: 60s")),
    );
    let kubeconfig = kube.write_kubeconfig(dir.path());
    salve::telemetry::install_crypto_provider();
    let http = reqwest::Client::new();
    let log = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();

    let mut first = serve_without_brake(dir.path(), &database, &kubeconfig, "first.log");
    for i in 0..30u32 {
        let body = support::firing_for(
            "HighRequestLatency",
            "shop",
            &format!("web-{i}"),
            &format!("{i:016x}"),
        );
        eventually(
            "an acknowledgement",
            Duration::from_secs(30),
            async || match post(&http, &first, &body).await? {
                200 => Ok(()),
                other => Err(format!("status {other}")),
            },
        )
        .await;
    }
    eventually(
        "verifications to be under way",
        Duration::from_secs(20),
        async || {
            let list = get(&http, &first, "/api/v1/remediations?state=verifying").await?;
            match list["items"].as_array().map_or(0, Vec::len) {
                0 => Err(format!("{list}")),
                _ => Ok(()),
            }
        },
    )
    .await;

    let asked = std::time::Instant::now();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(first.child.id() as i32, libc::SIGTERM) };
    let status = eventually("salve to stop", Duration::from_secs(30), async || {
        first
            .child
            .try_wait()
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "still running".to_owned())
    })
    .await;
    let took = asked.elapsed();
    eprintln!("SIGTERM with a backlog: stopped in {took:?} ({status:?})");
    assert!(status.success(), "{status:?}; log:\n{}", log("first.log"));
    // --shutdown-grace 2s, plus the server's drain: well inside Kubernetes' 30 s.
    assert!(took < Duration::from_secs(6), "stopping took {took:?}");

    // The next life settles what was in flight and decides what was never reached (with
    // short windows now, so it is not the permits that the test waits for).
    policies_with_rules(dir.path(), Some(RULES));
    let second = serve_without_brake(dir.path(), &database, &kubeconfig, "second.log");
    let store = Store::connect(&database).await.unwrap();
    eventually(
        "every incident decided",
        Duration::from_secs(30),
        async || {
            let undecided = store
                .undecided_firing_incidents()
                .await
                .map_err(|e| e.to_string())?;
            match undecided.len() {
                0 => Ok(()),
                n => Err(format!("{n} undecided")),
            }
        },
    )
    .await;
    drop(second);
    let deliveries = store.delivery_count().await.unwrap();
    assert_eq!(deliveries, 30, "every acknowledged alert is stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_delivery_survives_a_kill_9_under_load() {
    let kube = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let database = fresh_database(dir.path()).await;
    policies_with_rules(dir.path(), Some(RULES));
    let kubeconfig = kube.write_kubeconfig(dir.path());
    salve::telemetry::install_crypto_provider();
    let salve = serve(dir.path(), &database, &kubeconfig, None, "first.log");
    let http = reqwest::Client::new();
    eventually("salve to listen", Duration::from_secs(30), async || {
        let health = http.get(format!("{}/healthz", salve.url)).send().await;
        match health {
            Ok(r) if r.status() == 200 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // 16 connections post distinct alerts as fast as they are answered (so deliveries
    // are committed in groups); SIGKILL lands in the middle of it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let posters: Vec<_> = (0..16u32)
        .map(|c| {
            let (http, url, stop) = (http.clone(), salve.url.clone(), stop.clone());
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut n = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let fp = format!("{:08x}{n:08x}", c);
                    let body = support::firing_for(
                        "HighRequestLatency",
                        "storm",
                        &format!("web-{c}-{n}"),
                        &fp,
                    );
                    match http
                        .post(format!("{url}/api/v1/alerts"))
                        .body(body)
                        .send()
                        .await
                    {
                        Ok(r) if r.status() == 200 => acked.push(fp),
                        Ok(_) => {}
                        Err(_) => break, // the process is gone
                    }
                    n += 1;
                }
                acked
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pid = salve.child.id() as i32;
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    for p in posters {
        acked.extend(p.await.unwrap());
    }
    drop(salve);

    let store = Store::connect(&database).await.unwrap();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&database)
        .await
        .unwrap();
    let stored: std::collections::HashSet<String> =
        sqlx::query_as::<_, (String,)>("SELECT fingerprint FROM incidents")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .map(|(fp,)| fp)
            .collect();
    let lost: Vec<&String> = acked.iter().filter(|fp| !stored.contains(*fp)).collect();
    eprintln!(
        "kill -9 under load: {} acknowledged, {} stored, {} acknowledged but lost",
        acked.len(),
        stored.len(),
        lost.len()
    );
    assert!(
        acked.len() > 100,
        "only {} acknowledged before the kill",
        acked.len()
    );
    assert!(lost.is_empty(), "acknowledged, then lost: {lost:?}");
    assert_eq!(store.delivery_count().await.unwrap() as usize, stored.len());
}
