//! Whether this replica can do its job now: `/readyz`.
//!
//! Ready means the knowledge base answers (or the webhook could not acknowledge) and,
//! when salve works against a cluster (live or dry-run), the Kubernetes API server
//! answers too: a replica cut off from it would take alerts it cannot act on, so the
//! Service should send them to a replica that can. The API server's answer is kept for
//! a few seconds, so probes every second do not turn into a request each.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::cluster::Cluster;

/// How long an answer of the API server stands.
const FRESH_FOR: Duration = Duration::from_secs(5);
/// The longest wait for the API server before it counts as unreachable.
const WAIT: Duration = Duration::from_secs(2);

/// The last answer and when it came.
type Answer = Option<(Instant, Result<(), String>)>;

/// Asks the API server whether it answers, at most once per [`FRESH_FOR`].
#[derive(Clone, Default)]
pub struct ClusterProbe {
    cluster: Option<Arc<dyn Cluster>>,
    last: Arc<Mutex<Answer>>,
}

impl ClusterProbe {
    /// Probes `cluster`; `None` (offline) is always reachable.
    pub fn new(cluster: Option<Arc<dyn Cluster>>) -> ClusterProbe {
        ClusterProbe {
            cluster,
            last: Arc::default(),
        }
    }

    /// `Ok` if the API server answered recently; the error says why not.
    pub async fn check(&self) -> Result<(), String> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        // Held across the probe, so concurrent probes wait for one answer.
        let mut last = self.last.lock().await;
        if let Some((at, answer)) = last.as_ref() {
            if at.elapsed() < FRESH_FOR {
                return answer.clone();
            }
        }
        let answer = match tokio::time::timeout(WAIT, cluster.reachable()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("the Kubernetes API server: {e}")),
            Err(_) => Err(format!(
                "the Kubernetes API server did not answer within {}s",
                WAIT.as_secs()
            )),
        };
        *last = Some((Instant::now(), answer.clone()));
        answer
    }
}
