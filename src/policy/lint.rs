//! What `opa check` finds in a policy before it runs, found on regorus's syntax tree.
//!
//! A policy that parses can still be wrong in ways that only show when a change is
//! judged, and then as a denial of every change (fail closed, but learned from denied
//! remediations). `opa check` refuses a call to a function that does not exist, and
//! with `--strict` a variable assigned and never used; salve refuses the same at
//! `policy check`, at start-up and at reload, with file and line.
//!
//! It also decides whether the verdict may run compiled (see `evaluator`). regorus's
//! RVM differs from the interpreter (and OPA) in two ways found so far: it does not
//! report two different values of one complete rule as a conflict (an error, so a
//! denial), it picks one; and its `sprintf` fails where OPA's prints `%!v(MISSING)`.
//! A policy that could meet either stays with the interpreter.

use std::collections::{BTreeMap, BTreeSet};

use regorus::unstable::{AssignOp, BUILTINS, Expr, Literal, Module, Query, Ref, Rule, RuleHead};

use super::PolicyError;

/// Every sub-expression of `expr`, itself first, then the queries it holds.
fn walk_expr<'a>(expr: &'a Ref<Expr>, visit: &mut dyn FnMut(&'a Ref<Expr>)) {
    visit(expr);
    match expr.as_ref() {
        Expr::Array { items, .. } | Expr::Set { items, .. } => {
            for item in items {
                walk_expr(item, visit);
            }
        }
        Expr::Object { fields, .. } => {
            for (_, key, value) in fields {
                walk_expr(key, visit);
                walk_expr(value, visit);
            }
        }
        Expr::ArrayCompr { term, query, .. } | Expr::SetCompr { term, query, .. } => {
            walk_expr(term, visit);
            walk_query(query, visit);
        }
        Expr::ObjectCompr {
            key, value, query, ..
        } => {
            walk_expr(key, visit);
            walk_expr(value, visit);
            walk_query(query, visit);
        }
        Expr::Call { fcn, params, .. } => {
            walk_expr(fcn, visit);
            for p in params {
                walk_expr(p, visit);
            }
        }
        Expr::UnaryExpr { expr, .. } => walk_expr(expr, visit),
        Expr::RefDot { refr, .. } => walk_expr(refr, visit),
        Expr::RefBrack { refr, index, .. } => {
            walk_expr(refr, visit);
            walk_expr(index, visit);
        }
        Expr::BinExpr { lhs, rhs, .. }
        | Expr::BoolExpr { lhs, rhs, .. }
        | Expr::ArithExpr { lhs, rhs, .. }
        | Expr::AssignExpr { lhs, rhs, .. } => {
            walk_expr(lhs, visit);
            walk_expr(rhs, visit);
        }
        Expr::Membership {
            key,
            value,
            collection,
            ..
        } => walk_membership(key.as_ref(), value, collection, visit),
        _ => {}
    }
}

/// `key, value in collection`, as an expression or after `some`.
fn walk_membership<'a>(
    key: Option<&'a Ref<Expr>>,
    value: &'a Ref<Expr>,
    collection: &'a Ref<Expr>,
    visit: &mut dyn FnMut(&'a Ref<Expr>),
) {
    if let Some(k) = key {
        walk_expr(k, visit);
    }
    walk_expr(value, visit);
    walk_expr(collection, visit);
}

