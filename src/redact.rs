//! What salve must not keep: secrets it reads from the cluster or holds in its own
//! configuration, taken out before anything is stored or logged.
//!
//! The knowledge base is read by auditors and copied into tickets, and logs go to shared
//! pipelines, so neither may hold a credential. Two things carry them into salve's
//! records: the workload salve reads (its annotations, above all
//! `kubectl.kubernetes.io/last-applied-configuration`, which holds whatever was last
//! applied, literal environment values included) and the URLs salve is configured with
//! (an escalation webhook's token in its query string, credentials before the host).
//!
//! The workload part of every policy input passes through [`Redaction::value`]: a key
//! that matches a pattern keeps its place, so a policy can still see that it is there,
//! and its text becomes `<redacted>`. Flags and numbers stay (a `*token*` key such as
//! `automountServiceAccountToken` is a switch, not a secret). An environment-style
//! `{name, value}` pair whose name matches has its value redacted too. Alerts are kept as
//! Alertmanager sent them: they are the evidence, and rules match their labels.

use serde_json::Value;

/// Shown in place of a redacted value.
pub const REDACTED: &str = "<redacted>";

/// The key patterns redacted unless configured otherwise (`--redact-key` adds to them).
pub const DEFAULT_KEYS: [&str; 8] = [
    "*last-applied-configuration",
    "*token*",
    "*password*",
    "*passwd*",
    "*secret*",
    "*credential*",
    "*apikey*",
    "*api?key*",
];

/// Key patterns whose values salve never keeps: globs (`*` any run, `?` one character),
/// matched against the whole key, case-insensitively.
#[derive(Debug, Clone)]
pub struct Redaction {
    patterns: Vec<String>,
}

impl Default for Redaction {
    fn default() -> Redaction {
        Redaction::new(DEFAULT_KEYS.iter().copied())
    }
}

impl Redaction {
    /// Redacts keys matching any of `patterns`.
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Redaction {
        Redaction {
            patterns: patterns.into_iter().map(str::to_lowercase).collect(),
        }
    }

    /// The defaults plus `extra`.
    pub fn with_extra(extra: &[String]) -> Redaction {
        Redaction::new(
            DEFAULT_KEYS
                .iter()
                .copied()
                .chain(extra.iter().map(String::as_str)),
        )
    }

    /// Whether values under `key` are kept out.
    pub fn covers(&self, key: &str) -> bool {
        let key = key.to_lowercase();
        self.patterns
            .iter()
            .any(|p| glob(p.as_bytes(), key.as_bytes()))
    }

    /// Redacts, in place, every value under a covered key (and `{name, value}` pairs
    /// whose name is covered).
    pub fn value(&self, v: &mut Value) {
        match v {
            Value::Object(map) => {
                let named_secret = map
                    .get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| self.covers(n));
                for (key, child) in map.iter_mut() {
                    if self.covers(key) || (named_secret && key == "value") {
                        blank(child);
                    } else {
                        self.value(child);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| self.value(i)),
            _ => {}
        }
    }
}

/// Blanks every text (and so every secret) below `v`; flags, numbers and nulls stay.
fn blank(v: &mut Value) {
    match v {
        Value::String(s) if !s.is_empty() => *s = REDACTED.to_owned(),
        Value::Object(map) => map.values_mut().for_each(blank),
        Value::Array(items) => items.iter_mut().for_each(blank),
        _ => {}
    }
}

/// `*` matches any run, `?` one byte; the whole of `text` must match.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A URL fit for the record and the log: no user or password, and no query string or
/// fragment (where webhook tokens travel), which are replaced by `<redacted>`.
pub fn url(u: &reqwest::Url) -> String {
    let mut shown = u.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    let had_query = shown.query().is_some() || shown.fragment().is_some();
    shown.set_query(None);
    shown.set_fragment(None);
    let mut text = shown.to_string();
    if had_query {
        text.push('?');
        text.push_str(REDACTED);
    }
    text
}

/// Only where a URL leads (scheme, host, port): for a webhook whose path may itself be
/// the secret (chat webhooks put their token there).
pub fn origin(u: &reqwest::Url) -> String {
    let shown = url(u);
    let origin = u.origin().ascii_serialization();
    if shown.trim_end_matches('/') == origin {
        shown
    } else {
        format!("{origin}/{REDACTED}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn globs_match_whole_keys_case_insensitively() {
        let r = Redaction::default();
        for key in [
            "kubectl.kubernetes.io/last-applied-configuration",
            "API_TOKEN",
            "db-password",
            "vault.hashicorp.com/secret-path",
            "x-api-key",
            "ApiKey",
        ] {
            assert!(r.covers(key), "{key}");
        }
        for key in [
            "app",
            "deployment.kubernetes.io/revision",
            "replicas",
            "tok",
        ] {
            assert!(!r.covers(key), "{key}");
        }
        assert!(glob(b"a*b*c", b"axxbyyc"));
        assert!(!glob(b"a*b*c", b"axxbyy"));
        assert!(glob(b"*", b""));
    }

    #[test]
    fn secrets_go_and_the_shape_stays() {
        let mut doc = json!({
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{\"spec\":{\"env\":[{\"name\":\"DB_PASSWORD\",\"value\":\"hunter2\"}]}}",
                "deployment.kubernetes.io/revision": "3",
            },
            "spec": {
                "automountServiceAccountToken": false,
                "env": [
                    {"name": "DB_PASSWORD", "value": "hunter2"},
                    {"name": "LOG_LEVEL", "value": "debug"},
                    {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "api", "key": "token"}}},
                ],
            },
        });
        Redaction::default().value(&mut doc);
        let text = doc.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert_eq!(
            doc["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
            REDACTED
        );
        assert_eq!(doc["annotations"]["deployment.kubernetes.io/revision"], "3");
        assert_eq!(doc["spec"]["automountServiceAccountToken"], false);
        assert_eq!(doc["spec"]["env"][1]["value"], "debug");
        assert_eq!(doc["spec"]["env"][0]["name"], "DB_PASSWORD");
    }

    #[test]
    fn urls_lose_credentials_and_queries() {
        let u: reqwest::Url = "https://bot:pw@chat.example/hooks/abc?token=s3cret#x"
            .parse()
            .unwrap();
        assert_eq!(url(&u), "https://chat.example/hooks/abc?<redacted>");
        assert_eq!(origin(&u), "https://chat.example/<redacted>");
        let plain: reqwest::Url = "http://alertmanager:9093/".parse().unwrap();
        assert_eq!(url(&plain), "http://alertmanager:9093/");
    }
}
