//! A crash at any point resumes or records; it never repeats an action blindly.

mod support;

use chrono::Utc;
use salve::alert::Delivery;
use salve::remediation::{Event, RemediationState};
use salve::store::Store;
use support::{FakeKube, Options, fixture, fresh_database, spawn_salve};

#[tokio::test]
async fn after_a_crash_executing_is_interrupted_not_resent_and_acked_alerts_are_decided() {
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    kube.add_deployment("shop", "cart", 3, "cart:2.0");
    let dir = tempfile::tempdir().unwrap();
    let database = fresh_database(dir.path()).await;

    // The state a crash leaves: one remediation mid-write, one alert acked but never decided.
    let store = Store::open(&database).await.unwrap();
    let (_, id) =
        support::seed_remediation(&store, 1, ("shop", "checkout"), "scale", Utc::now()).await;
    let moved = store
        .transition(
            &id,
            RemediationState::Pending,
            Event::WriteIntent,
            "executing",
            &[],
            Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!(moved, Some(RemediationState::Executing));
    let second = Delivery::parse(fixture("firing-single-api-posted.json").as_bytes()).unwrap();
    store.record_delivery(&second, Utc::now()).await.unwrap();
    drop(store);

    let s = spawn_salve(Options {
        kube: Some(kube.clone()),
        database: Some(database),
        ..Options::default()
    })
    .await;
    let items = s.settled(2).await;

    let interrupted = items.iter().find(|r| r["id"] == id.as_str()).unwrap();
    assert_eq!(interrupted["state"], "interrupted");
    assert!(
        interrupted["summary"]
            .as_str()
            .unwrap()
            .contains("not re-sent")
    );
    assert_eq!(
        kube.get("deployments", "shop", "checkout").unwrap()["spec"]["replicas"],
        2
    );
    assert!(
        kube.requests()
            .iter()
            .all(|r| !r.path.contains("/checkout")),
        "checkout untouched"
    );

    let decided = items.iter().find(|r| r["id"] != id.as_str()).unwrap();
    assert_eq!(decided["state"], "verifying", "{decided:#}");
    assert_eq!(decided["rule"], "replicas-mismatch-restart");
}

#[tokio::test]
async fn after_a_crash_during_verification_salve_escalates_instead_of_guessing() {
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 3, "checkout:1.4");
    let capture = support::Capture::start().await;
    let dir = tempfile::tempdir().unwrap();
    let database = fresh_database(dir.path()).await;
    let store = Store::open(&database).await.unwrap();
    let (_, id) =
        support::seed_remediation(&store, 1, ("shop", "checkout"), "scale", Utc::now()).await;
    for (from, event) in [
        (RemediationState::Pending, Event::WriteIntent),
        (RemediationState::Executing, Event::WriteAccepted),
    ] {
        assert!(
            store
                .transition(&id, from, event, "", &[], Utc::now())
                .await
                .unwrap()
                .is_some()
        );
    }
    drop(store);

    let s = spawn_salve(Options {
        kube: Some(kube.clone()),
        database: Some(database),
        escalation_webhook_url: Some(capture.url.clone()),
        ..Options::default()
    })
    .await;
    let items = s.finished(1).await;
    assert_eq!(items[0]["state"], "escalated");
    let sent = capture.received(1).await;
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(sent[0]["remediation_id"], id.as_str());
    assert!(kube.writes().is_empty(), "no next step is taken blindly");
}

