"""A deterministic synthetic US-equity market: the embedded default feed.

The universe (names, previous close, average daily volume, volatility) is a pure function of
the seed, so the supervisor (reference columns) and the ingest process (the generator) agree
without talking. The tape has what makes scans fire: an opening gap per symbol (a few large
ones), a U-shaped intraday volume curve, news bursts (one symbol at a time gets 10-40x
activity and a strong drift for a few minutes), odd lots, and quiet symbols that go minutes
without a trade.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from scanner.daily import YEAR_DAYS
from scanner.records import TICK_DTYPE, TICK_ODD_LOT

NS = 1_000_000_000
_LETTERS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))


@dataclass(frozen=True)
class Universe:
    names: list[str]
    prev_close: np.ndarray  # USD
    avg_daily_volume: np.ndarray  # shares
    daily_vol: np.ndarray  # daily return volatility (fraction)
    gap: np.ndarray  # opening gap (log return)
    share: np.ndarray  # usual share of the tape's trades (sums to 1)
    trade_size: np.ndarray  # usual mean trade size, shares
    today: np.ndarray  # today's activity vs usual (lognormal around 1: some names are "in play")


def make_universe(n: int, seed: int = 7, rate: float = 5_000.0) -> Universe:
    """`n` symbols with lognormal prices ($1-$1000) and activity, deterministic for `seed`.
    Average daily volume follows from the feed `rate` (ticks/s), each symbol's usual share of
    the tape and its usual trade size, so relative volume is about 1 on an ordinary day."""
    if n <= 0:
        raise ValueError(f"'n' must be positive, was {n}")
    rng = np.random.default_rng(seed)
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n:
        lengths = rng.choice([1, 2, 3, 4, 4, 4, 5], size=n)
        for ln in lengths:
            s = "".join(rng.choice(_LETTERS, size=int(ln)))
            if s not in seen:
                seen.add(s)
                names.append(s)
                if len(names) == n:
                    break
    names.sort()
    prev_close = np.round(np.clip(np.exp(rng.normal(math.log(35.0), 1.1, n)), 1.0, 1000.0), 2)
    share = rng.lognormal(0.0, 1.2, n)
    share /= share.sum()
    trade_size = np.clip(rng.lognormal(math.log(160.0), 0.5, n), 100.0, 3_000.0)
    adv = np.round(rate * 23_400.0 * share * trade_size, -2).clip(100.0)
    today = rng.lognormal(0.0, 0.35, n)
    daily_vol = np.clip(rng.lognormal(math.log(0.025), 0.4, n), 0.008, 0.12)
    gap = rng.normal(0.0, 0.008, n)
    movers = rng.random(n) < 0.03  # ~3% of names gap hard on "news"
    gap[movers] = rng.choice([-1.0, 1.0], movers.sum()) * rng.uniform(0.04, 0.15, movers.sum())
    return Universe(names, prev_close, adv, daily_vol, gap, share, trade_size, today)


def volume_curve(minute_of_session: np.ndarray | float) -> np.ndarray | float:
    """Relative activity by minute since 09:30 (U-shape; mean about 1 over the session)."""
    m = np.clip(minute_of_session, 0, 390)
    return 0.55 + 2.2 * np.exp(-m / 25.0) + 1.4 * np.exp(-(390 - m) / 35.0)


PREMARKET_ACTIVITY = 0.06  # pre-market tape vs the session's mean pace


def activity(minute_of_session: float) -> float:
    """Relative tape pace at a minute since 09:30: the U-shaped curve in the session, a thin
    pre-market before it (so a demo that starts before the open sees the open's surge)."""
    return float(volume_curve(minute_of_session)) if minute_of_session >= 0 else PREMARKET_ACTIVITY


def volume_profile(universe: Universe, rows: np.ndarray, open_minute_of_day: int) -> np.ndarray:
    """A past of ordinary days for the synthetic market: expected cumulative volume up to each
    local minute of day, shape (len(rows), 1440), as `IndicatorEngine.load_volume_profile`
    takes. Average daily volume spread over the session by the same pace the tape uses, so
    relative volume is about 1 on an ordinary name and shows the names in play from the open."""
    minutes = np.arange(1440) - open_minute_of_day
    pace = np.where((minutes >= 0) & (minutes < 390), volume_curve(minutes.astype(float)), 0.0)
    share = np.cumsum(pace) / pace.sum()
    return universe.avg_daily_volume[rows][:, None] * share[None, :]


class SyntheticTape:
    """Generates batches of ticks for an interval of event time at a target rate."""

    def __init__(self, universe: Universe, rows: np.ndarray, rate: float, seed: int,
                 session_open_ns: int, last_price: np.ndarray | None = None) -> None:
        """`rows`: table rows this feed produces (the host's range); `last_price` resumes
        prices after a restart (NaN rows start from the gapped open)."""
        self.u = universe
        self.rows = rows.astype(np.uint32)
        self.rate = rate
        self.rng = np.random.default_rng(seed)
        self.open_ns = session_open_ns
        n = len(rows)
        start = universe.prev_close[rows] * np.exp(universe.gap[rows])
        if last_price is not None:
            ok = np.isfinite(last_price)
            start = np.where(ok, last_price, start)
        self.logp = np.log(start)
        self.sigma_s = universe.daily_vol[rows] / math.sqrt(23_400.0)  # per second of session
        w = universe.share[rows] * universe.today[rows]
        self.base_w = w / w.sum()
        self.weights = self.base_w.copy()
        self.mean_size = universe.trade_size[rows]
        self.burst_sym = -1
        self.burst_until = 0
        self.burst_drift = 0.0
        self._n = n

    def _maybe_burst(self, now_ns: int, dt_s: float) -> None:
        if self.burst_sym >= 0 and now_ns >= self.burst_until:
            self.weights[self.burst_sym] = self.base_w[self.burst_sym]
            self.burst_sym = -1
        if self.burst_sym < 0 and self.rng.random() < min(1.0, dt_s / 20.0):  # one every ~20 s
            s = int(self.rng.integers(self._n))
            self.burst_sym = s
            self.burst_until = now_ns + int(self.rng.uniform(60, 300) * NS)
            self.burst_drift = float(self.rng.choice([-1.0, 1.0]) * self.rng.uniform(0.0002, 0.0008))
            self.weights[s] = max(self.base_w[s] * 40.0, 0.01)

    def generate(self, t0_ns: int, t1_ns: int) -> np.ndarray:
        """Ticks with event times in [t0_ns, t1_ns), sorted by time."""
        dt_s = max(0.0, (t1_ns - t0_ns) / NS)
        if dt_s <= 0:
            return np.empty(0, TICK_DTYPE)
        self._maybe_burst(t0_ns, dt_s)
        minute = (t0_ns - self.open_ns) / (60 * NS)
        lam = self.rate * dt_s * float(activity(minute))
        n = int(self.rng.poisson(lam))
        # prices: one random-walk step per symbol for the interval, burst drift on top
        step = self.rng.standard_normal(self._n) * self.sigma_s * math.sqrt(dt_s)
        if self.burst_sym >= 0:
            step[self.burst_sym] += self.burst_drift * dt_s * 10
        self.logp += step
        out = np.empty(n, TICK_DTYPE)
        if n == 0:
            return out
        cdf = np.cumsum(self.weights)
        idx = np.searchsorted(cdf, self.rng.random(n) * cdf[-1]).clip(0, self._n - 1)
        out["sym"] = self.rows[idx]
        out["ts_ns"] = np.sort(self.rng.integers(t0_ns, t1_ns, n))
        jitter = 1.0 + self.rng.standard_normal(n) * 0.0002
        out["price"] = np.round(np.exp(self.logp[idx]) * jitter, 2).clip(0.01)
        # mostly round lots around the symbol's usual size; ~12% odd lots (they don't set last)
        lots = np.maximum(1.0, np.round(self.mean_size[idx] / 100.0 * self.rng.exponential(1.0, n)))
        size = lots * 100.0
        if self.burst_sym >= 0:
            size[idx == self.burst_sym] *= 3
        odd = self.rng.random(n) < 0.12
        size[odd] = self.rng.integers(1, 100, int(odd.sum()))
        out["size"] = size
        out["flags"] = np.where(size < 100, TICK_ODD_LOT, 0)
        return out


DAILY_BLOCK = 1024  # rows generated together (each block has its own random stream)


def daily_history(universe: Universe, day: int, seed: int = 7, n_days: int = YEAR_DAYS,
                  rows: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """The synthetic universe's past `n_days` daily bars as right-aligned matrices (see
    `scanner.daily.daily_matrix`) for universe rows `rows` = (lo, hi) (all when None): a random
    walk with each symbol's daily volatility that ends at its previous close, so the daily
    reference columns (52 weeks, previous high/low, the daily timeframe's indicators) exist for
    the embedded feed and agree with `prev_close`. Sessions are the `n_days` weekdays before
    trading day `day`. Deterministic per block of DAILY_BLOCK rows, so any host's row range (and
    a caller going chunk by chunk to bound its memory) gets the same values."""
    lo, hi = rows if rows is not None else (0, len(universe.names))
    parts = [_daily_block(universe, b, seed, n_days) for b in range(lo // DAILY_BLOCK, (hi - 1) // DAILY_BLOCK + 1)]
    base = (lo // DAILY_BLOCK) * DAILY_BLOCK
    out = {k: np.concatenate([p[k] for p in parts])[lo - base:hi - base] for k in parts[0]}
    today = np.datetime64(f"{day // 10000:04d}-{day // 100 % 100:02d}-{day % 100:02d}")
    dates = np.busday_offset(today, -np.arange(n_days, 0, -1), roll="backward")
    ymd = np.array([int(str(d).replace("-", "")) for d in dates], np.float64)
    out["day"] = np.broadcast_to(ymd, (hi - lo, n_days)).copy()
    return out


def _daily_block(universe: Universe, block: int, seed: int, n_days: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed + 1, block])
    sl = slice(block * DAILY_BLOCK, min(len(universe.names), (block + 1) * DAILY_BLOCK))
    dv = universe.daily_vol[sl, None]
    n = len(dv)
    ret = rng.standard_normal((n, n_days)) * dv
    # close[d] = prev_close * exp(-(ret[d+1] + ... + ret[last])): the walk ends at prev_close
    back = np.cumsum(ret[:, ::-1], axis=1)[:, ::-1] - ret
    close = universe.prev_close[sl, None] * np.exp(-back)
    open_ = close * np.exp(-ret + rng.standard_normal((n, n_days)) * dv * 0.25)
    wick = np.abs(rng.standard_normal((2, n, n_days))) * dv * 0.5
    high = np.maximum(open_, close) * np.exp(wick[0])
    low = np.minimum(open_, close) * np.exp(-wick[1])
    volume = np.round(universe.avg_daily_volume[sl, None] * rng.lognormal(0.0, 0.3, (n, n_days)), -2)
    return {"open": open_, "high": high, "low": low, "close": close, "volume": volume}
