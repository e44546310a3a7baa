//! Renderings of the record for people at a terminal: the `salve history` table.

use std::fmt::Write as _;

use crate::store::RemediationRecord;

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
