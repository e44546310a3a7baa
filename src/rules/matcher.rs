//! Alertmanager's label matcher syntax, with Alertmanager's own answers.
//!
//! SREs already write matchers for Alertmanager routes, inhibitions and silences;
//! a rule file should read the same and mean the same. This follows Alertmanager's
//! classic parser (`pkg/labels/parse.go`, the one 0.25 uses): a label name, one of
//! `=`, `!=`, `=~`, `!~`, and a value that may be double-quoted with OpenMetrics
//! escapes (`\"`, `\\`, `\n`; any other backslash is literal). A regular expression
//! is fully anchored, as in Alertmanager and PromQL: `=~"crit"` does not match
//! `critical`. A missing label matches as the empty string.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

/// How a matcher compares a label's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

impl MatchOp {
    fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

/// One parsed matcher, e.g. `severity=~"critical|warning"`.
///
/// Deserializes from its text form, so a rule file's bad matcher is reported at its line.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    /// The anchored regex for `=~`/`!~`; compiled once at load.
    regex: Option<Regex>,
}

/// Why a matcher string was refused; the text names the offending matcher.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatcherError {
    #[error("bad matcher format: {0}")]
    Format(String),
    #[error("matcher value contains unescaped double quote: {0}")]
    UnescapedQuote(String),
    #[error("invalid regular expression in matcher {matcher}: {reason}")]
    Regex { matcher: String, reason: String },
}

static MATCHER_RE: LazyLock<Regex> = LazyLock::new(|| {
    // '=~' comes before '=' so the '~' is not taken as part of the value.
    // The pattern is a constant, so compiling it cannot fail.
    Regex::new(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(=~|=|!=|!~)\s*((?s).*?)\s*$")
        .expect("constant matcher pattern compiles")
});

impl Matcher {
    /// Parses one matcher as Alertmanager's `ParseMatcher` does.
    pub fn parse(s: &str) -> Result<Matcher, MatcherError> {
        let caps = MATCHER_RE
            .captures(s)
            .ok_or_else(|| MatcherError::Format(s.to_owned()))?;
        let op = match &caps[2] {
            "=" => MatchOp::Equal,
            "!=" => MatchOp::NotEqual,
            "=~" => MatchOp::Regex,
            _ => MatchOp::NotRegex,
        };
        let value = unquote(&caps[3])?;
        Matcher::new(&caps[1], op, value)
    }

    /// Builds a matcher from its parts, compiling (and anchoring) a regex value.
    pub fn new(name: &str, op: MatchOp, value: String) -> Result<Matcher, MatcherError> {
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(
                Regex::new(&format!("^(?:{value})$")).map_err(|e| MatcherError::Regex {
                    matcher: format!("{name}{}{value:?}", op.as_str()),
                    reason: e.to_string(),
                })?,
            ),
            MatchOp::Equal | MatchOp::NotEqual => None,
        };
        Ok(Matcher {
            name: name.to_owned(),
            op,
            value,
            regex,
        })
    }

    /// Whether a label value (the empty string when the label is absent) satisfies this matcher.
    pub fn matches_value(&self, v: &str) -> bool {
        match (self.op, &self.regex) {
            (MatchOp::Equal, _) => v == self.value,
            (MatchOp::NotEqual, _) => v != self.value,
            (MatchOp::Regex, Some(re)) => re.is_match(v),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(v),
            // `new` always compiles a regex for the regex operators.
            (MatchOp::Regex | MatchOp::NotRegex, None) => false,
        }
    }

    /// Whether a label set satisfies this matcher.
    pub fn matches(&self, labels: &crate::alert::Labels) -> bool {
        self.matches_value(labels.get(&self.name).map(String::as_str).unwrap_or(""))
    }
}

impl TryFrom<String> for Matcher {
    type Error = MatcherError;
    fn try_from(s: String) -> Result<Matcher, MatcherError> {
        Matcher::parse(&s)
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op.as_str(), self.value)
    }
}

/// Removes the optional surrounding quotes and applies OpenMetrics escapes.
fn unquote(raw: &str) -> Result<String, MatcherError> {
    let (body, mut expect_trailing_quote) = match raw.strip_prefix('"') {
        Some(rest) => (rest, true),
        None => (raw, false),
    };
    let mut out = String::with_capacity(body.len());
    let mut escaped = false;
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if escaped {
            escaped = false;
            match c {
                'n' => out.push('\n'),
                '"' | '\\' => out.push(c),
                other => {
                    out.push('\\');
                    out.push(other);
                }
            }
            continue;
        }
        let is_last = chars.peek().is_none();
        match c {
            '\\' if !is_last => escaped = true,
            '\\' => out.push('\\'),
            '"' => {
                if !expect_trailing_quote || i + 1 < body.len() {
                    return Err(MatcherError::UnescapedQuote(raw.to_owned()));
                }
                expect_trailing_quote = false;
            }
            other => out.push(other),
        }
    }
    if expect_trailing_quote {
        return Err(MatcherError::UnescapedQuote(raw.to_owned()));
    }
    Ok(out)
}

