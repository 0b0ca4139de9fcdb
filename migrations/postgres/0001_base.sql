-- Rules and alert history (both flavours).

CREATE TABLE IF NOT EXISTS rules (
    id         text PRIMARY KEY,
    name       text NOT NULL,
    body       jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row per alert read from the Redis `alerts` stream; the stream entry id is the key, so a
-- batch retried after a crash never duplicates.
CREATE TABLE IF NOT EXISTS alert_history (
    stream_id     text PRIMARY KEY,
    event_ts      timestamptz NOT NULL,
    scan_ts       timestamptz NOT NULL,
    day           integer NOT NULL,
    rule          text NOT NULL,
    rule_name     text NOT NULL,
    symbol        text NOT NULL,
    kind          text NOT NULL,
    severity      text NOT NULL,
    host          text NOT NULL,
    worker        integer NOT NULL,
    generation    integer NOT NULL,
    seq           bigint NOT NULL,
    metric_values jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_history_symbol_ts ON alert_history (symbol, event_ts DESC);
CREATE INDEX IF NOT EXISTS alert_history_rule_ts ON alert_history (rule, event_ts DESC);
CREATE INDEX IF NOT EXISTS alert_history_ts ON alert_history (event_ts);
