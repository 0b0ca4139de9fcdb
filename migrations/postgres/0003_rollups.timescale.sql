-- migrate: no-transaction
-- Roll-ups of bars_1m as TimescaleDB continuous aggregates, refreshed by policy jobs.
-- 1d buckets are New York trading days.

CREATE MATERIALIZED VIEW IF NOT EXISTS bars_5m WITH (timescaledb.continuous) AS
SELECT symbol, time_bucket(INTERVAL '5 minutes', bucket) AS bucket,
       first(open, bucket) AS open, max(high) AS high, min(low) AS low, last(close, bucket) AS close,
       sum(volume) AS volume, sum(vwap * volume) / NULLIF(sum(volume), 0) AS vwap,
       sum(trades)::bigint AS trades
FROM bars_1m
GROUP BY symbol, time_bucket(INTERVAL '5 minutes', bucket)
WITH NO DATA;

SELECT add_continuous_aggregate_policy('bars_5m', start_offset => INTERVAL '3 days',
       end_offset => INTERVAL '5 minutes', schedule_interval => INTERVAL '1 minute', if_not_exists => TRUE);

CREATE MATERIALIZED VIEW IF NOT EXISTS bars_15m WITH (timescaledb.continuous) AS
SELECT symbol, time_bucket(INTERVAL '15 minutes', bucket) AS bucket,
       first(open, bucket) AS open, max(high) AS high, min(low) AS low, last(close, bucket) AS close,
       sum(volume) AS volume, sum(vwap * volume) / NULLIF(sum(volume), 0) AS vwap,
       sum(trades)::bigint AS trades
FROM bars_1m
GROUP BY symbol, time_bucket(INTERVAL '15 minutes', bucket)
WITH NO DATA;

SELECT add_continuous_aggregate_policy('bars_15m', start_offset => INTERVAL '3 days',
       end_offset => INTERVAL '15 minutes', schedule_interval => INTERVAL '5 minutes', if_not_exists => TRUE);

CREATE MATERIALIZED VIEW IF NOT EXISTS bars_1h WITH (timescaledb.continuous) AS
SELECT symbol, time_bucket(INTERVAL '1 hour', bucket) AS bucket,
       first(open, bucket) AS open, max(high) AS high, min(low) AS low, last(close, bucket) AS close,
       sum(volume) AS volume, sum(vwap * volume) / NULLIF(sum(volume), 0) AS vwap,
       sum(trades)::bigint AS trades
FROM bars_1m
GROUP BY symbol, time_bucket(INTERVAL '1 hour', bucket)
WITH NO DATA;

SELECT add_continuous_aggregate_policy('bars_1h', start_offset => INTERVAL '3 days',
       end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '15 minutes', if_not_exists => TRUE);

CREATE MATERIALIZED VIEW IF NOT EXISTS bars_1d WITH (timescaledb.continuous) AS
SELECT symbol, time_bucket(INTERVAL '1 day', bucket, 'America/New_York') AS bucket,
       first(open, bucket) AS open, max(high) AS high, min(low) AS low, last(close, bucket) AS close,
       sum(volume) AS volume, sum(vwap * volume) / NULLIF(sum(volume), 0) AS vwap,
       sum(trades)::bigint AS trades
FROM bars_1m
GROUP BY symbol, time_bucket(INTERVAL '1 day', bucket, 'America/New_York')
WITH NO DATA;

SELECT add_continuous_aggregate_policy('bars_1d', start_offset => INTERVAL '7 days',
       end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '1 hour', if_not_exists => TRUE);
