"""Gateway: FastAPI REST + WebSocket + dashboard, fed from the shared-memory alert feed.

uvicorn runs inside this process's event loop (uvloop); a background task polls the feed ring
every few milliseconds, fans alerts out to WebSocket clients and beats the heartbeat, so a
stalled event loop shows as a stale heartbeat.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket

import uvicorn

from procs.api.app import ConfigError, create_app
from procs.api.state import GatewayState
from procs.runtime import BootError, Context

log = logging.getLogger("scanner.gateway")
POLL_S = 0.002


async def _pump(ctx: Context, state: GatewayState, server: uvicorn.Server) -> None:
    """Alerts of this host from the shared-memory feed ring."""
    while ctx.should_run():
        ctx.beat()
        n = state.poll_feed()
        if n:
            ctx.count(n_in=n, n_out=n * len(state.clients))
        await asyncio.sleep(POLL_S)
    server.should_exit = True


def decode_alert(raw: bytes | str) -> dict | None:
    """One pub/sub message as an alert dict, or None when it is not one (not JSON, too deep, not
    an object with string `rule` and `symbol`, `tags` not a list): anyone who can PUBLISH on the
    channel can send it, and it must not reach the clients' filters or `recent`."""
    try:
        a = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not (isinstance(a, dict) and isinstance(a.get("rule"), str) and isinstance(a.get("symbol"), str)
            and isinstance(a.get("tags", []), list)):
        return None
    return a


async def _pump_redis(ctx: Context, state: GatewayState, server: uvicorn.Server) -> None:
    """With Redis configured, alerts of every host come from the `alerts` channel (the local
    feed ring is then not read, or local alerts would arrive twice)."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(ctx.settings.redis_url)
    backoff = 0.1
    malformed = 0
    while ctx.should_run():
        ctx.beat()
        try:
            pubsub = client.pubsub()
            await pubsub.subscribe("alerts")
            backoff = 0.1
            while ctx.should_run():
                ctx.beat()
                batch = []
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
                while msg is not None:
                    batch.append(msg["data"])
                    if len(batch) >= 2000:
                        break
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0)
                if batch:
                    alerts = [a for a in map(decode_alert, batch) if a is not None]
                    if len(alerts) < len(batch):  # counted in the gateway's drops (status, /metrics)
                        bad = len(batch) - len(alerts)
                        ctx.count(drops=bad)
                        malformed += bad
                        if malformed == bad or malformed // 1000 != (malformed - bad) // 1000:
                            log.warning("dropped %d malformed message(s) on the alerts channel (%d so far)",
                                        bad, malformed)
                    n = state.dispatch(alerts) if alerts else 0
                    ctx.count(n_in=n, n_out=n * len(state.clients))
        except (OSError, aioredis.RedisError) as exc:
            log.error("redis subscription lost (%s); retrying in %.1f s", exc, backoff)
            ctx.count(errors=1)
            await asyncio.sleep(backoff)
            backoff = min(5.0, backoff * 2)
    await client.aclose()
    server.should_exit = True


def _listen_socket(host: str, port: int) -> socket.socket:
    """A listening socket with SO_REUSEPORT, so several gateway processes share the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(False)
    return sock


async def _serve(ctx: Context) -> None:
    index = int(ctx.name.split("-", 1)[1]) if "-" in ctx.name else 0
    state = GatewayState(ctx.settings, ctx.shared, feed_consumer=index)
    try:
        app = create_app(state)
    except ConfigError as exc:
        raise BootError(str(exc)) from None
    config = uvicorn.Config(app, host=ctx.settings.http_host, port=ctx.settings.http_port,
                            log_level="warning", loop="none", lifespan="on", ws="websockets-sansio")
    server = uvicorn.Server(config)
    pump_fn = _pump_redis if ctx.settings.redis_url else _pump
    pump = asyncio.create_task(pump_fn(ctx, state, server))
    try:
        try:
            sock = _listen_socket(ctx.settings.http_host, ctx.settings.http_port)
        except OSError as exc:
            raise SystemExit(f"cannot listen: {exc}") from None
        await server.serve(sockets=[sock])
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
