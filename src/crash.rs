//! Crash points: the named places between "decided" and "terminal" where a crash test
//! stops salve, to check that a restart resumes or records and never repeats a write.
//!
//! In a normal build [`crash_point!`](crate::crash_point) compiles to nothing. Built with
//! the `failpoints` feature (the tests do), a point configured through the `FAILPOINTS`
//! environment variable with the action `return` aborts the process right there, as
//! `kill -9` would: no destructor, no retirement, no lock release.
//! `FAILPOINTS='send.after_write=return' salve serve …` crashes just after the API server
//! accepted a write; `1*off->return` crashes at the second pass instead.

/// Every crash point, in the order one remediation passes them. The crash test runs each.
pub const POINTS: &[&str] = &[
    "decide.remediation_created",
    "drive.lock_taken",
    "step.policy_recorded",
    "send.write_reserved",
    "send.before_write",
    "send.after_write",
    "send.verifying",
    "verify.recorded",
    "ladder.attempt_recorded",
    "finish.before_terminal",
    "escalation.claimed",
];

/// Marks a crash point (see the module documentation). Names must be in [`POINTS`].
#[macro_export]
macro_rules! crash_point {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        $crate::crash::reached($name);
    };
}

/// Aborts the process if the point `name` is configured to (`failpoints` builds only).
#[cfg(feature = "failpoints")]
pub fn reached(name: &'static str) {
    debug_assert!(POINTS.contains(&name), "crash point {name} is not listed");
    let _: Option<()> = fail::eval(name, |_| {
        eprintln!("salve: crash point {name} reached; aborting as a crash would");
        std::process::abort()
    });
}
