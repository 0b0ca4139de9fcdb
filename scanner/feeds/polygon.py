"""Polygon (now Massive) stocks WebSocket (`wss://socket.massive.com/stocks`, formerly
`socket.polygon.io`): the pure protocol layer (messages to send, frame parser, error
classification); the socket lives in the ingest process.

Protocol (Massive docs "WebSocket / Stocks": Overview, Trades, Quotes, LULD; and the official
client `massive.websocket.WebSocketClient`): the server greets with
`[{"ev":"status","status":"connected","message":"Connected Successfully"}]`; the client sends
`{"action":"auth","params":KEY}` and gets status "auth_success" or "auth_failed"; then
`{"action":"subscribe","params":"T.AAPL,Q.*,LULD.*"}` is acknowledged by one status "success"
per topic. Data arrive as JSON arrays of messages tagged by `ev`:

| ev | message | fields used |
| --- | --- | --- |
| T | trade | sym, p price, s size, t SIP time (Unix ms), c condition ids |
| Q | quote | sym, bp/bs bid price/size, ap/as ask price/size, t (ms) |
| LULD | LULD band | T symbol, h limit-up, l limit-down, i indicators, t (ms) |
| status | control | status, message |

The LULD indicators 17 (trading halt) and 18 (trading resumption) also produce a trading-status
row (Massive sends them for Nasdaq-listed securities only). Aggregates, imbalances and fair
market values are well-formed but not consumed: counted in `ignored`. Times are Unix ms as
documented; a value of 1e14 or more is read as us and 1e17 or more as ns, so a feed that
switches to finer units stays exact.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
import numpy as np

from scanner.feeds.common import SymbolMap
from scanner.feeds.conditions import FlagCache, polygon_flags
from scanner.feeds.fastjson import POLYGON, TradeScanner
from scanner.feeds.frames import (
    LULD_DTYPE,
    QUOTE_DTYPE,
    STATUS_DTYPE,
    FrameDecoder,
    ParsedFrame,
    VendorParser,
    fill,
    keep_valid,
    non_negative,
    pack_code,
    positive,
    symbol_rows,
    valid_trades,
)

ErrorClass = Literal["fatal", "reconnect", "ignore"]
_Time = Annotated[int, msgspec.Meta(ge=0, lt=2**62)]
LULD_HALT, LULD_RESUME = 17, 18


class _Msg(msgspec.Struct, tag_field="ev", gc=False):
    pass


class Trade(_Msg, tag="T"):
    sym: str
    p: float
    s: float
    t: _Time
    c: tuple[int, ...] = ()


class Quote(_Msg, tag="Q"):
    sym: str
    bp: float
    bs: float
    ap: float
    as_: float = msgspec.field(name="as")
    t: _Time = 0


class Luld(_Msg, tag="LULD"):
    T: str
    h: float
    l: float  # noqa: E741 - the vendor's field name
    t: _Time
    i: tuple[int, ...] = ()


class StatusMsg(_Msg, tag="status"):
    status: str = ""
    message: str = ""


class _Agg(_Msg, tag="A"):
    pass


class _AggMinute(_Msg, tag="AM"):
    pass


class _Imbalance(_Msg, tag="NOI"):
    pass


class _FairValue(_Msg, tag="FMV"):
    pass


Message = Trade | Quote | Luld | StatusMsg | _Agg | _AggMinute | _Imbalance | _FairValue
_IGNORED = (_Agg, _AggMinute, _Imbalance, _FairValue)

# Status values the server sends (Massive docs; massive.websocket treats "connected",
# "auth_success" and "success" as fine and logs the others).
STATUS_CLASSES: dict[str, ErrorClass] = {
    "connected": "ignore",
    "auth_success": "ignore",
    "success": "ignore",  # subscription acknowledgement
    "auth_failed": "fatal",  # wrong or revoked key: retrying cannot help
    "max_connections": "reconnect",  # usually our own previous socket not closed yet: back off
    "slow_consumer": "reconnect",  # the server dropped us for reading too slowly
    "force_disconnect": "reconnect",
    "error": "reconnect",
}
# An "error" status whose message says the plan lacks the data is an entitlement error.
_ENTITLEMENT_WORDS = ("not authorized", "not entitled", "upgrade", "your plan", "subscription")


def auth_message(key: str) -> str:
    """The auth action (the key goes only into this message, never into logs)."""
    return msgspec.json.encode({"action": "auth", "params": key}).decode()


def subscribe_message(trades: list[str] | tuple[str, ...] = (), quotes: list[str] | tuple[str, ...] = (),
                      lulds: list[str] | tuple[str, ...] = (),
                      action: Literal["subscribe", "unsubscribe"] = "subscribe") -> str:
    """A subscribe (or unsubscribe) action: topics "T.<sym>", "Q.<sym>", "LULD.<sym>" ("*" for
    every symbol) joined by commas."""
    topics = [f"{prefix}.{s}" for prefix, syms in (("T", trades), ("Q", quotes), ("LULD", lulds)) for s in syms]
    return msgspec.json.encode({"action": action, "params": ",".join(topics)}).decode()


def classify_error(control: dict) -> ErrorClass:
    """What a client does about a status message: "fatal" (stop, clear message, do not
    retry), "reconnect" (back off, reconnect, resubscribe) or "ignore" (informational)."""
    if control.get("ev") != "status":
        return "ignore"
    status = str(control.get("status", ""))
    cls = STATUS_CLASSES.get(status, "ignore")
    if status == "error" and any(w in str(control.get("message", "")).lower() for w in _ENTITLEMENT_WORDS):
        return "fatal"
    return cls


def ms_to_ns(t: np.ndarray) -> np.ndarray:
    """Vendor times to epoch ns: ms as documented; >= 1e14 read as us, >= 1e17 as ns."""
    return np.where(t >= 10**17, t, np.where(t >= 10**14, t * 1_000, t * 1_000_000))


class PolygonParser(VendorParser):
    """Frames of the stocks WebSocket -> `ParsedFrame` (trades, quotes, LULD bands and the
    halts/resumptions they carry). One instance per connection; not thread-safe."""

    trade_type = Trade

    def __init__(self, symbols: SymbolMap, max_frame_bytes: int = 64 << 20, fast: bool = True) -> None:
        self.symbols = symbols
        self._decoder = FrameDecoder(Message, max_frame_bytes)
        self._fast = TradeScanner(POLYGON, symbols) if fast else None
        self._flags = FlagCache(polygon_flags)

    def _trades(self, tr: list[Trade], out: ParsedFrame) -> None:
        rows = symbol_rows(self.symbols, [m.sym for m in tr])
        px = np.array([m.p for m in tr], np.float64)
        sz = np.array([m.s for m in tr], np.float64)
        ts = ms_to_ns(np.array([m.t for m in tr], np.int64))
        flags = self._flags.many([m.c for m in tr])
        out.trades = valid_trades(out, rows, ts, px, sz, flags)

    def _others(self, msgs: list, out: ParsedFrame) -> None:
        groups: dict[type, list] = {}
        for m in msgs:
            groups.setdefault(m.__class__, []).append(m)
        for m in groups.get(StatusMsg, ()):
            out.control.append({"ev": "status", "status": m.status, "message": m.message})
        out.ignored += sum(len(groups.get(cls, ())) for cls in _IGNORED)
        if Quote in groups:
            q = groups[Quote]
            rows = symbol_rows(self.symbols, [m.sym for m in q])
            bid, ask = np.array([m.bp for m in q], np.float64), np.array([m.ap for m in q], np.float64)
            bs, asz = np.array([m.bs for m in q], np.float64), np.array([m.as_ for m in q], np.float64)
            ts = ms_to_ns(np.array([m.t for m in q], np.int64))
            ok = (ts > 0) & non_negative(bid) & non_negative(ask) & non_negative(bs) & non_negative(asz)
            keep = keep_valid(out, ok, rows, "quote")
            out.quotes = fill(QUOTE_DTYPE, keep, sym=rows, ts_ns=ts, bid=bid, ask=ask, bid_size=bs, ask_size=asz)
        if Luld in groups:
            self._lulds(groups[Luld], out)

    def _lulds(self, lu: list[Luld], out: ParsedFrame) -> None:
        rows = symbol_rows(self.symbols, [m.T for m in lu])
        up, down = np.array([m.h for m in lu], np.float64), np.array([m.l for m in lu], np.float64)
        ts = ms_to_ns(np.array([m.t for m in lu], np.int64))
        state = np.array([1 if LULD_HALT in m.i else 0 if LULD_RESUME in m.i else -1 for m in lu], np.int64)
        bands = positive(up) & non_negative(down) & (down <= up)
        # a halt/resume message may carry no bands; it is still a good message
        keep = keep_valid(out, (ts > 0) & (bands | (state >= 0)), rows, "luld")
        out.lulds = fill(LULD_DTYPE, keep & bands, sym=rows, ts_ns=ts, upper=up, lower=down)
        change = keep & (state >= 0)
        if change.any():
            reason = np.where(state == 1, pack_code(str(LULD_HALT)), pack_code(str(LULD_RESUME)))
            out.statuses = fill(STATUS_DTYPE, change, sym=rows, ts_ns=ts, halted=state.astype(np.uint8),
                                reason=reason)
