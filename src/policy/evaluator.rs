//! How a verdict is computed fast: the policy compiled once to regorus's virtual machine.
//!
//! A verdict is taken before every step and replayed over history by `salve replay`, so
//! its cost adds up. Cloning the interpreter and evaluating `data.salve.deny` costs about
//! a hundred microseconds; the same rule compiled to regorus's RVM program and run on a
//! reused machine costs a few. The interpreter stays the reference: it runs the policy
//! tests (the RVM has no `with`), it evaluates any policy the RVM cannot compile or might
//! judge differently (see `lint`), it gives the verdict whenever the RVM stops on an
//! error, and in debug builds (every test run) each RVM verdict is checked against it.
//!
//! Compiling for the RVM also resolves every function the verdict can reach, which is how
//! a call to a function that does not exist is refused when the policy is loaded, as
//! `opa check` refuses it, rather than denying every change that reaches it.

use std::sync::{Arc, Mutex};

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::RegoVM;
use regorus::rvm::program::Program;
use serde_json::Value;

use super::lint::InputShape;
use super::{PolicyError, VERDICT_RULE, execution_timer};

/// How many idle machines a policy keeps for reuse (one per policy thread is enough).
const SPARE_MACHINES: usize = 8;

/// What evaluates `data.salve.deny`.
#[derive(Clone)]
pub(super) enum Evaluator {
    /// The verdict compiled to an RVM program, run on reused machines.
    Machine(Arc<Machines>),
    /// The interpreter, for a policy the RVM would not judge exactly as the interpreter
    /// does, or cannot compile; `reason` says why.
    Interpreter { reason: String },
}

/// A compiled verdict program, its data, and idle machines loaded with both.
pub(super) struct Machines {
    program: Arc<Program>,
    /// The parts of the input the policy reads; only they are converted.
    shape: InputShape,
    data: regorus::Value,
    idle: Mutex<Vec<RegoVM>>,
}

impl Evaluator {
    /// Compiles the verdict of `engine` (modules and data already added). An unknown
    /// function is a load error with its file and line; any other construct the RVM
    /// compiler does not support leaves the verdict to the interpreter.
    pub(super) fn compile(
        engine: &regorus::Engine,
        shape: InputShape,
    ) -> Result<Evaluator, PolicyError> {
        let rule: Arc<str> = Arc::from(VERDICT_RULE);
        let compiled = engine
            .clone()
            .compile_with_entrypoint(&rule)
            .map_err(|e| PolicyError::Rego(e.to_string()))?;
        let program = match Compiler::compile_from_policy(&compiled, &[VERDICT_RULE]) {
            Ok(program) => program,
            Err(e) => {
                let text = e.to_string();
                return match unknown_function(&text) {
                    Some(error) => Err(error),
                    None => Ok(Evaluator::Interpreter {
                        reason: format!(
                            "the RVM compiler does not support it: {}",
                            first_line(&text)
                        ),
                    }),
                };
            }
        };
        let machines = Machines {
            program,
            shape,
            data: engine.get_data(),
            idle: Mutex::new(Vec::new()),
        };
        // A program that cannot take the policy's data is a policy the interpreter keeps.
        if let Err(e) = machines.machine() {
            return Ok(Evaluator::Interpreter {
                reason: format!("the RVM does not take its data: {}", first_line(&e)),
            });
        }
        Ok(Evaluator::Machine(Arc::new(machines)))
    }

    /// Which evaluator this is, for `salve policy check` and the start-up line.
    pub(super) fn describe(&self) -> String {
        match self {
            Evaluator::Machine(_) => "compiled (regorus RVM)".to_owned(),
            Evaluator::Interpreter { reason } => format!("interpreted ({reason})"),
        }
    }
}

impl Machines {
    fn machine(&self) -> Result<RegoVM, String> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        if let Some(vm) = idle {
            return Ok(vm);
        }
        let mut vm = RegoVM::new();
        vm.load_program(self.program.clone());
        vm.set_data(self.data.clone()).map_err(|e| e.to_string())?;
        // OPA's semantics: a built-in that fails is undefined (the RVM shares regorus's
        // built-ins with the interpreter; sprintf, where they differ from OPA, is kept
        // out of compiled policies by `lint::sprintf_risk`).
        vm.set_strict_builtin_errors(false);
        // The clock is the limit, as for the interpreter, not a count of instructions:
        // a policy looping over a long history is slow, not wrong.
        vm.set_max_instructions(usize::MAX);
        vm.set_execution_timer_config(Some(execution_timer()));
        Ok(vm)
    }

    /// Runs the verdict program for one input. A machine that failed is dropped, not
    /// reused: its state after an error is not something to trust.
    pub(super) fn run(&self, input: &Value) -> Result<regorus::Value, MachineError> {
        let mut vm = self.machine().map_err(MachineError::Other)?;
        vm.set_input(rego_value_of(input, &self.shape));
        let result = vm.execute().map_err(|e| {
            let text = e.to_string();
            if text.contains("exceeded time limit") || text.contains("exceeded memory limit") {
                MachineError::Limit(text)
            } else {
                MachineError::Other(text)
            }
        });
        if result.is_ok() {
            vm.set_input(regorus::Value::Undefined);
            if let Ok(mut idle) = self.idle.lock() {
                if idle.len() < SPARE_MACHINES {
                    idle.push(vm);
                }
            }
        }
        result
    }
}

