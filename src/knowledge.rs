//! What salve has learnt, for people: per alert and rule, which actions were tried, how
//! often each healed, how long healing took, and how that went day by day. The same
//! attempts `salve stats` counts, summed up for the knowledge page.

use chrono::{DateTime, Duration, Utc};

use crate::store::overview::AttemptFact;

/// One action tried for one alert under one rule.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionRecord {
    /// The step's key (`scale:by=1`, `rollback`): what was done.
    pub step_key: String,
    pub attempts: usize,
    pub healed: usize,
    /// Median seconds from the change to the verified heal, of the attempts that healed.
    pub median_seconds_to_heal: Option<f64>,
    /// Per day of the period, oldest first: (attempts, healed).
    pub daily: Vec<(usize, usize)>,
}

impl ActionRecord {
    /// Healed attempts over all attempts (0 with none).
    pub fn heal_rate(&self) -> f64 {
        if self.attempts == 0 {
            0.0
        } else {
            self.healed as f64 / self.attempts as f64
        }
    }
}

/// What was tried for one alert name under one rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    pub alertname: String,
    pub rule: String,
    pub actions: Vec<ActionRecord>,
}

/// Sums up `facts` over the `days` days that end at `now`: one [`Signature`] per alert
/// name and rule (in that order), its actions best first (heal rate, then attempts).
pub fn summarize(facts: &[AttemptFact], now: DateTime<Utc>, days: usize) -> Vec<Signature> {
    use std::collections::BTreeMap;
    let days = days.max(1);
    let start = now - Duration::days(days as i64);
    // (alert, rule) -> step key -> the action's record and its heal times.
    type Actions<'a> = BTreeMap<&'a str, (ActionRecord, Vec<f64>)>;
    let mut grouped: BTreeMap<(&str, &str), Actions<'_>> = BTreeMap::new();
    for f in facts {
        let (record, heals) = grouped
            .entry((&f.alertname, &f.rule))
            .or_default()
            .entry(&f.step_key)
            .or_insert_with(|| {
                let record = ActionRecord {
                    step_key: f.step_key.clone(),
                    attempts: 0,
                    healed: 0,
                    median_seconds_to_heal: None,
                    daily: vec![(0, 0); days],
                };
                (record, Vec::new())
            });
        let healed = f.outcome == "healed";
        record.attempts += 1;
        if healed {
            record.healed += 1;
            heals.extend(f.seconds_to_heal);
        }
        if let Ok(at) = DateTime::parse_from_rfc3339(&f.finished_at) {
            // The last span ends at `now`; an attempt that ended at that instant is in it.
            let day = (at.with_timezone(&Utc) - start)
                .num_days()
                .min(days as i64 - 1);
            if let Some(slot) = usize::try_from(day)
                .ok()
                .and_then(|d| record.daily.get_mut(d))
            {
                slot.0 += 1;
                slot.1 += usize::from(healed);
            }
        }
    }
    grouped
        .into_iter()
        .map(|((alertname, rule), actions)| {
            let mut actions: Vec<ActionRecord> = actions
                .into_values()
                .map(|(mut record, mut heals)| {
                    record.median_seconds_to_heal = median(&mut heals);
                    record
                })
                .collect();
            actions.sort_by(|x, y| {
                y.heal_rate()
                    .total_cmp(&x.heal_rate())
                    .then(y.attempts.cmp(&x.attempts))
            });
            Signature {
                alertname: alertname.to_owned(),
                rule: rule.to_owned(),
                actions,
            }
        })
        .collect()
}

/// The median of `values` (sorted in place), `None` when empty.
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(alert: &str, rule: &str, key: &str, outcome: &str, secs: f64, at: &str) -> AttemptFact {
        AttemptFact {
            alertname: alert.into(),
            rule: rule.into(),
            step_key: key.into(),
            outcome: outcome.into(),
            seconds_to_heal: (outcome == "healed").then_some(secs),
            finished_at: at.into(),
        }
    }

    #[test]
    fn sums_per_alert_rule_and_action_with_median_and_days() {
        let now = DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z")
            .unwrap()
            .to_utc();
        let facts = [
            fact(
                "Latency",
                "ladder",
                "scale:by=1",
                "healed",
                30.0,
                "2026-11-29T13:00:00Z",
            ),
            fact(
                "Latency",
                "ladder",
                "scale:by=1",
                "not_healed",
                0.0,
                "2026-11-30T11:00:00Z",
            ),
            fact(
                "Latency",
                "ladder",
                "rollback",
                "healed",
                100.0,
                "2026-11-30T10:00:00Z",
            ),
            fact(
                "Latency",
                "ladder",
                "rollback",
                "healed",
                50.0,
                "2026-11-30T11:00:00Z",
            ),
            fact(
                "Latency",
                "ladder",
                "rollback",
                "healed",
                70.0,
                "2026-11-28T13:00:00Z",
            ),
            fact(
                "Crash",
                "rb",
                "rollback",
                "rollout_failed",
                0.0,
                "2026-11-30T11:00:00Z",
            ),
        ];
        let s = summarize(&facts, now, 3);
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].alertname.as_str(), s[0].rule.as_str()),
            ("Crash", "rb")
        );
        let latency = &s[1];
        // Best first: rollback healed 3 of 3.
        assert_eq!(latency.actions[0].step_key, "rollback");
        assert_eq!(
            (latency.actions[0].attempts, latency.actions[0].healed),
            (3, 3)
        );
        assert_eq!(latency.actions[0].median_seconds_to_heal, Some(70.0));
        // Days are the 24-hour spans ending at `now`: 28 Nov 13:00 falls in the second.
        assert_eq!(latency.actions[0].daily, vec![(0, 0), (1, 1), (2, 2)]);
        let scale = &latency.actions[1];
        assert_eq!(scale.heal_rate(), 0.5);
        assert_eq!(scale.daily, vec![(0, 0), (0, 0), (2, 1)]);
        assert_eq!(scale.median_seconds_to_heal, Some(30.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }
}
