"""Alpaca market-data v2 stocks stream (`wss://stream.data.alpaca.markets/v2/{iex|sip}`): the
pure protocol layer (messages to send, frame parser, error classification); the socket lives in
the ingest process.

Protocol (Alpaca docs "WebSocket Stream" and "Real-time Stock Data"): the server greets with
`[{"T":"success","msg":"connected"}]`; the client sends `{"action":"auth","key","secret"}` and
gets `[{"T":"success","msg":"authenticated"}]` or an error; then `{"action":"subscribe",
"trades":[..],"quotes":[..],"statuses":[..],"lulds":[..]}` is acknowledged by a
`{"T":"subscription",...}` listing every channel (corrections and cancelErrors follow the
trades subscription automatically). Data arrive as JSON arrays of messages tagged by `T`:

| T | message | fields used |
| --- | --- | --- |
| t | trade | S symbol, p price, s size, t RFC-3339 ns time, c conditions, z tape |
| q | quote | S, bp/bs bid price/size, ap/as ask price/size, t |
| s | trading status | S, sc status code, rc reason code, t |
| l | LULD band | S, u limit-up price, d limit-down price, t |
| c | correction | S, op/os original price/size, cp/cs/cc corrected price/size/conditions, t, z |
| x | cancel/error | S, p, s, a ("C" cancel, "E" error), t |

Bars ("b", "u", "d") are well-formed but not consumed: counted in `ignored`.
"""

from __future__ import annotations

from typing import Literal

import msgspec
import numpy as np

from scanner.feeds.common import SymbolMap
from scanner.feeds.conditions import FlagCache, alpaca_flags
from scanner.feeds.fastjson import ALPACA, TradeScanner
from scanner.feeds.frames import (
    CORRECTION_DTYPE,
    LULD_DTYPE,
    QUOTE_DTYPE,
    STATUS_DTYPE,
    FrameDecoder,
    ParsedFrame,
    VendorParser,
    fill,
    good_ts,
    keep_valid,
    non_negative,
    pack_code,
    positive,
    rfc3339_ns,
    symbol_rows,
    valid_trades,
)

ErrorClass = Literal["fatal", "reconnect", "ignore"]


class _Msg(msgspec.Struct, tag_field="T", gc=False):
    pass


class Trade(_Msg, tag="t"):
    S: str
    p: float
    s: float
    t: str
    c: tuple[str, ...] = ()
    z: str = ""


class Quote(_Msg, tag="q"):
    S: str
    bp: float
    bs: float
    ap: float
    as_: float = msgspec.field(name="as")
    t: str = ""


class Status(_Msg, tag="s"):
    S: str
    sc: str
    t: str
    rc: str = ""


class Luld(_Msg, tag="l"):
    S: str
    u: float
    d: float
    t: str


class Correction(_Msg, tag="c"):
    S: str
    op: float
    os: float
    cp: float
    cs: float
    t: str
    cc: tuple[str, ...] = ()
    z: str = ""


class CancelError(_Msg, tag="x"):
    S: str
    p: float
    s: float
    t: str
    a: str = ""


class Success(_Msg, tag="success"):
    msg: str = ""


class Error(_Msg, tag="error"):
    code: int = 0
    msg: str = ""


class Subscription(_Msg, tag="subscription"):
    trades: list[str] = []
    quotes: list[str] = []
    bars: list[str] = []
    updatedBars: list[str] = []  # noqa: N815 - the vendor's field name
    dailyBars: list[str] = []  # noqa: N815
    statuses: list[str] = []
    lulds: list[str] = []
    corrections: list[str] = []
    cancelErrors: list[str] = []  # noqa: N815


class _Bar(_Msg, tag="b"):
    pass


class _UpdatedBar(_Msg, tag="u"):
    pass


class _DailyBar(_Msg, tag="d"):
    pass


Message = (Trade | Quote | Status | Luld | Correction | CancelError | Success | Error | Subscription | _Bar
           | _UpdatedBar | _DailyBar)
_CONTROL = (Success, Error, Subscription)
_IGNORED = (_Bar, _UpdatedBar, _DailyBar)

