"""S3 cold archive against moto_server, ClickHouse via chdb, PostgreSQL; and the startup history."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import numpy as np
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from cli.storage import archive_command
from procs.bench.services import MotoServer, PostgresServer
from procs.storage.ch import ChWriter, client
from procs.storage.history import Progress, _from_archive, _from_postgres, past_days
from procs.storage.pg import PgWriter
from procs.storage.s3 import archive_day, read_archived, restore_day
from scanner.bars import new_history
from scanner.config import Settings, reveal
from scanner.indicators.volume import volume_profile
from scanner.metrics import HIST
from scanner.session import MINUTE_NS, minute_of_day, session_bounds_ns, trading_days
from scanner.storage import StorageError
from scanner.storage.archive import data_key, manifest_key
from scanner.storage.rows import BAR_VALUES, SPOOL_BAR_DTYPE, SPOOL_TRADE_DTYPE, arrow_to_spool_bars

DAYS = [20240311, 20240312, 20240313]  # Mon-Wed; the instance "runs" on Thu 20240314
SYMS = ["AAPL", "MSFT", "X", "ZZZ"]


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    srv = MotoServer()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    srv = PostgresServer.temporary()
    yield srv
    srv.remove()


def day_bars(day: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    minutes = np.arange(0, 390, 7)  # a bar every 7 minutes of the session
    n = len(SYMS) * len(minutes)
    r = np.zeros(n, SPOOL_BAR_DTYPE)
    r["symbol"] = np.repeat([s.encode() for s in SYMS], len(minutes))
    r["minute_ns"] = session_bounds_ns(day)["open"] + np.tile(minutes, len(SYMS)) * MINUTE_NS
    for f in BAR_VALUES:
        r[f] = rng.uniform(1, 1000, n)
    r["trades"] = rng.integers(1, 90, n)
    return r


@pytest.fixture(scope="module")
def stored(pg: PostgresServer, moto: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Three days of bars in PostgreSQL and ClickHouse (plus trades for the first), a bucket."""
    ch_dir = tmp_path_factory.mktemp("ch")
    s = Settings(database_url=pg.url, clickhouse_url=f"chdb://{ch_dir}", s3_bucket="scanner-archive",
                 s3_endpoint_url=moto.url, s3_prefix="t/", warm_history_days=2, data_dir=ch_dir)
    boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1").create_bucket(Bucket=s.s3_bucket)
    pw, cw = PgWriter(pg.url), ChWriter(reveal(s.clickhouse_url) or "")
    pw.open()
    cw.open()
    for i, d in enumerate(DAYS):
        b = day_bars(d, i)
        pw.write_bars(b)
        cw.write_bars(b, f"bars:{d}")
    t = np.zeros(1000, SPOOL_TRADE_DTYPE)
    t["symbol"] = np.resize([b"AAPL", b"X"], 1000)
    t["ts_ns"] = session_bounds_ns(DAYS[0])["open"] + np.arange(1000) * 1_000_000_007
    t["price"], t["size"] = 10.0, 100.0
    cw.write_trades(t, "trades:1")
    pw.close()
    cw.close()
    return s


