//! Rolling a Deployment back exactly as `kubectl rollout undo` does.
//!
//! The previous revision is the ReplicaSet with the second-highest
//! `deployment.kubernetes.io/revision`. Its pod template, minus the
//! `pod-template-hash` label, replaces the Deployment's; its annotations replace the
//! Deployment's except the bookkeeping ones kubectl keeps from the Deployment. If the
//! template already equals that revision's (ignoring the hash label), there is nothing
//! to do. A paused Deployment is refused, as kubectl refuses it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::Value;

use super::{Change, ClusterError, Revision, Workload};

/// The ReplicaSet label that distinguishes pod templates; never copied back.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// Deployment annotations kubectl keeps rather than take from the ReplicaSet.
const ANNOTATIONS_TO_SKIP: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];

/// What a rollback would do.
#[derive(Debug, Clone, PartialEq)]
pub enum RollbackPlan {
    /// Restore `revision` with this change.
    Restore {
        from_revision: Option<i64>,
        change: Change,
    },
    /// The Deployment already runs that revision's template.
    AlreadyAt { revision: i64 },
}

/// Picks the previous revision and builds the change that restores it.
pub fn plan(deployment: &Workload, revisions: &[Revision]) -> Result<RollbackPlan, ClusterError> {
    if deployment.paused {
        return Err(ClusterError::Unsupported(format!(
            "{} is paused: a paused Deployment is not rolled back (resume it first)",
            deployment.target
        )));
    }
    let mut sorted: Vec<&Revision> = revisions.iter().collect();
    sorted.sort_by_key(|r| r.number);
    let previous = match sorted.len() {
        0 | 1 => {
            return Err(ClusterError::Unsupported(format!(
                "no rollout history found for {}: nothing to roll back to",
                deployment.target
            )));
        }
        n => sorted[n - 2],
    };
    let template = normalized_template(&previous.template);
    if template == normalized_template(&deployment.template) {
        return Ok(RollbackPlan::AlreadyAt {
            revision: previous.number,
        });
    }
    let mut annotations: BTreeMap<String, String> = ANNOTATIONS_TO_SKIP
        .iter()
        .filter_map(|k| {
            deployment
                .annotations
                .get(*k)
                .map(|v| (k.to_string(), v.clone()))
        })
        .collect();
    for (k, v) in &previous.annotations {
        if !ANNOTATIONS_TO_SKIP.contains(&k.as_str()) {
            annotations.insert(k.clone(), v.clone());
        }
    }
    Ok(RollbackPlan::Restore {
        from_revision: deployment.revision,
        change: Change::Rollback {
            to_revision: previous.number,
            template,
            annotations,
        },
    })
}

/// A pod template in the one form two templates are compared in: read as Kubernetes'
/// `PodTemplateSpec` and written back (so `creationTimestamp: null` and other fields the
/// API server spells out but the typed form omits compare equal), with the
/// `pod-template-hash` label removed.
pub fn normalized_template(template: &Value) -> Value {
    let mut t = serde_json::from_value::<PodTemplateSpec>(template.clone())
        .ok()
        .and_then(|typed| serde_json::to_value(typed).ok())
        .unwrap_or_else(|| template.clone());
    if let Some(labels) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(POD_TEMPLATE_HASH_LABEL);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{TargetRef, WorkloadKind};
    use serde_json::json;

    fn template(image: &str, hash: Option<&str>) -> Value {
        let mut labels = json!({"app": "checkout"});
        if let Some(h) = hash {
            labels["pod-template-hash"] = json!(h);
        }
        json!({"metadata": {"labels": labels}, "spec": {"containers": [{"name": "app", "image": image}]}})
    }

    fn deployment(image: &str, revision: i64) -> Workload {
        let obj = json!({
            "metadata": {"name": "checkout", "namespace": "shop", "resourceVersion": "7",
                "annotations": {"deployment.kubernetes.io/revision": revision.to_string(),
                                "kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"replicas": 2, "template": template(image, None)}
        });
        let t = TargetRef::new(WorkloadKind::Deployment, "shop", "checkout").unwrap();
        Workload::from_object(t, &obj)
    }

    fn rs(n: i64, image: &str) -> Revision {
        Revision {
            number: n,
            replica_set: format!("checkout-{n}"),
            template: template(image, Some(&format!("h{n}"))),
            annotations: [
                (
                    "deployment.kubernetes.io/revision".to_string(),
                    n.to_string(),
                ),
                ("team".to_string(), format!("rev{n}")),
            ]
            .into(),
        }
    }

    #[test]
    fn restores_the_second_newest_revision_normalized_template() {
        let d = deployment("app:3", 3);
        let plan = plan(&d, &[rs(3, "app:3"), rs(1, "app:1"), rs(2, "app:2")]).unwrap();
        let RollbackPlan::Restore {
            from_revision,
            change,
        } = plan
        else {
            panic!("expected a restore")
        };
        assert_eq!(from_revision, Some(3));
        let Change::Rollback {
            to_revision,
            template,
            annotations,
        } = change
        else {
            panic!("expected a rollback change")
        };
        assert_eq!(to_revision, 2);
        assert_eq!(template["spec"]["containers"][0]["image"], "app:2");
        assert!(
            template["metadata"]["labels"]
                .get("pod-template-hash")
                .is_none()
        );
        // Bookkeeping annotations stay the Deployment's; others come from the ReplicaSet.
        assert_eq!(annotations["deployment.kubernetes.io/revision"], "3");
        assert_eq!(
            annotations["kubectl.kubernetes.io/last-applied-configuration"],
            "{}"
        );
        assert_eq!(annotations["team"], "rev2");
    }

    #[test]
    fn templates_compare_as_kubernetes_reads_them() {
        // The API server spells out `creationTimestamp: null`; the typed form omits it.
        let raw = json!({"metadata": {"creationTimestamp": null, "labels": {"app": "checkout"}},
                         "spec": {"containers": [{"name": "app", "image": "app:1"}]}});
        assert_eq!(
            normalized_template(&raw),
            normalized_template(&template("app:1", Some("h")))
        );
    }

    #[test]
    fn nothing_to_do_when_already_at_previous_template() {
        let d = deployment("app:2", 3);
        assert_eq!(
            plan(&d, &[rs(2, "app:2"), rs(3, "app:3")]).unwrap(),
            RollbackPlan::AlreadyAt { revision: 2 }
        );
    }

    #[test]
    fn refuses_without_history_or_when_paused() {
        let d = deployment("app:1", 1);
        assert!(
            plan(&d, &[rs(1, "app:1")])
                .unwrap_err()
                .to_string()
                .contains("no rollout history")
        );
        let mut paused = deployment("app:2", 2);
        paused.paused = true;
        assert!(
            plan(&paused, &[rs(1, "app:1"), rs(2, "app:2")])
                .unwrap_err()
                .to_string()
                .contains("paused")
        );
    }
}
