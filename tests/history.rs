//! `salve history` and the audit API list every case, newest first, with reasons.

mod support;

use std::process::Command;

use support::{FakeKube, Options, firing_for, fixture, spawn_salve};

#[tokio::test]
async fn history_lists_each_case_with_its_reasons() {
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    kube.add_deployment("kube-system", "coredns", 2, "coredns:1.11");
    kube.add_deployment("payments", "api", 3, "api:1.0");
    kube.set_image("payments", "api", "api:1.1");
    let s = spawn_salve(Options {
        kube: Some(kube.clone()),
        ..Options::default()
    })
    .await;

    s.post_alerts(&fixture("firing-from-prometheus-rule.json"))
        .await;
    s.settled(1).await;
    s.post_alerts(&firing_for(
        "HighRequestLatency",
        "kube-system",
        "coredns",
        "cccc000000000001",
    ))
    .await;
    s.settled(2).await;
    s.post_alerts(&fixture("firing-truncated-group.json")).await;
    let api = s.settled(5).await;

    // Newest first, through the API, with pagination that neither skips nor repeats.
    let created: Vec<&str> = api
        .iter()
        .map(|r| r["created_at"].as_str().unwrap())
        .collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "{created:?}");
    let (_, first) = s.get("/api/v1/remediations?limit=2").await;
    let (_, second) = s
        .get(&format!(
            "/api/v1/remediations?limit=2&cursor={}",
            first["next"].as_str().unwrap()
        ))
        .await;
    let paged: Vec<&str> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["items"].as_array().unwrap())
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    let listed: Vec<&str> = api
        .iter()
        .take(4)
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(paged, listed);

    // The CLI reads the same database.
    let out = Command::new(env!("CARGO_BIN_EXE_salve"))
        .args(["history", "--database", &s.database])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    for expected in [
        "verifying: scale Deployment shop/checkout from 2 to 3 replicas",
        "denied: scale Deployment kube-system/coredns from 2 to 3 replicas",
        "namespace kube-system is protected",
        "verifying: roll back Deployment payments/api from revision 2 to revision 1",
        "skipped:",
    ] {
        assert!(
            table.contains(expected),
            "history lacks {expected:?}:\n{table}"
        );
    }
    let first_row = table.lines().nth(1).unwrap();
    assert!(first_row.contains("payments"), "newest first:\n{table}");

    let json = Command::new(env!("CARGO_BIN_EXE_salve"))
        .args(["history", "--database", &s.database, "--output", "json"])
        .output()
        .unwrap();
    let items: Vec<serde_json::Value> = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(items.len(), 5);
    assert_eq!(items[0]["id"], api[0]["id"]);
}
