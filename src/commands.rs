//! The policy author's commands: `salve policy test|check|eval`, `salve rules check`,
//! `salve replay`.
//!
//! Each returns what to print and the exit code, so they are tested as functions and
//! `main.rs` only prints. `policy test` and `policy check` keep `opa test`'s and
//! `opa check`'s exit codes and output; the other commands exit 1 when they find
//! problems and 2 when their inputs cannot be loaded.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use regex::Regex;
use serde_json::Value;

use crate::bundle::{Bundle, FileKind};
use crate::config::OutputFormat;
use crate::policy::replay::{self, ReplayReport};
use crate::policy::testing::{self, Outcome, TestResult};
use crate::policy::{PolicySet, RegoOptions, VERDICT_RULE};
use crate::rules;
use crate::store::Store;

/// What a command prints and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub stdout: String,
    /// What goes to standard error: load errors and messages beside a report, as `opa`
    /// keeps them off the report a script parses.
    pub stderr: String,
    pub code: u8,
}

impl Output {
    fn new(stdout: String, code: u8) -> Output {
        Output {
            stdout,
            stderr: String::new(),
            code,
        }
    }

    fn to_stderr(stderr: String, code: u8) -> Output {
        Output {
            stdout: String::new(),
            stderr,
            code,
        }
    }
}

/// Inputs could not be loaded.
pub const EXIT_LOAD: u8 = 2;

/// `opa test`'s exit codes, which `salve policy test` keeps: an error before any test
/// ran (a file that does not load) is 1, a test that failed or erred is 2.
pub const EXIT_TEST_LOAD: u8 = 1;
/// A test failed or erred, or coverage is below `--threshold`.
pub const EXIT_TEST_FAILED: u8 = 2;

const RULE_LINE: &str =
    "--------------------------------------------------------------------------------";

/// Reads and compiles a policy directory, or the load errors as `opa` prints them.
fn load_policy(dir: &Path, rego: RegoOptions) -> Result<(PolicySet, Bundle), Vec<String>> {
    let bundle = Bundle::read(dir).map_err(|e| vec![e.to_string()])?;
    let policy = PolicySet::load_checked(&bundle, rego)
        .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    Ok((policy, bundle))
}

fn load(dir: &Path, rego: RegoOptions) -> Result<(PolicySet, Bundle), Output> {
    load_policy(dir, rego).map_err(|errors| {
        let text: String = errors.iter().map(|e| format!("error: {e}\n")).collect();
        Output::new(text, EXIT_LOAD)
    })
}

/// `N errors occurred during loading:` and each error, as `opa test` prints them (one
/// error on the same line).
fn loading_errors(errors: &[String]) -> String {
    match errors {
        [one] => format!("1 error occurred during loading: {}\n", opa_error(one)),
        _ => {
            let mut text = format!("{} errors occurred during loading:\n", errors.len());
            for e in errors {
                let _ = writeln!(text, "{}", opa_error(e));
            }
            text
        }
    }
}

/// regorus's error text (`--> file:row:col`, the source excerpt, `error: message`) as
/// `opa` lays an error out: `file:row: message`, then the excerpt.
fn opa_error(error: &str) -> String {
    // salve's own messages (file:line first, regorus's text after) stay as they are.
    let regorus_text = error.trim_start().starts_with("-->");
    if !regorus_text || error_place(error).is_none() {
        return error.trim().to_owned();
    }
    let excerpt: Vec<&str> = error
        .lines()
        .filter(|l| {
            l.trim_start()
                .starts_with(|c: char| c.is_ascii_digit() || c == '|')
        })
        .filter(|l| l.contains('|'))
        .map(|l| l.split_once('|').map_or(l, |(_, code)| code))
        .filter(|code| !code.trim().is_empty())
        .collect();
    let mut text = error_line(error);
    for line in excerpt {
        let _ = write!(text, "\n\t{}", line.strip_prefix(' ').unwrap_or(line));
    }
    text
}

