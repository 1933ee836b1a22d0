-- Per-session overrides of the connection limits: JSON {"max_connections"?, "connections_per_second"?}.
ALTER TABLE sessions ADD COLUMN limits TEXT;
