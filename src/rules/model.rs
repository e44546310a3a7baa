//! What a remediation rule says, parsed and checked as it is read.
//!
//! Every check that can be made without an alert is made while deserializing (each
//! field type is built with `try_from`), so the YAML parser reports the file position
//! of the value that is wrong. The engine then only ever sees valid rules.

use std::time::Duration;

use serde::Deserialize;

use super::matcher::Matcher;
use super::template::Template;
use crate::cluster::WorkloadKind;

/// A remediation rule: which alerts, which workload, which action, how often.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawRule")]
pub struct Rule {
    pub name: String,
    pub matchers: Vec<Matcher>,
    pub target: TargetTemplate,
    /// The ladder: tried in `order`, each judged by policy on fresh state, until one heals.
    pub steps: Vec<ActionSpec>,
    pub order: StepOrder,
    /// How long, and how often, salve checks that a step healed.
    pub verify: VerifySpec,
    /// Undo salve's own change when it made things worse (failed rollout, new alert).
    pub revert_on_failure: bool,
    /// No new action on the same target by this rule until this long after the last one.
    pub cooldown: Duration,
    /// The most actions one incident (one firing of one alert) may cause.
    pub max_attempts: u32,
    /// Whether this rule may change a workload a GitOps controller manages (policy sees
    /// it as `input.rule.gitops`; the shipped guardrails deny unless `allow`).
    pub gitops: GitOps,
    /// Whether the rule acts (`auto`), asks a human first (`approve`), or only shows
    /// what it would do (`shadow`).
    pub mode: RuleMode,
    /// The rule acts only while one of these named time intervals is active (none: always).
    pub active_time_intervals: Vec<String>,
    /// The rule does not act while any of these named time intervals is active.
    pub mute_time_intervals: Vec<String>,
    /// How long a change of an `approve` rule waits for a decision before it expires
    /// (and is escalated).
    pub approval_timeout: Duration,
    /// What a step does when no Alertmanager answers whether the alert is silenced.
    pub on_alertmanager_unavailable: Unavailable,
    /// The file the rule came from, for the audit trail; set by the loader.
    #[serde(skip)]
    pub file: String,
}

impl Rule {
    /// Whether every matcher accepts the alert's labels.
    pub fn matches(&self, labels: &crate::alert::Labels) -> bool {
        self.matchers.iter().all(|m| m.matches(labels))
    }
}

/// In which order a rule's steps are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StepOrder {
    /// As the rule lists them.
    #[default]
    AsWritten,
    /// The step that healed this alert on this workload most often first (ties: as written).
    Learned,
}

/// The verification window of each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawVerify")]
pub struct VerifySpec {
    /// How long after the change the workload must be rolled out and the alert resolved.
    pub within: Duration,
    /// How often to look.
    pub every: Duration,
    /// What an alert expression that returns no series at all means.
    pub no_data: NoData,
}

impl Default for VerifySpec {
    fn default() -> VerifySpec {
        VerifySpec {
            within: Duration::from_secs(300),
            every: Duration::from_secs(10),
            no_data: NoData::default(),
        }
    }
}

/// How to read an alert expression that Prometheus answers with no series at all.
///
/// An expression like `latency > 0.5` returns nothing both when latency is fine and when
/// the metric is gone (the exporter died, the target was relabelled, Prometheus just
/// restarted). Only the rule's author knows which is likelier, so it is the rule's choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NoData {
    /// No series means the condition cleared: the alert resolved.
    Healed,
    /// No series proves nothing: keep waiting for Alertmanager's resolved notification.
    #[default]
    Unknown,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVerify {
    within: String,
    every: Option<String>,
    #[serde(default)]
    no_data: NoData,
}

