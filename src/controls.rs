//! Operators' controls over the robot: the kill switch (pause and resume) and the
//! decision on a change that waits for approval.
//!
//! The CLI (`salve pause`, `salve resume`, `salve pauses`) and the admin API
//! (`POST`/`DELETE /api/v1/pause`) take the same order and check it here, once, so both
//! refuse the same mistakes with the same words and record the same facts: where the
//! pause holds, why, who asked (and through what), and until when.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::store::pauses::{NewPause, ResumeScope};
use crate::store::targets::{Budget, BudgetScope};

/// What an operator asked for, before it is checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PauseOrder {
    /// `None`: every namespace.
    pub namespace: Option<String>,
    pub reason: Option<String>,
    /// How long it holds; `None`: until resumed.
    pub lasting: Option<Duration>,
    /// A person or a ticket.
    pub by: Option<String>,
}

/// Checks an order and makes it a pause from `now`; `via` says where it was asked (the
/// CLI on a host, the API from an address), for the audit trail. The error is a
/// sentence for the operator.
pub fn pause(order: &PauseOrder, via: &str, now: DateTime<Utc>) -> Result<NewPause, String> {
    let namespace = order
        .namespace
        .as_deref()
        .map(checked_namespace)
        .transpose()?;
    let until = match order.lasting {
        None => None,
        Some(d) if d.is_zero() => {
            return Err(
                "a pause must last longer than 0s (leave --for out to pause until resumed)".into(),
            );
        }
        Some(d) => Some(
            chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| now.checked_add_signed(d))
                .ok_or_else(|| {
                    format!("a pause of {} is too long", humantime::format_duration(d))
                })?,
        ),
    };
    let reason = order
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .unwrap_or("no reason given")
        .to_owned();
    Ok(NewPause {
        namespace,
        reason,
        by: who(order.by.as_deref(), via),
        until,
    })
}

/// Why a decision on an approval was not taken, in words for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotDecided {
    /// No such remediation.
    Unknown(String),
    /// Nothing of it waits for a decision, or the request expired.
    NotWaiting(String),
}

/// Approves or rejects the change a remediation waits with; the sentence says what
/// happened. Shared by `salve approve|reject` and the API.
pub async fn decide(
    store: &crate::store::Store,
    id: &str,
    approve: bool,
    by: &str,
    reason: &str,
) -> Result<Result<String, NotDecided>, crate::store::StoreError> {
    use crate::store::approvals::Decided;
    let Some(r) = store.remediation(id).await? else {
        return Ok(Err(NotDecided::Unknown(format!("no remediation {id}"))));
    };
    let verb = if approve { "approved" } else { "rejected" };
    let target = format!("{} {}/{}", r.target.kind, r.target.namespace, r.target.name);
    Ok(
        match store
            .decide_approval(id, approve, by, reason, Utc::now())
            .await?
        {
            Decided::Moved(_) if approve => Ok(format!(
                "Approved by {by}: {}. salve reads the workload and asks policy again before it writes; if either changed, it writes nothing.",
                target
            )),
            Decided::Moved(_) => Ok(format!(
                "Rejected by {by}: remediation {id} ended and nothing was written to {}.",
                target
            )),
            Decided::NothingWaits => Err(NotDecided::NotWaiting(format!(
                "remediation {id} is {} and waits for no approval; nothing was {verb}",
                r.state
            ))),
            Decided::Expired(at) => Err(NotDecided::NotWaiting(format!(
                "the approval request of remediation {id} expired at {at}; nothing was {verb}"
            ))),
        },
    )
}

/// Reads `--budget SCOPE=N/WINDOW[,N/WINDOW…]` (e.g. `target=3/1h,7/1d`): one budget per
/// window. The error names the part that is wrong.
pub fn budgets(spec: &str) -> Result<Vec<Budget>, String> {
    let wrong = |why: &str| format!("--budget {spec:?}: {why} (expected e.g. target=3/1h,7/1d)");
    let (scope, limits) = spec.split_once('=').ok_or_else(|| wrong("no '='"))?;
    let scope = match scope.trim() {
        "global" => BudgetScope::Global,
        "namespace" => BudgetScope::Namespace,
        "target" => BudgetScope::Target,
        other => {
            return Err(wrong(&format!(
                "scope {other:?} is not global, namespace or target"
            )));
        }
    };
    limits
        .split(',')
        .map(|part| {
            let (n, window) = part
                .trim()
                .split_once('/')
                .ok_or_else(|| wrong(&format!("{part:?} is not N/WINDOW")))?;
            let limit: u32 = n
                .trim()
                .parse()
                .map_err(|_| wrong(&format!("{n:?} is not a count")))?;
            let window = humantime::parse_duration(window.trim())
                .ok()
                .filter(|w| !w.is_zero())
                .ok_or_else(|| wrong(&format!("{window:?} is not a window like 1h")))?;
            Ok(Budget {
                scope,
                limit,
                window,
            })
        })
        .collect()
}

