//! [`Cluster`] over the real Kubernetes API, with kube-rs.
//!
//! Every write carries the `resourceVersion` salve read, so a change made by someone
//! else in between is a 409 rather than a silent overwrite; every write can be sent
//! as a server-side dry-run (`dryRun=All`). Scale goes through the `scale`
//! subresource (what `kubectl scale` and the HPA use), so RBAC can grant exactly that.

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::workload::RESTARTED_AT_ANNOTATION;
use super::{
    Autoscaler, Change, Cluster, ClusterError, Notice, PodOwner, RECORD_FIELD_MANAGER, Revision,
    TargetRef, Workload, WorkloadKind, Written,
};

/// The field manager salve's writes are attributed to (visible in `managedFields`).
pub const FIELD_MANAGER: &str = "salve";

/// A cluster reached through a kube-rs client (kubeconfig or in-cluster service account).
#[derive(Clone)]
pub struct KubeCluster {
    client: Client,
}

impl KubeCluster {
    /// Wraps a configured client.
    pub fn new(client: Client) -> KubeCluster {
        KubeCluster { client }
    }

    fn api(&self, target: &TargetRef) -> Api<DynamicObject> {
        let resource = match target.kind {
            WorkloadKind::Deployment => ApiResource::erase::<Deployment>(&()),
            WorkloadKind::StatefulSet => ApiResource::erase::<StatefulSet>(&()),
        };
        Api::namespaced_with(self.client.clone(), &target.namespace, &resource)
    }
}

fn cluster_error(e: kube::Error) -> ClusterError {
    match e {
        kube::Error::Api(status) => ClusterError::Api {
            code: status.code,
            reason: status.reason.clone(),
            message: status.message.clone(),
        },
        other => ClusterError::Transport(other.to_string()),
    }
}

fn written(obj: DynamicObject) -> Written {
    Written {
        generation: obj.metadata.generation,
    }
}

fn params(dry_run: bool) -> PatchParams {
    PatchParams {
        dry_run,
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    }
}

#[async_trait]
impl Cluster for KubeCluster {
    async fn reachable(&self) -> Result<(), ClusterError> {
        self.client
            .apiserver_version()
            .await
            .map(drop)
            .map_err(cluster_error)
    }

    async fn record_event(&self, workload: &Workload, notice: &Notice) -> Result<(), ClusterError> {
        let t = &workload.target;
        let event = json!({
            "metadata": {"generateName": format!("{}.salve-", t.name), "namespace": t.namespace},
            "eventTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "reportingController": FIELD_MANAGER,
            "reportingInstance": notice.reporting_instance,
            "action": notice.action,
            "reason": notice.reason,
            "note": notice.note.chars().take(1000).collect::<String>(),
            "type": "Normal",
            "regarding": {"apiVersion": "apps/v1", "kind": t.kind.as_str(), "namespace": t.namespace,
                          "name": t.name, "uid": workload.uid},
        });
        let event: Event =
            serde_json::from_value(event).map_err(|e| ClusterError::Transport(e.to_string()))?;
        Api::<Event>::namespaced(self.client.clone(), &t.namespace)
            .create(&PostParams::default(), &event)
            .await
            .map(drop)
            .map_err(cluster_error)
    }