/// A duration as Go prints one (`153.418µs`, `1.2ms`, `2s`), so output lines match `opa test`'s.
fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    let (value, unit) = match nanos {
        0..1_000 => return format!("{nanos}ns"),
        1_000..1_000_000 => (nanos as f64 / 1e3, "µs"),
        1_000_000..1_000_000_000 => (nanos as f64 / 1e6, "ms"),
        _ => (nanos as f64 / 1e9, "s"),
    };
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}{unit}")
}

/// How `salve policy test` reports, as `opa test --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TestFormat {
    /// Lines for people.
    #[default]
    Pretty,
    /// One JSON document, as `opa test --format json`.
    Json,
}

/// The options of `salve policy test`, named after `opa test`'s flags.
#[derive(Debug, Clone, Default)]
pub struct TestOptions {
    /// List every test, passed ones too, as `opa test -v`.
    pub verbose: bool,
    /// Only tests whose full name matches this regex.
    pub run: Option<String>,
    /// Lines for people or one JSON document.
    pub format: TestFormat,
    /// Print the line coverage report instead of the results.
    pub coverage: bool,
    /// Fail when coverage is below this percentage (implies `coverage`).
    pub threshold: Option<f64>,
}

/// `salve policy test`: runs the `test_*` rules with `opa test`'s output and exit codes.
pub fn policy_test(dir: &Path, rego: RegoOptions, options: &TestOptions) -> Output {
    let filter = match options.run.as_deref().map(Regex::new).transpose() {
        Ok(f) => f,
        Err(e) => return Output::to_stderr(format!("error: --run: {e}\n"), EXIT_TEST_LOAD),
    };
    let (policy, bundle) = match load_policy(dir, rego) {
        Ok(p) => p,
        Err(errors) => return Output::to_stderr(loading_errors(&errors), EXIT_TEST_LOAD),
    };
    let coverage = options.coverage || options.threshold.is_some();
    let run = testing::run_matching(&policy, &bundle, filter.as_ref(), coverage);
    let results = run.results;
    let all_passed = results.iter().all(|r| r.outcome == Outcome::Pass);
    if let Some(report) = run.coverage {
        return coverage_output(&results, &report, options.threshold);
    }
    let stdout = match options.format {
        TestFormat::Json => {
            let doc: Vec<Value> = results.iter().map(test_json).collect();
            serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
        }
        TestFormat::Pretty => pretty_results(&results, options.verbose),
    };
    Output::new(stdout, if all_passed { 0 } else { EXIT_TEST_FAILED })
}

/// `opa test`'s lines: the listed tests under their file, then the counts.
fn pretty_results(results: &[TestResult], verbose: bool) -> String {
    let mut out = String::new();
    if results.is_empty() {
        return out;
    }
    let listed: Vec<&TestResult> = results
        .iter()
        .filter(|r| verbose || r.outcome != Outcome::Pass)
        .collect();
    let mut file = "";
    for r in &listed {
        if r.file != file {
            let _ = writeln!(out, "{}:", r.file);
            file = &r.file;
        }
        let _ = writeln!(out, "{}", test_line(r));
        if let Outcome::Error(e) = &r.outcome {
            let _ = writeln!(out, "  {}", error_line(e));
        }
    }
    let count = |o: fn(&Outcome) -> bool| results.iter().filter(|r| o(&r.outcome)).count();
    let (pass, fail, error) = (
        count(|o| *o == Outcome::Pass),
        count(|o| *o == Outcome::Fail),
        count(|o| matches!(o, Outcome::Error(_))),
    );
    let total = results.len();
    if !listed.is_empty() {
        let _ = writeln!(out, "{RULE_LINE}");
    }
    if pass > 0 {
        let _ = writeln!(out, "PASS: {pass}/{total}");
    }
    if fail > 0 {
        let _ = writeln!(out, "FAIL: {fail}/{total}");
    }
    if error > 0 {
        let _ = writeln!(out, "ERROR: {error}/{total}");
    }
    out
}

