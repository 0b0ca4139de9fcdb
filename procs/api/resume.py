"""A gateway's pub/sub subscription loses what is published while it is away: on every
(re)subscription, read the missed alerts back from the `alerts` stream (issue 10.9).

While subscribed, the last stream id is sampled once a second (`mark`). After a reconnect,
`replay` reads the stream from that id on: every alert published while the subscription was
down is in it, unless the stream was trimmed past the id (MAXLEN) - then the entries added
meanwhile that are no longer there are counted as a gap (`XINFO STREAM` entries-added). The
entries between the last sample and the disconnect, and those XADDed after the new SUBSCRIBE,
come twice (pub/sub and stream): `fresh` drops repeats by (host, worker, seq), which is unique
per alert.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

from procs.api.wire import AlertHead, heads_of

log = logging.getLogger("scanner.gateway")
STREAM = "alerts"
PAGE = 2000


class StreamResume:
    def __init__(self, max_replay: int = 100_000, remember: int = 200_000, sample_s: float = 1.0) -> None:
        self.max_replay = max_replay
        self.sample_s = sample_s
        self.last_id: bytes | None = None  # newest stream id known to be covered by pub/sub
        self.added: int | None = None  # the stream's entries-added counter at `last_id`
        self.next_mark = 0.0
        self._seen: set[tuple[Any, Any, Any]] = set()
        self._order: deque[tuple[Any, Any, Any]] = deque()
        self._remember = remember
        self.replayed = 0  # alerts read back from the stream after reconnects
        self.gap = 0  # alerts that were trimmed from the stream before they could be read back

    def fresh(self, heads: list[AlertHead], parts: list[bytes]) -> tuple[list[AlertHead], list[bytes]]:
        """The alerts (heads, bytes) not delivered before (each remembered for the next
        `remember` alerts)."""
        out_h: list[AlertHead] = []
        out_p: list[bytes] = []
        seen = self._seen
        for head, part in zip(heads, parts, strict=True):
            key = head.key
            if key in seen:
                continue
            seen.add(key)
            self._order.append(key)
            out_h.append(head)
            out_p.append(part)
        while len(self._order) > self._remember:
            seen.discard(self._order.popleft())
        return out_h, out_p

    async def mark(self, client: Any, force: bool = False) -> None:
        """Sample the stream's newest id (at most once per `sample_s` unless `force`)."""
        now = time.monotonic()
        if not force and now < self.next_mark:
            return
        self.next_mark = now + self.sample_s
        info = await _info(client)
        if info is not None:
            self.last_id, self.added = info

    async def replay(self, client: Any) -> tuple[list[AlertHead], list[bytes]]:
        """After a (re)subscription: the alerts added to the stream since the last `mark` and up
        to now, oldest first (later ones arrive through the new subscription). At most
        `max_replay`; what is beyond the bound, or already trimmed, is counted in `gap`."""
        if self.last_id is None:  # first subscription: nothing was missed
            await self.mark(client, force=True)
            return [], []
        info = await _info(client)
        if info is None:
            return [], []
        start, added_before = self.last_id, self.added or 0
        end, added_now = info
        raws: list[bytes] = []
        read = 0
        cursor = b"(" + start
        while read < self.max_replay:
            entries = await client.xrange(STREAM, min=cursor, max=end, count=min(PAGE, self.max_replay - read))
            if not entries:
                break
            for _entry_id, fields in entries:
                read += 1
                raw = fields.get(b"alert") if isinstance(fields, dict) else None
                if isinstance(raw, bytes):
                    raws.append(raw)
            cursor = b"(" + entries[-1][0]
        missing = added_now - added_before - read
        if missing > 0:
            self.gap += missing
            log.error("alerts stream: %d alerts missed while the subscription was down could not be read "
                      "back (trimmed from the stream, or beyond the replay bound of %d)", missing, self.max_replay)
        self.last_id, self.added = end, added_now
        # entries that are not alerts (anyone who can XADD can write one) are left out by heads_of
        heads, parts = self.fresh(*heads_of(raws))
        self.replayed += len(heads)
        if heads:
            log.warning("alerts stream: %d alerts missed while the subscription was down read back", len(heads))
        return heads, parts


async def _info(client: Any) -> tuple[bytes, int] | None:
    """(last id, entries-added) of the stream, None while it does not exist."""
    try:
        info = await client.xinfo_stream(STREAM)
    except Exception as exc:  # noqa: BLE001 - no stream yet (ResponseError), or Redis away: nothing to mark
        log.debug("alerts stream info unavailable: %s", exc)
        return None
    last = info.get("last-generated-id")
    added = info.get("entries-added")
    if last is None or added is None:
        return None
    return (last if isinstance(last, bytes) else str(last).encode()), int(added)
