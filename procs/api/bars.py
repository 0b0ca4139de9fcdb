"""1-minute bars of a symbol: from PostgreSQL when a database is configured (any range), else
from the shared-memory bar history (the last K closed bars)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request

from procs.api.cluster import ask_owner
from procs.api.deps import ReadAuth, StateDep
from scanner.config import reveal
from scanner.metrics import HIST

router = APIRouter(prefix="/api/bars", tags=["bars"], dependencies=[ReadAuth])
FIELDS = ("open", "high", "low", "close", "volume", "vwap", "trades")


def _iso(minute_ns: int) -> str:
    return datetime.fromtimestamp(minute_ns / 1e9, UTC).isoformat()


@router.get("/{symbol}")
def bars(
    symbol: str,
    state: StateDep,
    request: Request,
    start: Annotated[datetime | None, Query(description="ISO time, inclusive (default: the limit's worth back).")]
    = None,
    end: Annotated[datetime | None, Query(description="ISO time, exclusive (default: now).")] = None,
    limit: Annotated[int, Query(ge=1, le=20_000)] = 390,
) -> dict[str, Any]:
    """Closed 1-minute bars, oldest first: `{"symbol", "source", "bars": [{"t", open..trades}]}`. A
    symbol of another host of the cluster comes from the shared database, else from that host."""
    sym = symbol.upper()
    start, end = (t.replace(tzinfo=UTC) if t is not None and t.tzinfo is None else t for t in (start, end))
    if sym not in state.row_of and not state.settings.database_url:
        remote = ask_owner(state, request, sym)
        if remote is not None:
            return remote
        raise HTTPException(404, detail=f"unknown symbol {symbol!r}")
    if start and end and start >= end:
        raise HTTPException(422, detail=[{"loc": ["query", "start"], "msg": "start must be before end",
                                          "type": "value_error"}])
    if state.settings.database_url:
        url = reveal(state.settings.database_url) or ""
        return {"symbol": sym, "source": "postgres", "bars": _from_db(url, sym, start, end, limit)}
    return {"symbol": sym, "source": "memory", "bars": _from_memory(state, state.row_of[sym], start, end, limit)}


def _from_db(url: str, sym: str, start: datetime | None, end: datetime | None, limit: int) -> list[dict]:
    import psycopg

    q = ["SELECT bucket, open, high, low, close, volume, vwap, trades FROM bars_1m WHERE symbol = %s"]
    args: list[Any] = [sym]
    if start is not None:
        q.append("AND bucket >= %s")
        args.append(start)
    if end is not None:
        q.append("AND bucket < %s")
        args.append(end)
    q.append("ORDER BY bucket DESC LIMIT %s")
    args.append(limit)
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            rows = conn.execute(" ".join(q), args).fetchall()
    except psycopg.Error as exc:
        raise HTTPException(503, detail=f"bar database unavailable: {exc}") from None
    return [{"t": r[0].isoformat(), **dict(zip(FIELDS, r[1:], strict=True))} for r in reversed(rows)]


def _from_memory(state, row: int, start: datetime | None, end: datetime | None,  # type: ignore[no-untyped-def]
                 limit: int) -> list[dict]:
    h = state.shared.history
    k = h.depth
    n = min(int(h.head[row]), k)
    fields = np.array([HIST["minute"], *(HIST[f] for f in FIELDS)], np.int64)
    out = np.empty((len(fields), 1))
    rows = []
    for ago in range(n, 0, -1):  # oldest first; one seqlocked read per bar (K is small)
        h.read(row, row + 1, fields, np.full(len(fields), ago, np.int64), out)
        minute_ns = int(out[0, 0]) * 60_000_000_000
        if (start and minute_ns < start.timestamp() * 1e9) or (end and minute_ns >= end.timestamp() * 1e9):
            continue
        rows.append({"t": _iso(minute_ns), **{f: float(out[i + 1, 0]) for i, f in enumerate(FIELDS)}})
    return rows[-limit:]