impl TryFrom<RawVerify> for VerifySpec {
    type Error = String;
    fn try_from(raw: RawVerify) -> Result<VerifySpec, String> {
        let parse = |what: &str, s: &str| {
            humantime::parse_duration(s.trim())
                .map_err(|e| format!("verify.{what} {s:?} is not a duration like 5m: {e}"))
        };
        let within = parse("within", &raw.within)?;
        let every = match &raw.every {
            Some(e) => parse("every", e)?,
            None => (within / 30).clamp(Duration::from_secs(1), Duration::from_secs(10)),
        };
        if every < Duration::from_millis(100) || every > within {
            return Err(format!(
                "verify.every must be between 100ms and verify.within ({})",
                raw.within
            ));
        }
        Ok(VerifySpec {
            within,
            every,
            no_data: raw.no_data,
        })
    }
}

/// The workload a rule acts on, with its names still to be filled from labels.
#[derive(Debug, Clone)]
pub struct TargetTemplate {
    pub kind: WorkloadKind,
    pub namespace: Template,
    pub by: TargetBy,
}

/// How a rule names its workload.
#[derive(Debug, Clone)]
pub enum TargetBy {
    /// The workload's own name (`name: "{{ deployment }}"`).
    Name(Template),
    /// One of its Pods' names (`pod: "{{ pod }}"`), what kube-state-metrics' pod alerts
    /// such as `KubePodCrashLooping` carry; salve looks the owner up in the cluster.
    Pod(Template),
}

/// `target:` as written: `name` or `pod`, exactly one (checked when the rule loads).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    kind: WorkloadKind,
    #[serde(default = "namespace_from_label")]
    namespace: Template,
    #[serde(default)]
    name: Option<Template>,
    #[serde(default)]
    pod: Option<Template>,
}

fn namespace_from_label() -> Template {
    // A constant template; parsing it cannot fail.
    Template::parse("{{ namespace }}").expect("constant template parses")
}

/// What to do to the target, with its bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionSpec {
    /// Change the replica count by `by`, or set it `to`, never leaving `min..=max`.
    Scale(ScaleSpec),
    /// Put the Deployment's previous revision back, as `kubectl rollout undo` does.
    Rollback,
    /// Restart the pods, as `kubectl rollout restart` does.
    Restart,
}

impl ActionSpec {
    /// Identifies a step for learning: `scale:by=1` and `scale:by=2` are different steps.
    pub fn key(&self) -> String {
        match self {
            ActionSpec::Scale(s) => match s.change {
                ReplicaChange::By(n) => format!("scale:by={n}"),
                ReplicaChange::To(n) => format!("scale:to={n}"),
            },
            ActionSpec::Rollback => "rollback".into(),
            ActionSpec::Restart => "restart".into(),
        }
    }

    /// The action's name as stored and as `input.action.type` in policy.
    pub fn kind(&self) -> &'static str {
        match self {
            ActionSpec::Scale(_) => "scale",
            ActionSpec::Rollback => "rollback",
            ActionSpec::Restart => "restart",
        }
    }
}

/// A bounded replica change. Checked as it is read, so errors point at its line.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawScale")]
pub struct ScaleSpec {
    pub change: ReplicaChange,
    pub min: i32,
    pub max: i32,
    /// For `to`: which way it may move replicas (`up` unless the rule says `down`).
    pub to_direction: Direction,
}

/// Relative or absolute replica change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaChange {
    By(i32),
    To(i32),
}

/// Which way a scale rule moves replicas. A remediation never moves them the other way:
/// a scale-up rule that found a human's emergency scale-up above its `max` must not
/// "correct" it downwards in the middle of an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
}

impl ScaleSpec {
    /// The rule's direction: the sign of `by`; `to` raises unless `direction: down` is given.
    pub fn direction(&self) -> Direction {
        match self.change {
            ReplicaChange::By(n) if n < 0 => Direction::Down,
            ReplicaChange::By(_) => Direction::Up,
            ReplicaChange::To(_) => self.to_direction,
        }
    }

