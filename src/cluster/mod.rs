//! The Kubernetes side: what salve reads and writes, behind one small trait.
//!
//! [`Cluster`] is the seam between the engine and the API server. Each method is one
//! API call, so the engine can record every call (verb, path, dry-run, status) on the
//! remediation's timeline exactly as it happened. [`KubeCluster`] is the kube-rs
//! implementation; tests run it against a stateful fake API server over HTTP.

pub mod gitops;
mod kube;
pub mod rollback;
mod workload;

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use self::kube::KubeCluster;
pub use workload::{Condition, Revision, Workload};

/// The workload kinds salve can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
}

impl WorkloadKind {
    /// The kind as Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
        }
    }

    /// The REST resource name (`deployments`), as in API paths.
    pub fn plural(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "deployments",
            WorkloadKind::StatefulSet => "statefulsets",
        }
    }

    /// Reads a stored kind back.
    pub fn parse(s: &str) -> Option<WorkloadKind> {
        match s {
            "Deployment" => Some(WorkloadKind::Deployment),
            "StatefulSet" => Some(WorkloadKind::StatefulSet),
            _ => None,
        }
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A workload named precisely: kind, namespace and name, each valid for Kubernetes.
/// (Deserialized only from salve's own records, such as a stored escalation.)
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TargetRef {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
}

impl TargetRef {
    /// Checks the names as the API server would (DNS-1123), so a bad label value
    /// from an alert is refused before any call is made.
    pub fn new(kind: WorkloadKind, namespace: &str, name: &str) -> Result<TargetRef, String> {
        if !is_dns_label(namespace) {
            return Err(format!("{namespace:?} is not a valid namespace name"));
        }
        if name.len() > 253 || !name.split('.').all(is_dns_label) {
            return Err(format!("{name:?} is not a valid {kind} name"));
        }
        Ok(TargetRef {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }

    /// The key that serialises work on one workload (the per-target lock).
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.kind, self.namespace, self.name)
    }

    /// The object's API path, as recorded on the timeline.
    pub fn path(&self) -> String {
        format!(
            "/apis/apps/v1/namespaces/{}/{}/{}",
            self.namespace,
            self.kind.plural(),
            self.name
        )
    }
}

impl fmt::Display for TargetRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A change salve makes, computed from the rule and the workload as just read.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Change {
    /// Set `spec.replicas` through the `scale` subresource.
    Scale { replicas: i32 },
    /// Put a previous ReplicaSet's pod template (and annotations) back, as `kubectl rollout undo`.
    Rollback {
        to_revision: i64,
        template: serde_json::Value,
        annotations: BTreeMap<String, String>,
    },
    /// Stamp `kubectl.kubernetes.io/restartedAt` on the pod template, as `kubectl rollout restart`.
    Restart { restarted_at: String },
    /// Raise (or, reverting, restore) the `minReplicas` of the HorizontalPodAutoscaler that
    /// manages the workload: writing `spec.replicas` under an HPA would be undone by it,
    /// and salve would fight it.
    AutoscalerMin {
        autoscaler: String,
        min_replicas: i32,
    },
}

impl Change {
    /// The action it carries out, as stored and as `input.action.type`.
    pub fn action(&self) -> &'static str {
        match self {
            Change::Scale { .. } | Change::AutoscalerMin { .. } => "scale",
            Change::Rollback { .. } => "rollback",
            Change::Restart { .. } => "restart",
        }
    }

    /// Whether the change writes the workload itself (and so bumps its generation), rather
    /// than its autoscaler.
    pub fn writes_workload(&self) -> bool {
        !matches!(self, Change::AutoscalerMin { .. })
    }
}

/// One API call, described for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiCall {
    pub verb: &'static str,
    pub path: String,
    pub dry_run: bool,
}

impl ApiCall {
    /// Whether this call may be sent again after `error`: reads and dry-runs change
    /// nothing, so any transient failure is retried; a real write only after a 429,
    /// which the API server answers before it does anything. After a timeout or a 5xx a
    /// write may have landed, and is never re-sent blindly.
    pub fn may_retry(&self, error: &ClusterError) -> bool {
        let changes_nothing = matches!(self.verb, "GET" | "LIST") || self.dry_run;
        error.is_transient() && (changes_nothing || error.code() == Some(429))
    }

    /// The GET of the workload itself.
    pub fn read(target: &TargetRef) -> ApiCall {
        ApiCall {
            verb: "GET",
            path: target.path(),
            dry_run: false,
        }
    }

