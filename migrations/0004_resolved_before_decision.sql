-- An incident can now be settled as `resolved_before_decision`: it resolved before salve
-- decided for it, so it is no longer left `undecided` forever.
--
-- The allowed decisions are a CHECK on the column, which neither backend can edit in
-- place portably; the column is renamed aside, a new one takes its place with the wider
-- CHECK, the values move over, and the old column (with its index) goes.
DROP INDEX incidents_undecided;
ALTER TABLE incidents RENAME COLUMN decision TO decision_before_0004;
ALTER TABLE incidents ADD COLUMN decision TEXT NOT NULL DEFAULT 'undecided'
    CHECK (decision IN ('undecided', 'no_rule', 'no_target', 'remediation', 'resolved_before_decision'));
UPDATE incidents SET decision = decision_before_0004;
ALTER TABLE incidents DROP COLUMN decision_before_0004;
CREATE INDEX incidents_undecided ON incidents (decision, status);
-- Incidents stored before this migration that resolved undecided are settled now.
UPDATE incidents SET decision = 'resolved_before_decision',
    decision_reason = 'the alert resolved before salve decided for it'
 WHERE decision = 'undecided' AND status = 'resolved';
