"""`scanner start --feed alpaca|polygon` end to end against the local vendor servers (real
sockets, real processes): real Lean ticks as vendor frames give exactly the bars `scanner
replay` builds from the same ticks; a disconnect in mid-stream heals with no hole (gap repair
from the REST minute bars); a refused key is the cannot-boot exit with no key in the logs;
hostile frames are counted and the stream goes on."""

from __future__ import annotations

import glob
import json
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from procs.feed_stats import feed_summary
from procs.runtime import EXIT_CANNOT_BOOT
from procs.shared import Shared
from scanner.feeds.lean import read_lean_daily
from scanner.metrics import CATALOGUE, HIST
from scanner.session import MINUTE_NS
from tests.procs.instance import Instance
from tests.procs.test_replay import bars_frame, replay
from tests.support import SHARED_DATA, eventually
from tests.vendors.messages import (
    alpaca_quote,
    alpaca_status,
    alpaca_trades,
    bars_from_ticks,
    lean_ticks,
    polygon_trades,
)

pytestmark = pytest.mark.slow
DAY = 20131008
SYMS = ["aig", "bac"]
FIELDS = ("open", "high", "low", "close", "volume", "trades")


@pytest.fixture(scope="module")
def day() -> tuple[np.ndarray, list[str]]:
    if not (SHARED_DATA / "lean-us-equity" / "tick").is_dir():
        pytest.skip(f"real market data {SHARED_DATA} is absent (see ../shared/data/README.md)")
    return lean_ticks(SHARED_DATA / "lean-us-equity", SYMS, DAY)


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory, day) -> pd.DataFrame:
    """The bars `scanner replay` builds from the same day files."""
    files = sorted(f for s in SYMS for f in glob.glob(str(SHARED_DATA / "lean-us-equity" / "tick" / s /
                                                          f"{DAY}_trade.zip")))
    tmp = tmp_path_factory.mktemp("replay")
    with pytest.MonkeyPatch.context() as mp:  # a loaded shared machine must not restart its children
        mp.setenv("SCANNER_HEARTBEAT_TIMEOUT_S", "30")
        mp.setenv("SCANNER_BOOT_TIMEOUT_S", "120")
        # bars do not depend on the scans: one scan a minute keeps the event-time hand-offs few
        summary, _ = replay(tmp, *files, "--max", "--bars-out", str(tmp / "bars.npz"), "--scan-interval-ms",
                            "60000", timeout=900)
    assert summary["ticks"] == len(day[0]) and summary["late_ticks"] == 0
    assert summary["bars"] > 0 and summary["bars_collected"] == summary["bars"]
    return bars_frame(tmp / "bars.npz").sort_values(["symbol", "minute_ns"], ignore_index=True)


def start_live(tmp: Path, vendor: str, stream, rest, names: list[str], **env: str) -> Instance:
    (tmp / "symbols.txt").write_text("\n".join(names) + "\n")
    keys = {"SCANNER_ALPACA_KEY_ID": "test-key", "SCANNER_ALPACA_SECRET_KEY": "test-secret"} \
        if vendor == "alpaca" else {"SCANNER_POLYGON_API_KEY": "test-key"}
    inst = Instance(tmp, f"lf{vendor[0]}{abs(hash(str(tmp))) % 10**6}", SCANNER_FEED=vendor,
                    SCANNER_FEED_URL=stream.url, SCANNER_FEED_REST_URL=rest.base_url,
                    SCANNER_SYMBOLS_FILE=str(tmp / "symbols.txt"), SCANNER_BAR_HISTORY="1500",
                    SCANNER_BAR_GRACE_MS="600000",  # bars do not depend on it; a loaded machine does not either
                    SCANNER_HEARTBEAT_TIMEOUT_S="30", SCANNER_BOOT_TIMEOUT_S="120", SCANNER_FEED_BACKOFF_MIN_S="0.2",
                    **{**keys, **env})
    inst.start()
    return inst


def live_bars(inst: Instance) -> pd.DataFrame:
    """Every bar of the instance: closed ones from the history ring, then each live bar."""
    sh = Shared.attach(inst.name)
    try:
        names = sh.table.key_list()
        hist, head = np.empty_like(sh.history.hist), np.empty_like(sh.history.head)
        sh.history.snapshot(hist, head)  # consistent: a plain copy can pair a head with an unwritten slot
        t = sh.table
        live = {k: (t.f8[CATALOGUE.f8(k)] if CATALOGUE[k].dtype == "f8" else t.i8[CATALOGUE.i8(k)]).copy()
                for k in ("bar_start_ns", "bar_open", "bar_high", "bar_low", "bar_close", "bar_volume", "bar_trades",
                          "bar_vwap")}
    finally:
        sh.close()
    k = hist.shape[2]
    assert (head <= k).all(), "history ring too short for the day"
    rows = []
    for r, name in enumerate(names):
        for j in range(int(head[r])):
            rows.append({"symbol": name, "minute_ns": int(hist[HIST["minute"], r, j]) * MINUTE_NS,
                         **{f: hist[HIST[f], r, j] for f in (*FIELDS, "vwap")}})
        if live["bar_start_ns"][r]:
            rows.append({"symbol": name, "minute_ns": int(live["bar_start_ns"][r]),
                         **{f: live[f"bar_{f}"][r] for f in (*FIELDS, "vwap")}})
    return pd.DataFrame(rows).sort_values(["symbol", "minute_ns"], ignore_index=True)


