//! Verification against real, lagging Kubernetes status: the controller manager is
//! paused around salve's write, so the first reads after it show the *previous*
//! generation's status (a `ProgressDeadlineExceeded` included). salve must wait for the
//! controller to observe its write, and never blame its own correct fix.
//!
//! These tests pause the shared controller manager, so they live in their own test
//! binary and take turns ([`PAUSES`]).

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use serde_json::{Value, json};
use support::control_plane::ControlPlane;
use support::workloads::*;
use support::{Options, TestSalve, events, eventually, firing_for, resolved, spawn_salve};

/// One test at a time may pause the controller manager.
static PAUSES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const RULES: &str = r#"
rules:
  - name: crashloop-rollback
    matchers: ['alertname="PodCrashLooping"']
    target: { kind: Deployment, name: "{{ deployment }}" }
    action: { rollback: {} }
    verify: { within: 40s, every: 100ms }
    revert_on_failure: true
    cooldown: 0s
  - name: latency-scale
    matchers: ['alertname="HighRequestLatency"']
    target: { kind: Deployment, name: "{{ deployment }}" }
    action: { scale: { by: 1, max: 10 } }
    verify: { within: 4s, every: 100ms }
    revert_on_failure: true
    cooldown: 0s
"#;

async fn salve_on(plane: &ControlPlane) -> TestSalve {
    spawn_salve(Options {
        kubeconfig: Some(plane.admin_kubeconfig.clone()),
        rules: Some(RULES.to_owned()),
        ..Options::default()
    })
    .await
}

/// A Deployment whose rollout to `bad:2` failed: its good Pods still run, the new one
/// never becomes Ready, and the controller marked it `ProgressDeadlineExceeded`.
async fn failed_rollout(plane: &ControlPlane, client: &kube::Client, ns: &str, name: &str) {
    let mut d = deployment(name, 2, "good:1");
    d["spec"]["progressDeadlineSeconds"] = json!(2);
    create_deployment(client, ns, d).await;
    plane.hold_unready(&format!("{ns}/{name}-"));
    set_image(client, ns, name, "bad:2").await;
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let what = format!("{ns}/{name} to exceed its progress deadline");
    eventually(&what, Duration::from_secs(60), async || {
        let d = api.get(name).await.map_err(|e| e.to_string())?;
        let st = d.status.clone().unwrap_or_default();
        let timed_out = st.conditions.iter().flatten().any(|c| {
            c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        });
        if timed_out && st.observed_generation == d.metadata.generation {
            Ok(())
        } else {
            Err(format!("{st:?}"))
        }
    })
    .await;
}

/// Pauses the controller manager now and resumes it when dropped, no sooner than `hold`.
struct Paused<'a> {
    plane: &'a ControlPlane,
    since: Instant,
    hold: Duration,
}

