//! The remediation lifecycle as an explicit state machine.
//!
//! A remediation is what salve does about one incident. Its state is stored as text
//! (with a CHECK constraint listing exactly these names) and only ever moves by an
//! [`Event`] through the one transition table, [`RemediationState::on`]; the store
//! applies each move with a compare-and-set, so two workers (or two replicas) can never
//! both claim one.
//!
//! ```text
//!            ┌──────────── next step ◄──────────┐
//!            ▼                                  │
//! pending ◄─► executing ──► verifying ──► healed      (a refused write goes back)
//!    │            │             ├──────► escalated   (ladder exhausted, made worse, unverifiable)
//!    │            │             └──────► failed      (a later step errored; escalated)
//!    │            ├──────► failed
//!    │            └──────► interrupted   (salve stopped mid-write; never re-sent blindly)
//!    ├──► dry_run   (would have acted: dry-run or offline mode)
//!    ├──► denied    (policy denied every step, or could not be evaluated; escalated)
//!    ├──► skipped   (cooldown, target busy, rate limit, nothing to change, resolved)
//!    ├──► paused    (an operator paused salve; from verifying too: the next write waits)
//!    ├──► shadowed  (a shadow rule: all but the write, then a watch of the alert alone)
//!    ├──► silenced  (Alertmanager silences or inhibits the alert; from verifying too)
//!    ├──► awaiting_approval ──► pending|verifying (approved) | rejected | escalated (expired)
//!    └──► failed    (target missing or forbidden, dry-run rejected; escalated)
//! ```

use std::fmt;

use serde::Serialize;

/// Where a remediation is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RemediationState {
    /// Created for an incident; nothing has been written to the cluster.
    Pending,
    /// A real (non-dry-run) write may have been sent. A crash here is never retried blindly.
    Executing,
    /// A change was accepted; salve is checking that it rolled out and the alert resolved.
    Verifying,
    /// Verified: rolled out and the alert resolved.
    Healed,
    /// Humans were told: the ladder ran out, a change made things worse, or it could not be verified.
    Escalated,
    /// salve would have acted; it recorded what instead (dry-run or offline mode).
    DryRun,
    /// The policy denied the change, or failed to evaluate (fail closed).
    Denied,
    /// Nothing was done on purpose: cooldown, busy target, rate limit, no-op, resolved.
    Skipped,
    /// The change could not be made: missing or forbidden target, rejected by the API.
    Failed,
    /// salve stopped while executing; whether the write landed is for a human to check.
    Interrupted,
    /// An operator paused salve (everywhere, or in the workload's namespace) when it was
    /// about to write: what it would have done is recorded, with who paused it and why.
    Paused,
    /// The rule runs in shadow mode: salve read, judged and dry-ran the change, wrote
    /// nothing, and watched whether the alert resolved on its own.
    Shadowed,
    /// Alertmanager silenced or inhibited the alert before a step: someone (or an
    /// inhibition rule) said "not this one, not now", so salve took no further step.
    Silenced,
    /// A rule in `mode: approve` waits for a human to approve or reject the exact change
    /// (recorded with its verdict); nothing has been written for it.
    AwaitingApproval,
    /// A human rejected the change; nothing was written for it.
    Rejected,
}

impl RemediationState {
    /// Every state, for listings and validation.
    pub const ALL: [RemediationState; 15] = [
        RemediationState::Pending,
        RemediationState::Executing,
        RemediationState::Verifying,
        RemediationState::Healed,
        RemediationState::Escalated,
        RemediationState::DryRun,
        RemediationState::Denied,
        RemediationState::Skipped,
        RemediationState::Failed,
        RemediationState::Interrupted,
        RemediationState::Paused,
        RemediationState::Shadowed,
        RemediationState::Silenced,
        RemediationState::AwaitingApproval,
        RemediationState::Rejected,
    ];