    /// The replica count to set, given the current one: moved in the rule's direction
    /// only, never past its bound in that direction. `Err` says why there is nothing to do
    /// (already at or past the bound, or the change would go the wrong way).
    pub fn desired(&self, current: i32) -> Result<i32, String> {
        let wanted = match self.change {
            // Bounded in the rule's direction: `max` caps a scale-up, `min` floors a
            // scale-down (and a scale-up never ends below `min`).
            ReplicaChange::By(n) if n > 0 => current.saturating_add(n).clamp(self.min, self.max),
            ReplicaChange::By(n) => current.saturating_add(n).max(self.min),
            ReplicaChange::To(n) => n,
        };
        match self.direction() {
            Direction::Up if wanted > current => Ok(wanted),
            Direction::Up => Err(format!(
                "already has {current} replicas, at or above what this scale-up rule would set ({wanted}, max {}); a scale-up never lowers replicas",
                self.max
            )),
            Direction::Down if wanted < current => Ok(wanted),
            Direction::Down => Err(format!(
                "already has {current} replicas, at or below what this scale-down rule would set ({wanted}, min {}); a scale-down never raises replicas",
                self.min
            )),
        }
    }
}

/// How a rule acts on what it decides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleMode {
    /// Make the change (within every guard).
    #[default]
    Auto,
    /// Wait for a human to approve the exact change (CLI, API, or a chat bridge through
    /// the approval webhook), then judge it again on fresh state and make it.
    Approve,
    /// Everything but the write: a fresh read, the policy verdict and a server-side
    /// dry-run are recorded, then salve watches whether the alert resolves on its own, so
    /// a new rule's record says what it would have done and achieved before it is trusted.
    Shadow,
}

impl RuleMode {
    /// The name policy and reports see.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleMode::Auto => "auto",
            RuleMode::Approve => "approve",
            RuleMode::Shadow => "shadow",
        }
    }
}

/// What a step does when salve cannot ask Alertmanager whether the alert is muted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unavailable {
    /// Make no change: a silence salve cannot see may be there.
    #[default]
    Hold,
    /// Go on as if the alert were not muted.
    Proceed,
}

impl Unavailable {
    /// The name policy sees.
    pub fn as_str(self) -> &'static str {
        match self {
            Unavailable::Hold => "hold",
            Unavailable::Proceed => "proceed",
        }
    }
}

/// A rule's stance on workloads Argo CD or Flux manage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GitOps {
    /// Leave them alone: their controller would undo the change at its next sync.
    #[default]
    Deny,
    /// Change them: the operator told the controller to leave salve's field alone (Argo
    /// CD `ignoreDifferences`, a suspended sync).
    Allow,
}

