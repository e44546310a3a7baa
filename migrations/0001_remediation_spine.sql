-- salve's knowledge base, first version. Written once for SQLite and PostgreSQL:
-- ids are UUIDv7 text (time-ordered), times are fixed-width UTC RFC 3339 text
-- (so text order is time order), JSON is text, counts are BIGINT.

-- Every webhook call as it arrived: the evidence an auditor starts from.
CREATE TABLE deliveries (
    id               TEXT PRIMARY KEY,
    received_at      TEXT NOT NULL,
    receiver         TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('firing', 'resolved')),
    group_key        TEXT NOT NULL,
    alert_count      BIGINT NOT NULL,
    truncated_alerts BIGINT NOT NULL,
    payload          TEXT NOT NULL
);
CREATE INDEX deliveries_received_at ON deliveries (received_at);

-- One firing of one alert: Alertmanager's fingerprint plus its start time.
-- Re-sends of the same firing land on the same row (the UNIQUE constraint is the
-- de-duplication, for one salve or several sharing a database).
CREATE TABLE incidents (
    id                TEXT PRIMARY KEY,
    fingerprint       TEXT NOT NULL,
    starts_at         TEXT NOT NULL,
    alertname         TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('firing', 'resolved')),
    alert             TEXT NOT NULL,
    first_seen_at     TEXT NOT NULL,
    last_seen_at      TEXT NOT NULL,
    resolved_at       TEXT,
    delivery_count    BIGINT NOT NULL,
    first_delivery_id TEXT NOT NULL REFERENCES deliveries (id),
    decision          TEXT NOT NULL CHECK (decision IN ('undecided', 'no_rule', 'no_target', 'remediation')),
    decision_reason   TEXT NOT NULL,
    UNIQUE (fingerprint, starts_at)
);
CREATE INDEX incidents_undecided ON incidents (decision, status);

-- What salve did about one incident. At most one per incident.
CREATE TABLE remediations (
    id               TEXT PRIMARY KEY,
    incident_id      TEXT NOT NULL UNIQUE REFERENCES incidents (id),
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    acted_at         TEXT,
    alertname        TEXT NOT NULL,
    rule_name        TEXT NOT NULL,
    rule_file        TEXT NOT NULL,
    action           TEXT NOT NULL CHECK (action IN ('scale', 'rollback', 'restart')),
    target_kind      TEXT NOT NULL CHECK (target_kind IN ('Deployment', 'StatefulSet')),
    target_namespace TEXT NOT NULL,
    target_name      TEXT NOT NULL,
    mode             TEXT NOT NULL CHECK (mode IN ('live', 'dry_run', 'offline')),
    state            TEXT NOT NULL CHECK (state IN ('pending', 'executing', 'verifying', 'healed', 'escalated',
                                                    'dry_run', 'denied', 'skipped', 'failed', 'interrupted')),
    steps_taken      BIGINT NOT NULL DEFAULT 0,
    summary          TEXT NOT NULL,
    reasons          TEXT NOT NULL
);
CREATE INDEX remediations_newest ON remediations (created_at, id);
CREATE INDEX remediations_target ON remediations (target_kind, target_namespace, target_name, created_at);
CREATE INDEX remediations_acted ON remediations (acted_at);
CREATE INDEX remediations_state ON remediations (state);

-- A remediation's timeline: rule match, reads, policy input and verdict, API calls, state changes.
CREATE TABLE remediation_events (
    id             TEXT PRIMARY KEY,
    remediation_id TEXT NOT NULL REFERENCES remediations (id),
    seq            BIGINT NOT NULL,
    at             TEXT NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('rule_matched', 'step_started', 'policy_evaluated', 'kube_call',
                                                 'verification', 'revert', 'escalation', 'state_changed')),
    detail         TEXT NOT NULL,
    UNIQUE (remediation_id, seq)
);

-- One remediation at a time per workload. A lease, so a crashed holder does not block forever.
CREATE TABLE target_locks (
    target         TEXT PRIMARY KEY,
    remediation_id TEXT NOT NULL,
    expires_at     TEXT NOT NULL
);

-- One step of a remediation's ladder and how it ended: what learning aggregates.
CREATE TABLE attempts (
    id               TEXT PRIMARY KEY,
    remediation_id   TEXT NOT NULL REFERENCES remediations (id),
    step             BIGINT NOT NULL,
    alertname        TEXT NOT NULL,
    target_kind      TEXT NOT NULL,
    target_namespace TEXT NOT NULL,
    target_name      TEXT NOT NULL,
    action           TEXT NOT NULL CHECK (action IN ('scale', 'rollback', 'restart')),
    step_key         TEXT NOT NULL,
    started_at       TEXT NOT NULL,
    acted_at         TEXT,
    finished_at      TEXT NOT NULL,
    outcome          TEXT NOT NULL CHECK (outcome IN ('healed', 'not_healed', 'rollout_failed',
                         'verification_unavailable', 'denied', 'failed', 'skipped')),
    seconds_to_heal  DOUBLE PRECISION,
    detail           TEXT NOT NULL,
    UNIQUE (remediation_id, step)
);
CREATE INDEX attempts_signature ON attempts (alertname, target_kind, target_namespace, target_name, finished_at);

-- Humans told: at most one escalation per remediation (so per incident).
CREATE TABLE escalations (
    remediation_id TEXT PRIMARY KEY REFERENCES remediations (id),
    created_at     TEXT NOT NULL,
    reason         TEXT NOT NULL,
    delivered      TEXT NOT NULL
);
