//! Remediation rules: which alert gets which action on which workload.
//!
//! Rule files are YAML in the policy directory (see [`crate::bundle`]), each with a
//! `rules:` list. The first rule whose matchers all accept an alert decides for it,
//! in file-path order and then in order within the file, as Alertmanager routes
//! without `continue` do. A rule set loads whole or not at all: one bad rule refuses
//! the set, with the file, line and reason.

pub mod matcher;
pub mod model;
pub mod template;

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;

use crate::alert::Alert;
use crate::bundle::{Bundle, FileKind};
pub mod time_interval;

pub use model::{
    ActionSpec, Direction, GitOps, NoData, ReplicaChange, Rule, RuleMode, ScaleSpec, StepOrder,
    TargetBy, TargetTemplate, Unavailable, VerifySpec,
};
pub use time_interval::TimeInterval;

/// A rule file that cannot be loaded, with where and why.
#[derive(Debug, Clone, thiserror::Error)]
pub struct RuleError {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub reason: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: {}", self.file, self.reason),
            (Some(l), None) => write!(f, "{}:{l}: {}", self.file, self.reason),
            _ => write!(f, "{}: {}", self.file, self.reason),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    /// Required: a file without it is a mistake (an emptied ConfigMap, a bad merge),
    /// not a wish to switch remediation off; that wish is written `rules: []`.
    rules: Option<Vec<Rule>>,
    /// Named time windows, as in Alertmanager's configuration.
    #[serde(default)]
    time_intervals: Vec<TimeInterval>,
}

/// All rules of a policy directory, in the order they are tried, with the named time
/// intervals they refer to (from any rule file of the directory).
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub time_intervals: Vec<TimeInterval>,
}

impl RuleSet {
    /// Parses every rule file of the bundle; the first error refuses the whole set.
    pub fn load(bundle: &Bundle) -> Result<RuleSet, RuleError> {
        let mut rules: Vec<Rule> = Vec::new();
        let mut intervals: Vec<TimeInterval> = Vec::new();
        let mut seen: HashMap<String, String> = HashMap::new();
        for file in bundle.of_kind(FileKind::Rules) {
            let (parsed, named) = parse_file_with_intervals(&file.relative, &file.text)?;
            for interval in named {
                if intervals.iter().any(|i| i.name == interval.name) {
                    return Err(RuleError {
                        file: file.relative.clone(),
                        line: line_of(&file.text, &format!("name: {}", interval.name)),
                        column: None,
                        reason: format!("time interval {:?} is defined twice", interval.name),
                    });
                }
                intervals.push(interval);
            }
            for mut rule in parsed {
                if let Some(first) = seen.get(&rule.name) {
                    return Err(RuleError {
                        file: file.relative.clone(),
                        line: line_of(&file.text, &format!("name: {}", rule.name)),
                        column: None,
                        reason: format!("rule name {:?} is already used in {first}", rule.name),
                    });
                }
                seen.insert(rule.name.clone(), file.relative.clone());
                rule.file = file.relative.clone();
                rules.push(rule);
            }
        }
        let texts: HashMap<&str, &str> = bundle
            .of_kind(FileKind::Rules)
            .map(|f| (f.relative.as_str(), f.text.as_str()))
            .collect();
        for rule in &rules {
            let named = rule
                .active_time_intervals
                .iter()
                .chain(&rule.mute_time_intervals);
            if let Some(missing) = named
                .into_iter()
                .find(|n| !intervals.iter().any(|i| &i.name == *n))
            {
                let text = texts.get(rule.file.as_str()).copied().unwrap_or_default();
                return Err(RuleError {
                    file: rule.file.clone(),
                    line: line_of(text, missing),
                    column: None,
                    reason: format!(
                        "rule {:?} names time interval {missing:?}, which no rule file defines under time_intervals:",
                        rule.name
                    ),
                });
            }
        }
        Ok(RuleSet {
            rules,
            time_intervals: intervals,
        })
    }

    /// Whether each named time interval is active at `at`: `input.time_intervals`.
    pub fn interval_states(&self, at: chrono::DateTime<chrono::Utc>) -> Vec<(&str, bool)> {
        self.time_intervals
            .iter()
            .map(|i| (i.name.as_str(), i.active(at)))
            .collect()
    }

    /// The rule that decides for this alert, if any.
    pub fn first_match(&self, alert: &Alert) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matches(&alert.labels))
    }

    /// The rule with this name.
    pub fn by_name(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }
}

/// Parses one rule file's text; `file` is only used in the error.
pub fn parse_file(file: &str, text: &str) -> Result<Vec<Rule>, RuleError> {
    parse_file_with_intervals(file, text).map(|(rules, _)| rules)
}

