//! Closing the loop against the fake API server: verify, climb the ladder, revert,
//! escalate, and learn what works.

mod support;

use chrono::{Duration, Utc};
use salve::cluster::{TargetRef, WorkloadKind};
use salve::store::Store;
use salve::store::learning::{AttemptOutcome, NewAttempt};
use serde_json::{Value, json};
use support::{
    Capture, FakeKube, Options, TestSalve, events, firing_for, fixture, resolved, spawn_salve,
};

const LADDER: &str = r#"
rules:
  - name: checkout-ladder
    matchers: ['alertname="HighRequestLatency"']
    target: { kind: Deployment, name: "{{ deployment }}" }
    steps:
      - scale: { by: 1, max: 10 }
      - scale: { by: 2, max: 10 }
    verify: { within: 700ms, every: 100ms }
    revert_on_failure: true
    cooldown: 0s
"#;

async fn salve_with(kube: &FakeKube, rules: &str, capture: Option<&Capture>) -> TestSalve {
    spawn_salve(Options {
        kube: Some(kube.clone()),
        rules: Some(rules.to_owned()),
        escalation_webhook_url: capture.map(|c| c.url.clone()),
        ..Options::default()
    })
    .await
}

fn replicas(kube: &FakeKube) -> i64 {
    kube.get("deployments", "shop", "checkout").unwrap()["spec"]["replicas"]
        .as_i64()
        .unwrap()
}

/// The payload with its alert's `startsAt` set to `at`.
fn starting_at(firing: &str, at: chrono::DateTime<Utc>) -> String {
    let mut v: Value = serde_json::from_str(firing).unwrap();
    v["alerts"][0]["startsAt"] = at.to_rfc3339().into();
    v.to_string()
}

#[tokio::test]
async fn a_resolved_notification_during_verification_heals() {
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    let slow = LADDER.replace("within: 700ms", "within: 20s");
    let s = salve_with(&kube, &slow, None).await;
    let firing = fixture("firing-from-prometheus-rule.json");
    s.post_alerts(&firing).await;
    s.reached(1, &["verifying"]).await;
    assert_eq!(replicas(&kube), 3);

    let (status, ack) = s.post_alerts(&resolved(&firing)).await;
    assert_eq!((status, ack["resolved"].as_u64()), (200, Some(1)));
    let items = s.finished(1).await;
    let r = &items[0];
    assert_eq!(r["state"], "healed", "{r:#}");
    assert!(r["summary"].as_str().unwrap().starts_with(
        "healed: scale Deployment shop/checkout from 2 to 3 replicas (verified after"
    ));
    let detail = s.detail(r["id"].as_str().unwrap()).await;
    let verification = &events(&detail, "verification")[0]["detail"];
    assert_eq!(verification["outcome"], "healed", "{verification}");
    let polls = verification["polls"].as_array().unwrap();
    let last = polls.last().unwrap();
    assert_eq!(last["alert"]["status"], "resolved", "{verification}");
    assert_eq!(last["alert"]["detail"], "Alertmanager sent resolved");
    assert_eq!(last["rollout"]["status"], "done", "{verification}");
    assert!(
        polls
            .iter()
            .all(|p| p["at"].as_str().is_some_and(|t| t.ends_with('Z'))),
        "every poll carries its time: {verification}"
    );
    assert!(events(&detail, "escalation").is_empty());
}

