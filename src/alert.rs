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
    #[serde(deserialize_with = "strict_time")]
    pub starts_at: DateTime<Utc>,
    #[serde(default, deserialize_with = "strict_optional_time")]
    pub ends_at: Option<DateTime<Utc>>,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    pub fingerprint: String,
}

/// Parses a time as RFC 3339 says it is written, and nothing looser.
///
/// chrono's general parser forgives spaces and missing digits (`2026- 1-24T…` reads as
/// a time), so a malformed stamp would be stored as a different instant than the sender
/// meant. Alertmanager writes `2006-01-02T15:04:05.999999999Z07:00`; this accepts exactly
/// that shape: four-digit year, two-digit fields, `T`, optional fraction, `Z` or `±hh:mm`.
pub fn parse_strict_rfc3339(s: &str) -> Result<DateTime<Utc>, String> {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    let mut ok = digits(0..4)
        && at(4, b'-')
        && digits(5..7)
        && at(7, b'-')
        && digits(8..10)
        && (at(10, b'T') || at(10, b't'))
        && digits(11..13)
        && at(13, b':')
        && digits(14..16)
        && at(16, b':')
        && digits(17..19);
    let mut i = 19;
    if ok && at(i, b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        ok = i > start;
    }
    ok = ok
        && match b.get(i) {
            Some(b'Z' | b'z') => i + 1 == b.len(),
            Some(b'+' | b'-') => {
                i + 6 == b.len() && digits(i + 1..i + 3) && at(i + 3, b':') && digits(i + 4..i + 6)
            }
            _ => false,
        };
    if !ok {
        return Err(format!(
            "{s:?} is not an RFC 3339 time (expected e.g. 2026-01-24T15:37:00.558Z)"
        ));
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{s:?} is not a valid RFC 3339 time: {e}"))
}

fn strict_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let s = String::deserialize(d)?;
    parse_strict_rfc3339(&s).map_err(serde::de::Error::custom)
}

fn strict_optional_time<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<DateTime<Utc>>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) => parse_strict_rfc3339(&s)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// Refuses text the knowledge base cannot hold as it was sent.
///
/// PostgreSQL `text` cannot contain NUL, and SQLite would store it while PostgreSQL
/// fails the whole delivery; refusing it up front gives the same answer on both
/// backends, a 400 naming the field, instead of a 500 that Alertmanager retries forever.
fn storable(field: &str, value: &str) -> Result<(), PayloadError> {
    if value.contains('\0') {
        return Err(PayloadError::Invalid(format!(
            "{field} contains a NUL character, which salve cannot store"
        )));
    }
    Ok(())
}

