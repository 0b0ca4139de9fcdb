-- Analytics tables. Inserts carry a de-duplication token (spool epoch + frame seq), kept for
-- the last `non_replicated_deduplication_window` inserts, so a retried batch is dropped;
-- ReplacingMergeTree also collapses a bar or alert written twice (query with FINAL for exact
-- counts before the background merge).

CREATE TABLE IF NOT EXISTS bars_1m (
    day    UInt32,
    symbol LowCardinality(String),
    minute DateTime64(3, 'UTC'),
    open   Float64,
    high   Float64,
    low    Float64,
    close  Float64,
    volume Float64,
    vwap   Float64,
    trades UInt32
) ENGINE = ReplacingMergeTree
PARTITION BY day
ORDER BY (symbol, minute)
SETTINGS non_replicated_deduplication_window = 10000;

-- Trades may repeat exactly (same time, price and size), so no replacing engine: exactly-once
-- comes from the spool (each trade in one frame) and the insert token.
CREATE TABLE IF NOT EXISTS trades (
    day    UInt32,
    symbol LowCardinality(String),
    ts     DateTime64(9, 'UTC'),
    price  Float64,
    size   Float64,
    flags  UInt32
) ENGINE = MergeTree
PARTITION BY day
ORDER BY (symbol, ts)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS alerts (
    stream_id     String,
    event_ts      DateTime64(6, 'UTC'),
    scan_ts       DateTime64(6, 'UTC'),
    day           UInt32,
    rule          LowCardinality(String),
    rule_name     String,
    symbol        LowCardinality(String),
    kind          LowCardinality(String),
    severity      LowCardinality(String),
    host          LowCardinality(String),
    worker        UInt16,
    generation    UInt32,
    seq           Int64,
    metric_values String
) ENGINE = ReplacingMergeTree
PARTITION BY intDiv(day, 100)
ORDER BY (rule, symbol, event_ts, stream_id);
