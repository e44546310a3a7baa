//! Asking Alertmanager whether an alert is silenced or inhibited now.
//!
//! An operator who silences an alert (or an inhibition rule that mutes it because a
//! bigger problem is known) has said "not this one, not now". Before each step salve
//! asks Alertmanager's API (`GET /api/v2/alerts`, filtered by the alert's labels) for the
//! alert's state; a `suppressed` alert takes no further step. Each Alertmanager of an HA
//! set is asked in turn until one answers (they gossip silences; any one knows).

use async_trait::async_trait;
use reqwest::Url;
use serde::Serialize;
use serde_json::Value;

use crate::alert::Alert;

/// What Alertmanager says of one alert, as policy sees it in `input.alertmanager`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertmanagerView {
    /// `active`, `suppressed` or `unprocessed` as Alertmanager says; `not_found` when it
    /// holds no alert with these labels (resolved, or not yet received).
    pub state: String,
    #[serde(rename = "silencedBy")]
    pub silenced_by: Vec<String>,
    #[serde(rename = "inhibitedBy")]
    pub inhibited_by: Vec<String>,
    /// The silences named in `silencedBy`, with who made them, why, and until when.
    pub silences: Vec<Silence>,
    /// The Alertmanager that answered.
    pub source: String,
}

/// One silence, as Alertmanager keeps it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Silence {
    pub id: String,
    #[serde(rename = "createdBy")]
    pub created_by: String,
    pub comment: String,
    #[serde(rename = "endsAt")]
    pub ends_at: String,
}

impl AlertmanagerView {
    /// Whether Alertmanager mutes the alert (a silence or an inhibition).
    pub fn suppressed(&self) -> bool {
        self.state == "suppressed"
    }

    /// One sentence for the record: which silence (its id, creator, comment, end) or
    /// which inhibiting alerts.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for id in &self.silenced_by {
            match self.silences.iter().find(|s| &s.id == id) {
                Some(s) => parts.push(format!(
                    "silence {id} by {} until {} ({})",
                    s.created_by, s.ends_at, s.comment
                )),
                None => parts.push(format!("silence {id}")),
            }
        }
        if !self.inhibited_by.is_empty() {
            parts.push(format!(
                "inhibited by the alert(s) {}",
                self.inhibited_by.join(", ")
            ));
        }
        format!(
            "Alertmanager ({}) mutes this alert: {}",
            self.source,
            parts.join("; ")
        )
    }
}

/// The question salve asks before each step.
#[async_trait]
pub trait Suppressions: Send + Sync {
    /// The alert's state in Alertmanager now; `Err` when no Alertmanager answered.
    async fn view(&self, alert: &Alert) -> Result<AlertmanagerView, String>;
}

/// Alertmanager's v2 API, over reqwest, on every Alertmanager of an HA set in turn.
pub struct AlertmanagerApi {
    bases: Vec<Url>,
    client: reqwest::Client,
}

impl AlertmanagerApi {
    /// `bases` are the Alertmanagers' URLs, e.g. `http://alertmanager:9093`.
    pub fn new(bases: Vec<Url>, client: reqwest::Client) -> AlertmanagerApi {
        AlertmanagerApi { bases, client }
    }

    async fn get(&self, url: Url) -> Result<Value, String> {
        let resp = self
            .client
            .get(url)
            // A question before a step, not a long poll: an Alertmanager this slow counts
            // as unavailable, and the rule's `on_alertmanager_unavailable` decides.
            .timeout(std::time::Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("answered {status}"));
        }
        resp.json()
            .await
            .map_err(|e| format!("answered nonsense: {e}"))
    }

    async fn ask(&self, base: &Url, alert: &Alert) -> Result<AlertmanagerView, String> {
        let mut url = base.join("api/v2/alerts").map_err(|e| e.to_string())?;
        {
            let mut q = url.query_pairs_mut();
            for flag in ["active", "silenced", "inhibited", "unprocessed"] {
                q.append_pair(flag, "true");
            }
            for (name, value) in &alert.labels {
                q.append_pair("filter", &format!("{name}=\"{}\"", escaped(value)));
            }
        }
        let alerts = self.get(url).await?;
        let source = crate::redact::url(base);
        let found = alerts.as_array().into_iter().flatten().find(|a| {
            a["fingerprint"].as_str() == Some(&alert.fingerprint.to_string())
                || serde_json::from_value::<crate::alert::Labels>(a["labels"].clone())
                    .ok()
                    .as_ref()
                    == Some(&alert.labels)
        });
        let Some(found) = found else {
            return Ok(AlertmanagerView {
                state: "not_found".into(),
                silenced_by: Vec::new(),
                inhibited_by: Vec::new(),
                silences: Vec::new(),
                source,
            });
        };
        let list = |key: &str| -> Vec<String> {
            found["status"][key]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        };
        let (silenced_by, inhibited_by) = (list("silencedBy"), list("inhibitedBy"));
        let mut silences = Vec::new();
        for id in &silenced_by {
            // Who made it and why are for the record; a silence that cannot be read is
            // still a silence.
            let Ok(url) = base.join(&format!("api/v2/silence/{id}")) else {
                continue;
            };
            if let Ok(s) = self.get(url).await {
                let text = |k: &str| s[k].as_str().unwrap_or_default().to_owned();
                silences.push(Silence {
                    id: id.clone(),
                    created_by: text("createdBy"),
                    comment: text("comment"),
                    ends_at: text("endsAt"),
                });
            }
        }
        Ok(AlertmanagerView {
            state: found["status"]["state"]
                .as_str()
                .unwrap_or("unprocessed")
                .to_owned(),
            silenced_by,
            inhibited_by,
            silences,
            source,
        })
    }
}

/// A label value inside a matcher's double quotes.
fn escaped(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[async_trait]
impl Suppressions for AlertmanagerApi {
    async fn view(&self, alert: &Alert) -> Result<AlertmanagerView, String> {
        let mut errors = Vec::new();
        for base in &self.bases {
            match self.ask(base, alert).await {
                Ok(view) => return Ok(view),
                Err(e) => errors.push(format!("{}: {e}", crate::redact::url(base))),
            }
        }
        Err(format!("no Alertmanager answered ({})", errors.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_names_the_silence_and_the_inhibitors() {
        let view = AlertmanagerView {
            state: "suppressed".into(),
            silenced_by: vec!["s1".into()],
            inhibited_by: vec!["f00d".into()],
            silences: vec![Silence {
                id: "s1".into(),
                created_by: "erin".into(),
                comment: "handled by hand".into(),
                ends_at: "2026-12-01T04:00:00Z".into(),
            }],
            source: "http://am:9093/".into(),
        };
        assert!(view.suppressed());
        assert_eq!(
            view.describe(),
            "Alertmanager (http://am:9093/) mutes this alert: silence s1 by erin until 2026-12-01T04:00:00Z (handled by hand); inhibited by the alert(s) f00d"
        );
        assert_eq!(escaped(r#"a"b\c"#), r#"a\"b\\c"#);
    }
}