/// With `--coverage`: the report when every test passed (exit 0, or 2 below the
/// threshold), else the tests that did not pass on standard error and exit 1, as `opa`.
fn coverage_output(
    results: &[TestResult],
    report: &testing::Coverage,
    threshold: Option<f64>,
) -> Output {
    let failed: Vec<&TestResult> = results
        .iter()
        .filter(|r| r.outcome != Outcome::Pass)
        .collect();
    if !failed.is_empty() {
        let mut stderr = String::new();
        for r in failed {
            match &r.outcome {
                Outcome::Error(e) => {
                    let _ = writeln!(stderr, "{}", error_line(e));
                }
                _ => {
                    let _ = writeln!(stderr, "{}", test_line(r));
                }
            }
        }
        return Output::to_stderr(stderr, 1);
    }
    let stdout = serde_json::to_string_pretty(&report.to_opa_json()).unwrap_or_default() + "\n";
    let got = report.percent();
    match threshold {
        Some(wanted) if got < wanted => Output {
            stdout,
            stderr: format!(
                "Code coverage threshold not met: got {got:.2} instead of {wanted:.2}\n"
            ),
            code: EXIT_TEST_FAILED,
        },
        _ => Output::new(stdout, 0),
    }
}

/// One test in `opa test --format json`'s layout.
fn test_json(r: &TestResult) -> Value {
    let (package, name) = r.name.rsplit_once('.').unwrap_or(("data", &r.name));
    let mut doc = serde_json::json!({
        "location": {"file": r.file, "row": r.line, "col": 1},
        "package": package,
        "name": name,
    });
    match &r.outcome {
        Outcome::Pass => {}
        Outcome::Fail => doc["fail"] = Value::Bool(true),
        Outcome::Error(e) => {
            let mut error = serde_json::json!({"code": "eval_error", "message": error_message(e)});
            if let Some((file, row, col)) = error_place(e) {
                error["location"] = serde_json::json!({"file": file, "row": row, "col": col});
            }
            doc["error"] = error;
        }
    }
    doc["duration"] = Value::from(u64::try_from(r.duration.as_nanos()).unwrap_or(u64::MAX));
    doc
}

/// Where regorus's error text says the error is (`--> file:row:col`).
fn error_place(error: &str) -> Option<(String, u64, u64)> {
    let at = error
        .rsplit("--> ")
        .next()
        .filter(|_| error.contains("--> "))?;
    let at = at.split_whitespace().next()?;
    let mut parts = at.rsplitn(3, ':');
    let col = parts.next()?.parse().ok()?;
    let row = parts.next()?.parse().ok()?;
    Some((parts.next()?.to_owned(), row, col))
}

/// The message of regorus's error text without its source excerpt.
fn error_message(error: &str) -> String {
    error
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .unwrap_or(error.trim())
        .to_owned()
}

/// An error as one `file:row: message` line, as `opa test` prints it under a test.
fn error_line(error: &str) -> String {
    match error_place(error) {
        Some((file, row, _)) => format!("{file}:{row}: {}", error_message(error)),
        None => error_message(error),
    }
}

/// `data.pkg.test_x: FAIL (1.2ms)`, as `opa test` lists a test.
fn test_line(r: &TestResult) -> String {
    format!(
        "{}: {} ({})",
        r.name,
        verdict_word(r),
        go_duration(r.duration)
    )
}

fn verdict_word(r: &TestResult) -> &'static str {
    match r.outcome {
        Outcome::Pass => "PASS",
        Outcome::Fail => "FAIL",
        Outcome::Error(_) => "ERROR",
    }
}

/// `salve policy check`: compiles everything and lists every error with file:line,
/// exiting 1 on any, as `opa check` (and `opa check --strict` when `strict`).
pub fn policy_check(dir: &Path, rego: RegoOptions, strict: bool) -> Output {
    let bundle = match Bundle::read(dir) {
        Ok(b) => b,
        Err(e) => return Output::to_stderr(format!("error: {e}\n"), 1),
    };
    let (policy, mut errors) = match PolicySet::load_checked(&bundle, rego) {
        Ok(policy) => (Some(policy), Vec::new()),
        Err(errors) => (None, errors),
    };
    if strict {
        errors.extend(PolicySet::strict_problems(&bundle, rego));
    }
    if let (Some(policy), true) = (policy, errors.is_empty()) {
        let modules = bundle.of_kind(FileKind::Rego).count();
        let data = bundle.of_kind(FileKind::Data).count();
        return Output::new(
            format!(
                "ok: {modules} modules, {data} data documents; verdicts {}\n",
                policy.evaluator()
            ),
            0,
        );
    }
    let text: String = errors.iter().map(|e| format!("error: {e}\n")).collect();
    Output::to_stderr(format!("{text}{} errors\n", errors.len()), 1)
}