    /// The GET of the workload's namespace (is it annotated `salve.io/paused`?).
    pub fn read_namespace(target: &TargetRef) -> ApiCall {
        ApiCall {
            verb: "GET",
            path: format!("/api/v1/namespaces/{}", target.namespace),
            dry_run: false,
        }
    }

    /// The POST of an Event about the workload.
    pub fn record_event(target: &TargetRef) -> ApiCall {
        ApiCall {
            verb: "POST",
            path: format!(
                "/apis/events.k8s.io/v1/namespaces/{}/events",
                target.namespace
            ),
            dry_run: false,
        }
    }

    /// The PATCH of the `salve.io/last-remediation` annotation.
    pub fn annotate(target: &TargetRef) -> ApiCall {
        ApiCall {
            verb: "PATCH",
            path: format!("{}?fieldManager={RECORD_FIELD_MANAGER}", target.path()),
            dry_run: false,
        }
    }

    /// The LIST of a Deployment's ReplicaSets.
    pub fn list_revisions(target: &TargetRef) -> ApiCall {
        ApiCall {
            verb: "LIST",
            path: format!("/apis/apps/v1/namespaces/{}/replicasets", target.namespace),
            dry_run: false,
        }
    }

    /// The LIST of the namespace's HorizontalPodAutoscalers (is one managing the workload?).
    pub fn list_autoscalers(target: &TargetRef) -> ApiCall {
        ApiCall {
            verb: "LIST",
            path: autoscalers_path(&target.namespace),
            dry_run: false,
        }
    }

    /// The PATCH a change sends.
    pub fn write(target: &TargetRef, change: &Change, dry_run: bool) -> ApiCall {
        let path = match change {
            Change::Scale { .. } => format!("{}/scale", target.path()),
            Change::Rollback { .. } | Change::Restart { .. } => target.path(),
            Change::AutoscalerMin { autoscaler, .. } => {
                format!("{}/{autoscaler}", autoscalers_path(&target.namespace))
            }
        };
        let path = if dry_run {
            format!("{path}?dryRun=All")
        } else {
            path
        };
        ApiCall {
            verb: "PATCH",
            path,
            dry_run,
        }
    }
}

fn autoscalers_path(namespace: &str) -> String {
    format!("/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers")
}

/// The HorizontalPodAutoscaler that manages a workload, as policy sees it in
/// `input.target.autoscaler`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Autoscaler {
    pub name: String,
    pub min_replicas: i32,
    pub max_replicas: i32,
    /// The version a write to it is conditional on.
    pub resource_version: String,
}

/// Why a call failed, carrying the API's status so the engine can decide:
/// retry a conflict on fresh state, record a forbidden or missing target as a failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClusterError {
    /// The API server answered with an error status.
    #[error("{code} {reason}: {message}")]
    Api {
        code: u16,
        reason: String,
        message: String,
    },
    /// The API server could not be reached or answered nonsense.
    #[error("Kubernetes API unavailable: {0}")]
    Transport(String),
    /// The workload is in a state the action cannot apply to.
    #[error("{0}")]
    Unsupported(String),
}

impl ClusterError {
    /// The HTTP status, when the API server gave one.
    pub fn code(&self) -> Option<u16> {
        match self {
            ClusterError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// A stale write (409): worth another go on freshly read state.
    pub fn is_conflict(&self) -> bool {
        self.code() == Some(409)
    }

    /// Trouble that may pass: no answer (or none in time), throttling (429), or the
    /// API server (or a proxy before it) failing (500, 502, 503, 504).
    pub fn is_transient(&self) -> bool {
        match self {
            ClusterError::Transport(_) => true,
            ClusterError::Api { code, .. } => matches!(code, 429 | 500 | 502 | 503 | 504),
            ClusterError::Unsupported(_) => false,
        }
    }
}

/// Where a Pod's owner references led: the workload, or why none is one salve acts on;
/// and the objects read on the way (`Pod shop/api-7d9f-x2x4q`, `ReplicaSet …`), for the
/// record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodOwner {
    pub workload: Result<TargetRef, String>,
    pub chain: Vec<String>,
}

/// The calls the engine makes against a cluster; one method, one API call.
#[async_trait]
pub trait Cluster: Send + Sync {
    /// Whether the API server answers at all (`GET /version`), for `/readyz`.
    async fn reachable(&self) -> Result<(), ClusterError> {
        Ok(())
    }

    /// GET the workload and its status.
    async fn read(&self, target: &TargetRef) -> Result<Workload, ClusterError>;