def test_archive_writes_verified_parquet_and_a_manifest(stored: Settings) -> None:
    s = stored
    m = archive_day(s, DAYS[0])
    assert m is not None and m["date"] == "2024-03-11" and m["source"] == "postgresql"
    files = {f["table"]: f for f in m["files"]}
    assert files["bars"]["rows"] == len(day_bars(DAYS[0], 0)) and files["trades"]["rows"] == 1000
    assert files["bars"]["key"] == data_key("t/", "bars", DAYS[0]) == "t/bars/date=2024-03-11/bars-2024-03-11.parquet"
    s3 = boto3.client("s3", endpoint_url=s.s3_endpoint_url, region_name="us-east-1")
    stored_manifest = json.loads(s3.get_object(Bucket=s.s3_bucket, Key=manifest_key("t/", DAYS[0]))["Body"].read())
    assert stored_manifest["files"] == m["files"]
    head = s3.head_object(Bucket=s.s3_bucket, Key=files["bars"]["key"], ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"].split("-")[0] == files["bars"]["s3_checksum_sha256"]
    table = read_archived(s, DAYS[0], "bars")
    assert table is not None
    got, want = arrow_to_spool_bars(table), day_bars(DAYS[0], 0)
    assert np.array_equal(np.sort(got, order=["symbol", "minute_ns"]), np.sort(want, order=["symbol", "minute_ns"]))
    local = Path(s.data_dir) / "a.parquet"
    s3.download_file(s.s3_bucket, files["bars"]["key"], str(local))
    meta = pq.ParquetFile(local).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    assert archive_day(s, 20240316) is None  # a Saturday: nothing to archive


def test_restore_replaces_the_day_in_clickhouse_exactly_once(stored: Settings) -> None:
    s = stored
    archive_day(s, DAYS[1])
    ch = client(reveal(s.clickhouse_url) or "")
    ch.command(f"ALTER TABLE bars_1m DROP PARTITION {DAYS[1]}")
    ch.close()
    assert restore_day(s, DAYS[1]) == {"bars": len(day_bars(DAYS[1], 1))}
    assert restore_day(s, DAYS[1]) == {"bars": len(day_bars(DAYS[1], 1))}  # twice: still once
    ch = client(reveal(s.clickhouse_url) or "")
    n, total = ch.query(f"SELECT count(), sum(volume) FROM bars_1m WHERE day = {DAYS[1]}").result_rows[0]
    ch.close()
    assert n == len(day_bars(DAYS[1], 1)) and total == pytest.approx(day_bars(DAYS[1], 1)["volume"].sum())
    with pytest.raises(StorageError, match="no archive for 2024-03-20"):
        restore_day(s, 20240320)


def test_corrupted_archive_is_refused(stored: Settings) -> None:
    s = stored
    archive_day(s, DAYS[2])
    s3 = boto3.client("s3", endpoint_url=s.s3_endpoint_url, region_name="us-east-1")
    s3.put_object(Bucket=s.s3_bucket, Key=data_key("t/", "bars", DAYS[2]), Body=b"PAR1 not really")
    with pytest.raises(StorageError, match="does not match its manifest checksum"):
        restore_day(s, DAYS[2])
    archive_day(s, DAYS[2])  # re-archiving repairs it


def test_archive_command(stored: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    app = typer.Typer()
    app.command("archive")(archive_command)
    app.command("other")(lambda: None)
    for k, v in {"DATABASE_URL": reveal(stored.database_url), "CLICKHOUSE_URL": reveal(stored.clickhouse_url),
                 "S3_BUCKET": stored.s3_bucket, "S3_ENDPOINT_URL": stored.s3_endpoint_url, "S3_PREFIX": "t/"}.items():
        monkeypatch.setenv(f"SCANNER_{k}", str(v))
    r = CliRunner().invoke(app, ["archive", "--date", "2024-03-12"])
    assert r.exit_code == 0 and "archived 2024-03-12: bars 224 rows -> s3://scanner-archive/t/bars/date=2024-03-12/" \
        in r.output, r.output
    r = CliRunner().invoke(app, ["archive", "--date", "2024-03-12", "--restore", "--json"])
    assert r.exit_code == 0 and json.loads(r.output.strip().splitlines()[-1])["restored"] == {"bars": 224}
    r = CliRunner().invoke(app, ["archive", "--date", "2024-13-40"])
    assert r.exit_code == 1 and "error:" in r.output


def expected_history(keys: list[str], days: list[int]) -> tuple[set, np.ndarray]:
    b = np.concatenate([day_bars(d, DAYS.index(d)) for d in days])
    rows = np.array([keys.index(s.decode()) for s in b["symbol"]])
    prof = volume_profile(rows, trading_days(b["minute_ns"]), minute_of_day(b["minute_ns"]), b["volume"], len(keys))
    return {(int(r), int(m // MINUTE_NS), float(c)) for r, m, c in zip(rows, b["minute_ns"], b["close"],
                                                                       strict=True)}, prof


@pytest.mark.parametrize("source", ["postgresql", "archive"])
def test_startup_history_loads_the_last_days(stored: Settings, source: str) -> None:
    keys = ["X", "AAPL", "NEW", "MSFT", "ZZZ"]  # this host's table order; NEW has no history
    day = 20240314
    for d in DAYS[1:]:
        archive_day(stored, d)
    if source == "postgresql":
        rows, values, profile, days = _from_postgres(stored, day, session_bounds_ns(day)["open"], keys, 400,
                                                     Progress("t"))
    else:
        rows, values, profile, days = _from_archive(stored.model_copy(update={"database_url": None}), day, keys,
                                                    400, Progress("t"))
    assert days == [20240313, 20240312]  # the 2 most recent days with bars
    want, want_prof = expected_history(keys, days)
    got = {(int(r), int(m), float(c)) for r, m, c in zip(rows, values[HIST["minute"]], values[HIST["close"]],
                                                         strict=True)}
    assert got == want
    assert profile is not None and np.allclose(profile, want_prof, equal_nan=True)
    assert np.isnan(profile[2]).all()
    assert past_days(20240318, 3) == [20240315, 20240314, 20240313]


def test_session_archiver_archives_finished_days(stored: Settings) -> None:
    from procs.storage.s3 import SessionArchiver, has_manifest, s3_client
    from tests.support import eventually

    s = stored.model_copy(update={"s3_prefix": "session/"})
    arch = SessionArchiver(s)
    during = session_bounds_ns(DAYS[2])["close"]
    arch.poll(during, idle=True)  # 16:00 on the 13th: only the 12th is over
    eventually(lambda: DAYS[1] in arch.done, 20, what="the previous day archived")
    after = session_bounds_ns(DAYS[2])["after_close"] + 2 * 60 * 10**9
    arch.poll(after, idle=False)  # the spool still holds bars: wait
    assert DAYS[2] not in arch.done
    arch.poll(after, idle=True)
    eventually(lambda: DAYS[2] in arch.done, 20, what="the day archived after the session")
    s3 = s3_client(s)
    assert has_manifest(s3, s, DAYS[1]) and has_manifest(s3, s, DAYS[2]) and not has_manifest(s3, s, DAYS[0])


class _Ctx:
    """The parts of procs.runtime.Context the startup history uses (no shared memory needed)."""

    def __init__(self, s: Settings, keys: list[str], day: int) -> None:
        from types import SimpleNamespace

        self.settings = s
        self.shared = SimpleNamespace(control=SimpleNamespace(header={"trading_day": day}),
                                      table=SimpleNamespace(key_list=lambda: keys))
        self.beats = 0

    def beat(self) -> None:
        self.beats += 1

    def should_run(self) -> bool:
        return True

    def event_now_ns(self) -> int:
        return session_bounds_ns(20240314)["open"]


def test_warm_start_fills_the_indicator_engine(stored: Settings) -> None:
    from procs.indicators import warm_from_history
    from procs.storage.history import warm_start
    from scanner.indicators.engine import IndicatorEngine

    keys = ["AAPL", "NEW", "X"]
    engine = IndicatorEngine(len(keys))
    hist, head = new_history(len(keys), 40)
    hist[:, 1, 0] = session_bounds_ns(20240314)["open"] // MINUTE_NS  # today's one bar of NEW, from shm
    hist[HIST["close"], 1, 0] = 5.0
    head[1] = 1
    ctx = _Ctx(stored.model_copy(update={"warm_history_days": 2}), keys, 20240314)
    bars = warm_start(ctx, engine, hist.shape[2])  # type: ignore[arg-type]
    assert bars is not None and engine.bars_seen.sum() == 0  # the caller merges and folds
    warm_from_history([(0, hist[:, :2], head[:2]), (2, hist[:, 2:], head[2:])], engine, stored=bars)
    assert engine.bars_seen.tolist() == [40, 1, 40]  # K=40 from 2 days of 56 bars each; NEW keeps its own
    assert engine.profile is not None and np.isnan(engine.profile[1]).all() and engine.profile[0, -1] > 0
