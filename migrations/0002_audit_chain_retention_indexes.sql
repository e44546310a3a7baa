-- Tamper evidence: every timeline event carries the hash of the event before it and a
-- hash of its own content, in one chain across all remediations. chain_head is the
-- chain's end; updating it first in every append serialises appends, across replicas too.
-- Events written before this migration have no chain fields; `salve audit verify`
-- counts them as predating the chain.
ALTER TABLE remediation_events ADD COLUMN chain_seq BIGINT;
ALTER TABLE remediation_events ADD COLUMN prev_hash TEXT;
ALTER TABLE remediation_events ADD COLUMN hash TEXT;
CREATE UNIQUE INDEX remediation_events_chain ON remediation_events (chain_seq);
CREATE TABLE chain_head (
    id   BIGINT PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO chain_head (id, seq, hash) VALUES (1, 0, '');

-- Retention: raw payloads may be pruned; each pruned payload's SHA-256 stays, and each
-- pruning run is sealed with a digest over what it removed.
ALTER TABLE deliveries ADD COLUMN payload_sha256 TEXT;
ALTER TABLE deliveries ADD COLUMN pruned_at TEXT;
CREATE TABLE retention_seals (
    id         TEXT PRIMARY KEY,
    sealed_at  TEXT NOT NULL,
    cutoff     TEXT NOT NULL,
    deliveries BIGINT NOT NULL,
    digest     TEXT NOT NULL
);

-- The audit listing's filters, newest first.
CREATE INDEX remediations_namespace ON remediations (target_namespace, created_at, id);
CREATE INDEX remediations_alertname ON remediations (alertname, created_at, id);
CREATE INDEX remediations_rule ON remediations (rule_name, created_at, id);
CREATE INDEX remediations_state_time ON remediations (state, created_at, id);
CREATE INDEX incidents_newest ON incidents (first_seen_at, id);
