//! The policy author's commands: `salve policy test|check|eval`, `salve rules check`,
//! `salve replay`.
//!
//! Each returns what to print and the exit code, so they are tested as functions and
//! `main.rs` only prints. Exit codes follow OPA's tools: 0 when everything passes, 1
//! when a test fails (or a check finds problems), 2 when the inputs cannot be loaded.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use regex::Regex;
use serde_json::Value;

use crate::bundle::{Bundle, FileKind};
use crate::config::OutputFormat;
use crate::policy::replay::{self, ReplayReport};
use crate::policy::testing::{self, Outcome, TestResult};
use crate::policy::{PolicySet, Syntax, VERDICT_RULE};
use crate::rules;
use crate::store::Store;

/// What a command prints and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub stdout: String,
    pub code: u8,
}

impl Output {
    fn new(stdout: String, code: u8) -> Output {
        Output { stdout, code }
    }
}

/// Inputs could not be loaded.
pub const EXIT_LOAD: u8 = 2;

const RULE_LINE: &str =
    "--------------------------------------------------------------------------------";

fn load(dir: &Path, syntax: Syntax) -> Result<(PolicySet, Bundle), Output> {
    let bundle = Bundle::read(dir).map_err(|e| Output::new(format!("error: {e}\n"), EXIT_LOAD))?;
    let errors = PolicySet::check(&bundle, syntax);
    if !errors.is_empty() {
        let text: String = errors.iter().map(|e| format!("error: {e}\n")).collect();
        return Err(Output::new(text, EXIT_LOAD));
    }
    let policy = PolicySet::load(&bundle, syntax)
        .map_err(|e| Output::new(format!("error: {e}\n"), EXIT_LOAD))?;
    Ok((policy, bundle))
}

fn micros(d: Duration) -> String {
    if d.as_millis() >= 10 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}µs", d.as_micros())
    }
}

/// `salve policy test`: runs the `test_*` rules, OPA style.
pub fn policy_test(dir: &Path, syntax: Syntax, verbose: bool, run: Option<&str>) -> Output {
    let filter = match run.map(Regex::new).transpose() {
        Ok(f) => f,
        Err(e) => return Output::new(format!("error: --run: {e}\n"), EXIT_LOAD),
    };
    let (policy, bundle) = match load(dir, syntax) {
        Ok(p) => p,
        Err(out) => return out,
    };
    let results = testing::run_matching(&policy, &bundle, filter.as_ref());
    let mut out = String::new();
    if verbose {
        let mut file = "";
        for r in &results {
            if r.file != file {
                let _ = writeln!(out, "{}:", r.file);
                file = &r.file;
            }
            let _ = writeln!(
                out,
                "{}: {} ({})",
                r.name,
                verdict_word(r),
                micros(r.duration)
            );
            if let Outcome::Error(e) = &r.outcome {
                let _ = writeln!(out, "  {e}");
            }
        }
    } else {
        for r in results.iter().filter(|r| r.outcome != Outcome::Pass) {
            let _ = writeln!(
                out,
                "{}: {} ({}:{})",
                verdict_word(r),
                r.name,
                r.file,
                r.line
            );
            if let Outcome::Error(e) = &r.outcome {
                let _ = writeln!(out, "  {e}");
            }
        }
    }
    if results.is_empty() {
        out.push_str("no test cases found\n");
        return Output::new(out, 0);
    }
    let count = |o: fn(&Outcome) -> bool| results.iter().filter(|r| o(&r.outcome)).count();
    let (pass, fail, error) = (
        count(|o| *o == Outcome::Pass),
        count(|o| *o == Outcome::Fail),
        count(|o| matches!(o, Outcome::Error(_))),
    );
    let total = results.len();
    let _ = writeln!(out, "{RULE_LINE}");
    if pass > 0 {
        let _ = writeln!(out, "PASS: {pass}/{total}");
    }
    if fail > 0 {
        let _ = writeln!(out, "FAIL: {fail}/{total}");
    }
    if error > 0 {
        let _ = writeln!(out, "ERROR: {error}/{total}");
    }
    Output::new(out, u8::from(pass != total))
}

