//! salve against a real Kubernetes v1.28 control plane (etcd, kube-apiserver,
//! kube-controller-manager; see `support::control_plane`): the same actions kubectl
//! takes, with real admission, RBAC, and status that lags every write.

mod support;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use support::control_plane::ControlPlane;
use support::workloads::*;
use support::{Options, TestSalve, events, firing_for, firing_with, resolved, spawn_salve};

/// Rules with short windows, one per action and kind.
const RULES: &str = r#"
rules:
  - name: scale-deployment
    matchers: ['alertname="HighRequestLatency"']
    target: { kind: Deployment, name: "{{ deployment }}" }
    action: { scale: { by: 1, min: 1, max: 10 } }
    verify: { within: 20s, every: 200ms }
    cooldown: 0s
  - name: scale-up-capped
    matchers: ['alertname="CappedLatency"']
    target: { kind: Deployment, name: "{{ deployment }}" }
    action: { scale: { by: 2, min: 2, max: 5 } }
    cooldown: 0s
  - name: scale-stalls
    matchers: ['alertname="StallingLatency"']
    target: { kind: Deployment, name: "{{ deployment }}" }
    action: { scale: { by: 1, max: 10 } }
    verify: { within: 3s, every: 200ms }
    revert_on_failure: true
    cooldown: 0s
  - name: rollback-deployment
    matchers: ['alertname="PodCrashLooping"']
    target: { kind: Deployment, name: "{{ deployment }}" }
    action: { rollback: {} }
    verify: { within: 2s, every: 200ms }
    cooldown: 0s
  - name: rollback-stalls
    matchers: ['alertname="StallingRollback"']
    target: { kind: Deployment, name: "{{ deployment }}" }
    action: { rollback: {} }
    verify: { within: 3s, every: 200ms }
    revert_on_failure: true
    cooldown: 0s
  - name: restart-deployment
    matchers: ['alertname="KubeDeploymentReplicasMismatch"']
    target: { kind: Deployment, name: "{{ deployment }}" }
    action: { restart: {} }
    verify: { within: 2s, every: 200ms }
    cooldown: 0s
  - name: scale-statefulset
    matchers: ['alertname="StatefulSetLag"']
    target: { kind: StatefulSet, name: "{{ statefulset }}" }
    action: { scale: { by: 1, max: 5 } }
    verify: { within: 2s, every: 200ms }
    cooldown: 0s
  - name: restart-statefulset
    matchers: ['alertname="StatefulSetStuck"']
    target: { kind: StatefulSet, name: "{{ statefulset }}" }
    action: { restart: {} }
    verify: { within: 2s, every: 200ms }
    cooldown: 0s
  - name: restart-statefulset-patient
    matchers: ['alertname="StatefulSetCanary"']
    target: { kind: StatefulSet, name: "{{ statefulset }}" }
    action: { restart: {} }
    verify: { within: 30s, every: 200ms }
    cooldown: 0s
"#;

async fn salve_with(kubeconfig: std::path::PathBuf, dry_run: bool) -> TestSalve {
    spawn_salve(Options {
        kubeconfig: Some(kubeconfig),
        rules: Some(RULES.to_owned()),
        dry_run,
        ..Options::default()
    })
    .await
}

async fn salve_on(plane: &ControlPlane) -> TestSalve {
    salve_with(plane.admin_kubeconfig.clone(), false).await
}

fn sts_alert(alertname: &str, ns: &str, name: &str, fingerprint: &str) -> String {
    firing_with(
        json!({"alertname": alertname, "namespace": ns, "statefulset": name}),
        fingerprint,
    )
}

