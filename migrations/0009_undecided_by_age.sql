-- The sweep and recovery read only undecided firing incidents older than a cutoff (the
-- younger ones are on their way through a replica's work queue). With the first-seen time
-- in the index, a storm's backlog of young ones is not read at each sweep.
DROP INDEX incidents_undecided;
CREATE INDEX incidents_undecided ON incidents (decision, status, first_seen_at);
