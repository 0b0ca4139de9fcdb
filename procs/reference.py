"""Reference data of a live day, loaded by the supervisor before any child starts (so gap % and
relative volume are right from the first tick): the universe and, per symbol, the previous
close and the 20-day average volume.

* **Universe**: `symbols_file` when set, else the vendor's list of active US equities
  (`procs.vendor_rest`, filtered by `feed_exchanges`, cut to `feed_max_symbols`).
* **Daily history** (previous close/high/low, average volume, 52 weeks, and the daily
  timeframe's ring: `sma_200_1d` ...): from our own PostgreSQL daily bars (`bars_daily`, rolled
  up from `bars_1m` per New York day by the storage writer: regular-session OHLC, whole-day
  volume) when `database_url` is set; the vendor's REST daily bars for the symbols whose
  history there does not reach back the whole lookback (ours win on a day both have).
* **Intraday volume profile**: the indicator process already builds it from PostgreSQL (or the
  archive) at start (`procs.storage.history.warm_start`); the vendors' REST APIs would need
  minute bars of 20 days per symbol, so without our own history relative volume uses the flat
  daily average.
* **Cache**: `<data_dir>/reference/<day>.<feed>.universe.json` and `.reference.npz` (the daily
  bars, one record per symbol and day), so a restart on the same day asks no vendor again.

Vendor refusals (HTTP 401/403) are configuration errors: `SupervisorError`, a clear message.
Other REST failures leave the values NaN (gap % and relative volume unknown) with a warning.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from procs.vendor_rest import RestError, vendor_rest
from scanner.config import Settings, redact, reveal
from scanner.daily import daily_matrix, reference_columns
from scanner.feeds.lean import DAILY_DTYPE
from scanner.session import session_bounds_ns, trading_days

log = logging.getLogger("scanner.reference")
NS = 1_000_000_000
LOOKBACK_CALENDAR_DAYS = 370  # 52 weeks of sessions (52-week high/low), 20 for the average volume
COVER_SLACK_DAYS = 10  # our history "reaches back the whole lookback" when it starts within these days of it


class ReferenceError(RuntimeError):
    """The reference data cannot be had and the instance cannot start without it."""


def _cache(s: Settings, day: int, what: str) -> Path:
    return s.reference_cache_dir() / f"{day}.{s.feed}.{what}"


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _refused(exc: RestError) -> bool:
    return exc.status in (401, 403)


def live_universe(s: Settings, day: int) -> list[str]:
    """The vendor's active US equities (cached per day), sorted, filtered, cut."""
    path = _cache(s, day, "universe.json")
    if path.is_file():
        try:
            names = json.loads(path.read_text())
            if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
                return names
        except (OSError, ValueError):
            log.warning("unreadable universe cache %s: asking the vendor again", path)
    try:
        names = vendor_rest(s).active_equities(s.feed_exchanges)
    except RestError as exc:
        hint = " (check the API key)" if _refused(exc) else ""
        raise ReferenceError(f"cannot get the {s.feed} list of active US equities: {exc}{hint}; "
                             "or give a symbols_file") from None
    names = [n for n in names if 0 < len(n.encode()) <= 16]  # table keys are 16 bytes
    if s.feed_max_symbols:
        names = names[: s.feed_max_symbols]
    if not names:
        raise ReferenceError(f"the {s.feed} list of active US equities is empty (feed_exchanges "
                             f"{s.feed_exchanges or 'all'})")
    _write_atomic(path, json.dumps(names).encode())
    log.info("universe: %d active US equities from %s (cached in %s)", len(names), s.feed, path)
    return names


def live_reference(s: Settings, keys: list[str], day: int) -> dict[str, np.ndarray]:
    """The REFERENCE columns (`scanner.daily.reference_columns`: previous close/high/low, 20-day
    average volume, 52 weeks) per key for trading day `day` (module docstring)."""
    return reference_columns(live_daily(s, keys, day))