def feed(inst: Instance) -> dict:
    sh = Shared.attach(inst.name)
    try:
        return feed_summary(sh) or {}
    finally:
        sh.close()


def slot(st: dict, name: str) -> dict:
    return next(p for p in st["processes"] if p["name"] == name)


def drained(inst: Instance, n_ticks: int) -> bool:
    """Every tick through ingest and bars; otherwise raises with the counts (`eventually` chains
    the last one, so a timeout says how far each got and what the feed counted)."""
    st = inst.status()
    got = slot(st, "ingest")["in"], slot(st, "bars")["in"]
    if got != (n_ticks, n_ticks):
        raise AssertionError(f"ingest/bars took {got} of {n_ticks} ticks; feed {st.get('feed')}")
    return True


def assert_equal_bars(got: pd.DataFrame, ref: pd.DataFrame) -> None:
    assert got.symbol.tolist() == ref.symbol.tolist()
    np.testing.assert_array_equal(got.minute_ns.to_numpy(), ref.minute_ns.to_numpy())
    for f in FIELDS:
        np.testing.assert_array_equal(got[f].to_numpy(np.float64), ref[f].to_numpy(np.float64), err_msg=f)
    np.testing.assert_allclose(got.vwap.to_numpy(), ref.vwap.to_numpy(), rtol=1e-12)


def rest_server(vendor: str, alpaca_rest, polygon_rest, ticks: np.ndarray, names: list[str]):
    daily = {s.upper(): read_lean_daily(SHARED_DATA / "lean-us-equity" / "daily" / f"{s}.zip") for s in SYMS}
    bars = bars_from_ticks(ticks, names)  # what the vendor's REST minute bars of the same ticks hold
    return (alpaca_rest if vendor == "alpaca" else polygon_rest)(minute_bars=bars, daily_bars=daily)


@pytest.mark.parametrize("vendor", ["alpaca", "polygon"])
def test_live_feed_builds_the_replay_bars(vendor, day, replayed, alpaca_stream, polygon_stream, alpaca_rest,
                                          polygon_rest, tmp_path: Path) -> None:
    ticks, names = day
    msgs = alpaca_trades(ticks, names) if vendor == "alpaca" else polygon_trades(ticks, names)
    if vendor == "alpaca":  # quotes and a halt ride along
        t0 = int(ticks["ts_ns"][1000])
        msgs[1000:1000] = [alpaca_quote("AIG", t0, 15.0, 15.02, 300, 400),
                           alpaca_status("BAC", t0, True, "T1"), alpaca_status("BAC", t0 + 1, False, "T1")]
    stream = (alpaca_stream if vendor == "alpaca" else polygon_stream)(msgs, batch=1000)
    rest = rest_server(vendor, alpaca_rest, polygon_rest, ticks, names)
    inst = start_live(tmp_path, vendor, stream, rest, names)
    try:
        eventually(inst.all_running, 120, 0.2, "all processes running")
        eventually(lambda: drained(inst, len(ticks)), 240, 0.5, "every tick through ingest and bars")
        got = live_bars(inst)
        assert_equal_bars(got, replayed)
        f = feed(inst)
        assert (f["connected"], f["connects"], f["disconnects"], f["malformed"]) == (1, 1, 0, 0)
        st = inst.cli_status()
        assert st["feed"]["disconnects"] == 0 and "test-key" not in json.dumps(st)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{inst.port}/metrics", timeout=30).read().decode()
        assert "scanner_feed_disconnects_total 0.0" in metrics and "scanner_feed_seconds_lost_total" in metrics
        if vendor == "alpaca":
            sh = Shared.attach(inst.name)
            try:
                t = sh.table
                assert t.f8[CATALOGUE.f8("bid"), 0] == 15.0 and t.f8[CATALOGUE.f8("ask_size"), 0] == 400.0
                assert t.f8[CATALOGUE.f8("halted"), 1] == 0.0 and t.i8[CATALOGUE.i8("resume_ts_ns"), 1] > 0
            finally:
                sh.close()
            assert f["halts"] == 1 and f["resumes"] == 1 and f["quotes"] == 1
    finally:
        inst.close()
    assert "test-secret" not in inst.output()


