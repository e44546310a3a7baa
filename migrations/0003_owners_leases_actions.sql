-- Ownership and fencing across replicas, and a ledger of every change.
--
-- A replica is one running salve: an owner id (host name and an id new at every start)
-- with a heartbeat. Recovery settles only work whose owner is dead: its heartbeat
-- expired, or it retired on a clean stop.
CREATE TABLE replicas (
    owner        TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL,
    expires_at   TEXT NOT NULL
);

-- Who drives a remediation now. NULL for remediations written before this migration.
ALTER TABLE remediations ADD COLUMN owner TEXT;
CREATE INDEX remediations_owner ON remediations (state, owner);

-- The workload lock's holder and epoch: the epoch grows each time the lock is taken, so
-- a holder whose lease lapsed (and was taken over) can no longer renew it or write.
ALTER TABLE target_locks ADD COLUMN owner TEXT;
ALTER TABLE target_locks ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;

-- Every real change salve sends (a ladder's step or a revert), reserved in the same
-- transaction that records the intent to write. Rate limits count these rows.
CREATE TABLE actions (
    id             TEXT PRIMARY KEY,
    remediation_id TEXT NOT NULL REFERENCES remediations (id),
    target         TEXT NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('step', 'revert')),
    at             TEXT NOT NULL
);
CREATE INDEX actions_at ON actions (at);
CREATE INDEX actions_target ON actions (target, at);

-- Updated first in every reservation: a row lock in PostgreSQL (the write lock in
-- SQLite) that makes "count, then reserve" atomic across replicas.
CREATE TABLE action_budget (
    id           BIGINT PRIMARY KEY CHECK (id = 1),
    reservations BIGINT NOT NULL
);
INSERT INTO action_budget (id, reservations) VALUES (1, 0);

-- The escalation outbox: each escalation keeps what it says, which notifiers have not
-- accepted it yet (retried with backoff), when its alert in Alertmanager was last
-- refreshed (it is re-posted while the original alert fires) and when it was resolved.
ALTER TABLE escalations ADD COLUMN payload TEXT;
ALTER TABLE escalations ADD COLUMN undelivered TEXT NOT NULL DEFAULT '[]';
ALTER TABLE escalations ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE escalations ADD COLUMN next_attempt_at TEXT;
ALTER TABLE escalations ADD COLUMN refreshed_at TEXT;
ALTER TABLE escalations ADD COLUMN resolved_at TEXT;
CREATE INDEX escalations_open ON escalations (resolved_at, next_attempt_at);
-- A human may mark an escalation handled: the outbox then resolves its alert.
ALTER TABLE escalations ADD COLUMN handled_at TEXT;
ALTER TABLE escalations ADD COLUMN handled_by TEXT;
