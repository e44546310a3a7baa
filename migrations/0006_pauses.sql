-- Operators stop salve's writes: everywhere (namespace NULL) or in one namespace, until
-- resumed or until a set time. Rows stay after a pause ends, for the audit trail.
CREATE TABLE pauses (
    id          TEXT PRIMARY KEY,
    namespace   TEXT,
    reason      TEXT NOT NULL,
    paused_by   TEXT NOT NULL,
    paused_at   TEXT NOT NULL,
    expires_at  TEXT,
    resumed_by  TEXT,
    resumed_at  TEXT
);
CREATE INDEX pauses_open ON pauses (resumed_at, namespace);

-- A rule in `mode: approve` asks a human before each write: the request (the exact change,
-- the verdict) waits here until it is approved, rejected, or expires. One row per step.
CREATE TABLE approvals (
    remediation_id TEXT NOT NULL REFERENCES remediations (id),
    step           BIGINT NOT NULL,
    plan           TEXT NOT NULL,
    request        TEXT NOT NULL,
    requested_at   TEXT NOT NULL,
    expires_at     TEXT NOT NULL,
    resume_state   TEXT NOT NULL CHECK (resume_state IN ('pending', 'verifying')),
    decision       TEXT CHECK (decision IN ('approved', 'rejected')),
    decided_by     TEXT,
    decided_at     TEXT,
    reason         TEXT,
    PRIMARY KEY (remediation_id, step)
);

-- A remediation can now wait `awaiting_approval`, and end `rejected` (a human said no),
-- `paused` (salve was paused when it would have written), `shadowed` (its rule runs in
-- shadow mode: everything but the write, then a watch of whether the alert resolved on
-- its own) or `silenced` (Alertmanager silenced or inhibited the alert before a step).
-- The allowed states are a CHECK on the column, which neither backend can edit in place
-- portably (as in 0004): the column is renamed aside, a new one with the wider CHECK takes
-- its place, the values move over, and the old column (with its indexes) goes.
DROP INDEX remediations_state;
DROP INDEX remediations_state_time;
DROP INDEX remediations_owner;
ALTER TABLE remediations RENAME COLUMN state TO state_before_0006;
ALTER TABLE remediations ADD COLUMN state TEXT NOT NULL DEFAULT 'pending'
    CHECK (state IN ('pending', 'executing', 'verifying', 'healed', 'escalated',
                     'dry_run', 'denied', 'skipped', 'failed', 'interrupted', 'paused', 'shadowed', 'silenced',
                     'awaiting_approval', 'rejected'));
UPDATE remediations SET state = state_before_0006;
ALTER TABLE remediations DROP COLUMN state_before_0006;
CREATE INDEX remediations_state ON remediations (state);
CREATE INDEX remediations_state_time ON remediations (state, created_at, id);
CREATE INDEX remediations_owner ON remediations (state, owner);
