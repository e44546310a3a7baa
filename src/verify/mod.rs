//! Did it help? Rollout and alert-resolution checks after each step.
//!
//! A step heals when, within the rule's `verify.within`, the workload finished rolling
//! out (observed generation caught up, updated and available replicas as wanted, no
//! `ProgressDeadlineExceeded`) and the alert resolved: Alertmanager sent `resolved` for
//! its fingerprint, or, when Prometheus is configured, the alert's own expression no
//! longer returns its series. A failed rollout, or a new alert on the same workload
//! while verifying, means the change made things worse.

pub mod prometheus;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::alert::{Alert, AlertStatus};
use crate::cluster::{Cluster, Workload};
use crate::rules::VerifySpec;
use crate::store::{Store, StoreError};
pub use prometheus::{Prometheus, PrometheusHttp};

/// What verification concluded.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Healed {
        seconds: f64,
    },
    NotHealed(String),
    RolloutFailed(String),
    /// A new alert fired on the workload after salve's change.
    MadeWorse(String),
    Unavailable(String),
}

/// Where a rollout stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Rollout {
    Done,
    InProgress(String),
    Failed(String),
}

/// Reads a workload's rollout status the way `kubectl rollout status` does.
pub fn rollout(w: &Workload) -> Rollout {
    if let Some(c) = w.conditions.iter().find(|c| {
        c.kind == "Progressing" && c.status == "False" && c.reason == "ProgressDeadlineExceeded"
    }) {
        return Rollout::Failed(format!("{} did not progress: {}", w.target, c.message));
    }
    if w.observed_generation < w.generation {
        return Rollout::InProgress("the controller has not seen the change yet".into());
    }
    if w.updated_replicas < w.replicas {
        return Rollout::InProgress(format!(
            "{} of {} replicas updated",
            w.updated_replicas, w.replicas
        ));
    }
    if w.available_replicas < w.replicas {
        return Rollout::InProgress(format!(
            "{} of {} replicas available",
            w.available_replicas, w.replicas
        ));
    }
    Rollout::Done
}

/// What a verification needs to look at.
pub struct Check<'a> {
    pub remediation_id: &'a str,
    pub incident_id: &'a str,
    pub alert: &'a Alert,
    pub workload: &'a crate::cluster::TargetRef,
    pub acted_at: DateTime<Utc>,
    pub spec: VerifySpec,
}

/// Polls until the step heals, fails, or its window closes. Returns the outcome and
/// the evidence recorded on the timeline.
pub async fn verify(
    check: &Check<'_>,
    cluster: &dyn Cluster,
    store: &Store,
    prometheus: Option<&dyn Prometheus>,
    call_timeout: Duration,
) -> Result<(Outcome, Value), StoreError> {
    let deadline = tokio::time::Instant::now() + check.spec.within;
    let expr = prometheus.and(prometheus::expression_of(&check.alert.generator_url));
    let (mut last_signal, mut read_errors, mut polls) = (String::new(), 0u32, 0u32);
    let mut rolled;
    loop {
        polls += 1;
        rolled = match tokio::time::timeout(call_timeout, cluster.read(check.workload)).await {
            Ok(Ok(w)) => rollout(&w),
            Ok(Err(e)) => {
                read_errors += 1;
                Rollout::InProgress(format!("cannot read the workload: {e}"))
            }
            Err(_) => {
                read_errors += 1;
                Rollout::InProgress("reading the workload timed out".into())
            }
        };
        if let Rollout::Failed(why) = &rolled {
            return Ok((
                Outcome::RolloutFailed(why.clone()),
                evidence(polls, &rolled, ""),
            ));
        }
        if let Some((id, alertname)) = store
            .newer_remediation_on_target(check.workload, check.acted_at, check.remediation_id)
            .await?
        {
            let why = format!(
                "{alertname} fired on {} after the change (remediation {id})",
                check.workload
            );
            return Ok((Outcome::MadeWorse(why), evidence(polls, &rolled, "")));
        }
        let resolved = match store.incident(check.incident_id).await? {
            Some(i) if i.status == AlertStatus::Resolved => {
                Some("Alertmanager sent resolved".to_owned())
            }
            _ => match (prometheus, &expr) {
                (Some(p), Some(e)) => match p.series(e).await {
                    Ok(series)
                        if !series
                            .iter()
                            .any(|s| prometheus::is_alerts_series(s, &check.alert.labels)) =>
                    {
                        Some(format!(
                            "Prometheus: `{e}` returns no series for this alert"
                        ))
                    }
                    Ok(_) => {
                        last_signal =
                            format!("Prometheus: `{e}` still returns this alert's series");
                        None
                    }
                    Err(err) => {
                        last_signal = err;
                        None
                    }
                },
                _ => None,
            },
        };
        if let (Rollout::Done, Some(signal)) = (&rolled, &resolved) {
            let seconds = (Utc::now() - check.acted_at).num_milliseconds() as f64 / 1000.0;
            return Ok((
                Outcome::Healed { seconds },
                evidence(polls, &rolled, signal),
            ));
        }
        if tokio::time::Instant::now() + check.spec.every > deadline {
            break;
        }
        tokio::time::sleep(check.spec.every).await;
    }
    let within = humantime::format_duration(check.spec.within);
    let outcome = match &rolled {
        _ if read_errors == polls => {
            Outcome::Unavailable(format!("the workload could not be read for {within}"))
        }
        Rollout::InProgress(why) => {
            Outcome::RolloutFailed(format!("not rolled out within {within}: {why}"))
        }
        _ => Outcome::NotHealed(format!(
            "the alert did not resolve within {within}{}",
            if last_signal.is_empty() {
                String::new()
            } else {
                format!(" ({last_signal})")
            }
        )),
    };
    Ok((outcome, evidence(polls, &rolled, &last_signal)))
}

fn evidence(polls: u32, rolled: &Rollout, signal: &str) -> Value {
    json!({"polls": polls, "rollout": format!("{rolled:?}"), "signal": signal})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{TargetRef, WorkloadKind};

    fn workload(status: Value, generation: i64) -> Workload {
        let t = TargetRef::new(WorkloadKind::Deployment, "shop", "checkout").unwrap();
        Workload::from_object(
            t,
            &json!({"metadata": {"generation": generation}, "spec": {"replicas": 3}, "status": status}),
        )
    }

    #[test]
    fn reads_rollout_status_like_kubectl() {
        let done = json!({"observedGeneration": 2, "updatedReplicas": 3, "availableReplicas": 3});
        assert_eq!(rollout(&workload(done, 2)), Rollout::Done);
        let stale = json!({"observedGeneration": 1, "updatedReplicas": 3, "availableReplicas": 3});
        assert!(matches!(
            rollout(&workload(stale, 2)),
            Rollout::InProgress(_)
        ));
        let partial =
            json!({"observedGeneration": 2, "updatedReplicas": 2, "availableReplicas": 3});
        assert!(
            matches!(rollout(&workload(partial, 2)), Rollout::InProgress(m) if m.contains("2 of 3"))
        );
        let failed = json!({"observedGeneration": 2, "updatedReplicas": 1, "availableReplicas": 2, "conditions": [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet \"x\" has timed out progressing."}]});
        assert!(
            matches!(rollout(&workload(failed, 2)), Rollout::Failed(m) if m.contains("timed out progressing"))
        );
    }
}