    /// LIST the namespace's HorizontalPodAutoscalers and return the one whose
    /// `scaleTargetRef` is the workload, if any.
    async fn autoscaler(&self, target: &TargetRef) -> Result<Option<Autoscaler>, ClusterError>;

    /// GET the Pod, then (for a ReplicaSet's Pod) its ReplicaSet, and follow the
    /// controlling owner references to the Deployment or StatefulSet that runs it: how a
    /// rule whose alert names a Pod (`KubePodCrashLooping`) finds its workload. The inner
    /// error says why there is none (a DaemonSet's or a Job's Pod, no controller).
    async fn pod_owner(&self, namespace: &str, pod: &str) -> Result<PodOwner, ClusterError> {
        let _ = (namespace, pod);
        Err(ClusterError::Unsupported(
            "this cluster cannot look up a Pod's owner".into(),
        ))
    }

    /// GET the namespace and return its annotations: an operator pauses salve in a
    /// namespace by annotating it `salve.io/paused: "true"`.
    async fn namespace_annotations(
        &self,
        namespace: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, ClusterError>;

    /// LIST the Deployment's ReplicaSets (its revisions), oldest first.
    async fn revisions(&self, workload: &Workload) -> Result<Vec<Revision>, ClusterError>;

    /// POST a Kubernetes Event (`events.k8s.io/v1`) about the workload, so `kubectl
    /// describe` and every cluster event pipeline see what salve did.
    async fn record_event(&self, workload: &Workload, event: &Notice) -> Result<(), ClusterError>;

    /// PATCH one annotation onto the workload's metadata (no precondition: it records, it
    /// does not change what runs).
    async fn annotate(
        &self,
        workload: &Workload,
        key: &str,
        value: &str,
    ) -> Result<(), ClusterError>;

    /// PATCH the change, made conditional on the `resourceVersion` read with `workload`
    /// (a stale write is a 409). With `dry_run` the server validates and persists nothing.
    async fn write(
        &self,
        workload: &Workload,
        change: &Change,
        dry_run: bool,
    ) -> Result<Written, ClusterError>;
}

/// A Kubernetes Event salve posts about a change it made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// `SalveScaled`, `SalveRolledBack`, `SalveRestarted` or `SalveReverted`.
    pub reason: &'static str,
    /// `Scale`, `Rollback`, `Restart` or `Revert`.
    pub action: &'static str,
    /// Names the alert, the rule and the remediation.
    pub note: String,
    /// This replica (`host/incarnation`).
    pub reporting_instance: String,
}

/// The annotation a workload carries after salve changed it: the remediation and when.
pub const LAST_REMEDIATION_ANNOTATION: &str = "salve.io/last-remediation";

/// The field manager of salve's record-keeping writes (the annotation), distinct from
/// its changes, so audit logs and `managedFields` tell the two apart.
pub const RECORD_FIELD_MANAGER: &str = "salve-record";

/// What the API server said a write produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Written {
    /// `metadata.generation` of the object after the write, when the answer carried it
    /// (a `scale` subresource answer does not).
    pub generation: Option<i64>,
}

impl Written {
    /// The generation the controller must observe before status says anything about this
    /// write: every spec change bumps the generation, so it is at least one past the
    /// generation read before writing. An autoscaler's change reaches the workload through
    /// its controller; the workload's own generation is then the one to observe.
    pub fn generation_after(&self, before: &Workload, change: &Change) -> i64 {
        if !change.writes_workload() {
            return before.generation;
        }
        self.generation.unwrap_or(0).max(before.generation + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names_follow_dns_rules() {
        assert!(TargetRef::new(WorkloadKind::Deployment, "shop", "checkout").is_ok());
        assert!(TargetRef::new(WorkloadKind::Deployment, "shop", "web.v2").is_ok());
        assert!(TargetRef::new(WorkloadKind::Deployment, "Shop", "checkout").is_err());
        assert!(TargetRef::new(WorkloadKind::Deployment, "shop", "-x").is_err());
        assert!(TargetRef::new(WorkloadKind::Deployment, "shop", "a/b").is_err());
        assert!(TargetRef::new(WorkloadKind::Deployment, "", "a").is_err());
    }

    #[test]
    fn dry_run_calls_are_marked_in_the_path() {
        let t = TargetRef::new(WorkloadKind::StatefulSet, "db", "pg").unwrap();
        let call = ApiCall::write(&t, &Change::Scale { replicas: 3 }, true);
        assert_eq!(
            call.path,
            "/apis/apps/v1/namespaces/db/statefulsets/pg/scale?dryRun=All"
        );
    }
}
