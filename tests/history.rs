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

#[tokio::test]
async fn the_audit_api_filters_and_pages_without_skipping_while_rows_arrive() {
    let s = spawn_salve(Options::default()).await;
    for i in 0..6 {
        let ns = if i % 2 == 0 { "shop" } else { "payments" };
        s.post_alerts(&firing_for(
            "HighRequestLatency",
            ns,
            &format!("web-{i}"),
            &format!("{:016x}", 0xa0 + i),
        ))
        .await;
    }
    s.post_alerts(&firing_for(
        "HighRequestLatency",
        "kube-system",
        "coredns",
        "00000000000000ff",
    ))
    .await;
    s.post_alerts(&firing_for("DiskFilling", "shop", "db", "00000000000000fe"))
        .await;
    let all = s.finished(7).await;
    assert_eq!(all.len(), 7);

    let s = &s;
    let count = |q: &'static str| async move {
        let (status, body) = s.get(&format!("/api/v1/remediations?{q}")).await;
        assert_eq!(status, 200, "{q}: {body}");
        body["items"].as_array().unwrap().len()
    };
    assert_eq!(count("namespace=shop").await, 3);
    assert_eq!(count("namespace=payments&state=dry_run").await, 3);
    assert_eq!(count("state=denied").await, 1);
    assert_eq!(
        count("alertname=HighRequestLatency&rule=latency-scale-up").await,
        7
    );
    assert_eq!(count("target=web-2&kind=Deployment").await, 1);
    assert_eq!(count("since=1h").await, 7);
    assert_eq!(count("until=1h").await, 0);
    assert_eq!(
        count("outcome=healed").await,
        0,
        "offline mode verifies nothing"
    );
    for bad in [
        "state=applied",
        "outcome=great",
        "since=yesterday",
        "cursor=nonsense",
    ] {
        assert_eq!(
            s.get(&format!("/api/v1/remediations?{bad}")).await.0,
            400,
            "{bad}"
        );
    }

    // Received alerts, including the one no rule matched.
    let (_, alerts) = s.get("/api/v1/alerts?alertname=DiskFilling").await;
    let disk = &alerts["items"][0];
    assert_eq!(
        (disk["decision"].as_str(), disk["deliveries"].as_i64()),
        (Some("no_rule"), Some(1))
    );
    assert!(disk["remediation_id"].is_null());
    let (_, firing) = s.get("/api/v1/alerts?status=firing&limit=100").await;
    assert_eq!(firing["items"].as_array().unwrap().len(), 8);

    // Page through 3 at a time while new remediations keep arriving.
    let (_, first) = s.get("/api/v1/remediations?limit=3").await;
    for i in 0..4 {
        s.post_alerts(&firing_for(
            "HighRequestLatency",
            "shop",
            &format!("late-{i}"),
            &format!("{:016x}", 0xb0 + i),
        ))
        .await;
    }
    s.finished(11).await;
    let mut seen: Vec<String> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    let mut cursor = first["next"].as_str().map(str::to_owned);
    while let Some(c) = cursor {
        let (_, page) = s
            .get(&format!("/api/v1/remediations?limit=3&cursor={c}"))
            .await;
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_owned()),
        );
        cursor = page["next"].as_str().map(str::to_owned);
    }
    let original: Vec<String> = all
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        seen, original,
        "every original row once, in order, none of the new ones"
    );

    // CSV and one timeline, from the CLI.
    let csv = Command::new(env!("CARGO_BIN_EXE_salve"))
        .args([
            "history",
            "--database",
            &s.database,
            "--output",
            "csv",
            "--namespace",
            "payments",
        ])
        .output()
        .unwrap();
    let csv = String::from_utf8(csv.stdout).unwrap();
    let mut reader = ::csv::Reader::from_reader(csv.as_bytes());
    let rows: Vec<::csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 3, "{csv}");
    assert!(
        rows.iter()
            .all(|r| &r[8] == "payments" && &r[2] == "dry_run")
    );
    let denied = all.iter().find(|r| r["state"] == "denied").unwrap();
    let show = Command::new(env!("CARGO_BIN_EXE_salve"))
        .args([
            "show",
            "--database",
            &s.database,
            denied["id"].as_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(show.stdout).unwrap();
    assert!(text.contains("state    denied"), "{text}");
    assert!(text.contains("policy_evaluated  scale Deployment kube-system/coredns by +1 replicas (kept between 2 and 10) -> denied"), "{text}");
    assert!(text.contains("rule latency-scale-up matched"), "{text}");
}
