//! Is the alert still firing? Three answers, because "I could not tell" is not "no".
//!
//! Two witnesses: Alertmanager's resolved notification for the incident (stored by the
//! webhook), and, when Prometheus is configured, the alert's own expression evaluated now.
//! Prometheus being unreachable, or answering nonsense, is [`AlertSignal::Unknown`]: it
//! must never climb a ladder (as "still firing" would) nor end one (as "resolved" would).

use serde::Serialize;

use super::prometheus::{self, Prometheus};
use crate::alert::{Alert, AlertStatus, Labels};
use crate::rules::NoData;
use crate::store::{Store, StoreError};

/// What the evidence says about the alert right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "detail", rename_all = "snake_case")]
pub enum AlertSignal {
    /// The alert cleared; the text names the witness.
    Resolved(String),
    /// The alert still fires; the text names the witness.
    StillFiring(String),
    /// The evidence could not be had (Prometheus down, no data and the rule says that
    /// proves nothing).
    Unknown(String),
}

impl AlertSignal {
    /// The signal's name, as the record and `/metrics` give it.
    pub fn name(&self) -> &'static str {
        match self {
            AlertSignal::Resolved(_) => "resolved",
            AlertSignal::StillFiring(_) => "still_firing",
            AlertSignal::Unknown(_) => "unknown",
        }
    }
}

/// Judges one Prometheus answer to the alert's expression (pure, for tests).
pub fn judge_series(
    expr: &str,
    answer: Result<Vec<Labels>, String>,
    alert: &Labels,
    no_data: NoData,
) -> AlertSignal {
    match answer {
        Err(e) => AlertSignal::Unknown(e),
        Ok(series) if series.is_empty() => match no_data {
            NoData::Healed => AlertSignal::Resolved(format!(
                "Prometheus: `{expr}` returns no series (the rule reads no data as healed)"
            )),
            NoData::Unknown => AlertSignal::Unknown(format!(
                "Prometheus: `{expr}` returns no series at all, which proves nothing (verify.no_data: unknown)"
            )),
        },
        Ok(series)
            if series
                .iter()
                .any(|s| prometheus::is_alerts_series(s, alert)) =>
        {
            AlertSignal::StillFiring(format!(
                "Prometheus: `{expr}` still returns this alert's series"
            ))
        }
        Ok(_) => AlertSignal::Resolved(format!(
            "Prometheus: `{expr}` returns series, none of them this alert's"
        )),
    }
}

/// Asks both witnesses. Alertmanager's resolved notification wins; without Prometheus
/// (or an expression to ask it), Alertmanager's silence means the alert still fires,
/// since Alertmanager re-sends resolved notifications until they are delivered.
pub async fn alert_signal(
    store: &Store,
    incident_id: &str,
    alert: &Alert,
    prometheus: Option<&dyn Prometheus>,
    no_data: NoData,
) -> Result<AlertSignal, StoreError> {
    if let Some(i) = store.incident(incident_id).await? {
        if i.status == AlertStatus::Resolved {
            return Ok(AlertSignal::Resolved("Alertmanager sent resolved".into()));
        }
    }
    let expr = prometheus::expression_of(&alert.generator_url);
    Ok(match (prometheus, expr) {
        (Some(p), Some(expr)) => {
            let answer = p.series(&expr).await;
            judge_series(&expr, answer, &alert.labels, no_data)
        }
        _ => AlertSignal::StillFiring("Alertmanager has not sent resolved".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn unreachable_prometheus_is_unknown_never_firing_or_resolved() {
        let alert = labels(&[("alertname", "A"), ("deployment", "checkout")]);
        let got = judge_series(
            "x > 1",
            Err("connection refused".into()),
            &alert,
            NoData::Healed,
        );
        assert_eq!(got, AlertSignal::Unknown("connection refused".into()));
    }

    #[test]
    fn no_series_at_all_is_the_rules_choice() {
        let alert = labels(&[("alertname", "A")]);
        assert!(matches!(
            judge_series("x > 1", Ok(vec![]), &alert, NoData::Unknown),
            AlertSignal::Unknown(_)
        ));
        assert!(matches!(
            judge_series("x > 1", Ok(vec![]), &alert, NoData::Healed),
            AlertSignal::Resolved(_)
        ));
    }

    #[test]
    fn the_alerts_own_series_decides() {
        let alert = labels(&[("alertname", "A"), ("deployment", "checkout")]);
        let mine = labels(&[("deployment", "checkout")]);
        let other = labels(&[("deployment", "cart")]);
        assert!(matches!(
            judge_series(
                "x > 1",
                Ok(vec![other.clone(), mine]),
                &alert,
                NoData::Unknown
            ),
            AlertSignal::StillFiring(_)
        ));
        assert!(matches!(
            judge_series("x > 1", Ok(vec![other]), &alert, NoData::Unknown),
            AlertSignal::Resolved(_)
        ));
    }
}
