//! A pathological policy is denied within its limits while the server keeps answering:
//! Rego runs on its own threads, bounded in time and memory, never on the runtime's.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{Options, eventually, firing_for, firing_with, spawn_salve};

/// What issue 16 measured: 2.4 GB and 4–16 s per evaluation, the server stalled.
const RUNAWAY: &str = r#"package salve

import rego.v1

deny contains "never reached" if {
	input.alert.labels.pathological == "yes"
	count([x | some x in numbers.range(1, 100000000)]) < 0
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_policy_is_denied_within_its_limits_and_the_server_keeps_answering() {
    let s = spawn_salve(Options::default()).await;
    std::fs::write(s.dir.path().join("policies/runaway.rego"), RUNAWAY).unwrap();
    let (status, answer) = s.reload().await;
    assert_eq!(status, 200, "{answer}");

    let labels = json!({
        "alertname": "HighRequestLatency", "namespace": "shop", "deployment": "checkout",
        "severity": "critical", "pathological": "yes"
    });
    let posted = Instant::now();
    let (status, _) = s
        .post_alerts(&firing_with(labels, "ffff000000000001"))
        .await;
    assert_eq!(status, 200);

    // While it is evaluated: health checks and webhooks (each a new remediation whose
    // policy runs too) answer at once.
    let (mut slowest_health, mut slowest_webhook) = (Duration::ZERO, Duration::ZERO);
    for i in 0..30u32 {
        let t = Instant::now();
        assert_eq!(s.get("/healthz").await.0, 200);
        slowest_health = slowest_health.max(t.elapsed());
        let t = Instant::now();
        let body = firing_for(
            "HighRequestLatency",
            "web",
            &format!("web-{i}"),
            &format!("{i:016x}"),
        );
        assert_eq!(s.post_alerts(&body).await.0, 200);
        slowest_webhook = slowest_webhook.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("slowest /healthz {slowest_health:?}, slowest webhook {slowest_webhook:?}");
    assert!(
        slowest_health < Duration::from_millis(100),
        "/healthz took {slowest_health:?}"
    );
    assert!(
        slowest_webhook < Duration::from_millis(100),
        "a webhook took {slowest_webhook:?}"
    );

    let denied = eventually(
        "the runaway policy's verdict",
        Duration::from_secs(20),
        async || {
            let all = s.remediations().await;
            all.iter()
                .find(|r| r["target"]["name"] == "checkout" && r["state"] == "denied")
                .cloned()
                .ok_or_else(|| format!("{all:?}"))
        },
    )
    .await;
    let decided_in = posted.elapsed();
    let reasons = denied["reasons"].to_string();
    assert!(reasons.contains("policy evaluation failed"), "{reasons}");
    assert!(
        reasons.contains("memory") || reasons.contains("time limit"),
        "{reasons}"
    );
    eprintln!("runaway policy denied after {decided_in:?}: {reasons}");
    assert!(
        decided_in < salve::policy::EVALUATION_TIME_LIMIT + Duration::from_secs(1),
        "the deny took {decided_in:?}"
    );
    // The ordinary remediations were decided meanwhile, by the same policy set.
    s.settled(31).await;
}