/// Which pauses a resume ends: one namespace's, all of them, or (neither asked) the
/// pauses of every namespace.
pub fn resume_scope(namespace: Option<&str>, all: bool) -> Result<ResumeScope, String> {
    match (namespace, all) {
        (Some(_), true) => Err("give either a namespace or --all, not both".into()),
        (Some(ns), false) => Ok(ResumeScope::Namespace(checked_namespace(ns)?)),
        (None, true) => Ok(ResumeScope::All),
        (None, false) => Ok(ResumeScope::Everywhere),
    }
}

/// The name for the audit trail: as given, else "an operator", with where it was asked.
pub fn who(by: Option<&str>, via: &str) -> String {
    let by = by
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .unwrap_or("an operator");
    format!("{by} ({via})")
}

/// A namespace name as Kubernetes allows it (a DNS label), so a typo is refused rather
/// than stored as a pause that holds nothing.
fn checked_namespace(ns: &str) -> Result<String, String> {
    let ok = !ns.is_empty()
        && ns.len() <= 63
        && ns
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !ns.starts_with('-')
        && !ns.ends_with('-');
    if ok {
        Ok(ns.to_owned())
    } else {
        Err(format!(
            "{ns:?} is not a namespace name (lowercase letters, digits and '-', at most 63)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_is_checked_once_for_the_cli_and_the_api() {
        let now = Utc::now();
        let order = PauseOrder {
            namespace: Some("shop".into()),
            reason: Some("  deploy freeze ".into()),
            lasting: Some(Duration::from_secs(7200)),
            by: Some("alice".into()),
        };
        let p = pause(&order, "salve pause on host-1", now).unwrap();
        assert_eq!(p.namespace.as_deref(), Some("shop"));
        assert_eq!(p.reason, "deploy freeze");
        assert_eq!(p.by, "alice (salve pause on host-1)");
        assert_eq!(p.until, Some(now + chrono::Duration::hours(2)));

        let bare = pause(&PauseOrder::default(), "API from 10.0.0.5", now).unwrap();
        assert_eq!((bare.namespace, bare.until), (None, None));
        assert_eq!(bare.reason, "no reason given");
        assert_eq!(bare.by, "an operator (API from 10.0.0.5)");

        let typo = PauseOrder {
            namespace: Some("Shop_1".into()),
            ..PauseOrder::default()
        };
        assert_eq!(
            pause(&typo, "x", now).unwrap_err(),
            "\"Shop_1\" is not a namespace name (lowercase letters, digits and '-', at most 63)"
        );
        let zero = PauseOrder {
            lasting: Some(Duration::ZERO),
            ..PauseOrder::default()
        };
        assert!(
            pause(&zero, "x", now)
                .unwrap_err()
                .contains("longer than 0s")
        );
    }

    #[test]
    fn budgets_are_read_per_window_and_mistakes_are_named() {
        let b = budgets("target=3/1h, 7/1d").unwrap();
        assert_eq!(
            b,
            [
                Budget {
                    scope: BudgetScope::Target,
                    limit: 3,
                    window: Duration::from_secs(3600)
                },
                Budget {
                    scope: BudgetScope::Target,
                    limit: 7,
                    window: Duration::from_secs(86400)
                }
            ]
        );
        assert_eq!(b[1].describe(), "target 7/1day");
        assert_eq!(
            budgets("pod=3/1h").unwrap_err(),
            "--budget \"pod=3/1h\": scope \"pod\" is not global, namespace or target (expected e.g. target=3/1h,7/1d)"
        );
        assert!(
            budgets("target=3")
                .unwrap_err()
                .contains("\"3\" is not N/WINDOW")
        );
        assert!(
            budgets("target=x/1h")
                .unwrap_err()
                .contains("\"x\" is not a count")
        );
        assert!(
            budgets("target=3/0s")
                .unwrap_err()
                .contains("is not a window")
        );
    }

    #[test]
    fn a_resume_names_its_scope() {
        assert_eq!(resume_scope(None, false), Ok(ResumeScope::Everywhere));
        assert_eq!(resume_scope(None, true), Ok(ResumeScope::All));
        assert_eq!(
            resume_scope(Some("shop"), false),
            Ok(ResumeScope::Namespace("shop".into()))
        );
        assert!(resume_scope(Some("shop"), true).is_err());
    }
}
