-- Decision audit trail, rule usage, and what containers reached in learning mode.

CREATE TABLE decisions (
  -- Assigned by the process (not SQLite) so a connection's close can update its row
  -- even when the insert is still waiting in the same write batch.
  id              INTEGER PRIMARY KEY,
  time            INTEGER NOT NULL,
  container       TEXT,
  session_id      TEXT,
  protocol        TEXT    NOT NULL,
  client_address  TEXT    NOT NULL,
  destination     TEXT    NOT NULL,
  port            INTEGER NOT NULL,
  address         TEXT,              -- the resolved address actually dialled
  decision        TEXT    NOT NULL CHECK (decision IN ('allow', 'deny')),
  reason          TEXT    NOT NULL,
  layer           TEXT,
  rule_id         INTEGER,
  error           TEXT,              -- upstream failure after an allow (dns_error, connection_refused, ...)
  bytes_up        INTEGER,
  bytes_down      INTEGER,
  duration_ms     INTEGER,
  close_reason    TEXT
);
CREATE INDEX decisions_by_time ON decisions (time);
CREATE INDEX decisions_by_container ON decisions (container, id);
CREATE INDEX decisions_by_session ON decisions (session_id, id);

-- Usage counters live beside rules rather than in them so that hot counters never
-- rewrite rule rows, and so history outlives a rule (no foreign key on purpose).
CREATE TABLE rule_usage (
  rule_id       INTEGER PRIMARY KEY,
  hit_count     INTEGER NOT NULL DEFAULT 0,
  last_used_at  INTEGER
);

CREATE TABLE learned (
  container        TEXT    NOT NULL,
  destination      TEXT    NOT NULL,
  port             INTEGER NOT NULL,
  first_seen       INTEGER NOT NULL,
  last_seen        INTEGER NOT NULL,
  count            INTEGER NOT NULL,
  -- What would have happened without learning mode, and the rule that would have decided.
  would_be         TEXT    NOT NULL CHECK (would_be IN ('allow', 'deny')),
  would_be_layer   TEXT,
  would_be_rule_id INTEGER,
  PRIMARY KEY (container, destination, port)
);
