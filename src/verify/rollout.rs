//! Has the workload rolled out? Decided exactly as `kubectl rollout status` decides it.
//!
//! Kubernetes status lags every write: the controller manager observes a new generation
//! tens of milliseconds to seconds after the API server accepted it, and until then the
//! status (replica counts, conditions) describes the *previous* generation. Reading it as
//! evidence about salve's change is how a correct rollback gets blamed for the failure it
//! was fixing. So, as kubectl does, nothing is concluded until
//! `status.observedGeneration` has caught up with the generation salve's write produced.
//!
//! These are pure functions of the object as read (kubectl's `DeploymentStatusViewer` and
//! `StatefulSetStatusViewer`), table-tested with kubectl's own cases. The one addition is
//! attribution: a `ProgressDeadlineExceeded` condition that was already there, unchanged,
//! before salve wrote is the old rollout's failure, not the new one's.

use serde::Serialize;

use crate::cluster::{Condition, Workload, WorkloadKind};

/// Where a rollout stands, as far as the object's status can tell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "detail", rename_all = "snake_case")]
pub enum RolloutStatus {
    /// Every replica runs the new template and is available (kubectl: "successfully rolled out").
    Done(String),
    /// Not there yet: the controller has not observed the change, or Pods are still being
    /// replaced or becoming ready.
    Progressing(String),
    /// The rollout of the observed generation failed (its progress deadline passed after
    /// salve's write).
    Failed(String),
    /// The status cannot be read or judged (the workload could not be fetched).
    Unknown(String),
}

impl RolloutStatus {
    /// Whether the rollout finished.
    pub fn is_done(&self) -> bool {
        matches!(self, RolloutStatus::Done(_))
    }

    /// The status's name, as the record and `/metrics` give it.
    pub fn name(&self) -> &'static str {
        match self {
            RolloutStatus::Done(_) => "done",
            RolloutStatus::Progressing(_) => "progressing",
            RolloutStatus::Failed(_) => "failed",
            RolloutStatus::Unknown(_) => "unknown",
        }
    }
}

/// The reason the deployment controller gives a `Progressing` condition that timed out.
const TIMED_OUT: &str = "ProgressDeadlineExceeded";

/// The rollout status of `w` after a write that produced `written_generation`.
/// `seen_before` is the `Progressing` condition as it was before salve's write (if any),
/// so that a failure left over from before is not taken as this change's failure.
pub fn rollout_status(
    w: &Workload,
    written_generation: i64,
    seen_before: Option<&Condition>,
) -> RolloutStatus {
    match w.target.kind {
        WorkloadKind::Deployment => deployment_status(w, written_generation, seen_before),
        WorkloadKind::StatefulSet => statefulset_status(w, written_generation),
    }
}

/// The generation the status must have observed: the object's own, and never less than
/// the one salve's write produced (a read that raced the write cannot pass for it).
fn wanted_generation(w: &Workload, written_generation: i64) -> i64 {
    w.generation.max(written_generation)
}

/// kubectl's `DeploymentStatusViewer.Status`, with the deadline check attributed.
pub fn deployment_status(
    d: &Workload,
    written_generation: i64,
    seen_before: Option<&Condition>,
) -> RolloutStatus {
    let name = &d.target.name;
    let wanted = wanted_generation(d, written_generation);
    if d.observed_generation < wanted {
        return RolloutStatus::Progressing(format!(
            "waiting for the controller to observe generation {wanted} (observed {})",
            d.observed_generation
        ));
    }
    let timed_out = d.condition("Progressing").filter(|c| c.reason == TIMED_OUT);
    if let Some(c) = timed_out {
        if seen_before != Some(c) {
            return RolloutStatus::Failed(format!(
                "deployment {name:?} exceeded its progress deadline: {}",
                c.message
            ));
        }
    }
    let stale = if timed_out.is_some() {
        " (its progress deadline had already passed before salve's change)"
    } else {
        ""
    };
    if d.updated_replicas < d.replicas {
        return RolloutStatus::Progressing(format!(
            "waiting for deployment {name:?} rollout to finish: {} out of {} new replicas have been updated{stale}",
            d.updated_replicas, d.replicas
        ));
    }
    if d.status_replicas > d.updated_replicas {
        return RolloutStatus::Progressing(format!(
            "waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination{stale}",
            d.status_replicas - d.updated_replicas
        ));
    }
    if d.available_replicas < d.updated_replicas {
        return RolloutStatus::Progressing(format!(
            "waiting for deployment {name:?} rollout to finish: {} of {} updated replicas are available{stale}",
            d.available_replicas, d.updated_replicas
        ));
    }
    RolloutStatus::Done(format!("deployment {name:?} successfully rolled out"))
}