fn storable_labels(field: &str, labels: &Labels) -> Result<(), PayloadError> {
    for (name, value) in labels {
        storable(&format!("{field} name {name:?}"), name)?;
        storable(&format!("{field}.{name}"), value)?;
    }
    Ok(())
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
        let payload: WebhookPayload = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let named = name_alert_in_path(raw, &path);
            PayloadError::Shape {
                path: format!("{path}{named}"),
                reason: e.inner().to_string(),
            }
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
        storable("receiver", &self.receiver)?;
        storable("groupKey", &self.group_key)?;
        storable("externalURL", &self.external_url)?;
        storable_labels("groupLabels", &self.group_labels)?;
        storable_labels("commonLabels", &self.common_labels)?;
        storable_labels("commonAnnotations", &self.common_annotations)?;
        if i64::try_from(self.truncated_alerts).is_err() {
            return Err(PayloadError::Invalid(format!(
                "truncatedAlerts {} is out of range (at most {})",
                self.truncated_alerts,
                i64::MAX
            )));
        }
        let alerts = self
            .alerts
            .into_iter()
            .enumerate()
            .map(|(i, a)| {
                let name = alert_name(a.labels.get("alertname"), &a.fingerprint);
                a.validate().map_err(|e| prefix_index(i, &name, e))
            })
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

/// How an error names one alert of a group: its alertname and fingerprint, as far as known.
fn alert_name(alertname: Option<&String>, fingerprint: &str) -> String {
    match alertname {
        Some(name) => format!(" (alertname={name:?}, fingerprint={fingerprint:?})"),
        None => format!(" (fingerprint={fingerprint:?})"),
    }
}

fn prefix_index(i: usize, name: &str, e: PayloadError) -> PayloadError {
    match e {
        PayloadError::Invalid(m) => PayloadError::Invalid(format!("alerts[{i}]{name}: {m}")),
        other => other,
    }
}

/// Names the alert a shape error points into (`alerts[3].startsAt`), read from the raw
/// body; only on the error path, so accepted payloads are parsed once.
fn name_alert_in_path(raw: &str, path: &str) -> String {
    let Some(index) = path
        .strip_prefix("alerts[")
        .and_then(|rest| rest.split(']').next())
        .and_then(|i| i.parse::<usize>().ok())
    else {
        return String::new();
    };
    let Ok(body) = serde_json::from_str::<serde_json::Value>(raw) else {
        return String::new();
    };
    let alert = &body["alerts"][index];
    let alertname = alert["labels"]["alertname"].as_str().map(str::to_owned);
    let fingerprint = alert["fingerprint"].as_str().unwrap_or_default();
    alert_name(alertname.as_ref(), fingerprint)
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
        storable_labels("labels", &self.labels)?;
        storable_labels("annotations", &self.annotations)?;
        storable("generatorURL", &self.generator_url)?;
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

    #[test]
    fn times_must_be_strict_rfc3339() {
        for good in [
            "2026-11-24T15:37:00.558Z",
            "2026-11-24T15:37:00Z",
            "2026-11-24T16:37:00.123456789+01:00",
            "0001-01-01T00:00:00Z",
        ] {
            assert!(parse_strict_rfc3339(good).is_ok(), "{good}");
        }
        for bad in [
            "2026- 1-24T15:37:00Z",
            "2026-1-24T15:37:00Z",
            "2026-11-24 15:37:00Z",
            "2026-11-24T15:37:00",
            "2026-11-24T15:37:00.Z",
            "2026-11-24T15:37:00+0100",
            "2026-13-24T15:37:00Z",
            "2026-11-24T15:37:00Z ",
        ] {
            assert!(parse_strict_rfc3339(bad).is_err(), "{bad} was accepted");
        }
        let body = FIRING.replace("2026-11-24T15:37:00.558Z", "2026-11- 4T15:37:00.558Z");
        let err = Delivery::parse(body.as_bytes()).unwrap_err().to_string();
        assert!(
            err.contains("alerts[0].startsAt (alertname=\"HighRequestLatency\""),
            "{err}"
        );
        assert!(err.contains("not an RFC 3339 time"), "{err}");
    }

    #[test]
    fn nul_characters_and_out_of_range_counts_are_refused_by_name() {
        let mut v: serde_json::Value = serde_json::from_str(FIRING).unwrap();
        v["alerts"][0]["labels"]["alertname"] = serde_json::json!("High\u{0}Latency");
        let body = v.to_string();
        let err = Delivery::parse(body.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("labels.alertname contains a NUL"), "{err}");
        assert!(err.contains("alerts[0]"), "{err}");
        let body = FIRING.replace("\"receiver\": \"", "\"receiver\": \"\\u0000");
        let err = Delivery::parse(body.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("receiver contains a NUL"), "{err}");

        let mut v: serde_json::Value = serde_json::from_str(FIRING).unwrap();
        v["truncatedAlerts"] = serde_json::json!(u64::MAX);
        let err = Delivery::parse(v.to_string().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("truncatedAlerts 18446744073709551615 is out of range"),
            "{err}"
        );
        v["truncatedAlerts"] = serde_json::json!(-1);
        assert!(Delivery::parse(v.to_string().as_bytes()).is_err());
    }

    #[test]
    fn a_bad_alert_in_a_group_is_named() {
        let mut v: serde_json::Value = serde_json::from_str(TRUNCATED).unwrap();
        let name = v["alerts"][2]["labels"]["alertname"]
            .as_str()
            .unwrap()
            .to_owned();
        let fp = v["alerts"][2]["fingerprint"].as_str().unwrap().to_owned();
        v["alerts"][2]["startsAt"] = serde_json::json!(12);
        let err = Delivery::parse(v.to_string().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("alerts[2].startsAt"), "{err}");
        assert!(
            err.contains(&format!("alertname={name:?}, fingerprint={fp:?}")),
            "{err}"
        );
    }
}