def live_daily(s: Settings, keys: list[str], day: int) -> dict[str, np.ndarray]:
    """Right-aligned daily matrices (`scanner.daily.daily_matrix`) of `keys` before trading day
    `day`: our own `bars_daily` first, the vendor's daily bars for the symbols whose history
    there does not reach back the whole lookback (a young database, a new listing), our bar
    winning on a day both have. They give the reference columns and seed the daily timeframe."""
    path = _cache(s, day, "reference.npz")
    cached = _read_cache(path, keys)
    if cached is not None:
        return daily_matrix(_split(cached[0], cached[1], len(keys)), day)
    d = date(day // 10000, day // 100 % 100, day % 100)
    first_day = _yyyymmdd(d - timedelta(days=LOOKBACK_CALENDAR_DAYS))
    covered_from = _yyyymmdd(d - timedelta(days=LOOKBACK_CALENDAR_DAYS - COVER_SLACK_DAYS))
    syms: list[np.ndarray] = []
    recs: list[np.ndarray] = []
    sources = []
    covered = np.zeros(len(keys), bool)
    if s.database_url:
        try:
            sym, got = _from_postgres(s, keys, first_day, day)
            syms.append(sym)
            recs.append(got)
            oldest = np.full(len(keys), np.iinfo(np.int64).max)
            np.minimum.at(oldest, sym, got["day"])
            covered = oldest <= covered_from
            sources.append(f"postgresql ({len(np.unique(sym))}, {int(covered.sum())} with the whole year)")
        except Exception as exc:  # noqa: BLE001 - our history is optional; the vendor is the fallback
            log.warning("reference data from PostgreSQL skipped: %s", redact(str(exc).strip().splitlines()[0]))
    missing = np.flatnonzero(~covered)
    if len(missing):
        before = session_bounds_ns(day)["day_start"]
        start = before - LOOKBACK_CALENDAR_DAYS * 86_400 * NS
        try:
            bars = vendor_rest(s).bars([keys[i] for i in missing], "1Day", start, before)
            daily = np.zeros(len(bars), DAILY_DTYPE)
            daily["day"] = trading_days(bars["ts_ns"])
            for f in ("open", "high", "low", "close", "volume"):
                daily[f] = bars[f]
            syms.append(missing[bars["sym"]])
            recs.append(daily)
            sources.append(f"{s.feed} REST daily bars ({len(np.unique(bars['sym']))})")
        except RestError as exc:
            if _refused(exc):
                raise ReferenceError(f"{s.feed} refused the daily-bars request: {exc} (check the API key)") from None
            log.warning("reference data from %s skipped: %s", s.feed, exc)
    sym = np.concatenate(syms) if syms else np.empty(0, np.int64)
    rec = np.concatenate(recs) if recs else np.empty(0, DAILY_DTYPE)
    _, first = np.unique(sym * 100_000_000 + rec["day"], return_index=True)  # ours first: ours win a day
    sym, rec = sym[first], rec[first]
    m = daily_matrix(_split(sym, rec, len(keys)), day)
    found = int(np.isfinite(m["close"][:, -1]).sum()) if len(keys) else 0
    log.info("reference data for %d of %d symbols from %s", found, len(keys), ", ".join(sources) or "nowhere")
    if found:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, keys=np.array(keys), sym=sym, **{f: rec[f] for f in DAILY_DTYPE.names})
        os.replace(tmp, path)
    return m


def _split(sym: np.ndarray, daily: np.ndarray, n: int) -> list[np.ndarray | None]:
    """DAILY_DTYPE records with a symbol index each -> one array per symbol (None: no record)."""
    order = np.argsort(sym, kind="stable")
    sym, daily = np.asarray(sym)[order], daily[order]
    counts = np.bincount(sym, minlength=n)[:n]
    parts = np.split(daily, np.cumsum(counts)[:-1])
    return [p if len(p) else None for p in parts]


def _read_cache(path: Path, keys: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """(symbol index, DAILY_DTYPE records) cached for this day and universe, or None."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            if z["keys"].tolist() != keys:
                return None  # another universe or range: fetch again
            rec = np.zeros(len(z["sym"]), DAILY_DTYPE)
            for f in DAILY_DTYPE.names:
                rec[f] = z[f]
            return z["sym"].astype(np.int64), rec
    except (OSError, ValueError, KeyError):
        log.warning("unreadable reference cache %s: fetching again", path)
        return None


def _from_postgres(s: Settings, keys: list[str], first_day: int, day: int) -> tuple[np.ndarray, np.ndarray]:
    """Our daily bars (`bars_daily`) of `keys` for the trading days [first_day, day): the schema
    brought up to date and the days written to `bars_1m` but not yet rolled up caught up first
    (`procs.storage.pg.roll_daily`). Returns (index into `keys`, DAILY_DTYPE records)."""
    from procs.storage.pg import connect, migrate, read_daily, roll_daily

    url = reveal(s.database_url) or ""
    migrate(url, flavor=s.storage_flavor, retention_days=s.bar_retention_days,
            compress_after_days=s.bar_compress_after_days)
    with connect(url, statement_timeout_ms=120_000) as conn:
        roll_daily(conn)
        return read_daily(conn, keys, first_day, day)


def _yyyymmdd(d: date) -> int:
    return d.year * 10000 + d.month * 100 + d.day