#[tokio::test]
async fn a_latency_alert_scales_a_real_deployment_and_heals_once_rolled_out_and_resolved() {
    let Some(plane) = ControlPlane::get() else {
        return;
    };
    let ns = plane.namespace("scale").await;
    let client = plane.client().await;
    create_deployment(&client, &ns.name, deployment("checkout", 2, "checkout:1.4")).await;
    let s = salve_on(plane).await;

    let firing = firing_for(
        "HighRequestLatency",
        &ns.name,
        "checkout",
        "aaaa000000000001",
    );
    s.post_alerts(&firing).await;
    s.settled(1).await;
    let d = deployment_rolled_out(&client, &ns.name, "checkout").await;
    assert_eq!(replicas_of(&d), 3);
    s.post_alerts(&resolved(&firing)).await;
    let items = s.finished(1).await;
    assert_eq!(items[0]["state"], "healed", "{:#}", items[0]);

    let detail = s.detail(items[0]["id"].as_str().unwrap()).await;
    let calls: Vec<(String, bool, Value)> = events(&detail, "kube_call")
        .iter()
        .filter(|c| c["detail"]["verb"] != "LIST")
        .take(4)
        .map(|c| {
            (
                c["detail"]["verb"].as_str().unwrap().to_owned(),
                c["detail"]["dry_run"].as_bool().unwrap(),
                c["detail"]["status"].clone(),
            )
        })
        .collect();
    assert_eq!(
        calls,
        vec![
            ("GET".into(), false, json!(200)),
            // The namespace: is it annotated salve.io/paused?
            ("GET".into(), false, json!(200)),
            ("PATCH".into(), true, json!(200)),
            ("PATCH".into(), false, json!(200))
        ]
    );
    let verification = &events(&detail, "verification")[0]["detail"];
    let polls = verification["polls"].as_array().unwrap();
    assert_eq!(
        polls.last().unwrap()["rollout"]["status"],
        "done",
        "{verification}"
    );
    assert!(verification["written_generation"].as_i64().unwrap() >= 2);
}

#[tokio::test]
async fn a_scale_up_rule_never_lowers_a_deployment_scaled_past_its_max() {
    let Some(plane) = ControlPlane::get() else {
        return;
    };
    let ns = plane.namespace("nolower").await;
    let client = plane.client().await;
    create_deployment(&client, &ns.name, deployment("checkout", 7, "checkout:1.4")).await;
    let s = salve_on(plane).await;
    s.post_alerts(&firing_for(
        "CappedLatency",
        &ns.name,
        "checkout",
        "aaaa000000000002",
    ))
    .await;
    let items = s.finished(1).await;
    assert_eq!(items[0]["state"], "skipped", "{:#}", items[0]);
    let reason = items[0]["reasons"][0].as_str().unwrap();
    assert!(reason.contains("never lowers"), "{reason}");
    assert_eq!(
        replicas_of(&get_deployment(&client, &ns.name, "checkout").await),
        7
    );
}

#[tokio::test]
async fn a_statefulset_scales_through_its_scale_subresource() {
    let Some(plane) = ControlPlane::get() else {
        return;
    };
    let ns = plane.namespace("sts").await;
    let client = plane.client().await;
    create_statefulset(&client, &ns.name, statefulset("pg", 2, "RollingUpdate")).await;
    let s = salve_on(plane).await;
    s.post_alerts(&sts_alert(
        "StatefulSetLag",
        &ns.name,
        "pg",
        "aaaa000000000003",
    ))
    .await;
    let items = s.finished(1).await;
    let sts = get_statefulset(&client, &ns.name, "pg").await;
    assert_eq!(sts.spec.unwrap().replicas, Some(3));
    let detail = s.detail(items[0]["id"].as_str().unwrap()).await;
    let writes: Vec<&Value> = events(&detail, "kube_call")
        .into_iter()
        .filter(|c| {
            c["detail"]["verb"] == "PATCH"
                && !c["detail"]["path"]
                    .as_str()
                    .unwrap()
                    .contains("fieldManager=salve-record")
        })
        .collect();
    assert!(
        writes.iter().all(
            |c| c["detail"]["path"].as_str().unwrap().starts_with(&format!(
                "/apis/apps/v1/namespaces/{}/statefulsets/pg/scale",
                ns.name
            ))
        ),
        "{writes:#?}"
    );
    // Not healed (the alert never resolved), but the rollout of salve's change completed.
    let verification = &events(&detail, "verification")[0]["detail"];
    assert_eq!(verification["outcome"], "not_healed", "{verification}");
}