/// `salve rules check`: parses every rule file and lists every error with file:line.
pub fn rules_check(dir: &Path) -> Output {
    let bundle = match Bundle::read(dir) {
        Ok(b) => b,
        Err(e) => return Output::new(format!("error: {e}\n"), EXIT_LOAD),
    };
    let mut errors: Vec<String> = bundle
        .of_kind(FileKind::Rules)
        .filter_map(|f| rules::parse_file(&f.relative, &f.text).err())
        .map(|e| e.to_string())
        .collect();
    if errors.is_empty() {
        // Cross-file problems (duplicate names) show only when every file parses.
        match rules::RuleSet::load(&bundle) {
            Ok(set) => return Output::new(format!("ok: {} rules\n", set.rules.len()), 0),
            Err(e) => errors.push(e.to_string()),
        }
    }
    let text: String = errors.iter().map(|e| format!("error: {e}\n")).collect();
    Output::new(format!("{text}{} errors\n", errors.len()), 1)
}

fn read_document(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let parsed = if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
        serde_norway::from_str(&text).map_err(|e| e.to_string())
    } else {
        serde_json::from_str(&text).map_err(|e| e.to_string())
    };
    parsed.map_err(|e| format!("{}: {e}", path.display()))
}

/// `salve policy eval`: the verdict for an input (or any query's result), as JSON.
pub fn policy_eval(
    dir: &Path,
    rego: RegoOptions,
    input: &Path,
    data: &[std::path::PathBuf],
    query: Option<&str>,
) -> Output {
    let (mut policy, _) = match load(dir, rego) {
        Ok(p) => p,
        Err(out) => return out,
    };
    let input = match read_document(input) {
        Ok(v) => v,
        Err(e) => return Output::new(format!("error: --input {e}\n"), EXIT_LOAD),
    };
    for file in data {
        let added = read_document(file).and_then(|doc| {
            policy
                .add_data(doc)
                .map_err(|e| format!("{}: {e}", file.display()))
        });
        if let Err(e) = added {
            return Output::new(format!("error: --data {e}\n"), EXIT_LOAD);
        }
    }
    let json = match query.filter(|q| *q != VERDICT_RULE) {
        None => serde_json::to_value(policy.evaluate(&input)),
        Some(q) => match policy.query(q, &input) {
            Ok(results) => serde_json::to_value(results),
            Err(e) => return Output::new(format!("error: {e}\n"), 1),
        },
    };
    match json.and_then(|v| serde_json::to_string_pretty(&v)) {
        Ok(text) => Output::new(text + "\n", 0),
        Err(e) => Output::new(format!("error: {e}\n"), 1),
    }
}

/// `salve replay`: past decisions re-judged under `policies`; nothing touches a cluster.
pub async fn replay(
    database: &str,
    policies: &Path,
    rego: RegoOptions,
    since: Duration,
    format: OutputFormat,
) -> Output {
    let (policy, _) = match load(policies, rego) {
        Ok(p) => p,
        Err(out) => return out,
    };
    let store = match open(database).await {
        Ok(s) => s,
        Err(out) => return out,
    };
    let since =
        chrono::Utc::now() - chrono::Duration::from_std(since).unwrap_or(chrono::Duration::days(7));
    let past = match store.verdicts_since(since).await {
        Ok(p) => p,
        Err(e) => return Output::new(format!("error: {e}\n"), EXIT_LOAD),
    };
    let report = replay::replay(&past, &policy);
    let text = match format {
        OutputFormat::Json => serde_json::to_string_pretty(&report).unwrap_or_default() + "\n",
        OutputFormat::Table => replay_table(&report),
        // One row per decision that flips; the totals are the JSON's and the table's.
        OutputFormat::Csv => crate::report::csv(
            &[
                "remediation_id",
                "at",
                "change",
                "rule",
                "action",
                "target",
                "old_reasons",
                "new_reasons",
            ],
            report.flips.iter().map(|f| {
                [
                    f.remediation_id.clone(),
                    f.at.clone(),
                    f.change.to_owned(),
                    f.rule.clone(),
                    f.action.clone(),
                    f.target.clone(),
                    f.old_reasons.join("; "),
                    f.new_reasons.join("; "),
                ]
            }),
        ),
    };
    Output::new(text, 0)
}