/// [`parse_file`], with the file's named time intervals.
fn parse_file_with_intervals(
    file: &str,
    text: &str,
) -> Result<(Vec<Rule>, Vec<TimeInterval>), RuleError> {
    let no_rules = |line| RuleError {
        file: file.to_owned(),
        line,
        column: None,
        reason:
            "the file defines no `rules:` list; an empty rules file would switch remediation off \
                 silently, so it is refused (write `rules: []` to run without rules on purpose)"
                .to_owned(),
    };
    let blank = text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
    if blank {
        return Err(no_rules(None));
    }
    let parsed = serde_norway::from_str::<RuleFile>(text).map_err(|e| {
        let loc = e.location();
        RuleError {
            file: file.to_owned(),
            line: loc.as_ref().map(|l| l.line()),
            column: loc.as_ref().map(|l| l.column()),
            reason: strip_location(&e.to_string()),
        }
    })?;
    let rules = parsed.rules.ok_or_else(|| no_rules(Some(1)))?;
    Ok((rules, parsed.time_intervals))
}

/// serde_norway appends " at line L column C"; the location is reported separately.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Labels;

    const GOOD: &str = r#"
rules:
  - name: checkout-latency
    matchers:
      - alertname="HighRequestLatency"
      - severity=~"critical|warning"
    target:
      kind: Deployment
      name: "{{ deployment }}"
    action:
      scale: { by: 1, max: 10 }
    cooldown: 15m
  - name: crashloop-rollback
    matchers: ['alertname="PodCrashLooping"']
    target: { kind: Deployment, namespace: "{{ namespace }}", name: "{{ deployment }}" }
    action: { rollback: {} }
