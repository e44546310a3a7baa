//! salve against a real Kubernetes v1.28 control plane (etcd, kube-apiserver,
//! kube-controller-manager; see `support::control_plane`): the same actions kubectl
//! takes, with real admission, RBAC and status that lags every write.

mod support;

use support::control_plane::ControlPlane;
use support::workloads::*;
use support::{Options, TestSalve, events, firing_for, spawn_salve};

async fn salve_on(plane: &ControlPlane, rules: Option<&str>) -> TestSalve {
    spawn_salve(Options {
        kubeconfig: Some(plane.admin_kubeconfig.clone()),
        rules: rules.map(str::to_owned),
        ..Options::default()
    })
    .await
}

#[tokio::test]
async fn a_latency_alert_scales_a_real_deployment_and_verifies_the_rollout() {
    let Some(plane) = ControlPlane::get() else {
        return;
    };
    let ns = plane.namespace("scale").await;
    let client = plane.client().await;
    create_deployment(&client, &ns.name, deployment("checkout", 2, "checkout:1.4")).await;
    let s = salve_on(plane, None).await;

    s.post_alerts(&firing_for("HighRequestLatency", &ns.name, "checkout", "aaaa000000000001"))
        .await;
    let items = s.settled(1).await;
    assert_eq!(items[0]["state"], "verifying", "{:#}", items[0]);
    let d = deployment_rolled_out(&client, &ns.name, "checkout").await;
    assert_eq!(replicas_of(&d), 3);
    let detail = s.detail(items[0]["id"].as_str().unwrap()).await;
    let calls: Vec<(String, bool)> = events(&detail, "kube_call")
        .iter()
        .map(|c| {
            (
                c["detail"]["verb"].as_str().unwrap().to_owned(),
                c["detail"]["dry_run"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        calls,
        vec![("GET".into(), false), ("PATCH".into(), true), ("PATCH".into(), false)]
    );
}
