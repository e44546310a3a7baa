//! Hot reload with zero downtime: a broken set is refused and the old one keeps
//! deciding; a good set is swapped in atomically; no webhook is lost meanwhile.
//! Triggers: `POST /-/reload`, file changes, SIGHUP.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::{Options, TestSalve, events, eventually, firing_for, spawn_salve};

const FREEZE_WEB: &str = "package salve\n\nimport rego.v1\n\ndeny contains \"web is frozen for the audit\" if {\n\tinput.action.target.namespace == \"web\"\n}\n";
/// Compiles, but contradicts the shipped guardrail tests (which scale in `shop`).
const FREEZE_SHOP: &str = "package salve\n\nimport rego.v1\n\ndeny contains \"shop is frozen\" if {\n\tinput.action.target.namespace == \"shop\"\n}\n";
const BROKEN: &str = "package salve\n\ndeny contains msg if {\n\tinput.x ==\n}\n";

async fn reload(s: &TestSalve) -> (u16, serde_json::Value) {
    s.reload().await
}

async fn metric(s: &TestSalve, name: &str) -> f64 {
    let text = s.metrics().await;
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
}

async fn policy_hash(s: &TestSalve) -> String {
    s.get("/readyz").await.1["policy_hash"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broken_reload_keeps_the_old_set_and_a_good_one_switches_without_losing_alerts() {
    let s = Arc::new(spawn_salve(Options::default()).await);
    let policies = s.dir.path().join("policies");
    let hash_a = policy_hash(&s).await;

    // Alertmanager keeps posting, one new workload per alert, for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let poster = {
        let (s, stop) = (s.clone(), stop.clone());
        tokio::spawn(async move {
            let mut answers = Vec::new();
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let body = firing_for(
                    "HighRequestLatency",
                    "web",
                    &format!("web-{i}"),
                    &format!("{i:016x}"),
                );
                let status = s.post_alerts(&body).await.0;
                answers.push((status, std::time::Instant::now()));
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            answers
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    std::fs::write(policies.join("broken.rego"), BROKEN).unwrap();
    let (status, answer) = reload(&s).await;
    assert_eq!(status, 400, "{answer}");
    let refused_at = std::time::Instant::now();
    assert!(
        answer["error"].as_str().unwrap().contains("broken.rego:"),
        "{answer}"
    );
    assert_eq!(metric(&s, "salve_config_last_reload_successful").await, 0.0);
    assert_eq!(policy_hash(&s).await, hash_a, "the broken set was not used");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A set that compiles but fails its own tests is refused too.
    std::fs::remove_file(policies.join("broken.rego")).unwrap();
    std::fs::write(policies.join("freeze.rego"), FREEZE_SHOP).unwrap();
    let (status, answer) = reload(&s).await;
    assert_eq!(status, 400, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.contains(
            "FAIL: data.salve_test.test_ordinary_scale_up_is_allowed (guardrails_test.rego:"
        ),
        "{error}"
    );
    assert_eq!(policy_hash(&s).await, hash_a);
    tokio::time::sleep(Duration::from_millis(200)).await;

    std::fs::write(policies.join("freeze.rego"), FREEZE_WEB).unwrap();
    let swap_at = std::time::Instant::now();
    let before_swap = salve::store::timestamp(chrono::Utc::now());
    let (status, answer) = reload(&s).await;
    let after_swap = salve::store::timestamp(chrono::Utc::now());
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["changed"], true);
    let hash_b = answer["policy_hash"].as_str().unwrap().to_owned();
    assert_ne!(hash_a, hash_b);
    assert_eq!(metric(&s, "salve_config_last_reload_successful").await, 1.0);
    tokio::time::sleep(Duration::from_millis(300)).await;

    stop.store(true, Ordering::Relaxed);
    let answers = poster.await.unwrap();
    // Alerts kept arriving while the refused sets were in front of salve, and after.
    let during_refusals = answers
        .iter()
        .filter(|(_, at)| refused_at < *at && *at < swap_at)
        .count();
    assert!(
        during_refusals > 0,
        "no post while the broken sets were refused"
    );
    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "a webhook failed during reload: {answers:?}"
    );
    let items = s.settled(answers.len()).await;
    assert_eq!(
        items.len(),
        answers.len(),
        "every posted alert has its remediation"
    );

    let (mut old, mut new) = (0, 0);
    for r in &items {
        let detail = s.detail(r["id"].as_str().unwrap()).await;
        let verdict = &events(&detail, "policy_evaluated")[0]["detail"]["verdict"];
        let hash = verdict["policy_hash"].as_str().unwrap();
        let created = r["created_at"].as_str().unwrap();
        if created < before_swap.as_str() {
            assert_eq!(hash, hash_a, "decided before the swap: {r:#}");
        } else if created > after_swap.as_str() {
            assert_eq!(hash, hash_b, "decided after the swap: {r:#}");
        }
        assert!(hash == hash_a || hash == hash_b);
        if hash == hash_b {
            new += 1;
            assert_eq!(r["state"], "denied");
            assert_eq!(r["reasons"][0], "web is frozen for the audit");
        } else {
            old += 1;
            assert_eq!(r["state"], "dry_run", "{r:#}");
        }
    }
    assert!(old > 0 && new > 0, "old {old}, new {new}");
}

#[tokio::test]
async fn a_changed_file_is_reloaded_by_itself() {
    let s = spawn_salve(Options {
        watch_policies: true,
        ..Options::default()
    })
    .await;
    let before = policy_hash(&s).await;
    std::fs::write(s.dir.path().join("policies/freeze.rego"), FREEZE_WEB).unwrap();
    let what = "the file change to be picked up";
    eventually(what, Duration::from_secs(10), async || {
        let now = policy_hash(&s).await;
        if now == before { Err(now) } else { Ok(()) }
    })
    .await;
}

#[tokio::test]
async fn reload_requires_the_admin_token_when_one_is_set() {
    let s = spawn_salve(Options {
        admin_token: Some("adm1n".into()),
        ..Options::default()
    })
    .await;
    let url = format!("{}/-/reload", s.url);
    assert_eq!(s.http.post(&url).send().await.unwrap().status(), 401);
    assert_eq!(
        s.http
            .post(&url)
            .bearer_auth("nope")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        s.http
            .post(&url)
            .bearer_auth("adm1n")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn sighup_reloads_a_running_salve() {
    salve::telemetry::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let policies = support::policies_with_rules(dir.path(), None);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_salve"))
        .args([
            "serve",
            "--offline",
            "--no-watch",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("--policies")
        .arg(&policies)
        .arg("--database")
        .arg(format!(
            "sqlite://{}",
            dir.path().join("salve.db").display()
        ))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let ready = format!("http://127.0.0.1:{port}/readyz");
    let hash = || async {
        let r = http.get(&ready).send().await.ok()?;
        let v: serde_json::Value = r.json().await.ok()?;
        v["policy_hash"].as_str().map(str::to_owned)
    };
    let before = eventually("salve to be ready", Duration::from_secs(20), async || {
        hash()
            .await
            .ok_or_else(|| "no policy hash on /readyz".to_owned())
    })
    .await;
    std::fs::write(policies.join("freeze.rego"), FREEZE_WEB).unwrap();
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    eventually(
        "SIGHUP to reload",
        Duration::from_secs(10),
        async || match hash().await {
            Some(now) if now == before => Err(now),
            _ => Ok(()),
        },
    )
    .await;
    child.kill().await.unwrap();
}

#[tokio::test]
async fn an_emptied_rules_file_is_refused_and_metrics_say_what_is_in_force() {
    let s = spawn_salve(Options::default()).await;
    let policies = s.dir.path().join("policies");
    let rules = metric(&s, "salve_rules_loaded").await;
    assert!(rules >= 1.0, "the shipped rules are loaded: {rules}");
    let hash = policy_hash(&s).await;
    let text = s.metrics().await;
    assert!(
        text.contains(&format!("salve_policy{{policy_hash=\"{hash}\"")),
        "{text}"
    );

    // A ConfigMap emptied by a bad merge must not switch remediation off silently.
    std::fs::write(policies.join("rules.yaml"), "# nothing here\n").unwrap();
    let (status, answer) = reload(&s).await;
    assert_eq!(status, 400, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.contains("rules.yaml") && error.contains("defines no `rules:` list"),
        "{error}"
    );
    assert_eq!(
        metric(&s, "salve_rules_loaded").await,
        rules,
        "old set in force"
    );

    // Switching remediation off on purpose is written out, and then shows on /metrics.
    std::fs::write(policies.join("rules.yaml"), "rules: []\n").unwrap();
    let (status, answer) = reload(&s).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["rules"], 0);
    assert_eq!(metric(&s, "salve_rules_loaded").await, 0.0);
}

#[tokio::test]
async fn a_policy_that_would_deny_every_change_is_refused_at_reload_with_file_and_line() {
    let s = spawn_salve(Options::default()).await;
    let policies = s.dir.path().join("policies");
    let hash = policy_hash(&s).await;
    // Each replaces the guardrails (and their tests) with one mistake that compiles.
    std::fs::remove_file(policies.join("guardrails_test.rego")).unwrap();
    for (mistake, said) in [
        (
            "package salve\n\nimport rego.v1\n\ndeny[msg] if {\n\tinput.x\n\tmsg := \"x\"\n}\n",
            "guardrails.rego:5: data.salve.deny must be a set of messages, but this rule makes it an object",
        ),
        (
            "package main\n\ndeny contains msg if {\n\tinput.x\n\tmsg := \"x\"\n}\n",
            "guardrails.rego:1: package main: no module defines `deny` in package salve",
        ),
        (
            "package salve\n\ndeny contains msg if {\n\tinput.x\n\tmsg := sprintf_typo(\"%v\", [input.x])\n}\n",
            "guardrails.rego:5: undefined function sprintf_typo",
        ),
    ] {
        std::fs::write(policies.join("guardrails.rego"), mistake).unwrap();
        let (status, answer) = reload(&s).await;
        assert_eq!(status, 400, "{answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(said), "{error}");
        assert_eq!(policy_hash(&s).await, hash, "the running set is kept");
    }
}