/// Opens the knowledge base a command reads or acts on: it must exist, at the current
/// schema. Only `serve` and `migrate` create or migrate one, so a command run in the wrong
/// directory, or a pause written to a database no salve reads, is an error, not a silence.
async fn open(database: &str) -> Result<Store, Output> {
    Store::open_existing(database)
        .await
        .map_err(|e| Output::to_stderr(format!("error: {e}\n"), EXIT_LOAD))
}

/// `salve history`: remediations newest first, as a table, JSON or CSV.
pub async fn history(
    database: &str,
    query: &crate::api::ListQuery,
    format: OutputFormat,
) -> Output {
    let store = match open(database).await {
        Ok(s) => s,
        Err(out) => return out,
    };
    let mut query = query.clone();
    query.limit = query.limit.or(Some(20));
    let page = match crate::api::page(&store, &query).await {
        Ok(p) => p,
        Err(e) => return Output::new(format!("error: {e}\n"), 1),
    };
    let text = match format {
        OutputFormat::Table => crate::report::history_table(&page.items),
        OutputFormat::Json => serde_json::to_string_pretty(&page.items).unwrap_or_default() + "\n",
        OutputFormat::Csv => crate::report::history_csv(&page.items),
    };
    Output::new(text, 0)
}

/// `salve alerts`: received alerts newest first, each with its status, what salve
/// decided and the remediation it led to.
pub async fn alerts(args: &crate::config::AlertsArgs) -> Output {
    let store = match open(&args.database.url).await {
        Ok(s) => s,
        Err(out) => return out,
    };
    let mut query = args.query.clone();
    query.limit = query.limit.or(Some(20));
    let page = match crate::api::alerts_page(&store, &query, &args.status).await {
        Ok(p) => p,
        Err(e) => return Output::to_stderr(format!("error: {e}\n"), 1),
    };
    let text = match args.output {
        OutputFormat::Json => serde_json::to_string_pretty(&page.items).unwrap_or_default() + "\n",
        OutputFormat::Table if page.items.is_empty() => "(no alerts received)\n".to_owned(),
        OutputFormat::Table => crate::report::table(
            &crate::report::ALERT_COLUMNS,
            page.items.iter().map(crate::report::alert_row),
        ),
        OutputFormat::Csv => crate::report::csv(
            &crate::report::ALERT_COLUMNS,
            page.items.iter().map(crate::report::alert_row),
        ),
    };
    let more = match (&page.next, args.output) {
        (Some(next), OutputFormat::Table) => format!("(older alerts: --cursor {next})\n"),
        _ => String::new(),
    };
    Output {
        stdout: text,
        stderr: more,
        code: 0,
    }
}

/// `salve show ID`: one remediation and its timeline, for a person.
pub async fn show(database: &str, id: &str) -> Output {
    let store = match open(database).await {
        Ok(s) => s,
        Err(out) => return out,
    };
    let found = store.remediation(id).await;
    match (found, store.timeline(id).await) {
        (Ok(Some(r)), Ok(timeline)) => Output::new(crate::report::timeline(&r, &timeline), 0),
        (Ok(None), _) => Output::new(format!("error: no remediation {id}\n"), 1),
        (Err(e), _) | (_, Err(e)) => Output::new(format!("error: {e}\n"), EXIT_LOAD),
    }
}

