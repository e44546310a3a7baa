//! `/ui/knowledge`: what `salve stats` prints, for people. Per alert and rule, each
//! action tried, how often it healed, the median time to heal and the day-by-day trend,
//! each row linking to the remediations behind it.

use std::fmt::Write as _;

use axum::extract::{Query, State};
use axum::response::Html;

use super::charts::{daily_trend, rate_bar};
use super::ui::{PageError, escape, layout};
use super::{ApiState, HttpError};
use crate::knowledge::summarize;

/// The knowledge page's one setting: how many days back (default 30, at most 365).
#[derive(Debug, Default, serde::Deserialize)]
pub struct KnowledgeQuery {
    pub days: Option<String>,
}

/// `GET /ui/knowledge`.
pub async fn knowledge(
    State(state): State<ApiState>,
    Query(q): Query<KnowledgeQuery>,
) -> Result<Html<String>, PageError> {
    let home = state.external_url.path("/ui");
    let days = match q.days.as_deref().map(str::trim).filter(|d| !d.is_empty()) {
        None => 30,
        Some(d) => match d.parse::<usize>() {
            Ok(n) if (1..=365).contains(&n) => n,
            _ => {
                return Err(PageError::at(
                    HttpError::BadRequest(format!(
                        "days={d} is not a number of days from 1 to 365"
                    )),
                    &state.external_url,
                ));
            }
        },
    };
    let now = chrono::Utc::now();
    let since = now - chrono::Duration::days(days as i64);
    let facts = state
        .store
        .attempt_facts(&crate::store::timestamp(since))
        .await
        .map_err(|e| PageError::at(e.into(), &state.external_url))?;
    let signatures = summarize(&facts, now, days);
    let mut body = super::ui::nav(&state);
    let _ = write!(
        body,
        "<form method=get action=\"{}\"><label>days <input name=days value={days}></label><button type=submit>Show</button></form>\
         <p>Every step salve tried and judged in the last {days} days ({} in all), by alert and rule; the best action first. \
         Time to heal runs from salve's change to the verified heal. Each day's column: steps tried (grey), healed (green).</p>",
        escape(&state.external_url.path("/ui/knowledge")),
        facts.len(),
    );
    if signatures.is_empty() {
        body += "<p id=empty>Nothing tried and judged in this period.</p>";
    } else {
        body += "<table id=knowledge><tr><th>Alert</th><th>Rule</th><th>Action tried</th><th>Healed</th><th>Heal rate</th><th>Median time to heal</th><th>Trend</th></tr>";
    }
    for s in &signatures {
        let behind = {
            let mut url = reqwest::Url::parse("http://x/ui").expect("constant URL parses");
            url.query_pairs_mut()
                .append_pair("alertname", &s.alertname)
                .append_pair("rule", &s.rule)
                .append_pair("since", &format!("{days}d"));
            format!("{home}?{}", url.query().unwrap_or_default())
        };
        for (i, a) in s.actions.iter().enumerate() {
            let (alert_cell, rule_cell) = if i == 0 {
                (
                    format!(
                        "<a class=behind href=\"{}\">{}</a>",
                        escape(&behind),
                        escape(&s.alertname)
                    ),
                    escape(&s.rule),
                )
            } else {
                (String::new(), String::new())
            };
            let label = format!("{} healed {} of {} times", a.step_key, a.healed, a.attempts);
            let _ = write!(
                body,
                "<tr class=action><td>{alert_cell}</td><td>{rule_cell}</td><td>{}</td><td class=healed-count>{} of {}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&a.step_key),
                a.healed,
                a.attempts,
                rate_bar(a.heal_rate(), &label),
                a.median_seconds_to_heal.map_or("-".to_owned(), seconds),
                daily_trend(
                    &a.daily,
                    &format!("{}: day by day over {days} days", a.step_key)
                ),
            );
        }
    }
    if !signatures.is_empty() {
        body += "</table>";
    }
    Ok(layout("salve: what worked", &body))
}

/// A duration in whole seconds for people (`45s`, `3m 20s`), as salve's other messages
/// say durations (humantime).
pub fn seconds(s: f64) -> String {
    let whole = std::time::Duration::from_secs(s.round().max(0.0) as u64);
    humantime::format_duration(whole).to_string()
}