impl GitOps {
    /// The name policy sees.
    pub fn as_str(self) -> &'static str {
        match self {
            GitOps::Deny => "deny",
            GitOps::Allow => "allow",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    #[serde(default)]
    matchers: Vec<Matcher>,
    target: RawTarget,
    #[serde(default, with = "serde_norway::with::singleton_map")]
    action: Option<RawAction>,
    #[serde(default, with = "serde_norway::with::singleton_map_recursive")]
    steps: Option<Vec<RawAction>>,
    #[serde(default)]
    order: StepOrder,
    #[serde(default)]
    verify: Option<VerifySpec>,
    #[serde(default)]
    revert_on_failure: bool,
    #[serde(default)]
    cooldown: Option<String>,
    #[serde(default)]
    max_attempts: Option<u32>,
    #[serde(default)]
    gitops: GitOps,
    #[serde(default)]
    mode: RuleMode,
    #[serde(default)]
    on_alertmanager_unavailable: Unavailable,
    #[serde(default)]
    approval_timeout: Option<String>,
    #[serde(default)]
    active_time_intervals: Vec<String>,
    #[serde(default)]
    mute_time_intervals: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum RawAction {
    Scale(ScaleSpec),
    Rollback(Empty),
    Restart(Empty),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScale {
    by: Option<i32>,
    to: Option<i32>,
    min: Option<i32>,
    max: Option<i32>,
    direction: Option<String>,
}

/// How long a change waits for approval by default: a page answered within a quarter of
/// an hour is still about the same incident.
const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Default cooldown: long enough for a rollout and the alert's `for:` to settle.
const DEFAULT_COOLDOWN: Duration = Duration::from_secs(10 * 60);

impl TryFrom<RawRule> for Rule {
    type Error = String;

    fn try_from(raw: RawRule) -> Result<Rule, String> {
        let name = raw.name.trim().to_owned();
        let name_ok = !name.is_empty()
            && name.len() <= 128
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !name_ok {
            return Err(format!(
                "rule name {:?} must be 1-128 letters, digits, '-', '_' or '.'",
                raw.name
            ));
        }
        if raw.matchers.is_empty() {
            return Err(format!(
                "rule {name:?} has no matchers: a rule must say which alerts it handles"
            ));
        }
        let matchers = raw.matchers;
        let steps: Vec<ActionSpec> = match (raw.action, raw.steps) {
            (Some(a), None) => vec![a.into_spec()],
            (None, Some(steps)) if !steps.is_empty() => {
                steps.into_iter().map(RawAction::into_spec).collect()
            }
            (None, _) => {
                return Err(format!(
                    "rule {name:?} needs `action` or a non-empty `steps` list"
                ));
            }
            (Some(_), Some(_)) => {
                return Err(format!(
                    "rule {name:?} has both `action` and `steps`; use one"
                ));
            }
        };
        let by = match (raw.target.name, raw.target.pod) {
            (Some(name), None) => TargetBy::Name(name),
            (None, Some(pod)) => TargetBy::Pod(pod),
            (None, None) => {
                return Err(format!(
                    "rule {name:?}: target needs `name` (the workload's) or `pod` (one of its Pods')"
                ));
            }
            (Some(_), Some(_)) => {
                return Err(format!(
                    "rule {name:?}: target has both `name` and `pod`; use one"
                ));
            }
        };
        if steps.contains(&ActionSpec::Rollback) && raw.target.kind != WorkloadKind::Deployment {
            return Err(format!(
                "rule {name:?}: rollback works on a Deployment only (a {} keeps no ReplicaSet revisions)",
                raw.target.kind
            ));
        }
        let cooldown = match raw.cooldown {
            None => DEFAULT_COOLDOWN,
            Some(s) => humantime::parse_duration(s.trim()).map_err(|e| {
                format!("rule {name:?}: cooldown {s:?} is not a duration like 10m: {e}")
            })?,
        };
        let approval_timeout = match raw.approval_timeout {
            None => DEFAULT_APPROVAL_TIMEOUT,
            Some(s) => humantime::parse_duration(s.trim())
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    format!("rule {name:?}: approval_timeout {s:?} is not a duration like 15m")
                })?,
        };
        let max_attempts = raw.max_attempts.unwrap_or(steps.len() as u32);
        if max_attempts == 0 {
            return Err(format!("rule {name:?}: max_attempts must be at least 1"));
        }
        Ok(Rule {
            name,
            matchers,
            target: TargetTemplate {
                kind: raw.target.kind,
                namespace: raw.target.namespace,
                by,
            },
            steps,
            order: raw.order,
            verify: raw.verify.unwrap_or_default(),
            revert_on_failure: raw.revert_on_failure,
            cooldown,
            max_attempts,
            gitops: raw.gitops,
            mode: raw.mode,
            on_alertmanager_unavailable: raw.on_alertmanager_unavailable,
            approval_timeout,
            active_time_intervals: raw.active_time_intervals,
            mute_time_intervals: raw.mute_time_intervals,
            file: String::new(),
        })
    }
}

impl RawAction {
    fn into_spec(self) -> ActionSpec {
        match self {
            RawAction::Rollback(_) => ActionSpec::Rollback,
            RawAction::Restart(_) => ActionSpec::Restart,
            RawAction::Scale(s) => ActionSpec::Scale(s),
        }
    }
}

impl TryFrom<RawScale> for ScaleSpec {
    type Error = String;
    fn try_from(raw: RawScale) -> Result<ScaleSpec, String> {
        raw.into_spec()
    }
}

impl RawScale {
    fn into_spec(self) -> Result<ScaleSpec, String> {
        let change = match (self.by, self.to) {
            (Some(0), None) => return Err("scale.by must not be 0".into()),
            (Some(n), None) => ReplicaChange::By(n),
            (None, Some(n)) => ReplicaChange::To(n),
            _ => return Err("scale needs exactly one of `by` or `to`".into()),
        };
        let (min, max) = match change {
            // An absolute target is its own bound unless the author gave wider ones.
            ReplicaChange::To(n) => (self.min.unwrap_or(n), self.max.unwrap_or(n)),
            ReplicaChange::By(_) => (
                self.min.unwrap_or(1),
                self.max
                    .ok_or("scale.by needs `max`: every automatic scale-up is bounded")?,
            ),
        };
        if min < 0 || max < min {
            return Err(format!(
                "scale bounds min={min} max={max} are not 0 <= min <= max"
            ));
        }
        if let ReplicaChange::To(n) = change {
            if n < min || n > max {
                return Err(format!("scale.to={n} lies outside min={min} max={max}"));
            }
        }
        let to_direction = match (change, self.direction.as_deref()) {
            (ReplicaChange::To(_), None | Some("up")) => Direction::Up,
            (ReplicaChange::To(_), Some("down")) => Direction::Down,
            (ReplicaChange::To(_), Some(other)) => {
                return Err(format!("scale.direction {other:?} must be `up` or `down`"));
            }
            (ReplicaChange::By(_), None) => Direction::Up,
            (ReplicaChange::By(_), Some(_)) => {
                return Err(
                    "scale.direction goes with `to`; the sign of `by` is its direction".into(),
                );
            }
        };
        Ok(ScaleSpec {
            change,
            min,
            max,
            to_direction,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(
        by: Option<i32>,
        to: Option<i32>,
        min: Option<i32>,
        max: Option<i32>,
    ) -> Result<ScaleSpec, String> {
        RawScale {
            by,
            to,
            min,
            max,
            direction: None,
        }
        .into_spec()
    }

    #[test]
    fn scale_by_stays_within_bounds() {
        let s = spec(Some(2), None, Some(2), Some(5)).unwrap();
        assert_eq!(s.desired(1), Ok(3));
        assert_eq!(s.desired(4), Ok(5), "clamped to max");
        let down = spec(Some(-3), None, Some(2), Some(10)).unwrap();
        assert_eq!(down.desired(4), Ok(2), "clamped to min");
    }

    #[test]
    fn a_scale_never_moves_against_its_direction() {
        // The reported bug: by 2 within 2..=5 at 7 replicas set 5.
        let up = spec(Some(2), None, Some(2), Some(5)).unwrap();
        let err = up.desired(7).unwrap_err();
        assert!(err.contains("never lowers"), "{err}");
        assert!(up.desired(5).is_err(), "at the bound: nothing to do");
        let down = spec(Some(-1), None, Some(2), Some(10)).unwrap();
        assert!(down.desired(1).unwrap_err().contains("never raises"));
        assert_eq!(
            down.desired(12),
            Ok(11),
            "above max, lowering is its direction"
        );
        let to = spec(None, Some(4), None, None).unwrap();
        assert_eq!(to.desired(2), Ok(4));
        assert!(to.desired(7).is_err(), "`to` raises unless told down");
        let to_down = RawScale {
            by: None,
            to: Some(4),
            min: None,
            max: None,
            direction: Some("down".into()),
        }
        .into_spec()
        .unwrap();
        assert_eq!(to_down.desired(7), Ok(4));
        assert!(to_down.desired(2).is_err());
    }

    #[test]
    fn scale_needs_bounds_and_one_change() {
        assert!(
            spec(Some(1), None, None, None)
                .unwrap_err()
                .contains("needs `max`")
        );
        assert!(spec(Some(1), Some(3), None, Some(4)).is_err());
        assert!(spec(None, None, None, Some(4)).is_err());
        assert!(spec(Some(0), None, None, Some(4)).is_err());
        assert!(
            spec(None, Some(9), Some(1), Some(5))
                .unwrap_err()
                .contains("outside")
        );
        assert!(spec(Some(1), None, Some(5), Some(2)).is_err());
        assert_eq!(spec(None, Some(3), None, None).unwrap().desired(1), Ok(3));
    }
}
