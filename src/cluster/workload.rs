//! A workload's state as salve needs it, read from the API object's JSON.
//!
//! Deployments and StatefulSets share the fields salve uses (`spec.replicas`,
//! `spec.template`, `status.*Replicas`, `metadata.generation`), so one reader serves
//! both. This is also what policy sees as `input.target`.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::TargetRef;

/// A workload as just read: enough to plan a change and to tell policy what it looks like.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Workload {
    #[serde(flatten)]
    pub target: TargetRef,
    pub uid: String,
    /// The version the write will be conditional on.
    pub resource_version: String,
    pub generation: i64,
    pub observed_generation: i64,
    /// `spec.replicas` (Kubernetes defaults it to 1).
    pub replicas: i32,
    pub ready_replicas: i32,
    pub available_replicas: i32,
    pub updated_replicas: i32,
    /// `deployment.kubernetes.io/revision`, for Deployments.
    pub revision: Option<i64>,
    pub paused: bool,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// `spec.selector.matchLabels`, used to find a Deployment's ReplicaSets.
    pub selector: BTreeMap<String, String>,
    /// `spec.template`, compared with ReplicaSets' templates on rollback.
    #[serde(skip)]
    pub template: Value,
    pub restarted_at: Option<String>,
    pub conditions: Vec<Condition>,
    /// `status.replicas`: every Pod the workload owns, old template or new. A Deployment
    /// whose rollout left old Pods behind is not done (kubectl: "old replicas are
    /// pending termination").
    pub status_replicas: i32,
    /// How a StatefulSet replaces its Pods: `RollingUpdate` (the default, and what a
    /// Deployment reads as) or `OnDelete`, where a template change waits for someone to
    /// delete Pods.
    pub update_strategy: String,
    /// `spec.updateStrategy.rollingUpdate.partition` of a StatefulSet: ordinals below it
    /// keep the old template, so a partitioned rollout is done with fewer updated Pods.
    pub partition: Option<i32>,
    /// A StatefulSet's `status.currentRevision` and `status.updateRevision`: equal when its
    /// rolling update is complete.
    pub current_revision: Option<String>,
    pub update_revision: Option<String>,
    /// The HorizontalPodAutoscaler managing the workload, when salve looked (for scale
    /// steps); `None` when there is none or it was not asked.
    pub autoscaler: Option<super::Autoscaler>,
    /// The GitOps controller (Argo CD, Flux) that puts the spec back to what Git says, if
    /// its labels or annotations name one.
    pub managed_by: Option<super::gitops::ManagedBy>,
}

/// One entry of `status.conditions`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    /// When the controller last wrote this condition. A condition salve saw before its own
    /// write, unchanged since, is not evidence about that write.
    pub last_update_time: Option<String>,
    pub last_transition_time: Option<String>,
}

/// One revision of a Deployment: a ReplicaSet it owns.
#[derive(Debug, Clone, PartialEq)]
pub struct Revision {
    pub number: i64,
    pub replica_set: String,
    pub template: Value,
    pub annotations: BTreeMap<String, String>,
}

fn str_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

/// The annotation Deployments and ReplicaSets carry their revision number in.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// The pod-template annotation `kubectl rollout restart` sets.
pub const RESTARTED_AT_ANNOTATION: &str = "kubectl.kubernetes.io/restartedAt";

impl Workload {
    /// Reads a Deployment or StatefulSet object.
    pub fn from_object(target: TargetRef, obj: &Value) -> Workload {
        let meta = &obj["metadata"];
        let spec = &obj["spec"];
        let status = &obj["status"];
        let annotations = str_map(&meta["annotations"]);
        let labels = str_map(&meta["labels"]);
        let conditions = status["conditions"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .map(|c| Condition {
                        kind: text(&c["type"]),
                        status: text(&c["status"]),
                        reason: text(&c["reason"]),
                        message: text(&c["message"]),
                        last_update_time: c["lastUpdateTime"].as_str().map(str::to_owned),
                        last_transition_time: c["lastTransitionTime"].as_str().map(str::to_owned),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Workload {
            target,
            uid: text(&meta["uid"]),
            resource_version: text(&meta["resourceVersion"]),
            generation: int(&meta["generation"]),
            observed_generation: int(&status["observedGeneration"]),
            replicas: spec["replicas"].as_i64().map(|r| r as i32).unwrap_or(1),
            ready_replicas: int(&status["readyReplicas"]) as i32,
            available_replicas: int(&status["availableReplicas"]) as i32,
            updated_replicas: int(&status["updatedReplicas"]) as i32,
            revision: annotations
                .get(REVISION_ANNOTATION)
                .and_then(|r| r.parse().ok()),
            paused: spec["paused"].as_bool().unwrap_or(false),
            managed_by: super::gitops::managed_by(&labels, &annotations),
            labels,
            selector: str_map(&spec["selector"]["matchLabels"]),
            restarted_at: spec["template"]["metadata"]["annotations"][RESTARTED_AT_ANNOTATION]
                .as_str()
                .map(str::to_owned),
            template: spec["template"].clone(),
            annotations,
            conditions,
            status_replicas: int(&status["replicas"]) as i32,
            update_strategy: spec["updateStrategy"]["type"]
                .as_str()
                .unwrap_or("RollingUpdate")
                .to_owned(),
            partition: spec["updateStrategy"]["rollingUpdate"]["partition"]
                .as_i64()
                .map(|p| p as i32),
            current_revision: status["currentRevision"].as_str().map(str::to_owned),
            update_revision: status["updateRevision"].as_str().map(str::to_owned),
            autoscaler: None,
        }
    }

    /// The status condition of that type (`Progressing`, `Available`), if the controller set one.
    pub fn condition(&self, kind: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.kind == kind)
    }
}

impl Revision {
    /// Reads a ReplicaSet object; `None` when it carries no revision number.
    pub fn from_replica_set(obj: &Value) -> Option<Revision> {
        let annotations = str_map(&obj["metadata"]["annotations"]);
        let number = annotations.get(REVISION_ANNOTATION)?.parse().ok()?;
        Some(Revision {
            number,
            replica_set: text(&obj["metadata"]["name"]),
            template: obj["spec"]["template"].clone(),
            annotations,
        })
    }
}