fn walk_query<'a>(query: &'a Ref<Query>, visit: &mut dyn FnMut(&'a Ref<Expr>)) {
    for stmt in &query.stmts {
        match &stmt.literal {
            Literal::SomeVars { .. } => {}
            Literal::SomeIn {
                key,
                value,
                collection,
                ..
            } => walk_membership(key.as_ref(), value, collection, visit),
            Literal::Expr { expr, .. } | Literal::NotExpr { expr, .. } => walk_expr(expr, visit),
            Literal::Every { domain, query, .. } => {
                walk_expr(domain, visit);
                walk_query(query, visit);
            }
        }
        // What a `with` replaces is not read; what it puts in its place is.
        for with in &stmt.with_mods {
            walk_expr(&with.r#as, visit);
        }
    }
}

/// Every node of a rule: its head's expressions and its bodies.
fn walk_rule<'a>(rule: &'a Ref<Rule>, visit: &mut dyn FnMut(&'a Ref<Expr>)) {
    match rule.as_ref() {
        Rule::Spec { head, bodies, .. } => {
            match head {
                RuleHead::Compr { refr, assign, .. } => {
                    walk_expr(refr, visit);
                    if let Some(a) = assign {
                        walk_expr(&a.value, visit);
                    }
                }
                RuleHead::Set { refr, key, .. } => {
                    walk_expr(refr, visit);
                    if let Some(k) = key {
                        walk_expr(k, visit);
                    }
                }
                RuleHead::Func {
                    refr, args, assign, ..
                } => {
                    walk_expr(refr, visit);
                    for a in args {
                        walk_expr(a, visit);
                    }
                    if let Some(a) = assign {
                        walk_expr(&a.value, visit);
                    }
                }
            }
            for body in bodies {
                if let Some(a) = &body.assign {
                    walk_expr(&a.value, visit);
                }
                walk_query(&body.query, visit);
            }
        }
        Rule::Default {
            refr, args, value, ..
        } => {
            walk_expr(refr, visit);
            for a in args {
                walk_expr(a, visit);
            }
            walk_expr(value, visit);
        }
    }
}

fn file_of(module: &Module) -> String {
    module.package.span.source.file().to_string()
}

/// The last dotted component of a rule's or call's name (`data.lib.f` → `f`).
fn last_name(text: &str) -> &str {
    text.rsplit('.').next().unwrap_or(text)
}

/// The names of every function the modules define (`f(x) := …`, `default f(_) := …`).
fn defined_functions(modules: &[Ref<Module>]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for module in modules {
        for rule in &module.policy {
            match rule.as_ref() {
                Rule::Spec {
                    head: RuleHead::Func { refr, .. },
                    ..
                } => {
                    names.insert(last_name(refr.span().text()).to_owned());
                }
                Rule::Default { refr, args, .. } if !args.is_empty() => {
                    names.insert(last_name(refr.span().text()).to_owned());
                }
                _ => {}
            }
        }
    }
    names
}

/// Calls to functions that are neither built-ins nor defined by the policy, as
/// `opa check`'s `rego_type_error: undefined function`.
pub(super) fn undefined_functions(modules: &[Ref<Module>]) -> Vec<PolicyError> {
    let defined = defined_functions(modules);
    let mut errors = Vec::new();
    for module in modules {
        let file = file_of(module);
        for rule in &module.policy {
            walk_rule(rule, &mut |expr| {
                let Expr::Call { fcn, .. } = expr.as_ref() else {
                    return;
                };
                let name = fcn.span().text();
                let known = name == "print"
                    || BUILTINS.contains_key(name)
                    || defined.contains(last_name(name));
                if !known {
                    errors.push(PolicyError::Rego(format!(
                        "{file}:{}: undefined function {name}: neither a built-in nor a \
                         function of this policy has that name (opa check: rego_type_error); \
                         fix the name or define the function",
                        fcn.span().line
                    )));
                }
            });
        }
    }
    errors
}

/// Variables assigned with `:=` and never used again in their rule, and function
/// arguments never used, as `opa check --strict` reports them.
pub(super) fn unused_variables(modules: &[Ref<Module>]) -> Vec<PolicyError> {
    let mut errors = Vec::new();
    for module in modules {
        let file = file_of(module);
        for rule in &module.policy {
            // Every use of a variable name in the rule, and where each `:=` binds one.
            let mut uses: BTreeMap<String, usize> = BTreeMap::new();
            let mut assigned: Vec<(String, u32)> = Vec::new();
            walk_rule(rule, &mut |expr| match expr.as_ref() {
                Expr::Var { span, .. } => *uses.entry(span.text().to_owned()).or_default() += 1,
                Expr::AssignExpr {
                    op: AssignOp::ColEq,
                    lhs,
                    ..
                } => walk_expr(lhs, &mut |e| {
                    if let Expr::Var { span, .. } = e.as_ref() {
                        assigned.push((span.text().to_owned(), span.line));
                    }
                }),
                _ => {}
            });
            for (name, line) in assigned {
                if name != "_" && !name.starts_with('_') && uses.get(&name).copied() == Some(1) {
                    errors.push(PolicyError::Rego(format!(
                        "{file}:{line}: assigned var {name} unused (opa check --strict: \
                         rego_compile_error); use it or remove the assignment"
                    )));
                }
            }
            if let Rule::Spec {
                head: RuleHead::Func { args, .. },
                ..
            } = rule.as_ref()
            {
                for arg in args {
                    if let Expr::Var { span, .. } = arg.as_ref() {
                        let name = span.text();
                        if name != "_" && uses.get(name).copied() == Some(1) {
                            errors.push(PolicyError::Rego(format!(
                                "{file}:{}: unused argument {name} (opa check --strict: \
                                 rego_compile_error); use _ (the wildcard) instead",
                                span.line
                            )));
                        }
                    }
                }
            }
        }
    }
    errors
}

/// Why the verdict must not run compiled, if it must not: a complete rule, function or
/// object rule that could give two different values (OPA's conflict error), which the
/// RVM would not report.
pub(super) fn conflict_risk(modules: &[Ref<Module>]) -> Option<String> {
    // Rule name → what each of its definitions can give.
    let mut definitions: BTreeMap<String, Vec<Definition>> = BTreeMap::new();
    for module in modules {
        let package = module.package.refr.span().text().to_owned();
        for rule in &module.policy {
            let Rule::Spec { head, bodies, .. } = rule.as_ref() else {
                continue;
            };
            let (refr, assign) = match head {
                RuleHead::Compr { refr, assign, .. } | RuleHead::Func { refr, assign, .. } => {
                    (refr, assign)
                }
                RuleHead::Set { .. } => continue,
            };
            let name = format!("{package}.{}", refr.span().text());
            let conditional = bodies.iter().any(|b| !b.query.stmts.is_empty());
            let mut values: Vec<Option<&Ref<Expr>>> = vec![assign.as_ref().map(|a| &a.value)];
            values.extend(
                bodies
                    .iter()
                    .filter_map(|b| b.assign.as_ref().map(|a| Some(&a.value))),
            );
            let entry = definitions.entry(name).or_default();
            for value in values {
                entry.push(match value {
                    // `p if …` is `p := true if …`.
                    None => Definition::Constant("true".to_owned()),
                    Some(v) if is_constant(v) => Definition::Constant(v.span().text().to_owned()),
                    Some(_) if !conditional && bodies.len() <= 1 => Definition::Unconditional,
                    Some(_) => Definition::Computed,
                });
            }
        }
    }
    definitions.into_iter().find_map(|(name, values)| {
        let single = values.len() == 1 && values[0] != Definition::Computed;
        let same_constant = values.iter().all(|v| matches!(v, Definition::Constant(_)))
            && values.iter().collect::<BTreeSet<_>>().len() == 1;
        (!(single || same_constant)).then(|| {
            format!("{name} could take two values (a conflict the compiled form does not report)")
        })
    })
}

/// What one definition of a complete rule or function can give.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Definition {
    /// Always this literal.
    Constant(String),
    /// One expression, evaluated once, with no body to iterate in.
    Unconditional,
    /// A value computed in a body: it may differ from one solution to the next.
    Computed,
}