/// Splits a `{a="b", c=~"d"}` list the way Alertmanager's `ParseMatchers` does:
/// braces optional, commas inside quotes kept, a trailing comma allowed.
pub fn parse_list(s: &str) -> Result<Vec<Matcher>, MatcherError> {
    let s = s.strip_prefix('{').unwrap_or(s);
    let s = s.strip_suffix('}').unwrap_or(s);
    let mut tokens = Vec::new();
    let mut token = String::new();
    let (mut inside_quotes, mut escaped) = (false, false);
    for c in s.chars() {
        match c {
            ',' if !inside_quotes => {
                tokens.push(std::mem::take(&mut token));
                continue;
            }
            ',' => {}
            '"' if !escaped => inside_quotes = !inside_quotes,
            '"' => escaped = false,
            '\\' => escaped = !escaped,
            _ => escaped = false,
        }
        token.push(c);
    }
    if !token.trim().is_empty() {
        tokens.push(token);
    }
    tokens.iter().map(|t| Matcher::parse(t)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Labels;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn m(s: &str) -> Matcher {
        Matcher::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_the_four_operators_with_and_without_quotes() {
        let cases = [
            (
                "alertname=\"HighRequestLatency\"",
                MatchOp::Equal,
                "HighRequestLatency",
            ),
            ("severity!=info", MatchOp::NotEqual, "info"),
            (
                "severity=~\"critical|warning\"",
                MatchOp::Regex,
                "critical|warning",
            ),
            (" namespace !~ \"kube-.*\" ", MatchOp::NotRegex, "kube-.*"),
            ("foo=", MatchOp::Equal, ""),
            ("foo=\"\"", MatchOp::Equal, ""),
        ];
        for (s, op, value) in cases {
            let got = m(s);
            assert_eq!((got.op, got.value.as_str()), (op, value), "{s}");
        }
    }

    #[test]
    fn applies_openmetrics_escapes_like_alertmanager() {
        assert_eq!(m(r#"a="say \"hi\"""#).value, "say \"hi\"");
        assert_eq!(m(r#"a="back\\slash""#).value, "back\\slash");
        assert_eq!(m(r#"a="line\nbreak""#).value, "line\nbreak");
        // A backslash before any other character stays a literal backslash.
        assert_eq!(m(r#"a="\d+""#).value, "\\d+");
        // A trailing lone backslash is literal too.
        assert_eq!(m(r"a=x\").value, "x\\");
    }

    #[test]
    fn refuses_what_alertmanager_refuses() {
        for bad in [
            "",
            "=value",
            "1abc=x",
            "foo",
            "foo==\"x\"x",
            "a=\"unterminated",
            "a=\"in\"side\"",
            "a=in\"side",
            "a=~\"(\"",
        ] {
            assert!(Matcher::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn regex_is_fully_anchored() {
        let crit = m("severity=~\"crit\"");
        assert!(crit.matches(&labels(&[("severity", "crit")])));
        assert!(!crit.matches(&labels(&[("severity", "critical")])));
        assert!(!crit.matches(&labels(&[("severity", "subcrit")])));
        let alt = m("severity=~\"critical|warning\"");
        assert!(alt.matches(&labels(&[("severity", "warning")])));
        // Without the group, `^critical|warning$` would match "warningX"'s prefix rule wrongly.
        assert!(!alt.matches(&labels(&[("severity", "critical-ish")])));
        assert!(!alt.matches(&labels(&[("severity", "xwarning")])));
        let not = m("namespace!~\"kube-.*\"");
        assert!(!not.matches(&labels(&[("namespace", "kube-system")])));
        assert!(not.matches(&labels(&[("namespace", "shop")])));
    }

    #[test]
    fn a_missing_label_is_the_empty_string() {
        let none = labels(&[]);
        assert!(m("team=\"\"").matches(&none));
        assert!(!m("team!=\"\"").matches(&none));
        assert!(m("team!=\"payments\"").matches(&none));
        assert!(m("team=~\".*\"").matches(&none));
        assert!(!m("team=~\".+\"").matches(&none));
    }

    #[test]
    fn parses_brace_lists_with_commas_in_quotes() {
        let list = parse_list(r#"{foo = "bar", dings != "bums", }"#).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].op, MatchOp::NotEqual);
        let quoted = parse_list(r#"{quote="She said: \"Hi, all!\"", b=~"5.."}"#).unwrap();
        assert_eq!(quoted[0].value, "She said: \"Hi, all!\"");
        assert_eq!(quoted[1].value, "5..");
        assert_eq!(parse_list("foo=bar,dings!=bums").unwrap().len(), 2);
    }
}
