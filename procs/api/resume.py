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

from scanner.alert_json import decode_alert

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

    def fresh(self, alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The alerts not delivered before (each remembered for the next `remember` alerts)."""
        out = []
        for a in alerts:
            key = (a.get("host"), a.get("worker"), a.get("seq"))
            if key in self._seen:
                continue
            self._seen.add(key)
            self._order.append(key)
            out.append(a)
        while len(self._order) > self._remember:
            self._seen.discard(self._order.popleft())
        return out

    async def mark(self, client: Any, force: bool = False) -> None:
        """Sample the stream's newest id (at most once per `sample_s` unless `force`)."""
        now = time.monotonic()
        if not force and now < self.next_mark:
            return
        self.next_mark = now + self.sample_s
        info = await _info(client)
        if info is not None:
            self.last_id, self.added = info

    async def replay(self, client: Any) -> list[dict[str, Any]]:
        """After a (re)subscription: the alerts added to the stream since the last `mark` and up
        to now, oldest first (later ones arrive through the new subscription). At most
        `max_replay`; what is beyond the bound, or already trimmed, is counted in `gap`."""
        if self.last_id is None:  # first subscription: nothing was missed
            await self.mark(client, force=True)
            return []
        info = await _info(client)
        if info is None:
            return []
        start, added_before = self.last_id, self.added or 0
        end, added_now = info
        out: list[dict[str, Any]] = []
        read = 0
        cursor = b"(" + start
        while read < self.max_replay:
            entries = await client.xrange(STREAM, min=cursor, max=end, count=min(PAGE, self.max_replay - read))
            if not entries:
                break
            for _entry_id, fields in entries:
                read += 1
                alert = decode_alert(fields.get(b"alert", b"")) if isinstance(fields, dict) else None
                if alert is not None:  # else not an alert entry (anyone who can XADD can write one)
                    out.append(alert)
            cursor = b"(" + entries[-1][0]
        missing = added_now - added_before - read
        if missing > 0:
            self.gap += missing
            log.error("alerts stream: %d alerts missed while the subscription was down could not be read "
                      "back (trimmed from the stream, or beyond the replay bound of %d)", missing, self.max_replay)
        self.last_id, self.added = end, added_now
        fresh = self.fresh(out)
        self.replayed += len(fresh)
        if fresh:
            log.warning("alerts stream: %d alerts missed while the subscription was down read back", len(fresh))
        return fresh


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
