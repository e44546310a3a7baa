//! Operators' controls: the kill switch. A pause (CLI, API, or a namespace annotation)
//! stops salve's writes before the next one, on every replica and across a restart,
//! while incidents are still recorded and decided; each would-be change is recorded as
//! `paused`, with who paused and why. Behaviour on the real control plane; the
//! fail-closed read fault on the fake API server.

mod support;

use std::process::Command;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use support::control_plane::ControlPlane;
use support::workloads::*;
use support::{Capture, FakeKube, Options, TestSalve, events, firing_for, spawn_salve};

const RULES: &str = r#"
rules:
  - name: scale-on-latency
    matchers: ['alertname="HighRequestLatency"']
    target: { kind: Deployment, name: "{{ deployment }}" }
    action: { scale: { by: 1, min: 1, max: 10 } }
    verify: { within: 20s, every: 200ms }
    cooldown: 0s
  - name: scale-ladder
    matchers: ['alertname="SlowCheckout"']
    target: { kind: Deployment, name: "{{ deployment }}" }
    steps:
      - scale: { by: 1, max: 10 }
      - scale: { by: 1, max: 10 }
    verify: { within: 6s, every: 200ms }
    cooldown: 0s
  - name: scale-gitops-opted-in
    matchers: ['alertname="GitOpsLatency"']
    target: { kind: Deployment, name: "{{ deployment }}" }
    action: { scale: { by: 1, max: 10 } }
    verify: { within: 20s, every: 200ms }
    gitops: allow
    cooldown: 0s
  - name: shadow-scale
    matchers: ['alertname="ShadowLatency"']
    target: { kind: Deployment, name: "{{ deployment }}" }
    action: { scale: { by: 1, max: 10 } }
    mode: shadow
    verify: { within: 6s, every: 200ms }
    cooldown: 0s
  - name: scale-even-without-alertmanager
    matchers: ['alertname="ProceedLatency"']
    target: { kind: Deployment, name: "{{ deployment }}" }
    action: { scale: { by: 1, max: 10 } }
    on_alertmanager_unavailable: proceed
    verify: { within: 20s, every: 200ms }
    cooldown: 0s
  - name: scale-with-approval
    matchers: ['alertname="ApprovedLatency"']
    target: { kind: Deployment, name: "{{ deployment }}" }
    action: { scale: { by: 1, max: 10 } }
    mode: approve
    approval_timeout: 1h
    verify: { within: 20s, every: 200ms }
    cooldown: 0s
  - name: scale-approval-expires
    matchers: ['alertname="UnansweredLatency"']
    target: { kind: Deployment, name: "{{ deployment }}" }
    action: { scale: { by: 1, max: 10 } }
    mode: approve
    approval_timeout: 2s
    cooldown: 0s
"#;

