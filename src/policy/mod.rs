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

pub mod pool;
pub mod replay;
pub mod testing;

use std::num::NonZeroU32;
use std::time::Duration;

use regorus::utils::limits::ExecutionTimerConfig;
use serde::Serialize;
use serde_json::Value;

use crate::bundle::{Bundle, BundleFile, FileKind};

/// The rule whose value is the verdict.
pub const VERDICT_RULE: &str = "data.salve.deny";

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
}

/// Compiled Rego modules plus their data documents, with the hash that identifies them.
#[derive(Clone)]
pub struct PolicySet {
    engine: regorus::Engine,
    /// SHA-256 of every module and data document: which policy produced a verdict.
    pub hash: String,
    /// The modules' paths, relative to the policy directory.
    pub modules: Vec<String>,
}

impl std::fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicySet")
            .field("hash", &self.hash)
            .field("modules", &self.modules)
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
        }
    }
}

impl PolicySet {
    /// Compiles every module and data document of the bundle; the first error refuses the set.
    pub fn load(bundle: &Bundle, syntax: Syntax) -> Result<PolicySet, PolicyError> {
        let mut engine = new_engine(syntax);
        let mut modules = Vec::new();
        for file in bundle.of_kind(FileKind::Rego) {
            add_module(&mut engine, file, syntax)?;
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
        // Analysis errors (unsafe variables, bad references) surface on first evaluation,
        // so evaluate once now: a set that cannot be evaluated is refused at load.
        engine.set_input(regorus::Value::new_object());
        if let Err(e) = engine.clone().eval_rule(VERDICT_RULE.to_owned()) {
            let text = e.to_string();
            if !text.contains("not a valid rule path") && !text.contains("not found") {
                return Err(PolicyError::Rego(text));
            }
        }
        Ok(PolicySet {
            engine,
            hash: bundle.hash(&[FileKind::Rego, FileKind::Data]),
            modules,
        })
    }

    /// Every problem of the bundle's modules and data, each with its file (and line),
    /// rather than only the first: what `salve policy check` reports.
    pub fn check(bundle: &Bundle, syntax: Syntax) -> Vec<PolicyError> {
        let mut errors: Vec<PolicyError> = bundle
            .of_kind(FileKind::Rego)
            .filter_map(|f| add_module(&mut new_engine(syntax), f, syntax).err())
            .collect();
        errors.extend(
            bundle
                .of_kind(FileKind::Data)
                .filter_map(|f| mounted_data(f).err()),
        );
        if errors.is_empty() {
            if let Err(e) = PolicySet::load(bundle, syntax) {
                errors.push(e);
            }
        }
        errors
    }

    /// Evaluates the verdict for one policy input document. Never fails: a failure is a denial.
    pub fn evaluate(&self, input: &Value) -> Verdict {
        match self.deny_messages(input) {
            Ok(mut reasons) => {
                reasons.sort();
                Verdict {
                    allowed: reasons.is_empty(),
                    reasons,
                    error: None,
                    policy_hash: self.hash.clone(),
                }
            }
            Err(error) => Verdict::failed(&self.hash, error),
        }
    }

    fn deny_messages(&self, input: &Value) -> Result<Vec<String>, String> {
        let mut engine = self.engine.clone();
        engine.set_input(regorus::Value::from(input.clone()));
        let value = engine
            .eval_rule(VERDICT_RULE.to_owned())
            .map_err(|e| e.to_string())?;
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

    /// Adds a data document at the root of `data` (for `salve policy eval --data`).
    /// A key that the bundle's data already defines is a conflict, as in OPA.
    pub fn add_data(&mut self, doc: Value) -> Result<(), String> {
        self.engine
            .add_data(regorus::Value::from(doc))
            .map_err(|e| e.to_string())
    }

    /// Evaluates any Rego query against `input`, as `opa eval` does.
    pub fn query(&self, query: &str, input: &Value) -> Result<regorus::QueryResults, String> {
        let mut engine = self.engine.clone();
        engine.set_input(regorus::Value::from(input.clone()));
        engine
            .eval_query(query.to_owned(), false)
            .map_err(|e| e.to_string())
    }

    /// A clone of the compiled engine, for callers that query other rules (the test runner).
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

fn new_engine(syntax: Syntax) -> regorus::Engine {
    let mut engine = regorus::Engine::new();
    engine.set_rego_v0(syntax == Syntax::V0);
    engine.set_execution_timer_config(ExecutionTimerConfig {
        limit: EVALUATION_TIME_LIMIT,
        // Reading the clock every 64 units of work keeps the limit's overshoot tiny
        // without paying for a clock read on every step.
        check_interval: NonZeroU32::new(64).unwrap_or(NonZeroU32::MIN),
    });
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
    let parses_as_v0 = syntax == Syntax::V1
        && new_engine(Syntax::V0)
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
    fn fails_closed_when_deny_is_undefined_or_evaluation_errors() {
        let none = set_of(&[("other.rego", "package other\nallow := true\n")]).unwrap();
        let v = none.evaluate(&json!({}));
        assert!(!v.allowed);
        assert!(
            v.error.is_some(),
            "the missing verdict rule is recorded as the error: {v:?}"
        );
        assert!(
            v.reasons[0].starts_with("policy evaluation failed"),
            "{v:?}"
        );
        let erroring = set_of(&[(
            "boom.rego",
            "package salve\ndeny contains msg if { x := 1 / input.zero; msg := sprintf(\"%v\", [x]) }\n",
        )])
        .unwrap();
        let v = erroring.evaluate(&json!({"zero": 0}));
        assert!(!v.allowed, "an erroring policy must deny: {v:?}");
        assert!(v.error.is_some());
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
        let errors = PolicySet::check(&Bundle::read(dir.path()).unwrap(), Syntax::V1);
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
