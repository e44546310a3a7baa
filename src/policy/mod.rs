//! Guardrails in Rego, evaluated in-process with regorus; failing closed.
//!
//! The verdict contract is Gatekeeper's and conftest's: policies add messages to the
//! set `data.salve.deny`; an empty set allows the change, each message is a reason to
//! refuse it. Anything else is a denial too: a policy directory that defines no
//! `deny`, a `deny` that is not a set, an evaluation error, or an evaluation that runs
//! past its time limit. The error is recorded as the reason, so an auditor sees why.
//!
//! A [`PolicySet`] is compiled once and shared; each evaluation works on its own clone
//! of the compiled engine, so evaluations never see each other's input.

mod evaluator;
mod lint;
pub mod pool;
pub mod replay;
pub mod sprintf;
pub mod testing;

use std::num::NonZeroU32;
use std::time::Duration;

use regorus::utils::limits::ExecutionTimerConfig;
use serde::Serialize;
use serde_json::Value;

use crate::bundle::{Bundle, BundleFile, FileKind};
use evaluator::{Evaluator, MachineError};

/// The rule whose value is the verdict.
pub const VERDICT_RULE: &str = "data.salve.deny";

/// The rule whose messages turn an allowed change into one that waits for a human's
/// approval (optional: a policy without it never asks).
pub const APPROVAL_RULE: &str = "data.salve.require_approval";

/// How long one evaluation may run before it counts as a failure (and so a denial).
pub const EVALUATION_TIME_LIMIT: Duration = Duration::from_secs(2);

/// A policy directory that cannot be loaded; the message carries file and line.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PolicyError {
    /// A Rego module does not parse or compile; regorus's message names file:line:column.
    #[error("{0}")]
    Rego(String),
    /// A data document is not valid JSON/YAML, or not an object.
    #[error("{file}: {reason}")]
    Data { file: String, reason: String },
    /// There is nothing to evaluate.
    #[error("no Rego policy found in {0}: refusing to run without guardrails")]
    Empty(String),
    /// No module defines the verdict rule, so every change would be denied.
    #[error(
        "{packages}: no module defines `deny` in package salve; salve reads its verdict from \
         data.salve.deny, so every change would be denied. Fix: declare `package salve` and \
         add rules `deny contains msg if {{ … }}`"
    )]
    NoVerdict {
        /// Each module's `file:line: package name`, so the author sees what was loaded.
        packages: String,
    },
    /// `deny` is defined but is not a set of messages.
    #[error(
        "{at}: data.salve.deny must be a set of messages, but this rule makes it {got}. Fix: \
         write `deny contains msg if {{ … }}` (in Rego v1, `deny[msg] if` defines an object)"
    )]
    VerdictNotASet {
        /// `file:line` of the first `deny` rule.
        at: String,
        /// What it is instead.
        got: String,
    },
}

/// How Rego is read and how its built-ins fail: what `--v0-compatible` and
/// `--strict-builtin-errors` choose, for the server and the policy commands alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RegoOptions {
    pub syntax: Syntax,
    /// OPA makes a failing built-in (a divide by zero, `to_number("x")`) an undefined
    /// expression; strict makes it an evaluation error, as `opa --strict-builtin-errors`.
    pub strict_builtin_errors: bool,
}

impl From<Syntax> for RegoOptions {
    fn from(syntax: Syntax) -> RegoOptions {
        RegoOptions {
            syntax,
            ..RegoOptions::default()
        }
    }
}

/// Compiled Rego modules plus their data documents, with the hash that identifies them.
#[derive(Clone)]
pub struct PolicySet {
    engine: regorus::Engine,
    evaluator: Evaluator,
    /// Whether built-ins fail strictly; the evaluator is chosen anew when data is added.
    strict_builtin_errors: bool,
    /// SHA-256 of every module and data document: which policy produced a verdict.
    pub hash: String,
    /// The modules' paths, relative to the policy directory.
    pub modules: Vec<String>,
    /// Whether a module defines `require_approval` in package salve (evaluated, by the
    /// interpreter, only then and only for an allowed change).
    asks_approval: bool,
}