#[tokio::test]
async fn a_remediation_this_replica_lost_track_of_is_settled_without_a_restart() {
    use salve::engine::{Engine, Limits, Seams};
    use salve::notify::{Notifier, WebhookNotifier};
    salve::telemetry::install_crypto_provider();
    let capture = support::Capture::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&fresh_database(dir.path()).await)
        .await
        .unwrap();
    let policies = support::policies_with_rules(dir.path(), None);
    let decisions = std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(
        salve::reload::load_decisions(&policies, salve::policy::RegoOptions::default()).unwrap(),
    ));
    let webhook = WebhookNotifier::new(capture.url.clone(), reqwest::Client::new());
    let seams = Seams {
        cluster: None,
        prometheus: None,
        alertmanager: None,
        approval_webhook: None,
        notifiers: vec![std::sync::Arc::new(webhook) as std::sync::Arc<dyn Notifier>],
        external_url: salve::http::ExternalUrl::parse("http://salve.test").unwrap(),
        metrics: std::sync::Arc::new(salve::telemetry::Metrics::new()),
    };
    // A live replica (its worker is not started: this test drives recovery by hand).
    let engine = Engine::new(store.clone(), seams, false, decisions, Limits::default());
    // What a database error mid-ladder leaves: a remediation of this replica's, verifying,
    // that no task of this replica drives any more.
    let (_, id) = support::seed_remediation_owned(
        &store,
        7,
        ("shop", "checkout"),
        "scale",
        Utc::now(),
        engine.owner(),
    )
    .await;
    for (from, event) in [
        (RemediationState::Pending, Event::WriteIntent),
        (RemediationState::Executing, Event::WriteAccepted),
    ] {
        let moved = store
            .transition(&id, from, event, "", &[], Utc::now())
            .await
            .unwrap();
        assert!(moved.is_some());
    }
    // And one left pending (the database failed before its first write): the next sweep
    // resumes it; nothing waits for a restart.
    let (_, pending) = support::seed_remediation_owned(
        &store,
        8,
        ("shop", "cart"),
        "scale",
        Utc::now(),
        engine.owner(),
    )
    .await;
    let recovered = engine.recover().await.unwrap();
    assert_eq!(recovered.resumed, vec![pending]);
    let r = store.remediation(&id).await.unwrap().unwrap();
    assert_eq!(r.state, RemediationState::Escalated, "{r:#?}");
    assert!(
        r.reasons[0].contains("its task ended on an error"),
        "{r:#?}"
    );
    assert_eq!(capture.received(1).await.len(), 1);
    assert!(store.locks().await.unwrap().is_empty());
}

#[tokio::test]
async fn salve_serves_at_once_while_a_resumed_ladder_runs_in_the_background() {
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    let dir = tempfile::tempdir().unwrap();
    let database = fresh_database(dir.path()).await;
    let store = Store::open(&database).await.unwrap();
    // A previous run (now dead) opened this remediation and wrote nothing yet.
    let (_, id) =
        support::seed_remediation(&store, 9, ("shop", "checkout"), "scale", Utc::now()).await;
    drop(store);
    let rules = r#"
rules:
  - name: rule-scale
    matchers: ['alertname="HighRequestLatency"']
    target: { kind: Deployment, name: "{{ deployment }}" }
    action: { scale: { by: 1, max: 10 } }
    verify: { within: 30s, every: 200ms }
    cooldown: 0s
"#;
    let s = spawn_salve(Options {
        kube: Some(kube.clone()),
        database: Some(database),
        rules: Some(rules.to_owned()),
        ..Options::default()
    })
    .await;
    s.reached(1, &["verifying"]).await;
    // The resumed ladder is verifying (for 30 s): the port answers meanwhile.
    let (health, _) = s.get("/healthz").await;
    assert_eq!(health, 200);
    let (status, _) = s
        .post_alerts(&fixture("firing-single-api-posted.json"))
        .await;
    assert_eq!(status, 200);
    let r = s.detail(&id).await;
    assert_eq!(
        r["state"], "verifying",
        "still running in the background: {r:#}"
    );
    assert_eq!(
        kube.get("deployments", "shop", "checkout").unwrap()["spec"]["replicas"],
        3,
        "resumed from a fresh read"
    );
}

#[tokio::test]
async fn an_incident_that_resolves_before_its_decision_is_not_left_undecided() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&fresh_database(dir.path()).await)
        .await
        .unwrap();
    // Acknowledged firing, then resolved, with no engine deciding in between (salve was
    // down, or its queue was long).
    let firing = fixture("firing-single-api-posted.json");
    let stored = store
        .record_delivery(&Delivery::parse(firing.as_bytes()).unwrap(), Utc::now())
        .await
        .unwrap();
    assert_eq!(stored.to_decide.len(), 1);
    let resolved = support::resolved(&firing);
    store
        .record_delivery(&Delivery::parse(resolved.as_bytes()).unwrap(), Utc::now())
        .await
        .unwrap();
    let incident = store.incident(&stored.to_decide[0]).await.unwrap().unwrap();
    assert_eq!(incident.decision, "resolved_before_decision");
    assert_eq!(
        incident.decision_reason,
        "the alert resolved before salve decided for it"
    );
    assert!(store.undecided_firing_incidents().await.unwrap().is_empty());
    assert_eq!(store.settle_resolved_undecided().await.unwrap(), 0);
}
