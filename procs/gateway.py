"""Gateway: FastAPI REST + WebSocket + dashboard, fed from the shared-memory alert feed.

uvicorn runs inside this process's event loop (uvloop). Alerts are taken from the feed ring when
the publisher rings this gateway's feed bell (`procs.feedbell`): the event loop sleeps until
then, so an idle gateway makes a few wake-ups a second instead of hundreds, and an alert waits
for one wake-up, not for the next tick of a poll timer. A background task beats the heartbeat
and polls the ring every `BELL_POLL_S` besides (what no ring announced: alerts published before
the bell was bound), so a stalled event loop still shows as a stale heartbeat. Without a bell
(its name held elsewhere) the ring is polled on a schedule (`poll_delay`): every `POLL_S` from a
scan boundary for `FAST_WINDOW_S` and while alerts flow, every `SLOW_POLL_S` for the rest of the
period (scan cycles are aligned to the wall clock, so alerts arrive just after a boundary).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import time
from types import FrameType

import uvicorn

from procs.api.app import ConfigError, create_app
from procs.api.cluster import REFRESH_S, ClusterView
from procs.api.resume import StreamResume
from procs.api.state import GatewayState
from procs.api.subscriber import AlertSubscription
from procs.api.wire import AlertHead, heads_of
from procs.eventtime import event_mode
from procs.feedbell import Bell
from procs.runtime import BootError, Context
from scanner.backoff import Backoff
from scanner.config import reveal

log = logging.getLogger("scanner.gateway")
POLL_S = 0.002  # while alerts may arrive: just after a scan boundary, or while they flow
SLOW_POLL_S = 0.010  # the rest of a scan period (alerts that late come from an overrunning cycle)
FAST_WINDOW_S = 0.050  # after a boundary: scan, publisher pass and ring hand-offs fit in it
BELL_POLL_S = 0.25  # with a bell: heartbeat and a poll for alerts no ring announced (Redis: the read's timeout)
FEED_BATCH = 8192  # alerts taken from the ring per poll (a backlog: several polls, I/O between them)


def poll_delay(now: float, period: float, got: bool) -> float:
    """Seconds until the next poll of the feed ring, at wall time `now` with scan cycles every
    `period` seconds aligned to the wall clock (0: not aligned, e.g. a replay's event time);
    `got`: this poll found alerts (more of the same cycle may follow). Never sleeps past the
    next boundary, so a late alert waits at most SLOW_POLL_S and an on-time one at most POLL_S."""
    if got or period <= 0:
        return POLL_S
    phase = now % period
    if phase < min(FAST_WINDOW_S, period / 2):
        return POLL_S
    return max(POLL_S, min(SLOW_POLL_S, period - phase))


class _Server(uvicorn.Server):
    """uvicorn's server with its housekeeping tick once a second instead of every 0.1 s. The
    tick refreshes the Date header (once a second either way) and looks at `should_exit`; the
    nine other wake-ups a second were idle CPU. `stop()` and the exit signals end the wait at
    once, so stopping is not slower."""

    _loop: asyncio.AbstractEventLoop | None = None
    _woken: asyncio.Event | None = None

    async def main_loop(self) -> None:  # uvicorn's, with a 1 s tick (the counter counts 0.1 s)
        self._loop, self._woken = asyncio.get_running_loop(), asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 10) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), 1.0)
            should_exit = await self.on_tick(counter)

    def stop(self) -> None:
        """Make `serve` return (from the event loop, or from a signal handler)."""
        self.should_exit = True
        if self._loop is not None and self._woken is not None:
            self._loop.call_soon_threadsafe(self._woken.set)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self.should_exit:
            self.stop()


async def _pump(ctx: Context, state: GatewayState, server: _Server) -> None:
    """Alerts of this host from the shared-memory feed ring: on each ring of the feed bell, and
    every `BELL_POLL_S` (with no bell: on the `poll_delay` schedule)."""
    loop = asyncio.get_running_loop()
    period = 0.0 if event_mode(ctx.settings) else ctx.settings.scan_interval_ms / 1000.0
    bell = Bell.bind(ctx.settings.instance, state.feed_consumer)

    def poll(wake: str) -> int:
        n = state.poll_feed(FEED_BATCH)
        if n:
            ctx.count(n_in=n, n_out=n * len(state.clients))
            state.feed_wakes[wake] += n
        if n >= FEED_BATCH:  # a backlog: the rest after the loop's other work
            loop.call_soon(poll, wake)
        return n

    def rung() -> None:
        bell.drain()  # type: ignore[union-attr]
        poll("bell")

    if bell is not None:
        loop.add_reader(bell.fileno(), rung)
    try:
        while ctx.should_run():
            ctx.beat()
            n = poll("timer")
            await asyncio.sleep(BELL_POLL_S if bell is not None else poll_delay(time.time(), period, n > 0))
    finally:
        if bell is not None:
            loop.remove_reader(bell.fileno())
            bell.close()
        server.stop()


async def _pump_redis(ctx: Context, state: GatewayState, server: _Server) -> None:
    """With Redis configured, alerts of every host come from the `alerts` channel (the local
    feed ring is then not read, or local alerts would arrive twice)."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(reveal(ctx.settings.redis_url) or "")
    sub = AlertSubscription(client)
    resume = StreamResume()  # what is published while the subscription is down comes back from the stream
    backoff = Backoff()
    malformed = 0

    def deliver(heads: list[AlertHead], parts: list[bytes]) -> None:
        n = state.dispatch(heads, parts) if heads else 0
        ctx.count(n_in=n, n_out=n * len(state.clients))

    while ctx.should_run():
        ctx.beat()
        try:
            await sub.open()
            backoff.succeeded()
            gap = resume.gap
            deliver(*await resume.replay(client))  # repeats already dropped
            if resume.gap != gap:
                ctx.count(drops=resume.gap - gap)
            while ctx.should_run():
                ctx.beat()
                raws = await sub.read(BELL_POLL_S)
                for at in range(0, len(raws), FEED_BATCH):  # a backlog: a frame per FEED_BATCH alerts
                    batch = raws[at:at + FEED_BATCH]
                    heads, parts = heads_of(batch)
                    if len(heads) < len(batch):  # counted in the gateway's drops (status, /metrics)
                        bad = len(batch) - len(heads)
                        ctx.count(drops=bad)
                        malformed += bad
                        if malformed == bad or malformed // 1000 != (malformed - bad) // 1000:
                            log.warning("dropped %d malformed message(s) on the alerts channel (%d so far)",
                                        bad, malformed)
                    deliver(*resume.fresh(heads, parts))
                await resume.mark(client)
        except (OSError, aioredis.RedisError) as exc:
            delay = backoff.failed()
            log.error("redis subscription lost (%s); retrying in %.1f s", exc, delay)
            ctx.count(errors=1)
            await sub.close()
            await asyncio.sleep(delay)
    await sub.close()
    await client.aclose()
    server.stop()


async def _watch_cluster(ctx: Context, state: GatewayState) -> None:
    """With Redis: the cluster view (registry, every host's top lists and symbols) once a second."""
    import redis.asyncio as aioredis

    view = ClusterView(ctx.settings.instance, ctx.settings.registry_ttl_s)
    state.cluster = view
    client = aioredis.Redis.from_url(reveal(ctx.settings.redis_url) or "")
    backoff = Backoff()
    try:
        while ctx.should_run():
            try:
                await view.refresh(client)
                if backoff.succeeded():
                    log.info("cluster view: redis reachable again")
                await asyncio.sleep(REFRESH_S)
            except (OSError, aioredis.RedisError) as exc:
                delay = backoff.failed()
                if backoff.failures == 1:
                    log.error("cluster view: redis unavailable (%s); other hosts' data goes stale", exc)
                await asyncio.sleep(delay)
    finally:
        await client.aclose()


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


def _raise_fd_limit(clients: int) -> None:
    """Room for `clients` sockets plus REST and the process's own files (soft limit up to hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = clients + 1024 if hard == resource.RLIM_INFINITY else min(hard, clients + 1024)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


async def _serve(ctx: Context) -> None:
    _raise_fd_limit(ctx.settings.ws_max_clients)
    index = int(ctx.name.split("-", 1)[1]) if "-" in ctx.name else 0
    state = GatewayState(ctx.settings, ctx.shared, feed_consumer=index)
    try:
        app = create_app(state)
    except ConfigError as exc:
        raise BootError(str(exc)) from None
    # upgrade requests go to the feed's own protocol (procs/api/wsfeed.py), REST to FastAPI
    config = uvicorn.Config(app, host=ctx.settings.http_host, port=ctx.settings.http_port,
                            log_level="warning", loop="none", lifespan="on", ws=state.hub.protocol_class(),
                            log_config=None)  # our handlers: every line redacted (procs.runtime)
    server = _Server(config)
    pump_fn = _pump_redis if ctx.settings.redis_url else _pump
    pump = asyncio.create_task(pump_fn(ctx, state, server))
    tops = asyncio.create_task(state.hub.run_tops(ctx.should_run))
    cluster = asyncio.create_task(_watch_cluster(ctx, state)) if ctx.settings.redis_url else None
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
        if pump_fn is _pump:
            pump.cancel()  # asleep for up to BELL_POLL_S (the Redis pump ends its own reads)
        with contextlib.suppress(asyncio.CancelledError):
            await pump
        tops.cancel()
        if cluster is not None:
            cluster.cancel()
    if not server.started and not ctx.shared.control.shutdown:
        raise BootError(f"gateway could not listen on {ctx.settings.http_host}:{ctx.settings.http_port}")


def main(ctx: Context) -> None:
    try:
        import uvloop

        uvloop.run(_serve(ctx))
    except ImportError:
        asyncio.run(_serve(ctx))