impl std::fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicySet")
            .field("hash", &self.hash)
            .field("modules", &self.modules)
            .field("evaluator", &self.evaluator.describe())
            .finish()
    }
}

/// The answer to "may salve make this change?", with everything needed to explain it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub allowed: bool,
    /// The `deny` messages, or the evaluation error, sorted.
    pub reasons: Vec<String>,
    /// Set when the verdict is a denial because the policy could not be evaluated.
    pub error: Option<String>,
    pub policy_hash: String,
    /// The `require_approval` messages of an allowed change, sorted: the change waits
    /// for a human's approval, for these reasons. Empty: it does not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approval: Vec<String>,
}

impl Verdict {
    /// The denial for a policy that could not give an answer (an error, a limit, a busy
    /// engine): failing closed, with the cause as the reason an auditor reads.
    pub fn failed(policy_hash: &str, error: String) -> Verdict {
        Verdict {
            allowed: false,
            reasons: vec![format!(
                "policy evaluation failed, so the change is denied: {error}"
            )],
            error: Some(error),
            policy_hash: policy_hash.to_owned(),
            approval: Vec::new(),
        }
    }
}

impl PolicySet {
    /// Compiles every module and data document of the bundle; the first error refuses the set.
    pub fn load(
        bundle: &Bundle,
        options: impl Into<RegoOptions>,
    ) -> Result<PolicySet, PolicyError> {
        let options = options.into();
        let mut engine = new_engine(options);
        let mut modules = Vec::new();
        for file in bundle.of_kind(FileKind::Rego) {
            add_module(&mut engine, file, options.syntax)?;
            modules.push(file.relative.clone());
        }
        if modules.is_empty() {
            return Err(PolicyError::Empty(bundle.root.display().to_string()));
        }
        for file in bundle.of_kind(FileKind::Data) {
            let doc = mounted_data(file)?;
            engine
                .add_data(regorus::Value::from(doc))
                .map_err(|e| PolicyError::Data {
                    file: file.relative.clone(),
                    reason: e.to_string(),
                })?;
        }
        if let Some(error) = lint::undefined_functions(engine.get_modules())
            .into_iter()
            .next()
        {
            return Err(error);
        }
        check_verdict_shape(&engine, bundle)?;
        let asks_approval = check_approval_shape(&engine)?;
        let evaluator = prepare(&mut engine, options.strict_builtin_errors)?;
        Ok(PolicySet {
            engine,
            evaluator,
            strict_builtin_errors: options.strict_builtin_errors,
            hash: bundle.hash(&[FileKind::Rego, FileKind::Data]),
            modules,
            asks_approval,
        })
    }

    /// How verdicts are computed: compiled, or interpreted and why (for `policy check`).
    pub fn evaluator(&self) -> String {
        self.evaluator.describe()
    }

