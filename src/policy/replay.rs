//! What-if: re-judging past decisions under a new policy set.
//!
//! Every verdict salve gave is stored with the exact input it judged, so a policy author
//! can ask "what would this change have done last week?" before deploying it: each
//! stored input is evaluated again under the new set, and the decisions that flip are
//! listed. Nothing touches a cluster; it is pure evaluation.

use serde::Serialize;

use super::PolicySet;
use crate::store::remediations::PastVerdict;

/// One past decision that the new policy would have decided the other way.
#[derive(Debug, Clone, Serialize)]
pub struct Flip {
    pub remediation_id: String,
    pub at: String,
    pub rule: String,
    pub action: String,
    pub target: String,
    /// "allow→deny" or "deny→allow".
    pub change: &'static str,
    pub old_reasons: Vec<String>,
    pub new_reasons: Vec<String>,
}

/// The outcome of a replay.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ReplayReport {
    pub evaluated: usize,
    pub allow_to_deny: usize,
    pub deny_to_allow: usize,
    pub unchanged: usize,
    pub flips: Vec<Flip>,
    pub policy_hash: String,
}

/// Re-evaluates each past input under `policy`.
pub fn replay(past: &[PastVerdict], policy: &PolicySet) -> ReplayReport {
    let mut report = ReplayReport {
        policy_hash: policy.hash.clone(),
        ..ReplayReport::default()
    };
    for p in past {
        report.evaluated += 1;
        let now = policy.evaluate(&p.input);
        let change = match (p.allowed, now.allowed) {
            (true, false) => {
                report.allow_to_deny += 1;
                "allow→deny"
            }
            (false, true) => {
                report.deny_to_allow += 1;
                "deny→allow"
            }
            _ => {
                report.unchanged += 1;
                continue;
            }
        };
        report.flips.push(Flip {
            remediation_id: p.remediation_id.clone(),
            at: p.at.clone(),
            rule: p.rule.clone(),
            action: p.action.clone(),
            target: format!("{}/{}/{}", p.target.kind, p.target.namespace, p.target.name),
            change,
            old_reasons: p.reasons.clone(),
            new_reasons: now.reasons,
        });
    }
    report
}
