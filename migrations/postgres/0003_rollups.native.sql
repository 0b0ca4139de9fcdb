-- Roll-ups of bars_1m as plain views (computed at query time; filter on `symbol` for speed).
-- 1d buckets are New York trading days.

CREATE OR REPLACE VIEW bars_5m AS
SELECT symbol, date_bin(INTERVAL '5 minutes', bucket, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS bucket,
       (array_agg(open ORDER BY bucket))[1] AS open, max(high) AS high, min(low) AS low,
       (array_agg(close ORDER BY bucket DESC))[1] AS close, sum(volume) AS volume,
       sum(vwap * volume) / NULLIF(sum(volume), 0) AS vwap, sum(trades)::bigint AS trades
FROM bars_1m
GROUP BY symbol, date_bin(INTERVAL '5 minutes', bucket, TIMESTAMPTZ '2000-01-03 00:00:00+00');

CREATE OR REPLACE VIEW bars_15m AS
SELECT symbol, date_bin(INTERVAL '15 minutes', bucket, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS bucket,
       (array_agg(open ORDER BY bucket))[1] AS open, max(high) AS high, min(low) AS low,
       (array_agg(close ORDER BY bucket DESC))[1] AS close, sum(volume) AS volume,
       sum(vwap * volume) / NULLIF(sum(volume), 0) AS vwap, sum(trades)::bigint AS trades
FROM bars_1m
GROUP BY symbol, date_bin(INTERVAL '15 minutes', bucket, TIMESTAMPTZ '2000-01-03 00:00:00+00');

CREATE OR REPLACE VIEW bars_1h AS
SELECT symbol, date_bin(INTERVAL '1 hour', bucket, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS bucket,
       (array_agg(open ORDER BY bucket))[1] AS open, max(high) AS high, min(low) AS low,
       (array_agg(close ORDER BY bucket DESC))[1] AS close, sum(volume) AS volume,
       sum(vwap * volume) / NULLIF(sum(volume), 0) AS vwap, sum(trades)::bigint AS trades
FROM bars_1m
GROUP BY symbol, date_bin(INTERVAL '1 hour', bucket, TIMESTAMPTZ '2000-01-03 00:00:00+00');

CREATE OR REPLACE VIEW bars_1d AS
SELECT symbol, (((bucket AT TIME ZONE 'America/New_York')::date)::timestamp AT TIME ZONE 'America/New_York') AS bucket,
       (array_agg(open ORDER BY bucket))[1] AS open, max(high) AS high, min(low) AS low,
       (array_agg(close ORDER BY bucket DESC))[1] AS close, sum(volume) AS volume,
       sum(vwap * volume) / NULLIF(sum(volume), 0) AS vwap, sum(trades)::bigint AS trades
FROM bars_1m
GROUP BY symbol, (((bucket AT TIME ZONE 'America/New_York')::date)::timestamp AT TIME ZONE 'America/New_York');