    /// The compiled set, or every problem of the bundle's modules and data that keeps it
    /// from loading, each with its file (and line), rather than only the first: what
    /// `salve policy check` reports, and what the other policy commands need, in one pass.
    pub fn load_checked(
        bundle: &Bundle,
        options: impl Into<RegoOptions>,
    ) -> Result<PolicySet, Vec<PolicyError>> {
        let options = options.into();
        let mut errors: Vec<PolicyError> = bundle
            .of_kind(FileKind::Rego)
            .filter_map(|f| add_module(&mut new_engine(options), f, options.syntax).err())
            .collect();
        errors.extend(
            bundle
                .of_kind(FileKind::Data)
                .filter_map(|f| mounted_data(f).err()),
        );
        if errors.is_empty() {
            let mut engine = new_engine(options);
            for file in bundle.of_kind(FileKind::Rego) {
                // Each parsed alone above, so together they parse too.
                let _ = add_module(&mut engine, file, options.syntax);
            }
            errors.extend(lint::undefined_functions(engine.get_modules()));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        PolicySet::load(bundle, options).map_err(|e| vec![e])
    }

    /// What `opa check --strict` adds: variables assigned and never used, and function
    /// arguments never used, each with file:line. Empty when the modules do not parse
    /// (`load_checked` reports that).
    pub fn strict_problems(bundle: &Bundle, options: impl Into<RegoOptions>) -> Vec<PolicyError> {
        let options = options.into();
        let mut engine = new_engine(options);
        for file in bundle.of_kind(FileKind::Rego) {
            if add_module(&mut engine, file, options.syntax).is_err() {
                return Vec::new();
            }
        }
        lint::unused_variables(engine.get_modules())
    }

    /// Evaluates the verdict for one policy input document. Never fails: a failure is a denial.
    pub fn evaluate(&self, input: &Value) -> Verdict {
        let mut reasons = match self.deny_messages(input) {
            Ok(reasons) => reasons,
            Err(error) => return Verdict::failed(&self.hash, error),
        };
        reasons.sort();
        let allowed = reasons.is_empty();
        // Asked only of an allowed change; an error here fails closed, like one in `deny`.
        let approval = match (allowed && self.asks_approval)
            .then(|| self.approval_messages(input))
            .transpose()
        {
            Ok(approval) => approval.unwrap_or_default(),
            Err(error) => return Verdict::failed(&self.hash, error),
        };
        Verdict {
            allowed,
            reasons,
            error: None,
            policy_hash: self.hash.clone(),
            approval,
        }
    }

    /// The sorted messages of `require_approval`, by the interpreter.
    fn approval_messages(&self, input: &Value) -> Result<Vec<String>, String> {
        let mut engine = self.engine.clone();
        engine.set_input(evaluator::rego_value(input));
        let value = engine
            .eval_rule(APPROVAL_RULE.to_owned())
            .map_err(|e| e.to_string())?;
        let mut messages = match value {
            regorus::Value::Undefined => Vec::new(),
            regorus::Value::Set(_) => messages(value)?,
            other => {
                return Err(format!(
                    "{APPROVAL_RULE} must be a set of messages, got {other}"
                ));
            }
        };
        messages.sort();
        Ok(messages)
    }

    fn deny_messages(&self, input: &Value) -> Result<Vec<String>, String> {
        let value = match &self.evaluator {
            Evaluator::Machine(machines) => match machines.run(input) {
                Ok(value) => {
                    #[cfg(debug_assertions)]
                    self.assert_same_as_interpreter(input, &value);
                    value
                }
                Err(MachineError::Limit(e)) => return Err(e),
                // The RVM stopped on an error of its own: the interpreter, the reference
                // semantics, gives the verdict.
                Err(MachineError::Other(e)) => {
                    tracing::debug!(error = %e, "the compiled verdict stopped; the interpreter gives it");
                    self.interpret(input)?
                }
            },
            Evaluator::Interpreter { .. } => self.interpret(input)?,
        };
        messages(value)
    }

    /// The interpreter's value of the verdict rule: the reference semantics.
    fn interpret(&self, input: &Value) -> Result<regorus::Value, String> {
        let mut engine = self.engine.clone();
        engine.set_input(evaluator::rego_value(input));
        engine
            .eval_rule(VERDICT_RULE.to_owned())
            .map_err(|e| e.to_string())
    }

    /// Debug builds (so every test) check each compiled verdict against the interpreter.
    #[cfg(debug_assertions)]
    fn assert_same_as_interpreter(&self, input: &Value, compiled: &regorus::Value) {
        let interpreted = self.interpret(input);
        assert!(
            interpreted.as_ref() == Ok(compiled),
            "the compiled verdict differs from the interpreter's for input {input}: \
             compiled {compiled:?}, interpreted {interpreted:?}"
        );
    }

    /// Adds a data document at the root of `data` (for `salve policy eval --data`).
    /// A key that the bundle's data already defines is a conflict, as in OPA.
    pub fn add_data(&mut self, doc: Value) -> Result<(), String> {
        self.engine
            .add_data(regorus::Value::from(doc))
            .map_err(|e| e.to_string())?;
        self.evaluator =
            prepare(&mut self.engine, self.strict_builtin_errors).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Evaluates any Rego query against `input`, as `opa eval` does.
    pub fn query(&self, query: &str, input: &Value) -> Result<regorus::QueryResults, String> {
        let mut engine = self.engine.clone();
        engine.set_input(evaluator::rego_value(input));
        engine
            .eval_query(query.to_owned(), false)
            .map_err(|e| e.to_string())
    }

    /// A clone of the interpreter, for callers that query other rules (the test runner).
    pub fn engine(&self) -> regorus::Engine {
        self.engine.clone()
    }
}

/// Which Rego syntax modules are parsed as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Syntax {
    /// Rego v1 (`deny contains msg if { … }`), OPA 1.x's default.
    #[default]
    V1,
    /// Rego v0 (`deny[msg] { … }`), as `opa --v0-compatible`.
    V0,
}

/// The verdict rule's value as messages: a set, and nothing else, is a verdict.
fn messages(value: regorus::Value) -> Result<Vec<String>, String> {
    match value {
        regorus::Value::Set(set) => Ok(set
            .iter()
            .map(|m| match m.as_string() {
                Ok(s) => s.to_string(),
                Err(_) => m.to_json_str().unwrap_or_else(|_| format!("{m:?}")),
            })
            .collect()),
        regorus::Value::Undefined => Err(format!(
            "{VERDICT_RULE} is undefined: no loaded policy defines `deny` in package salve"
        )),
        other => Err(format!(
            "{VERDICT_RULE} must be a set of messages, got {other}"
        )),
    }
}

/// Whether the bundle defines `require_approval`; refuses one that is not a set (it
/// would make every change fail closed).
fn check_approval_shape(engine: &regorus::Engine) -> Result<bool, PolicyError> {
    let mut probe = engine.clone();
    probe.set_input(regorus::Value::new_object());
    match probe.eval_rule(APPROVAL_RULE.to_owned()) {
        Err(e) => {
            let text = e.to_string();
            if text.contains("not a valid rule path") || text.contains("not found") {
                Ok(false)
            } else {
                // It exists but needs an input to evaluate: judged per change.
                Ok(true)
            }
        }
        Ok(regorus::Value::Set(_) | regorus::Value::Undefined) => Ok(true),
        Ok(other) => Err(PolicyError::Rego(format!(
            "{APPROVAL_RULE} must be a set of messages (write `require_approval contains msg if …`), but it is {other}"
        ))),
    }
}

/// Refuses a bundle whose verdict rule is missing or is not a set, naming the place:
/// both load fine and would then deny every change, which the author should learn now.
fn check_verdict_shape(engine: &regorus::Engine, bundle: &Bundle) -> Result<(), PolicyError> {
    let mut probe = engine.clone();
    probe.set_input(regorus::Value::new_object());
    let value = match probe.eval_rule(VERDICT_RULE.to_owned()) {
        Ok(value) => value,
        Err(e) => {
            let text = e.to_string();
            if text.contains("not a valid rule path") || text.contains("not found") {
                return Err(PolicyError::NoVerdict {
                    packages: package_lines(bundle),
                });
            }
            // Analysis errors (unsafe variables, bad references) surface on first
            // evaluation: a set that cannot be evaluated is refused at load.
            return Err(PolicyError::Rego(text));
        }
    };
    let got = match &value {
        regorus::Value::Set(_) => return Ok(()),
        // A complete rule (`deny := …`) undefined for an empty input may still be a set
        // for a real one; the verdict check at evaluation denies if it is not.
        regorus::Value::Undefined => return Ok(()),
        regorus::Value::Object(_) => "an object".to_owned(),
        regorus::Value::Array(_) => "an array".to_owned(),
        regorus::Value::String(_) => "a string".to_owned(),
        regorus::Value::Bool(_) => "a boolean".to_owned(),
        regorus::Value::Number(_) => "a number".to_owned(),
        regorus::Value::Null => "null".to_owned(),
    };
    Err(PolicyError::VerdictNotASet {
        at: deny_rule_place(bundle).unwrap_or_else(|| "data.salve.deny".to_owned()),
        got,
    })
}

/// Chooses how the verdict of `engine` (modules and data added) is computed, and
/// prepares the engine for cheap clones. Called at load and whenever data is added,
/// since a compiled program carries its own copy of the data.
fn prepare(
    engine: &mut regorus::Engine,
    strict_builtin_errors: bool,
) -> Result<Evaluator, PolicyError> {
    // The RVM differs from the interpreter (and OPA) in two known ways; where either
    // could matter, the verdict stays with the interpreter.
    let modules_risk = {
        let modules = engine.get_modules();
        lint::conflict_risk(modules).or_else(|| lint::sprintf_risk(modules))
    };
    let evaluator = match modules_risk {
        Some(reason) => Evaluator::Interpreter { reason },
        None if strict_builtin_errors => Evaluator::Interpreter {
            reason: "strict built-in errors (the compiled form makes a failing built-in \
                     undefined)"
                .to_owned(),
        },
        None => {
            let shape = lint::input_shape(engine.get_modules());
            Evaluator::compile(engine, shape)?
        }
    };
    // Analyse the modules once, here: each evaluation clones this engine, and a clone
    // of an engine never evaluated would analyse them again (most of a verdict's cost).
    // The input goes back to undefined, as a test without `with input` expects it.
    engine.set_input(regorus::Value::new_object());
    let _ = engine.eval_rule(VERDICT_RULE.to_owned());
    engine.set_input(regorus::Value::Undefined);
    Ok(evaluator)
}

/// The evaluation time limit as regorus's timer takes it, for the interpreter and the RVM.
fn execution_timer() -> ExecutionTimerConfig {
    ExecutionTimerConfig {
        limit: EVALUATION_TIME_LIMIT,
        // Reading the clock every 64 units of work keeps the limit's overshoot tiny
        // without paying for a clock read on every step.
        check_interval: NonZeroU32::new(64).unwrap_or(NonZeroU32::MIN),
    }
}

/// `file:line: package name` of each module, one per line.
fn package_lines(bundle: &Bundle) -> String {
    bundle
        .of_kind(FileKind::Rego)
        .filter_map(|f| {
            let (line, text) = f
                .text
                .lines()
                .enumerate()
                .find(|(_, l)| l.trim_start().starts_with("package "))?;
            Some(format!("{}:{}: {}", f.relative, line + 1, text.trim()))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `file:line` of the first rule named `deny` in a module of package salve.
fn deny_rule_place(bundle: &Bundle) -> Option<String> {
    bundle.of_kind(FileKind::Rego).find_map(|f| {
        let in_salve = f.text.lines().any(|l| l.trim() == "package salve");
        if !in_salve {
            return None;
        }
        let line = f.text.lines().position(|l| {
            l.strip_prefix("deny")
                .is_some_and(|rest| rest.starts_with([' ', '[', '\t', ':', '=']))
        })?;
        Some(format!("{}:{}", f.relative, line + 1))
    })
}

fn new_engine(options: RegoOptions) -> regorus::Engine {
    let mut engine = regorus::Engine::new();
    engine.set_rego_v0(options.syntax == Syntax::V0);
    engine.set_strict_builtin_errors(options.strict_builtin_errors);
    // OPA's sprintf (Go's fmt) in place of regorus's, which errors where Go prints
    // `%!v(MISSING)`; with strict built-in errors, regorus's own stays.
    if !options.strict_builtin_errors {
        sprintf::install(&mut engine);
    }
    engine.set_execution_timer_config(execution_timer());
    engine
}

/// Adds one module; a v1 parse failure of a file that parses as v0 says so.
fn add_module(
    engine: &mut regorus::Engine,
    file: &BundleFile,
    syntax: Syntax,
) -> Result<(), PolicyError> {
    let Err(e) = engine.add_policy(file.relative.clone(), file.text.clone()) else {
        return Ok(());
    };
    // A module that uses v1's keywords is not a v0 module (and a v0 parse of it would
    // only print regorus's warnings about them).
    let uses_v1_keywords = file.text.contains(" if ") || file.text.contains(" contains ");
    let parses_as_v0 = syntax == Syntax::V1
        && !uses_v1_keywords
        && new_engine(Syntax::V0.into())
            .add_policy(file.relative.clone(), file.text.clone())
            .is_ok();
    if parses_as_v0 {
        return Err(PolicyError::Rego(format!(
            "{}: this module is written in Rego v0 syntax (e.g. `deny[msg] {{`); rewrite it for v1 \
             (`deny contains msg if {{`) or load it with --v0-compatible\n{e}",
            file.relative
        )));
    }
    Err(PolicyError::Rego(e.to_string()))
}

/// Reads a data document and nests it under its directory's path, as OPA bundles do.
fn mounted_data(file: &BundleFile) -> Result<Value, PolicyError> {
    let err = |reason: String| PolicyError::Data {
        file: file.relative.clone(),
        reason,
    };
    let doc: Value = if file.relative.ends_with(".json") {
        serde_json::from_str(&file.text).map_err(|e| err(e.to_string()))?
    } else {
        serde_norway::from_str(&file.text).map_err(|e| err(e.to_string()))?
    };
    if !doc.is_object() {
        return Err(err("a data document must be an object".into()));
    }
    let dirs: Vec<&str> = file.relative.split('/').collect();
    let mut mounted = doc;
    for dir in dirs[..dirs.len() - 1].iter().rev() {
        mounted = serde_json::json!({ *dir: mounted });
    }
    Ok(mounted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set_of(files: &[(&str, &str)]) -> Result<PolicySet, PolicyError> {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        PolicySet::load(&Bundle::read(dir.path()).unwrap(), Syntax::V1)
    }

    const CAP: &str = r#"package salve
deny contains msg if {
    input.action.to.replicas > data.limits.max_replicas
    msg := sprintf("above cap %d", [data.limits.max_replicas])
}
"#;

    #[test]
    fn empty_deny_allows_and_messages_deny() {
        let p = set_of(&[
            ("cap.rego", CAP),
            ("limits/data.json", r#"{"max_replicas": 5}"#),
        ])
        .unwrap();
        let ok = p.evaluate(&json!({"action": {"to": {"replicas": 3}}}));
        assert!(ok.allowed, "{ok:?}");
        let no = p.evaluate(&json!({"action": {"to": {"replicas": 9}}}));
        assert!(!no.allowed);
        assert_eq!(no.reasons, vec!["above cap 5"]);
        assert_eq!(no.policy_hash, p.hash);
    }

    #[test]
    fn the_shipped_guardrails_are_judged_compiled() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let policy = PolicySet::load(&Bundle::read(&dir).unwrap(), RegoOptions::default()).unwrap();
        assert_eq!(policy.evaluator(), "compiled (regorus RVM)");
        let strict = PolicySet::load(
            &Bundle::read(&dir).unwrap(),
            RegoOptions {
                strict_builtin_errors: true,
                ..RegoOptions::default()
            },
        )
        .unwrap();
        assert!(
            strict.evaluator().starts_with("interpreted (strict"),
            "{}",
            strict.evaluator()
        );
    }

    #[test]
    fn a_message_built_from_odd_input_denies_with_opas_text_not_silence() {
        // regorus's own sprintf errors on each of these, which without strict built-in
        // errors would make the message, and so the denial, undefined: a change allowed
        // that OPA denies.
        let p = set_of(&[(
            "p.rego",
            "package salve\ndeny contains msg if {\n  input.n > 1\n  msg := sprintf(input.format, [input.n])\n}\n",
        )])
        .unwrap();
        // A computed format could fail compiled, where OPA prints: this one is interpreted.
        assert!(
            p.evaluator()
                .starts_with("interpreted (p.rego:4: this sprintf"),
            "{}",
            p.evaluator()
        );
        for (format, n, want) in [
            ("%v and %v", json!(2), "2 and %!v(MISSING)"),
            ("%d replicas", json!(2.5), "%!d(float64=2.5) replicas"),
            ("%d replicas", json!(3), "3 replicas"),
        ] {
            let v = p.evaluate(&json!({"n": n, "format": format}));
            assert!(!v.allowed, "{v:?}");
            assert_eq!(v.reasons, vec![want]);
        }
    }

    #[test]
    fn only_sprintf_calls_that_never_fail_compile() {
        let with = |call: &str| {
            set_of(&[(
                "p.rego",
                &format!(
                    "package salve\ndeny contains msg if {{\n  input.n > 1\n  msg := {call}\n}}\n"
                ),
            )])
            .unwrap()
            .evaluator()
        };
        assert_eq!(
            with("sprintf(\"%v of %s (100%%)\", [input.n, \"x\"])"),
            "compiled (regorus RVM)"
        );
        for risky in [
            "sprintf(\"%d\", [input.n])",
            "sprintf(\"%v %v\", [input.n])",
            "sprintf(\"%v\", input.list)",
        ] {
            assert!(
                with(risky).starts_with("interpreted (p.rego:4: this sprintf"),
                "{risky}"
            );
        }
    }

    #[test]
    fn a_bundle_without_the_verdict_rule_is_refused_naming_its_packages() {
        let err = set_of(&[("other.rego", "package main\nallow := true\n")])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "other.rego:1: package main: no module defines `deny` in package salve"
            ),
            "{err}"
        );
        assert!(err.contains("Fix: declare `package salve`"), "{err}");
    }

    #[test]
    fn a_deny_that_is_an_object_is_refused_with_file_and_line() {
        let err = set_of(&[(
            "p.rego",
            "package salve\n\n# an object in Rego v1\ndeny[msg] if {\n  input.x\n  msg := \"x\"\n}\n",
        )])
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("p.rego:4: data.salve.deny must be a set of messages, but this rule makes it an object"),
            "{err}"
        );
        let boolean = set_of(&[("p.rego", "package salve\n\ndeny := true\n")])
            .unwrap_err()
            .to_string();
        assert!(
            boolean.starts_with("p.rego:3:") && boolean.contains("a boolean"),
            "{boolean}"
        );
    }

    #[test]
    fn a_call_to_an_undefined_function_is_refused_with_file_and_line() {
        let err = set_of(&[(
            "p.rego",
            "package salve\n\ndeny contains msg if {\n  input.x\n  msg := sprintf_typo(\"a\", [])\n}\n",
        )])
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("p.rego:5: undefined function sprintf_typo"),
            "{err}"
        );
    }

    #[test]
    fn require_approval_turns_an_allowed_change_into_one_a_human_approves() {
        let asks = "package salve\ndeny contains \"never\" if input.never\nrequire_approval contains msg if {\n    input.action.to.replicas > 5\n    msg := \"more than 5 replicas needs a human\"\n}\n";
        let p = set_of(&[("a.rego", asks)]).unwrap();
        assert!(p.asks_approval);
        let big = p.evaluate(&json!({"action": {"to": {"replicas": 8}}}));
        assert!(big.allowed, "{big:?}");
        assert_eq!(big.approval, ["more than 5 replicas needs a human"]);
        let small = p.evaluate(&json!({"action": {"to": {"replicas": 3}}}));
        assert!(small.allowed && small.approval.is_empty(), "{small:?}");
        let denied = p.evaluate(&json!({"never": true, "action": {"to": {"replicas": 8}}}));
        assert!(
            !denied.allowed && denied.approval.is_empty(),
            "a denial asks no one: {denied:?}"
        );

        let plain = set_of(&[
            ("cap.rego", CAP),
            ("limits/data.json", r#"{"max_replicas": 5}"#),
        ])
        .unwrap();
        assert!(
            !plain.asks_approval,
            "a policy without the rule is never asked"
        );

        let object =
            "package salve\ndeny contains \"x\" if false\nrequire_approval := {\"a\": 1}\n";
        let e = set_of(&[("o.rego", object)]).unwrap_err().to_string();
        assert!(
            e.contains("require_approval must be a set of messages"),
            "{e}"
        );
    }

    #[test]
    fn evaluation_errors_deny_and_builtin_errors_are_undefined_unless_strict() {
        // Two values for one complete rule is an error in OPA too: fail closed.
        let conflict = set_of(&[(
            "c.rego",
            "package salve\nlimit := 1 if input.a\nlimit := 2 if input.a\ndeny contains \"over\" if input.n > limit\n",
        )])
        .unwrap();
        assert!(
            conflict
                .evaluator()
                .starts_with("interpreted (salve.limit could take two values"),
            "{}",
            conflict.evaluator()
        );
        let v = conflict.evaluate(&json!({"a": true, "n": 5}));
        assert!(!v.allowed, "an erroring policy must deny: {v:?}");
        assert!(v.error.is_some());
        assert!(
            v.reasons[0].starts_with("policy evaluation failed"),
            "{v:?}"
        );

        // A divide by zero: undefined as in OPA (this rule does not fire), an error
        // (so a denial) with strict built-in errors.
        let divide = "package salve\ndeny contains msg if { x := 1 / input.zero; msg := sprintf(\"%v\", [x]) }\n";
        let lenient = set_of(&[("d.rego", divide)]).unwrap();
        let v = lenient.evaluate(&json!({"zero": 0}));
        assert!(v.allowed && v.error.is_none(), "{v:?}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("d.rego"), divide).unwrap();
        let strict = PolicySet::load(
            &Bundle::read(dir.path()).unwrap(),
            RegoOptions {
                strict_builtin_errors: true,
                ..RegoOptions::default()
            },
        )
        .unwrap();
        let v = strict.evaluate(&json!({"zero": 0}));
        assert!(!v.allowed && v.error.is_some(), "{v:?}");
    }

    #[test]
    fn a_runaway_policy_is_stopped_and_denies() {
        // Many small steps (a 20000 x 20000 loop), as a careless policy would take.
        let slow = "package salve\n\ndeny contains msg if {\n  r := numbers.range(1, input.n)\n  n := count([1 | some i in r; some j in r; i == j + 1])\n  n < 0\n  msg := \"never\"\n}\n";
        let p = set_of(&[("slow.rego", slow)]).unwrap();
        let started = std::time::Instant::now();
        let v = p.evaluate(&json!({"n": 20000}));
        assert!(
            !v.allowed,
            "a policy that runs out of time must deny: {v:?}"
        );
        assert!(v.error.is_some());
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the time limit did not stop it"
        );
    }

    #[test]
    fn a_broken_module_is_refused_with_file_and_line() {
        let err = set_of(&[(
            "bad.rego",
            "package salve\n\ndeny contains msg if {\n  input.x ==\n}\n",
        )])
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("bad.rego:"), "{text}");
        assert!(set_of(&[]).is_err(), "no policy at all is refused");
    }

    const V0: &str =
        "package salve\n\ndeny[msg] {\n  input.action.to.replicas > 5\n  msg := \"too many\"\n}\n";

    #[test]
    fn v0_modules_load_when_asked_and_are_named_when_not() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("old.rego"), V0).unwrap();
        let bundle = Bundle::read(dir.path()).unwrap();
        let err = PolicySet::load(&bundle, Syntax::V1)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("old.rego: this module is written in Rego v0 syntax"),
            "{err}"
        );
        let v0 = PolicySet::load(&bundle, Syntax::V0).unwrap();
        assert!(
            !v0.evaluate(&json!({"action": {"to": {"replicas": 9}}}))
                .allowed
        );
        assert!(
            v0.evaluate(&json!({"action": {"to": {"replicas": 1}}}))
                .allowed
        );
    }

    #[test]
    fn check_reports_every_broken_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.rego"),
            "package salve\ndeny contains msg if {\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("b.rego"),
            "package salve\ndeny contains msg if { x := }\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("data.json"), "{not json").unwrap();
        let errors =
            PolicySet::load_checked(&Bundle::read(dir.path()).unwrap(), Syntax::V1).unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:#?}");
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert!(
            text[0].contains("a.rego:")
                && text[1].contains("b.rego:")
                && text[2].starts_with("data.json:"),
            "{text:#?}"
        );
    }

    #[test]
    fn yaml_data_mounts_under_its_directory() {
        let p = set_of(&[("cap.rego", CAP), ("limits/data.yaml", "max_replicas: 2\n")]).unwrap();
        assert!(
            !p.evaluate(&json!({"action": {"to": {"replicas": 3}}}))
                .allowed
        );
    }
}
