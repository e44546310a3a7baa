//! Alertmanager's webhook payload (version 4) and the domain types salve works with.
//!
//! The payload is parsed once, here, into [`Delivery`] and [`Alert`] values that are
//! known to be well formed (a fingerprint, a firing/resolved status, a real start time),
//! so nothing downstream re-checks. Anything that can never be accepted is a
//! [`PayloadError`], which the webhook turns into a 400 with the reason: Alertmanager
//! does not retry 4xx, which is right for a payload that would fail the same way again.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Label or annotation set, ordered so that its JSON form (stored, hashed, shown) is stable.
pub type Labels = BTreeMap<String, String>;

/// Why a webhook body was refused. The message is shown to the sender verbatim.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// The body is not JSON, or its fields have the wrong shape; `path` says where.
    #[error("invalid webhook payload at {path}: {reason}")]
    Shape { path: String, reason: String },
    /// Only version 4 of the webhook format is understood.
    #[error(
        "unsupported webhook payload version {0:?}: salve understands version \"4\" (Alertmanager 0.16 and later)"
    )]
    Version(String),
    /// The body parsed but a value in it cannot be right.
    #[error("invalid webhook payload: {0}")]
    Invalid(String),
}

/// The webhook body exactly as Alertmanager sends it (`version: "4"`).
///
/// Unknown fields are ignored so that a newer Alertmanager adding fields keeps working.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookPayload {
    pub version: String,
    #[serde(default)]
    pub receiver: String,
    pub status: String,
    pub alerts: Vec<WebhookAlert>,
    #[serde(default)]
    pub group_labels: Labels,
    #[serde(default)]
    pub common_labels: Labels,
    #[serde(default)]
    pub common_annotations: Labels,
    #[serde(default, rename = "externalURL")]
    pub external_url: String,
    #[serde(default)]
    pub group_key: String,
    #[serde(default)]
    pub truncated_alerts: u64,
}

/// One alert inside a webhook payload, as sent.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAlert {
    pub status: String,
    #[serde(default)]
    pub labels: Labels,
    #[serde(default)]
    pub annotations: Labels,
    pub starts_at: DateTime<Utc>,
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    pub fingerprint: String,
}

/// Whether Alertmanager considers the alert active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    /// The word Alertmanager and the database use for this status.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "firing" => Some(AlertStatus::Firing),
            "resolved" => Some(AlertStatus::Resolved),
            _ => None,
        }
    }
}

/// Alertmanager's identity of an alert: a hash of its label set.
///
/// The same fingerprint with the same start time is the same *incident*; re-sends
/// (repeat_interval, HA pairs, retries) carry both unchanged, which is how salve
/// recognises them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// Accepts what Alertmanager produces (hex) and refuses what could not be an identity.
    pub fn parse(s: &str) -> Result<Self, PayloadError> {
        let ok = !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric());
        if ok {
            Ok(Fingerprint(s.to_owned()))
        } else {
            Err(PayloadError::Invalid(format!(
                "alert fingerprint {s:?} is not an Alertmanager fingerprint (1-64 alphanumeric characters)"
            )))
        }
    }

    /// The fingerprint as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated alert: what rules match against and what the policy sees as `input.alert`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub fingerprint: Fingerprint,
    pub status: AlertStatus,
    pub labels: Labels,
    pub annotations: Labels,
    pub starts_at: DateTime<Utc>,
    pub ends_at: Option<DateTime<Utc>>,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

