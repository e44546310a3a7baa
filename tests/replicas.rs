//! Several salve replicas on one PostgreSQL: an HA Alertmanager pair posts the same
//! alert to both at once, and exactly one remediation (one Kubernetes write) follows.
//! And the connections they keep to it: each with Nagle's algorithm off.
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

/// sqlx 0.9.0 leaves Nagle's algorithm on, and a statement sent in two parts then waits
/// 40 ms for the server's delayed acknowledgement: salve turns it off on every PostgreSQL
/// connection it opens. The server names each connection's client port; the test finds
/// the socket of this process with that port and reads the option back.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_postgresql_connection_of_salve_has_nagle_off() {
    use sqlx::Connection;
    use std::os::fd::{BorrowedFd, RawFd};

    let Some(database) = support::postgres_database("the TCP_NODELAY test").await else {
        return;
    };
    let s = spawn_salve(Options {
        database: Some(database.clone()),
        ..Options::default()
    })
    .await;
    let name = database.rsplit('/').next().unwrap().to_owned();
    let mut admin = sqlx::PgConnection::connect(&support::postgres_admin_url())
        .await
        .unwrap();
    let ports: Vec<(i32, i32)> = sqlx::query_as(
        "SELECT client_port, inet_server_port() FROM pg_stat_activity WHERE datname = $1 AND client_port > 0",
    )
    .bind(&name)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(
        !ports.is_empty(),
        "salve keeps connections open to {name} over TCP (the test needs a TCP URL)"
    );

    let mut nodelay = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let Ok(fd) = entry
            .unwrap()
            .file_name()
            .to_string_lossy()
            .parse::<RawFd>()
        else {
            continue;
        };
        // SAFETY: only read from; a descriptor closed meanwhile makes the calls fail.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&fd);
        let port = |a: std::io::Result<socket2::SockAddr>| {
            a.ok()
                .and_then(|a| a.as_socket())
                .map(|a| i32::from(a.port()))
        };
        if let (Some(local), Some(remote)) = (port(socket.local_addr()), port(socket.peer_addr())) {
            if let Ok(on) = socket.tcp_nodelay() {
                nodelay.insert((local, remote), on);
            }
        }
    }
    for (local, remote) in &ports {
        assert_eq!(
            nodelay.get(&(*local, *remote)),
            Some(&true),
            "salve's connection from port {local} to {remote} has TCP_NODELAY set ({} connections)",
            ports.len()
        );
    }
    s.salve.stop().await;
}
