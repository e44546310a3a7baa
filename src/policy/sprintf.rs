//! `sprintf` as OPA computes it, replacing regorus's for the interpreter.
//!
//! OPA's `sprintf` is Go's `fmt.Sprintf`: a verb without an argument prints
//! `%!v(MISSING)`, an argument of the wrong type `%!d(string=x)`, extra arguments
//! `%!(EXTRA int=2)`. regorus raises an error in each case, which without strict
//! built-in errors makes the message undefined: a `deny` rule whose message is built
//! that way would not fire at all, where OPA denies with an odd message. Policy
//! libraries written for OPA rely on Go's behaviour, so salve gives them Go's.
//!
//! Arguments become Go values as OPA makes them: an integer an `int`, another number a
//! `float64`, a string a `string`, anything else the string of its Rego form
//! (`[1, "a"]`, `{"a": 1}`, `true`, `null`).

use regorus::Value;

/// One argument as Go sees it.
enum GoValue {
    Int(i128),
    Float(f64),
    Str(String),
}

impl GoValue {
    fn of(value: &Value) -> GoValue {
        match value {
            Value::Number(n) => {
                if let Some(i) = value.as_i64().ok().filter(|_| n.is_integer()) {
                    GoValue::Int(i128::from(i))
                } else if let Some(u) = value.as_u64().ok().filter(|_| n.is_integer()) {
                    GoValue::Int(i128::from(u))
                } else {
                    GoValue::Float(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => GoValue::Str(s.to_string()),
            other => GoValue::Str(rego_text(other)),
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            GoValue::Int(_) => "int",
            GoValue::Float(_) => "float64",
            GoValue::Str(_) => "string",
        }
    }

    /// `%v` of the value: what Go prints inside `%!d(type=…)` and for `%v`.
    fn plain(&self) -> String {
        match self {
            GoValue::Int(i) => i.to_string(),
            GoValue::Float(f) => format_g(*f, None),
            GoValue::Str(s) => s.clone(),
        }
    }
}

/// A value's Rego text, as OPA's `ast.Term.String()` writes it.
fn rego_text(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(_) => match GoValue::of(value) {
            GoValue::Int(i) => i.to_string(),
            GoValue::Float(f) => format_g(f, None),
            GoValue::Str(s) => s,
        },
        Value::String(s) => serde_json::to_string(s.as_ref()).unwrap_or_default(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(rego_text).collect::<Vec<_>>().join(", ")
        ),
        Value::Set(items) if items.is_empty() => "set()".to_owned(),
        Value::Set(items) => format!(
            "{{{}}}",
            items.iter().map(rego_text).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(fields) => format!(
            "{{{}}}",
            fields
                .iter()
                .map(|(k, v)| format!("{}: {}", rego_text(k), rego_text(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Undefined => "undefined".to_owned(),
    }
}

/// Go's `%g` (shortest representation when `precision` is `None`), as `strconv` writes it.
fn format_g(f: f64, precision: Option<usize>) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    // The shortest digits that round-trip, or `precision` significant digits.
    let scientific = match precision {
        None => format!("{f:e}"),
        Some(p) => format!("{:.*e}", p.max(1) - 1, f),
    };
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let negative = f < 0.0;
    let eprec = match precision {
        // strconv's shortest %g switches to an exponent from 1e6 (Go prints
        // `fmt.Sprint(1234567.5)` as 1.2345675e+06).
        None => 6,
        Some(p) => {
            let p = p.max(1) as i32;
            if p > digits.len() as i32 && digits.len() as i32 > exponent {
                digits.len() as i32
            } else {
                p
            }
        }
    };
    let use_exponent = exponent < -4 || exponent >= eprec;
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    let sign = if negative { "-" } else { "" };
    if use_exponent {
        let (first, rest) = digits.split_at(1);
        let mantissa = if rest.is_empty() {
            first.to_owned()
        } else {
            format!("{first}.{rest}")
        };
        let (esign, eabs) = if exponent < 0 {
            ('-', -exponent)
        } else {
            ('+', exponent)
        };
        format!("{sign}{mantissa}e{esign}{eabs:02}")
    } else if exponent < 0 {
        let zeros = "0".repeat((-exponent - 1) as usize);
        format!("{sign}0.{zeros}{digits}")
    } else {
        let point = (exponent + 1) as usize;
        if digits.len() <= point {
            format!("{sign}{digits}{}", "0".repeat(point - digits.len()))
        } else {
            format!("{sign}{}.{}", &digits[..point], &digits[point..])
        }
    }
}

/// The flags, width and precision of one verb.
#[derive(Default)]
struct Spec {
    minus: bool,
    plus: bool,
    space: bool,
    zero: bool,
    sharp: bool,
    width: Option<usize>,
    precision: Option<usize>,
}

impl Spec {
    fn pad(&self, text: String, numeric: bool) -> String {
        let Some(width) = self.width else {
            return text;
        };
        let len = text.chars().count();
        if len >= width {
            return text;
        }
        let fill = width - len;
        if self.minus {
            format!("{text}{}", " ".repeat(fill))
        } else if self.zero && numeric {
            // Zeros go after the sign.
            let (sign, digits) = match text.strip_prefix(['-', '+']) {
                Some(rest) => (&text[..1], rest),
                None => ("", text.as_str()),
            };
            format!("{sign}{}{digits}", "0".repeat(fill))
        } else {
            format!("{}{text}", " ".repeat(fill))
        }
    }

    fn signed(&self, text: String, negative: bool) -> String {
        if negative {
            text
        } else if self.plus {
            format!("+{text}")
        } else if self.space {
            format!(" {text}")
        } else {
            text
        }
    }
}

/// Formats one argument for one verb, or `None` when Go would print `%!verb(type=value)`.
fn format_one(verb: char, spec: &Spec, arg: &GoValue) -> Option<String> {
    let text = match (verb, arg) {
        ('v', GoValue::Float(f)) => (spec.signed(format_g(*f, spec.precision), *f < 0.0), true),
        ('v' | 'd', GoValue::Int(i)) => (spec.signed(i.to_string(), *i < 0), true),
        ('v' | 's', GoValue::Str(s)) => {
            let s = match spec.precision {
                Some(p) => s.chars().take(p).collect(),
                None => s.clone(),
            };
            (s, false)
        }
        ('q', GoValue::Str(s)) => (serde_json::to_string(s).unwrap_or_default(), false),
        ('x' | 'X', GoValue::Int(i)) => {
            let hex = format!("{:x}", i.unsigned_abs());
            let hex = if spec.sharp { format!("0x{hex}") } else { hex };
            let hex = if verb == 'X' { hex.to_uppercase() } else { hex };
            (
                spec.signed(if *i < 0 { format!("-{hex}") } else { hex }, *i < 0),
                true,
            )
        }
        ('x' | 'X', GoValue::Str(s)) => {
            let hex: String = s.bytes().map(|b| format!("{b:02x}")).collect();
            (if verb == 'X' { hex.to_uppercase() } else { hex }, false)
        }
        ('o', GoValue::Int(i)) => (
            spec.signed(
                format!("{}{:o}", if *i < 0 { "-" } else { "" }, i.unsigned_abs()),
                *i < 0,
            ),
            true,
        ),
        ('b', GoValue::Int(i)) => (
            spec.signed(
                format!("{}{:b}", if *i < 0 { "-" } else { "" }, i.unsigned_abs()),
                *i < 0,
            ),
            true,
        ),
        ('c', GoValue::Int(i)) => (
            u32::try_from(*i)
                .ok()
                .and_then(char::from_u32)
                .unwrap_or('\u{FFFD}')
                .to_string(),
            false,
        ),
        ('f' | 'F', GoValue::Float(f)) => (
            spec.signed(format!("{:.*}", spec.precision.unwrap_or(6), f), *f < 0.0),
            true,
        ),
        ('e' | 'E', GoValue::Float(f)) => {
            let s = go_exponent(*f, spec.precision.unwrap_or(6));
            let s = if verb == 'E' { s.to_uppercase() } else { s };
            (spec.signed(s, *f < 0.0), true)
        }
        ('g' | 'G', GoValue::Float(f)) => {
            let s = format_g(*f, spec.precision);
            let s = if verb == 'G' { s.to_uppercase() } else { s };
            (spec.signed(s, *f < 0.0), true)
        }
        ('t', GoValue::Str(s)) if s == "true" || s == "false" => (s.clone(), false),
        _ => return None,
    };
    Some(spec.pad(text.0, text.1))
}

/// `%e` as Go writes it: at least two exponent digits.
fn go_exponent(f: f64, precision: usize) -> String {
    let s = format!("{:.*e}", precision, f);
    let (mantissa, exponent) = s.split_once('e').unwrap_or((&s, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (esign, eabs) = if exponent < 0 {
        ('-', -exponent)
    } else {
        ('+', exponent)
    };
    format!("{mantissa}e{esign}{eabs:02}")
}

/// Go's `fmt.Sprintf(format, args...)` with OPA's conversion of the arguments.
pub fn sprintf(format: &str, args: &[Value]) -> String {
    let args: Vec<GoValue> = args.iter().map(GoValue::of).collect();
    let mut out = String::new();
    let mut next = 0usize;
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = Spec::default();
        while let Some(&flag) = chars.peek() {
            match flag {
                '-' => spec.minus = true,
                '+' => spec.plus = true,
                ' ' => spec.space = true,
                '0' => spec.zero = true,
                '#' => spec.sharp = true,
                _ => break,
            }
            chars.next();
        }
        let number = |chars: &mut std::iter::Peekable<std::str::Chars>| {
            let mut n: Option<usize> = None;
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                n = Some(n.unwrap_or(0) * 10 + d as usize);
                chars.next();
            }
            n
        };
        spec.width = number(&mut chars);
        if chars.peek() == Some(&'.') {
            chars.next();
            spec.precision = Some(number(&mut chars).unwrap_or(0));
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next) else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        next += 1;
        match format_one(verb, &spec, arg) {
            Some(text) => out.push_str(&text),
            None => out.push_str(&format!("%!{verb}({}={})", arg.type_name(), arg.plain())),
        }
    }
    if next < args.len() {
        let extra: Vec<String> = args[next..]
            .iter()
            .map(|a| format!("{}={}", a.type_name(), a.plain()))
            .collect();
        out.push_str(&format!("%!(EXTRA {})", extra.join(", ")));
    }
    out
}

/// Registers [`sprintf`] on an engine in place of regorus's own.
pub(super) fn install(engine: &mut regorus::Engine) {
    let added = engine.add_extension(
        "sprintf".to_owned(),
        2,
        Box::new(|args: Vec<Value>| -> anyhow::Result<Value> {
            // A format that is not a string, or arguments that are not an array, are a
            // type error in OPA too: undefined without strict built-in errors.
            let format = args
                .first()
                .and_then(|f| f.as_string().ok())
                .map(|s| s.to_string());
            let items = args.get(1).and_then(|a| a.as_array().ok()).cloned();
            match (format, items) {
                (Some(format), Some(items)) => Ok(Value::from(sprintf(&format, &items.to_vec()))),
                _ => Ok(Value::Undefined),
            }
        }),
    );
    // Only fails when an extension of that name exists, which this module alone adds.
    debug_assert!(added.is_ok(), "sprintf installed twice");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(json: &str) -> Vec<Value> {
        match Value::from_json_str(json).unwrap() {
            Value::Array(items) => items.to_vec(),
            _ => unreachable!(),
        }
    }

    /// Expected values from `opa eval` (OPA 1.9.0) for the same calls.
    #[test]
    fn formats_as_go_does_for_opa() {
        for (format, args, want) in [
            ("%v %v", "[1]", "1 %!v(MISSING)"),
            ("%d", "[\"x\"]", "%!d(string=x)"),
            ("%v", "[1, 2]", "1%!(EXTRA int=2)"),
            ("%s", "[1]", "%!s(int=1)"),
            ("%d", "[1.5]", "%!d(float64=1.5)"),
            ("%d items", "[3]", "3 items"),
            ("%v", "[[1, \"a\"]]", "[1, \"a\"]"),
            ("%v", "[{\"a\": 1}]", "{\"a\": 1}"),
            ("%.2f", "[3.14159]", "3.14"),
            ("%x", "[255]", "ff"),
            ("%5d|", "[42]", "   42|"),
            ("%-5d|", "[42]", "42   |"),
            ("%05d", "[-42]", "-0042"),
            ("%v", "[null]", "null"),
            ("%v", "[true]", "true"),
            ("%s and %s", "[\"a\", \"b\"]", "a and b"),
            ("%v%%", "[1]", "1%"),
            ("%v", "[1.5]", "1.5"),
            ("%v", "[1234567.5]", "1.2345675e+06"),
            ("%v", "[0.0001]", "0.0001"),
            ("%v", "[0.00001]", "1e-05"),
            ("%.3s", "[\"abcdef\"]", "abc"),
            ("%q", "[\"a\"]", "\"a\""),
            ("%", "[]", "%!(NOVERB)"),
        ] {
            assert_eq!(
                sprintf(format, &v(args)),
                want,
                "sprintf({format:?}, {args})"
            );
        }
    }
}
