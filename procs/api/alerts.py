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


def _subscription(msg: object) -> tuple[set[str], set[str], set[str]] | str:
    """Validate a subscribe message; returns the sets or an error text."""
    if not isinstance(msg, dict) or msg.get("op") not in ("subscribe", "unsubscribe_all"):
        return "expected {\"op\": \"subscribe\", \"rules\": [...], \"symbols\": [...], \"tags\": [...]}"
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
    to filter (empty = everything). Invalid messages get an error frame; the socket stays."""
    state = websocket.app.state.gateway
    if not websocket_allowed(websocket):
        await websocket.close(code=4401, reason="missing or unknown API key")
        return
    await websocket.accept()
    client = Client(asyncio.Queue(CLIENT_QUEUE))
    state.clients.add(client)

    async def sender() -> None:
        while True:
            frame = await client.queue.get()
            if client.dropped != client.reported_dropped:
                await websocket.send_text(json.dumps({"type": "dropped", "count": client.dropped}))
                client.reported_dropped = client.dropped
            await websocket.send_text(frame)

    task = asyncio.create_task(sender())
    try:
        await websocket.send_text(json.dumps({"type": "hello", "instance": state.settings.instance}))
        while True:
            text = await websocket.receive_text()
            try:
                msg = json.loads(text)
            except ValueError:
                await websocket.send_text(json.dumps({"type": "error", "error": "invalid JSON"}))
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
