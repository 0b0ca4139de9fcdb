"""Ingest from Kafka (`feed = "kafka"`): the partitions of this host's symbol range, into the ring.

The feed bridge (`procs.feed_bridge`) holds the one vendor connection and produces ticks to the
`ticks` topic (wire format and partition map: `scanner.feeds.kafka_wire`). This host reads, by
static assignment, exactly the partitions its rows [range_start, range_end) touch, and drops
ticks of a shared partition's other symbols as "not ours" (counted apart from bad ticks).

Offsets go with the state they produced. After each batch reaches the ring and the table, the
next offset of every partition is stored in the `state.ingest` segment (a restarted ingest
resumes there: no gap, no tick twice) and committed to Kafka asynchronously (a new host without
that segment, or a checkpoint from before Kafka, starts from the committed offset). The
checkpoint saves `state.ingest` together with the table, so a host restored from a checkpoint
resumes from the offsets of that very table.

**Group mode** (`kafka_group` set): the table holds the whole universe and the consumer joins the
group `kafka_group` (cooperative-sticky assignment), so Kafka's own rebalance decides which host
reads which partitions, and moves a dead host's partitions to the survivors once its session
(`kafka_session_timeout_ms`) expires. A newly assigned partition is read from its beginning (the
topic is retained for the trading day; earlier days' ticks are late for the bar aggregator)
until the replay has caught up with the partition's end (the high watermark of the latest fetch,
known locally: a rebalance callback makes no broker round trip). Those ticks go into the ring
flagged TICK_REBUILD, between a BEGIN and an END mark for each of the partition's rows, and the
bars process rebuilds the rows' day from them before the scan workers scan them
(`scanner.group_rows`). Catching up matters: ticks that arrived during the replay are behind the
live watermark, and only the rebuild (no watermark) still takes them. A revoked or
lost partition's rows get a RELEASE mark. A restarted ingest owns nothing until the group assigns
it partitions again, which it rebuilds like any other (the offsets in shared memory only serve
the commits). `state.ingest` `assigned` says which partitions this host holds (the registry).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from procs.runtime import BootError, Context
from procs.shared import Shared
from scanner.feeds.kafka_wire import decode, partition_of, partitions_for_range
from scanner.group_rows import live_ranges
from scanner.records import TICK_MARK_BEGIN, TICK_MARK_END, TICK_MARK_RELEASE, TICK_REBUILD

log = logging.getLogger("scanner.ingest")
COMMIT_EVERY_S = 1.0
MAX_MESSAGES = 20_000


def ingest_state(partitions: int, universe_size: int, range_start: int, group: bool = False) -> dict[str, np.ndarray]:
    """The `state.ingest` arrays for a Kafka host (the supervisor creates them); in group mode
    also `assigned` (1 per partition the group gave this host)."""
    return {"offsets": np.full(partitions, -1, np.int64),
            "universe": np.array([universe_size, range_start], np.int64),
            **({"assigned": np.zeros(partitions, np.int8)} if group else {})}


def group_ownership(shared: Shared) -> dict[str, object]:
    """What a group host holds now, for the registry: the partitions the group assigned it and
    the row ranges it scans (rebuilt), each with its first and last symbol."""
    assigned = shared.state["ingest"].arrays["assigned"]
    keys = shared.table.key_list()
    ranges = live_ranges(shared.state["bars"].arrays["rows_state"])
    return {"partitions": np.flatnonzero(assigned).tolist(),
            "owned": [[lo, hi, keys[lo], keys[hi - 1]] for lo, hi in ranges],
            "owned_symbols": sum(hi - lo for lo, hi in ranges)}


class KafkaFeed:
    """The consumer loop of the ingest process for `feed = "kafka"`."""

    def __init__(self, ctx: Context, sink: object) -> None:
        from confluent_kafka import Consumer

        s = ctx.settings
        if not s.kafka_bootstrap:
            raise BootError("feed 'kafka' needs kafka_bootstrap (host:port of a broker)")
        state = ctx.shared.state.get("ingest")
        if state is None:
            raise BootError("feed 'kafka' needs the state.ingest segment (restart the instance)")
        self.ctx, self.sink, self.topic = ctx, sink, s.kafka_ticks_topic
        self.offsets = state.arrays["offsets"]
        universe_size, self.lo = (int(x) for x in state.arrays["universe"])
        self.n_rows = ctx.shared.table.n_rows
        self.group = s.kafka_group
        group_conf = {}
        if self.group:
            if self.lo != 0 or self.n_rows != universe_size or "assigned" not in state.arrays:
                raise BootError("kafka_group needs the whole universe in the table (restart the instance)")
            self.parts: list[int] = []
            self.assigned = state.arrays["assigned"]
            self.part_of_row = np.asarray(partition_of(np.arange(universe_size), universe_size, s.kafka_partitions))
            self.rebuilding = np.zeros(s.kafka_partitions, np.bool_)  # its messages are a rebuild's
            group_conf = {"partition.assignment.strategy": "cooperative-sticky",
                          "session.timeout.ms": s.kafka_session_timeout_ms,
                          "heartbeat.interval.ms": max(100, s.kafka_session_timeout_ms // 5)}
        else:
            self.parts = partitions_for_range(self.lo, self.lo + self.n_rows, universe_size, s.kafka_partitions)
        self.consumer = Consumer({
            "bootstrap.servers": s.kafka_bootstrap, "group.id": self.group or f"scanner-{s.instance}",
            "enable.auto.commit": False, "enable.auto.offset.store": False, "auto.offset.reset": "earliest",
            "client.id": f"scanner-{s.instance}-ingest", "fetch.wait.max.ms": 20, **group_conf,
        })
        self.not_ours = 0
        self._next_ask: dict[int, float] = {}  # group mode: when to ask the broker for an empty partition's end
        self._next_commit = time.monotonic() + COMMIT_EVERY_S

    def _wait_for_topic(self) -> None:
        """Wait for the topic (beating) and check its partition count."""
        from confluent_kafka import KafkaException

        want = self.ctx.settings.kafka_partitions
        while self.ctx.should_run():
            self.ctx.beat()
            try:
                md = self.consumer.list_topics(self.topic, timeout=1.0).topics.get(self.topic)
            except KafkaException as exc:
                log.warning("kafka metadata: %s", exc)
                continue
            if md is not None and md.error is None and md.partitions:
                if len(md.partitions) != want:
                    raise BootError(f"topic {self.topic!r} has {len(md.partitions)} partitions, kafka_partitions "
                                    f"is {want}: every host and the bridge must agree")
                break
            time.sleep(0.2)

    def _assign(self) -> None:
        """Assign our partitions at the stored offsets, else the committed ones, else the beginning."""
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        self._wait_for_topic()
        committed = {tp.partition: tp.offset for tp in
                     self.consumer.committed([TopicPartition(self.topic, p) for p in self.parts], timeout=10.0)}
        start = []
        for p in self.parts:
            off = int(self.offsets[p]) if self.offsets[p] >= 0 else committed.get(p, -1)
            start.append(TopicPartition(self.topic, p, off if off >= 0 else OFFSET_BEGINNING))
        self.consumer.assign(start)
        log.info("kafka: topic %s partitions %s from offsets %s", self.topic, self.parts,
                 [tp.offset for tp in start])

    # ---- group mode: the rebalance callbacks (run inside `consume`, in this process's loop)
    def _rows_of(self, parts: list[int]) -> np.ndarray:
        return np.flatnonzero(np.isin(self.part_of_row, parts)).astype(np.uint32)

    def _subscribe(self) -> None:
        """Own nothing (a restarted ingest's rows may have moved meanwhile), then join the group."""
        self._wait_for_topic()
        self.assigned[:] = 0
        self.sink.mark(np.arange(self.n_rows, dtype=np.uint32), TICK_MARK_RELEASE)  # type: ignore[attr-defined]
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)
        log.info("kafka: joined group %s on topic %s", self.group, self.topic)

    def _on_assign(self, consumer: object, tps: list) -> None:
        """New partitions: replay each from its beginning up to the end it has now (a rebuild)."""
        from confluent_kafka import OFFSET_BEGINNING

        if not tps:
            return
        parts = [tp.partition for tp in tps]
        for tp in tps:
            tp.offset = OFFSET_BEGINNING
        self.sink.mark(self._rows_of(parts), TICK_MARK_BEGIN)  # type: ignore[attr-defined]
        self.rebuilding[parts] = True
        self.consumer.incremental_assign(tps)
        self.assigned[parts] = 1
        self.parts = np.flatnonzero(self.assigned).tolist()
        log.info("kafka: group assigned partitions %s (rebuilding their day); now holding %s", parts, self.parts)

    def _on_revoke(self, consumer: object, tps: list) -> None:
        """Partitions going to another host: commit what is in the ring first (asynchronously: the
        next owner rebuilds from the beginning whatever we commit), then let the rows go."""
        self.commit(force=True, asynchronous=True)
        self._release([tp.partition for tp in tps])

    def _on_lost(self, consumer: object, tps: list) -> None:
        """The group moved our partitions already (session expired): nothing to commit."""
        self._release([tp.partition for tp in tps])

    def _release(self, parts: list[int]) -> None:
        if not parts:
            return
        self.sink.mark(self._rows_of(parts), TICK_MARK_RELEASE)  # type: ignore[attr-defined]
        self.assigned[parts] = 0
        self.offsets[parts] = -1
        self.rebuilding[parts] = False
        self.parts = np.flatnonzero(self.assigned).tolist()
        log.info("kafka: partitions %s left this host; now holding %s", parts, self.parts)

    # ---- the loop
    def poll_once(self) -> int:
        """One poll: decode, keep our rows, push (a rebuild's ticks first, flagged, then the END
        marks of the partitions whose rebuild this poll finished, then live ticks), store
        offsets; returns ticks pushed."""
        msgs = self.consumer.consume(MAX_MESSAGES, 0.05)
        values: list[bytes] = []
        replayed: list[bytes] = []
        last: dict[int, int] = {}
        errors = 0
        rebuilding = self.rebuilding if self.group else None
        for m in msgs:  # the client's unit is a message: one small step each, no per-tick work
            if m.error() is not None:
                errors += 1
                continue
            p, off = m.partition(), m.offset()
            (replayed if rebuilding is not None and rebuilding[p] else values).append(m.value())
            last[p] = off
        if errors:
            log.warning("kafka: %d error events in a poll", errors)
            self.ctx.count(errors=errors)
        n = 0
        if replayed:
            n += self._push(replayed, TICK_REBUILD)
        finished = [] if rebuilding is None else [p for p in np.flatnonzero(rebuilding).tolist()
                                                  if self._caught_up(p, last.get(p))]
        if finished:
            self.sink.mark(self._rows_of(finished), TICK_MARK_END)  # type: ignore[attr-defined]
            rebuilding[finished] = False  # type: ignore[index]
            log.info("kafka: partitions %s rebuilt; scanning their symbols", finished)
        if values:
            n += self._push(values, 0)
        for p, off in last.items():  # after the ring: a restart resumes right after this batch
            self.offsets[p] = off + 1
        return n

    def _caught_up(self, p: int, off: int | None) -> bool:
        """A rebuilding partition whose replay reached its end (`off`: its last offset in this
        poll). Once a message of this assignment came, the high watermark cached from the fetches
        is at least as fresh as that message's fetch (a local call). Before any came (an empty
        partition, or a cached value from an earlier assignment), the broker is asked, at most
        once a second."""
        from confluent_kafka import KafkaException, TopicPartition

        tp = TopicPartition(self.topic, p)
        nxt = off + 1 if off is not None else self.consumer.position([tp])[0].offset
        if nxt >= 0:
            return nxt >= self.consumer.get_watermark_offsets(tp, cached=True)[1]
        now = time.monotonic()
        if now < self._next_ask.get(p, 0.0):
            return False
        self._next_ask[p] = now + 1.0
        try:
            low, high = self.consumer.get_watermark_offsets(tp, timeout=0.5, cached=False)
        except KafkaException as exc:
            log.warning("kafka: end of partition %d unknown: %s", p, exc)
            return False
        return 0 <= high <= low  # nothing to replay

    def _push(self, values: list[bytes], flags: int) -> int:
        ticks, bad = decode(values)
        rows = ticks["sym"].astype(np.int64) - self.lo
        mine = (rows >= 0) & (rows < self.n_rows)
        self.not_ours += int(len(ticks) - mine.sum())
        ticks = ticks[mine]
        ticks["sym"] = rows[mine]
        if flags:
            ticks["flags"] |= flags
        if bad:
            log.warning("kafka: dropped %d malformed messages", bad)
            self.ctx.count(drops=bad)
        return self.sink.push(ticks)  # type: ignore[attr-defined]

    def commit(self, force: bool = False, asynchronous: bool | None = None) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        now = time.monotonic()
        if not force and now < self._next_commit:
            return
        self._next_commit = now + COMMIT_EVERY_S
        done = [TopicPartition(self.topic, p, int(self.offsets[p])) for p in self.parts if self.offsets[p] >= 0]
        if not done:
            return
        try:
            self.consumer.commit(offsets=done, asynchronous=not force if asynchronous is None else asynchronous)
        except KafkaException as exc:
            log.warning("kafka commit failed (offsets stay in shared memory): %s", exc)

    def run(self) -> None:
        if self.group:
            self._subscribe()
        else:
            self._assign()
        try:
            while self.ctx.should_run():
                self.ctx.beat()
                self.poll_once()
                self.commit()
        finally:
            self.commit(force=True)
            self.consumer.close()
