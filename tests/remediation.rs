//! End to end: a real Alertmanager payload in, a Kubernetes change (or a recorded
//! refusal) out, checked against the fake API server's state and request log and
//! against salve's own audit record.

mod support;

use serde_json::Value;
use support::{FakeKube, Options, events, firing_for, fixture, spawn_salve};

async fn live(kube: &FakeKube) -> support::TestSalve {
    spawn_salve(Options {
        kube: Some(kube.clone()),
        ..Options::default()
    })
    .await
}

fn replicas(kube: &FakeKube, resource: &str, ns: &str, name: &str) -> i64 {
    kube.get(resource, ns, name).unwrap()["spec"]["replicas"]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn a_firing_alert_scales_the_deployment_by_the_rules_step() {
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    let s = live(&kube).await;

    let (status, ack) = s
        .post_alerts(&fixture("firing-from-prometheus-rule.json"))
        .await;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["new_incidents"], 1);
    let items = s.settled(1).await;

    assert_eq!(replicas(&kube, "deployments", "shop", "checkout"), 3);
    let r = &items[0];
    assert_eq!(r["state"], "verifying", "{r:#}");
    assert_eq!(r["rule"], "latency-scale-up");
    assert_eq!(
        r["summary"],
        "verifying: scale Deployment shop/checkout from 2 to 3 replicas"
    );

    // Every request names salve and its version.
    let agents: std::collections::BTreeSet<String> =
        kube.requests().into_iter().map(|r| r.user_agent).collect();
    assert_eq!(
        agents.into_iter().collect::<Vec<_>>(),
        vec![format!("salve/{}", env!("CARGO_PKG_VERSION"))]
    );

    // Dry-run first, then the real write, both on the scale subresource.
    let patches: Vec<_> = kube
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && !r.is_record_keeping())
        .collect();
    assert_eq!(patches.len(), 2, "{patches:?}");
    assert!(patches[0].dry_run() && !patches[1].dry_run());
    assert!(
        patches
            .iter()
            .all(|p| p.path == "/apis/apps/v1/namespaces/shop/deployments/checkout/scale")
    );

    // The audit trail has the exact policy input and verdict, and every call.
    let detail = s.detail(r["id"].as_str().unwrap()).await;
    let policy = events(&detail, "policy_evaluated");
    assert_eq!(policy.len(), 1);
    let input = &policy[0]["detail"]["input"];
    assert_eq!(input["action"]["from"]["replicas"], 2);
    assert_eq!(input["action"]["to"]["replicas"], 3);
    assert_eq!(input["alert"]["labels"]["alertname"], "HighRequestLatency");
    assert_eq!(input["target"]["replicas"], 2);
    assert_eq!(policy[0]["detail"]["verdict"]["allowed"], true);
    // Then the record-keeping, just after the state moved to verifying: an Event (this
    // fake serves no events API: 404, which never fails the remediation) and the
    // annotation on the workload.
    let id = r["id"].as_str().unwrap();
    let described = support::eventually(
        "the record-keeping calls",
        std::time::Duration::from_secs(10),
        async || {
            let detail = s.detail(id).await;
            let described: Vec<(String, bool, Value)> = events(&detail, "kube_call")
                .iter()
                .map(|c| {
                    (
                        c["detail"]["verb"].as_str().unwrap().to_owned(),
                        c["detail"]["dry_run"].as_bool().unwrap(),
                        c["detail"]["status"].clone(),
                    )
                })
                .collect();
            if described.len() >= 7 {
                Ok(described)
            } else {
                Err(format!("{described:?}"))
            }
        },
    )
    .await;
    assert_eq!(
        described,
        vec![
            ("GET".into(), false, Value::from(200)),
            ("LIST".into(), false, Value::from(200)),
            // The namespace: is it annotated salve.io/paused?
            ("GET".into(), false, Value::from(200)),
            ("PATCH".into(), true, Value::from(200)),
            ("PATCH".into(), false, Value::from(200)),
            ("POST".into(), false, Value::from(404)),
            ("PATCH".into(), false, Value::from(200)),
        ]
    );
    let stamped = kube.get("deployments", "shop", "checkout").unwrap()["metadata"]["annotations"]
        ["salve.io/last-remediation"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(stamped.starts_with(r["id"].as_str().unwrap()), "{stamped}");
}