/// kubectl's `StatefulSetStatusViewer.Status`. kubectl refuses `OnDelete` StatefulSets
/// ("only available for RollingUpdate"); salve never changes their template (a restart is
/// refused before writing), so for them it judges what a scale changes: observed and ready.
pub fn statefulset_status(s: &Workload, written_generation: i64) -> RolloutStatus {
    let wanted = wanted_generation(s, written_generation);
    if s.observed_generation == 0 || s.observed_generation < wanted {
        return RolloutStatus::Progressing(format!(
            "waiting for the controller to observe generation {wanted} (observed {})",
            s.observed_generation
        ));
    }
    if s.ready_replicas < s.replicas {
        return RolloutStatus::Progressing(format!(
            "waiting for {} pods to be ready",
            s.replicas - s.ready_replicas
        ));
    }
    if s.update_strategy != "RollingUpdate" {
        return RolloutStatus::Done(format!(
            "{} pods ready; with updateStrategy {} a template change waits for Pods to be deleted",
            s.ready_replicas, s.update_strategy
        ));
    }
    if let Some(partition) = s.partition {
        let want = s.replicas - partition;
        if s.updated_replicas < want {
            return RolloutStatus::Progressing(format!(
                "waiting for partitioned roll out to finish: {} out of {want} new pods have been updated",
                s.updated_replicas
            ));
        }
        return RolloutStatus::Done(format!(
            "partitioned roll out complete: {} new pods have been updated",
            s.updated_replicas
        ));
    }
    match (&s.current_revision, &s.update_revision) {
        (current, Some(update)) if current.as_ref() != Some(update) => {
            RolloutStatus::Progressing(format!(
                "waiting for statefulset rolling update to complete {} pods at revision {update}",
                s.updated_replicas
            ))
        }
        (_, revision) => RolloutStatus::Done(format!(
            "statefulset rolling update complete {} pods at revision {}",
            s.ready_replicas,
            revision.as_deref().unwrap_or("(none)")
        )),
    }
}

#[cfg(test)]
mod tests {
    //! The cases of kubectl's `rollout_status_test.go`, plus status lag and attribution.
    use super::*;
    use crate::cluster::TargetRef;
    use serde_json::{Value, json};

    fn deployment(generation: i64, spec_replicas: i64, status: Value) -> Workload {
        let t = TargetRef::new(WorkloadKind::Deployment, "shop", "foo").unwrap();
        Workload::from_object(
            t,
            &json!({"metadata": {"generation": generation}, "spec": {"replicas": spec_replicas}, "status": status}),
        )
    }

    fn status(observed: i64, replicas: i64, updated: i64, available: i64) -> Value {
        json!({"observedGeneration": observed, "replicas": replicas, "updatedReplicas": updated,
               "availableReplicas": available, "readyReplicas": available})
    }

    #[test]
    fn deployment_cases_from_kubectl() {
        // (generation, spec.replicas, observed, replicas, updated, available, done, message part)
        let cases = [
            (
                0,
                1,
                1,
                1,
                0,
                1,
                false,
                "0 out of 1 new replicas have been updated",
            ),
            (
                1,
                1,
                1,
                1,
                1,
                0,
                false,
                "0 of 1 updated replicas are available",
            ),
            (1, 1, 1, 1, 1, 1, true, "successfully rolled out"),
            (
                1,
                1,
                1,
                2,
                1,
                1,
                false,
                "1 old replicas are pending termination",
            ),
            (
                1,
                2,
                1,
                2,
                2,
                1,
                false,
                "1 of 2 updated replicas are available",
            ),
            (
                2,
                2,
                1,
                2,
                2,
                2,
                false,
                "waiting for the controller to observe generation 2",
            ),
            (1, 3, 1, 3, 3, 3, true, "successfully rolled out"),
        ];
        for (g, spec, obs, r, u, a, done, msg) in cases {
            let got = deployment_status(&deployment(g, spec, status(obs, r, u, a)), 0, None);
            assert_eq!(got.is_done(), done, "{got:?}");
            let text = format!("{got:?}");
            assert!(text.contains(msg), "{text} should contain {msg}");
        }
    }

