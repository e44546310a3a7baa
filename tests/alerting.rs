//! The whole loop with a real Prometheus and a real Alertmanager: a Prometheus rule
//! fires, Alertmanager routes it to salve, salve scales the (fake) Deployment, and then
//! either the metric recovers and salve records `healed`, or it stays bad, the ladder
//! climbs, and salve escalates through Alertmanager's own API.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::real::{self, Exporter};
use support::{FakeKube, Options, TestSalve, eventually, spawn_salve};

const RULES: &str = r#"
rules:
  - name: checkout-latency
    matchers:
      - alertname="HighRequestLatency"
      - severity=~"critical|warning"
    target: { kind: Deployment, namespace: "{{ namespace }}", name: "{{ deployment }}" }
    steps:
      - scale: { by: 1, min: 2, max: 10 }
      - scale: { by: 2, min: 2, max: 10 }
    verify: { within: VERIFY, every: 500ms }
    cooldown: 0s
"#;

struct World {
    kube: FakeKube,
    exporter: Exporter,
    salve: TestSalve,
    alertmanager: real::Process,
    prometheus: real::Process,
    _dir: tempfile::TempDir,
}

async fn world(verify_within: &str) -> World {
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    let dir = tempfile::tempdir().unwrap();
    // salve must listen before Alertmanager is told where; Prometheus comes last.
    let prom_port = real::free_port();
    let am_port = real::free_port();
    let salve = spawn_salve(Options {
        kube: Some(kube.clone()),
        rules: Some(RULES.replace("VERIFY", verify_within)),
        prometheus_url: Some(format!("http://127.0.0.1:{prom_port}/").parse().unwrap()),
        alertmanager_urls: vec![format!("http://127.0.0.1:{am_port}/").parse().unwrap()],
        ..Options::default()
    })
    .await;
    let exporter = Exporter::start(0.9).await;
    let alertmanager =
        real::alertmanager_on(dir.path(), &format!("{}/api/v1/alerts", salve.url), am_port).await;
    let prometheus = real::prometheus_on(
        dir.path(),
        exporter.port,
        &alertmanager.url,
        prom_port,
        Some(salve.salve.addr.to_string().as_str()),
    )
    .await;
    World {
        kube,
        exporter,
        salve,
        alertmanager,
        prometheus,
        _dir: dir,
    }
}

