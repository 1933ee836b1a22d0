-- Sessions, rules and per-container switches. Times are epoch milliseconds.

CREATE TABLE sessions (
  -- Creation order. "The container's most recent session" compares seq, never timestamps,
  -- so two sessions created in the same millisecond are still ordered exactly.
  seq          INTEGER PRIMARY KEY AUTOINCREMENT,
  id           TEXT    NOT NULL UNIQUE,
  container    TEXT    NOT NULL,
  created_at   INTEGER NOT NULL,
  updated_at   INTEGER NOT NULL,
  expires_at   INTEGER NOT NULL,
  ttl_seconds  INTEGER NOT NULL,
  allow_all    INTEGER NOT NULL DEFAULT 0 CHECK (allow_all IN (0, 1)),
  source_ips   TEXT    NOT NULL DEFAULT '[]', -- JSON array of canonical IP strings
  metadata     TEXT,                          -- JSON object supplied by the launcher
  -- The proxy token is never stored: only its SHA-256 (to authenticate) and the nonce it
  -- was derived from (so a re-registering launcher gets the same token back).
  token_hash   TEXT    NOT NULL UNIQUE,
  token_nonce  TEXT    NOT NULL
);
CREATE INDEX sessions_by_container ON sessions (container, seq);
CREATE INDEX sessions_by_expiry ON sessions (expires_at);

CREATE TABLE rules (
  id                  INTEGER PRIMARY KEY AUTOINCREMENT,
  layer               TEXT    NOT NULL CHECK (layer IN ('global', 'session', 'builtin')),
  session_id          TEXT    REFERENCES sessions (id) ON DELETE CASCADE,
  container_pattern   TEXT    NOT NULL DEFAULT '*',
  destination_pattern TEXT    NOT NULL,
  port_pattern        TEXT    NOT NULL DEFAULT '*',
  action              TEXT    NOT NULL CHECK (action IN ('allow', 'deny')),
  expires_at          INTEGER,
  notes               TEXT,
  created_at          INTEGER NOT NULL,
  updated_at          INTEGER NOT NULL,
  CHECK ((layer = 'session') = (session_id IS NOT NULL))
);
CREATE INDEX rules_by_session ON rules (session_id);
CREATE INDEX rules_by_layer ON rules (layer);

CREATE TABLE containers (
  name                 TEXT    PRIMARY KEY,
  learning_enabled     INTEGER NOT NULL DEFAULT 0 CHECK (learning_enabled IN (0, 1)),
  learning_expires_at  INTEGER,
  updated_at           INTEGER NOT NULL
);

-- Built-in loopback rules: the lowest layer, so loopback works unless a rule above denies it.
INSERT INTO rules (layer, container_pattern, destination_pattern, port_pattern, action, notes, created_at, updated_at) VALUES
  ('builtin', '*', '127.0.0.1', '*', 'allow', 'built-in: IPv4 loopback', 0, 0),
  ('builtin', '*', '::1',       '*', 'allow', 'built-in: IPv6 loopback', 0, 0),
  ('builtin', '*', 'localhost', '*', 'allow', 'built-in: localhost',     0, 0);