#[tokio::test]
async fn dry_run_mode_sends_only_a_server_dry_run_and_leaves_the_object_unchanged() {
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    let before = kube.get("deployments", "shop", "checkout").unwrap();
    let s = spawn_salve(Options {
        kube: Some(kube.clone()),
        dry_run: true,
        ..Options::default()
    })
    .await;

    s.post_alerts(&fixture("firing-from-prometheus-rule.json"))
        .await;
    let items = s.settled(1).await;

    assert_eq!(items[0]["state"], "dry_run");
    assert_eq!(items[0]["mode"], "dry_run");
    assert_eq!(
        items[0]["summary"],
        "would scale Deployment shop/checkout from 2 to 3 replicas"
    );
    assert_eq!(
        kube.get("deployments", "shop", "checkout").unwrap(),
        before,
        "object changed"
    );
    assert!(kube.writes().is_empty(), "{:?}", kube.writes());
    assert!(
        kube.requests()
            .iter()
            .any(|r| r.method == "PATCH" && r.dry_run())
    );
}

#[tokio::test]
async fn without_a_cluster_salve_records_what_it_would_do() {
    let s = spawn_salve(Options::default()).await;
    s.post_alerts(&fixture("firing-from-prometheus-rule.json"))
        .await;
    let items = s.settled(1).await;
    assert_eq!(items[0]["state"], "dry_run");
    assert_eq!(items[0]["mode"], "offline");
    assert_eq!(
        items[0]["summary"],
        "would scale Deployment shop/checkout by +1 replicas (kept between 2 and 10)"
    );
    assert_eq!(
        items[0]["reasons"][0],
        "salve runs offline (no Kubernetes cluster to call; its start-up line says why), so no call was made"
    );
}

#[tokio::test]
async fn a_denied_action_makes_no_kubernetes_write_and_records_the_reasons() {
    let kube = FakeKube::start().await;
    kube.add_deployment("kube-system", "coredns", 2, "coredns:1.11");
    let s = live(&kube).await;

    s.post_alerts(&firing_for(
        "HighRequestLatency",
        "kube-system",
        "coredns",
        "aaaa000000000001",
    ))
    .await;
    let items = s.settled(1).await;

    let r = &items[0];
    assert_eq!(r["state"], "denied", "{r:#}");
    assert_eq!(
        r["reasons"][0],
        "namespace kube-system is protected: salve never changes it"
    );
    assert_eq!(replicas(&kube, "deployments", "kube-system", "coredns"), 2);
    assert!(
        kube.requests().iter().all(|r| r.method == "GET"),
        "a denied change must not even be dry-run: {:?}",
        kube.requests()
    );
    let detail = s.detail(r["id"].as_str().unwrap()).await;
    let verdict = &events(&detail, "policy_evaluated")[0]["detail"]["verdict"];
    assert_eq!(verdict["allowed"], false);
    assert_eq!(verdict["policy_hash"].as_str().unwrap().len(), 64);
}

