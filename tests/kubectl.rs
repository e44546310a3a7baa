//! The fake API server is faithful enough for the real kubectl: discovery, get, scale
//! (including a server-side dry-run), rollout history and rollout undo.
//! Without kubectl this skips loudly on a laptop and fails under CI.

mod support;

use std::path::Path;

use support::FakeKube;

fn kubectl_available() -> bool {
    let found = support::installed("kubectl", &["version", "--client"]);
    if !found {
        support::component_missing(
            "kubectl on PATH (Debian package kubernetes-client)",
            "the kubectl compatibility test",
        );
    }
    found
}

async fn kubectl(kubeconfig: &Path, cache: &Path, args: &[&str]) -> String {
    let out = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn kubectl_gets_scales_and_rolls_back_against_the_fake() {
    if !kubectl_available() {
        return;
    }
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    let dir = tempfile::tempdir().unwrap();
    let config = kube.write_kubeconfig(dir.path());
    let cache = dir.path().join("cache");
    let k = |args: &'static [&'static str]| kubectl(&config, &cache, args);

    let json: serde_json::Value = serde_json::from_str(
        &k(&["get", "deployment", "checkout", "-n", "shop", "-o", "json"]).await,
    )
    .unwrap();
    assert_eq!(json["spec"]["replicas"], 2);
    assert!(
        k(&["get", "deployments", "-n", "shop"])
            .await
            .contains("checkout")
    );

    k(&[
        "scale",
        "deployment/checkout",
        "-n",
        "shop",
        "--replicas=4",
        "--dry-run=server",
    ])
    .await;
    assert_eq!(
        kube.get("deployments", "shop", "checkout").unwrap()["spec"]["replicas"],
        2,
        "server dry-run persisted"
    );
    k(&["scale", "deployment/checkout", "-n", "shop", "--replicas=4"]).await;
    assert_eq!(
        kube.get("deployments", "shop", "checkout").unwrap()["spec"]["replicas"],
        4
    );

    kube.set_image("shop", "checkout", "checkout:1.5");
    let history = k(&["rollout", "history", "deployment/checkout", "-n", "shop"]).await;
    assert!(history.contains('1') && history.contains('2'), "{history}");
    let undo = k(&["rollout", "undo", "deployment/checkout", "-n", "shop"]).await;
    assert!(undo.contains("rolled back"), "{undo}");
    let d = kube.get("deployments", "shop", "checkout").unwrap();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "checkout:1.4"
    );
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
}
