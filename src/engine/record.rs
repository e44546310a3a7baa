//! Writing the remediation's record: timeline events, API calls (with their time limit),
//! and the attempt rows learning reads.

use std::future::Future;
use std::time::{Duration, Instant};

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
        self.inner
            .metrics
            .step_finished(spec.kind(), outcome.as_str(), seconds_to_heal);
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

    /// Runs one API call with a time limit and records it on the timeline; retries it,
    /// each try on the timeline too, while it fails transiently and may be sent again
    /// ([`ApiCall::may_retry`]): at most [`CALL_RETRIES`] more times, after a doubling,
    /// jittered pause.
    pub(super) async fn call<T, F>(
        &self,
        run: &Run<'_>,
        call: ApiCall,
        mut send: impl FnMut() -> F,
    ) -> Result<Result<T, ClusterError>, EngineError>
    where
        F: Future<Output = Result<T, ClusterError>>,
    {
        let mut tries = 0u32;
        loop {
            let started = Instant::now();
            let result = match tokio::time::timeout(self.inner.limits.call_timeout, send()).await {
                Ok(r) => r,
                Err(_) => Err(ClusterError::Transport(format!(
                    "no answer within {}s",
                    self.inner.limits.call_timeout.as_secs()
                ))),
            };
            let retry = match &result {
                Err(e) if tries < CALL_RETRIES && call.may_retry(e) => Some(retry_pause(tries)),
                _ => None,
            };
            let took = started.elapsed();
            // `None`: no answer came (a timeout, a broken connection).
            let (status, message): (Option<u16>, String) = match &result {
                Ok(_) => (Some(200), String::new()),
                Err(e) => (e.code(), e.to_string()),
            };
            self.inner
                .metrics
                .kubernetes_request(call.verb, &call.path, status.unwrap_or(0), took);
            let mut detail = json!({
                "verb": call.verb,
                "path": call.path,
                "dry_run": call.dry_run,
                "status": status,
                "error": message,
                "duration_ms": took.as_millis() as u64,
            });
            if tries > 0 {
                detail["try"] = json!(tries + 1);
            }
            if let Some(pause) = retry {
                detail["retry_in_ms"] = json!(pause.as_millis() as u64);
            }
            self.event(run, EventKind::KubeCall, detail).await?;
            let Some(pause) = retry else {
                return Ok(result);
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                // A stop does not wait out a backoff: the failure stands as the answer.
                _ = self.inner.stopping.cancelled() => return Ok(result),
            }
            tries += 1;
        }
    }
}

/// Further tries of an API call that failed transiently.
pub(super) const CALL_RETRIES: u32 = 3;

/// The pause before retry `tries + 1`: 200 ms doubling (never above 2 s), each cut to a random
/// 50–100 % so replicas retrying together spread out.
fn retry_pause(tries: u32) -> Duration {
    let full = Duration::from_millis(200 * (1u64 << tries.min(4))).min(Duration::from_secs(2));
    // The low bits of a v7 UUID are random; no extra dependency for a jitter.
    let random = (uuid::Uuid::now_v7().as_u128() & 0xffff) as u32;
    full.mul_f64(0.5 + f64::from(random) / f64::from(u16::MAX) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_pauses_double_with_jitter_and_stay_bounded() {
        for tries in 0..8 {
            let full =
                Duration::from_millis(200 * (1u64 << tries.min(4))).min(Duration::from_secs(2));
            let pause = retry_pause(tries);
            assert!(pause >= full / 2 && pause <= full, "{tries}: {pause:?}");
        }
    }
}
