-- 1-minute bars, native declarative partitioning: one range partition per UTC day.
-- The writer creates the partitions a batch needs (and the next week's) and drops those older
-- than the retention; `scanner migrate` does both too.

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
) PARTITION BY RANGE (bucket);

CREATE OR REPLACE FUNCTION scanner_ensure_bar_partitions(first_day date, last_day date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    d    date;
    part text;
    made integer := 0;
BEGIN
    -- serialise concurrent writers (one per host) creating the same partition
    PERFORM pg_advisory_xact_lock(hashtext('scanner_bar_partitions'));
    FOR d IN SELECT g::date FROM generate_series(first_day, last_day, interval '1 day') AS g LOOP
        part := 'bars_1m_p' || to_char(d, 'YYYYMMDD');
        IF to_regclass(part) IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF bars_1m FOR VALUES FROM (%L) TO (%L)', part,
                           d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC');
            made := made + 1;
        END IF;
    END LOOP;
    RETURN made;
END $$;

CREATE OR REPLACE FUNCTION scanner_drop_bar_partitions(keep_days integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    r       record;
    dropped integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('scanner_bar_partitions'));
    FOR r IN SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'bars_1m'::regclass AND c.relname ~ '^bars_1m_p[0-9]{8}$'
               AND to_date(substr(c.relname, 10), 'YYYYMMDD') < current_date - keep_days LOOP
        EXECUTE format('DROP TABLE %I', r.relname);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END $$;

SELECT scanner_ensure_bar_partitions(current_date - 1, current_date + 7);
