//! Running a policy directory's `test_*` rules, the way `opa test` does.
//!
//! A test is a rule whose name starts with `test_`, in any module. It passes when it
//! evaluates to `true`; `false` or undefined is a failure; an evaluation error is an
//! error. Tests use `with input as …` and `with data.x as …` to set up their case.
//! salve runs these before it trusts a policy directory, and policy authors run them
//! with `salve policy test`.

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
    run_matching(policy, bundle, None)
}

/// Runs the tests whose full name (`data.pkg.test_x`) matches `filter` (all when `None`).
pub fn run_matching(
    policy: &PolicySet,
    bundle: &Bundle,
    filter: Option<&Regex>,
) -> Vec<TestResult> {
    discover(bundle)
        .into_iter()
        .filter(|t| filter.is_none_or(|f| f.is_match(&t.name)))
        .map(|t| {
            let started = Instant::now();
            let mut engine = policy.engine();
            let outcome = match engine.eval_rule(t.name.clone()) {
                Ok(regorus::Value::Bool(true)) => Outcome::Pass,
                Ok(_) => Outcome::Fail,
                Err(e) => Outcome::Error(e.to_string()),
            };
            TestResult {
                name: t.name,
                file: t.file,
                line: t.line,
                outcome,
                duration: started.elapsed(),
            }
        })
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
            "package t\n\ntest_true if { true }\ntest_false if { false }\ntest_undefined if { input.nothing == 1 }\ntest_error if { 1 / input.z == 0 }\n",
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
        assert_eq!(outcome("data.t.test_false"), Outcome::Fail);
        assert_eq!(outcome("data.t.test_undefined"), Outcome::Fail);
        assert_ne!(outcome("data.t.test_error"), Outcome::Pass);
    }
}
