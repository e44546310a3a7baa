//! Telling humans: escalations through Alertmanager (and optionally a JSON webhook).
//!
//! When salve cannot heal something (the ladder ran out, a change made things worse,
//! policy denied every step, an action failed) it posts an alert of its own,
//! `SalveRemediationFailed`, to Alertmanager's API with the original alert's labels,
//! so the team's existing routing pages the right person, with a link to the audit
//! record. The engine makes sure this happens once per incident.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::Url;
use serde::Serialize;
use serde_json::json;

use crate::alert::Alert;
use crate::cluster::TargetRef;

/// The alertname salve's escalations carry.
pub const ESCALATION_ALERTNAME: &str = "SalveRemediationFailed";

/// What humans are told (stored in the escalation outbox, so it is also read back).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Escalation {
    pub remediation_id: String,
    pub incident_id: String,
    pub rule: String,
    pub target: TargetRef,
    pub reason: String,
    pub summary: String,
    pub alert: Alert,
    pub audit_url: String,
}

/// A channel to humans.
#[async_trait]
pub trait Notifier: Send + Sync {
    /// A short name for the audit trail (and the outbox's bookkeeping: unique per channel).
    fn name(&self) -> String;
    /// Whether the channel holds the escalation as a live alert that must be re-posted
    /// while it lasts and resolved at the end (Alertmanager), rather than taking one
    /// message (a webhook).
    fn keeps_alert(&self) -> bool {
        false
    }
    /// Delivers the escalation, valid until `ends_at` (now: resolved); the error says why not.
    async fn notify(&self, e: &Escalation, ends_at: DateTime<Utc>) -> Result<(), String>;
}

/// Posts `SalveRemediationFailed` to Alertmanager's `/api/v2/alerts`.
pub struct AlertmanagerNotifier {
    base: Url,
    client: reqwest::Client,
}

impl AlertmanagerNotifier {
    /// `base` is Alertmanager's URL, e.g. `http://alertmanager:9093`.
    pub fn new(base: Url, client: reqwest::Client) -> AlertmanagerNotifier {
        AlertmanagerNotifier { base, client }
    }
}

/// The alert Alertmanager receives for an escalation. Like Prometheus, salve sends it
/// with an `endsAt` a few minutes ahead and re-sends it while it lasts, so a salve that
/// died cannot leave it firing forever; `ends_at` in the past resolves it.
pub fn escalation_alert(e: &Escalation, ends_at: DateTime<Utc>) -> serde_json::Value {
    let mut labels = e.alert.labels.clone();
    labels.insert("original_alertname".into(), e.alert.alertname().to_owned());
    labels.insert("alertname".into(), ESCALATION_ALERTNAME.into());
    labels.insert("salve_remediation".into(), e.remediation_id.clone());
    labels.insert("salve_rule".into(), e.rule.clone());
    let now = Utc::now();
    json!([{
        "labels": labels,
        "annotations": {
            "summary": format!("salve could not heal {}: {}", e.target, e.reason),
            "description": e.summary,
            "salve_audit_url": e.audit_url,
        },
        "startsAt": now.min(ends_at).to_rfc3339(),
        "endsAt": ends_at.to_rfc3339(),
        "generatorURL": e.audit_url,
    }])
}

#[async_trait]
impl Notifier for AlertmanagerNotifier {
    fn name(&self) -> String {
        format!("alertmanager {}", crate::redact::url(&self.base))
    }

    fn keeps_alert(&self) -> bool {
        true
    }

    async fn notify(&self, e: &Escalation, ends_at: DateTime<Utc>) -> Result<(), String> {
        let url = self.base.join("api/v2/alerts").map_err(|e| e.to_string())?;
        let resp = self
            .client
            .post(url)
            .json(&escalation_alert(e, ends_at))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            // reqwest names the URL in its errors; the record and the log must not.
            .map_err(|e| e.without_url().to_string())?;
        match resp.status() {
            s if s.is_success() => Ok(()),
            s => Err(format!(
                "Alertmanager answered {s}: {}",
                resp.text().await.unwrap_or_default()
            )),
        }
    }
}

/// Posts the escalation as JSON to any URL (a chat bridge, an incident tool).
pub struct WebhookNotifier {
    url: Url,
    client: reqwest::Client,
}

impl WebhookNotifier {
    /// Posts to `url`.
    pub fn new(url: Url, client: reqwest::Client) -> WebhookNotifier {
        WebhookNotifier { url, client }
    }

    /// Posts any JSON body (an escalation, an approval request); the error never names
    /// the URL (it may carry a token).
    pub async fn post(&self, body: &impl serde::Serialize) -> Result<(), String> {
        let resp = self
            .client
            .post(self.url.clone())
            .json(body)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("webhook answered {}", resp.status()))
        }
    }
}

#[async_trait]
impl Notifier for WebhookNotifier {
    fn name(&self) -> String {
        format!("webhook {}", crate::redact::origin(&self.url))
    }

    async fn notify(&self, e: &Escalation, _ends_at: DateTime<Utc>) -> Result<(), String> {
        self.post(e).await
    }
}