#[tokio::test]
async fn a_rollback_restores_the_previous_revision_like_kubectl_rollout_undo() {
    let Some(plane) = ControlPlane::get() else {
        return;
    };
    let ns = plane.namespace("rollback").await;
    let client = plane.client().await;
    create_deployment(&client, &ns.name, deployment("api", 2, "api:1.0")).await;
    set_image(&client, &ns.name, "api", "api:1.1").await;
    deployment_rolled_out(&client, &ns.name, "api").await;
    let s = salve_on(plane).await;

    s.post_alerts(&firing_for(
        "PodCrashLooping",
        &ns.name,
        "api",
        "aaaa000000000004",
    ))
    .await;
    s.finished(1).await;
    let d = deployment_rolled_out(&client, &ns.name, "api").await;
    assert_eq!(image_of(&d), "api:1.0");
    let labels = d.spec.unwrap().template.metadata.unwrap().labels.unwrap();
    assert!(!labels.contains_key("pod-template-hash"), "{labels:?}");
}

#[tokio::test]
async fn a_restart_stamps_restarted_at_and_refuses_paused_and_on_delete_workloads() {
    let Some(plane) = ControlPlane::get() else {
        return;
    };
    let ns = plane.namespace("restart").await;
    let client = plane.client().await;
    create_deployment(&client, &ns.name, deployment("web", 1, "web:1")).await;
    create_deployment(&client, &ns.name, deployment("frozen", 1, "web:1")).await;
    create_statefulset(&client, &ns.name, statefulset("ondel", 1, "OnDelete")).await;
    create_statefulset(
        &client,
        &ns.name,
        statefulset("rolling", 1, "RollingUpdate"),
    )
    .await;
    let api: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    api.patch(
        "frozen",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"paused": true}})),
    )
    .await
    .unwrap();
    let s = salve_on(plane).await;

    s.post_alerts(&firing_for(
        "KubeDeploymentReplicasMismatch",
        &ns.name,
        "web",
        "aaaa000000000008",
    ))
    .await;
    s.post_alerts(&firing_for(
        "KubeDeploymentReplicasMismatch",
        &ns.name,
        "frozen",
        "aaaa000000000009",
    ))
    .await;
    s.post_alerts(&sts_alert(
        "StatefulSetStuck",
        &ns.name,
        "ondel",
        "aaaa00000000000a",
    ))
    .await;
    s.post_alerts(&sts_alert(
        "StatefulSetStuck",
        &ns.name,
        "rolling",
        "aaaa00000000000b",
    ))
    .await;
    let items = s.finished(4).await;
    let by_target = |name: &str| {
        items
            .iter()
            .find(|r| r["target"]["name"] == name)
            .unwrap_or_else(|| panic!("{name}: {items:#?}"))
            .clone()
    };

    let web = get_deployment(&client, &ns.name, "web").await;
    assert!(restarted_at(&web.spec.unwrap().template).is_some());
    let rolling = get_statefulset(&client, &ns.name, "rolling").await;
    assert!(restarted_at(&rolling.spec.unwrap().template).is_some());

    let frozen = by_target("frozen");
    assert_eq!(frozen["state"], "failed", "{frozen:#}");
    assert!(
        frozen["reasons"][0].as_str().unwrap().contains("is paused"),
        "{frozen:#}"
    );
    let untouched = get_deployment(&client, &ns.name, "frozen").await;
    assert!(restarted_at(&untouched.spec.unwrap().template).is_none());

    let ondel = by_target("ondel");
    assert_eq!(ondel["state"], "failed", "{ondel:#}");
    assert!(
        ondel["reasons"][0].as_str().unwrap().contains("OnDelete"),
        "{ondel:#}"
    );
    let detail = s.detail(ondel["id"].as_str().unwrap()).await;
    assert!(
        events(&detail, "verification").is_empty(),
        "never judged as a rollout"
    );
    let sts = get_statefulset(&client, &ns.name, "ondel").await;
    assert!(restarted_at(&sts.spec.unwrap().template).is_none());
}