/// `salve audit verify`: walks the hash chain; exit 1 at the first broken link.
pub async fn audit_verify(database: &str) -> Output {
    let store = match open(database).await {
        Ok(s) => s,
        Err(out) => return out,
    };
    match store.verify_chain().await {
        Ok(r) => match &r.first_break {
            None => Output::new(
                format!(
                    "ok: {} events, chain intact, head {}{}\n",
                    r.events,
                    r.head.get(..16).unwrap_or(&r.head),
                    if r.unchained > 0 {
                        format!(" ({} earlier events predate the chain)", r.unchained)
                    } else {
                        String::new()
                    }
                ),
                0,
            ),
            Some(b) => Output::new(
                format!(
                    "BROKEN at chain event {} (remediation {}, timeline entry {}): {}\n{} events before it are intact\n",
                    b.chain_seq, b.remediation_id, b.seq, b.problem, r.events
                ),
                1,
            ),
        },
        Err(e) => Output::new(format!("error: {e}\n"), EXIT_LOAD),
    }
}

/// `salve audit prune`: prunes old raw payloads and prints the seal.
pub async fn audit_prune(database: &str, older_than: Duration) -> Output {
    let store = match open(database).await {
        Ok(s) => s,
        Err(out) => return out,
    };
    let now = chrono::Utc::now();
    let cutoff = now - chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::days(90));
    match store.prune_payloads(cutoff, now).await {
        Ok(seal) => Output::new(
            format!(
                "pruned {} payloads received before {}; seal {} digest {}\n",
                seal.deliveries, seal.cutoff, seal.id, seal.digest
            ),
            0,
        ),
        Err(e) => Output::new(format!("error: {e}\n"), EXIT_LOAD),
    }
}

/// Where a CLI order was given, for the audit trail: the command and the host.
fn via(command: &str) -> String {
    format!("{command} on {}", crate::engine::host_name())
}

/// The user running the command, when the CLI is not told who.
fn user() -> Option<String> {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
}

/// `salve pause`: records the pause (every replica honours it from its next write) and
/// lists what is in force.
pub async fn pause(args: &crate::config::PauseArgs) -> Output {
    let order = crate::controls::PauseOrder {
        namespace: args.namespace.clone(),
        reason: args.reason.clone(),
        lasting: args.lasting,
        by: args.by.clone().or_else(user),
    };
    let now = chrono::Utc::now();
    let new = match crate::controls::pause(&order, &via("salve pause"), now) {
        Ok(n) => n,
        Err(e) => return Output::to_stderr(format!("salve pause: {e}\n"), EXIT_LOAD),
    };
    let store = match open(&args.database.url).await {
        Ok(s) => s,
        Err(out) => return out,
    };
    let paused = match store.pause(&new, now).await {
        Ok(p) => p,
        Err(e) => return Output::to_stderr(format!("salve pause: {e}\n"), 1),
    };
    let mut text = format!("{}.\n", paused.describe());
    text.push_str("Incidents are still recorded and decided; each change salve would make there is recorded as paused.\n");
    Output::new(text, 0)
}

/// `salve resume`: ends the pauses of the asked scope and says which it ended.
pub async fn resume(args: &crate::config::ResumeArgs) -> Output {
    let scope = match crate::controls::resume_scope(args.namespace.as_deref(), args.all) {
        Ok(s) => s,
        Err(e) => return Output::to_stderr(format!("salve resume: {e}\n"), EXIT_LOAD),
    };
    let store = match open(&args.database.url).await {
        Ok(s) => s,
        Err(out) => return out,
    };
    let by = crate::controls::who(
        args.by.clone().or_else(user).as_deref(),
        &via("salve resume"),
    );
    let now = chrono::Utc::now();
    let ended = match store.resume(&scope, &by, now).await {
        Ok(e) => e,
        Err(e) => return Output::to_stderr(format!("salve resume: {e}\n"), 1),
    };
    let mut text = String::new();
    if ended.is_empty() {
        let what = match &scope {
            crate::store::pauses::ResumeScope::Everywhere => "of every namespace".to_owned(),
            crate::store::pauses::ResumeScope::Namespace(ns) => format!("of namespace {ns}"),
            crate::store::pauses::ResumeScope::All => "at all".to_owned(),
        };
        let _ = writeln!(text, "No pause {what} was in force; nothing changed.");
    }
    for p in &ended {
        let _ = writeln!(text, "Ended: {}.", p.describe());
    }
    match store.active_pauses(now).await {
        Ok(left) if !left.is_empty() => {
            let _ = writeln!(text, "Still in force:");
            for p in &left {
                let _ = writeln!(text, "  {}", p.describe());
            }
        }
        Ok(_) => text.push_str("salve is not paused anywhere (a namespace annotated salve.io/paused=\"true\" still is).\n"),
        Err(e) => return Output::to_stderr(format!("salve resume: {e}\n"), 1),
    }
    Output::new(text, 0)
}