/// Why a `sprintf` call could read differently compiled, if one could: the RVM uses
/// regorus's `sprintf`, which fails (so the message, and a `deny`, is undefined) where
/// OPA's prints `%!v(MISSING)` or `%!d(string=x)`. A call is safe when its format is a
/// literal with only `%v`, `%s` and `%%`, and its arguments an array literal with one
/// element per verb: those never fail.
pub(super) fn sprintf_risk(modules: &[Ref<Module>]) -> Option<String> {
    let mut risk = None;
    for module in modules {
        let file = file_of(module);
        for rule in &module.policy {
            walk_rule(rule, &mut |expr| {
                let Expr::Call { fcn, params, .. } = expr.as_ref() else {
                    return;
                };
                if risk.is_some() || fcn.span().text() != "sprintf" {
                    return;
                }
                let verbs = match params.first().map(|p| p.as_ref()) {
                    Some(Expr::String { value, .. } | Expr::RawString { value, .. }) => {
                        value.as_string().ok().and_then(|f| plain_verbs(f))
                    }
                    _ => None,
                };
                let args = match params.get(1).map(|p| p.as_ref()) {
                    Some(Expr::Array { items, .. }) => Some(items.len()),
                    _ => None,
                };
                if verbs.is_none() || verbs != args {
                    risk = Some(format!(
                        "{file}:{}: this sprintf may fail for some inputs (only a literal format \
                         with %v and %s and one argument per verb never does)",
                        fcn.span().line
                    ));
                }
            });
        }
    }
    risk
}