#[tokio::test]
async fn a_partitioned_statefulset_rollout_counts_as_done_the_way_kubectl_counts_it() {
    let Some(plane) = ControlPlane::get() else {
        return;
    };
    let ns = plane.namespace("partition").await;
    let client = plane.client().await;
    let mut sts = statefulset("pg", 3, "RollingUpdate");
    sts["spec"]["updateStrategy"]["rollingUpdate"] = json!({"partition": 2});
    create_statefulset(&client, &ns.name, sts).await;
    let s = salve_on(plane).await;
    let firing = sts_alert("StatefulSetCanary", &ns.name, "pg", "aaaa000000000030");
    s.post_alerts(&firing).await;
    s.settled(1).await;
    // Only ordinal 2 (at or above the partition) takes the new template.
    let what = "the partitioned rollout to update one Pod";
    let api: Api<k8s_openapi::api::apps::v1::StatefulSet> =
        Api::namespaced(client.clone(), &ns.name);
    support::eventually(what, std::time::Duration::from_secs(30), async || {
        let st = api
            .get("pg")
            .await
            .map_err(|e| e.to_string())?
            .status
            .unwrap_or_default();
        if st.updated_replicas == Some(1) && st.ready_replicas == Some(3) {
            Ok(())
        } else {
            Err(format!("{st:?}"))
        }
    })
    .await;
    s.post_alerts(&resolved(&firing)).await;
    let items = s.finished(1).await;
    assert_eq!(items[0]["state"], "healed", "{:#}", items[0]);
    let detail = s.detail(items[0]["id"].as_str().unwrap()).await;
    let verification = &events(&detail, "verification")[0]["detail"];
    let last = verification["polls"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["rollout"]["status"], "done", "{verification:#}");
    assert!(
        last["rollout"]["detail"]
            .as_str()
            .unwrap()
            .contains("partitioned roll out complete: 1 new pods"),
        "{verification:#}"
    );
    let st = api.get("pg").await.unwrap().status.unwrap();
    assert_ne!(
        st.current_revision, st.update_revision,
        "two Pods keep the old template"
    );
}

#[tokio::test]
async fn dry_run_mode_leaves_the_real_object_unchanged() {
    let Some(plane) = ControlPlane::get() else {
        return;
    };
    let ns = plane.namespace("dryrun").await;
    let client = plane.client().await;
    let before = create_deployment(&client, &ns.name, deployment("checkout", 2, "c:1")).await;
    let s = salve_with(plane.admin_kubeconfig.clone(), true).await;
    s.post_alerts(&firing_for(
        "HighRequestLatency",
        &ns.name,
        "checkout",
        "aaaa00000000000c",
    ))
    .await;
    let items = s.finished(1).await;
    assert_eq!(items[0]["state"], "dry_run", "{:#}", items[0]);
    assert_eq!(
        items[0]["summary"],
        format!(
            "would scale Deployment {}/checkout from 2 to 3 replicas",
            ns.name
        )
    );
    let after = get_deployment(&client, &ns.name, "checkout").await;
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
    assert_eq!(replicas_of(&after), 2);
}

#[tokio::test]
async fn a_missing_workload_fails_with_the_apis_404() {
    let Some(plane) = ControlPlane::get() else {
        return;
    };
    let ns = plane.namespace("missing").await;
    let s = salve_on(plane).await;
    s.post_alerts(&firing_for(
        "HighRequestLatency",
        &ns.name,
        "ghost",
        "aaaa00000000000d",
    ))
    .await;
    let items = s.finished(1).await;
    assert_eq!(items[0]["state"], "failed");
    let reason = items[0]["reasons"][0].as_str().unwrap();
    assert!(
        reason.contains("404") && reason.contains("not found"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_rollout_that_never_becomes_ready_is_reverted_by_compare_and_revert() {
    let Some(plane) = ControlPlane::get() else {
        return;
    };
    let ns = plane.namespace("stall").await;
    let client = plane.client().await;
    create_deployment(&client, &ns.name, deployment("checkout", 2, "c:1")).await;
    create_deployment(&client, &ns.name, deployment("cart", 2, "c:1")).await;
    plane.hold_unready(&format!("{}/", ns.name));
    let s = salve_on(plane).await;

    s.post_alerts(&firing_for(
        "StallingLatency",
        &ns.name,
        "checkout",
        "aaaa00000000000e",
    ))
    .await;
    let items = s.finished(1).await;
    let r = &items[0];
    assert_eq!(r["state"], "escalated", "{r:#}");
    let reason = r["reasons"][0].as_str().unwrap();
    assert!(
        reason.contains("made things worse") && reason.contains("not rolled out within"),
        "{reason}"
    );
    assert!(
        reason.contains("salve reverted its change (scaled back to 2 replicas)"),
        "{reason}"
    );
    assert_eq!(
        replicas_of(&get_deployment(&client, &ns.name, "checkout").await),
        2
    );
    let detail = s.detail(r["id"].as_str().unwrap()).await;
    let verdicts = events(&detail, "policy_evaluated");
    assert_eq!(
        verdicts.last().unwrap()["detail"]["input"]["action"]["type"],
        "revert"
    );

    // A human scales `cart` during salve's verification: the revert leaves it alone.
    s.post_alerts(&firing_for(
        "StallingLatency",
        &ns.name,
        "cart",
        "aaaa00000000000f",
    ))
    .await;
    s.reached(2, &["verifying"]).await;
    let api: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    api.patch(
        "cart",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 6}})),
    )
    .await
    .unwrap();
    let items = s.finished(2).await;
    let cart = items
        .iter()
        .find(|r| r["target"]["name"] == "cart")
        .unwrap();
    let reason = cart["reasons"][0].as_str().unwrap();
    assert!(
        reason.contains("not reverted") && reason.contains("6 replicas, not the 3 salve set"),
        "{reason}"
    );
    assert_eq!(
        replicas_of(&get_deployment(&client, &ns.name, "cart").await),
        6
    );
    plane.release(&format!("{}/", ns.name));
}