def test_disconnect_heals_without_a_hole(day, replayed, alpaca_stream, alpaca_rest, polygon_rest,
                                         tmp_path: Path) -> None:
    ticks, names = day
    drop_after, lost = 60_000, 8_000
    stream = alpaca_stream(alpaca_trades(ticks, names), batch=1000, drop_after=drop_after, lost_on_drop=lost)
    rest = rest_server("alpaca", alpaca_rest, polygon_rest, ticks, names)
    inst = start_live(tmp_path, "alpaca", stream, rest, names)
    received = len(ticks) - lost
    try:
        eventually(inst.all_running, 120, 0.2, "all processes running")
        eventually(lambda: drained(inst, received), 240, 0.5, "every tick after the reconnect")
        f = eventually(lambda: (x := feed(inst))["repaired_bars"] and x, 60, 0.2, "repaired bars")
        got = live_bars(inst)
        st = inst.cli_status()
    finally:
        inst.close()
    assert f["disconnects"] == 1 and f["connects"] == 2 and f["repair_errors"] == 0
    assert st["feed"]["repaired_bars"] == f["repaired_bars"] and st["feed"]["seconds_lost"] > 0
    t_down = int(ticks["ts_ns"][drop_after - 1])
    t_up = int(ticks["ts_ns"][drop_after + lost])
    m_down, m_up = t_down - t_down % MINUTE_NS, t_up - t_up % MINUTE_NS
    assert m_up - m_down >= 3 * MINUTE_NS, "the lost ticks should span a few minutes"
    # no hole: the same (symbol, minute) bars as the replay of the whole day
    assert list(zip(got.symbol, got.minute_ns, strict=True)) == list(zip(replayed.symbol, replayed.minute_ns,
                                                                           strict=True))
    inner = (got.minute_ns > m_down) & (got.minute_ns < m_up)
    assert f["repaired_bars"] >= int(inner.sum())
    same = ~got.minute_ns.isin([m_down, m_up])  # the two edge minutes are partial
    assert_equal_bars(got[same].reset_index(drop=True), replayed[same].reset_index(drop=True))


def test_auth_failure_cannot_boot_without_leaking_the_key(alpaca_stream, alpaca_rest, tmp_path: Path) -> None:
    stream = alpaca_stream([], key="test-key", secret="test-secret")
    rest = alpaca_rest(secret="my-very-secret")  # REST takes it (reference data loads), the stream refuses it
    inst = start_live(tmp_path, "alpaca", stream, rest, ["AIG"], SCANNER_ALPACA_SECRET_KEY="my-very-secret")
    try:
        code = inst.proc.wait(timeout=120) if inst.proc else None
        out = inst.output()
    finally:
        inst.close()
    assert code == EXIT_CANNOT_BOOT  # the supervisor stopped on the child's cannot-boot exit
    assert "cannot boot" in out and "402" in out and "auth failed" in out
    assert "my-very-secret" not in out and stream.connections == 1  # no reconnect loop


def test_hostile_frames_are_counted_and_the_stream_goes_on(day, alpaca_stream, alpaca_rest, tmp_path: Path) -> None:
    ticks, names = day
    good = alpaca_trades(ticks[:2000], names)
    stream = alpaca_stream(good, batch=100, interval=0.2)
    rest = alpaca_rest()
    inst = start_live(tmp_path, "alpaca", stream, rest, names)
    try:
        eventually(inst.all_running, 120, 0.2, "all processes running")
        eventually(lambda: feed(inst).get("connected") == 1, 60, 0.2, "subscribed")
        t = "2013-10-08T14:00:00Z"
        hostile = ['[{"T":"t","S":"AIG","p":', '[{"T":"t","S":"AIG","p":"x","s":1,"t":"' + t + '"}]',
                   '[{"T":"t","S":"ZZZZ","p":1.0,"s":1,"t":"' + t + '"}]',
                   '[{"T":"t","S":"AIG","p":NaN,"s":1,"t":"' + t + '"}]',
                   '[{"T":"t","S":"AIG","p":-5.0,"s":1,"t":"' + t + '"}]',
                   "[" + ",".join(['{"T":"t","S":"AIG","p":1.0,"s":1,"t":"bad"}'] * 200_000) + "]"]
        for h in hostile:
            stream.send_raw(h)
        eventually(lambda: drained(inst, 2000), 120, 0.5, "the good ticks after the hostile frames")
        f = feed(inst)
        st = inst.status()
    finally:
        inst.close()
    assert f["malformed"] >= 5 and f["unknown_symbol"] >= 1 and f["disconnects"] == 0
    assert slot(st, "ingest")["restarts"] == 0