/// How many verbs a format has when they are all `%v` or `%s` (`%%` is no verb).
fn plain_verbs(format: &str) -> Option<usize> {
    let mut count = 0;
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next()? {
                '%' => {}
                'v' | 's' => count += 1,
                _ => return None,
            }
        }
    }
    Some(count)
}

/// Which parts of `input` the policy reads: the policy input is converted for the
/// compiled verdict only where it is read. Converting a JSON tree into regorus's values
/// costs as much as the verdict itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum InputShape {
    /// The whole value is (or may be) read.
    All,
    /// Only these keys, each with the part of it read.
    Keys(BTreeMap<String, InputShape>),
}

impl InputShape {
    fn need(&mut self, path: &[String]) {
        let InputShape::Keys(keys) = self else {
            return;
        };
        match path.split_first() {
            None => *self = InputShape::All,
            Some((first, rest)) => keys
                .entry(first.clone())
                .or_insert_with(|| InputShape::Keys(BTreeMap::new()))
                .need(rest),
        }
    }
}

/// The parts of `input` the modules read. Any use of `input` other than a path of
/// literal keys (`input`, `input[x]`, `some k in input`) reads all of it below that point.
pub(super) fn input_shape(modules: &[Ref<Module>]) -> InputShape {
    // The inner links of a reference chain (`input.a` in `input.a.b`) are not uses.
    let mut inner: BTreeSet<*const Expr> = BTreeSet::new();
    for module in modules {
        for rule in &module.policy {
            walk_rule(rule, &mut |expr| {
                if let Expr::RefDot { refr, .. } | Expr::RefBrack { refr, .. } = expr.as_ref() {
                    inner.insert(std::ptr::from_ref::<Expr>(refr.as_ref()));
                }
            });
        }
    }
    let mut shape = InputShape::Keys(BTreeMap::new());
    for module in modules {
        for rule in &module.policy {
            walk_rule(rule, &mut |expr| {
                if inner.contains(&std::ptr::from_ref::<Expr>(expr.as_ref())) {
                    return;
                }
                if let Some(path) = input_path(expr) {
                    shape.need(&path);
                }
            });
        }
    }
    shape
}

/// The literal-key path below `input` that this expression reads, if it reads input.
fn input_path(expr: &Ref<Expr>) -> Option<Vec<String>> {
    match expr.as_ref() {
        Expr::Var { span, .. } => (span.text() == "input").then(Vec::new),
        Expr::RefDot { refr, field, .. } => {
            let mut path = input_path(refr)?;
            path.push(field.0.text().to_owned());
            Some(path)
        }
        Expr::RefBrack { refr, index, .. } => {
            let mut path = input_path(refr)?;
            match index.as_ref() {
                Expr::String { value, .. } | Expr::RawString { value, .. } => {
                    path.push(value.as_string().ok()?.to_string());
                    Some(path)
                }
                // A computed key: everything below the path so far.
                _ => Some(path),
            }
        }
        _ => None,
    }
}

fn is_constant(expr: &Ref<Expr>) -> bool {
    matches!(
        expr.as_ref(),
        Expr::String { .. }
            | Expr::RawString { .. }
            | Expr::Number { .. }
            | Expr::Bool { .. }
            | Expr::Null { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modules(rego: &str) -> Vec<Ref<Module>> {
        let mut engine = regorus::Engine::new();
        engine.add_policy("p.rego".into(), rego.into()).unwrap();
        engine.get_modules().clone()
    }

    fn keys(pairs: &[(&str, InputShape)]) -> InputShape {
        InputShape::Keys(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn the_input_shape_is_the_literal_paths_read_and_all_below_a_computed_key() {
        let shape = input_shape(&modules(
            "package salve\ndeny contains \"x\" if {\n  input.action.to.replicas > 3\n  input[\"target\"].labels[_] == \"a\"\n}\ntest_t if { deny with input as {} }\n",
        ));
        assert_eq!(
            shape,
            keys(&[
                (
                    "action",
                    keys(&[("to", keys(&[("replicas", InputShape::All)]))])
                ),
                ("target", keys(&[("labels", InputShape::All)])),
            ])
        );
        let whole = input_shape(&modules(
            "package salve\ndeny contains \"x\" if {\n  some k, _ in input\n  k == \"a\"\n}\n",
        ));
        assert_eq!(whole, InputShape::All);
    }
}
