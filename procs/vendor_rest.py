"""The vendors' REST APIs for a live day: the list of active US equities, daily bars (previous
close, average volume) and minute bars (gap repair after a reconnect).

Plain HTTP with the standard library (one request at a time; the calls are few and off the hot
path). Every call follows the vendor's pagination (Alpaca `next_page_token` -> `page_token`;
Polygon `next_url`) and honours HTTP 429 by sleeping for `Retry-After` seconds (or a backoff
when the header is missing) up to `max_retries` times. Credentials travel in headers only
(Alpaca `APCA-API-KEY-ID` / `APCA-API-SECRET-KEY`, Polygon `Authorization: Bearer`), so no URL
that could end up in a log holds a key.

Bars come back as `DAY_BAR_DTYPE` records (symbol index into the requested list, start of the
bar in epoch ns, OHLCV, VWAP, trades) with the vendor's own values.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np

from scanner.config import Settings

log = logging.getLogger("scanner.rest")

ALPACA_DATA_URL = "https://data.alpaca.markets"
ALPACA_TRADING_URL = "https://api.alpaca.markets"
POLYGON_URL = "https://api.polygon.io"
NS = 1_000_000_000

VENDOR_BAR_DTYPE = np.dtype([("sym", "<i8"), ("ts_ns", "<i8"), ("open", "<f8"), ("high", "<f8"), ("low", "<f8"),
                             ("close", "<f8"), ("volume", "<f8"), ("vwap", "<f8"), ("trades", "<f8")])


class RestError(RuntimeError):
    """A REST call failed for good (HTTP error other than 429, bad JSON, retries used up)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def _rfc3339(ns: int) -> str:
    return datetime.fromtimestamp(ns / NS, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(v: Any) -> int:
    """Alpaca RFC 3339 strings or Polygon epoch milliseconds -> epoch ns."""
    if isinstance(v, (int, float)):
        return int(v) * 1_000_000
    s = str(v).replace("Z", "+00:00")
    return int(datetime.fromisoformat(s).timestamp() * NS)


class RestClient:
    """GET JSON with auth headers, 429 handling and a timeout."""

    def __init__(self, headers: dict[str, str], *, timeout_s: float = 30.0, max_retries: int = 8,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.headers = {"Accept": "application/json", "User-Agent": "scanner", **headers}
        self.timeout_s, self.max_retries, self.sleep = timeout_s, max_retries, sleep
        self.requests = self.throttled = 0

    def get(self, url: str) -> Any:
        for attempt in range(self.max_retries + 1):
            req = urllib.request.Request(url, headers=self.headers)
            self.requests += 1
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    return json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                where = urllib.parse.urlsplit(url).path
                if exc.code == 429 and attempt < self.max_retries:
                    self.throttled += 1
                    wait = _retry_after(exc.headers.get("Retry-After"), attempt)
                    log.warning("REST %s: 429 Too Many Requests, retrying in %.1f s", where, wait)
                    self.sleep(wait)
                    continue
                body = exc.read()[:200].decode(errors="replace")
                raise RestError(f"HTTP {exc.code} from {where}: {body}", exc.code) from None
            except (urllib.error.URLError, OSError, ValueError) as exc:
                raise RestError(f"REST call to {urllib.parse.urlsplit(url).path} failed: {exc}") from None
        raise RestError(f"still throttled (429) after {self.max_retries} retries", 429)


def _retry_after(value: str | None, attempt: int) -> float:
    try:
        return min(120.0, max(0.0, float(value))) if value is not None else min(60.0, 2.0 ** attempt)
    except ValueError:
        return min(60.0, 2.0 ** attempt)


def _bars(rows: list[tuple[int, dict]]) -> np.ndarray:
    out = np.zeros(len(rows), VENDOR_BAR_DTYPE)
    for i, (sym, b) in enumerate(rows):  # a few thousand REST records: off the hot path
        out[i] = (sym, _parse_time(b["t"]), b["o"], b["h"], b["l"], b["c"], b["v"], b.get("vw", np.nan),
                  b.get("n", 0))
    return out


class AlpacaRest:
    """Alpaca: `/v2/assets` (trading API) and `/v2/stocks/bars` (market data API)."""

    def __init__(self, s: Settings, client: RestClient | None = None) -> None:
        key = s.alpaca_key_id.get_secret_value() if s.alpaca_key_id else ""
        secret = s.alpaca_secret_key.get_secret_value() if s.alpaca_secret_key else ""
        self.client = client or RestClient({"APCA-API-KEY-ID": key, "APCA-API-SECRET-KEY": secret})
        self.data_url = (s.feed_rest_url or ALPACA_DATA_URL).rstrip("/")
        self.trading_url = (s.feed_rest_url or ALPACA_TRADING_URL).rstrip("/")
        self.feed = s.alpaca_feed

    def active_equities(self, exchanges: list[str]) -> list[str]:
        q = urllib.parse.urlencode({"status": "active", "asset_class": "us_equity"})
        assets = self.client.get(f"{self.trading_url}/v2/assets?{q}")
        want = {e.upper() for e in exchanges}
        return sorted({a["symbol"] for a in assets if isinstance(a, dict) and a.get("tradable", True)
                       and a.get("status", "active") == "active" and (not want or a.get("exchange", "") in want)})

    def bars(self, symbols: list[str], timeframe: str, start_ns: int, end_ns: int,
             chunk: int = 200) -> np.ndarray:
        """Bars ("1Day" | "1Min") of `symbols` in [start, end), in chunks of symbols, every page."""
        index = {s: i for i, s in enumerate(symbols)}
        rows: list[tuple[int, dict]] = []
        for k in range(0, len(symbols), chunk):
            params = {"symbols": ",".join(symbols[k:k + chunk]), "timeframe": timeframe,
                      "start": _rfc3339(start_ns), "end": _rfc3339(end_ns), "limit": 10000,
                      "adjustment": "raw", "feed": self.feed}
            for page in self._pages(f"{self.data_url}/v2/stocks/bars", params):
                for sym, bars in (page.get("bars") or {}).items():
                    if sym in index:
                        rows.extend((index[sym], b) for b in bars)
        return _bars(rows)

    def _pages(self, url: str, params: dict[str, Any]) -> Iterator[dict]:
        token = None
        while True:
            q = dict(params, **({"page_token": token} if token else {}))
            page = self.client.get(f"{url}?{urllib.parse.urlencode(q)}")
            yield page
            token = page.get("next_page_token")
            if not token:
                return


class PolygonRest:
    """Polygon/Massive: `/v3/reference/tickers` and `/v2/aggs/ticker/{T}/range/...` per ticker."""

    def __init__(self, s: Settings, client: RestClient | None = None) -> None:
        key = s.polygon_api_key.get_secret_value() if s.polygon_api_key else ""
        self.client = client or RestClient({"Authorization": f"Bearer {key}"})
        self.url = (s.feed_rest_url or POLYGON_URL).rstrip("/")

    def active_equities(self, exchanges: list[str]) -> list[str]:
        q = urllib.parse.urlencode({"market": "stocks", "active": "true", "type": "CS", "limit": 1000})
        want = {e.upper() for e in exchanges}
        out: set[str] = set()
        for page in self._pages(f"{self.url}/v3/reference/tickers?{q}"):
            for t in page.get("results") or []:
                if isinstance(t, dict) and (not want or t.get("primary_exchange", "") in want):
                    out.add(t["ticker"])
        return sorted(out)

    def bars(self, symbols: list[str], timeframe: str, start_ns: int, end_ns: int) -> np.ndarray:
        span = {"1Day": "1/day", "1Min": "1/minute"}[timeframe]
        rows: list[tuple[int, dict]] = []
        lo, hi = start_ns // 1_000_000, end_ns // 1_000_000 - 1  # ms, inclusive range
        for i, sym in enumerate(symbols):
            q = urllib.parse.urlencode({"adjusted": "false", "sort": "asc", "limit": 50000})
            url = f"{self.url}/v2/aggs/ticker/{urllib.parse.quote(sym)}/range/{span}/{lo}/{hi}?{q}"
            for page in self._pages(url):
                rows.extend((i, b) for b in page.get("results") or [] if start_ns <= _parse_time(b["t"]) < end_ns)
        return _bars(rows)

    def _pages(self, url: str) -> Iterator[dict]:
        while url:
            page = self.client.get(url)
            yield page
            nxt = urllib.parse.urlsplit(str(page.get("next_url") or ""))
            # follow the path and cursor on our own base URL: the key never goes to another host
            url = f"{self.url}{nxt.path}?{nxt.query}" if nxt.path else ""


def vendor_rest(s: Settings) -> AlpacaRest | PolygonRest:
    if s.feed == "alpaca":
        return AlpacaRest(s)
    if s.feed == "polygon":
        return PolygonRest(s)
    raise ValueError(f"feed {s.feed!r} has no vendor REST API")