    fn timed_out(at: &str) -> Value {
        json!({"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
               "message": "ReplicaSet \"foo-1\" has timed out progressing.",
               "lastUpdateTime": at, "lastTransitionTime": at})
    }

    #[test]
    fn a_deadline_condition_counts_only_once_the_written_generation_is_observed() {
        let mut s = status(3, 2, 1, 1);
        s["conditions"] = json!([timed_out("2026-11-30T03:00:00Z")]);
        // The write produced generation 4; the controller still shows generation 3's failure.
        let d = deployment(4, 2, s.clone());
        assert!(
            matches!(deployment_status(&d, 4, None), RolloutStatus::Progressing(m) if m.contains("observe generation 4"))
        );
        // A read that raced the write (it still says generation 3) cannot pass for it.
        let raced = deployment(3, 2, s.clone());
        assert!(matches!(
            deployment_status(&raced, 4, None),
            RolloutStatus::Progressing(_)
        ));
        // Observed, and the condition is new since the write: the change's rollout failed.
        let mut observed = s.clone();
        observed["observedGeneration"] = json!(4);
        let d = deployment(4, 2, observed.clone());
        assert!(
            matches!(deployment_status(&d, 4, None), RolloutStatus::Failed(m) if m.contains("exceeded its progress deadline"))
        );
        // Observed, but the very condition salve saw before writing: not this change's failure.
        let before = d.condition("Progressing").cloned();
        assert!(
            matches!(deployment_status(&d, 4, before.as_ref()), RolloutStatus::Progressing(m) if m.contains("already passed before"))
        );
    }

    fn statefulset(spec: Value, status: Value, generation: i64) -> Workload {
        let t = TargetRef::new(WorkloadKind::StatefulSet, "db", "pg").unwrap();
        Workload::from_object(
            t,
            &json!({"metadata": {"generation": generation}, "spec": spec, "status": status}),
        )
    }

    #[test]
    fn statefulset_cases_from_kubectl() {
        let rolling = |partition: Option<i64>| {
            let mut s = json!({"replicas": 3, "updateStrategy": {"type": "RollingUpdate"}});
            if let Some(p) = partition {
                s["updateStrategy"]["rollingUpdate"] = json!({"partition": p});
            }
            s
        };
        let st = |observed: i64, ready: i64, updated: i64, cur: &str, upd: &str| {
            json!({"observedGeneration": observed, "replicas": 3, "readyReplicas": ready,
                   "updatedReplicas": updated, "currentRevision": cur, "updateRevision": upd})
        };
        let cases = [
            (
                rolling(None),
                st(0, 3, 3, "a", "a"),
                1,
                false,
                "observe generation",
            ),
            (
                rolling(None),
                st(1, 3, 3, "a", "a"),
                2,
                false,
                "observe generation 2",
            ),
            (
                rolling(None),
                st(2, 2, 3, "a", "a"),
                2,
                false,
                "waiting for 1 pods to be ready",
            ),
            (
                rolling(None),
                st(2, 3, 1, "a", "b"),
                2,
                false,
                "rolling update to complete 1 pods at revision b",
            ),
            (
                rolling(None),
                st(2, 3, 3, "b", "b"),
                2,
                true,
                "rolling update complete 3 pods at revision b",
            ),
            (
                rolling(Some(2)),
                st(2, 3, 0, "a", "b"),
                2,
                false,
                "0 out of 1 new pods have been updated",
            ),
            (
                rolling(Some(2)),
                st(2, 3, 1, "a", "b"),
                2,
                true,
                "partitioned roll out complete: 1 new pods",
            ),
            (
                json!({"replicas": 3, "updateStrategy": {"type": "OnDelete"}}),
                st(2, 3, 0, "a", "b"),
                2,
                true,
                "OnDelete",
            ),
            (
                json!({"replicas": 3, "updateStrategy": {"type": "OnDelete"}}),
                st(2, 1, 0, "a", "b"),
                2,
                false,
                "2 pods to be ready",
            ),
        ];
        for (spec, status, generation, done, msg) in cases {
            let got = statefulset_status(&statefulset(spec, status, generation), 0);
            assert_eq!(got.is_done(), done, "{got:?}");
            let text = format!("{got:?}");
            assert!(text.contains(msg), "{text} should contain {msg}");
        }
    }
}