#[tokio::test]
async fn a_rollback_whose_pods_never_become_ready_is_reverted_to_the_template_salve_replaced() {
    let Some(plane) = ControlPlane::get() else {
        return;
    };
    let ns = plane.namespace("rbstall").await;
    let client = plane.client().await;
    create_deployment(&client, &ns.name, deployment("api", 2, "api:1.0")).await;
    set_image(&client, &ns.name, "api", "api:1.1").await;
    deployment_rolled_out(&client, &ns.name, "api").await;
    plane.hold_unready(&format!("{}/", ns.name));
    let s = salve_on(plane).await;
    s.post_alerts(&firing_for(
        "StallingRollback",
        &ns.name,
        "api",
        "aaaa000000000010",
    ))
    .await;
    let items = s.finished(1).await;
    let reason = items[0]["reasons"][0].as_str().unwrap();
    assert!(reason.contains("made things worse"), "{reason}");
    assert!(
        reason.contains("salve reverted its change (restored the previous pod template)"),
        "{reason}"
    );
    plane.release(&format!("{}/", ns.name));
    let d = deployment_rolled_out(&client, &ns.name, "api").await;
    assert_eq!(
        image_of(&d),
        "api:1.1",
        "the template salve replaced is back"
    );
}

#[tokio::test]
async fn under_an_hpa_a_scale_raises_its_min_replicas_and_a_revert_restores_it() {
    let Some(plane) = ControlPlane::get() else {
        return;
    };
    let ns = plane.namespace("hpa").await;
    let client = plane.client().await;
    create_deployment(&client, &ns.name, deployment("checkout", 2, "c:1")).await;
    let hpas: Api<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler> =
        Api::namespaced(client.clone(), &ns.name);
    let hpa = json!({
        "metadata": {"name": "checkout-hpa"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "checkout"},
                 "minReplicas": 2, "maxReplicas": 5,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]}
    });
    hpas.create(&Default::default(), &serde_json::from_value(hpa).unwrap())
        .await
        .unwrap();
    let s = salve_on(plane).await;
    s.post_alerts(&firing_for(
        "StallingLatency",
        &ns.name,
        "checkout",
        "aaaa000000000040",
    ))
    .await;
    let items = s.reached(1, &["verifying"]).await;
    let id = items[0]["id"].as_str().unwrap().to_owned();
    let min = |h: k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler| {
        h.spec.unwrap().min_replicas
    };
    assert_eq!(min(hpas.get("checkout-hpa").await.unwrap()), Some(3));
    assert_eq!(
        replicas_of(&get_deployment(&client, &ns.name, "checkout").await),
        2,
        "spec.replicas is the HPA's to set, not salve's"
    );
    let detail = s.detail(&id).await;
    let input = &events(&detail, "policy_evaluated")[0]["detail"]["input"];
    assert_eq!(
        input["target"]["autoscaler"]["name"], "checkout-hpa",
        "{input:#}"
    );
    assert_eq!(input["target"]["autoscaler"]["max_replicas"], 5);
    assert_eq!(input["action"]["to"]["min_replicas"], 3);

    // A new alert on the workload after the change: salve reverts its own change.
    let mut worse: Value = serde_json::from_str(&firing_for(
        "HighRequestLatency",
        &ns.name,
        "checkout",
        "aaaa000000000041",
    ))
    .unwrap();
    worse["alerts"][0]["startsAt"] = chrono::Utc::now().to_rfc3339().into();
    s.post_alerts(&worse.to_string()).await;
    let items = s.finished(2).await;
    let first = items.iter().find(|r| r["id"] == id.as_str()).unwrap();
    let reason = first["reasons"][0].as_str().unwrap();
    assert!(
        reason.contains("salve reverted its change (restored the autoscaler's minReplicas to 2)"),
        "{reason}"
    );
    assert_eq!(min(hpas.get("checkout-hpa").await.unwrap()), Some(2));
}

