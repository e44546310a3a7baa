//! Where Rego runs in `serve`: a few dedicated threads, never the async runtime's.
//!
//! A policy is code salve does not control. Evaluated on the runtime's worker threads, a
//! slow one stalls everything else: webhooks, `/healthz`, other remediations. Here each
//! evaluation is a job for a small pool of OS threads behind a bounded queue:
//!
//! - a full queue is an immediate denial ("policy engine busy"), never a wait;
//! - regorus's execution timer stops an evaluation at [`EVALUATION_TIME_LIMIT`], and the
//!   caller stops waiting shortly after it whatever the thread is doing (a builtin that
//!   runs long between the timer's checks keeps its thread, not the caller);
//! - a memory ceiling (regorus's allocator accounting, process-wide) stops an evaluation
//!   whose allocations would take the process past it;
//! - a panicking evaluation denies, and its thread lives on.
//!
//! Every one of these is a denial with the cause as its reason: fail closed, explained.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;

use super::{EVALUATION_TIME_LIMIT, PolicySet, Verdict};

/// How many evaluations run at once and wait, and how much memory they may take.
#[derive(Debug, Clone)]
pub struct PoolLimits {
    /// Threads evaluating Rego.
    pub workers: usize,
    /// Evaluations that may wait for a thread; beyond this a change is denied as busy.
    pub queue: usize,
    /// The process's heap (as regorus's allocator counts it) above which an evaluation is
    /// stopped and denied. Process-wide: it bounds what a runaway policy can take, and it
    /// should sit below the container's memory limit.
    pub memory_limit_bytes: u64,
}

impl Default for PoolLimits {
    fn default() -> PoolLimits {
        PoolLimits {
            workers: 2,
            queue: 64,
            memory_limit_bytes: 512 * 1024 * 1024,
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// The evaluation threads and their queue; cheap to clone (a handle).
#[derive(Clone)]
pub struct EvaluationPool {
    jobs: SyncSender<Job>,
    limits: PoolLimits,
}

/// How long past the evaluation time limit a caller waits before it gives up on a
/// thread stuck inside one long builtin call.
const GRACE: Duration = Duration::from_millis(500);

impl EvaluationPool {
    /// Starts the threads and sets the memory ceiling. The threads end when every handle
    /// is dropped.
    pub fn start(limits: PoolLimits) -> EvaluationPool {
        regorus::set_global_memory_limit(Some(limits.memory_limit_bytes));
        let (jobs, queue) = mpsc::sync_channel::<Job>(limits.queue);
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..limits.workers.max(1) {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("salve-policy-{n}"))
                .spawn(move || {
                    loop {
                        // Hold the lock only to take the next job.
                        let job = match queue.lock() {
                            Ok(q) => q.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a policy evaluation thread");
            }
        }
        EvaluationPool { jobs, limits }
    }

    /// The limits this pool runs with.
    pub fn limits(&self) -> &PoolLimits {
        &self.limits
    }

    fn submit(&self, job: Job) -> Result<(), TrySendError<Job>> {
        self.jobs.try_send(job)
    }

    /// Evaluates the verdict on a pool thread. Never fails and never waits much past the
    /// time limit: every way of not getting an answer is a denial that says why.
    pub async fn evaluate(&self, policy: &PolicySet, input: Value) -> Verdict {
        let hash = policy.hash.clone();
        let (answer, answered) = oneshot::channel();
        let policy = policy.clone();
        let job: Job = Box::new(move || {
            if answer.is_closed() {
                return; // the caller gave up while this waited in the queue
            }
            let verdict = std::panic::catch_unwind(AssertUnwindSafe(|| policy.evaluate(&input)))
                .unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".to_owned());
                    Verdict::failed(&policy.hash, format!("the policy engine panicked: {what}"))
                });
            let _ = answer.send(verdict);
        });
        match self.submit(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Verdict::failed(
                    &hash,
                    format!(
                        "policy engine busy: {} evaluations already waiting",
                        self.limits.queue
                    ),
                );
            }
            Err(TrySendError::Disconnected(_)) => {
                return Verdict::failed(&hash, "the policy engine has stopped".to_owned());
            }
        }
        match tokio::time::timeout(EVALUATION_TIME_LIMIT + GRACE, answered).await {
            Ok(Ok(verdict)) => verdict,
            Ok(Err(_)) => Verdict::failed(&hash, "the policy evaluation was lost".to_owned()),
            Err(_) => Verdict::failed(
                &hash,
                format!(
                    "the policy did not answer within its time limit ({:?})",
                    EVALUATION_TIME_LIMIT
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::Bundle;
    use crate::policy::Syntax;
    use serde_json::json;

    fn policy(rego: &str) -> PolicySet {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.rego"), rego).unwrap();
        PolicySet::load(&Bundle::read(dir.path()).unwrap(), Syntax::V1).unwrap()
    }

    const CAP: &str = "package salve\nimport rego.v1\ndeny contains \"too many\" if input.n > 3\n";

    #[tokio::test]
    async fn evaluates_off_the_runtime_and_denies_when_the_queue_is_full() {
        let pool = EvaluationPool::start(PoolLimits {
            workers: 1,
            queue: 1,
            ..PoolLimits::default()
        });
        let p = policy(CAP);
        assert!(pool.evaluate(&p, json!({"n": 1})).await.allowed);
        assert_eq!(
            pool.evaluate(&p, json!({"n": 9})).await.reasons,
            vec!["too many"]
        );

        // Occupy the one thread, then the one queue slot.
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let (started, running) = std::sync::mpsc::channel::<()>();
        pool.submit(Box::new(move || {
            let _ = started.send(());
            let _ = hold.recv();
        }))
        .ok()
        .unwrap();
        running.recv().unwrap();
        pool.submit(Box::new(|| {})).ok().unwrap();
        let busy = pool.evaluate(&p, json!({"n": 1})).await;
        assert!(!busy.allowed);
        assert!(
            busy.reasons[0].contains("policy engine busy"),
            "{:?}",
            busy.reasons
        );
        release.send(()).unwrap();
        // Freed, it answers again.
        let mut answer = pool.evaluate(&p, json!({"n": 1})).await;
        for _ in 0..50 {
            if answer.allowed {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            answer = pool.evaluate(&p, json!({"n": 1})).await;
        }
        assert!(answer.allowed, "{:?}", answer.reasons);
    }
}