"#;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_rule_naming_an_undefined_time_interval_is_refused_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let text = "time_intervals:\n  - name: weekdays\n    time_intervals: [{weekdays: ['monday:friday']}]\nrules:\n  - name: r\n    matchers: ['alertname=\"A\"']\n    target: { kind: Deployment, name: x }\n    action: { restart: {} }\n    active_time_intervals: [weekdays]\n    mute_time_intervals: [holidays]\n";
        std::fs::write(dir.path().join("rules.yaml"), text).unwrap();
        let bundle = Bundle::read(dir.path()).unwrap();
        let e = RuleSet::load(&bundle).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("rules.yaml", Some(10)), "{e}");
        assert!(
            e.reason
                .contains("names time interval \"holidays\", which no rule file defines"),
            "{e}"
        );
        std::fs::write(
            dir.path().join("rules.yaml"),
            text.replace("[holidays]", "[weekdays]"),
        )
        .unwrap();
        let set = RuleSet::load(&Bundle::read(dir.path()).unwrap()).unwrap();
        assert_eq!(set.time_intervals[0].name, "weekdays");
        assert_eq!(set.rules[0].active_time_intervals, ["weekdays"]);
    }

    #[test]
    fn loads_rules_with_defaults() {
        let rules = parse_file("rules.yaml", GOOD).unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].cooldown.as_secs(), 900);
        assert_eq!(rules[1].cooldown.as_secs(), 600, "default cooldown");
        assert_eq!(rules[1].max_attempts, 1);
        assert_eq!(rules[1].steps, vec![ActionSpec::Rollback]);
        assert_eq!(
            rules[1].verify.within.as_secs(),
            300,
            "default verification window"
        );
        let l = labels(&[
            ("alertname", "HighRequestLatency"),
            ("severity", "critical"),
        ]);
        assert!(rules[0].matches(&l));
        assert!(!rules[1].matches(&l));
    }

    fn error_of(text: &str) -> RuleError {
        parse_file("policies/bad.yaml", text).unwrap_err()
    }

    #[test]
    fn a_bad_matcher_is_refused_with_file_and_line() {
        let bad = GOOD.replace(
            r#"severity=~"critical|warning""#,
            r#"severity=~"(critical""#,
        );
        let err = error_of(&bad);
        assert_eq!(err.file, "policies/bad.yaml");
        assert!(err.reason.contains("invalid regular expression"), "{err}");
        let line = err.line.expect("a line");
        assert!(
            (3..=12).contains(&line),
            "line {line} should fall in the first rule: {err}"
        );
        assert!(err.to_string().starts_with("policies/bad.yaml:"), "{err}");
    }

    #[test]
    fn unbounded_scale_unknown_fields_and_bad_templates_are_refused() {
        let unbounded = GOOD.replace("{ by: 1, max: 10 }", "{ by: 1 }");
        assert!(error_of(&unbounded).reason.contains("needs `max`"));
        let typo = GOOD.replace("cooldown: 15m", "cooldwn: 15m");
        let err = error_of(&typo);
        assert!(err.reason.contains("cooldwn"), "{err}");
        assert_eq!(err.line, Some(12), "{err}");
        let tmpl = GOOD.replace(r#"name: "{{ deployment }}""#, r#"name: "{{ deployment""#);
        assert!(error_of(&tmpl).reason.contains("without closing"));
        let kind = GOOD.replace("kind: Deployment\n", "kind: DaemonSet\n");
        assert!(error_of(&kind).reason.contains("DaemonSet"));
        let both = GOOD.replace(
            r#"name: "{{ deployment }}""#,
            "name: \"{{ deployment }}\"\n      pod: \"{{ pod }}\"",
        );
        assert!(
            error_of(&both).reason.contains("has both `name` and `pod`"),
            "{}",
            error_of(&both)
        );
        let neither = GOOD.replace(r#"name: "{{ deployment }}""#, r#"namespace: "{{ ns }}""#);
        assert!(
            error_of(&neither).reason.contains("target needs `name`"),
            "{}",
            error_of(&neither)
        );
    }

    #[test]
    fn rollback_of_a_statefulset_is_refused() {
        let sts = GOOD.replace(
            "{ kind: Deployment, namespace",
            "{ kind: StatefulSet, namespace",
        );
        assert!(error_of(&sts).reason.contains("Deployment only"));
    }

    #[test]
    fn a_ladder_has_steps_order_verify_and_revert() {
        let ladder = r#"
rules:
  - name: ladder
    matchers: ['alertname="HighRequestLatency"']
    target: { kind: Deployment, name: "{{ deployment }}" }
    steps:
      - scale: { by: 1, max: 10 }
      - scale: { by: 2, max: 10 }
      - rollback: {}
    order: learned
    verify: { within: 2m, every: 5s }
    revert_on_failure: true
"#;
        let rule = &parse_file("l.yaml", ladder).unwrap()[0];
        assert_eq!(rule.steps.len(), 3);
        assert_eq!(rule.steps[1].key(), "scale:by=2");
        assert_eq!(rule.order, StepOrder::Learned);
        assert_eq!(
            (rule.verify.within.as_secs(), rule.verify.every.as_secs()),
            (120, 5)
        );
        assert!(rule.revert_on_failure);
        assert_eq!(rule.max_attempts, 3, "by default every step may run");
        assert_eq!(
            (rule.mode, rule.gitops),
            (RuleMode::Auto, GitOps::Deny),
            "the defaults"
        );
        let shadow = ladder.replace("    order: learned", "    mode: shadow\n    gitops: allow");
        let rule = &parse_file("l.yaml", &shadow).unwrap()[0];
        assert_eq!((rule.mode, rule.gitops), (RuleMode::Shadow, GitOps::Allow));
        let unknown = ladder.replace("    order: learned", "    mode: sometimes");
        let e = parse_file("l.yaml", &unknown).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("l.yaml", Some(10)), "{e}");
        assert!(e.reason.contains("unknown variant `sometimes`"), "{e}");
        let both = ladder.replace("    order: learned", "    action: { restart: {} }");
        assert!(
            parse_file("l.yaml", &both)
                .unwrap_err()
                .reason
                .contains("both `action` and `steps`")
        );
        let bad_verify = ladder.replace("every: 5s", "every: 5h");
        assert!(
            parse_file("l.yaml", &bad_verify)
                .unwrap_err()
                .reason
                .contains("verify.every")
        );
    }

    #[test]
    fn duplicate_names_across_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), GOOD).unwrap();
        std::fs::write(dir.path().join("b.yaml"), GOOD).unwrap();
        let bundle = Bundle::read(dir.path()).unwrap();
        let err = RuleSet::load(&bundle).unwrap_err();
        assert_eq!(err.file, "b.yaml");
        assert_eq!(err.line, Some(3));
        assert!(err.reason.contains("already used in a.yaml"), "{err}");
    }

    #[test]
    fn an_empty_or_rule_less_file_is_refused_and_an_explicit_empty_list_is_not() {
        for text in ["", "   \n", "# all rules removed\n\n", "{}\n"] {
            let err = parse_file("rules.yaml", text).unwrap_err();
            assert_eq!(err.file, "rules.yaml");
            assert!(
                err.reason.contains("defines no `rules:` list"),
                "{text:?}: {err}"
            );
        }
        assert!(parse_file("rules.yaml", "rules: []\n").unwrap().is_empty());
    }
}
