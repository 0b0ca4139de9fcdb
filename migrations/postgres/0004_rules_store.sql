-- The rule store itself when a database is configured (rules_store = postgres): rule order
-- matters (alert records name a rule by its position), and a version row that every change
-- bumps lets each host's supervisor notice changes made through another host.
ALTER TABLE rules ADD COLUMN IF NOT EXISTS position integer NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS rules_version (
    id      integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    version bigint NOT NULL DEFAULT 0,
    initialized boolean NOT NULL DEFAULT false
);
INSERT INTO rules_version (id) VALUES (1) ON CONFLICT (id) DO NOTHING;