/// Applies `deploy/base/rbac.yaml` and `deploy/rolebinding.yaml`, the RoleBinding moved
/// to `namespace`.
async fn apply_rbac(client: &kube::Client, namespace: &str) {
    use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
    use k8s_openapi::api::rbac::v1::{ClusterRole, RoleBinding};
    use kube::api::PostParams;
    let text = [
        concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/base/rbac.yaml"),
        concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/rolebinding.yaml"),
    ]
    .map(|f| std::fs::read_to_string(f).unwrap())
    .join("\n---\n");
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let salve_ns = serde_json::from_value(json!({"metadata": {"name": "salve"}})).unwrap();
    let _ = ns_api.create(&PostParams::default(), &salve_ns).await;
    for doc in serde_norway::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc).unwrap();
        let pp = PostParams::default();
        match v["kind"].as_str().unwrap() {
            "ServiceAccount" => {
                let api: Api<ServiceAccount> = Api::namespaced(client.clone(), "salve");
                let _ = api.create(&pp, &serde_json::from_value(v).unwrap()).await;
            }
            "ClusterRole" => {
                let api: Api<ClusterRole> = Api::all(client.clone());
                let role: ClusterRole = serde_json::from_value(v).unwrap();
                if api.create(&pp, &role).await.is_err() {
                    let name = role.metadata.name.clone().unwrap();
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(&role))
                        .await
                        .unwrap();
                }
            }
            "RoleBinding" => {
                let mut v = v;
                v["metadata"]["namespace"] = json!(namespace);
                let api: Api<RoleBinding> = Api::namespaced(client.clone(), namespace);
                api.create(&pp, &serde_json::from_value(v).unwrap())
                    .await
                    .unwrap();
            }
            other => panic!("unexpected kind {other} in the RBAC files"),
        }
    }
}

