//! Running a policy directory's `test_*` rules, the way `opa test` does.
//!
//! A test is a rule whose name starts with `test_`, in any module. It passes when it
//! evaluates to `true`; `false` or undefined is a failure; an evaluation error is an
//! error. Tests use `with input as …` and `with data.x as …` to set up their case.
//! salve runs these before it trusts a policy directory, and policy authors run them
//! with `salve policy test`, with line coverage (regorus's) when they ask for it.

use std::collections::BTreeSet;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use regex::Regex;

use super::PolicySet;
use crate::bundle::{Bundle, FileKind};

/// How one test ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// `false` or undefined.
    Fail,
    /// The evaluation raised an error (message kept).
    Error(String),
}

/// One test's result.
#[derive(Debug, Clone)]
pub struct TestResult {
    /// `data.<package>.<rule>`, as OPA prints it.
    pub name: String,
    /// The module that defines it, and the line of its definition.
    pub file: String,
    pub line: usize,
    pub outcome: Outcome,
    pub duration: Duration,
}

static PACKAGE: LazyLock<Regex> = LazyLock::new(|| {
    // Constant pattern: compiling it cannot fail.
    Regex::new(r"(?m)^\s*package\s+([A-Za-z_][A-Za-z0-9_.]*)").expect("constant pattern")
});
static TEST_RULE: LazyLock<Regex> = LazyLock::new(|| {
    // Constant pattern: compiling it cannot fail.
    Regex::new(r"(?m)^(test_[A-Za-z0-9_]*)\b").expect("constant pattern")
});

/// A test rule found in a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRule {
    /// `data.<package>.<rule>`.
    pub name: String,
    pub file: String,
    pub line: usize,
}

/// Every test rule in the bundle, in file order, once each.
pub fn discover(bundle: &Bundle) -> Vec<TestRule> {
    let mut found: Vec<TestRule> = Vec::new();
    for file in bundle.of_kind(FileKind::Rego) {
        let Some(pkg) = PACKAGE.captures(&file.text).map(|c| c[1].to_owned()) else {
            continue;
        };
        for caps in TEST_RULE.captures_iter(&file.text) {
            let name = format!("data.{pkg}.{}", &caps[1]);
            let start = caps.get(0).map_or(0, |m| m.start());
            if !found.iter().any(|t| t.name == name) {
                found.push(TestRule {
                    name,
                    file: file.relative.clone(),
                    line: file.text[..start].matches('\n').count() + 1,
                });
            }
        }
    }
    found
}

/// Runs every test of the bundle against the compiled policy set.
pub fn run(policy: &PolicySet, bundle: &Bundle) -> Vec<TestResult> {
    run_matching(policy, bundle, None, false).results
}

/// The results of a test run, and which policy lines the tests evaluated when asked.
pub struct TestRun {
    /// Each test that ran, in file order.
    pub results: Vec<TestResult>,
    /// Present when coverage was asked for: the union over every test run.
    pub coverage: Option<Coverage>,
}

/// Runs the tests whose full name (`data.pkg.test_x`) matches `filter` (all when `None`),
/// gathering line coverage across them when `coverage` is set.
pub fn run_matching(
    policy: &PolicySet,
    bundle: &Bundle,
    filter: Option<&Regex>,
    coverage: bool,
) -> TestRun {
    let mut covered = coverage.then(Coverage::default);
    let results = discover(bundle)
        .into_iter()
        .filter(|t| filter.is_none_or(|f| f.is_match(&t.name)))
        .map(|t| {
            let started = Instant::now();
            let mut engine = policy.engine();
            engine.set_enable_coverage(coverage);
            let outcome = match engine.eval_rule(t.name.clone()) {
                Ok(regorus::Value::Bool(true)) => Outcome::Pass,
                Ok(_) => Outcome::Fail,
                Err(e) => Outcome::Error(e.to_string()),
            };
            let duration = started.elapsed();
            if let (Some(total), Ok(report)) = (covered.as_mut(), engine.get_coverage_report()) {
                total.add(&report);
            }
            TestResult {
                name: t.name,
                file: t.file,
                line: t.line,
                outcome,
                duration,
            }
        })
        .collect();
    TestRun {
        results,
        coverage: covered,
    }
}

/// Which lines of each module the tests evaluated, merged over every test: a line
/// evaluated by any test is covered.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Coverage {
    /// Module path → (covered lines, lines with code that no test evaluated).
    pub files: std::collections::BTreeMap<String, (BTreeSet<u32>, BTreeSet<u32>)>,
}

