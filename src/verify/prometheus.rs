//! Asking Prometheus whether an alert's own expression still returns its series.
//!
//! Prometheus puts the alerting rule's expression in the alert's `generatorURL`
//! (`…/graph?g0.expr=…`). Evaluating it now through `/api/v1/query` answers "is the
//! condition still true for this alert?" without waiting for Alertmanager's resolved
//! notification (which waits for group_interval).

use async_trait::async_trait;
use reqwest::Url;

use crate::alert::Labels;

/// The one query the verifier needs.
#[async_trait]
pub trait Prometheus: Send + Sync {
    /// The label sets of the series `expr` returns now.
    async fn series(&self, expr: &str) -> Result<Vec<Labels>, String>;
}

/// Prometheus's HTTP API, over reqwest.
pub struct PrometheusHttp {
    base: Url,
    client: reqwest::Client,
}

impl PrometheusHttp {
    /// `base` is Prometheus's external URL, e.g. `http://prometheus:9090`.
    pub fn new(base: Url, client: reqwest::Client) -> PrometheusHttp {
        PrometheusHttp { base, client }
    }
}

#[async_trait]
impl Prometheus for PrometheusHttp {
    async fn series(&self, expr: &str) -> Result<Vec<Labels>, String> {
        let mut url = self.base.join("api/v1/query").map_err(|e| e.to_string())?;
        url.query_pairs_mut().append_pair("query", expr);
        let body: serde_json::Value = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("Prometheus query failed: {e}"))?
            .json()
            .await
            .map_err(|e| format!("Prometheus answered nonsense: {e}"))?;
        if body["status"] != "success" {
            return Err(format!("Prometheus query failed: {}", body["error"]));
        }
        let result = body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Ok(result
            .iter()
            .map(|s| serde_json::from_value(s["metric"].clone()).unwrap_or_default())
            .collect())
    }
}

/// The rule expression Prometheus put in an alert's generator URL.
pub fn expression_of(generator_url: &str) -> Option<String> {
    let url = Url::parse(generator_url).ok()?;
    url.query_pairs()
        .find(|(k, _)| k == "g0.expr")
        .map(|(_, v)| v.into_owned())
        .filter(|e| !e.trim().is_empty())
}

/// Whether a series is this alert's: every label of the series has the alert's value.
/// (An alert's labels are its series' labels plus the rule's own, and `alertname`.)
pub fn is_alerts_series(series: &Labels, alert: &Labels) -> bool {
    series
        .iter()
        .filter(|(k, _)| k.as_str() != "__name__")
        .all(|(k, v)| alert.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_expression_from_a_real_generator_url() {
        let fixture =
            include_str!("../../tests/fixtures/alertmanager/firing-from-prometheus-rule.json");
        let v: serde_json::Value = serde_json::from_str(fixture).unwrap();
        let expr = expression_of(v["alerts"][0]["generatorURL"].as_str().unwrap()).unwrap();
        assert!(
            expr.starts_with("label_replace(label_replace(vector(0.9)"),
            "{expr}"
        );
        assert!(expr.ends_with("> 0.5"), "{expr}");
        assert_eq!(expression_of(""), None);
        assert_eq!(expression_of("http://x/graph?g1.expr=up"), None);
    }

    #[test]
    fn a_series_belongs_to_an_alert_when_its_labels_agree() {
        let l = |p: &[(&str, &str)]| -> Labels {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let alert = l(&[
            ("alertname", "HighRequestLatency"),
            ("namespace", "shop"),
            ("deployment", "checkout"),
            ("severity", "critical"),
        ]);
        assert!(is_alerts_series(
            &l(&[("namespace", "shop"), ("deployment", "checkout")]),
            &alert
        ));
        assert!(is_alerts_series(
            &l(&[("__name__", "latency"), ("namespace", "shop")]),
            &alert
        ));
        assert!(!is_alerts_series(
            &l(&[("namespace", "shop"), ("deployment", "cart")]),
            &alert
        ));
        assert!(!is_alerts_series(&l(&[("pod", "x")]), &alert));
    }
}
