//! Naming a rule's target from the alert's labels: `name: "{{ deployment }}"`.
//!
//! Templates are parsed when the rule file loads, so a typo like `{{ deployment`
//! is a load error with file and line, not a surprise at 3 a.m. Rendering fails,
//! with the label's name, when the alert lacks a label the template needs; the
//! result is then checked as a Kubernetes name by [`crate::cluster::TargetRef`].

use std::fmt;

use crate::alert::Labels;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Label(String),
}

/// A string with `{{ label }}` placeholders, parsed once.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct Template {
    source: String,
    segments: Vec<Segment>,
}

impl Template {
    /// Parses `text`; the error says what is wrong with the placeholder.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut segments = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                segments.push(Segment::Literal(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| format!("template {text:?} opens `{{{{` without closing `}}}}`"))?;
            let label = after[..end].trim();
            let valid = !label.is_empty()
                && label.chars().enumerate().all(|(i, c)| {
                    c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
                });
            if !valid {
                return Err(format!(
                    "template {text:?} refers to {label:?}, which is not a label name"
                ));
            }
            segments.push(Segment::Label(label.to_owned()));
            rest = &after[end + 2..];
        }
        if rest.contains("}}") {
            return Err(format!("template {text:?} has `}}}}` without `{{{{`"));
        }
        if !rest.is_empty() {
            segments.push(Segment::Literal(rest.to_owned()));
        }
        Ok(Template {
            source: text.to_owned(),
            segments,
        })
    }

    /// Fills the placeholders from `labels`; an absent or empty label is an error naming it.
    pub fn render(&self, labels: &Labels) -> Result<String, String> {
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(s) => out.push_str(s),
                Segment::Label(name) => match labels.get(name).filter(|v| !v.is_empty()) {
                    Some(v) => out.push_str(v),
                    None => return Err(format!("the alert has no `{name}` label")),
                },
            }
        }
        Ok(out)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl TryFrom<String> for Template {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Template::parse(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Labels {
        [
            ("namespace", "shop"),
            ("deployment", "checkout"),
            ("empty", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
    }

    #[test]
    fn renders_labels_and_literals() {
        let t = Template::parse("{{ deployment }}-canary").unwrap();
        assert_eq!(t.render(&labels()).unwrap(), "checkout-canary");
        let plain = Template::parse("payments").unwrap();
        assert_eq!(plain.render(&labels()).unwrap(), "payments");
        let two = Template::parse("{{namespace}}/{{ deployment }}").unwrap();
        assert_eq!(two.render(&labels()).unwrap(), "shop/checkout");
    }

    #[test]
    fn names_the_missing_label() {
        let t = Template::parse("{{ statefulset }}").unwrap();
        assert_eq!(
            t.render(&labels()).unwrap_err(),
            "the alert has no `statefulset` label"
        );
        let e = Template::parse("{{ empty }}").unwrap();
        assert!(e.render(&labels()).is_err(), "an empty label names nothing");
    }

    #[test]
    fn refuses_broken_placeholders() {
        for bad in ["{{ deployment", "{{ }}", "{{ 1abc }}", "x }}", "{{ a-b }}"] {
            assert!(Template::parse(bad).is_err(), "{bad:?}");
        }
    }
}