fn verdict_word(r: &TestResult) -> &'static str {
    match r.outcome {
        Outcome::Pass => "PASS",
        Outcome::Fail => "FAIL",
        Outcome::Error(_) => "ERROR",
    }
}

/// `salve policy check`: compiles everything and lists every error with file:line.
pub fn policy_check(dir: &Path, syntax: Syntax) -> Output {
    let bundle = match Bundle::read(dir) {
        Ok(b) => b,
        Err(e) => return Output::new(format!("error: {e}\n"), EXIT_LOAD),
    };
    let errors = PolicySet::check(&bundle, syntax);
    if errors.is_empty() {
        let modules = bundle.of_kind(FileKind::Rego).count();
        let data = bundle.of_kind(FileKind::Data).count();
        return Output::new(format!("ok: {modules} modules, {data} data documents\n"), 0);
    }
    let text: String = errors.iter().map(|e| format!("error: {e}\n")).collect();
    Output::new(format!("{text}{} errors\n", errors.len()), 1)
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
    syntax: Syntax,
    input: &Path,
    data: &[std::path::PathBuf],
    query: Option<&str>,
) -> Output {
    let (mut policy, _) = match load(dir, syntax) {
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
    syntax: Syntax,
    since: Duration,
    json: bool,
) -> Output {
    let (policy, _) = match load(policies, syntax) {
        Ok(p) => p,
        Err(out) => return out,
    };
    let store = match Store::connect(database).await {
        Ok(s) => s,
        Err(e) => return Output::new(format!("error: {e}\n"), EXIT_LOAD),
    };
    let since =
        chrono::Utc::now() - chrono::Duration::from_std(since).unwrap_or(chrono::Duration::days(7));
    let past = match store.verdicts_since(since).await {
        Ok(p) => p,
        Err(e) => return Output::new(format!("error: {e}\n"), EXIT_LOAD),
    };
    let report = replay::replay(&past, &policy);
    if json {
        return Output::new(
            serde_json::to_string_pretty(&report).unwrap_or_default() + "\n",
            0,
        );
    }
    Output::new(replay_table(&report), 0)
}

async fn open(database: &str) -> Result<Store, Output> {
    Store::open(database)
        .await
        .map_err(|e| Output::new(format!("error: {e}\n"), EXIT_LOAD))
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

/// `salve migrate`: applies the migrations and says how many there are.
pub async fn migrate(database: &str) -> Output {
    match open(database).await {
        Ok(_) => Output::new("migrations applied\n".into(), 0),
        Err(out) => out,
    }
}

/// `salve stats`: what each step achieved per alert signature.
pub async fn stats(database: &str, since: Duration, json: bool) -> Output {
    let store = match Store::connect(database).await {
        Ok(s) => s,
        Err(e) => return Output::new(format!("error: {e}\n"), EXIT_LOAD),
    };
    let since = chrono::Utc::now()
        - chrono::Duration::from_std(since).unwrap_or(chrono::Duration::days(30));
    let rows = match store.all_stats(since).await {
        Ok(r) => r,
        Err(e) => return Output::new(format!("error: {e}\n"), EXIT_LOAD),
    };
    if json {
        return Output::new(
            serde_json::to_string_pretty(&rows).unwrap_or_default() + "\n",
            0,
        );
    }
    let mut out = format!(
        "{:<28} {:<36} {:<14} {:>8} {:>7} {:>6} {:>10}\n",
        "ALERT", "WORKLOAD", "STEP", "ATTEMPTS", "HEALED", "RATE", "MEAN HEAL"
    );
    for r in &rows {
        let heal = r
            .stats
            .mean_seconds_to_heal
            .map_or("-".to_owned(), |s| format!("{s:.0}s"));
        let _ = writeln!(
            out,
            "{:<28} {:<36} {:<14} {:>8} {:>7} {:>5.0}% {:>10}",
            r.alertname,
            r.target,
            r.stats.step_key,
            r.stats.attempts,
            r.stats.healed,
            r.stats.success_rate * 100.0,
            heal
        );
    }
    if rows.is_empty() {
        out.push_str("(no verified attempts yet)\n");
    }
    Output::new(out, 0)
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
