//! Several salve replicas on one PostgreSQL: an HA Alertmanager pair posts the same
//! alert to both at once, and exactly one remediation (one Kubernetes write) follows.
//! Needs a real PostgreSQL (`SALVE_TEST_POSTGRES_URL`); skips loudly without one,
//! fails under CI.

mod support;

use support::{FakeKube, Options, fixture, spawn_salve};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_one_postgres_act_once_for_an_ha_pairs_duplicates() {
    let Some(database) = support::postgres_database("the multi-replica test").await else {
        return;
    };
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    let opts = || Options {
        kube: Some(kube.clone()),
        database: Some(database.clone()),
        ..Options::default()
    };
    let a = spawn_salve(opts()).await;
    let b = spawn_salve(opts()).await;
    let body = fixture("firing-from-prometheus-rule.json");

    let posts = (0..3).flat_map(|_| [a.post_alerts(&body), b.post_alerts(&body)]);
    let answers = futures::future::join_all(posts).await;
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    let new: u64 = answers
        .iter()
        .map(|(_, ack)| ack["new_incidents"].as_u64().unwrap())
        .sum();
    assert_eq!(new, 1, "one incident across both replicas");

    let items = a.settled(1).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(b.remediations().await.len(), 1);
    assert_eq!(items[0]["state"], "verifying");
    assert_eq!(kube.writes().len(), 1, "{:?}", kube.writes());
    assert_eq!(
        kube.get("deployments", "shop", "checkout").unwrap()["spec"]["replicas"],
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_that_restarts_leaves_a_live_replicas_remediation_alone() {
    let Some(database) = support::postgres_database("the multi-replica test").await else {
        return;
    };
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    let capture = support::Capture::start().await;
    let rules = r#"
rules:
  - name: checkout-ladder
    matchers: ['alertname="HighRequestLatency"']
    target: { kind: Deployment, name: "{{ deployment }}" }
    steps:
      - scale: { by: 1, max: 10 }
      - scale: { by: 2, max: 10 }
    verify: { within: 8s, every: 100ms }
    revert_on_failure: true
    cooldown: 0s
"#;
    let opts = || Options {
        kube: Some(kube.clone()),
        database: Some(database.clone()),
        rules: Some(rules.to_owned()),
        escalation_webhook_url: Some(capture.url.clone()),
        ..Options::default()
    };
    let a = spawn_salve(opts()).await;
    let b = spawn_salve(opts()).await;
    let firing = fixture("firing-from-prometheus-rule.json");
    a.post_alerts(&firing).await;
    let items = a.reached(1, &["verifying"]).await;
    let id = items[0]["id"].as_str().unwrap().to_owned();

    // B restarts while A verifies: the new B recovers, and must find nothing of its own.
    b.salve.stop().await;
    let b = spawn_salve(opts()).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let r = &b.detail(&id).await;
    assert_eq!(
        r["state"], "verifying",
        "B did not touch A's remediation: {r:#}"
    );

    // A decides: the alert resolves, A records the heal.
    a.post_alerts(&support::resolved(&firing)).await;
    let items = a.finished(1).await;
    assert_eq!(items[0]["state"], "healed", "{:#}", items[0]);
    let detail = a.detail(&id).await;
    let moves: Vec<&str> = support::events(&detail, "state_changed")
        .iter()
        .map(|e| e["detail"]["to"].as_str().unwrap())
        .collect();
    assert_eq!(moves, vec!["executing", "verifying", "healed"]);
    assert!(
        capture.bodies().is_empty(),
        "nothing escalated: {:#?}",
        capture.bodies()
    );
    assert!(support::events(&detail, "revert").is_empty());
    assert_eq!(kube.writes().len(), 1, "{:?}", kube.writes());
}
