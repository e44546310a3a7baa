-- When a replica stopped cleanly. A replica whose heartbeat expired without it died
-- (or lost the database): salve's own alert SalveReplicaHeartbeatLost reads this.
ALTER TABLE replicas ADD COLUMN retired_at TEXT;
