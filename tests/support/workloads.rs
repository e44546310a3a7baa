//! Workloads on the real control plane, made and read the way the tests need them.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::eventually;

/// A Deployment `name` with `replicas` Pods running `image`, labelled `app: name`.
pub fn deployment(name: &str, replicas: i32, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "progressDeadlineSeconds": 600,
            "revisionHistoryLimit": 10,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]}
            }
        }
    })
}

/// A StatefulSet `name` with `replicas` Pods; `strategy` is `RollingUpdate` or `OnDelete`.
pub fn statefulset(name: &str, replicas: i32, strategy: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": strategy},
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "db:1"}]}
            }
        }
    })
}

/// Creates a Deployment and waits until it has rolled out.
pub async fn create_deployment(client: &kube::Client, ns: &str, object: Value) -> Deployment {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let d: Deployment = serde_json::from_value(object).unwrap();
    let name = d.metadata.name.clone().unwrap();
    api.create(&PostParams::default(), &d).await.unwrap();
    deployment_rolled_out(client, ns, &name).await
}

/// Creates a StatefulSet and waits until all its Pods are ready.
pub async fn create_statefulset(client: &kube::Client, ns: &str, object: Value) -> StatefulSet {
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let s: StatefulSet = serde_json::from_value(object).unwrap();
    let name = s.metadata.name.clone().unwrap();
    api.create(&PostParams::default(), &s).await.unwrap();
    let what = format!("StatefulSet {ns}/{name} ready");
    eventually(&what, Duration::from_secs(60), async || {
        let s = api.get(&name).await.map_err(|e| e.to_string())?;
        let want = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let st = s.status.clone().unwrap_or_default();
        if st.observed_generation == s.metadata.generation && st.ready_replicas == Some(want) {
            Ok(s)
        } else {
            Err(format!("{st:?}"))
        }
    })
    .await
}

/// Waits until the Deployment's rollout is complete, as kubectl counts it.
pub async fn deployment_rolled_out(client: &kube::Client, ns: &str, name: &str) -> Deployment {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let what = format!("Deployment {ns}/{name} rolled out");
    eventually(&what, Duration::from_secs(60), async || {
        let d = api.get(name).await.map_err(|e| e.to_string())?;
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let st = d.status.clone().unwrap_or_default();
        let done = st.observed_generation >= d.metadata.generation
            && st.updated_replicas == Some(want)
            && st.replicas == Some(want)
            && st.available_replicas == Some(want);
        if done { Ok(d) } else { Err(format!("{st:?}")) }
    })
    .await
}

/// Sets the image of a Deployment's container (a new revision), without waiting.
pub async fn set_image(client: &kube::Client, ns: &str, name: &str, image: &str) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}});
    api.patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap();
}

/// The Deployment as it is now.
pub async fn get_deployment(client: &kube::Client, ns: &str, name: &str) -> Deployment {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap()
}

/// The StatefulSet as it is now.
pub async fn get_statefulset(client: &kube::Client, ns: &str, name: &str) -> StatefulSet {
    Api::<StatefulSet>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap()
}

/// The image a Deployment's pod template runs.
pub fn image_of(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

/// `spec.replicas` of a Deployment.
pub fn replicas_of(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// `kubectl.kubernetes.io/restartedAt` on a pod template, if a restart set it.
pub fn restarted_at(template: &k8s_openapi::api::core::v1::PodTemplateSpec) -> Option<String> {
    template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get("kubectl.kubernetes.io/restartedAt")
        .cloned()
}
