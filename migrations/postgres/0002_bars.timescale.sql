-- 1-minute bars as a TimescaleDB hypertable (daily chunks, compressed by symbol). Retention and
-- compression policies are (re)applied by `scanner migrate` from the settings.

CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE IF NOT EXISTS bars_1m (
    symbol text             NOT NULL,
    bucket timestamptz      NOT NULL,
    open   double precision NOT NULL,
    high   double precision NOT NULL,
    low    double precision NOT NULL,
    close  double precision NOT NULL,
    volume double precision NOT NULL,
    vwap   double precision NOT NULL,
    trades integer          NOT NULL,
    PRIMARY KEY (symbol, bucket)
);

SELECT create_hypertable('bars_1m', 'bucket', chunk_time_interval => INTERVAL '1 day', if_not_exists => TRUE);

ALTER TABLE bars_1m SET (timescaledb.compress, timescaledb.compress_segmentby = 'symbol',
                         timescaledb.compress_orderby = 'bucket DESC');

-- Same entry points as the native flavour, so the writer does not care which one runs:
-- chunks are created on insert, and the retention policy job drops old ones.
CREATE OR REPLACE FUNCTION scanner_ensure_bar_partitions(first_day date, last_day date) RETURNS integer
LANGUAGE sql AS $$ SELECT 0 $$;

CREATE OR REPLACE FUNCTION scanner_drop_bar_partitions(keep_days integer) RETURNS integer
LANGUAGE sql AS $$ SELECT 0 $$;
