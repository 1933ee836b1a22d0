-- rules_by_layer (001) served one query only, the sweep of expired global rules, yet every
-- session rule paid for an entry in it when inserted and again when deleted. This partial
-- index holds just the rows that sweep looks for: global rules with an expiry.
DROP INDEX rules_by_layer;
CREATE INDEX rules_global_expiry ON rules (expires_at) WHERE layer = 'global' AND expires_at IS NOT NULL;
