-- Daily bars per New York trading day, the history the reference data of a live day is read
-- from (previous close/high/low, 20-day volume, 52 weeks, the daily timeframe's SMA200...).
-- Rolled up from bars_1m by the storage writer when a day ends (`procs.storage.pg.roll_daily`):
-- open/high/low/close of the regular session (09:30-16:00), volume and trades of the whole
-- day, VWAP of the whole day. One plain table for both flavours: ~2.5 M rows a year at 10,000
-- symbols, read by (symbol, day), needs neither partitions nor a hypertable.

CREATE TABLE IF NOT EXISTS bars_daily (
    symbol text             NOT NULL,
    day    date             NOT NULL,
    open   double precision NOT NULL,
    high   double precision NOT NULL,
    low    double precision NOT NULL,
    close  double precision NOT NULL,
    volume double precision NOT NULL,
    vwap   double precision,
    trades bigint           NOT NULL,
    PRIMARY KEY (symbol, day)
);
CREATE INDEX IF NOT EXISTS bars_daily_day ON bars_daily (day);