impl<'a> Paused<'a> {
    fn new(plane: &'a ControlPlane, hold: Duration) -> Paused<'a> {
        if !hold.is_zero() {
            plane.pause_controllers();
        }
        Paused {
            plane,
            since: Instant::now(),
            hold,
        }
    }

    async fn resume(self) {
        if let Some(rest) = self.hold.checked_sub(self.since.elapsed()) {
            tokio::time::sleep(rest).await;
        }
        // Drop resumes.
    }
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        if !self.hold.is_zero() {
            self.plane.resume_controllers();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_of_a_failed_rollout_heals_twenty_times_out_of_twenty_under_controller_lag() {
    let Some(plane) = ControlPlane::get() else {
        return;
    };
    let _turn = PAUSES.lock().await;
    let ns = plane.namespace("lag").await;
    let client = plane.client().await;
    let s = salve_on(plane).await;
    let mut healed = 0;
    // Four rounds of five Deployments, the controller manager paused 0, 1, 2 and 3 s
    // around salve's writes.
    for (round, pause) in [0u64, 1, 2, 3].into_iter().enumerate() {
        let names: Vec<String> = (0..5).map(|i| format!("app-{round}-{i}")).collect();
        futures::future::join_all(
            names
                .iter()
                .map(|n| failed_rollout(plane, &client, &ns.name, n)),
        )
        .await;
        let alerts: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                firing_for(
                    "PodCrashLooping",
                    &ns.name,
                    n,
                    &format!("{round:08x}{i:08x}"),
                )
            })
            .collect();
        let paused = Paused::new(plane, Duration::from_secs(pause));
        for a in &alerts {
            s.post_alerts(a).await;
        }
        // Every write lands while the controller is paused (for pauses above 0).
        s.reached(5 * (round + 1), &["verifying"]).await;
        paused.resume().await;
        for (name, alert) in names.iter().zip(&alerts) {
            let d = deployment_rolled_out(&client, &ns.name, name).await;
            assert_eq!(image_of(&d), "good:1", "the good template stays");
            s.post_alerts(&resolved(alert)).await;
        }
        let items = s.finished(5 * (round + 1)).await;
        for r in items
            .iter()
            .filter(|r| names.iter().any(|n| r["target"]["name"] == n.as_str()))
        {
            assert_eq!(r["state"], "healed", "pause {pause}s: {r:#}");
            let detail = s.detail(r["id"].as_str().unwrap()).await;
            assert!(
                events(&detail, "revert").is_empty(),
                "nothing reverted: {detail:#}"
            );
            let verification = &events(&detail, "verification")[0]["detail"];
            let polls = verification["polls"].as_array().unwrap();
            if pause > 0 {
                assert!(
                    polls.iter().any(|p| p["rollout"]["detail"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("waiting for the controller to observe generation")),
                    "the lag was seen and waited for: {verification:#}"
                );
            }
            healed += 1;
        }
        for n in &names {
            plane.release(&format!("{}/{n}-", ns.name));
        }
    }
    assert_eq!(healed, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_an_already_failed_deployment_is_not_blamed_on_salve() {
    let Some(plane) = ControlPlane::get() else {
        return;
    };
    let _turn = PAUSES.lock().await;
    let ns = plane.namespace("prefailed").await;
    let client = plane.client().await;
    failed_rollout(plane, &client, &ns.name, "checkout").await;
    let s = salve_on(plane).await;
    let paused = Paused::new(plane, Duration::from_secs(1));
    s.post_alerts(&firing_for(
        "HighRequestLatency",
        &ns.name,
        "checkout",
        "cccc000000000001",
    ))
    .await;
    s.reached(1, &["verifying"]).await;
    paused.resume().await;
    let items = s.finished(1).await;
    let r = &items[0];
    let reason = r["reasons"][0].as_str().unwrap();
    assert_eq!(r["state"], "escalated", "{r:#}");
    assert!(!reason.contains("made things worse"), "{reason}");
    assert!(reason.contains("not healed after 1 step(s)"), "{reason}");
    assert!(
        reason.contains("unfinished before salve's change"),
        "{reason}"
    );
    assert_eq!(
        replicas_of(&get_deployment(&client, &ns.name, "checkout").await),
        3,
        "not reverted"
    );
    let detail = s.detail(r["id"].as_str().unwrap()).await;
    assert!(events(&detail, "revert").is_empty());
    // Learning records it as not healed, never as a failed rollout of salve's.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_salve"))
        .args(["stats", "--database", &s.database, "--output", "json"])
        .output()
        .unwrap();
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(
        (rows[0]["attempts"].as_i64(), rows[0]["healed"].as_i64()),
        (Some(1), Some(0))
    );
    let (_, failed) = s.get("/api/v1/remediations?outcome=rollout_failed").await;
    assert!(failed["items"].as_array().unwrap().is_empty(), "{failed:#}");
    plane.release(&format!("{}/checkout-", ns.name));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_when_the_template_already_equals_the_previous_revision_is_skipped() {
    let Some(plane) = ControlPlane::get() else {
        return;
    };
    let _turn = PAUSES.lock().await;
    let ns = plane.namespace("already").await;
    let client = plane.client().await;
    create_deployment(&client, &ns.name, deployment("api", 1, "api:1.0")).await;
    set_image(&client, &ns.name, "api", "api:1.1").await;
    deployment_rolled_out(&client, &ns.name, "api").await;
    let s = salve_on(plane).await;
    // Someone put 1.0 back by hand; before the controller makes it a new revision, the
    // template equals the previous revision's, as in kubectl's "skipped rollback".
    let paused = Paused::new(plane, Duration::from_secs(2));
    set_image(&client, &ns.name, "api", "api:1.0").await;
    s.post_alerts(&firing_for(
        "PodCrashLooping",
        &ns.name,
        "api",
        "dddd000000000001",
    ))
    .await;
    let items = s.finished(1).await;
    paused.resume().await;
    let r = &items[0];
    assert_eq!(r["state"], "skipped", "{r:#}");
    let reason = r["reasons"][0].as_str().unwrap();
    assert!(
        reason.contains("already runs the template of its previous revision 1"),
        "{reason}"
    );
    let detail = s.detail(r["id"].as_str().unwrap()).await;
    assert!(
        events(&detail, "kube_call")
            .iter()
            .all(|c| c["detail"]["verb"] != "PATCH"),
        "{detail:#}"
    );
}