/// `salve approve|reject ID`: decides on the change a remediation waits with.
pub async fn decide(args: &crate::config::DecisionArgs, approve: bool) -> Output {
    let command = if approve {
        "salve approve"
    } else {
        "salve reject"
    };
    let reason = args.reason.as_deref().unwrap_or_default().trim().to_owned();
    if !approve && reason.is_empty() {
        return Output::to_stderr(
            format!("{command}: a rejection needs --reason, for the record\n"),
            EXIT_LOAD,
        );
    }
    let store = match open(&args.database.url).await {
        Ok(s) => s,
        Err(out) => return out,
    };
    let by = crate::controls::who(args.by.clone().or_else(user).as_deref(), &via(command));
    match crate::controls::decide(&store, &args.id, approve, &by, &reason).await {
        Ok(Ok(said)) => Output::new(format!("{said}\n"), 0),
        Ok(Err(
            crate::controls::NotDecided::Unknown(m) | crate::controls::NotDecided::NotWaiting(m),
        )) => Output::to_stderr(format!("{command}: {m}\n"), 1),
        Err(e) => Output::to_stderr(format!("{command}: {e}\n"), 1),
    }
}

/// `salve pauses`: the pauses in force.
pub async fn pauses(database: &str, format: OutputFormat) -> Output {
    let store = match open(database).await {
        Ok(s) => s,
        Err(out) => return out,
    };
    let pauses = match store.active_pauses(chrono::Utc::now()).await {
        Ok(p) => p,
        Err(e) => return Output::to_stderr(format!("salve pauses: {e}\n"), 1),
    };
    let text = match format {
        OutputFormat::Json => serde_json::to_string_pretty(&pauses).unwrap_or_default() + "\n",
        OutputFormat::Table | OutputFormat::Csv => {
            let table = matches!(format, OutputFormat::Table);
            if table && pauses.is_empty() {
                return Output::new("(no pause in force)\n".into(), 0);
            }
            let rows = pauses.iter().map(|p| {
                [
                    p.namespace
                        .clone()
                        .unwrap_or_else(|| "(every namespace)".into()),
                    p.paused_by.clone(),
                    p.paused_at.clone().unwrap_or_default(),
                    p.expires_at
                        .clone()
                        .unwrap_or_else(|| "(until resumed)".into()),
                    p.reason.clone(),
                ]
            });
            let header = ["NAMESPACE", "PAUSED BY", "SINCE", "UNTIL", "REASON"];
            if table {
                crate::report::table(&header, rows)
            } else {
                crate::report::csv(&header, rows)
            }
        }
    };
    Output::new(text, 0)
}

/// `salve rules report RULE`: what the rule did or would have done since `since`.
pub async fn rules_report(
    database: &str,
    rule: &str,
    since: Duration,
    format: OutputFormat,
) -> Output {
    let store = match open(database).await {
        Ok(s) => s,
        Err(out) => return out,
    };
    let since =
        chrono::Utc::now() - chrono::Duration::from_std(since).unwrap_or(chrono::Duration::days(7));
    let outcomes = match store.rule_outcomes(rule, since).await {
        Ok(o) => o,
        Err(e) => return Output::to_stderr(format!("salve rules report: {e}\n"), 1),
    };
    let report = crate::report::rule_report(rule, &crate::store::timestamp(since), &outcomes);
    let text = match format {
        OutputFormat::Json => serde_json::to_string_pretty(&report).unwrap_or_default() + "\n",
        OutputFormat::Table => report.text(),
        OutputFormat::Csv => crate::report::csv(
            &[
                "id",
                "created_at",
                "state",
                "shadow_outcome",
                "seconds",
                "reasons",
            ],
            outcomes.iter().map(|o| {
                let shadow = o.shadow.as_ref();
                [
                    o.id.clone(),
                    o.created_at.clone(),
                    o.state.clone(),
                    shadow
                        .and_then(|s| s["outcome"].as_str())
                        .unwrap_or_default()
                        .to_owned(),
                    shadow
                        .and_then(|s| s["seconds"].as_f64())
                        .map(|s| format!("{s:.1}"))
                        .unwrap_or_default(),
                    o.reasons.join("; "),
                ]
            }),
        ),
    };
    Output::new(text, 0)
}

