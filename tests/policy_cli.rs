//! `salve policy test|check|eval` and `salve rules check`, run as a policy author runs
//! them: the real binary, its output and its exit code.

mod support;

use std::path::Path;
use std::process::Command;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(program: &str, args: &[&str]) -> Run {
    let out = Command::new(program).args(args).output().unwrap();
    Run {
        code: out.status.code().unwrap(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn salve(args: &[&str]) -> Run {
    run(env!("CARGO_BIN_EXE_salve"), args)
}

fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const POLICY: &str = r#"package salve

deny contains msg if {
	input.action.to.replicas > data.limits.max
	msg := sprintf("%d is above %d", [input.action.to.replicas, data.limits.max])
}
"#;

const TESTS: &str = r#"package salve_test

import data.salve

test_small_scale_allowed if {
	count(salve.deny) == 0 with input as {"action": {"to": {"replicas": 2}}}
}

test_big_scale_denied if {
	salve.deny["9 is above 5"] with input as {"action": {"to": {"replicas": 9}}}
}

test_limit_from_data_override if {
	count(salve.deny) == 1 with input as {"action": {"to": {"replicas": 2}}} with data.limits.max as 1
}
"#;

#[test]
fn shipped_guardrails_pass_their_tests() {
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let run = salve(&["policy", "test", s(&policies)]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(run.stdout.contains("PASS: 15/15"), "{}", run.stdout);
}

#[test]
fn passing_tests_exit_0_and_verbose_lists_each_with_timing() {
    let dir = dir_with(&[
        ("p.rego", POLICY),
        ("p_test.rego", TESTS),
        ("limits/data.json", r#"{"max": 5}"#),
    ]);
    let quiet = salve(&["policy", "test", s(dir.path())]);
    assert_eq!(quiet.code, 0, "{}", quiet.stdout);
    assert!(quiet.stdout.ends_with("PASS: 3/3\n"), "{}", quiet.stdout);
    assert!(
        !quiet.stdout.contains("test_small_scale_allowed"),
        "quiet output lists only failures"
    );

    let verbose = salve(&["policy", "test", "-v", s(dir.path())]);
    assert!(
        verbose.stdout.starts_with("p_test.rego:\n"),
        "{}",
        verbose.stdout
    );
    for name in [
        "test_small_scale_allowed",
        "test_big_scale_denied",
        "test_limit_from_data_override",
    ] {
        let line = verbose
            .stdout
            .lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name} missing"));
        assert!(
            line.starts_with(&format!("data.salve_test.{name}: PASS (")),
            "{line}"
        );
        assert!(line.ends_with("µs)") || line.ends_with("ms)"), "{line}");
    }
}

const BROKEN_TESTS: &str = "\ntest_wrong_expectation if {\n\tcount(salve.deny) == 0 with input as {\"action\": {\"to\": {\"replicas\": 9}}}\n}\n\nlimit := 1 if input.a\nlimit := 2 if input.a\n\ntest_errors if {\n\tlimit == 1 with input as {\"a\": true}\n}\n";

#[test]
fn a_failing_and_an_erroring_test_exit_2_with_their_names_like_opa() {
    let broken_tests = format!("{TESTS}{BROKEN_TESTS}");
    let dir = dir_with(&[
        ("p.rego", POLICY),
        ("p_test.rego", &broken_tests),
        ("limits/data.json", r#"{"max": 5}"#),
    ]);
    let run = salve(&["policy", "test", s(dir.path())]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    // As `opa test` prints them: the tests that did not pass under their file, an
    // error's place and message indented under it, then the counts.
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], "p_test.rego:", "{}", run.stdout);
    assert!(
        lines[1].starts_with("data.salve_test.test_wrong_expectation: FAIL ("),
        "{}",
        run.stdout
    );
    assert!(
        lines[2].starts_with("data.salve_test.test_errors: ERROR ("),
        "{}",
        run.stdout
    );
    assert!(
        lines[3].starts_with("  p_test.rego:22: ") && lines[3].contains("conflict"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.ends_with("PASS: 3/5\nFAIL: 1/5\nERROR: 1/5\n"),
        "{}",
        run.stdout
    );

    let json = salve(&["policy", "test", "--format", "json", s(dir.path())]);
    assert_eq!(json.code, 2);
    let results: Vec<serde_json::Value> = serde_json::from_str(&json.stdout).unwrap();
    let by_name = |n: &str| results.iter().find(|r| r["name"] == n).unwrap().clone();
    let passed = by_name("test_small_scale_allowed");
    assert_eq!(passed["package"], "data.salve_test");
    assert_eq!(
        passed["location"],
        serde_json::json!({"file": "p_test.rego", "row": 5, "col": 1})
    );
    assert!(
        passed.get("fail").is_none() && passed.get("error").is_none(),
        "{passed}"
    );
    assert!(passed["duration"].as_u64().unwrap() > 0);
    assert_eq!(by_name("test_wrong_expectation")["fail"], true);
    let errored = by_name("test_errors");
    assert!(
        errored["error"]["message"]
            .as_str()
            .unwrap()
            .contains("conflict"),
        "{errored}"
    );
    assert_eq!(errored["error"]["location"]["row"], 22, "{errored}");
}

#[test]
fn coverage_reports_lines_like_opa_and_threshold_fails_below_it() {
    let dir = dir_with(&[
        ("p.rego", POLICY),
        ("p_test.rego", TESTS),
        ("limits/data.json", r#"{"max": 5}"#),
    ]);
    let run = salve(&["policy", "test", "--coverage", s(dir.path())]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let policy = &report["files"]["p.rego"];
    // The one deny rule ran, head and both body lines; nothing in it went uncovered.
    assert_eq!(
        policy["covered"],
        serde_json::json!([{"start": {"row": 3}, "end": {"row": 5}}]),
        "{report}"
    );
    assert!(policy.get("not_covered").is_none(), "{report}");
    assert_eq!(policy["coverage"], 100, "{report}");
    let total = report["coverage"].as_f64().unwrap();
    assert!(total > 0.0 && total <= 100.0, "{report}");

    // A rule no test satisfies lowers the coverage (its head, and the line after the
    // one that always fails); a threshold above it fails with 2.
    let uncovered = format!(
        "{POLICY}\ndeny contains \"never tested\" if {{\n\tinput.action.to.replicas == 1000\n\tstartswith(input.x, \"y\")\n}}\n"
    );
    let dir = dir_with(&[
        ("p.rego", &uncovered),
        ("p_test.rego", TESTS),
        ("limits/data.json", r#"{"max": 5}"#),
    ]);
    let low = salve(&["policy", "test", "--coverage", s(dir.path())]);
    let report: serde_json::Value = serde_json::from_str(&low.stdout).unwrap();
    assert_eq!(
        report["files"]["p.rego"]["not_covered"],
        serde_json::json!([{"start": {"row": 8}, "end": {"row": 8}}, {"start": {"row": 10}, "end": {"row": 10}}]),
        "{report}"
    );
    let got = report["coverage"].as_f64().unwrap();
    let strict = salve(&["policy", "test", "--threshold", "99.5", s(dir.path())]);
    assert_eq!(strict.code, 2, "{}{}", strict.stdout, strict.stderr);
    assert_eq!(
        strict.stderr,
        format!("Code coverage threshold not met: got {got:.2} instead of 99.50\n")
    );
    let lenient = salve(&["policy", "test", "--threshold", "10", s(dir.path())]);
    assert_eq!(lenient.code, 0, "{}", lenient.stderr);

    // A failing test: no report, the failure on standard error, exit 1 (as opa).
    let failing = dir_with(&[
        ("p.rego", POLICY),
        ("p_test.rego", &format!("{TESTS}{BROKEN_TESTS}")),
        ("limits/data.json", r#"{"max": 5}"#),
    ]);
    let failed = salve(&["policy", "test", "--coverage", s(failing.path())]);
    assert_eq!(failed.code, 1);
    assert!(failed.stdout.is_empty(), "{}", failed.stdout);
    assert!(
        failed
            .stderr
            .contains("data.salve_test.test_wrong_expectation: FAIL ("),
        "{}",
        failed.stderr
    );
}

#[test]
fn each_mistake_that_would_deny_every_change_is_refused_with_file_and_line() {
    let cases: [(&str, &str, &str); 3] = [
        (
            // `deny[msg] if` is an object under Rego v1.
            "package salve\n\nimport rego.v1\n\ndeny[msg] if {\n\tinput.x\n\tmsg := \"x\"\n}\n",
            "p.rego:5: data.salve.deny must be a set of messages, but this rule makes it an object",
            "deny contains msg if",
        ),
        (
            // conftest's habit: package main.
            "package main\n\ndeny contains msg if {\n\tinput.x\n\tmsg := \"x\"\n}\n",
            "p.rego:1: package main: no module defines `deny` in package salve",
            "declare `package salve`",
        ),
        (
            "package salve\n\ndeny contains msg if {\n\tinput.x\n\tmsg := sprintf_typo(\"%v\", [input.x])\n}\n",
            "p.rego:5: undefined function sprintf_typo",
            "fix the name",
        ),
    ];
    for (policy, error, fix) in cases {
        let dir = dir_with(&[("p.rego", policy)]);
        let check = salve(&["policy", "check", s(dir.path())]);
        assert_eq!(check.code, 1, "{policy}");
        assert!(check.stderr.contains(error), "{}", check.stderr);
        assert!(check.stderr.contains(fix), "{}", check.stderr);
        let test = salve(&["policy", "test", s(dir.path())]);
        assert_eq!(test.code, 1, "{policy}");
        assert!(
            test.stderr.starts_with("1 error occurred during loading: ")
                && test.stderr.contains(error),
            "{}",
            test.stderr
        );
    }
}

#[test]
fn strict_check_refuses_unused_variables_and_arguments_as_opa_does() {
    let dir = dir_with(&[(
        "p.rego",
        "package salve\n\ndeny contains msg if {\n\tinput.x\n\ty := 1\n\tmsg := \"a\"\n}\n\nf(x, z) := x\n",
    )]);
    assert_eq!(salve(&["policy", "check", s(dir.path())]).code, 0);
    let strict = salve(&["policy", "check", "--strict", s(dir.path())]);
    assert_eq!(strict.code, 1, "{}", strict.stdout);
    assert!(
        strict.stderr.contains("p.rego:5: assigned var y unused"),
        "{}",
        strict.stderr
    );
    assert!(
        strict.stderr.contains("p.rego:9: unused argument z"),
        "{}",
        strict.stderr
    );
    assert!(strict.stderr.ends_with("2 errors\n"), "{}", strict.stderr);
}

#[test]
fn run_filters_tests_by_regex() {
    let dir = dir_with(&[
        ("p.rego", POLICY),
        ("p_test.rego", TESTS),
        ("limits/data.json", r#"{"max": 5}"#),
    ]);
    let run = salve(&["policy", "test", "-v", "--run", "big_scale", s(dir.path())]);
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains("test_big_scale_denied"));
    assert!(!run.stdout.contains("test_small_scale_allowed"));
    assert!(run.stdout.contains("PASS: 1/1"), "{}", run.stdout);
}

#[test]
fn a_broken_file_exits_1_with_file_and_line_like_opa() {
    let dir = dir_with(&[
        (
            "p.rego",
            "package salve\n\ndeny contains msg if {\n\tinput.x ==\n}\n",
        ),
        ("p_test.rego", TESTS),
    ]);
    let run = salve(&["policy", "test", s(dir.path())]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        // Where opa puts it too: the `}` that ends the rule without a right-hand side.
        run.stderr
            .starts_with("1 error occurred during loading: p.rego:5: "),
        "{}",
        run.stderr
    );
}

#[test]
fn a_v0_file_needs_v0_compatible_and_says_so() {
    let v0 =
        "package salve\n\ndeny[msg] {\n\tinput.action.to.replicas > 5\n\tmsg := \"too many\"\n}\n";
    let v0_tests = "package salve_test\n\nimport data.salve\n\ntest_denied {\n\tsalve.deny[\"too many\"] with input as {\"action\": {\"to\": {\"replicas\": 6}}}\n}\n";
    let dir = dir_with(&[("p.rego", v0), ("p_test.rego", v0_tests)]);
    let as_v1 = salve(&["policy", "test", s(dir.path())]);
    assert_eq!(as_v1.code, 1);
    assert!(
        as_v1.stderr.contains("written in Rego v0 syntax")
            && as_v1.stderr.contains("--v0-compatible"),
        "{}",
        as_v1.stderr
    );
    let as_v0 = salve(&["policy", "test", "--v0-compatible", s(dir.path())]);
    assert_eq!(as_v0.code, 0, "{}", as_v0.stdout);
    assert!(as_v0.stdout.contains("PASS: 1/1"));
}

#[test]
fn check_reports_all_errors_and_rules_check_reports_rule_errors() {
    let dir = dir_with(&[
        ("a.rego", "package salve\ndeny contains msg if {\n"),
        ("b.rego", "package salve\n\ndeny contains msg if { x := }\n"),
        ("ok.rego", POLICY),
    ]);
    let run = salve(&["policy", "check", s(dir.path())]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("a.rego:") && run.stderr.contains("b.rego:3"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.ends_with("2 errors\n"), "{}", run.stderr);

    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    assert_eq!(salve(&["policy", "check", s(&policies)]).code, 0);
    assert_eq!(
        salve(&["rules", "check", s(&policies)]).stdout,
        "ok: 5 rules\n"
    );

    let rules = dir_with(&[
        (
            "a.yaml",
            "rules:\n  - name: x\n    matchers: ['a=~\"(\"']\n    target: {kind: Deployment, name: y}\n    action: {restart: {}}\n",
        ),
        (
            "b.yaml",
            "rules:\n  - name: z\n    matchers: ['a=\"b\"']\n    target: {kind: Deployment, name: y}\n    action: {scale: {by: 1}}\n",
        ),
    ]);
    let run = salve(&["rules", "check", s(rules.path())]);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.contains("error: a.yaml:3:")
            && run.stdout.contains("invalid regular expression"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("error: b.yaml:5:") && run.stdout.contains("needs `max`"),
        "{}",
        run.stdout
    );
}

#[test]
fn eval_prints_the_verdict_or_a_query_as_json() {
    let dir = dir_with(&[
        ("p.rego", POLICY),
        ("limits/data.json", r#"{"max": 5}"#),
        ("input.json", r#"{"action": {"to": {"replicas": 7}}}"#),
        ("extra.json", r#"{"limits": {"max": 10}}"#),
    ]);
    let input = dir.path().join("input.json");
    let policies = s(dir.path());
    let verdict = salve(&[
        "policy",
        "eval",
        "--policies",
        policies,
        "--input",
        s(&input),
    ]);
    assert_eq!(verdict.code, 0);
    let v: serde_json::Value = serde_json::from_str(&verdict.stdout).unwrap();
    assert_eq!(v["allowed"], false);
    assert_eq!(v["reasons"][0], "7 is above 5");

    // --data supplies what the bundle lacks; a key the bundle already has is a conflict.
    let bare = dir_with(&[("p.rego", POLICY)]);
    let extra = s(&dir.path().join("extra.json")).to_owned();
    let with_data = salve(&[
        "policy",
        "eval",
        "--policies",
        s(bare.path()),
        "--input",
        s(&input),
        "--data",
        &extra,
    ]);
    let v: serde_json::Value = serde_json::from_str(&with_data.stdout).unwrap();
    assert_eq!(v["allowed"], true, "{}", with_data.stdout);
    // The verdict judges with the added data, compiled too (`%v` compiles, `%d` does
    // not): a lower cap from --data denies.
    let compiled = dir_with(&[("p.rego", &POLICY.replace("%d", "%v"))]);
    let lower = dir.path().join("lower.json");
    std::fs::write(&lower, r#"{"limits": {"max": 3}}"#).unwrap();
    let denied = salve(&[
        "policy",
        "eval",
        "--policies",
        s(compiled.path()),
        "--input",
        s(&input),
        "--data",
        s(&lower),
    ]);
    let v: serde_json::Value = serde_json::from_str(&denied.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", denied.stdout, denied.stderr));
    assert_eq!(
        v["reasons"],
        serde_json::json!(["7 is above 3"]),
        "{}",
        denied.stdout
    );
    let conflict = salve(&[
        "policy",
        "eval",
        "--policies",
        policies,
        "--input",
        s(&input),
        "--data",
        &extra,
    ]);
    assert_eq!(conflict.code, 2);
    assert!(
        conflict.stdout.contains("extra.json"),
        "{}",
        conflict.stdout
    );

    let query = salve(&[
        "policy",
        "eval",
        "--policies",
        policies,
        "--input",
        s(&input),
        "data.limits.max + 1",
    ]);
    let v: serde_json::Value = serde_json::from_str(&query.stdout).unwrap();
    assert_eq!(
        v["result"][0]["expressions"][0]["value"], 6,
        "{}",
        query.stdout
    );
}

#[test]
fn shipped_guardrails_pass_their_tests_from_a_configmap_mount() {
    // The kubelet mounts a ConfigMap as links into a hidden `..data` directory; a key
    // with a directory (`guardrails/data.json`) becomes a link to a directory. Skipping
    // those links left the data unloaded: three shipped tests failed and `serve` exited.
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let mount = tempfile::tempdir().unwrap();
    let files: Vec<(String, Vec<u8>)> = [
        "guardrails.rego",
        "guardrails_test.rego",
        "rules.yaml",
        "guardrails/data.json",
    ]
    .into_iter()
    .map(|key| (key.to_owned(), std::fs::read(policies.join(key)).unwrap()))
    .collect();
    support::kubelet::lay_out_volume(mount.path(), &files);
    let mounted = salve(&["policy", "test", s(mount.path())]);
    assert_eq!(mounted.code, 0, "{}", mounted.stdout);
    assert!(mounted.stdout.contains("PASS: 15/15"), "{}", mounted.stdout);
}

/// Names with how each test ended, from `--format json` output (salve's or opa's).
fn outcomes(json: &str) -> std::collections::BTreeMap<String, &'static str> {
    let results: Vec<serde_json::Value> = serde_json::from_str(json).unwrap();
    results
        .iter()
        .map(|r| {
            let outcome = if r.get("error").is_some() {
                "error"
            } else if r["fail"] == true {
                "fail"
            } else {
                "pass"
            };
            (
                format!(
                    "{}.{}",
                    r["package"].as_str().unwrap(),
                    r["name"].as_str().unwrap()
                ),
                outcome,
            )
        })
        .collect()
}

#[test]
fn salve_and_the_real_opa_agree_on_test_and_check() {
    let Some(opa) =
        support::opa("the comparison of `salve policy test|check` with `opa test|check`")
    else {
        return;
    };
    let opa = |args: &[&str]| run(&opa, args);
    let passing = dir_with(&[
        ("p.rego", POLICY),
        ("p_test.rego", TESTS),
        ("limits/data.json", r#"{"max": 5}"#),
    ]);
    let failing = dir_with(&[
        ("p.rego", POLICY),
        ("p_test.rego", &format!("{TESTS}{BROKEN_TESTS}")),
        ("limits/data.json", r#"{"max": 5}"#),
    ]);
    let broken = dir_with(&[(
        "p.rego",
        "package salve\n\ndeny contains msg if {\n\tinput.x ==\n}\n",
    )]);
    let undefined_function = dir_with(&[(
        "p.rego",
        "package salve\n\ndeny contains msg if {\n\tinput.x\n\tmsg := sprintf_typo(\"%v\", [input.x])\n}\n",
    )]);
    let unused = dir_with(&[(
        "p.rego",
        "package salve\n\ndeny contains msg if {\n\tinput.x\n\ty := 1\n\tmsg := \"a\"\n}\n\nf(x, z) := x\n",
    )]);
    let (passing, failing, broken, undefined_function, unused) = (
        s(passing.path()),
        s(failing.path()),
        s(broken.path()),
        s(undefined_function.path()),
        s(unused.path()),
    );

    // Exit codes, command by command.
    for args in [
        vec!["test", passing],
        vec!["test", "-v", passing],
        vec!["test", failing],
        vec!["test", "--run", "big_scale", failing],
        vec!["test", broken],
        vec!["test", "--coverage", passing],
        vec!["test", "--coverage", failing],
        vec!["test", "--threshold", "100", failing],
        vec!["check", passing],
        vec!["check", broken],
        vec!["check", undefined_function],
        vec!["check", unused],
        vec!["check", "--strict", unused],
    ] {
        let mut salve_args = vec!["policy"];
        salve_args.extend(&args);
        let (ours, theirs) = (salve(&salve_args), opa(&args));
        assert_eq!(
            ours.code, theirs.code,
            "{args:?}: salve exited {} ({}{}), opa {} ({}{})",
            ours.code, ours.stdout, ours.stderr, theirs.code, theirs.stdout, theirs.stderr
        );
    }

    // The same tests pass, fail and err, and the summary lines match.
    for dir in [passing, failing] {
        let ours = salve(&["policy", "test", "--format", "json", dir]);
        let theirs = opa(&["test", "--format", "json", dir]);
        assert_eq!(outcomes(&ours.stdout), outcomes(&theirs.stdout), "{dir}");
        let summary = |out: &str| -> Vec<String> {
            out.lines()
                .filter(|l| {
                    l.starts_with("PASS: ") || l.starts_with("FAIL: ") || l.starts_with("ERROR: ")
                })
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(
            summary(&salve(&["policy", "test", dir]).stdout),
            summary(&opa(&["test", dir]).stdout),
            "{dir}"
        );
    }
    // Both leave passing tests out of the quiet listing and name the failing ones (in
    // an order opa does not keep from one run to the next).
    let names = |out: &str| -> std::collections::BTreeSet<String> {
        out.lines()
            .filter_map(|l| l.split_once(": ").map(|(name, _)| name.to_owned()))
            .filter(|n| n.starts_with("data."))
            .collect()
    };
    assert_eq!(
        names(&salve(&["policy", "test", failing]).stdout),
        names(&opa(&["test", failing]).stdout)
    );
}
