"""Reference data of a live day, loaded by the supervisor before any child starts (so gap % and
relative volume are right from the first tick): the universe and, per symbol, the previous
close and the 20-day average volume.

* **Universe**: `symbols_file` when set, else the vendor's list of active US equities
  (`procs.vendor_rest`, filtered by `feed_exchanges`, cut to `feed_max_symbols`).
* **Previous close / average volume**: from our own PostgreSQL minute bars (`bars_1m`, rolled up
  per New York day: regular-session close, whole-day volume) when `database_url` is set and it
  has them; the symbols it lacks from the vendor's REST daily bars.
* **Intraday volume profile**: the indicator process already builds it from PostgreSQL (or the
  archive) at start (`procs.storage.history.warm_start`); the vendors' REST APIs would need
  minute bars of 20 days per symbol, so without our own history relative volume uses the flat
  daily average.
* **Cache**: `<data_dir>/reference/<day>.<feed>.universe.json` and `.reference.npz`, so a
  restart on the same day asks no vendor again.

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
from scanner.daily import REFERENCE_COLUMNS, daily_matrix, reference_columns
from scanner.feeds.lean import DAILY_DTYPE
from scanner.session import session_bounds_ns, trading_days

log = logging.getLogger("scanner.reference")
NS = 1_000_000_000
LOOKBACK_CALENDAR_DAYS = 370  # 52 weeks of sessions (52-week high/low), 20 for the average volume


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
    path = _cache(s, day, "reference.npz")
    cached = _read_cache(path, keys)
    if cached is not None:
        return cached
    before = session_bounds_ns(day)["day_start"]
    per: list[np.ndarray | None] = [None] * len(keys)
    sources = []
    if s.database_url:
        try:
            per = _from_postgres(reveal(s.database_url) or "", keys, day)
            sources.append(f"postgresql ({sum(p is not None for p in per)})")
        except Exception as exc:  # noqa: BLE001 - our history is optional; the vendor is the fallback
            log.warning("reference data from PostgreSQL skipped: %s", redact(str(exc).strip().splitlines()[0]))
    missing = [i for i, p in enumerate(per) if p is None]
    if missing:
        start = before - LOOKBACK_CALENDAR_DAYS * 86_400 * NS
        try:
            bars = vendor_rest(s).bars([keys[i] for i in missing], "1Day", start, before)
            daily = np.zeros(len(bars), DAILY_DTYPE)
            daily["day"] = trading_days(bars["ts_ns"])
            for f in ("open", "high", "low", "close", "volume"):
                daily[f] = bars[f]
            got = _split(bars["sym"], daily, len(missing))
            for j, i in enumerate(missing):
                per[i] = got[j]
            sources.append(f"{s.feed} REST daily bars ({sum(g is not None for g in got)})")
        except RestError as exc:
            if _refused(exc):
                raise ReferenceError(f"{s.feed} refused the daily-bars request: {exc} (check the API key)") from None
            log.warning("reference data from %s skipped: %s", s.feed, exc)
    ref = reference_columns(daily_matrix(per, day))
    found = int(np.isfinite(ref["prev_close"]).sum())
    log.info("reference data for %d of %d symbols from %s", found, len(keys), ", ".join(sources) or "nowhere")
    if found:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, keys=np.array(keys), **ref)
        os.replace(tmp, path)
    return ref


def _split(sym: np.ndarray, daily: np.ndarray, n: int) -> list[np.ndarray | None]:
    """DAILY_DTYPE records with a symbol index each -> one array per symbol (None: no record)."""
    order = np.argsort(sym, kind="stable")
    sym, daily = np.asarray(sym)[order], daily[order]
    counts = np.bincount(sym, minlength=n)[:n]
    parts = np.split(daily, np.cumsum(counts)[:-1])
    return [p if len(p) else None for p in parts]


def _read_cache(path: Path, keys: list[str]) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            if z["keys"].tolist() != keys:
                return None  # another universe or range: fetch again
            return {k: z[k].copy() for k in REFERENCE_COLUMNS}
    except (OSError, ValueError, KeyError):
        log.warning("unreadable reference cache %s: fetching again", path)
        return None


def _from_postgres(url: str, keys: list[str], day: int) -> list[np.ndarray | None]:
    """Daily roll-ups of `bars_1m` before `day` (regular-session open/high/low/close, whole-day
    volume, per New York date) over the last LOOKBACK_CALENDAR_DAYS days, one array per key."""
    from procs.storage.pg import connect

    d = date(day // 10000, day // 100 % 100, day % 100)
    lo = session_bounds_ns(_yyyymmdd(d - timedelta(days=LOOKBACK_CALENDAR_DAYS)))["day_start"]
    hi = session_bounds_ns(day)["day_start"]
    index = {k: i for i, k in enumerate(keys)}
    with connect(url, statement_timeout_ms=120_000) as conn:
        rows = conn.execute(
            """SELECT symbol, to_char(ny, 'YYYYMMDD')::bigint,
                      (array_agg(open ORDER BY bucket) FILTER (WHERE regular))[1],
                      max(high) FILTER (WHERE regular), min(low) FILTER (WHERE regular),
                      (array_agg(close ORDER BY bucket DESC) FILTER (WHERE regular))[1], sum(volume)
               FROM (SELECT symbol, bucket, open, high, low, close, volume,
                            (bucket AT TIME ZONE 'America/New_York')::date AS ny,
                            (bucket AT TIME ZONE 'America/New_York')::time >= '09:30'
                            AND (bucket AT TIME ZONE 'America/New_York')::time < '16:00' AS regular
                     FROM bars_1m WHERE bucket >= to_timestamp(%s) AND bucket < to_timestamp(%s)
                       AND symbol = ANY(%s)) b
               GROUP BY symbol, ny HAVING bool_or(regular)""", (lo / NS, hi / NS, keys)).fetchall()
    daily = np.array([(d_, o, h, lw, c, v) for _s, d_, o, h, lw, c, v in rows], DAILY_DTYPE)
    return _split(np.array([index[r[0]] for r in rows], np.int64), daily, len(keys))


def _yyyymmdd(d: date) -> int:
    return d.year * 10000 + d.month * 100 + d.day