#[tokio::test]
async fn the_shipped_rbac_allows_every_action_and_nothing_outside_its_bindings() {
    let Some(plane) = ControlPlane::get() else {
        return;
    };
    let ns = plane.namespace("rbac").await;
    let elsewhere = plane.namespace("unbound").await;
    let client = plane.client().await;
    apply_rbac(&client, &ns.name).await;
    create_deployment(&client, &ns.name, deployment("web", 1, "web:1")).await;
    create_deployment(&client, &ns.name, deployment("api", 1, "api:1.0")).await;
    set_image(&client, &ns.name, "api", "api:1.1").await;
    deployment_rolled_out(&client, &ns.name, "api").await;
    create_deployment(&client, &ns.name, deployment("bounce", 1, "b:1")).await;
    create_statefulset(&client, &ns.name, statefulset("pg", 1, "RollingUpdate")).await;
    create_statefulset(&client, &ns.name, statefulset("kv", 1, "RollingUpdate")).await;
    create_deployment(&client, &elsewhere.name, deployment("web", 1, "web:1")).await;

    let dir = tempfile::tempdir().unwrap();
    let token = plane.service_account_token("salve", "salve").await;
    let s = salve_with(plane.kubeconfig_with_token(dir.path(), &token), false).await;
    let alerts = [
        firing_for("HighRequestLatency", &ns.name, "web", "bbbb000000000001"),
        firing_for("PodCrashLooping", &ns.name, "api", "bbbb000000000002"),
        firing_for(
            "KubeDeploymentReplicasMismatch",
            &ns.name,
            "bounce",
            "bbbb000000000003",
        ),
        sts_alert("StatefulSetLag", &ns.name, "pg", "bbbb000000000004"),
        sts_alert("StatefulSetStuck", &ns.name, "kv", "bbbb000000000005"),
        firing_for(
            "HighRequestLatency",
            &elsewhere.name,
            "web",
            "bbbb000000000006",
        ),
    ];
    for a in &alerts {
        s.post_alerts(a).await;
    }
    let items = s.finished(6).await;
    for r in &items {
        let in_bound = r["target"]["namespace"] == ns.name.as_str();
        if in_bound {
            assert_ne!(r["state"], "failed", "allowed by the shipped role: {r:#}");
            assert!(r["acted_at"].is_string(), "{r:#}");
        } else {
            assert_eq!(r["state"], "failed", "{r:#}");
            let reason = r["reasons"][0].as_str().unwrap();
            assert!(
                reason.contains("403") && reason.contains("forbidden"),
                "{reason}"
            );
        }
    }
    assert_eq!(
        replicas_of(&get_deployment(&client, &ns.name, "web").await),
        2
    );
    assert_eq!(
        image_of(&get_deployment(&client, &ns.name, "api").await),
        "api:1.0"
    );
    assert_eq!(
        get_statefulset(&client, &ns.name, "pg")
            .await
            .spec
            .unwrap()
            .replicas,
        Some(2)
    );
    let kv = get_statefulset(&client, &ns.name, "kv").await;
    assert!(restarted_at(&kv.spec.unwrap().template).is_some());
    assert_eq!(
        replicas_of(&get_deployment(&client, &elsewhere.name, "web").await),
        1
    );

    // A rule with `target.pod` finds the workload through the Pod's owners, with the
    // role's `get pods` and `get replicasets`: a real ReplicaSet controller's Pod.
    use salve::cluster::{Cluster, KubeCluster, TargetRef, WorkloadKind};
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns.name);
    let pod = support::eventually(
        "a Pod of web",
        std::time::Duration::from_secs(30),
        async || {
            let list = pods
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            list.items
                .into_iter()
                .filter_map(|p| p.metadata.name)
                .find(|n| n.starts_with("web-"))
                .ok_or_else(|| "none yet".to_owned())
        },
    )
    .await;
    let config =
        kube::config::Kubeconfig::read_from(plane.kubeconfig_with_token(dir.path(), &token))
            .unwrap();
    let as_salve = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(config, &Default::default())
            .await
            .unwrap(),
    )
    .unwrap();
    let owner = KubeCluster::new(as_salve)
        .pod_owner(&ns.name, &pod)
        .await
        .unwrap();
    assert_eq!(
        owner.workload,
        TargetRef::new(WorkloadKind::Deployment, &ns.name, "web")
    );
    assert_eq!(owner.chain.len(), 3, "{:?}", owner.chain);
    assert!(owner.chain[1].starts_with(&format!("ReplicaSet {}/web-", ns.name)));
}

