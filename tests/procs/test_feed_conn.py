"""The vendor socket thread against the local vendor servers: handshake, a silent connection
declared dead and reconnected, fatal refusals (auth, entitlement) without a reconnect loop,
reconnects after a dropped connection, Polygon's session."""

from __future__ import annotations

import queue
import time

import pytest

from procs.feed_conn import FeedConnection, alpaca_session, polygon_session
from scanner.feeds import alpaca, polygon
from tests.vendors.messages import alpaca_quote, polygon_quote

T0 = 1_381_239_000_000_000_000


def _alpaca_conn(url: str, *, secret: str = "test-secret", dead_after_s: float = 30.0,
                 market_open: bool = True) -> FeedConnection:
    proto = alpaca_session(lambda: alpaca.auth_message("test-key", secret),
                           lambda: alpaca.subscribe_message(quotes=["AIG"]), alpaca.classify_error)
    return FeedConnection(url, proto, dead_after_s=dead_after_s, backoff_min_s=0.05, backoff_max_s=0.2,
                          market_open=lambda _ns: market_open, handshake_timeout_s=5.0)


def _events(conn: FeedConnection, until: str, count: int = 1, timeout: float = 30.0) -> list[tuple]:
    out: list[tuple] = []
    deadline = time.monotonic() + timeout
    while sum(e[0] == until for e in out) < count:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {count} x {until!r} event(s) within {timeout} s: {[e[0] for e in out]}")
        try:
            out.append(conn.events.get(timeout=min(left, 0.2)))
        except queue.Empty:
            continue
    return out


def test_silent_connection_is_dead_and_reconnects(alpaca_stream) -> None:
    stream = alpaca_stream([alpaca_quote("AIG", T0, 10.0, 10.1)], batch=1)
    conn = _alpaca_conn(stream.url, dead_after_s=1.0)
    conn.start()
    try:
        ev = _events(conn, "up", 2)
    finally:
        conn.stop()
    kinds = [e[0] for e in ev]
    assert kinds.index("frame") < kinds.index("down") < len(kinds) - 1
    assert "dead" in next(e for e in ev if e[0] == "down")[2]
    assert stream.connections == 2


def test_quiet_outside_market_hours_is_not_dead(alpaca_stream) -> None:
    stream = alpaca_stream([], batch=1)
    conn = _alpaca_conn(stream.url, dead_after_s=0.5, market_open=False)
    conn.start()
    try:
        _events(conn, "up")
        time.sleep(2.0)
        assert conn.events.empty() and stream.connections == 1
    finally:
        conn.stop()


@pytest.mark.parametrize(("options", "code"), [({}, "402"), ({"entitled": False}, "409")])
def test_refusals_are_fatal_without_a_reconnect_loop(alpaca_stream, options, code) -> None:
    stream = alpaca_stream([], **options)
    conn = _alpaca_conn(stream.url, secret="test-secret" if options else "wrong")
    conn.start()
    try:
        ev = _events(conn, "fatal")
    finally:
        conn.stop()
    assert code in ev[-1][1] and "wrong" not in ev[-1][1]
    assert stream.connections == 1


def test_dropped_connection_reconnects_and_resubscribes(alpaca_stream) -> None:
    msgs = [alpaca_quote("AIG", T0 + i, 10.0, 10.1) for i in range(10)]
    stream = alpaca_stream(msgs, batch=2, drop_after=4)
    conn = _alpaca_conn(stream.url)
    conn.start()
    try:
        ev = _events(conn, "up", 2)
        ev += _events(conn, "frame", 3)
    finally:
        conn.stop()
    assert [e[0] for e in ev].count("down") == 1
    subs = [m for m in stream.received if isinstance(m, dict) and m.get("action") == "subscribe"]
    assert len(subs) == 2 and subs[0] == subs[1]


def test_polygon_session(polygon_stream) -> None:
    stream = polygon_stream([polygon_quote("AIG", T0, 10.0, 10.1)])
    proto = polygon_session(lambda: polygon.auth_message("test-key"),
                            lambda: polygon.subscribe_message(quotes=["AIG"]), polygon.classify_error)
    conn = FeedConnection(stream.url, proto, dead_after_s=30.0, backoff_min_s=0.05, backoff_max_s=0.2,
                          market_open=lambda _ns: True)
    conn.start()
    try:
        ev = _events(conn, "frame")
    finally:
        conn.stop()
    assert ev[0][0] == "up" and b"AIG" in (ev[-1][1] if isinstance(ev[-1][1], bytes) else ev[-1][1].encode())
