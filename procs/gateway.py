"""Gateway: FastAPI REST + WebSocket + dashboard, fed from the shared-memory alert feed.

uvicorn runs inside this process's event loop (uvloop); a background task polls the feed ring
every few milliseconds, fans alerts out to WebSocket clients and beats the heartbeat, so a
stalled event loop shows as a stale heartbeat.
"""

from __future__ import annotations

import asyncio
import logging

import uvicorn

from procs.api.app import ConfigError, create_app
from procs.api.state import GatewayState
from procs.runtime import BootError, Context

log = logging.getLogger("scanner.gateway")
POLL_S = 0.002


async def _pump(ctx: Context, state: GatewayState, server: uvicorn.Server) -> None:
    while ctx.should_run():
        ctx.beat()
        n = state.poll_feed()
        if n:
            ctx.count(n_in=n, n_out=n * len(state.clients))
        await asyncio.sleep(POLL_S)
    server.should_exit = True


async def _serve(ctx: Context) -> None:
    state = GatewayState(ctx.settings, ctx.shared)
    try:
        app = create_app(state)
    except ConfigError as exc:
        raise BootError(str(exc)) from None
    config = uvicorn.Config(app, host=ctx.settings.http_host, port=ctx.settings.http_port,
                            log_level="warning", loop="none", lifespan="on", ws="websockets-sansio")
    server = uvicorn.Server(config)
    pump = asyncio.create_task(_pump(ctx, state, server))
    try:
        await server.serve()
    except SystemExit:  # uvicorn exits when it cannot bind
        pass
    finally:
        ctx.stopping = True
        await pump
    if not server.started and not ctx.shared.control.shutdown:
        raise BootError(f"gateway could not listen on {ctx.settings.http_host}:{ctx.settings.http_port}")


def main(ctx: Context) -> None:
    try:
        import uvloop

        uvloop.run(_serve(ctx))
    except ImportError:
        asyncio.run(_serve(ctx))
