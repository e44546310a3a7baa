//! Writing the remediation's record: timeline events, API calls (with their time limit),
//! and the attempt rows learning reads.

use std::future::Future;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::ladder::Run;
use super::{Engine, EngineError};
use crate::cluster::{ApiCall, ClusterError};
use crate::rules::ActionSpec;
use crate::store::EventKind;
use crate::store::learning::{AttemptOutcome, NewAttempt};

impl Engine {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn record_attempt(
        &self,
        run: &Run<'_>,
        index: usize,
        spec: &ActionSpec,
        started: DateTime<Utc>,
        acted_at: Option<DateTime<Utc>>,
        outcome: AttemptOutcome,
        seconds_to_heal: Option<f64>,
        detail: Value,
    ) -> Result<(), EngineError> {
        let attempt = NewAttempt {
            remediation_id: &run.id,
            step: index as u32 + 1,
            alertname: run.incident.alert.alertname(),
            target: &run.target,
            action: spec.kind(),
            step_key: spec.key(),
            started_at: started,
            acted_at,
            outcome,
            seconds_to_heal,
            detail,
        };
        Ok(self
            .inner
            .store
            .record_attempt(&attempt, Utc::now())
            .await?)
    }

    pub(super) async fn event(
        &self,
        run: &Run<'_>,
        kind: EventKind,
        detail: Value,
    ) -> Result<(), EngineError> {
        Ok(self
            .inner
            .store
            .append_event(&run.id, kind, &detail, Utc::now())
            .await?)
    }

    /// Runs one API call with a time limit and records it on the timeline.
    pub(super) async fn call<T>(
        &self,
        run: &Run<'_>,
        call: ApiCall,
        fut: impl Future<Output = Result<T, ClusterError>>,
    ) -> Result<Result<T, ClusterError>, EngineError> {
        let started = Instant::now();
        let result = match tokio::time::timeout(self.inner.limits.call_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(ClusterError::Transport(format!(
                "no answer within {}s",
                self.inner.limits.call_timeout.as_secs()
            ))),
        };
        let (status, message): (Value, String) = match &result {
            Ok(_) => (json!(200), String::new()),
            Err(e) => (json!(e.code()), e.to_string()),
        };
        let detail = json!({
            "verb": call.verb,
            "path": call.path,
            "dry_run": call.dry_run,
            "status": status,
            "error": message,
            "duration_ms": started.elapsed().as_millis() as u64,
        });
        self.event(run, EventKind::KubeCall, detail).await?;
        Ok(result)
    }
}
