"""Recent alerts and the live alert WebSocket."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect

from procs.api.deps import ReadAuth, StateDep, websocket_allowed
from procs.api.state import Client

router = APIRouter(tags=["alerts"])
CLIENT_QUEUE = 1000
TOP_COLUMNS = ["price", "change_pct", "day_volume", "relative_volume", "rsi_14", "vwap"]
USAGE = ('expected {"op": "subscribe", "rules": [...], "symbols": [...], "tags": [...]} or '
         '{"op": "top", "metric": "change_pct", "order": "desc", "limit": 20, "interval_s": 1}')


def _top_request(msg: dict) -> tuple[str, str, int, float] | str:
    """Validate a top-list subscription; returns (metric, order, limit, interval) or an error."""
    from procs.api.symbols import F8_METRICS

    metric, order = msg.get("metric", "change_pct"), msg.get("order", "desc")
    limit, interval = msg.get("limit", 20), msg.get("interval_s", 1.0)
    if metric not in F8_METRICS:
        return f"field 'metric': unknown metric {metric!r}; allowed: {', '.join(F8_METRICS)}"
    if order not in ("asc", "desc"):
        return "field 'order' must be 'asc' or 'desc'"
    if not isinstance(limit, int) or not 1 <= limit <= 500:
        return "field 'limit' must be an integer 1..500"
    if not isinstance(interval, (int, float)) or not 0.2 <= interval <= 60:
        return "field 'interval_s' must be a number 0.2..60"
    return metric, order, limit, float(interval)


@router.get("/api/alerts/recent", dependencies=[ReadAuth])
def recent(state: StateDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
           rule: str | None = None, symbol: str | None = None) -> list[dict]:
    """The newest alerts seen by this gateway, newest first."""
    out = []
    for a in reversed(state.recent):
        if (rule is None or a["rule"] == rule) and (symbol is None or a["symbol"] == symbol.upper()):
            out.append(a)
            if len(out) >= limit:
                break
    return out


def _subscription(msg: dict) -> tuple[set[str], set[str], set[str]] | str:
    """Validate a subscribe message; returns the sets or an error text."""
    sets = []
    for key in ("rules", "symbols", "tags"):
        v = msg.get(key, [])
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            return f"field {key!r} must be a list of strings"
        sets.append({x.upper() for x in v} if key == "symbols" else set(v))
    return sets[0], sets[1], sets[2]


@router.websocket("/ws")
async def ws(websocket: WebSocket) -> None:
    """Alerts as JSON frames. Send {"op":"subscribe","rules":[..],"symbols":[..],"tags":[..]}
    to filter (empty = everything); {"op":"top",...} for periodic top-list snapshots. Invalid
    messages get an error frame; the socket stays open."""
    state = websocket.app.state.gateway
    await websocket.accept()
    if not websocket_allowed(websocket):  # accept first so the client gets a reason, not a bare 403
        await websocket.close(code=4401, reason="missing or unknown API key")
        return
    await websocket.send_text(json.dumps({"type": "hello", "instance": state.settings.instance}))
    client = Client(asyncio.Queue(CLIENT_QUEUE))
    state.clients.add(client)  # only now: "hello" is always the first frame

    async def sender() -> None:
        while True:
            frame = await client.queue.get()
            if client.dropped != client.reported_dropped:
                await websocket.send_text(json.dumps({"type": "dropped", "count": client.dropped}))
                client.reported_dropped = client.dropped
            await websocket.send_text(frame)

    task = asyncio.create_task(sender())
    top_task: asyncio.Task | None = None

    async def top_sender(metric: str, order: str, limit: int, interval: float) -> None:
        while True:
            rows = state.top(metric, order, limit, TOP_COLUMNS)
            client.offer(json.dumps({"type": "top", "metric": metric, "order": order, "rows": rows}))
            await asyncio.sleep(interval)

    try:
        while True:
            text = await websocket.receive_text()
            try:
                msg = json.loads(text)
            except ValueError:
                await websocket.send_text(json.dumps({"type": "error", "error": "invalid JSON"}))
                continue
            op = msg.get("op") if isinstance(msg, dict) else None
            if op == "top":
                top = _top_request(msg)
                if isinstance(top, str):
                    await websocket.send_text(json.dumps({"type": "error", "error": top}))
                    continue
                if top_task is not None:
                    top_task.cancel()
                top_task = asyncio.create_task(top_sender(*top))
                continue
            if op != "subscribe":
                await websocket.send_text(json.dumps({"type": "error", "error": USAGE}))
                continue
            sub = _subscription(msg)
            if isinstance(sub, str):
                await websocket.send_text(json.dumps({"type": "error", "error": sub}))
                continue
            client.rules, client.symbols, client.tags = sub
            await websocket.send_text(json.dumps({"type": "subscribed", "rules": sorted(sub[0]),
                                                  "symbols": sorted(sub[1]), "tags": sorted(sub[2])}))
    except WebSocketDisconnect:
        pass
    finally:
        state.clients.discard(client)
        task.cancel()
        if top_task is not None:
            top_task.cancel()
