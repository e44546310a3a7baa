//! Renderings of the record for people at a terminal: the `salve history` table.

use std::fmt::Write as _;

use crate::store::{RemediationRecord, TimelineEvent};

fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// A fixed-width table, newest first, with the reasons under each row that has them.
pub fn history_table(items: &[RemediationRecord]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:<11} {:<8} {:<26} {:<36} SUMMARY",
        "TIME (UTC)", "STATE", "MODE", "RULE", "TARGET"
    );
    for r in items {
        let target = format!("{}/{}/{}", r.target.kind, r.target.namespace, r.target.name);
        let _ = writeln!(
            out,
            "{:<20} {:<11} {:<8} {:<26} {:<36} {}",
            r.created_at
                .get(..19)
                .unwrap_or(&r.created_at)
                .replace('T', " "),
            r.state.as_str(),
            r.mode,
            clip(&r.rule, 26),
            clip(&target, 36),
            r.summary
        );
        for reason in &r.reasons {
            let _ = writeln!(out, "{:<20} └ {reason}", "");
        }
        let _ = writeln!(out, "{:<20} id {}", "", r.id);
    }
    if items.is_empty() {
        out.push_str("(no remediations recorded)\n");
    }
    out
}

/// The same rows as CSV, for spreadsheets and scripts.
pub fn history_csv(items: &[RemediationRecord]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record([
        "id",
        "created_at",
        "state",
        "mode",
        "alertname",
        "rule",
        "action",
        "kind",
        "namespace",
        "name",
        "summary",
        "reasons",
    ]);
    for r in items {
        let _ = w.write_record([
            r.id.as_str(),
            &r.created_at,
            r.state.as_str(),
            &r.mode,
            &r.alertname,
            &r.rule,
            &r.action,
            &r.target.kind,
            &r.target.namespace,
            &r.target.name,
            &r.summary,
            &r.reasons.join("; "),
        ]);
    }
    // Writing into memory cannot fail, and csv writes UTF-8.
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

/// A plain listing as a table: each column as wide as its widest cell, the last one
/// unpadded.
pub fn table<const N: usize>(
    header: &[&str; N],
    rows: impl IntoIterator<Item = [String; N]>,
) -> String {
    let rows: Vec<[String; N]> = rows.into_iter().collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = header.map(str::to_owned);
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[i]);
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

/// The same listing as CSV, with the header as the first record.
pub fn csv<const N: usize>(
    header: &[&str; N],
    rows: impl IntoIterator<Item = [String; N]>,
) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(header);
    for row in rows {
        let _ = w.write_record(&row);
    }
    // Writing into memory cannot fail, and csv writes UTF-8.
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

/// One remediation and its timeline, one line per event.
pub fn timeline(r: &RemediationRecord, events: &[TimelineEvent]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "remediation {}", r.id);
    let _ = writeln!(out, "  alert    {}", r.alertname);
    let _ = writeln!(out, "  rule     {} ({})", r.rule, r.rule_file);
    let _ = writeln!(
        out,
        "  target   {}/{}/{}",
        r.target.kind, r.target.namespace, r.target.name
    );
    let _ = writeln!(out, "  state    {} ({} mode)", r.state.as_str(), r.mode);
    let _ = writeln!(out, "  summary  {}", r.summary);
    for reason in &r.reasons {
        let _ = writeln!(out, "  reason   {reason}");
    }
    let _ = writeln!(out, "timeline");
    for e in events {
        let _ = writeln!(
            out,
            "  {}  {:<17} {}",
            e.at.get(..23).unwrap_or(&e.at).replace('T', " "),
            e.kind,
            describe_event(&e.kind, &e.detail)
        );
    }
    out
}

/// The columns of `salve alerts`.
pub const ALERT_COLUMNS: [&str; 8] = [
    "FIRST SEEN (UTC)",
    "ALERT",
    "STATUS",
    "RESOLVED AT",
    "DELIVERIES",
    "DECISION",
    "REMEDIATION",
    "SUMMARY",
];