/// Why the RVM gave no verdict.
#[derive(Debug)]
pub(super) enum MachineError {
    /// The time or memory limit stopped it: the interpreter would stop there too.
    Limit(String),
    /// Anything else: the interpreter decides.
    Other(String),
}

/// An RVM compile error that is an unknown function, as a load error naming the place.
fn unknown_function(text: &str) -> Option<PolicyError> {
    let name = text
        .split("Unknown function: '")
        .nth(1)?
        .split('\'')
        .next()?
        .to_owned();
    let place = text
        .rsplit("--> ")
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .map(|at| {
            // file:line:column; the column is noise next to file:line.
            at.rsplit_once(':').map_or(at, |(file_line, _)| file_line)
        })
        .unwrap_or("the policy");
    Some(PolicyError::Rego(format!(
        "{place}: undefined function {name}: neither a built-in nor a function of this policy \
         has that name (opa check: rego_type_error: undefined function {name}); fix the name or \
         define it\n{text}"
    )))
}

fn first_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with("error:"))
        .or_else(|| text.lines().map(str::trim).find(|l| !l.is_empty()))
        .unwrap_or("")
        .to_owned()
}

/// The parts of the policy input that `shape` says the policy reads, as a regorus value
/// (a key the policy never reads is left out: it cannot change the verdict).
pub(super) fn rego_value_of(value: &Value, shape: &InputShape) -> regorus::Value {
    match (value, shape) {
        (Value::Object(fields), InputShape::Keys(keys)) => regorus::Value::from(
            keys.iter()
                .filter_map(|(k, below)| {
                    let v = fields.get(k)?;
                    Some((regorus::Value::from(k.as_str()), rego_value_of(v, below)))
                })
                .collect::<std::collections::BTreeMap<_, _>>(),
        ),
        _ => rego_value(value),
    }
}

/// The policy input as a regorus value, converted straight from the JSON tree: faster
/// than regorus's own conversion, which clones the tree and goes through serde.
pub(super) fn rego_value(value: &Value) -> regorus::Value {
    match value {
        Value::Null => regorus::Value::Null,
        Value::Bool(b) => regorus::Value::from(*b),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                regorus::Value::from(u)
            } else if let Some(i) = n.as_i64() {
                regorus::Value::from(i)
            } else {
                n.as_f64()
                    .map_or(regorus::Value::Undefined, regorus::Value::from)
            }
        }
        Value::String(s) => regorus::Value::from(s.as_str()),
        Value::Array(items) => {
            regorus::Value::from(items.iter().map(rego_value).collect::<Vec<_>>())
        }
        Value::Object(fields) => regorus::Value::from(
            fields
                .iter()
                .map(|(k, v)| (regorus::Value::from(k.as_str()), rego_value(v)))
                .collect::<std::collections::BTreeMap<_, _>>(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_direct_conversion_equals_regorus_own() {
        let doc = json!({
            "n": [0, 1, -1, 1.5, -2.25, u64::MAX, i64::MIN, 1e300],
            "s": "text", "b": [true, false], "z": null,
            "nested": {"b": {"c": [{"d": "e"}]}, "a": {}}, "empty": []
        });
        assert_eq!(rego_value(&doc), regorus::Value::from(doc.clone()));
    }

    #[test]
    fn an_unknown_function_names_its_file_and_line() {
        let text = "\n--> p.rego:3:33\n  |\n3 | ...\nerror: Compilation error: \n--> p.rego:3:52\n  |\n3 | deny ...\nerror: Unknown function: 'sprintf_typo'";
        let error = unknown_function(text).unwrap().to_string();
        assert!(
            error.starts_with("p.rego:3: undefined function sprintf_typo:"),
            "{error}"
        );
        assert!(unknown_function("error: something else").is_none());
    }
}
