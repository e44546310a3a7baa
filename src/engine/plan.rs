//! Turning a rule's action into the exact change for the workload as it is now.
//!
//! The rule says "scale by 1 within 2..=10"; the plan says "scale from 4 to 5".
//! Plans are made from state read just before (and again after any conflict), and
//! they are what policy judges: `input.action` carries `from` and `to`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::cluster::rollback::{self, RollbackPlan};
use crate::cluster::{Change, ClusterError, Revision, TargetRef, Workload};
use crate::rules::{ActionSpec, Direction, ReplicaChange, ScaleSpec};

/// A concrete change, described for policy and people.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The write to send; `None` in offline mode, where the cluster was not read.
    pub change: Option<Change>,
    pub action: &'static str,
    pub from: Value,
    pub to: Value,
    /// "scale Deployment shop/checkout from 2 to 3 replicas"
    pub description: String,
}

/// What planning concluded.
#[derive(Debug, Clone, PartialEq)]
pub enum Planned {
    Act(Plan),
    /// Nothing to change; the reason says why.
    NoOp(String),
}

/// Plans `action` for `target`. `workload` is `None` only in offline mode; `revisions`
/// is given for rollbacks. An impossible action (no history, paused) is an error.
pub fn plan(
    action: &ActionSpec,
    target: &TargetRef,
    workload: Option<&Workload>,
    revisions: &[Revision],
    now: DateTime<Utc>,
) -> Result<Planned, ClusterError> {
    let kind = action.kind();
    Ok(match (action, workload) {
        (ActionSpec::Scale(spec), Some(w)) if w.autoscaler.is_some() => {
            return Ok(plan_under_autoscaler(spec, target, w));
        }
        (ActionSpec::Scale(spec), Some(w)) => {
            let to = match spec.desired(w.replicas) {
                Ok(to) => to,
                Err(why) => return Ok(Planned::NoOp(format!("{target} {why}"))),
            };
            Planned::Act(Plan {
                change: Some(Change::Scale { replicas: to }),
                action: kind,
                from: json!({"replicas": w.replicas}),
                to: json!({"replicas": to}),
                description: format!("scale {target} from {} to {to} replicas", w.replicas),
            })
        }
        (ActionSpec::Scale(spec), None) => {
            let (to, description) = match spec.change {
                ReplicaChange::To(n) => (
                    json!({"replicas": n}),
                    format!("scale {target} to {n} replicas"),
                ),
                ReplicaChange::By(n) => (
                    Value::Null,
                    format!(
                        "scale {target} by {n:+} replicas (kept between {} and {})",
                        spec.min, spec.max
                    ),
                ),
            };
            Planned::Act(Plan {
                change: None,
                action: kind,
                from: Value::Null,
                to,
                description,
            })
        }
        (ActionSpec::Rollback, Some(w)) => match rollback::plan(w, revisions)? {
            RollbackPlan::AlreadyAt { revision } => Planned::NoOp(format!(
                "{target} already runs the template of its previous revision {revision}"
            )),
            RollbackPlan::Restore {
                from_revision,
                change,
            } => {
                let Change::Rollback { to_revision, .. } = &change else {
                    unreachable!("rollback::plan restores with a Rollback change")
                };
                let from = from_revision.map_or("its current revision".to_owned(), |r| {
                    format!("revision {r}")
                });
                Planned::Act(Plan {
                    description: format!(
                        "roll back {target} from {from} to revision {to_revision}"
                    ),
                    from: json!({"revision": from_revision}),
                    to: json!({"revision": to_revision}),
                    action: kind,
                    change: Some(change),
                })
            }
        },
        (ActionSpec::Rollback, None) => Planned::Act(Plan {
            change: None,
            action: kind,
            from: Value::Null,
            to: Value::Null,
            description: format!("roll back {target} to its previous revision"),
        }),
        (ActionSpec::Restart, Some(w)) if w.paused => {
            return Err(ClusterError::Unsupported(format!(
                "{target} is paused: a restart would only arm a rollout for whenever someone resumes it (kubectl refuses too); resume it first"
            )));
        }
        (ActionSpec::Restart, Some(w)) if w.update_strategy == "OnDelete" => {
            return Err(ClusterError::Unsupported(format!(
                "{target} uses updateStrategy OnDelete: a restart takes effect only when its Pods are deleted, which salve does not do; delete them, or switch to RollingUpdate"
            )));
        }
        (ActionSpec::Restart, w) => {
            let at = now.to_rfc3339_opts(SecondsFormat::Secs, true);
            Planned::Act(Plan {
                change: w.map(|_| Change::Restart {
                    restarted_at: at.clone(),
                }),
                action: kind,
                from: json!({"restarted_at": w.and_then(|w| w.restarted_at.clone())}),
                to: json!({"restarted_at": at}),
                description: format!("restart the pods of {target}"),
            })
        }
    })
}