    /// The name stored in the database and shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            RemediationState::Pending => "pending",
            RemediationState::Executing => "executing",
            RemediationState::Verifying => "verifying",
            RemediationState::Healed => "healed",
            RemediationState::Escalated => "escalated",
            RemediationState::DryRun => "dry_run",
            RemediationState::Denied => "denied",
            RemediationState::Skipped => "skipped",
            RemediationState::Failed => "failed",
            RemediationState::Interrupted => "interrupted",
            RemediationState::Paused => "paused",
            RemediationState::Shadowed => "shadowed",
            RemediationState::Silenced => "silenced",
            RemediationState::AwaitingApproval => "awaiting_approval",
            RemediationState::Rejected => "rejected",
        }
    }

    /// Reads a stored name back.
    pub fn parse(s: &str) -> Option<RemediationState> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether the remediation is over.
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            RemediationState::Pending
                | RemediationState::Executing
                | RemediationState::Verifying
                | RemediationState::AwaitingApproval
        )
    }

    /// The lifecycle's one transition table: where `event` takes a remediation in this
    /// state, or `None` when the move is impossible (a bug the store refuses to write).
    /// Every state change goes through here; there is no other list of edges.
    pub fn on(self, event: Event) -> Option<RemediationState> {
        use Event::*;
        use RemediationState::*;
        Some(match (self, event) {
            // A request awaiting approval whose alert resolved (or whose rule is gone)
            // is skipped too: nothing was written for it.
            (Pending | AwaitingApproval, Skip) => Skipped,
            (Pending, Deny) => Denied,
            (Pending, WouldAct) => DryRun,
            (Pending | Verifying, WriteIntent) => Executing,
            (Executing, WriteAccepted) => Verifying,
            // The API server refused the write, so nothing landed: back to before the intent.
            (
                Executing,
                WriteRefused {
                    changed_before: false,
                },
            ) => Pending,
            (
                Executing,
                WriteRefused {
                    changed_before: true,
                },
            ) => Verifying,
            (Verifying, Heal) => Healed,
            // A remediation that ends with something for humans to look at: every step
            // denied, a failed change, an unverifiable one, a ladder that ran out.
            // An approval that expired is escalated too.
            (Pending | Verifying | AwaitingApproval, Escalate) => Escalated,
            (Pending | Executing | Verifying, Fail) => Failed,
            (Executing, Interrupt) => Interrupted,
            // The next write would have been made while salve is paused: it is not made.
            // A write already reserved (`executing`) is past this point.
            (Pending | Verifying, Pause) => Paused,
            (Pending, Shadow) => Shadowed,
            (Pending | Verifying, Silence) => Silenced,
            (Pending | Verifying, AwaitApproval) => AwaitingApproval,
            // Approved: back where the ladder was, to judge the change again on fresh state.
            (
                AwaitingApproval,
                Approve {
                    changed_before: false,
                },
            ) => Pending,
            (
                AwaitingApproval,
                Approve {
                    changed_before: true,
                },
            ) => Verifying,
            (AwaitingApproval, Reject) => Rejected,
            _ => return None,
        })
    }

    /// Whether some event moves this state to `next` (for checks and tests).
    pub fn can_become(self, next: RemediationState) -> bool {
        Event::ALL.into_iter().any(|e| self.on(e) == Some(next))
    }
}

/// What happens to a remediation; [`RemediationState::on`] says where each one leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Nothing to do, on purpose: cooldown, busy workload, budget spent, already as
    /// wanted, resolved before salve acted.
    Skip,
    /// Policy refused every step (or could not be evaluated).
    Deny,
    /// Dry-run or offline: what salve would have done is recorded instead.
    WouldAct,
    /// A real write is about to be sent (committed first, so a crash is never blind).
    WriteIntent,
    /// The API server accepted the write.
    WriteAccepted,
    /// The API server refused the write (409, 422, …): it did not land.
    /// `changed_before`: an earlier step of the ladder did change the workload.
    WriteRefused { changed_before: bool },
    /// Verified: rolled out and the alert resolved (or resolved before the next step).
    Heal,
    /// Ended with humans told.
    Escalate,
    /// The change could not be made.
    Fail,
    /// salve stopped while a write was in flight.
    Interrupt,
    /// An operator paused salve before the next write.
    Pause,
    /// A shadow rule's would-be change was recorded and the alert watched.
    Shadow,
    /// Alertmanager mutes the alert: no further step.
    Silence,
    /// The change waits for a human's approval.
    AwaitApproval,
    /// A human approved it (`changed_before`: an earlier step changed the workload).
    Approve { changed_before: bool },
    /// A human rejected it.
    Reject,
}

impl Event {
    /// Every event, for [`RemediationState::can_become`] and exhaustive tests.
    pub const ALL: [Event; 18] = [
        Event::Skip,
        Event::Deny,
        Event::WouldAct,
        Event::WriteIntent,
        Event::WriteAccepted,
        Event::WriteRefused {
            changed_before: false,
        },
        Event::WriteRefused {
            changed_before: true,
        },
        Event::Heal,
        Event::Escalate,
        Event::Fail,
        Event::Interrupt,
        Event::Pause,
        Event::Shadow,
        Event::Silence,
        Event::AwaitApproval,
        Event::Approve {
            changed_before: false,
        },
        Event::Approve {
            changed_before: true,
        },
        Event::Reject,
    ];
}

impl fmt::Display for RemediationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How salve was allowed to act when it handled a remediation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Server-side dry-run, then the real change.
    Live,
    /// Reads the cluster and sends server-side dry-runs only; never changes anything.
    DryRun,
    /// No Kubernetes configuration: no calls at all, only a record of what it would do.
    Offline,
}

impl Mode {
    /// The name stored in the database and given to policy as `input.mode`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Live => "live",
            Mode::DryRun => "dry_run",
            Mode::Offline => "offline",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RemediationState::*;
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in RemediationState::ALL {
            assert_eq!(RemediationState::parse(s.as_str()), Some(s));
        }
        assert_eq!(RemediationState::parse("applied"), None);
    }

    #[test]
    fn only_a_verified_change_is_healed_and_terminal_states_stay() {
        assert!(Pending.can_become(Executing));
        assert!(
            !Pending.can_become(Verifying),
            "only a sent change is verified"
        );
        assert!(
            !Executing.can_become(Healed),
            "healed only after verification"
        );
        assert!(Verifying.can_become(Executing), "the ladder climbs");
        assert!(
            !Pending.can_become(Interrupted),
            "pending work is resumed, not interrupted"
        );
        assert!(Executing.can_become(Interrupted));
        assert_eq!(
            Executing.on(Event::WriteRefused {
                changed_before: false
            }),
            Some(Pending),
            "a 409 on the real write leaves nothing written"
        );
        assert_eq!(Executing.on(Event::Skip), None, "the 409-then-no-op bug");
        for terminal in RemediationState::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
        {
            for next in RemediationState::ALL {
                assert!(!terminal.can_become(next), "{terminal} -> {next}");
            }
        }
    }
}
