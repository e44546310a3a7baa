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
                format!("denied: {}", v["reasons"])
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
        "verification" => format!("{} ({})", text(&d["outcome"]), d["evidence"]),
        "escalation" => format!(
            "escalated: {} (delivered: {})",
            text(&d["reason"]),
            d["delivered"]
        ),
        _ => d.to_string(),
    }
}
