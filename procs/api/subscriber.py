"""The gateway's subscription to the Redis `alerts` channel, read in bulk.

redis-py's `PubSub.get_message` costs ~40 µs of Python per message (a parse, a dict, a timeout
context each), which a gateway pays for every alert of every host. Here redis-py only opens the
connection (URL, TLS, AUTH, client name: all its own), then SUBSCRIBE is written as RESP and the
replies are read straight from the connection's stream into a `hiredis.Reader` of our own: one
read per burst, about a microsecond per message (the publisher reads its replies the same way,
`procs.redis_out.read_replies`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import hiredis
import redis
import redis.asyncio as aioredis

READ_BYTES = 1 << 20


class AlertSubscription:
    """One subscription to `channel`; `read` returns the payloads published since the last call."""

    def __init__(self, client: aioredis.Redis, channel: str = "alerts") -> None:
        self.client = client
        self.channel = channel.encode()
        self._conn: Any = None
        self._stream: asyncio.StreamReader | None = None
        self._reader = hiredis.Reader()
        self._early: list[bytes] = []  # messages read while waiting for the subscription's confirmation

    async def open(self, timeout: float = 10.0) -> None:
        """Connect and subscribe; returns once Redis has confirmed the subscription, so that
        everything published from then on comes through `read`."""
        await self.close()
        self._reader = hiredis.Reader()
        self._early = []
        conn = self.client.connection_pool.make_connection()
        self._conn = conn
        await conn.connect()
        self._stream = conn._reader  # the connection's asyncio stream; redis-py never reads it again
        ch = self.channel
        await conn.send_packed_command(b"*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%b\r\n" % (len(ch), ch))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for reply in self._replies():
                if _kind(reply) == b"subscribe":
                    return
                self._collect(reply, self._early)
            left = deadline - loop.time()
            if left <= 0:
                raise redis.TimeoutError(f"no confirmation of SUBSCRIBE {ch.decode()}")
            await self._fill(left)

    async def read(self, timeout: float) -> list[bytes]:
        """The messages published on the channel and not read yet; waits up to `timeout` for the
        first. Raises `redis.ConnectionError` when the connection is lost."""
        out, self._early = self._early, []
        for reply in self._replies():
            self._collect(reply, out)
        if out:
            return out
        if not await self._fill(timeout):
            return out
        for reply in self._replies():
            self._collect(reply, out)
        return out

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn, self._stream = self._conn, None, None
            await conn.disconnect()

    def _replies(self) -> list[Any]:
        out = []
        reader = self._reader
        while (reply := reader.gets()) is not False:
            out.append(reply)
        return out

    def _collect(self, reply: Any, out: list[bytes]) -> None:
        if _kind(reply) == b"message" and len(reply) == 3 and isinstance(reply[2], bytes):
            out.append(reply[2])
        elif isinstance(reply, hiredis.ReplyError):
            raise redis.ResponseError(str(reply))

    async def _fill(self, timeout: float) -> bool:
        """Feed the reader what arrives within `timeout`; False when nothing did."""
        if self._stream is None:
            raise redis.ConnectionError("not subscribed")
        try:
            data = await asyncio.wait_for(self._stream.read(READ_BYTES), timeout)
        except TimeoutError:
            return False
        if not data:
            raise redis.ConnectionError("connection closed by the server")
        self._reader.feed(data)
        return True


def _kind(reply: Any) -> bytes | None:
    return reply[0] if isinstance(reply, list) and reply and isinstance(reply[0], bytes) else None