/// One received alert as a row of `salve alerts`: what it was, whether it still fires,
/// and what salve did about it (the remediation's id and state, or why none).
pub fn alert_row(i: &crate::store::incidents::IncidentView) -> [String; 8] {
    let when = |t: &str| t.get(..19).unwrap_or(t).replace('T', " ");
    let decision = match i.decision.as_str() {
        "remediation" => "remediation".to_owned(),
        _ => format!("{}: {}", i.decision.replace('_', " "), i.decision_reason),
    };
    let remediation = match (&i.remediation_id, &i.remediation_state) {
        (Some(id), Some(state)) => format!("{id} ({state})"),
        (Some(id), None) => id.clone(),
        _ => "-".to_owned(),
    };
    [
        when(&i.first_seen_at),
        i.alertname.clone(),
        i.status.clone(),
        i.resolved_at.as_deref().map_or("-".to_owned(), when),
        i.deliveries.to_string(),
        decision,
        remediation,
        i.alert["annotations"]["summary"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    ]
}

/// One timeline entry in a sentence, for `salve show` and the audit page.
pub fn describe_event(kind: &str, d: &serde_json::Value) -> String {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    match kind {
        "kube_call" => format!(
            "{} {}{} -> {}{}",
            text(&d["verb"]),
            text(&d["path"]),
            if d["dry_run"] == true {
                " (dry run)"
            } else {
                ""
            },
            d["status"],
            d["error"]
                .as_str()
                .filter(|e| !e.is_empty())
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ),
        "policy_evaluated" => {
            let v = &d["verdict"];
            let verdict = if v["allowed"] == true {
                "allowed".to_owned()
            } else {
                format!("denied: {}", words(&v["reasons"]))
            };
            format!(
                "{} -> {verdict}",
                text(&d["input"]["action"]["description"])
            )
        }
        "state_changed" => format!(
            "{} -> {}: {}",
            text(&d["from"]),
            text(&d["to"]),
            text(&d["summary"])
        ),
        "rule_matched" => format!("rule {} matched", text(&d["rule"])),
        "step_started" => format!(
            "step {} of {}: {}",
            d["step"],
            d["of"],
            text(&d["step_key"])
        ),
        "verification" => {
            let outcome = text(&d["outcome"]).replace('_', " ");
            match d["reason"].as_str().filter(|r| !r.is_empty()) {
                Some(reason) => format!("{outcome}: {reason}"),
                None => outcome,
            }
        }
        "escalation" => format!(
            "escalated: {}; {}",
            text(&d["reason"]),
            deliveries(&d["delivered"])
        ),
        _ => d.to_string(),
    }
}

/// A list of strings (a verdict's reasons) as one sentence; anything else as it is.
fn words(v: &serde_json::Value) -> String {
    match v.as_array() {
        Some(items) if items.is_empty() => "(no reason given)".to_owned(),
        Some(items) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
            .collect::<Vec<_>>()
            .join("; "),
        None => v.as_str().map_or_else(|| v.to_string(), str::to_owned),
    }
}

/// An escalation's delivery log in words: who took it, who did not and why.
fn deliveries(log: &serde_json::Value) -> String {
    let Some(rounds) = log.as_array().filter(|r| !r.is_empty()) else {
        return "no notifier is configured, so no one was told".to_owned();
    };
    rounds
        .iter()
        .map(|r| {
            let to = r["to"]
                .as_str()
                .or_else(|| r["notifier"].as_str())
                .unwrap_or("a notifier");
            match (r["ok"].as_bool(), r["error"].as_str()) {
                (Some(true), _) => format!("delivered to {to}"),
                (_, Some(e)) => format!("not delivered to {to} ({e}; retried)"),
                _ => format!("not delivered to {to} (retried)"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What `salve rules report` says of a rule: how many remediations, what policy said,
/// and (for a shadow rule) how often the alert resolved without the change.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RuleReport {
    pub rule: String,
    pub since: String,
    pub remediations: usize,
    /// Shadow runs that got through policy and the dry-run: the changes it would have made.
    pub would_have_acted: usize,
    pub resolved_on_its_own: usize,
    pub still_firing: usize,
    /// Median seconds to resolve, of those that resolved on their own.
    pub median_seconds_to_resolve: Option<f64>,
    pub denied: usize,
    /// Denial reasons, most frequent first.
    pub denial_reasons: Vec<(String, usize)>,
    /// Every state with its count (the shadowed ones included).
    pub states: std::collections::BTreeMap<String, usize>,
}

/// Sums up a rule's remediations.
pub fn rule_report(
    rule: &str,
    since: &str,
    outcomes: &[crate::store::learning::RuleOutcome],
) -> RuleReport {
    let mut states = std::collections::BTreeMap::new();
    let mut reasons: std::collections::BTreeMap<String, usize> = Default::default();
    let mut resolved_after = Vec::new();
    let (mut would, mut still) = (0, 0);
    for o in outcomes {
        *states.entry(o.state.clone()).or_insert(0) += 1;
        if o.state == "denied" {
            for r in &o.reasons {
                *reasons.entry(r.clone()).or_insert(0) += 1;
            }
        }
        if o.state != "shadowed" {
            continue;
        }
        would += 1;
        match o.shadow.as_ref().map(|s| (&s["outcome"], &s["seconds"])) {
            Some((outcome, seconds)) if outcome == "resolved_on_its_own" => {
                resolved_after.push(seconds.as_f64().unwrap_or(0.0));
            }
            _ => still += 1,
        }
    }
    resolved_after.sort_by(f64::total_cmp);
    let median = match resolved_after.len() {
        0 => None,
        n if n % 2 == 1 => Some(resolved_after[n / 2]),
        n => Some((resolved_after[n / 2 - 1] + resolved_after[n / 2]) / 2.0),
    };
    let mut denial_reasons: Vec<(String, usize)> = reasons.into_iter().collect();
    denial_reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    RuleReport {
        rule: rule.to_owned(),
        since: since.to_owned(),
        remediations: outcomes.len(),
        would_have_acted: would,
        resolved_on_its_own: resolved_after.len(),
        still_firing: still,
        median_seconds_to_resolve: median,
        denied: states.get("denied").copied().unwrap_or(0),
        denial_reasons,
        states,
    }
}

impl RuleReport {
    /// The report for a person.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Rule {} since {}: {} remediation(s).",
            self.rule, self.since, self.remediations
        );
        if self.remediations == 0 {
            out.push_str("Nothing to report: no alert matched this rule in that time.\n");
            return out;
        }
        let _ = writeln!(
            out,
            "Would have acted (shadow; policy allowed it and the API server accepted the dry-run): {}.",
            self.would_have_acted
        );
        if self.would_have_acted > 0 {
            let pct = 100.0 * self.resolved_on_its_own as f64 / self.would_have_acted as f64;
            let median = self
                .median_seconds_to_resolve
                .map(|m| format!(", after {m:.1}s (median)"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "The alert resolved on its own, with no change made: {} of {} ({pct:.0}%){median}.",
                self.resolved_on_its_own, self.would_have_acted
            );
            let _ = writeln!(
                out,
                "The alert still fired when the watch ended: {} of {}.",
                self.still_firing, self.would_have_acted
            );
        }
        let _ = writeln!(out, "Denied by policy: {}.", self.denied);
        for (reason, n) in &self.denial_reasons {
            let _ = writeln!(out, "  {n} × {reason}");
        }
        let states: Vec<String> = self
            .states
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        let _ = writeln!(out, "By state: {}.", states.join(", "));
        out
    }
}
