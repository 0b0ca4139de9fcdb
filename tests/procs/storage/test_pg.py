"""PostgreSQL storage against a real server: migrations, partitions, idempotent upserts, views."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import date, timedelta

import numpy as np
import psycopg
import pytest
import typer
from typer.testing import CliRunner

from cli.storage import migrate_command
from procs.bench.services import PostgresServer
from procs.storage.pg import PgWriter, migrate, read_day_bars
from scanner.session import MINUTE_NS, session_bounds_ns
from scanner.storage import StorageError
from scanner.storage.rows import BAR_VALUES, SPOOL_BAR_DTYPE


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    srv = PostgresServer.temporary()
    yield srv
    srv.remove()


@pytest.fixture
def url(pg: PostgresServer) -> Iterator[str]:
    """A fresh database per test."""
    name = f"t{time.monotonic_ns()}"
    with psycopg.connect(pg.url, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    yield pg.url.rsplit("/", 1)[0] + f"/{name}"


def bars(day: int, symbols: list[str], minutes: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = len(symbols) * minutes
    r = np.zeros(n, SPOOL_BAR_DTYPE)
    r["symbol"] = np.repeat([s.encode() for s in symbols], minutes)
    r["minute_ns"] = session_bounds_ns(day)["open"] + np.tile(np.arange(minutes), len(symbols)) * MINUTE_NS
    for f in BAR_VALUES:
        r[f] = rng.uniform(1, 100, n)
    r["trades"] = rng.integers(1, 50, n)
    return r


def one(url: str, q: str, *args: object) -> tuple:
    with psycopg.connect(url) as c:
        row = c.execute(q, args or None).fetchone()
        assert row is not None
        return row


def test_migrate_is_versioned_idempotent_and_native_here(url: str) -> None:
    first = migrate(url)
    assert first["flavor"] == "native" and first["applied"] == ["0001_base", "0002_bars", "0003_rollups",
                                                                    "0004_rules_store", "0005_bars_daily"]
    assert migrate(url)["applied"] == []
    assert one(url, "SELECT count(*), min(flavor) FROM schema_migrations") == (5, "native")
    today = date.today()
    for d in (today - timedelta(days=1), today, today + timedelta(days=7)):
        assert one(url, "SELECT to_regclass(%s) IS NOT NULL", f"bars_1m_p{d:%Y%m%d}") == (True,)
    with pytest.raises(StorageError, match="timescaledb extension is not available"):
        migrate(url.rsplit("/", 1)[0] + "/postgres", flavor="timescale")


def test_upsert_is_idempotent_and_creates_partitions_on_demand(url: str) -> None:
    w = PgWriter(url)
    w.open()
    b = bars(20240315, ["AAPL", "MSFT", "X"], 30)
    w.write_bars(b)
    w.write_bars(b)  # a retried batch
    w.write_bars(np.concatenate([b[:10], b[:10]]))  # a batch holding a bar twice
    changed = b[:1].copy()
    changed["close"] = 123.25
    w.write_bars(changed)
    w.close()
    assert one(url, "SELECT count(*) FROM bars_1m") == (90,)
    assert one(url, "SELECT close FROM bars_1m WHERE symbol = 'AAPL' ORDER BY bucket LIMIT 1") == (123.25,)
    assert one(url, "SELECT to_regclass('bars_1m_p20240315') IS NOT NULL") == (True,)
    with psycopg.connect(url) as c:
        got = read_day_bars(c, 20240315)
    want = b.copy()
    want[0]["close"] = 123.25
    order = np.lexsort((want["minute_ns"], want["symbol"]))
    assert np.array_equal(got, want[order])


def test_rollup_views_aggregate_like_numpy(url: str) -> None:
    w = PgWriter(url)
    w.open()
    b = bars(20240315, ["AAPL"], 10, seed=3)
    w.write_bars(b)
    w.close()
    with psycopg.connect(url) as c:
        rows = c.execute("SELECT open, high, low, close, volume, trades FROM bars_5m WHERE symbol = 'AAPL' "
                         "ORDER BY bucket").fetchall()
        day = c.execute("SELECT bucket, volume FROM bars_1d WHERE symbol = 'AAPL'").fetchall()
    for i, row in enumerate(rows):
        g = b[5 * i:5 * i + 5]
        assert row == pytest.approx((g["open"][0], g["high"].max(), g["low"].min(), g["close"][-1],
                                     g["volume"].sum(), g["trades"].sum()))
    assert len(day) == 1 and day[0][1] == pytest.approx(b["volume"].sum())
    assert day[0][0].timestamp() * 1e9 == session_bounds_ns(20240315)["day_start"]


def test_retention_drops_partitions_past_the_window(url: str) -> None:
    migrate(url)
    old = date.today() - timedelta(days=40)
    with psycopg.connect(url) as c:
        c.execute("SELECT scanner_ensure_bar_partitions(%s, %s)", (old, old + timedelta(days=1)))
        c.commit()
    migrate(url, retention_days=30)  # migrate re-applies the retention
    assert one(url, "SELECT to_regclass(%s) IS NULL", f"bars_1m_p{old:%Y%m%d}") == (True,)
    assert one(url, "SELECT to_regclass(%s) IS NOT NULL", f"bars_1m_p{date.today():%Y%m%d}") == (True,)


def test_alerts_are_written_once_and_rules_mirrored(url: str) -> None:
    w = PgWriter(url)
    w.open()
    t = 1_710_509_400.25
    rows = [(f"1710509400250-{i}", t, t + 0.1, 20240315, "gap", "Gap up", "AAPL", "enter", "info", "h1", 0, 1, i,
             '{"gap_pct":4.5}') for i in range(3)]
    w.write_alerts(rows)
    w.write_alerts(rows[1:])  # re-delivered after a crash
    w.sync_rules([{"id": "a", "name": "A", "metric": "price"}, {"id": "b", "metric": "gap_pct"}])
    w.sync_rules([{"id": "b", "metric": "gap_pct", "value": 3}])
    w.close()
    assert one(url, "SELECT count(*), min(metric_values->>'gap_pct') FROM alert_history") == (3, "4.5")
    assert one(url, "SELECT array_agg(id), min(body->>'value') FROM rules") == (["b"], "3")


def test_migrate_command(url: str) -> None:
    app = typer.Typer()
    app.command("migrate")(migrate_command)
    app.command("other")(lambda: None)  # two commands: typer then expects the command name
    r = CliRunner().invoke(app, ["migrate", "--database-url", url])
    assert r.exit_code == 0, r.output
    assert ("postgresql (native): at version 5; applied 0001_base, 0002_bars, 0003_rollups, "
            "0004_rules_store, 0005_bars_daily") in r.output
    r = CliRunner().invoke(app, ["migrate", "--database-url", "postgresql://nobody@127.0.0.1:1/x"])
    assert r.exit_code == 1 and "cannot connect to PostgreSQL" in r.output
