//! The policy input document: everything a guardrail may look at, in one stable shape.
//!
//! This document is the contract with policy authors (documented in
//! `policies/README.md`), and it is stored verbatim with every verdict so an auditor
//! can re-run the exact evaluation. Its `version` changes only when a field changes
//! meaning or disappears; new fields may be added.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::plan::Plan;
use crate::alert::Alert;
use crate::cluster::{TargetRef, Workload};
use crate::remediation::Mode;
use crate::rules::{ActionSpec, Rule};
use crate::store::learning::StepStats;
use crate::store::targets::{BudgetUse, HistoryEntry};

/// The input document's format version.
pub const INPUT_VERSION: u32 = 1;

/// How far back `input.history.remediations` reaches.
pub const HISTORY_WINDOW: Duration = Duration::hours(24);

/// Everything the input is built from.
pub struct InputParts<'a> {
    pub now: DateTime<Utc>,
    pub mode: Mode,
    pub alert: &'a Alert,
    pub rule: &'a Rule,
    pub target: &'a TargetRef,
    pub plan: &'a Plan,
    pub workload: Option<&'a Workload>,
    pub history: &'a [HistoryEntry],
    /// Real changes (steps and reverts) salve made to this workload in the last hour,
    /// from the actions ledger.
    pub actions_last_hour: i64,
    /// What is left of each budget of real changes for this workload's next change.
    pub budgets: &'a [BudgetUse],
    /// Each named time interval and whether it is active now.
    pub time_intervals: &'a [(&'a str, bool)],
}

/// `input.history.stats`: what each step achieved for this alert on this workload.
pub fn stats(steps: &[StepStats], proposed: &ActionSpec, window: Duration) -> Value {
    let of_action: Vec<&StepStats> = steps
        .iter()
        .filter(|s| s.action == proposed.kind())
        .collect();
    let attempts: i64 = of_action.iter().map(|s| s.attempts).sum();
    let healed: i64 = of_action.iter().map(|s| s.healed).sum();
    let heal_seconds: Vec<f64> = of_action
        .iter()
        .filter_map(|s| s.mean_seconds_to_heal.map(|m| m * s.healed as f64))
        .collect();
    json!({
        "window_days": window.num_days(),
        "steps": steps,
        "this_action": {
            "action": proposed.kind(),
            "attempts": attempts,
            "healed": healed,
            "success_rate": if attempts > 0 { healed as f64 / attempts as f64 } else { 0.0 },
            "mean_seconds_to_heal": (healed > 0).then(|| heal_seconds.iter().sum::<f64>() / healed as f64),
        },
        "this_step": steps.iter().find(|s| s.step_key == proposed.key()),
    })
}

/// Builds the document policy evaluates as `input`.
pub fn build(p: &InputParts<'_>) -> Value {
    let last_action_at = p.history.iter().find_map(|h| h.acted_at.clone());
    json!({
        "version": INPUT_VERSION,
        "now": p.now.to_rfc3339_opts(SecondsFormat::Micros, true),
        "mode": p.mode.as_str(),
        "alert": p.alert,
        "rule": {
            "name": p.rule.name,
            "file": p.rule.file,
            "matchers": p.rule.matchers.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
            "cooldown_seconds": p.rule.cooldown.as_secs(),
            "max_attempts": p.rule.max_attempts,
            "gitops": p.rule.gitops.as_str(),
            "mode": p.rule.mode.as_str(),
            "on_alertmanager_unavailable": p.rule.on_alertmanager_unavailable.as_str(),
        },
        "action": {
            "type": p.plan.action,
            "target": p.target,
            "from": p.plan.from,
            "to": p.plan.to,
            "description": p.plan.description,
        },
        "target": p.workload,
        "budgets": p.budgets,
        "time_intervals": p.time_intervals.iter()
            .map(|(name, active)| ((*name).to_owned(), json!({"active": active})))
            .collect::<serde_json::Map<String, Value>>(),
        "history": {
            "window_seconds": HISTORY_WINDOW.num_seconds(),
            "remediations": p.history,
            "actions_last_hour": p.actions_last_hour,
            "last_action_at": last_action_at,
        },
    })
}