fn replicas(kube: &FakeKube) -> i64 {
    kube.get("deployments", "shop", "checkout").unwrap()["spec"]["replicas"]
        .as_i64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_prometheus_alert_is_healed_by_scaling_and_recorded_as_healed() {
    if !real::binaries_present() {
        return;
    }
    let w = world("60s").await;
    // The state moves to verifying just after the write lands: wait for the state.
    let items = w.salve.reached(1, &["verifying"]).await;
    let r = &items[0];
    assert_eq!(r["state"], "verifying", "{r:#}");
    assert_eq!(r["alertname"], "HighRequestLatency");
    assert_eq!(replicas(&w.kube), 3);

    w.exporter.set(0.1);
    let items = w.salve.finished(1).await;
    let r = &items[0];
    assert_eq!(r["state"], "healed", "{r:#}");
    assert_eq!(replicas(&w.kube), 3, "healed on the first step");
    let detail = w.salve.detail(r["id"].as_str().unwrap()).await;
    let alert = &support::events(&detail, "rule_matched")[0]["detail"]["alert"];
    assert_eq!(
        alert["labels"]["job"], "checkout",
        "the alert came from Prometheus: {alert}"
    );
    assert!(alert["generatorURL"].as_str().unwrap().contains("g0.expr="));

    // Prometheus scrapes salve too (as the shipped ServiceMonitor has it do) and reads
    // back what salve counted: this remediation, healed, by its rule and action.
    let series = first_series(
        &w.prometheus,
        r#"salve_remediations_finished_total{job="salve",state="healed"}"#,
    )
    .await;
    assert_eq!(series["metric"]["rule"], "checkout-latency", "{series}");
    assert_eq!(series["metric"]["action"], "scale", "{series}");
    assert_eq!(series["value"][1], "1", "{series}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_metric_that_stays_bad_climbs_the_ladder_and_escalates_through_alertmanager() {
    if !real::binaries_present() {
        return;
    }
    let w = world("3s").await;
    let items = w.salve.finished(1).await;
    let r = &items[0];
    assert_eq!(r["state"], "escalated", "{r:#}");
    assert_eq!(replicas(&w.kube), 5, "+1, then +2");

    let mut url = w.alertmanager.url.join("api/v2/alerts").unwrap();
    url.query_pairs_mut()
        .append_pair("filter", "alertname=\"SalveRemediationFailed\"");
    let what = "SalveRemediationFailed in Alertmanager";
    let found = eventually(what, Duration::from_secs(90), async || {
        let alerts: Value = reqwest::get(url.clone())
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        alerts
            .as_array()
            .and_then(|a| a.first().cloned())
            .ok_or_else(|| alerts.to_string())
    })
    .await;
    let labels = &found["labels"];
    assert_eq!(labels["salve_remediation"], r["id"]);
    assert_eq!(labels["original_alertname"], "HighRequestLatency");
    assert_eq!(
        (labels["namespace"].as_str(), labels["deployment"].as_str()),
        (Some("shop"), Some("checkout"))
    );
    // The link leads a person to the remediation's audit page, at salve's external URL
    // (here the default: the listen address), and the page is there.
    let audit = found["annotations"]["salve_audit_url"].as_str().unwrap();
    let id = r["id"].as_str().unwrap();
    assert_eq!(audit, format!("{}/ui/remediations/{id}", w.salve.url));
    let page = reqwest::get(audit).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains(id));
}

const BLIND_RULES: &str = r#"
rules:
  - name: checkout-latency
    matchers: ['alertname="HighRequestLatency"']
    target: { kind: Deployment, name: "{{ deployment }}" }
    steps:
      - scale: { by: 1, max: 10 }
      - scale: { by: 2, max: 10 }
    verify: { within: 3s, every: 200ms, no_data: healed }
    cooldown: 0s
"#;

/// The alert Prometheus's `HighRequestLatency` rule makes of the exporter's series.
fn prometheus_alert(exporter_port: u16, fingerprint: &str) -> String {
    let labels = serde_json::json!({
        "alertname": "HighRequestLatency", "severity": "critical", "namespace": "shop",
        "deployment": "checkout", "job": "checkout", "instance": format!("127.0.0.1:{exporter_port}")
    });
    let mut v: Value = serde_json::from_str(&support::firing_with(labels, fingerprint)).unwrap();
    v["alerts"][0]["generatorURL"] =
        "http://prometheus:9090/graph?g0.expr=checkout_latency_seconds+%3E+0.5&g0.tab=1".into();
    v["alerts"][0]["startsAt"] = chrono::Utc::now().to_rfc3339().into();
    v.to_string()
}

/// Waits until Prometheus returns the exporter's series for the alert's expression.
async fn scraping(prometheus: &real::Process) {
    first_series(prometheus, "checkout_latency_seconds > 0.5").await;
}

/// Waits until Prometheus answers `query` with a series, and returns the first.
async fn first_series(prometheus: &real::Process, query: &str) -> Value {
    let mut url = prometheus.url.join("api/v1/query").unwrap();
    url.query_pairs_mut().append_pair("query", query);
    eventually(
        &format!("Prometheus to answer {query}"),
        Duration::from_secs(30),
        async || {
            let body: Value = match reqwest::get(url.clone()).await {
                Ok(r) => r.json().await.unwrap_or(Value::Null),
                Err(e) => return Err(e.to_string()),
            };
            match body["data"]["result"].as_array() {
                Some(r) if !r.is_empty() => Ok(r[0].clone()),
                _ => Err(body.to_string()),
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_down_mid_verification_is_unavailable_and_never_climbs_the_ladder() {
    if !real::binaries_present() {
        return;
    }
    salve::telemetry::install_crypto_provider();
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    let dir = tempfile::tempdir().unwrap();
    let exporter = Exporter::start(0.9).await;
    let port = real::free_port();
    let nowhere: reqwest::Url = format!("http://127.0.0.1:{}/", real::free_port())
        .parse()
        .unwrap();
    let prometheus = real::prometheus_on(dir.path(), exporter.port, &nowhere, port, None).await;
    scraping(&prometheus).await;
    let s = spawn_salve(Options {
        kube: Some(kube.clone()),
        rules: Some(BLIND_RULES.to_owned()),
        prometheus_url: Some(prometheus.url.clone()),
        ..Options::default()
    })
    .await;

    s.post_alerts(&prometheus_alert(exporter.port, "feed000000000001"))
        .await;
    s.reached(1, &["verifying"]).await;
    drop(prometheus);
    let items = s.finished(1).await;
    let r = &items[0];
    assert_eq!(r["state"], "escalated", "{r:#}");
    let reason = r["reasons"][0].as_str().unwrap();
    assert!(
        reason.contains("cannot verify") && reason.contains("Prometheus"),
        "{reason}"
    );
    assert_eq!(kube.writes().len(), 1, "no second step while blind");
    let detail = s.detail(r["id"].as_str().unwrap()).await;
    let verification = &support::events(&detail, "verification")[0]["detail"];
    assert_eq!(verification["outcome"], "verification_unavailable");
    // Learning does not count a blind step as a try.
    let (_, tried) = s.get("/api/v1/remediations?outcome=not_healed").await;
    assert!(tried["items"].as_array().unwrap().is_empty());

    // Prometheus back: the next incident is verified on its evidence.
    let prometheus = real::prometheus_on(dir.path(), exporter.port, &nowhere, port, None).await;
    scraping(&prometheus).await;
    s.post_alerts(&prometheus_alert(exporter.port, "feed000000000002"))
        .await;
    let what = "the second remediation to see the alert still firing";
    let second = eventually(what, Duration::from_secs(30), async || {
        let items = s.remediations().await;
        let newest = items.first().cloned().unwrap_or_default();
        if items.len() == 2 && newest["state"] == "verifying" {
            Ok(newest)
        } else {
            Err(format!("{items:#?}"))
        }
    })
    .await;
    exporter.set(0.1);
    let items = s.finished(2).await;
    let r = items.iter().find(|r| r["id"] == second["id"]).unwrap();
    assert_eq!(r["state"], "healed", "{r:#}");
    let detail = s.detail(r["id"].as_str().unwrap()).await;
    let verifications = support::events(&detail, "verification");
    let first = &verifications[0]["detail"]["polls"][0];
    assert_eq!(first["alert"]["status"], "still_firing", "{detail:#}");
    let verification = &verifications.last().unwrap()["detail"];
    let polls = verification["polls"].as_array().unwrap();
    assert!(
        polls.last().unwrap()["alert"]["detail"]
            .as_str()
            .unwrap()
            .contains("returns no series (the rule reads no data as healed)"),
        "{verification:#}"
    );
}