/// `salve migrate`: creates the knowledge base if need be and applies the migrations.
pub async fn migrate(database: &str) -> Output {
    match Store::open(database).await {
        Ok(_) => Output::new("migrations applied\n".into(), 0),
        Err(e) => Output::to_stderr(format!("error: {e}\n"), EXIT_LOAD),
    }
}

/// `salve stats`: what each step achieved per alert signature.
pub async fn stats(database: &str, since: Duration, format: OutputFormat) -> Output {
    let store = match open(database).await {
        Ok(s) => s,
        Err(out) => return out,
    };
    let since = chrono::Utc::now()
        - chrono::Duration::from_std(since).unwrap_or(chrono::Duration::days(30));
    let rows = match store.all_stats(since).await {
        Ok(r) => r,
        Err(e) => return Output::to_stderr(format!("error: {e}\n"), EXIT_LOAD),
    };
    let header = [
        "ALERT",
        "WORKLOAD",
        "STEP",
        "ATTEMPTS",
        "HEALED",
        "RATE",
        "MEAN HEAL",
    ];
    let text = match format {
        OutputFormat::Json => serde_json::to_string_pretty(&rows).unwrap_or_default() + "\n",
        OutputFormat::Table if rows.is_empty() => "(no verified attempts yet)\n".to_owned(),
        OutputFormat::Table => crate::report::table(
            &header,
            rows.iter().map(|r| {
                [
                    r.alertname.clone(),
                    r.target.clone(),
                    r.stats.step_key.clone(),
                    r.stats.attempts.to_string(),
                    r.stats.healed.to_string(),
                    format!("{:.0}%", r.stats.success_rate * 100.0),
                    r.stats
                        .mean_seconds_to_heal
                        .map_or("-".to_owned(), |s| format!("{s:.0}s")),
                ]
            }),
        ),
        OutputFormat::Csv => crate::report::csv(
            &[
                "alertname",
                "target",
                "step",
                "attempts",
                "healed",
                "success_rate",
                "mean_seconds_to_heal",
            ],
            rows.iter().map(|r| {
                [
                    r.alertname.clone(),
                    r.target.clone(),
                    r.stats.step_key.clone(),
                    r.stats.attempts.to_string(),
                    r.stats.healed.to_string(),
                    format!("{:.3}", r.stats.success_rate),
                    r.stats
                        .mean_seconds_to_heal
                        .map(|s| format!("{s:.1}"))
                        .unwrap_or_default(),
                ]
            }),
        ),
    };
    Output::new(text, 0)
}

fn replay_table(r: &ReplayReport) -> String {
    let mut out = String::new();
    for f in &r.flips {
        let _ = writeln!(
            out,
            "{}  {:<11} {:<24} {:<8} {}",
            f.at.get(..19).unwrap_or(&f.at).replace('T', " "),
            f.change,
            f.rule,
            f.action,
            f.target
        );
        let reasons = if f.new_reasons.is_empty() {
            &f.old_reasons
        } else {
            &f.new_reasons
        };
        let label = if f.new_reasons.is_empty() {
            "was denied for"
        } else {
            "now"
        };
        for reason in reasons {
            let _ = writeln!(out, "    {label}: {reason}");
        }
    }
    let _ = writeln!(
        out,
        "{} decisions re-evaluated under policy {}: {} allow→deny, {} deny→allow, {} unchanged",
        r.evaluated,
        r.policy_hash.get(..12).unwrap_or(&r.policy_hash),
        r.allow_to_deny,
        r.deny_to_allow,
        r.unchanged
    );
    out
}
