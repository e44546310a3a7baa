-- `remediations_state (state)` is the first column of `remediations_state_time (state,
-- created_at, id)` and of `remediations_owner (state, owner)`: every query by state is
-- served by those, and each remediation's insert and state change kept a third index for
-- nothing, in the writer that every write of a replica waits for.
DROP INDEX remediations_state;