/// Starts `salve serve` as its own process against the real control plane.
fn serve(
    plane: &ControlPlane,
    dir: &std::path::Path,
    database: &str,
    port: u16,
) -> std::process::Child {
    let policies = support::policies_with_rules(dir, Some(RULES));
    std::process::Command::new(env!("CARGO_BIN_EXE_salve"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database",
            database,
        ])
        .arg("--policies")
        .arg(&policies)
        .arg("--kubeconfig")
        .arg(&plane.admin_kubeconfig)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("salve-{port}.log"))).unwrap())
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn sigterm_with_a_ladder_in_flight_exits_within_the_grace_period_and_the_work_is_settled() {
    let Some(plane) = ControlPlane::get() else {
        return;
    };
    let ns = plane.namespace("sigterm").await;
    let client = plane.client().await;
    create_deployment(&client, &ns.name, deployment("checkout", 2, "c:1")).await;
    let dir = tempfile::tempdir().unwrap();
    let database = support::fresh_database(dir.path()).await;
    let port = support::real::free_port();
    let mut child = serve(plane, dir.path(), &database, port);
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let firing = firing_for(
        "HighRequestLatency",
        &ns.name,
        "checkout",
        "aaaa000000000020",
    );
    support::eventually(
        "salve to listen",
        std::time::Duration::from_secs(30),
        async || {
            let r = http
                .post(format!("{url}/api/v1/alerts"))
                .body(firing.clone())
                .send()
                .await;
            match r {
                Ok(r) if r.status() == 200 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    support::newest_remediation_in(&http, &url, "verifying").await;

    // SAFETY: kill(2) on the child this test started.
    let stopped = std::time::Instant::now();
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    let took = stopped.elapsed();
    eprintln!(
        "SIGTERM to exit with a ladder in flight: {:.3}s",
        took.as_secs_f64()
    );
    assert!(status.success(), "{status:?}");
    assert!(
        took < std::time::Duration::from_secs(25),
        "took {took:?}, past the 30s grace period's margin"
    );

    // The next start settles what the stopped replica left (it retired on its way out).
    let port = support::real::free_port();
    let mut child = serve(plane, dir.path(), &database, port);
    let remediations = format!("http://127.0.0.1:{port}/api/v1/remediations");
    let settled = support::eventually(
        "the left remediation to be settled",
        std::time::Duration::from_secs(30),
        async || {
            let body: Value = match http.get(&remediations).send().await {
                Ok(r) => r.json().await.map_err(|e| e.to_string())?,
                Err(e) => return Err(e.to_string()),
            };
            match body["items"][0]["state"].as_str() {
                Some("escalated") => Ok(body["items"][0].clone()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert!(
        settled["reasons"][0]
            .as_str()
            .unwrap()
            .contains("owner stopped while verifying"),
        "{settled:#}"
    );
    assert_eq!(
        replicas_of(&get_deployment(&client, &ns.name, "checkout").await),
        3,
        "no step repeated"
    );
    child.kill().unwrap();
    let _ = child.wait();
}

#[tokio::test]
async fn salves_writes_are_conditional_on_what_it_read_so_a_real_server_answers_409() {
    use salve::cluster::{Change, Cluster, KubeCluster, TargetRef, WorkloadKind};
    let Some(plane) = ControlPlane::get() else {
        return;
    };
    let ns = plane.namespace("conflict").await;
    let client = plane.client().await;
    create_deployment(&client, &ns.name, deployment("checkout", 2, "c:1")).await;
    let cluster = KubeCluster::new(client.clone());
    let target = TargetRef::new(WorkloadKind::Deployment, &ns.name, "checkout").unwrap();
    let read = cluster.read(&target).await.unwrap();
    // Someone else writes between salve's read and its write.
    let api: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    api.patch(
        "checkout",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"annotations": {"someone": "else"}}})),
    )
    .await
    .unwrap();
    for change in [
        Change::Scale { replicas: 3 },
        Change::Restart {
            restarted_at: "2026-11-30T00:00:00Z".into(),
        },
    ] {
        for dry_run in [true, false] {
            let err = cluster.write(&read, &change, dry_run).await.unwrap_err();
            assert!(err.is_conflict(), "{change:?} dry_run={dry_run}: {err}");
        }
    }
    assert_eq!(
        replicas_of(&get_deployment(&client, &ns.name, "checkout").await),
        2
    );
    // On fresh state the same write goes through. The deployment controller writes the
    // status too, so a status write may land between this read and this write: that is
    // another 409 for the same reason, and a new read must then carry the write.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let fresh = cluster.read(&target).await.unwrap();
        match cluster
            .write(&fresh, &Change::Scale { replicas: 3 }, false)
            .await
        {
            Ok(_) => break,
            Err(e) if e.is_conflict() && attempts < 5 => continue,
            Err(e) => panic!("a write on fresh state failed (attempt {attempts}): {e}"),
        }
    }
    assert_eq!(
        replicas_of(&get_deployment(&client, &ns.name, "checkout").await),
        3
    );
}