impl Alert {
    /// The alert's name, or an empty string for an alert without one.
    pub fn alertname(&self) -> &str {
        self.labels
            .get("alertname")
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// One accepted webhook call: its alerts, plus the envelope kept for the audit trail.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub receiver: String,
    pub status: AlertStatus,
    pub group_key: String,
    pub external_url: String,
    /// Alerts Alertmanager left out of this call because of the receiver's `max_alerts`.
    pub truncated_alerts: u64,
    pub alerts: Vec<Alert>,
    /// The body as received, stored verbatim so an auditor sees exactly what arrived.
    pub raw: String,
}

/// Alertmanager encodes "no end time" as Go's zero time.
fn is_go_zero_time(t: &DateTime<Utc>) -> bool {
    t.timestamp() <= -62_135_596_800
}

impl Delivery {
    /// Parses and validates a webhook body. Nothing is stored unless this succeeds.
    pub fn parse(body: &[u8]) -> Result<Delivery, PayloadError> {
        let raw = std::str::from_utf8(body)
            .map_err(|e| PayloadError::Invalid(format!("body is not UTF-8: {e}")))?;
        let mut de = serde_json::Deserializer::from_str(raw);
        let payload: WebhookPayload =
            serde_path_to_error::deserialize(&mut de).map_err(|e| PayloadError::Shape {
                path: e.path().to_string(),
                reason: e.inner().to_string(),
            })?;
        de.end().map_err(|e| PayloadError::Shape {
            path: ".".into(),
            reason: e.to_string(),
        })?;
        payload.validate(raw.to_owned())
    }
}

impl WebhookPayload {
    fn validate(self, raw: String) -> Result<Delivery, PayloadError> {
        if self.version != "4" {
            return Err(PayloadError::Version(self.version));
        }
        let status = AlertStatus::parse(&self.status).ok_or_else(|| {
            PayloadError::Invalid(format!(
                "status {:?} is neither \"firing\" nor \"resolved\"",
                self.status
            ))
        })?;
        if self.alerts.is_empty() {
            return Err(PayloadError::Invalid("the payload holds no alerts".into()));
        }
        let alerts = self
            .alerts
            .into_iter()
            .enumerate()
            .map(|(i, a)| a.validate().map_err(|e| prefix_index(i, e)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Delivery {
            receiver: self.receiver,
            status,
            group_key: self.group_key,
            external_url: self.external_url,
            truncated_alerts: self.truncated_alerts,
            alerts,
            raw,
        })
    }
}

fn prefix_index(i: usize, e: PayloadError) -> PayloadError {
    match e {
        PayloadError::Invalid(m) => PayloadError::Invalid(format!("alerts[{i}]: {m}")),
        other => other,
    }
}

impl WebhookAlert {
    fn validate(self) -> Result<Alert, PayloadError> {
        let status = AlertStatus::parse(&self.status).ok_or_else(|| {
            PayloadError::Invalid(format!(
                "status {:?} is neither \"firing\" nor \"resolved\"",
                self.status
            ))
        })?;
        let fingerprint = Fingerprint::parse(&self.fingerprint)?;
        if is_go_zero_time(&self.starts_at) {
            return Err(PayloadError::Invalid("startsAt is not set".into()));
        }
        Ok(Alert {
            fingerprint,
            status,
            labels: self.labels,
            annotations: self.annotations,
            starts_at: self.starts_at,
            ends_at: self.ends_at.filter(|t| !is_go_zero_time(t)),
            generator_url: self.generator_url,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRING: &str =
        include_str!("../tests/fixtures/alertmanager/firing-from-prometheus-rule.json");
    const TRUNCATED: &str =
        include_str!("../tests/fixtures/alertmanager/firing-truncated-group.json");
    const RESOLVED: &str =
        include_str!("../tests/fixtures/alertmanager/resolved-truncated-group.json");

    #[test]
    fn parses_a_real_alertmanager_payload() {
        let d = Delivery::parse(FIRING.as_bytes()).unwrap();
        assert_eq!(d.status, AlertStatus::Firing);
        assert_eq!(d.alerts.len(), 1);
        let a = &d.alerts[0];
        assert_eq!(a.alertname(), "HighRequestLatency");
        assert_eq!(a.fingerprint.as_str(), "88913dd4e3cad305");
        assert_eq!(a.ends_at, None, "Go's zero time means no end");
        assert!(a.generator_url.contains("g0.expr="));
    }

    #[test]
    fn keeps_truncation_count_and_resolved_end_times() {
        let d = Delivery::parse(TRUNCATED.as_bytes()).unwrap();
        assert_eq!(d.truncated_alerts, 2);
        assert_eq!(d.alerts.len(), 3);
        let r = Delivery::parse(RESOLVED.as_bytes()).unwrap();
        assert_eq!(r.status, AlertStatus::Resolved);
        assert!(r.alerts.iter().all(|a| a.ends_at.is_some()));
    }

    #[test]
    fn refuses_other_versions_with_a_reason() {
        let body = FIRING.replace("\"version\": \"4\"", "\"version\": \"3\"");
        let err = Delivery::parse(body.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("version \"3\""), "{err}");
    }

    #[test]
    fn says_where_a_field_is_wrong() {
        let body = FIRING.replace(
            "\"startsAt\": \"2026-11-24T15:37:00.558Z\"",
            "\"startsAt\": 12",
        );
        let err = Delivery::parse(body.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("alerts[0].startsAt"), "{err}");
    }

    #[test]
    fn refuses_a_missing_fingerprint_and_truncated_json() {
        let body = FIRING.replace(
            "\"fingerprint\": \"88913dd4e3cad305\"",
            "\"fingerprint\": \"\"",
        );
        assert!(Delivery::parse(body.as_bytes()).is_err());
        assert!(Delivery::parse(&FIRING.as_bytes()[..FIRING.len() / 2]).is_err());
        assert!(
            Delivery::parse(b"{\"version\":\"4\",\"status\":\"firing\",\"alerts\":[]}").is_err()
        );
    }
}
