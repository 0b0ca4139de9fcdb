"""The metric catalogue: the one list of symbol-table columns.

Every column of the shared-memory symbol table is named here once, with its dtype, unit,
owning process (the single writer of that column) and a description. The table layout, the
rule validator, the REST API and the checkpoint format all read this list; nothing else
defines a column. Float columns live in the float64 block, integer columns (timestamps in
ns, counts) in the int64 block, each in catalogue order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal


class Owner(StrEnum):
    """The process that writes a column (one writer per column)."""

    INGEST = "ingest"
    BARS = "bars"
    INDICATORS = "indicators"
    REFERENCE = "reference"  # the supervisor, from daily history / checkpoint, before workers start


Dtype = Literal["f8", "i8"]


@dataclass(frozen=True, slots=True)
class Metric:
    """One column of the symbol table."""

    name: str
    dtype: Dtype
    unit: str
    owner: Owner
    description: str
    index: int = -1  # row of `data_f8` or `data_i8` in the table; set by the catalogue


_I, _B, _X, _R = Owner.INGEST, Owner.BARS, Owner.INDICATORS, Owner.REFERENCE
ROLLING_MINUTES = (1, 5, 15, 30, 60)  # change_<n>m_pct
TIMEFRAME_NAMES = {"5m": "5-minute", "15m": "15-minute", "60m": "60-minute", "1d": "daily"}
TIMEFRAME_INDICATORS = ("rsi_14", "sma_20", "sma_50", "ema_9", "ema_20", "atr_14")  # + vwap intraday


def _timeframe_columns() -> tuple[tuple[str, Dtype, str, Owner, str], ...]:
    """`<indicator>_<tf>` for every higher timeframe (and `sma_200_1d`): live bar included like
    the 1-minute ones; the daily history comes from the reference daily bars."""
    out: list[tuple[str, Dtype, str, Owner, str]] = []
    for tf, word in TIMEFRAME_NAMES.items():
        bars = f"{word} bars (live bar included)"
        out += [(f"rsi_14_{tf}", "f8", "0-100", _X, f"RSI(14), Wilder, on {bars}; 50 when flat."),
                (f"sma_20_{tf}", "f8", "USD", _X, f"SMA of the last 20 {word} closes (live bar included)."),
                (f"sma_50_{tf}", "f8", "USD", _X, f"SMA of the last 50 {word} closes (live bar included)."),
                (f"ema_9_{tf}", "f8", "USD", _X, f"EMA(9) of {word} closes (live bar included)."),
                (f"ema_20_{tf}", "f8", "USD", _X, f"EMA(20) of {word} closes (live bar included)."),
                (f"atr_14_{tf}", "f8", "USD", _X, f"Average true range (14), Wilder, on closed {word} bars.")]
        if tf == "1d":
            out.append(("sma_200_1d", "f8", "USD", _X, "SMA of the last 200 daily closes (live bar included)."))
        else:
            out.append((f"vwap_{tf}", "f8", "USD", _X, f"VWAP of the live {word} bar."))
    return tuple(out)


OPENING_RANGES = (5, 15, 30)  # or_high_<n>m / or_low_<n>m

# (name, dtype, unit, owner, description)
_COLUMNS: tuple[tuple[str, Dtype, str, Owner, str], ...] = (
    # ---- ingest: the last trade as it arrives
    ("price", "f8", "USD", _I, "Last trade price."),
    ("last_size", "f8", "shares", _I, "Size of the last trade."),
    ("last_ts_ns", "i8", "ns", _I, "Event time of the last trade, epoch nanoseconds (UTC)."),
    ("tick_count", "i8", "trades", _I, "Trades accepted today for this symbol."),
    # ---- ingest: quotes, trading status and LULD bands (live vendor feeds; halts also synthetic)
    ("bid", "f8", "USD", _I, "Best bid of the last quote (NaN: no quote yet)."),
    ("ask", "f8", "USD", _I, "Best ask of the last quote (NaN: no quote yet)."),
    ("bid_size", "f8", "shares", _I, "Size at the best bid of the last quote."),
    ("ask_size", "f8", "shares", _I, "Size at the best ask of the last quote."),
    ("spread_pct", "f8", "%", _I, "Quoted spread (ask - bid) as a percent of the midpoint; NaN for a "
     "missing, one-sided or crossed quote."),
    ("halted", "f8", "0/1", _I, "1 while trading in the symbol is halted or paused, 0 when trading (NaN: "
     "no status seen yet)."),
    ("halt_reason", "i8", "code", _I, "Reason code of the last halt, up to 8 ASCII characters packed "
     "little-endian (scanner.feeds.frames.unpack_code); 0 when none."),
    ("halt_ts_ns", "i8", "ns", _I, "Event time the last halt began, epoch ns; 0 when none today."),
    ("resume_ts_ns", "i8", "ns", _I, "Event time trading last resumed after a halt, epoch ns; 0 when none."),
    ("luld_upper", "f8", "USD", _I, "Limit Up-Limit Down upper price band (NaN: none published)."),
    ("luld_lower", "f8", "USD", _I, "Limit Up-Limit Down lower price band (NaN: none published)."),
    # ---- bars: the live 1-minute bar and the session
    ("bar_open", "f8", "USD", _B, "Open of the live (current, incomplete) 1-minute bar."),
    ("bar_high", "f8", "USD", _B, "High of the live 1-minute bar."),
    ("bar_low", "f8", "USD", _B, "Low of the live 1-minute bar."),
    ("bar_close", "f8", "USD", _B, "Last price in the live 1-minute bar."),
    ("bar_volume", "f8", "shares", _B, "Volume of the live 1-minute bar so far."),
    ("bar_vwap", "f8", "USD", _B, "VWAP of the live 1-minute bar."),
    ("bar_start_ns", "i8", "ns", _B, "Start of the live 1-minute bar, epoch ns; 0 when none."),
    ("bar_trades", "i8", "trades", _B, "Trades in the live 1-minute bar."),
    ("bars_closed", "i8", "bars", _B, "1-minute bars closed today for this symbol."),
    ("day_open", "f8", "USD", _B, "First regular-session trade price (from 09:30 America/New_York)."),
    ("day_high", "f8", "USD", _B, "Regular-session high of day."),
    ("day_low", "f8", "USD", _B, "Regular-session low of day."),
    ("day_volume", "f8", "shares", _B, "Volume today, all of the New York day (pre-market, after-hours)."),
    ("day_trades", "i8", "trades", _B, "Trades today, pre-market and after-hours included."),
    ("hod_ts_ns", "i8", "ns", _B, "Event time the regular-session high of day was set, epoch ns."),
    ("new_hod_count", "f8", "count", _B, "How many times the regular-session high of day was raised today."),
    ("vwap", "f8", "USD", _B, "Session VWAP from 09:30 America/New_York (pre-market trades excluded)."),
    ("premarket_high", "f8", "USD", _B, "Pre-market (04:00-09:30 ET) high."),
    ("premarket_low", "f8", "USD", _B, "Pre-market (04:00-09:30 ET) low."),
    ("premarket_volume", "f8", "shares", _B, "Pre-market (04:00-09:30 ET) volume."),
    # ---- indicators: vectorised over all symbols at the scan cadence, finalised on bar close
    ("rsi_14", "f8", "0-100", _X, "RSI(14), Wilder, on 1-minute closes (live bar included); 50 when flat."),
    ("sma_20", "f8", "USD", _X, "SMA of the last 20 1-minute closes (live bar included)."),
    ("sma_50", "f8", "USD", _X, "SMA of the last 50 1-minute closes (live bar included)."),
    ("sma_200", "f8", "USD", _X, "SMA of the last 200 1-minute closes (live bar included)."),
    ("ema_9", "f8", "USD", _X, "EMA(9) of 1-minute closes (live bar included)."),
    ("ema_20", "f8", "USD", _X, "EMA(20) of 1-minute closes (live bar included)."),
    ("atr_14", "f8", "USD", _X, "Average true range (14), Wilder smoothing, on closed 1-minute bars."),
    ("volume_1m", "f8", "shares", _X, "Volume in the current minute (live 1-minute bar)."),
    ("volume_5m", "f8", "shares", _X,
     "Volume in the last five minutes of event time: the live bar plus closed bars of the previous four."),
    ("avg_volume_1m", "f8", "shares", _X, "Average 1-minute volume today (closed bars)."),
    (
        "relative_volume",
        "f8",
        "ratio",
        _X,
        "Day volume so far vs. the average volume traded up to the same minute of the day over past "
        "days when an intraday volume profile is loaded, else vs. the average daily volume spread "
        "evenly over the 390-minute session times the minutes since the open (NaN before the open).",
    ),
    ("change_pct", "f8", "%", _X, "Change of the last price from the previous close, percent."),
    ("change_from_open_pct", "f8", "%", _X, "Change of the last price from the day open, percent."),
    ("gap_pct", "f8", "%", _X, "Day open vs. previous close, percent."),
    ("dist_from_hod_pct", "f8", "%", _X, "Last price below the regular-session high, percent."),
    ("minutes_since_hod", "f8", "min", _X, "Minutes since the regular-session high of day was set."),
    ("range_pct", "f8", "%", _X, "Day range (high - low) as a percent of the low."),
    ("range_position", "f8", "0-100", _X,
     "Position of the last price in today's regular-session range, 0 = low, 100 = high; outside 0-100 "
     "when the price left that range (pre-market, after-hours)."),
    ("minutes_since_open", "f8", "min", _X, "Minutes since 09:30 New York time (event time; < 0 before)."),
    ("consecutive_up", "f8", "bars", _X, "Consecutive closed 1-minute bars closing above the prior one."),
    ("consecutive_down", "f8", "bars", _X, "Consecutive closed 1-minute bars closing below the prior one."),
    ("seconds_since_resume", "f8", "s", _X, "Seconds since trading resumed after the last halt (NaN: no "
     "resume today, or halted now)."),
    ("pct_to_luld_upper", "f8", "%", _X, "How far the LULD upper band is above the last price, percent of "
     "the price (NaN: no band)."),
    ("pct_to_luld_lower", "f8", "%", _X, "How far the last price is above the LULD lower band, percent of "
     "the price (NaN: no band)."),
    # ---- reference data, loaded before the loop starts
    ("prev_close", "f8", "USD", _R, "Previous session's close."),
    ("avg_daily_volume", "f8", "shares", _R, "Average daily volume over the loaded history."),
    # ==== filters (issue 15): the day's low, from the bar process
    ("lod_ts_ns", "i8", "ns", _B, "Event time the regular-session low of day was set, epoch ns."),
    ("new_lod_count", "f8", "count", _B, "How many times the regular-session low of day was lowered today."),
    # ==== filters (issue 15): rolling moves over the last minutes (live bar included)
    *((f"change_{n}m_pct", "f8", "%", _X,
       f"Change of the last price from the price {n} minute{'s' if n > 1 else ''} ago (the close of the last "
       f"1-minute bar that started at or before the live minute minus {n}), percent.") for n in ROLLING_MINUTES),
    ("volume_15m", "f8", "shares", _X,
     "Volume in the last fifteen minutes of event time: the live bar plus closed bars of the previous 14."),
    ("rel_volume_5m", "f8", "ratio", _X,
     "volume_5m vs. the average volume of the same minutes of the day over past days (intraday volume "
     "profile), else vs. the average daily volume spread evenly over the 390-minute session."),
    ("rel_volume_15m", "f8", "ratio", _X, "volume_15m vs. the same minutes of the day (as rel_volume_5m)."),
    ("range_5m_pct", "f8", "%", _X,
     "High minus low of the live bar and the closed bars of the previous four minutes, percent of the low."),
    ("velocity_5m", "f8", "%/min", _X, "Price velocity: change_5m_pct per minute (change_5m_pct / 5)."),
    # ==== filters (issue 15): the day's landmarks
    ("minutes_since_lod", "f8", "min", _X, "Minutes since the regular-session low of day was set."),
    *((f"or_{side}_{n}m", "f8", "USD", _X,
       f"Opening range {side}: the {side}est 1-minute bar {side} of 09:30-09:{30 + n:02d} America/New_York "
       f"today; NaN until that window has ended.") for n in OPENING_RANGES for side in ("high", "low")),
    ("above_or_high", "f8", "0/1", _X, "1 when the last price is above or_high_5m, else 0; NaN before 09:35."),
    ("below_or_low", "f8", "0/1", _X, "1 when the last price is below or_low_5m, else 0; NaN before 09:35."),
    ("gap_filled", "f8", "0/1", _X,
     "1 once today's regular session traded back to the previous close (a gap up whose low reached it, a "
     "gap down whose high reached it), else 0; NaN without a day open or previous close."),
    ("pct_from_high_52w", "f8", "%", _X, "Last price vs. the 52-week high, percent (negative below it)."),
    ("pct_from_low_52w", "f8", "%", _X, "Last price vs. the 52-week low, percent (positive above it)."),
    ("pct_from_sma_50_1d", "f8", "%", _X, "Last price vs. the 50-day SMA of daily closes (sma_50_1d), percent."),
    ("pct_from_sma_200_1d", "f8", "%", _X, "Last price vs. the 200-day SMA of daily closes (sma_200_1d), percent."),
    # ==== filters (issue 15): daily reference values, up to the previous session
    ("prev_high", "f8", "USD", _R, "Previous session's high (daily bar)."),
    ("prev_low", "f8", "USD", _R, "Previous session's low (daily bar)."),
    ("high_52w", "f8", "USD", _R, "Highest daily high of the last 252 sessions before today."),
    ("low_52w", "f8", "USD", _R, "Lowest daily low of the last 252 sessions before today."),
    # ==== filters (issue 15): indicators of the higher timeframes (scanner.timeframes), suffixed
    *_timeframe_columns(),
)


class Catalogue:
    """Lookup over the metric list; `layout_hash` changes whenever a column changes."""

    def __init__(self, columns: tuple[tuple[str, Dtype, str, Owner, str], ...]) -> None:
        counts = {"f8": 0, "i8": 0}
        metrics: list[Metric] = []
        for name, dtype, unit, owner, desc in columns:
            metrics.append(Metric(name, dtype, unit, owner, desc, counts[dtype]))
            counts[dtype] += 1
        self.metrics: tuple[Metric, ...] = tuple(metrics)
        self.by_name: dict[str, Metric] = {m.name: m for m in metrics}
        if len(self.by_name) != len(metrics):
            raise ValueError("duplicate metric name in the catalogue")
        self.n_f8: int = counts["f8"]
        self.n_i8: int = counts["i8"]
        spec = "|".join(f"{m.name}:{m.dtype}:{m.owner}" for m in metrics)
        self.layout_hash: str = hashlib.sha256(spec.encode()).hexdigest()[:16]

    def __getitem__(self, name: str) -> Metric:
        return self.by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self.by_name

    def names(self) -> list[str]:
        return [m.name for m in self.metrics]

    def owned_by(self, owner: Owner) -> list[Metric]:
        return [m for m in self.metrics if m.owner == owner]

    def f8(self, name: str) -> int:
        """Row of a float64 column; raises KeyError for an unknown or non-float metric."""
        m = self.by_name[name]
        if m.dtype != "f8":
            raise KeyError(f"metric {name!r} is {m.dtype}, not f8")
        return m.index

    def i8(self, name: str) -> int:
        """Row of an int64 column; raises KeyError for an unknown or non-int metric."""
        m = self.by_name[name]
        if m.dtype != "i8":
            raise KeyError(f"metric {name!r} is {m.dtype}, not i8")
        return m.index


CATALOGUE = Catalogue(_COLUMNS)


# Bar history (second segment, written by the bar process only): per symbol, a ring of the last
# K closed 1-minute bars, indexed `hist[field, symbol, slot]` (in memory a bar's fields side by
# side: `shm.history.records`). The bar's start is stored as epoch minutes so that float64
# holds it exactly.
HIST_FIELDS: tuple[str, ...] = ("minute", "open", "high", "low", "close", "volume", "vwap", "trades")
HIST = {name: i for i, name in enumerate(HIST_FIELDS)}