#[tokio::test]
async fn the_ladder_climbs_then_escalates_once() {
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    let capture = Capture::start().await;
    let s = salve_with(&kube, LADDER, Some(&capture)).await;
    let firing = fixture("firing-from-prometheus-rule.json");
    s.post_alerts(&firing).await;
    let items = s.finished(1).await;

    assert_eq!(replicas(&kube), 5, "step 1 (+1) then step 2 (+2)");
    let r = &items[0];
    assert_eq!(r["state"], "escalated", "{r:#}");
    assert!(
        r["summary"]
            .as_str()
            .unwrap()
            .contains("not healed after 2 step(s)"),
        "{r:#}"
    );
    // Alertmanager keeps re-sending the still-firing alert: no second escalation.
    capture.received(1).await;
    s.post_alerts(&firing).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let sent = capture.bodies();
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(sent[0]["remediation_id"], r["id"]);
    // The link a person follows: the remediation's audit page at salve's external URL.
    assert_eq!(
        sent[0]["audit_url"],
        format!("{}/ui/remediations/{}", s.url, r["id"].as_str().unwrap())
    );
    let detail = s.detail(r["id"].as_str().unwrap()).await;
    assert_eq!(
        events(&detail, "policy_evaluated").len(),
        2,
        "each step judged on fresh state"
    );
    let steps: Vec<Value> = events(&detail, "policy_evaluated")
        .iter()
        .map(|e| e["detail"]["input"]["action"]["from"]["replicas"].clone())
        .collect();
    assert_eq!(steps, vec![json!(2), json!(3)]);

    // Each window is honoured to its end: the last poll is at or after `within` (700ms),
    // and every poll carries its time.
    for v in events(&detail, "verification") {
        let polls = v["detail"]["polls"].as_array().unwrap();
        let last = polls.last().unwrap()["after_seconds"].as_f64().unwrap();
        assert!(last >= 0.7, "gave up at {last}s: {v:#}");
        assert!(polls.len() >= 7, "every 100ms for 700ms: {v:#}");
    }

    let (_, by_outcome) = s.get("/api/v1/remediations?outcome=not_healed").await;
    assert_eq!(by_outcome["items"].as_array().unwrap().len(), 1);
    let (_, none) = s.get("/api/v1/remediations?outcome=healed").await;
    assert!(none["items"].as_array().unwrap().is_empty());

    // `salve stats` shows what each step achieved for this alert on this workload.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_salve"))
        .args(["stats", "--database", &s.database, "--output", "json"])
        .output()
        .unwrap();
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let got: Vec<(String, i64, i64)> = rows
        .iter()
        .map(|r| {
            (
                r["step_key"].as_str().unwrap().to_owned(),
                r["attempts"].as_i64().unwrap(),
                r["healed"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![("scale:by=1".into(), 1, 0), ("scale:by=2".into(), 1, 0)]
    );
    assert!(rows.iter().all(
        |r| r["alertname"] == "HighRequestLatency" && r["target"] == "Deployment/shop/checkout"
    ));
    let table = std::process::Command::new(env!("CARGO_BIN_EXE_salve"))
        .args(["stats", "--database", &s.database])
        .output()
        .unwrap();
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(
        table.contains("HighRequestLatency") && table.contains("scale:by=2"),
        "{table}"
    );
}

#[tokio::test]
async fn a_rollout_that_fails_is_reverted_and_escalated() {
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    kube.stall_rollouts("deployments", "shop", "checkout");
    let capture = Capture::start().await;
    let s = salve_with(&kube, LADDER, Some(&capture)).await;
    s.post_alerts(&fixture("firing-from-prometheus-rule.json"))
        .await;
    let items = s.finished(1).await;

    let r = &items[0];
    assert_eq!(r["state"], "escalated", "{r:#}");
    let reason = r["reasons"][0].as_str().unwrap();
    assert!(
        reason.contains("made things worse") && reason.contains("timed out progressing"),
        "{reason}"
    );
    assert!(
        reason.contains("salve reverted its change (scaled back to 2 replicas)"),
        "{reason}"
    );
    assert_eq!(replicas(&kube), 2, "reverted");
    let scales: Vec<String> = kube.writes().iter().map(|w| w.path.clone()).collect();
    assert_eq!(
        scales.len(),
        2,
        "the change and its revert, no second step: {scales:?}"
    );
    assert_eq!(capture.received(1).await.len(), 1);
    let detail = s.detail(r["id"].as_str().unwrap()).await;
    assert_eq!(events(&detail, "revert")[0]["detail"]["reverted"], true);
}

/// Records finished attempts for HighRequestLatency on shop/checkout, as past runs would have.
async fn seed(
    store: &Store,
    n: &mut u32,
    step_key: &str,
    action: &'static str,
    tries: u32,
    healed: u32,
) {
    let target = TargetRef::new(WorkloadKind::Deployment, "shop", "checkout").unwrap();
    let at = Utc::now() - Duration::days(2);
    for i in 0..tries {
        *n += 1;
        let (_, id) =
            support::seed_remediation(store, 0xf000 + *n, ("shop", "checkout"), action, at).await;
        let ok = i < healed;
        let attempt = NewAttempt {
            remediation_id: &id,
            step: 1,
            alertname: "HighRequestLatency",
            target: &target,
            action,
            step_key: step_key.into(),
            started_at: at,
            acted_at: Some(at),
            outcome: if ok {
                AttemptOutcome::Healed
            } else {
                AttemptOutcome::NotHealed
            },
            seconds_to_heal: ok.then_some(30.0 + f64::from(i) * 20.0),
            detail: json!({}),
        };
        store.record_attempt(&attempt, at).await.unwrap();
    }
}

#[tokio::test]
async fn input_history_reaches_the_policy_with_correct_numbers() {
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    let dir = tempfile::tempdir().unwrap();
    let database = support::fresh_database(dir.path()).await;
    let store = Store::open(&database).await.unwrap();
    let mut n = 0;
    seed(&store, &mut n, "scale:by=1", "scale", 10, 2).await;
    seed(&store, &mut n, "restart", "restart", 3, 3).await;
    drop(store);

    let s = spawn_salve(Options {
        kube: Some(kube.clone()),
        rules: Some(LADDER.into()),
        database: Some(database),
        ..Options::default()
    })
    .await;
    // A policy author's rule on learned numbers: the issue's own example.
    std::fs::write(
        s.dir.path().join("policies/learned.rego"),
        "package salve\n\nimport rego.v1\n\ndeny contains msg if {\n\ts := input.history.stats.this_action\n\ts.attempts >= 10\n\ts.success_rate < 0.3\n\tmsg := sprintf(\"%s healed only %d of the last %d times\", [s.action, s.healed, s.attempts])\n}\n",
    )
    .unwrap();
    assert_eq!(
        s.http
            .post(format!("{}/-/reload", s.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    s.post_alerts(&fixture("firing-from-prometheus-rule.json"))
        .await;
    let items = s.finished(14).await;
    let r = items
        .iter()
        .find(|r| r["rule"] == "checkout-ladder")
        .unwrap();
    assert_eq!(r["state"], "denied", "{r:#}");
    assert_eq!(r["reasons"][0], "scale healed only 2 of the last 10 times");
    let detail = s.detail(r["id"].as_str().unwrap()).await;
    let stats = &events(&detail, "policy_evaluated")[0]["detail"]["input"]["history"]["stats"];
    assert_eq!(stats["window_days"], 30);
    assert_eq!(stats["this_action"]["attempts"], 10);
    assert_eq!(stats["this_action"]["healed"], 2);
    assert_eq!(stats["this_action"]["success_rate"], 0.2);
    assert_eq!(
        stats["this_action"]["mean_seconds_to_heal"], 40.0,
        "(30 + 50) / 2"
    );
    let restart = stats["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step_key"] == "restart")
        .unwrap();
    assert_eq!(
        (restart["attempts"].as_i64(), restart["healed"].as_i64()),
        (Some(3), Some(3))
    );
    assert_eq!(replicas(&kube), 2, "denied: nothing changed");
}

#[tokio::test]
async fn a_learned_order_tries_the_step_that_healed_most_often_first() {
    let rules = |order: &str| {
        format!(
            "rules:\n  - name: learned\n    matchers: ['alertname=\"HighRequestLatency\"']\n    target: {{ kind: Deployment, name: \"{{{{ deployment }}}}\" }}\n    steps:\n      - scale: {{ by: 1, max: 10 }}\n      - restart: {{}}\n    order: {order}\n    verify: {{ within: 20s, every: 100ms }}\n"
        )
    };
    for (order, expect_restart_first) in [("as_written", false), ("learned", true)] {
        let kube = FakeKube::start().await;
        kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
        let dir = tempfile::tempdir().unwrap();
        let database = support::fresh_database(dir.path()).await;
        let store = Store::open(&database).await.unwrap();
        let mut n = 0;
        seed(&store, &mut n, "scale:by=1", "scale", 3, 0).await;
        seed(&store, &mut n, "restart", "restart", 3, 3).await;
        drop(store);
        let s = spawn_salve(Options {
            kube: Some(kube.clone()),
            rules: Some(rules(order)),
            database: Some(database),
            ..Options::default()
        })
        .await;
        s.post_alerts(&fixture("firing-from-prometheus-rule.json"))
            .await;
        let items = s.reached(7, &["verifying"]).await;
        let r = items.iter().find(|r| r["rule"] == "learned").unwrap();
        assert_eq!(
            r["action"],
            if expect_restart_first {
                "restart"
            } else {
                "scale"
            },
            "{order}: {r:#}"
        );
        let d = kube.get("deployments", "shop", "checkout").unwrap();
        let restarted = d["spec"]["template"]["metadata"]["annotations"]
            .get("kubectl.kubernetes.io/restartedAt")
            .is_some();
        assert_eq!(restarted, expect_restart_first, "{order}");
        assert_eq!(
            d["spec"]["replicas"],
            if expect_restart_first { 2 } else { 3 },
            "{order}"
        );
    }
}

#[tokio::test]
async fn a_new_alert_on_the_workload_during_verification_reverts_the_change() {
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    let capture = Capture::start().await;
    let rules = LADDER.replace("within: 700ms", "within: 20s");
    let s = salve_with(&kube, &rules, Some(&capture)).await;
    s.post_alerts(&fixture("firing-from-prometheus-rule.json"))
        .await;
    s.reached(1, &["verifying"]).await;
    assert_eq!(replicas(&kube), 3);

    // Another alert starts on the same Deployment after salve's change.
    s.post_alerts(&starting_at(
        &firing_for("HighRequestLatency", "shop", "checkout", "abcdef0000000001"),
        Utc::now(),
    ))
    .await;
    let items = s.finished(2).await;
    let first = items
        .iter()
        .find(|r| r["state"] == "escalated")
        .expect("the first remediation escalates");
    let reason = first["reasons"][0].as_str().unwrap();
    assert!(
        reason.contains("started on Deployment shop/checkout after the change"),
        "{reason}"
    );
    assert!(reason.contains("scaled back to 2 replicas"), "{reason}");
    assert_eq!(replicas(&kube), 2);
    assert_eq!(capture.received(1).await.len(), 1);
}

#[tokio::test]
async fn an_alert_that_started_before_the_change_is_not_blamed_on_it() {
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    let rules = LADDER.replace("within: 700ms", "within: 2s");
    let s = salve_with(&kube, &rules, None).await;
    let before_the_change = Utc::now() - Duration::seconds(30);
    s.post_alerts(&fixture("firing-from-prometheus-rule.json"))
        .await;
    s.reached(1, &["verifying"]).await;
    // Its webhook arrives after the write, but the alert started before it.
    s.post_alerts(&starting_at(
        &firing_for("HighRequestLatency", "shop", "checkout", "abcdef0000000003"),
        before_the_change,
    ))
    .await;
    let items = s.finished(2).await;
    let first = items
        .iter()
        .find(|r| r["rule"] == "checkout-ladder" && r["state"] != "skipped")
        .unwrap();
    let reason = first["reasons"][0].as_str().unwrap();
    assert!(!reason.contains("made things worse"), "{reason}");
    assert!(reason.contains("not healed after 2 step(s)"), "{reason}");
    assert_eq!(
        replicas(&kube),
        5,
        "not reverted: the ladder climbed +1 then +2"
    );
}

#[tokio::test]
async fn an_alert_that_resolves_between_steps_stops_the_ladder() {
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    // The Deployment's rollout had already failed before salve: step 1 cannot heal it
    // within its window, whatever the alert does.
    kube.stall_rollouts("deployments", "shop", "checkout");
    kube.set_image("shop", "checkout", "checkout:1.5-broken");
    let rules = LADDER.replace("within: 700ms", "within: 1500ms");
    let s = salve_with(&kube, &rules, None).await;
    let firing = fixture("firing-from-prometheus-rule.json");
    s.post_alerts(&firing).await;
    s.reached(1, &["verifying"]).await;
    s.post_alerts(&resolved(&firing)).await;
    let items = s.finished(1).await;
    let r = &items[0];
    assert_eq!(r["state"], "healed", "{r:#}");
    assert!(
        r["summary"]
            .as_str()
            .unwrap()
            .starts_with("healed: the alert resolved before step 2"),
        "{r:#}"
    );
    assert_eq!(replicas(&kube), 3, "step 1 only; step 2 was never taken");
    let scale_writes = kube
        .writes()
        .iter()
        .filter(|w| w.path.ends_with("/scale"))
        .count();
    assert_eq!(scale_writes, 1);
}

#[tokio::test]
async fn a_refire_after_resolution_is_a_new_incident_but_the_cooldown_holds() {
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    let rules = LADDER
        .replace("within: 700ms", "within: 20s")
        .replace("cooldown: 0s", "cooldown: 10m");
    let s = salve_with(&kube, &rules, None).await;
    let firing = fixture("firing-from-prometheus-rule.json");
    s.post_alerts(&firing).await;
    s.reached(1, &["verifying"]).await;
    s.post_alerts(&resolved(&firing)).await;
    s.finished(1).await;

    // The same alert fires again later: Alertmanager gives it a new startsAt.
    let mut again: Value = serde_json::from_str(&firing).unwrap();
    again["alerts"][0]["startsAt"] = Utc::now().to_rfc3339().into();
    let (_, ack) = s.post_alerts(&again.to_string()).await;
    assert_eq!(ack["new_incidents"], 1, "a re-fire is a new incident");
    let items = s.finished(2).await;
    let refire = &items[0];
    assert_eq!(refire["state"], "skipped", "{refire:#}");
    assert!(
        refire["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("cooldown: salve changed Deployment shop/checkout")
    );
    assert_eq!(items[1]["state"], "healed");
    assert_eq!(replicas(&kube), 3, "no second change within the cooldown");
}

#[tokio::test]
async fn the_workload_stays_locked_for_the_whole_ladder() {
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    let rules = LADDER.replace("within: 700ms", "within: 3s");
    let s = spawn_salve(Options {
        kube: Some(kube.clone()),
        rules: Some(rules),
        limits: salve::engine::Limits {
            lock_lease: std::time::Duration::from_secs(1),
            call_timeout: std::time::Duration::from_secs(5),
            ..salve::engine::Limits::default()
        },
        ..Options::default()
    })
    .await;
    s.post_alerts(&fixture("firing-from-prometheus-rule.json"))
        .await;
    s.reached(1, &["verifying"]).await;
    // Past the base lease, while the first remediation is still verifying.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    s.post_alerts(&firing_for(
        "HighRequestLatency",
        "shop",
        "checkout",
        "abcdef0000000002",
    ))
    .await;
    let items = s.reached(2, &["verifying"]).await;
    let skipped: Vec<&Value> = items.iter().filter(|r| r["state"] == "skipped").collect();
    assert_eq!(skipped.len(), 1, "{items:#?}");
    assert!(
        skipped[0]["reasons"][0]
            .as_str()
            .unwrap()
            .contains("is being remediated by"),
        "{items:#?}"
    );
}

#[tokio::test]
async fn the_hourly_budget_counts_every_change_not_every_remediation() {
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    let s = spawn_salve(Options {
        kube: Some(kube.clone()),
        rules: Some(LADDER.to_owned()),
        limits: salve::engine::Limits {
            max_actions_per_hour: 1,
            call_timeout: std::time::Duration::from_secs(5),
            ..salve::engine::Limits::default()
        },
        ..Options::default()
    })
    .await;
    s.post_alerts(&fixture("firing-from-prometheus-rule.json"))
        .await;
    let items = s.finished(1).await;
    let r = &items[0];
    assert_eq!(
        replicas(&kube),
        3,
        "step 1 only: step 2 would be the hour's second change"
    );
    let reason = r["reasons"][0].as_str().unwrap();
    assert!(
        reason.contains(
            "salve already made 1 changes to all workloads in the last 1h (budget global 1/1h)"
        ),
        "{reason}"
    );
}

#[tokio::test]
async fn a_remediation_whose_lease_lapsed_stops_without_another_write() {
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    let rules = LADDER.replace("within: 700ms", "within: 3s");
    let s = salve_with(&kube, &rules, None).await;
    s.post_alerts(&fixture("firing-from-prometheus-rule.json"))
        .await;
    s.reached(1, &["verifying"]).await;
    // The lease lapses (as it would if this replica stalled past it).
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&s.database).await.unwrap();
    sqlx::query("UPDATE target_locks SET expires_at = '2000-01-01T00:00:00.000000Z'")
        .execute(&pool)
        .await
        .unwrap();
    let items = s.finished(1).await;
    let reason = items[0]["reasons"][0].as_str().unwrap();
    assert_eq!(items[0]["state"], "escalated", "{:#}", items[0]);
    assert!(reason.contains("lost its lock"), "{reason}");
    assert_eq!(
        replicas(&kube),
        3,
        "no second step after the lease was lost"
    );
    assert_eq!(kube.writes().len(), 1);
}

#[tokio::test]
async fn an_escalation_reaches_every_alertmanager_is_retried_kept_alive_and_resolved() {
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    let am1 = Capture::start().await;
    let am2 = Capture::failing_first(2).await;
    let s = spawn_salve(Options {
        kube: Some(kube.clone()),
        rules: Some(LADDER.to_owned()),
        alertmanager_urls: vec![am1.url.clone(), am2.url.clone()],
        ..Options::default()
    })
    .await;
    let firing = fixture("firing-from-prometheus-rule.json");
    s.post_alerts(&firing).await;
    let items = s.finished(1).await;
    assert_eq!(items[0]["state"], "escalated");
    let id = items[0]["id"].as_str().unwrap().to_owned();

    // The pair's second member refused twice; the outbox retried until it accepted.
    let second = am2.received(1).await;
    assert_eq!(
        second[0][0]["labels"]["alertname"],
        "SalveRemediationFailed"
    );
    // While the original fires, the alert is re-posted before it could lapse.
    let refreshed = am1.received(3).await;
    let ends = |body: &Value| {
        chrono::DateTime::parse_from_rfc3339(body[0]["endsAt"].as_str().unwrap()).unwrap()
    };
    assert!(
        refreshed.iter().all(|b| ends(b) > Utc::now()),
        "{refreshed:#?}"
    );
    assert!(
        ends(&refreshed[0]) < Utc::now() + Duration::minutes(1),
        "endsAt a few refreshes ahead, not hours"
    );

    // The original resolves: so does the escalation, in every Alertmanager.
    s.post_alerts(&resolved(&firing)).await;
    let what = "the escalation to be resolved in both Alertmanagers";
    support::eventually(what, std::time::Duration::from_secs(10), async || {
        let last = |c: &Capture| c.bodies().last().map(&ends);
        match (last(&am1), last(&am2)) {
            (Some(a), Some(b)) if a <= Utc::now() && b <= Utc::now() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // The resolution is recorded just after it was posted.
    let rounds = support::eventually(
        "the resolution on the timeline",
        std::time::Duration::from_secs(10),
        async || {
            let detail = s.detail(&id).await;
            let rounds: Vec<Value> = events(&detail, "escalation").into_iter().cloned().collect();
            if rounds.iter().any(|r| r["detail"]["resolved"] == true) {
                Ok(rounds)
            } else {
                Err(format!("{rounds:#?}"))
            }
        },
    )
    .await;
    assert!(
        rounds[0]["detail"]["delivered"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["ok"] == false),
        "the first round's failure is on the record: {rounds:#?}"
    );
}

#[tokio::test]
async fn a_human_marking_an_escalation_handled_resolves_its_alert() {
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    let am = Capture::start().await;
    let s = spawn_salve(Options {
        kube: Some(kube.clone()),
        rules: Some(LADDER.to_owned()),
        alertmanager_urls: vec![am.url.clone()],
        ..Options::default()
    })
    .await;
    s.post_alerts(&fixture("firing-from-prometheus-rule.json"))
        .await;
    let items = s.finished(1).await;
    let id = items[0]["id"].as_str().unwrap().to_owned();
    am.received(1).await;

    let mark = |id: String| {
        s.http
            .post(format!("{}/api/v1/remediations/{id}/handled", s.url))
            .json(&json!({"by": "alice (INC-4711)"}))
            .send()
    };
    let answer = mark(id.clone()).await.unwrap();
    assert_eq!(answer.status(), 200);
    let ends = |body: &Value| {
        chrono::DateTime::parse_from_rfc3339(body[0]["endsAt"].as_str().unwrap()).unwrap()
    };
    support::eventually(
        "the escalation's alert to be resolved",
        std::time::Duration::from_secs(10),
        async || match am.bodies().last().map(&ends) {
            Some(t) if t <= Utc::now() => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    // The resolution is recorded just after it was posted.
    let rounds = support::eventually(
        "the resolution on the timeline",
        std::time::Duration::from_secs(10),
        async || {
            let detail = s.detail(&id).await;
            let rounds: Vec<Value> = events(&detail, "escalation").into_iter().cloned().collect();
            let resolved = rounds
                .iter()
                .any(|r| r["detail"]["reason"] == "marked handled by alice (INC-4711)");
            if resolved {
                Ok(rounds)
            } else {
                Err(format!("{rounds:#?}"))
            }
        },
    )
    .await;
    assert!(
        rounds
            .iter()
            .any(|r| r["detail"]["by"] == "alice (INC-4711)"),
        "who marked it is on the record: {rounds:#?}"
    );
    // Twice, or for a remediation without an open escalation: 404 with the reason.
    assert_eq!(mark(id).await.unwrap().status(), 404);
}

#[tokio::test]
async fn transient_api_failures_are_retried_and_a_write_that_may_have_landed_is_not() {
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    // The read meets a 503, the dry-run a 500, the real write a 429: each is retried,
    // and the change is made once.
    kube.fail_next("GET", "/deployments/checkout", false, 503);
    kube.fail_next("PATCH", "/deployments/checkout/scale", true, 500);
    kube.fail_next("PATCH", "/deployments/checkout/scale", false, 429);
    let s = salve_with(&kube, LADDER, None).await;
    s.post_alerts(&fixture("firing-from-prometheus-rule.json"))
        .await;
    let r = s.reached(1, &["verifying", "escalated", "healed"]).await[0].clone();
    assert_eq!(replicas(&kube), 3, "{r:#}");
    let detail = s.detail(r["id"].as_str().unwrap()).await;
    let calls = events(&detail, "kube_call");
    let retried: Vec<&Value> = calls
        .iter()
        .copied()
        .filter(|c| c["detail"]["retry_in_ms"].is_u64())
        .collect();
    assert_eq!(retried.len(), 3, "three failures, each retried: {calls:#?}");
    for (failed, code) in retried.iter().zip([503, 500, 429]) {
        assert_eq!(failed["detail"]["status"], code);
    }
    let statuses: Vec<u16> = kube.writes().iter().map(|w| w.status).collect();
    assert_eq!(
        statuses,
        [429, 200],
        "refused once (changing nothing), then made once"
    );

    // A 500 on the real write may hide a change that landed: it is not sent again.
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    kube.fail_next("PATCH", "/deployments/checkout/scale", false, 500);
    let s = salve_with(&kube, LADDER, None).await;
    s.post_alerts(&fixture("firing-from-prometheus-rule.json"))
        .await;
    let r = s.finished(1).await[0].clone();
    let detail = s.detail(r["id"].as_str().unwrap()).await;
    let real_writes: Vec<&Value> = events(&detail, "kube_call")
        .into_iter()
        .filter(|c| c["detail"]["verb"] == "PATCH" && c["detail"]["dry_run"] == false)
        .filter(|c| c["detail"]["path"].as_str().unwrap().ends_with("/scale"))
        .collect();
    assert_eq!(real_writes.len(), 1, "{real_writes:#?}");
    assert_eq!(real_writes[0]["detail"]["status"], 500);
    assert!(real_writes[0]["detail"]["retry_in_ms"].is_null());
    assert_ne!(r["state"], "healed", "{r:#}");
}

/// A salve with one turn to drive (`limits` otherwise), held by a remediation of
/// shop/checkout (which `kube` must hold) verifying for 20 s; and the alert that opened it.
async fn with_the_only_turn_held(
    kube: &FakeKube,
    limits: salve::engine::Limits,
    fingerprint: &str,
) -> (TestSalve, String) {
    let s = spawn_salve(Options {
        kube: Some(kube.clone()),
        rules: Some(LADDER.replace("within: 700ms", "within: 20s")),
        limits: salve::engine::Limits {
            concurrency: 1,
            ..limits
        },
        ..Options::default()
    })
    .await;
    let blocker = firing_for("HighRequestLatency", "shop", "checkout", fingerprint);
    s.post_alerts(&blocker).await;
    s.reached(1, &["verifying"]).await;
    (s, blocker)
}

#[tokio::test]
async fn a_replica_with_every_turn_taken_keeps_its_heartbeat_and_still_decides() {
    // One turn to drive, held by a remediation verifying for 20 s, and a second incident
    // arriving: the worker must keep beating meanwhile, or every other replica would take
    // this live one for dead and settle its work. And the second incident is decided at
    // once (in a storm, every alert is decided at the store's pace): its remediation
    // opens and waits for the turn.
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    kube.add_deployment("shop", "cart", 2, "cart:1.0");
    let ttl = std::time::Duration::from_millis(900);
    let limits = salve::engine::Limits {
        heartbeat_ttl: ttl,
        ..salve::engine::Limits::default()
    };
    let (s, _) = with_the_only_turn_held(&kube, limits, "00000000000000c1").await;
    s.post_alerts(&firing_for(
        "HighRequestLatency",
        "shop",
        "cart",
        "00000000000000c2",
    ))
    .await;

    sqlx::any::install_default_drivers();
    let db = sqlx::AnyPool::connect(&s.database).await.unwrap();
    for _ in 0..4 {
        // Several TTLs later, the heartbeat still reaches into the future.
        tokio::time::sleep(ttl).await;
        let expires: String = sqlx::query_scalar("SELECT MAX(expires_at) FROM replicas")
            .fetch_one(&db)
            .await
            .unwrap();
        let now = salve::store::timestamp(Utc::now());
        assert!(
            expires > now,
            "the heartbeat lapsed: expires {expires}, now {now}"
        );
    }
    // The second incident was decided, not dropped; its remediation waits for the turn.
    let undecided = s.salve.store.undecided_firing_incidents().await.unwrap();
    assert!(undecided.is_empty(), "{undecided:?}");
    let states = |name: &str, items: &[Value]| -> Vec<Value> {
        items
            .iter()
            .filter(|r| r["target"]["name"] == name)
            .map(|r| r["state"].clone())
            .collect()
    };
    let items = s.remediations().await;
    assert_eq!(states("checkout", &items), ["verifying"], "{items:#?}");
    assert_eq!(states("cart", &items), ["pending"], "{items:#?}");
}

/// `salve_engine_incidents{state}` as scraped.
fn engine_incidents(metrics: &str, state: &str) -> Option<f64> {
    let series = format!("salve_engine_incidents{{state=\"{state}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .and_then(|v| v.trim().parse().ok())
}

/// Waits until the engine shows `(deciding, waiting)` incidents.
async fn engine_incidents_reach(s: &TestSalve, want: (f64, f64), what: &str) {
    support::eventually(what, std::time::Duration::from_secs(60), async || {
        let m = s.metrics().await;
        let seen = (
            engine_incidents(&m, "deciding"),
            engine_incidents(&m, "waiting"),
        );
        match seen {
            (Some(d), Some(w)) if (d, w) == want => Ok(()),
            _ => Err(format!("deciding and waiting: {seen:?}")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_beyond_the_engines_permits_waits_as_ids_and_is_taken_as_they_free() {
    // Every permit to decide taken: one remediation verifying for 20 s with the only turn
    // to drive, and a storm of others opened behind it. The rest of the storm must wait
    // in the queue as ids (a task each would hold a decision's whole state: a storm of
    // 100,000 alerts would hold a gigabyte), and be taken as permits come back.
    let at_once = salve::engine::DECIDING_AT_ONCE;
    let storm = at_once + 40;
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    for k in 0..storm {
        kube.add_deployment("storm", &format!("web-{k}"), 2, "web:1.0");
    }
    let limits = salve::engine::Limits {
        storm_brake: None,
        ..salve::engine::Limits::default()
    };
    let (s, blocker) = with_the_only_turn_held(&kube, limits, "00000000000000d0").await;
    let mut payloads = Vec::new();
    for chunk in (0..storm).collect::<Vec<_>>().chunks(100) {
        let mut v: Value = serde_json::from_str(&blocker).unwrap();
        let one = v["alerts"][0].clone();
        v["alerts"] = chunk
            .iter()
            .map(|k| {
                let mut a = one.clone();
                a["labels"]["namespace"] = json!("storm");
                a["labels"]["deployment"] = json!(format!("web-{k}"));
                a["fingerprint"] = json!(format!("{:016x}", 0xd100 + k));
                a
            })
            .collect();
        let payload = v.to_string();
        let (code, body) = s.post_alerts(&payload).await;
        assert_eq!(code, 200, "{body}");
        payloads.push(payload);
    }

    // Every permit is held (the blocker's included); what is left waits as ids.
    let waiting = (storm + 1 - at_once) as f64;
    engine_incidents_reach(
        &s,
        (at_once as f64, waiting),
        "every permit held and the rest of the storm waiting in the queue",
    )
    .await;
    // The queue stays put while no permit frees: the worker does not take ids ahead.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let m = s.metrics().await;
    assert_eq!(engine_incidents(&m, "waiting"), Some(waiting));

    // The storm resolves, then the blocker: the waiting incidents are settled undecided,
    // the blocker heals, and the opened remediations end before acting. Each permit given
    // back lets the queue go on, until nothing waits and nothing is being decided.
    for payload in &payloads {
        let (code, body) = s.post_alerts(&resolved(payload)).await;
        assert_eq!(code, 200, "{body}");
    }
    s.post_alerts(&resolved(&blocker)).await;
    engine_incidents_reach(&s, (0.0, 0.0), "the queue drained").await;
    let undecided = s.salve.store.undecided_firing_incidents().await.unwrap();
    assert!(undecided.is_empty(), "{undecided:?}");
    // One remediation for each incident that had a permit before the storm resolved: the
    // blocker and the storm's first ones; none left open.
    sqlx::any::install_default_drivers();
    let db = sqlx::AnyPool::connect(&s.database).await.unwrap();
    let by_state: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, COUNT(*) FROM remediations GROUP BY state ORDER BY state")
            .fetch_all(&db)
            .await
            .unwrap();
    let opened: i64 = by_state.iter().map(|(_, n)| n).sum();
    assert_eq!(opened, at_once as i64, "{by_state:?}");
    assert!(
        by_state
            .iter()
            .all(|(state, _)| !matches!(state.as_str(), "pending" | "executing" | "verifying")),
        "{by_state:?}"
    );
}