#[tokio::test]
async fn a_rollback_restores_the_previous_revisions_template() {
    let kube = FakeKube::start().await;
    kube.add_deployment("payments", "api", 3, "api:1.0");
    kube.set_image("payments", "api", "api:1.1-broken");
    assert_eq!(kube.revisions("payments", "api").len(), 2);
    let s = live(&kube).await;

    // Three crash-looping pods of one Deployment: one group, three incidents, one target.
    let (status, ack) = s.post_alerts(&fixture("firing-truncated-group.json")).await;
    assert_eq!((status, ack["new_incidents"].as_u64()), (200, Some(3)));
    let items = s.settled(3).await;

    let deploy = kube.get("deployments", "payments", "api").unwrap();
    assert_eq!(
        deploy["spec"]["template"]["spec"]["containers"][0]["image"],
        "api:1.0"
    );
    assert!(
        deploy["spec"]["template"]["metadata"]["labels"]
            .get("pod-template-hash")
            .is_none()
    );
    assert_eq!(
        deploy["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    let revisions = kube.revisions("payments", "api");
    assert_eq!(
        revisions.len(),
        2,
        "the old ReplicaSet is re-used, as the controller does"
    );
    assert_eq!(
        revisions[&3]["spec"]["template"]["spec"]["containers"][0]["image"],
        "api:1.0"
    );

    // One workload, one action: the other two incidents found it locked or cooling down.
    let applied: Vec<_> = items.iter().filter(|r| r["state"] == "verifying").collect();
    assert_eq!(applied.len(), 1, "{items:#?}");
    assert_eq!(
        applied[0]["summary"],
        "verifying: roll back Deployment payments/api from revision 2 to revision 1"
    );
    assert_eq!(items.iter().filter(|r| r["state"] == "skipped").count(), 2);
    let real_patches = kube
        .writes()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .count();
    assert_eq!(real_patches, 1);
}

#[tokio::test]
async fn the_same_payload_posted_twice_leads_to_one_action() {
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    let s = live(&kube).await;
    let body = fixture("firing-from-prometheus-rule.json");

    let (_, first) = s.post_alerts(&body).await;
    // Alertmanager HA peers and retries: the same firing, several times, at once.
    let again = futures::future::join_all((0..4).map(|_| s.post_alerts(&body))).await;
    assert_eq!(first["new_incidents"], 1);
    for (status, ack) in &again {
        assert_eq!(*status, 200);
        assert_eq!(ack["new_incidents"], 0, "{ack}");
        assert_eq!(ack["repeated"], 1);
    }
    let items = s.settled(1).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    assert_eq!(s.remediations().await.len(), 1);
    assert_eq!(items[0]["state"], "verifying");
    assert_eq!(
        replicas(&kube, "deployments", "shop", "checkout"),
        3,
        "scaled once, not five times"
    );
    assert_eq!(kube.writes().len(), 1);
}

#[tokio::test]
async fn a_forbidden_namespace_ends_the_step_with_the_apis_reason() {
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    kube.forbid_namespace("shop");
    let s = live(&kube).await;
    s.post_alerts(&fixture("firing-from-prometheus-rule.json"))
        .await;
    let items = s.settled(1).await;
    assert_eq!(items[0]["state"], "failed");
    let reason = items[0]["reasons"][0].as_str().unwrap();
    assert!(
        reason.contains("403 Forbidden") && reason.contains("cannot get resource"),
        "{reason}"
    );
    assert!(kube.writes().is_empty());
}

#[tokio::test]
async fn a_missing_workload_is_recorded_as_failed_with_404() {
    let kube = FakeKube::start().await;
    let s = live(&kube).await;
    s.post_alerts(&fixture("firing-from-prometheus-rule.json"))
        .await;
    let items = s.settled(1).await;
    assert_eq!(items[0]["state"], "failed");
    assert!(
        items[0]["reasons"][0]
            .as_str()
            .unwrap()
            .contains("404 NotFound"),
        "{:#}",
        items[0]
    );
}

#[tokio::test]
async fn a_conflicting_write_is_retried_on_fresh_state_and_judged_again() {
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    kube.interfere_after_next_read("deployments", "shop", "checkout");
    let s = live(&kube).await;

    s.post_alerts(&fixture("firing-from-prometheus-rule.json"))
        .await;
    let items = s.settled(1).await;

    assert_eq!(items[0]["state"], "verifying", "{:#}", items[0]);
    assert_eq!(replicas(&kube, "deployments", "shop", "checkout"), 3);
    let detail = s.detail(items[0]["id"].as_str().unwrap()).await;
    let statuses: Vec<Value> = events(&detail, "kube_call")
        .iter()
        .map(|c| c["detail"]["status"].clone())
        .collect();
    assert!(statuses.contains(&Value::from(409)), "{statuses:?}");
    assert_eq!(
        events(&detail, "policy_evaluated").len(),
        2,
        "the fresh state is judged again"
    );
}

#[tokio::test]
async fn a_conflict_on_the_real_write_then_nothing_to_do_ends_skipped_and_frees_the_workload() {
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    // A human scales to the rule's max between salve's dry-run and its real write.
    kube.scale_before_next_write("deployments", "shop", "checkout", 10);
    let s = live(&kube).await;
    s.post_alerts(&fixture("firing-from-prometheus-rule.json"))
        .await;
    let items = s.finished(1).await;
    let r = &items[0];
    assert_eq!(r["state"], "skipped", "{r:#}");
    assert!(
        r["acted_at"].is_null(),
        "the refused write landed nothing: {r:#}"
    );
    assert!(
        r["reasons"][0]
            .as_str()
            .unwrap()
            .contains("already has 10 replicas"),
        "{r:#}"
    );
    assert_eq!(replicas(&kube, "deployments", "shop", "checkout"), 10);
    let detail = s.detail(r["id"].as_str().unwrap()).await;
    let moves: Vec<(String, String)> = events(&detail, "state_changed")
        .iter()
        .map(|e| {
            (
                e["detail"]["from"].as_str().unwrap().to_owned(),
                e["detail"]["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(
        moves,
        pairs(&[
            ("pending", "executing"),
            ("executing", "pending"),
            ("pending", "skipped")
        ])
    );
    // The workload is free: the next incident on it is not "being remediated".
    s.post_alerts(&firing_for(
        "HighRequestLatency",
        "shop",
        "checkout",
        "cafe000000000001",
    ))
    .await;
    let items = s.finished(2).await;
    assert!(
        items.iter().all(|r| !r["reasons"][0]
            .as_str()
            .unwrap_or_default()
            .contains("being remediated")),
        "{items:#?}"
    );
}

#[tokio::test]
async fn a_restart_stamps_restarted_at_like_kubectl() {
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "cart", 3, "cart:2.0");
    let s = live(&kube).await;
    s.post_alerts(&fixture("firing-single-api-posted.json"))
        .await;
    let items = s.settled(1).await;
    assert_eq!(items[0]["state"], "verifying", "{:#}", items[0]);
    let d = kube.get("deployments", "shop", "cart").unwrap();
    let stamp =
        d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .as_str()
            .unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(stamp).is_ok(),
        "{stamp}"
    );
    assert_eq!(d["metadata"]["generation"], 2);
    assert_eq!(
        kube.revisions("shop", "cart").len(),
        2,
        "a restart is a new revision"
    );
}

#[tokio::test]
async fn a_statefulset_scales_through_its_scale_subresource() {
    let rules = r#"
rules:
  - name: db-scale
    matchers: ['alertname="HighRequestLatency"']
    target: { kind: StatefulSet, name: "{{ deployment }}" }
    action: { scale: { to: 5 } }
"#;
    let kube = FakeKube::start().await;
    kube.add_statefulset("shop", "checkout", 3, "pg:16");
    let s = spawn_salve(Options {
        kube: Some(kube.clone()),
        rules: Some(rules.into()),
        ..Options::default()
    })
    .await;
    s.post_alerts(&fixture("firing-from-prometheus-rule.json"))
        .await;
    let items = s.settled(1).await;
    assert_eq!(items[0]["state"], "verifying", "{:#}", items[0]);
    assert_eq!(replicas(&kube, "statefulsets", "shop", "checkout"), 5);
    assert!(
        kube.writes()
            .iter()
            .all(|w| w.path.ends_with("/statefulsets/checkout/scale"))
    );
}

#[tokio::test]
async fn an_alert_no_rule_matches_opens_no_remediation() {
    let kube = FakeKube::start().await;
    let s = live(&kube).await;
    let (status, ack) = s
        .post_alerts(&firing_for(
            "DiskFilling",
            "shop",
            "checkout",
            "bbbb000000000001",
        ))
        .await;
    assert_eq!((status, ack["new_incidents"].as_u64()), (200, Some(1)));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(s.remediations().await.is_empty());
    // The one request is start-up's look at the API server (GET /version).
    assert!(
        kube.requests().iter().all(|r| r.path == "/version"),
        "nothing to do, nothing asked: {:?}",
        kube.requests()
    );
}