impl Coverage {
    fn add(&mut self, report: &regorus::coverage::Report) {
        for file in &report.files {
            let (covered, not_covered) = self.files.entry(file.path.clone()).or_default();
            covered.extend(file.covered.iter().copied());
            not_covered.extend(file.not_covered.iter().copied());
            not_covered.retain(|line| !covered.contains(line));
        }
    }

    /// The share of lines covered over every file, in percent (100 with no lines).
    pub fn percent(&self) -> f64 {
        let (covered, not) = self
            .files
            .values()
            .fold((0, 0), |(c, n), (cov, not)| (c + cov.len(), n + not.len()));
        percent(covered, not)
    }

    /// The report in `opa test --coverage`'s JSON layout: per file the covered and
    /// uncovered line ranges, their counts and the percentage, then the totals.
    pub fn to_opa_json(&self) -> serde_json::Value {
        let mut files = serde_json::Map::new();
        let (mut all_covered, mut all_not) = (0, 0);
        for (path, (covered, not)) in &self.files {
            all_covered += covered.len();
            all_not += not.len();
            let mut file = serde_json::Map::new();
            if !covered.is_empty() {
                file.insert("covered".into(), ranges(covered));
            }
            if !not.is_empty() {
                file.insert("not_covered".into(), ranges(not));
            }
            file.insert("covered_lines".into(), covered.len().into());
            file.insert("not_covered_lines".into(), not.len().into());
            file.insert(
                "coverage".into(),
                json_number(percent(covered.len(), not.len())),
            );
            files.insert(path.clone(), file.into());
        }
        serde_json::json!({
            "files": files,
            "covered_lines": all_covered,
            "not_covered_lines": all_not,
            "coverage": json_number(percent(all_covered, all_not)),
        })
    }
}

fn percent(covered: usize, not: usize) -> f64 {
    if covered + not == 0 {
        return 100.0;
    }
    covered as f64 * 100.0 / (covered + not) as f64
}

/// A whole percentage prints as `30`, as Go's JSON encoder prints it, not `30.0`.
fn json_number(value: f64) -> serde_json::Value {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        serde_json::Value::from(value as i64)
    } else {
        serde_json::Value::from(value)
    }
}

/// Consecutive lines as `{"start": {"row": a}, "end": {"row": b}}` ranges.
fn ranges(lines: &BTreeSet<u32>) -> serde_json::Value {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for &line in lines {
        match out.last_mut() {
            Some((_, end)) if *end + 1 == line => *end = line,
            _ => out.push((line, line)),
        }
    }
    out.into_iter()
        .map(|(a, b)| serde_json::json!({"start": {"row": a}, "end": {"row": b}}))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_guardrails_pass_their_own_tests() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let bundle = Bundle::read(&dir).unwrap();
        let policy = PolicySet::load(&bundle, super::super::Syntax::V1).unwrap();
        let results = run(&policy, &bundle);
        assert!(
            results.len() >= 8,
            "expected the shipped tests, found {}",
            results.len()
        );
        let failed: Vec<_> = results
            .iter()
            .filter(|r| r.outcome != Outcome::Pass)
            .collect();
        assert!(failed.is_empty(), "failing policy tests: {failed:#?}");
    }

    #[test]
    fn false_undefined_and_errors_are_not_passes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("t_test.rego"),
            "package t\n\ntest_true if { true }\ntest_false if { false }\ntest_undefined if { input.nothing == 1 }\ntest_no_input_is_undefined if { not input }\nconflict := 1 if input.a\nconflict := 2 if input.a\ntest_error if { conflict with input as {\"a\": true} }\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("p.rego"),
            "package salve\ndeny contains \"no\" if input.no\n",
        )
        .unwrap();
        let bundle = Bundle::read(dir.path()).unwrap();
        let policy = PolicySet::load(&bundle, super::super::Syntax::V1).unwrap();
        let results = run(&policy, &bundle);
        let outcome = |n: &str| {
            results
                .iter()
                .find(|r| r.name == n)
                .unwrap()
                .outcome
                .clone()
        };
        assert_eq!(outcome("data.t.test_true"), Outcome::Pass);
        // No `with input`: the input is undefined, as in opa test.
        assert_eq!(outcome("data.t.test_no_input_is_undefined"), Outcome::Pass);
        assert_eq!(outcome("data.t.test_false"), Outcome::Fail);
        assert_eq!(outcome("data.t.test_undefined"), Outcome::Fail);
        assert!(
            matches!(outcome("data.t.test_error"), Outcome::Error(_)),
            "{:?}",
            outcome("data.t.test_error")
        );
    }
}