    async fn annotate(
        &self,
        workload: &Workload,
        key: &str,
        value: &str,
    ) -> Result<(), ClusterError> {
        let patch = json!({"metadata": {"annotations": {key: value}}});
        let pp = PatchParams {
            field_manager: Some(RECORD_FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        self.api(&workload.target)
            .patch(&workload.target.name, &pp, &Patch::Merge(&patch))
            .await
            .map(drop)
            .map_err(cluster_error)
    }

    async fn read(&self, target: &TargetRef) -> Result<Workload, ClusterError> {
        let obj = self
            .api(target)
            .get(&target.name)
            .await
            .map_err(cluster_error)?;
        let value =
            serde_json::to_value(&obj).map_err(|e| ClusterError::Transport(e.to_string()))?;
        Ok(Workload::from_object(target.clone(), &value))
    }

    async fn namespace_annotations(
        &self,
        namespace: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, ClusterError> {
        let ns = Api::<Namespace>::all(self.client.clone())
            .get(namespace)
            .await
            .map_err(cluster_error)?;
        Ok(ns.metadata.annotations.unwrap_or_default())
    }

    async fn pod_owner(&self, namespace: &str, pod: &str) -> Result<PodOwner, ClusterError> {
        let controller = |refs: Option<Vec<OwnerReference>>| {
            refs.unwrap_or_default()
                .into_iter()
                .find(|r| r.controller == Some(true))
        };
        let mut chain = vec![format!("Pod {namespace}/{pod}")];
        let found = Api::<Pod>::namespaced(self.client.clone(), namespace)
            .get(pod)
            .await
            .map_err(cluster_error)?;
        let owner = match controller(found.metadata.owner_references) {
            Some(o) if o.kind == "ReplicaSet" => {
                chain.push(format!("ReplicaSet {namespace}/{}", o.name));
                let rs = Api::<ReplicaSet>::namespaced(self.client.clone(), namespace)
                    .get(&o.name)
                    .await
                    .map_err(cluster_error)?;
                match controller(rs.metadata.owner_references) {
                    Some(d) => d,
                    None => {
                        return Ok(PodOwner {
                            workload: Err(format!(
                                "ReplicaSet {namespace}/{} belongs to no Deployment",
                                o.name
                            )),
                            chain,
                        });
                    }
                }
            }
            Some(o) => o,
            None => {
                return Ok(PodOwner {
                    workload: Err(format!("Pod {namespace}/{pod} has no controller")),
                    chain,
                });
            }
        };
        let kind = match (owner.kind.as_str(), owner.api_version.as_str()) {
            ("Deployment", "apps/v1") => Some(WorkloadKind::Deployment),
            ("StatefulSet", "apps/v1") => Some(WorkloadKind::StatefulSet),
            _ => None,
        };
        chain.push(format!("{} {namespace}/{}", owner.kind, owner.name));
        let workload = match kind {
            Some(kind) => TargetRef::new(kind, namespace, &owner.name),
            None => Err(format!(
                "Pod {namespace}/{pod} is run by {} {}, which salve does not act on",
                owner.kind, owner.name
            )),
        };
        Ok(PodOwner { workload, chain })
    }

    async fn autoscaler(&self, target: &TargetRef) -> Result<Option<Autoscaler>, ClusterError> {
        let api: Api<HorizontalPodAutoscaler> =
            Api::namespaced(self.client.clone(), &target.namespace);
        let list = match api.list(&ListParams::default()).await {
            Ok(list) => list,
            // The autoscaling API is not served: nothing can manage the workload.
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
            Err(e) => return Err(cluster_error(e)),
        };
        Ok(list.items.into_iter().find_map(|hpa| {
            let spec = hpa.spec?;
            let r = &spec.scale_target_ref;
            let group = r.api_version.as_deref().unwrap_or_default();
            (r.kind == target.kind.as_str() && r.name == target.name && group.starts_with("apps/"))
                .then(|| Autoscaler {
                    name: hpa.metadata.name.unwrap_or_default(),
                    min_replicas: spec.min_replicas.unwrap_or(1),
                    max_replicas: spec.max_replicas,
                    resource_version: hpa.metadata.resource_version.unwrap_or_default(),
                })
        }))
    }

    async fn revisions(&self, workload: &Workload) -> Result<Vec<Revision>, ClusterError> {
        let selector = workload
            .selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &workload.target.namespace);
        let list = api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(cluster_error)?;
        let mut out = Vec::new();
        for rs in list.items {
            let owned = rs
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.controller == Some(true) && o.uid == workload.uid);
            if !owned {
                continue;
            }
            let value =
                serde_json::to_value(&rs).map_err(|e| ClusterError::Transport(e.to_string()))?;
            out.extend(Revision::from_replica_set(&value));
        }
        out.sort_by_key(|r| r.number);
        Ok(out)
    }

    async fn write(
        &self,
        workload: &Workload,
        change: &Change,
        dry_run: bool,
    ) -> Result<Written, ClusterError> {
        let api = self.api(&workload.target);
        let name = &workload.target.name;
        let rv = &workload.resource_version;
        let pp = params(dry_run);
        match change {
            Change::Scale { replicas } => {
                let patch = json!({"metadata": {"resourceVersion": rv}, "spec": {"replicas": replicas}});
                api.patch_scale(name, &pp, &Patch::Merge(&patch))
                    .await
                    .map(|_| Written::default())
            }
            Change::Restart { restarted_at } => {
                let patch = json!({
                    "metadata": {"resourceVersion": rv},
                    "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT_ANNOTATION: restarted_at}}}}
                });
                api.patch(name, &pp, &Patch::Merge(&patch)).await.map(written)
            }
            Change::AutoscalerMin { autoscaler, min_replicas } => {
                let api: Api<HorizontalPodAutoscaler> =
                    Api::namespaced(self.client.clone(), &workload.target.namespace);
                let hpa_rv = workload
                    .autoscaler
                    .as_ref()
                    .map(|a| a.resource_version.clone())
                    .unwrap_or_default();
                let patch = json!({"metadata": {"resourceVersion": hpa_rv}, "spec": {"minReplicas": min_replicas}});
                api.patch(autoscaler, &pp, &Patch::Merge(&patch))
                    .await
                    .map(|_| Written::default())
            }
            Change::Rollback { template, annotations, .. } => {
                let ops: Value = json!([
                    {"op": "replace", "path": "/metadata/resourceVersion", "value": rv},
                    {"op": "replace", "path": "/spec/template", "value": template},
                    {"op": "replace", "path": "/metadata/annotations", "value": annotations},
                ]);
                let patch: json_patch::Patch =
                    serde_json::from_value(ops).map_err(|e| ClusterError::Transport(e.to_string()))?;
                api.patch(name, &pp, &Patch::<()>::Json(patch)).await.map(written)
            }
        }
        .map_err(cluster_error)
    }
}