# Trading status codes (Alpaca "Real-time Stock Data", status codes per tape). CTA: "2" trading
# halt, "3" resume. UTP: "H" trading halt, "P" volatility trading pause, "T" trading resumption.
# Others (quotation resumption "Q", imbalances, SSR, price indications) change no trading state.
HALT_CODES = frozenset({"2", "H", "P"})
RESUME_CODES = frozenset({"3", "T"})

# Stream error codes (Alpaca "WebSocket Stream", Errors) and what a client does about them.
ERROR_CODES: dict[int, tuple[str, ErrorClass]] = {
    400: ("invalid syntax", "reconnect"),  # a garbled message of ours: a fresh session resends it
    401: ("not authenticated", "reconnect"),  # spoke before auth completed: re-auth on a new session
    402: ("auth failed", "fatal"),  # wrong key/secret: retrying cannot help
    403: ("already authenticated", "ignore"),  # a duplicate auth; the session is fine
    404: ("auth timeout", "reconnect"),  # auth came too late: reconnect and auth at once
    405: ("symbol limit exceeded", "fatal"),  # the plan's symbol limit: entitlement
    406: ("connection limit exceeded", "reconnect"),  # usually our previous socket not reaped yet;
    # back off and retry, as alpaca-py does (a second scanner on the same key keeps failing, visibly)
    407: ("slow client", "reconnect"),  # the server dropped us for reading too slowly
    409: ("insufficient subscription", "fatal"),  # the feed (e.g. sip) is not in the plan
    410: ("invalid subscribe action for this feed", "fatal"),  # a channel this feed lacks: configuration
    500: ("internal error", "reconnect"),
}


def auth_message(key: str, secret: str) -> str:
    """The auth action (credentials go only into this message, never into logs)."""
    return msgspec.json.encode({"action": "auth", "key": key, "secret": secret}).decode()


def subscribe_message(trades: list[str] | tuple[str, ...] = (), quotes: list[str] | tuple[str, ...] = (),
                      statuses: list[str] | tuple[str, ...] = (), lulds: list[str] | tuple[str, ...] = (),
                      action: Literal["subscribe", "unsubscribe"] = "subscribe") -> str:
    """A subscribe (or unsubscribe) action; "*" subscribes every symbol of a channel.
    Corrections and cancel/errors come with the trades subscription."""
    msg: dict[str, object] = {"action": action}
    for name, syms in (("trades", trades), ("quotes", quotes), ("statuses", statuses), ("lulds", lulds)):
        if syms:
            msg[name] = list(syms)
    return msgspec.json.encode(msg).decode()


def classify_error(control: dict) -> ErrorClass:
    """What a client does about a control message: "fatal" (stop, clear message, do not
    retry), "reconnect" (back off, reconnect, resubscribe) or "ignore"."""
    if control.get("T") != "error":
        return "ignore"
    code = control.get("code")
    entry = ERROR_CODES.get(code) if isinstance(code, int) else None
    return entry[1] if entry else "reconnect"