/// A scale of a workload an HPA manages: raise the HPA's `minReplicas` to the count the
/// rule asks for (bounded by the rule's `max` and the HPA's `maxReplicas`), so the HPA
/// itself scales up and stays there. Writing `spec.replicas` would be undone by the HPA.
/// A scale-down is the autoscaler's to make.
fn plan_under_autoscaler(spec: &ScaleSpec, target: &TargetRef, w: &Workload) -> Planned {
    let Some(a) = &w.autoscaler else {
        unreachable!("called for a workload with an autoscaler")
    };
    if spec.direction() == Direction::Down {
        return Planned::NoOp(format!(
            "{target} is managed by HorizontalPodAutoscaler {}: scaling it down is the autoscaler's to do; salve only raises its minReplicas",
            a.name
        ));
    }
    let wanted = match spec.desired(w.replicas.max(a.min_replicas)) {
        Ok(n) => n.min(a.max_replicas),
        Err(why) => return Planned::NoOp(format!("{target} {why}")),
    };
    if wanted <= a.min_replicas {
        return Planned::NoOp(format!(
            "{target} is managed by HorizontalPodAutoscaler {} whose minReplicas is already {} (its maxReplicas is {})",
            a.name, a.min_replicas, a.max_replicas
        ));
    }
    Planned::Act(Plan {
        change: Some(Change::AutoscalerMin {
            autoscaler: a.name.clone(),
            min_replicas: wanted,
        }),
        action: "scale",
        from: json!({"replicas": w.replicas, "min_replicas": a.min_replicas}),
        to: json!({"replicas": wanted, "min_replicas": wanted}),
        description: format!(
            "raise the minReplicas of HorizontalPodAutoscaler {}/{} (it manages {target}) from {} to {wanted}",
            target.namespace, a.name, a.min_replicas
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::WorkloadKind;
    use crate::rules::ScaleSpec;

    fn target() -> TargetRef {
        TargetRef::new(WorkloadKind::Deployment, "shop", "checkout").unwrap()
    }

    fn workload(replicas: i32) -> Workload {
        let obj = json!({"metadata": {"resourceVersion": "1"}, "spec": {"replicas": replicas}});
        Workload::from_object(target(), &obj)
    }

    fn scale_by(n: i32, max: i32) -> ActionSpec {
        ActionSpec::Scale(ScaleSpec {
            change: ReplicaChange::By(n),
            min: 1,
            max,
            to_direction: crate::rules::Direction::Up,
        })
    }

    #[test]
    fn scale_plans_from_current_replicas() {
        let p = plan(
            &scale_by(1, 10),
            &target(),
            Some(&workload(2)),
            &[],
            Utc::now(),
        )
        .unwrap();
        let Planned::Act(p) = p else {
            panic!("expected a plan")
        };
        assert_eq!(p.change, Some(Change::Scale { replicas: 3 }));
        assert_eq!(p.from, json!({"replicas": 2}));
        assert_eq!(
            p.description,
            "scale Deployment shop/checkout from 2 to 3 replicas"
        );
    }

    #[test]
    fn scale_at_the_bound_is_a_no_op() {
        let p = plan(
            &scale_by(1, 10),
            &target(),
            Some(&workload(10)),
            &[],
            Utc::now(),
        )
        .unwrap();
        assert!(matches!(p, Planned::NoOp(r) if r.contains("already has 10 replicas")));
        // A scale-up rule never lowers a workload that someone scaled past its max.
        let p = plan(
            &scale_by(1, 10),
            &target(),
            Some(&workload(14)),
            &[],
            Utc::now(),
        )
        .unwrap();
        assert!(matches!(p, Planned::NoOp(r) if r.contains("never lowers")));
    }

    #[test]
    fn a_restart_is_refused_where_kubectl_would_not_roll_out() {
        let paused =
            Workload::from_object(target(), &json!({"spec": {"replicas": 2, "paused": true}}));
        let err = plan(
            &ActionSpec::Restart,
            &target(),
            Some(&paused),
            &[],
            Utc::now(),
        );
        assert!(err.unwrap_err().to_string().contains("is paused"));
        let sts = TargetRef::new(WorkloadKind::StatefulSet, "db", "pg").unwrap();
        let on_delete = Workload::from_object(
            sts.clone(),
            &json!({"spec": {"replicas": 2, "updateStrategy": {"type": "OnDelete"}}}),
        );
        let err = plan(
            &ActionSpec::Restart,
            &sts,
            Some(&on_delete),
            &[],
            Utc::now(),
        );
        assert!(err.unwrap_err().to_string().contains("Pods are deleted"));
    }

    #[test]
    fn a_scale_under_an_autoscaler_raises_its_min_within_both_maxima() {
        let mut w = workload(3);
        w.autoscaler = Some(crate::cluster::Autoscaler {
            name: "checkout".into(),
            min_replicas: 2,
            max_replicas: 4,
            resource_version: "9".into(),
        });
        let Planned::Act(p) = plan(&scale_by(2, 10), &target(), Some(&w), &[], Utc::now()).unwrap()
        else {
            panic!("expected a plan")
        };
        assert_eq!(
            p.change,
            Some(Change::AutoscalerMin {
                autoscaler: "checkout".into(),
                min_replicas: 4
            }),
            "3 + 2 capped by the HPA's maxReplicas"
        );
        assert_eq!(p.from, json!({"replicas": 3, "min_replicas": 2}));
        // At the HPA's max already: nothing to raise.
        w.autoscaler.as_mut().unwrap().min_replicas = 4;
        assert!(matches!(
            plan(&scale_by(1, 10), &target(), Some(&w), &[], Utc::now()).unwrap(),
            Planned::NoOp(_)
        ));
        // A scale-down is the autoscaler's to make.
        assert!(matches!(
            plan(&scale_by(-1, 10), &target(), Some(&w), &[], Utc::now()).unwrap(),
            Planned::NoOp(r) if r.contains("autoscaler's to do")
        ));
    }

    #[test]
    fn offline_plans_describe_without_a_change() {
        let Planned::Act(p) = plan(&scale_by(2, 10), &target(), None, &[], Utc::now()).unwrap()
        else {
            panic!("expected a plan")
        };
        assert_eq!(p.change, None);
        assert!(p.description.contains("by +2"), "{}", p.description);
    }
}