/// An answer's status and JSON body (`null` when it has none).
async fn status_and_json(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Runs the `salve` binary beside the salve under test ([`support::output_beside_salve`]);
/// returns exit code, stdout and stderr.
async fn salve_cli(args: &[&str]) -> (i32, String, String) {
    support::exit_and_text(support::output_beside_salve(salve_command(args)).await)
}

/// [`salve_cli`] for a test with no salve running beside it.
fn salve_cli_blocking(args: &[impl AsRef<std::ffi::OsStr>]) -> (i32, String, String) {
    support::run_to_end(&mut salve_command(args))
}

/// The `salve` binary with `args`, run by a known user and no database in the environment.
fn salve_command(args: &[impl AsRef<std::ffi::OsStr>]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_salve"));
    cmd.args(args)
        .env("USER", "alice")
        .env_remove("SUDO_USER")
        .env_remove("SALVE_DATABASE_URL");
    cmd
}

fn host() -> String {
    salve::engine::host_name()
}

async fn on_plane(plane: &ControlPlane, database: Option<String>) -> TestSalve {
    spawn_salve(Options {
        kubeconfig: Some(plane.admin_kubeconfig.clone()),
        rules: Some(RULES.to_owned()),
        database,
        ..Options::default()
    })
    .await
}

/// As [`on_plane`], with escalations posted to `capture`.
async fn on_plane_escalating(plane: &ControlPlane, capture: &Capture) -> TestSalve {
    spawn_salve(Options {
        kubeconfig: Some(plane.admin_kubeconfig.clone()),
        rules: Some(RULES.to_owned()),
        escalation_webhook_url: Some(capture.url.clone()),
        ..Options::default()
    })
    .await
}

/// The writes (real or dry-run PATCHes) a remediation's timeline records.
fn patches(detail: &Value) -> Vec<String> {
    events(detail, "kube_call")
        .iter()
        .filter(|c| c["detail"]["verb"] == "PATCH")
        .map(|c| c["detail"]["path"].as_str().unwrap().to_owned())
        .collect()
}

async fn post_pause(s: &TestSalve, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = s.http.post(format!("{}/api/v1/pause", s.url)).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    status_and_json(resp).await
}

async fn delete_pause(s: &TestSalve, query: &str) -> (u16, Value) {
    let resp = s
        .http
        .delete(format!("{}/api/v1/pause{query}", s.url))
        .send()
        .await
        .unwrap();
    status_and_json(resp).await
}

#[tokio::test]
async fn a_pause_from_the_cli_records_each_would_be_change_and_resume_lets_salve_act() {
    let Some(plane) = ControlPlane::get() else {
        return;
    };
    let ns = plane.namespace("pause").await;
    let client = plane.client().await;
    create_deployment(&client, &ns.name, deployment("checkout", 2, "checkout:1.4")).await;
    let s = on_plane(plane, None).await;

    let (code, out, err) = salve_cli(&[
        "pause",
        "--database",
        &s.database,
        "--reason",
        "deploy freeze",
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let first = out.lines().next().unwrap();
    assert!(
        first.starts_with(&format!(
            "salve is paused everywhere by alice (salve pause on {}) since ",
            host()
        )) && first.ends_with(" until resumed (reason: deploy freeze)."),
        "{out}"
    );
    assert!(
        out.contains("each change salve would make there is recorded as paused"),
        "{out}"
    );

    let (status, ready) = s.get("/readyz").await;
    assert_eq!(status, 200, "a paused salve still takes webhooks: {ready}");
    assert_eq!(ready["paused"][0]["reason"], "deploy freeze", "{ready}");
    assert_eq!(ready["paused"][0]["namespace"], Value::Null, "{ready}");
    assert!(
        s.metrics()
            .await
            .contains("salve_paused{scope=\"everywhere\",namespace=\"\"} 1"),
        "{}",
        s.metrics().await
    );

    s.post_alerts(&firing_for(
        "HighRequestLatency",
        &ns.name,
        "checkout",
        "cc00000000000001",
    ))
    .await;
    let items = s.finished(1).await;
    let r = &items[0];
    assert_eq!(r["state"], "paused", "{r:#}");
    assert!(
        r["summary"].as_str().unwrap().starts_with(&format!(
            "paused: would scale Deployment {}/checkout from 2 to 3",
            ns.name
        )),
        "{r:#}"
    );
    let reason = r["reasons"][0].as_str().unwrap();
    assert!(
        reason.contains("paused everywhere by alice") && reason.contains("deploy freeze"),
        "{reason}"
    );
    let detail = s.detail(r["id"].as_str().unwrap()).await;
    let verdicts = events(&detail, "policy_evaluated");
    assert_eq!(verdicts.len(), 1, "decided and judged as usual");
    assert_eq!(verdicts[0]["detail"]["verdict"]["allowed"], true);
    assert!(
        patches(&detail).is_empty(),
        "not even a dry-run: {:?}",
        patches(&detail)
    );
    assert_eq!(
        replicas_of(&get_deployment(&client, &ns.name, "checkout").await),
        2
    );
    assert!(
        s.metrics()
            .await
            .contains("salve_refusals_total{reason=\"paused\"} 1"),
        "{}",
        s.metrics().await
    );

    let (code, out, err) = salve_cli(&["resume", "--database", &s.database]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("Ended: salve is paused everywhere by alice"),
        "{out}"
    );
    assert!(out.contains("salve is not paused anywhere"), "{out}");
    let (_, ready) = s.get("/readyz").await;
    assert_eq!(ready["paused"], json!([]), "{ready}");
    let (code, out, _) = salve_cli(&["resume", "--database", &s.database]).await;
    assert_eq!(
        (code, out.lines().next().unwrap()),
        (
            0,
            "No pause of every namespace was in force; nothing changed."
        )
    );

    s.post_alerts(&firing_for(
        "HighRequestLatency",
        &ns.name,
        "checkout",
        "cc00000000000002",
    ))
    .await;
    let items = s.settled(2).await;
    assert_eq!(items[0]["state"], "verifying", "{:#}", items[0]);
    assert_eq!(
        replicas_of(&deployment_rolled_out(&client, &ns.name, "checkout").await),
        3
    );
}

#[tokio::test]
async fn a_namespace_annotated_paused_holds_only_that_namespace() {
    let Some(plane) = ControlPlane::get() else {
        return;
    };
    let held = plane.namespace("held").await;
    let free = plane.namespace("free").await;
    let client = plane.client().await;
    for ns in [&held.name, &free.name] {
        create_deployment(&client, ns, deployment("checkout", 2, "checkout:1.4")).await;
    }
    let annotations = json!({"metadata": {"annotations": {
        "salve.io/paused": "true", "salve.io/paused-reason": "migrating the database"}}});
    Api::<Namespace>::all(client.clone())
        .patch(
            &held.name,
            &PatchParams::default(),
            &Patch::Merge(&annotations),
        )
        .await
        .unwrap();
    let s = on_plane(plane, None).await;

    s.post_alerts(&firing_for(
        "HighRequestLatency",
        &held.name,
        "checkout",
        "cc00000000000011",
    ))
    .await;
    s.post_alerts(&firing_for(
        "HighRequestLatency",
        &free.name,
        "checkout",
        "cc00000000000012",
    ))
    .await;
    let items = s.settled(2).await;
    let of = |ns: &str| {
        items
            .iter()
            .find(|r| r["target"]["namespace"] == ns)
            .unwrap()
            .clone()
    };
    let paused = of(&held.name);
    assert_eq!(paused["state"], "paused", "{paused:#}");
    assert_eq!(
        paused["reasons"][0],
        format!(
            "salve is paused in namespace {0} by the annotation salve.io/paused=\"true\" on namespace {0} (reason: migrating the database)",
            held.name
        )
    );
    let detail = s.detail(paused["id"].as_str().unwrap()).await;
    let read = events(&detail, "kube_call")
        .into_iter()
        .find(|c| c["detail"]["path"] == format!("/api/v1/namespaces/{}", held.name))
        .expect("the namespace is read before the write, on the record");
    assert_eq!(read["detail"]["status"], 200);
    assert!(patches(&detail).is_empty(), "{:?}", patches(&detail));
    assert_eq!(
        replicas_of(&get_deployment(&client, &held.name, "checkout").await),
        2
    );

    assert_ne!(of(&free.name)["state"], "paused");
    assert_eq!(
        replicas_of(&deployment_rolled_out(&client, &free.name, "checkout").await),
        3
    );
}

#[tokio::test]
async fn a_running_ladder_stops_before_its_next_write_and_tells_humans() {
    let Some(plane) = ControlPlane::get() else {
        return;
    };
    let ns = plane.namespace("ladder").await;
    let client = plane.client().await;
    create_deployment(&client, &ns.name, deployment("checkout", 2, "checkout:1.4")).await;
    let capture = Capture::start().await;
    let s = on_plane_escalating(plane, &capture).await;

    s.post_alerts(&firing_for(
        "SlowCheckout",
        &ns.name,
        "checkout",
        "cc00000000000021",
    ))
    .await;
    // Step 1 was written; while it is verified, an operator pulls the switch.
    s.reached(1, &["verifying"]).await;
    let (status, body) = post_pause(
        &s,
        None,
        json!({"namespace": ns.name, "reason": "investigating", "by": "bob", "for": "1h"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["pause"]["paused_by"], "bob (API from 127.0.0.1)");
    assert!(body["pause"]["expires_at"].is_string(), "{body}");

    let items = s.finished(1).await;
    let r = &items[0];
    assert_eq!(r["state"], "paused", "{r:#}");
    assert!(
        r["summary"].as_str().unwrap().starts_with(&format!(
            "paused: would scale Deployment {}/checkout from 3 to 4",
            ns.name
        )),
        "{r:#}"
    );
    let detail = s.detail(r["id"].as_str().unwrap()).await;
    let real: Vec<String> = patches(&detail)
        .into_iter()
        .filter(|p| !p.contains("dryRun") && p.ends_with("/scale"))
        .collect();
    assert_eq!(real.len(), 1, "only step 1 was written: {real:?}");
    assert_eq!(
        replicas_of(&get_deployment(&client, &ns.name, "checkout").await),
        3
    );
    // Step 1's change stands while the alert fires: humans hear of it, once.
    let sent = capture.received(1).await;
    let reason = sent[0].to_string();
    assert!(
        reason.contains("by bob (API from 127.0.0.1)")
            && reason.contains("investigating")
            && reason.contains("earlier change"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_pause_survives_a_restart_and_the_api_guards_it() {
    let first = spawn_salve(Options {
        admin_token: Some("adm1n".into()),
        read_token: Some("r3ad".into()),
        ..Options::default()
    })
    .await;
    let body = json!({"reason": "game day"});
    assert_eq!(post_pause(&first, None, body.clone()).await.0, 401);
    assert_eq!(
        post_pause(&first, Some("r3ad"), body.clone()).await.0,
        401,
        "reads may not pause"
    );
    for (bad, says) in [
        (
            json!({"for": "soon"}),
            "for=\"soon\" is not a duration like 2h",
        ),
        (
            json!({"namespace": "Shop"}),
            "\"Shop\" is not a namespace name",
        ),
        (json!({"for": "0s"}), "must last longer than 0s"),
    ] {
        let (status, answer) = post_pause(&first, Some("adm1n"), bad.clone()).await;
        assert_eq!(status, 400, "{bad} -> {answer}");
        assert!(
            answer["error"].as_str().unwrap_or_default().contains(says),
            "{bad} -> {answer}"
        );
    }
    let (status, _) = post_pause(&first, Some("adm1n"), json!({"nope": 1})).await;
    assert!(
        (400..500).contains(&status),
        "an unknown field is refused: {status}"
    );
    let (_, listed) = first.get("/api/v1/pause").await;
    assert_eq!(
        listed["in_force"],
        json!([]),
        "nothing bad was stored: {listed}"
    );

    let (status, answer) = post_pause(&first, Some("adm1n"), body).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(
        answer["pause"]["paused_by"],
        "an operator (API from 127.0.0.1)"
    );

    let TestSalve {
        salve,
        database,
        dir,
        ..
    } = first;
    salve.stop().await;
    let again = spawn_salve(Options {
        database: Some(database),
        admin_token: Some("adm1n".into()),
        read_token: Some("r3ad".into()),
        ..Options::default()
    })
    .await;
    let (_, ready) = again.get("/readyz").await;
    assert_eq!(ready["paused"][0]["reason"], "game day", "{ready}");
    again
        .post_alerts(&support::fixture("firing-from-prometheus-rule.json"))
        .await;
    let items = again.finished(1).await;
    assert_eq!(items[0]["state"], "paused", "offline too: {:#}", items[0]);

    let resp = again
        .http
        .delete(format!("{}/api/v1/pause", again.url))
        .bearer_auth("adm1n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resumed: Value = resp.json().await.unwrap();
    assert_eq!(resumed["resumed"][0]["reason"], "game day", "{resumed}");
    assert_eq!(resumed["in_force"], json!([]));
    drop(dir);
}

#[tokio::test]
async fn salve_does_not_write_when_it_cannot_read_whether_the_namespace_is_paused() {
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    kube.fail_next("GET", "/api/v1/namespaces/shop", false, 403);
    let s = spawn_salve(Options {
        kube: Some(kube.clone()),
        rules: Some(RULES.to_owned()),
        ..Options::default()
    })
    .await;
    s.post_alerts(&firing_for(
        "HighRequestLatency",
        "shop",
        "checkout",
        "cc00000000000031",
    ))
    .await;
    let items = s.finished(1).await;
    assert_eq!(items[0]["state"], "failed", "{:#}", items[0]);
    let reason = items[0]["reasons"][0].as_str().unwrap();
    assert!(
        reason.starts_with("cannot tell whether namespace shop is paused")
            && reason.contains("403")
            && reason.ends_with("salve does not write blind"),
        "{reason}"
    );
    assert!(kube.writes().is_empty(), "{:?}", kube.writes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pause_through_one_replica_holds_the_other_on_postgres() {
    let Some(plane) = ControlPlane::get() else {
        return;
    };
    let Some(database) = support::postgres_database("the pause-across-replicas test").await else {
        return;
    };
    let ns = plane.namespace("replicas").await;
    let client = plane.client().await;
    create_deployment(&client, &ns.name, deployment("checkout", 2, "checkout:1.4")).await;
    let a = on_plane(plane, Some(database.clone())).await;
    let b = on_plane(plane, Some(database)).await;

    let (status, body) =
        post_pause(&a, None, json!({"reason": "change freeze", "by": "carol"})).await;
    assert_eq!(status, 201, "{body}");
    let (_, ready) = b.get("/readyz").await;
    assert_eq!(
        ready["paused"][0]["paused_by"], "carol (API from 127.0.0.1)",
        "{ready}"
    );
    assert!(
        b.metrics()
            .await
            .contains("salve_paused{scope=\"everywhere\",namespace=\"\"} 1")
    );

    b.post_alerts(&firing_for(
        "HighRequestLatency",
        &ns.name,
        "checkout",
        "cc00000000000041",
    ))
    .await;
    let items = b.finished(1).await;
    assert_eq!(items[0]["state"], "paused", "{:#}", items[0]);
    assert!(
        items[0]["reasons"][0]
            .as_str()
            .unwrap()
            .contains("by carol")
    );
    assert_eq!(
        replicas_of(&get_deployment(&client, &ns.name, "checkout").await),
        2
    );

    let (status, body) = delete_pause(&b, "?by=dave").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["resumed_by"], "dave (API from 127.0.0.1)");
    let (_, ready) = a.get("/readyz").await;
    assert_eq!(ready["paused"], json!([]), "{ready}");
    a.post_alerts(&firing_for(
        "HighRequestLatency",
        &ns.name,
        "checkout",
        "cc00000000000042",
    ))
    .await;
    a.settled(2).await;
    assert_eq!(
        replicas_of(&deployment_rolled_out(&client, &ns.name, "checkout").await),
        3
    );
}

#[tokio::test]
async fn a_workload_argo_cd_manages_is_left_alone_unless_the_rule_opts_in() {
    let Some(plane) = ControlPlane::get() else {
        return;
    };
    let ns = plane.namespace("gitops").await;
    let client = plane.client().await;
    let mut argo = deployment("checkout", 2, "checkout:1.4");
    argo["metadata"]["labels"] = json!({"argocd.argoproj.io/instance": "shop"});
    create_deployment(&client, &ns.name, argo).await;
    let mut flux = deployment("cart", 2, "cart:2.0");
    flux["metadata"]["labels"] = json!({
        "kustomize.toolkit.fluxcd.io/name": "apps",
        "kustomize.toolkit.fluxcd.io/namespace": "flux-system"});
    create_deployment(&client, &ns.name, flux).await;
    let s = on_plane(plane, None).await;

    s.post_alerts(&firing_for(
        "HighRequestLatency",
        &ns.name,
        "checkout",
        "cc00000000000051",
    ))
    .await;
    let items = s.finished(1).await;
    let r = &items[0];
    assert_eq!(r["state"], "denied", "{r:#}");
    assert_eq!(
        r["reasons"][0],
        format!(
            "Deployment {}/checkout is managed by argocd (shop, label argocd.argoproj.io/instance): its next sync would undo the change; give rule scale-on-latency `gitops: allow` once argocd leaves this field to salve",
            ns.name
        )
    );
    let detail = s.detail(r["id"].as_str().unwrap()).await;
    let input = &events(&detail, "policy_evaluated")[0]["detail"]["input"];
    assert_eq!(input["rule"]["gitops"], "deny");
    assert_eq!(
        input["target"]["managed_by"],
        json!({"tool": "argocd", "name": "shop", "evidence": "label argocd.argoproj.io/instance"})
    );
    assert_eq!(
        replicas_of(&get_deployment(&client, &ns.name, "checkout").await),
        2
    );

    s.post_alerts(&firing_for(
        "GitOpsLatency",
        &ns.name,
        "cart",
        "cc00000000000052",
    ))
    .await;
    let items = s.settled(2).await;
    let cart = items
        .iter()
        .find(|r| r["target"]["name"] == "cart")
        .unwrap();
    assert_eq!(cart["state"], "verifying", "{cart:#}");
    let detail = s.detail(cart["id"].as_str().unwrap()).await;
    let input = &events(&detail, "policy_evaluated")[0]["detail"]["input"];
    assert_eq!(input["rule"]["gitops"], "allow");
    assert_eq!(
        input["target"]["managed_by"]["name"],
        "Kustomization flux-system/apps"
    );
    assert_eq!(
        replicas_of(&deployment_rolled_out(&client, &ns.name, "cart").await),
        3
    );
}

#[tokio::test]
async fn a_shadow_rule_runs_everything_but_the_write_and_its_report_says_what_it_would_have_achieved()
 {
    let Some(plane) = ControlPlane::get() else {
        return;
    };
    let ns = plane.namespace("shadow").await;
    let client = plane.client().await;
    create_deployment(&client, &ns.name, deployment("checkout", 2, "checkout:1.4")).await;
    let mut optout = deployment("legacy", 2, "legacy:1");
    optout["metadata"]["annotations"] = json!({"salve.io/disabled": "true"});
    create_deployment(&client, &ns.name, optout).await;
    let capture = Capture::start().await;
    let s = on_plane_escalating(plane, &capture).await;

    // 1: the alert resolves while the shadow rule watches.
    let first = firing_for("ShadowLatency", &ns.name, "checkout", "cc00000000000061");
    s.post_alerts(&first).await;
    let id = support::eventually(
        "the shadow rule's dry-run",
        std::time::Duration::from_secs(30),
        async || {
            let items = s.remediations().await;
            let Some(r) = items.first() else {
                return Err("no remediation yet".to_owned());
            };
            let id = r["id"].as_str().unwrap().to_owned();
            let dry = patches(&s.detail(&id).await);
            if dry.iter().any(|p| p.contains("dryRun=All")) {
                Ok(id)
            } else {
                Err(format!("{dry:?}"))
            }
        },
    )
    .await;
    // Meanwhile a real rule acts on the same workload: a shadow rule holds no lock.
    s.post_alerts(&firing_for(
        "HighRequestLatency",
        &ns.name,
        "checkout",
        "cc00000000000062",
    ))
    .await;
    s.post_alerts(&support::resolved(&first)).await;
    let items = s.settled(2).await;
    let shadowed = items.iter().find(|r| r["id"] == id.as_str()).unwrap();
    assert_eq!(shadowed["state"], "shadowed", "{shadowed:#}");
    assert!(
        shadowed["summary"].as_str().unwrap().starts_with(&format!(
            "shadow: would scale Deployment {}/checkout from 2 to 3 replicas; the alert resolved on its own after ",
            ns.name
        )),
        "{shadowed:#}"
    );
    assert_eq!(
        shadowed["reasons"][0],
        "the API server accepted the change as a server-side dry-run; the rule is in shadow mode, so nothing was changed"
    );
    let detail = s.detail(&id).await;
    assert_eq!(
        patches(&detail).len(),
        1,
        "one dry-run, no write: {:?}",
        patches(&detail)
    );
    let verdict = &events(&detail, "policy_evaluated")[0]["detail"];
    assert_eq!(verdict["input"]["rule"]["mode"], "shadow");
    assert_eq!(verdict["verdict"]["allowed"], true);
    let watch = &events(&detail, "verification")[0]["detail"];
    assert_eq!(watch["shadow"], true);
    assert_eq!(watch["outcome"], "resolved_on_its_own");
    let real = items.iter().find(|r| r["id"] != id.as_str()).unwrap();
    assert_eq!(real["state"], "verifying", "not skipped as busy: {real:#}");
    assert_eq!(
        replicas_of(&deployment_rolled_out(&client, &ns.name, "checkout").await),
        3,
        "only the real rule's change"
    );

    // 2: the alert keeps firing through the watch. 3: policy denies the would-be change.
    s.post_alerts(&firing_for(
        "ShadowLatency",
        &ns.name,
        "checkout",
        "cc00000000000063",
    ))
    .await;
    s.post_alerts(&firing_for(
        "ShadowLatency",
        &ns.name,
        "legacy",
        "cc00000000000064",
    ))
    .await;
    let items = s.finished(4).await;
    let still = items
        .iter()
        .find(|r| r["summary"].as_str().unwrap().contains("from 3 to 4"))
        .unwrap();
    assert_eq!(still["state"], "shadowed", "{still:#}");
    assert!(
        still["summary"].as_str().unwrap().ends_with(
            "the alert still fired 6s later (the rule would then have tried its next step or escalated)"
        ),
        "{still:#}"
    );
    assert_eq!(
        replicas_of(&get_deployment(&client, &ns.name, "checkout").await),
        3
    );

    let (code, out, err) =
        salve_cli(&["rules", "report", "shadow-scale", "--database", &s.database]).await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("Rule shadow-scale since ")
            && lines[0].ends_with(": 3 remediation(s)."),
        "{out}"
    );
    assert_eq!(
        lines[1],
        "Would have acted (shadow; policy allowed it and the API server accepted the dry-run): 2."
    );
    assert!(
        lines[2].starts_with(
            "The alert resolved on its own, with no change made: 1 of 2 (50%), after "
        ),
        "{out}"
    );
    assert_eq!(
        lines[3],
        "The alert still fired when the watch ended: 1 of 2."
    );
    assert_eq!(lines[4], "Denied by policy: 1.");
    assert_eq!(
        lines[5],
        format!(
            "  1 × Deployment {}/legacy is annotated salve.io/disabled=true",
            ns.name
        )
    );
    assert_eq!(lines[6], "By state: denied 1, shadowed 2.");
    let (_, json, _) = salve_cli(&[
        "rules",
        "report",
        "shadow-scale",
        "--database",
        &s.database,
        "-o",
        "json",
    ])
    .await;
    let report: Value = serde_json::from_str(&json).unwrap();
    // A rule on trial pages no one, not even when policy denies it.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let shadow_ids: Vec<&Value> = items
        .iter()
        .filter(|r| r["rule"] == "shadow-scale")
        .map(|r| &r["id"])
        .collect();
    assert_eq!(shadow_ids.len(), 3);
    let paged: Vec<Value> = capture
        .bodies()
        .into_iter()
        .filter(|b| shadow_ids.contains(&&b["remediation_id"]))
        .collect();
    assert!(paged.is_empty(), "{paged:#?}");
    assert_eq!(
        (
            report["would_have_acted"].as_u64(),
            report["resolved_on_its_own"].as_u64()
        ),
        (Some(2), Some(1))
    );
}

/// Posts alerts to a real Alertmanager as Prometheus does.
async fn push_to_alertmanager(am: &reqwest::Url, labels: Value) {
    let now = chrono::Utc::now().to_rfc3339();
    let resp = reqwest::Client::new()
        .post(am.join("api/v2/alerts").unwrap())
        .json(&json!([{"labels": labels, "startsAt": now}]))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silence_or_an_inhibition_in_a_real_alertmanager_stops_the_next_step() {
    if !support::real::binaries_present() {
        return;
    }
    let Some(plane) = ControlPlane::get() else {
        return;
    };
    let silenced_ns = plane.namespace("silence").await;
    let inhibited_ns = plane.namespace("inhibit").await;
    let client = plane.client().await;
    for ns in [&silenced_ns.name, &inhibited_ns.name] {
        create_deployment(&client, ns, deployment("checkout", 2, "checkout:1.4")).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let am_port = support::real::free_port();
    let am_url: reqwest::Url = format!("http://127.0.0.1:{am_port}/").parse().unwrap();
    let s = spawn_salve(Options {
        kubeconfig: Some(plane.admin_kubeconfig.clone()),
        rules: Some(RULES.to_owned()),
        alertmanager_urls: vec![am_url.clone()],
        ..Options::default()
    })
    .await;
    let am =
        support::real::alertmanager_on(dir.path(), &format!("{}/api/v1/alerts", s.url), am_port)
            .await;
    for ns in [&silenced_ns.name, &inhibited_ns.name] {
        push_to_alertmanager(
            &am.url,
            json!({"alertname": "SlowCheckout", "namespace": ns, "deployment": "checkout"}),
        )
        .await;
    }
    // Both ladders took step 1 (Alertmanager said "active"); while they verify, a human
    // silences one alert and a NodeDown alert inhibits the other.
    let items = s.reached(2, &["verifying"]).await;
    assert!(
        items.iter().all(|r| r["state"] == "verifying"),
        "{items:#?}"
    );
    let detail = s.detail(items[0]["id"].as_str().unwrap()).await;
    let seen = &events(&detail, "policy_evaluated")[0]["detail"]["input"]["alertmanager"];
    assert_eq!(seen["state"], "active", "{seen}");
    assert_eq!(seen["silencedBy"], json!([]), "{seen}");

    let in_an_hour = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let silence: Value = reqwest::Client::new()
        .post(am.url.join("api/v2/silences").unwrap())
        .json(&json!({
            "matchers": [
                {"name": "alertname", "value": "SlowCheckout", "isRegex": false, "isEqual": true},
                {"name": "namespace", "value": silenced_ns.name, "isRegex": false, "isEqual": true}],
            "startsAt": chrono::Utc::now().to_rfc3339(), "endsAt": in_an_hour,
            "createdBy": "erin", "comment": "handled by hand"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let silence_id = silence["silenceID"].as_str().unwrap().to_owned();
    push_to_alertmanager(
        &am.url,
        json!({"alertname": "NodeDown", "namespace": inhibited_ns.name}),
    )
    .await;

    let items = s.finished(2).await;
    let of = |ns: &str| {
        items
            .iter()
            .find(|r| r["target"]["namespace"] == ns)
            .unwrap()
    };
    let silenced = of(&silenced_ns.name);
    assert_eq!(silenced["state"], "silenced", "{silenced:#}");
    assert!(
        silenced["summary"].as_str().unwrap().starts_with(&format!(
            "silenced: would scale Deployment {}/checkout from 3 to 4",
            silenced_ns.name
        )),
        "{silenced:#}"
    );
    let reason = silenced["reasons"][0].as_str().unwrap();
    assert!(
        reason.contains(&format!("silence {silence_id} by erin until "))
            && reason.contains("(handled by hand)")
            && reason.ends_with("salve takes no further step"),
        "{reason}"
    );
    let inhibited = of(&inhibited_ns.name);
    assert_eq!(inhibited["state"], "silenced", "{inhibited:#}");
    let reason = inhibited["reasons"][0].as_str().unwrap();
    assert!(reason.contains("inhibited by the alert(s) "), "{reason}");
    for ns in [&silenced_ns.name, &inhibited_ns.name] {
        assert_eq!(
            replicas_of(&get_deployment(&client, ns, "checkout").await),
            3,
            "step 1 only, in {ns}"
        );
    }
}

#[tokio::test]
async fn without_an_answer_from_alertmanager_the_rule_decides_hold_or_proceed() {
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    kube.add_deployment("shop", "cart", 2, "cart:1.0");
    // Nothing listens there.
    let gone: reqwest::Url = format!("http://127.0.0.1:{}/", support::real::free_port())
        .parse()
        .unwrap();
    let s = spawn_salve(Options {
        kube: Some(kube.clone()),
        rules: Some(RULES.to_owned()),
        alertmanager_urls: vec![gone],
        ..Options::default()
    })
    .await;
    s.post_alerts(&firing_for(
        "HighRequestLatency",
        "shop",
        "checkout",
        "cc00000000000071",
    ))
    .await;
    s.post_alerts(&firing_for(
        "ProceedLatency",
        "shop",
        "cart",
        "cc00000000000072",
    ))
    .await;
    let items = s.settled(2).await;
    let held = items
        .iter()
        .find(|r| r["target"]["name"] == "checkout")
        .unwrap();
    assert_eq!(held["state"], "failed", "{held:#}");
    let reason = held["reasons"][0].as_str().unwrap();
    assert!(
        reason.starts_with(
            "cannot tell whether Alertmanager silences this alert (no Alertmanager answered ("
        ) && reason.ends_with(
            "rule scale-on-latency says on_alertmanager_unavailable: hold, so salve made no change"
        ),
        "{reason}"
    );
    let went = items
        .iter()
        .find(|r| r["target"]["name"] == "cart")
        .unwrap();
    assert_eq!(went["state"], "verifying", "{went:#}");
    let detail = s.detail(went["id"].as_str().unwrap()).await;
    let seen = &events(&detail, "policy_evaluated")[0]["detail"]["input"]["alertmanager"];
    assert_eq!(seen["state"], "unavailable", "{seen}");
    let writes: Vec<_> = kube.writes().into_iter().filter(|w| !w.dry_run()).collect();
    assert_eq!(
        writes.len(),
        1,
        "only the rule that proceeds wrote: {writes:?}"
    );
}

/// The real (not dry-run) scale PATCHes a remediation's timeline records (a dry-run's
/// path ends in `?dryRun=All`).
fn real_scales(detail: &Value) -> usize {
    patches(detail)
        .iter()
        .filter(|p| p.ends_with("/scale"))
        .count()
}

async fn post_decision(s: &TestSalve, id: &str, verb: &str, body: Value) -> (u16, Value) {
    let resp = s
        .http
        .post(format!("{}/api/v1/remediations/{id}/{verb}", s.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    status_and_json(resp).await
}

#[tokio::test]
async fn an_approve_rule_waits_for_a_human_and_writes_once_approved() {
    let Some(plane) = ControlPlane::get() else {
        return;
    };
    let ns = plane.namespace("approve").await;
    let client = plane.client().await;
    create_deployment(&client, &ns.name, deployment("checkout", 2, "checkout:1.4")).await;
    let chat = Capture::start().await;
    let s = spawn_salve(Options {
        kubeconfig: Some(plane.admin_kubeconfig.clone()),
        rules: Some(RULES.to_owned()),
        approval_webhook_url: Some(chat.url.clone()),
        ..Options::default()
    })
    .await;
    s.post_alerts(&firing_for(
        "ApprovedLatency",
        &ns.name,
        "checkout",
        "cc00000000000081",
    ))
    .await;
    let items = s.reached(1, &["awaiting_approval"]).await;
    let r = &items[0];
    assert_eq!(r["state"], "awaiting_approval", "{r:#}");
    let id = r["id"].as_str().unwrap().to_owned();
    let plan = format!("scale Deployment {}/checkout from 2 to 3 replicas", ns.name);
    assert!(
        r["summary"]
            .as_str()
            .unwrap()
            .contains(&format!("would {plan}")),
        "{r:#}"
    );
    let asked = chat.received(1).await;
    assert_eq!(asked[0]["remediation_id"], id.as_str());
    assert_eq!(asked[0]["request"]["plan"], plan.as_str());
    assert_eq!(
        asked[0]["approve_url"],
        format!("{}/api/v1/remediations/{id}/approve", s.url)
    );
    let detail = s.detail(&id).await;
    assert_eq!(
        real_scales(&detail),
        0,
        "the dry-run only: {:?}",
        patches(&detail)
    );
    assert_eq!(
        replicas_of(&get_deployment(&client, &ns.name, "checkout").await),
        2
    );

    let (code, out, err) = salve_cli(&["approve", &id, "--database", &s.database]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.trim_end(),
        format!(
            "Approved by alice (salve approve on {}): Deployment {}/checkout. salve reads the workload and asks policy again before it writes; if either changed, it writes nothing.",
            host(),
            ns.name
        )
    );
    let items = s.settled(1).await;
    assert_eq!(items[0]["state"], "verifying", "{:#}", items[0]);
    assert_eq!(
        replicas_of(&deployment_rolled_out(&client, &ns.name, "checkout").await),
        3
    );
    let detail = s.detail(&id).await;
    let approved = events(&detail, "state_changed")
        .into_iter()
        .find(|e| e["detail"]["from"] == "awaiting_approval")
        .expect("the approval is on the audit-chained timeline");
    assert_eq!(
        approved["detail"]["summary"],
        format!("approved by alice (salve approve on {}): {plan}", host())
    );
    assert_eq!(
        events(&detail, "policy_evaluated").len(),
        2,
        "judged again on fresh state after the approval"
    );
    let (code, _, err) = salve_cli(&["approve", &id, "--database", &s.database]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("waits for no approval; nothing was approved"),
        "{err}"
    );
}

#[tokio::test]
async fn a_rejected_or_unanswered_change_is_never_written() {
    let Some(plane) = ControlPlane::get() else {
        return;
    };
    let ns = plane.namespace("reject").await;
    let client = plane.client().await;
    create_deployment(&client, &ns.name, deployment("checkout", 2, "checkout:1.4")).await;
    create_deployment(&client, &ns.name, deployment("cart", 2, "cart:1.0")).await;
    let s = on_plane(plane, None).await;
    s.post_alerts(&firing_for(
        "ApprovedLatency",
        &ns.name,
        "checkout",
        "cc00000000000091",
    ))
    .await;
    s.post_alerts(&firing_for(
        "UnansweredLatency",
        &ns.name,
        "cart",
        "cc00000000000092",
    ))
    .await;
    let items = s.reached(2, &["awaiting_approval"]).await;
    let id = items
        .iter()
        .find(|r| r["target"]["name"] == "checkout")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let (status, body) = post_decision(&s, &id, "reject", json!({"by": "bob"})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post_decision(
        &s,
        &id,
        "reject",
        json!({"by": "bob", "reason": "we are failing over"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "rejected");

    let items = s.finished(2).await;
    let rejected = items.iter().find(|r| r["id"] == id.as_str()).unwrap();
    assert_eq!(rejected["state"], "rejected", "{rejected:#}");
    assert_eq!(rejected["reasons"], json!(["we are failing over"]));
    let expired = items.iter().find(|r| r["id"] != id.as_str()).unwrap();
    assert_eq!(expired["state"], "escalated", "{expired:#}");
    assert!(
        expired["summary"].as_str().unwrap().contains(&format!(
            "no one approved or rejected \"scale Deployment {}/cart from 2 to 3 replicas\" by ",
            ns.name
        )),
        "{expired:#}"
    );
    let (status, body) =
        post_decision(&s, expired["id"].as_str().unwrap(), "approve", json!({})).await;
    assert_eq!(status, 409, "too late: {body}");
    for name in ["checkout", "cart"] {
        assert_eq!(
            replicas_of(&get_deployment(&client, &ns.name, name).await),
            2,
            "{name}"
        );
    }
    // A rejection frees the workload at once.
    s.post_alerts(&firing_for(
        "HighRequestLatency",
        &ns.name,
        "checkout",
        "cc00000000000093",
    ))
    .await;
    let items = s.settled(3).await;
    assert_eq!(items[0]["state"], "verifying", "{:#}", items[0]);
}

#[tokio::test]
async fn an_approval_granted_after_the_workload_changed_is_judged_again_and_writes_nothing() {
    let Some(plane) = ControlPlane::get() else {
        return;
    };
    let ns = plane.namespace("stale").await;
    let client = plane.client().await;
    create_deployment(&client, &ns.name, deployment("checkout", 2, "checkout:1.4")).await;
    create_deployment(&client, &ns.name, deployment("cart", 2, "cart:1.0")).await;
    let s = on_plane(plane, None).await;
    s.post_alerts(&firing_for(
        "ApprovedLatency",
        &ns.name,
        "checkout",
        "cc000000000000a1",
    ))
    .await;
    s.post_alerts(&firing_for(
        "ApprovedLatency",
        &ns.name,
        "cart",
        "cc000000000000a2",
    ))
    .await;
    let items = s.reached(2, &["awaiting_approval"]).await;
    let id_of = |name: &str| {
        items.iter().find(|r| r["target"]["name"] == name).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (checkout, cart) = (id_of("checkout"), id_of("cart"));

    // While they wait: checkout's owners opt it out (policy now denies), and someone
    // scales cart by hand (the approved change is no longer the one salve would make).
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), &ns.name);
    let optout = json!({"metadata": {"annotations": {"salve.io/disabled": "true"}}});
    deployments
        .patch("checkout", &PatchParams::default(), &Patch::Merge(&optout))
        .await
        .unwrap();
    deployments
        .patch(
            "cart",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    for id in [&checkout, &cart] {
        let (status, body) = post_decision(&s, id, "approve", json!({"by": "carol"})).await;
        assert_eq!(status, 200, "{body}");
    }
    let items = s.finished(2).await;
    let denied = items.iter().find(|r| r["id"] == checkout.as_str()).unwrap();
    assert_eq!(denied["state"], "denied", "{denied:#}");
    assert!(
        denied["reasons"][0]
            .as_str()
            .unwrap()
            .contains("is annotated salve.io/disabled=true"),
        "{denied:#}"
    );
    let stale = items.iter().find(|r| r["id"] == cart.as_str()).unwrap();
    assert_eq!(stale["state"], "escalated", "{stale:#}");
    assert_eq!(
        stale["reasons"][0],
        format!(
            "Deployment {0}/cart changed since carol (API from 127.0.0.1) approved \"scale Deployment {0}/cart from 2 to 3 replicas\": salve would now scale Deployment {0}/cart from 5 to 6 replicas; a stale approval writes nothing",
            ns.name
        )
    );
    for (id, name, replicas) in [(&checkout, "checkout", 2), (&cart, "cart", 5)] {
        assert_eq!(real_scales(&s.detail(id).await), 0, "{name}: dry-runs only");
        assert_eq!(
            replicas_of(&get_deployment(&client, &ns.name, name).await),
            replicas,
            "{name}"
        );
    }
}

#[tokio::test]
async fn policy_can_demand_approval_of_a_change_an_auto_rule_would_make() {
    let Some(plane) = ControlPlane::get() else {
        return;
    };
    let ns = plane.namespace("demand").await;
    let client = plane.client().await;
    let mut critical = deployment("pay", 2, "pay:3.1");
    critical["metadata"]["labels"] = json!({"app": "pay", "tier": "critical"});
    create_deployment(&client, &ns.name, critical).await;
    create_deployment(&client, &ns.name, deployment("docs", 2, "docs:1")).await;
    let s = on_plane(plane, None).await;
    std::fs::write(
        s.dir.path().join("policies/approval.rego"),
        "package salve\n\nimport rego.v1\n\nrequire_approval contains msg if {\n\tinput.target.labels.tier == \"critical\"\n\tmsg := sprintf(\"%s is critical: a human approves every change\", [input.target.name])\n}\n",
    )
    .unwrap();
    let (status, body) = s.reload().await;
    assert_eq!(status, 200, "{body}");

    s.post_alerts(&firing_for(
        "HighRequestLatency",
        &ns.name,
        "pay",
        "cc000000000000b1",
    ))
    .await;
    s.post_alerts(&firing_for(
        "HighRequestLatency",
        &ns.name,
        "docs",
        "cc000000000000b2",
    ))
    .await;
    let items = s.reached(2, &["awaiting_approval", "verifying"]).await;
    let of = |name: &str| {
        items
            .iter()
            .find(|r| r["target"]["name"] == name)
            .unwrap()
            .clone()
    };
    let (pay, docs) = (of("pay"), of("docs"));
    assert_eq!(pay["state"], "awaiting_approval", "{pay:#}");
    assert_eq!(
        docs["state"], "verifying",
        "no approval asked for docs: {docs:#}"
    );
    let id = pay["id"].as_str().unwrap();
    let detail = s.detail(id).await;
    let verdict = &events(&detail, "policy_evaluated")[0]["detail"]["verdict"];
    assert_eq!(verdict["allowed"], true);
    assert_eq!(
        verdict["approval"],
        json!(["pay is critical: a human approves every change"])
    );
    assert_eq!(
        replicas_of(&get_deployment(&client, &ns.name, "pay").await),
        2
    );
    let (status, body) = post_decision(&s, id, "approve", json!({"by": "dana"})).await;
    assert_eq!(status, 200, "{body}");
    let items = s.settled(2).await;
    assert!(
        items.iter().all(|r| r["state"] == "verifying"),
        "{items:#?}"
    );
    assert_eq!(
        replicas_of(&deployment_rolled_out(&client, &ns.name, "pay").await),
        3
    );
}

#[tokio::test]
async fn the_storm_brake_pauses_everything_and_tells_humans_once() {
    let capture = Capture::start().await;
    let s = spawn_salve(Options {
        escalation_webhook_url: Some(capture.url.clone()),
        limits: salve::engine::Limits {
            storm_brake: Some(salve::engine::StormBrake {
                per_minute: 3,
                pause_for: std::time::Duration::from_secs(3600),
            }),
            ..Options::default().limits
        },
        ..Options::default()
    })
    .await;
    for i in 0..8 {
        let fp = format!("dd0000000000000{i}");
        s.post_alerts(&firing_for(
            "HighRequestLatency",
            "shop",
            &format!("web-{i}"),
            &fp,
        ))
        .await;
    }
    let items = s.finished(8).await;
    let tripped: Vec<&Value> = items
        .iter()
        .filter(|r| r["summary"] == "paused: the storm brake tripped as this remediation opened")
        .collect();
    assert_eq!(tripped.len(), 1, "{items:#?}");
    let reason = tripped[0]["reasons"][0].as_str().unwrap();
    assert!(
        reason.starts_with("storm brake: ")
            && reason.contains("more than 3; automation is paused everywhere until "),
        "{reason}"
    );
    let acted = items.iter().filter(|r| r["state"] == "dry_run").count();
    let paused = items.iter().filter(|r| r["state"] == "paused").count();
    assert!(acted <= 3, "at most the brake's 3 acted: {items:#?}");
    assert_eq!(acted + paused, 8, "{items:#?}");
    let (_, ready) = s.get("/readyz").await;
    assert!(
        ready["paused"][0]["paused_by"]
            .as_str()
            .unwrap()
            .starts_with("salve's storm brake ("),
        "{ready}"
    );
    // One escalation, however many remediations met the brake.
    let sent = capture.received(1).await;
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(capture.bodies().len(), 1, "{sent:#?}");
    assert_eq!(capture.bodies()[0]["remediation_id"], tripped[0]["id"]);

    // Resumed, salve acts again.
    let (status, _) = delete_pause(&s, "").await;
    assert_eq!(status, 200);
    let (_, ready) = s.get("/readyz").await;
    assert_eq!(ready["paused"], json!([]), "{ready}");
}

#[tokio::test]
async fn a_storm_that_goes_on_while_braked_trips_the_brake_once() {
    let dir = tempfile::tempdir().unwrap();
    let database = support::fresh_database(dir.path()).await;
    let store = salve::store::Store::open(&database).await.unwrap();
    let now = chrono::Utc::now();
    let brake = salve::store::pauses::NewPause {
        namespace: None,
        reason: "storm".into(),
        by: "salve's storm brake (test)".into(),
        until: Some(now + chrono::Duration::hours(1)),
    };
    assert!(
        store
            .trip_brake("storm-brake-1", &brake, now)
            .await
            .unwrap()
    );
    assert!(
        !store
            .trip_brake("storm-brake-2", &brake, now)
            .await
            .unwrap(),
        "the next minute of the same storm: the brake holds already"
    );
    store
        .resume(&salve::store::pauses::ResumeScope::All, "an operator", now)
        .await
        .unwrap();
    assert!(
        !store
            .trip_brake("storm-brake-1", &brake, now)
            .await
            .unwrap(),
        "another replica in the same minute"
    );
    assert!(
        store
            .trip_brake("storm-brake-3", &brake, now)
            .await
            .unwrap(),
        "resumed, a storm that goes on trips it again"
    );
}

#[tokio::test]
async fn budgets_per_workload_and_per_namespace_hold_at_once_and_policy_sees_what_is_left() {
    use salve::store::targets::{Budget, BudgetScope};
    let Some(plane) = ControlPlane::get() else {
        return;
    };
    let ns = plane.namespace("budget").await;
    let client = plane.client().await;
    for name in ["checkout", "cart", "web"] {
        create_deployment(&client, &ns.name, deployment(name, 2, "app:1")).await;
    }
    let hour = std::time::Duration::from_secs(3600);
    let s = spawn_salve(Options {
        kubeconfig: Some(plane.admin_kubeconfig.clone()),
        rules: Some(RULES.to_owned()),
        limits: salve::engine::Limits {
            budgets: vec![
                Budget {
                    scope: BudgetScope::Target,
                    limit: 1,
                    window: hour,
                },
                Budget {
                    scope: BudgetScope::Namespace,
                    limit: 2,
                    window: hour,
                },
            ],
            ..Options::default().limits
        },
        ..Options::default()
    })
    .await;
    let first = firing_for(
        "HighRequestLatency",
        &ns.name,
        "checkout",
        "cc000000000000c1",
    );
    s.post_alerts(&first).await;
    s.settled(1).await;
    deployment_rolled_out(&client, &ns.name, "checkout").await;
    s.post_alerts(&support::resolved(&first)).await;
    assert_eq!(s.finished(1).await[0]["state"], "healed");

    s.post_alerts(&firing_for(
        "HighRequestLatency",
        &ns.name,
        "checkout",
        "cc000000000000c2",
    ))
    .await;
    let again = s.finished(2).await[0].clone();
    assert_eq!(again["state"], "skipped", "{again:#}");
    assert_eq!(
        again["reasons"][0],
        format!(
            "salve already made 1 changes to Deployment {}/checkout in the last 1h (budget target 1/1h); a human should look",
            ns.name
        )
    );
    s.post_alerts(&firing_for(
        "HighRequestLatency",
        &ns.name,
        "cart",
        "cc000000000000c3",
    ))
    .await;
    assert_eq!(s.settled(3).await[0]["state"], "verifying");
    s.post_alerts(&firing_for(
        "HighRequestLatency",
        &ns.name,
        "web",
        "cc000000000000c4",
    ))
    .await;
    let items = s.settled(4).await;
    let web = items.iter().find(|r| r["target"]["name"] == "web").unwrap();
    assert_eq!(web["state"], "skipped", "{web:#}");
    assert_eq!(
        web["reasons"][0],
        format!(
            "salve already made 2 changes to namespace {} in the last 1h (budget namespace 2/1h); a human should look",
            ns.name
        )
    );
    let detail = s.detail(web["id"].as_str().unwrap()).await;
    let budgets = &events(&detail, "policy_evaluated")[0]["detail"]["input"]["budgets"];
    assert_eq!(
        budgets,
        &json!([
            {"scope": "global", "limit": 20, "window_seconds": 3600, "used": 2, "left": 18},
            {"scope": "target", "limit": 1, "window_seconds": 3600, "used": 0, "left": 1},
            {"scope": "namespace", "limit": 2, "window_seconds": 3600, "used": 2, "left": 0}
        ])
    );
    assert_eq!(
        replicas_of(&get_deployment(&client, &ns.name, "web").await),
        2
    );
}

#[tokio::test]
async fn rules_act_only_inside_their_time_intervals_and_policy_sees_them() {
    let rules = r#"
time_intervals:
  - name: this-century
    time_intervals: [{years: ['2000:2099']}]
  - name: last-century
    time_intervals: [{years: ['1900:1999'], location: Europe/Berlin}]
rules:
  - name: only-in-the-past
    matchers: ['alertname="Past"']
    target: { kind: Deployment, name: "{{ deployment }}" }
    action: { restart: {} }
    active_time_intervals: [last-century]
  - name: muted-now
    matchers: ['alertname="Muted"']
    target: { kind: Deployment, name: "{{ deployment }}" }
    action: { restart: {} }
    mute_time_intervals: [this-century]
  - name: now
    matchers: ['alertname="Now"']
    target: { kind: Deployment, name: "{{ deployment }}" }
    action: { restart: {} }
    active_time_intervals: [last-century, this-century]
"#;
    let s = spawn_salve(Options {
        rules: Some(rules.to_owned()),
        ..Options::default()
    })
    .await;
    for (i, alertname) in ["Past", "Muted", "Now"].into_iter().enumerate() {
        s.post_alerts(&firing_for(
            alertname,
            "shop",
            &format!("web-{i}"),
            &format!("ee000000000000{i}0"),
        ))
        .await;
    }
    let items = s.finished(3).await;
    let of = |rule: &str| items.iter().find(|r| r["rule"] == rule).unwrap();
    let past = of("only-in-the-past");
    assert_eq!(past["state"], "skipped", "{past:#}");
    assert!(
        past["reasons"][0].as_str().unwrap().starts_with(
            "rule only-in-the-past acts only during the time interval(s) last-century, and none is active now ("
        ),
        "{past:#}"
    );
    let muted = of("muted-now");
    assert_eq!(muted["state"], "skipped", "{muted:#}");
    assert!(
        muted["reasons"][0].as_str().unwrap().starts_with(
            "rule muted-now is muted while time interval this-century is active (now "
        ),
        "{muted:#}"
    );
    let now = of("now");
    assert_eq!(now["state"], "dry_run", "{now:#}");
    let detail = s.detail(now["id"].as_str().unwrap()).await;
    let seen = &events(&detail, "policy_evaluated")[0]["detail"]["input"]["time_intervals"];
    assert_eq!(
        seen,
        &json!({"this-century": {"active": true}, "last-century": {"active": false}})
    );
}

#[test]
fn salve_help_lists_the_controls() {
    let (code, out, err) = salve_cli_blocking(&["--help"]);
    assert_eq!(code, 0, "{err}");
    for command in ["pause", "resume", "pauses", "approve", "reject"] {
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with(&format!("{command} "))),
            "{command} missing from:\n{out}"
        );
    }
    let (code, out, _) = salve_cli_blocking(&["pause", "--help"]);
    assert_eq!(code, 0);
    for flag in ["--namespace", "--reason", "--for", "--by"] {
        assert!(out.contains(flag), "{flag} missing from:\n{out}");
    }
}