class AlpacaParser(VendorParser):
    """Frames of the v2 stocks stream -> `ParsedFrame` (trades, quotes, statuses, LULD bands,
    corrections and cancels as numpy columns). One instance per connection; not thread-safe."""

    trade_type = Trade

    def __init__(self, symbols: SymbolMap, max_frame_bytes: int = 64 << 20, fast: bool = True) -> None:
        self.symbols = symbols
        self._decoder = FrameDecoder(Message, max_frame_bytes)
        self._fast = TradeScanner(ALPACA, symbols) if fast else None
        self._flags = FlagCache(alpaca_flags)

    def _trades(self, tr: list[Trade], out: ParsedFrame) -> None:
        rows = symbol_rows(self.symbols, [m.S for m in tr])
        px = np.array([m.p for m in tr], np.float64)
        sz = np.array([m.s for m in tr], np.float64)
        ts = rfc3339_ns([m.t for m in tr])
        flags = self._flags.many([(m.z, m.c) for m in tr])
        out.trades = valid_trades(out, rows, ts, px, sz, flags)

    def _others(self, msgs: list, out: ParsedFrame) -> None:
        groups: dict[type, list] = {}
        for m in msgs:
            groups.setdefault(m.__class__, []).append(m)
        out.control = [{"T": m.__struct_config__.tag, **msgspec.structs.asdict(m)} for m in msgs
                       if m.__class__ in _CONTROL]  # in frame order
        out.ignored += sum(len(groups.get(cls, ())) for cls in _IGNORED)
        if Quote in groups:
            self._quotes(groups[Quote], out)
        if Status in groups:
            self._statuses(groups[Status], out)
        if Luld in groups:
            self._lulds(groups[Luld], out)
        if Correction in groups or CancelError in groups:
            self._corrections(groups.get(Correction, []), groups.get(CancelError, []), out)

    def _quotes(self, q: list[Quote], out: ParsedFrame) -> None:
        rows = symbol_rows(self.symbols, [m.S for m in q])
        bid, ask = np.array([m.bp for m in q], np.float64), np.array([m.ap for m in q], np.float64)
        bs, asz = np.array([m.bs for m in q], np.float64), np.array([m.as_ for m in q], np.float64)
        ts = rfc3339_ns([m.t for m in q])
        ok = good_ts(ts) & non_negative(bid) & non_negative(ask) & non_negative(bs) & non_negative(asz)
        keep = keep_valid(out, ok, rows, "quote")
        out.quotes = fill(QUOTE_DTYPE, keep, sym=rows, ts_ns=ts, bid=bid, ask=ask, bid_size=bs, ask_size=asz)

    def _statuses(self, st: list[Status], out: ParsedFrame) -> None:
        change = [m for m in st if m.sc in HALT_CODES or m.sc in RESUME_CODES]
        out.ignored += len(st) - len(change)
        if not change:
            return
        rows = symbol_rows(self.symbols, [m.S for m in change])
        ts = rfc3339_ns([m.t for m in change])
        halted = np.array([m.sc in HALT_CODES for m in change], np.uint8)
        reason = np.array([pack_code(m.rc) for m in change], np.int64)
        keep = keep_valid(out, good_ts(ts), rows, "status")
        out.statuses = fill(STATUS_DTYPE, keep, sym=rows, ts_ns=ts, halted=halted, reason=reason)

    def _lulds(self, lu: list[Luld], out: ParsedFrame) -> None:
        rows = symbol_rows(self.symbols, [m.S for m in lu])
        up, down = np.array([m.u for m in lu], np.float64), np.array([m.d for m in lu], np.float64)
        ts = rfc3339_ns([m.t for m in lu])
        keep = keep_valid(out, good_ts(ts) & positive(up) & non_negative(down) & (down <= up), rows, "luld")
        out.lulds = fill(LULD_DTYPE, keep, sym=rows, ts_ns=ts, upper=up, lower=down)

    def _corrections(self, co: list[Correction], ce: list[CancelError], out: ParsedFrame) -> None:
        # corrections first, then cancels/errors (new price NaN = the trade is void)
        rows = symbol_rows(self.symbols, [m.S for m in co] + [m.S for m in ce])
        ts = rfc3339_ns([m.t for m in co] + [m.t for m in ce])
        op = np.array([m.op for m in co] + [m.p for m in ce], np.float64)
        os_ = np.array([m.os for m in co] + [m.s for m in ce], np.float64)
        nan = [float("nan")] * len(ce)
        cp = np.array([m.cp for m in co] + nan, np.float64)
        cs = np.array([m.cs for m in co] + [0.0] * len(ce), np.float64)
        flags = np.concatenate([self._flags.many([(m.z, m.cc) for m in co]), np.zeros(len(ce), np.uint32)])
        is_cancel = np.arange(len(rows)) >= len(co)
        ok = good_ts(ts) & positive(op) & positive(os_) & (is_cancel | (positive(cp) & positive(cs)))
        keep = keep_valid(out, ok, rows, "correction")
        out.corrections = fill(CORRECTION_DTYPE, keep, sym=rows, ts_ns=ts, orig_price=op, orig_size=os_,
                               new_price=cp, new_size=cs, new_flags=flags)

