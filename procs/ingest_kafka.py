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
"""

from __future__ import annotations

import logging
import time

import numpy as np

from procs.runtime import BootError, Context
from scanner.feeds.kafka_wire import decode, partitions_for_range

log = logging.getLogger("scanner.ingest")
COMMIT_EVERY_S = 1.0
MAX_MESSAGES = 20_000


def ingest_state(partitions: int, universe_size: int, range_start: int) -> dict[str, np.ndarray]:
    """The `state.ingest` arrays for a Kafka host (the supervisor creates them)."""
    return {"offsets": np.full(partitions, -1, np.int64),
            "universe": np.array([universe_size, range_start], np.int64)}


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
        self.parts = partitions_for_range(self.lo, self.lo + self.n_rows, universe_size, s.kafka_partitions)
        self.consumer = Consumer({
            "bootstrap.servers": s.kafka_bootstrap, "group.id": f"scanner-{s.instance}",
            "enable.auto.commit": False, "enable.auto.offset.store": False, "auto.offset.reset": "earliest",
            "client.id": f"scanner-{s.instance}-ingest", "fetch.wait.max.ms": 20,
        })
        self.not_ours = 0
        self._next_commit = time.monotonic() + COMMIT_EVERY_S

    def _assign(self) -> None:
        """Wait for the topic (beating), check its partition count, and assign our partitions at
        the stored offsets, else the committed ones, else the beginning."""
        from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

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
        committed = {tp.partition: tp.offset for tp in
                     self.consumer.committed([TopicPartition(self.topic, p) for p in self.parts], timeout=10.0)}
        start = []
        for p in self.parts:
            off = int(self.offsets[p]) if self.offsets[p] >= 0 else committed.get(p, -1)
            start.append(TopicPartition(self.topic, p, off if off >= 0 else OFFSET_BEGINNING))
        self.consumer.assign(start)
        log.info("kafka: topic %s partitions %s from offsets %s", self.topic, self.parts,
                 [tp.offset for tp in start])

    def poll_once(self) -> int:
        """One poll: decode, keep our rows, push, store offsets; returns ticks pushed."""
        msgs = self.consumer.consume(MAX_MESSAGES, 0.05)
        values: list[bytes] = []
        last: dict[int, int] = {}
        errors = 0
        for m in msgs:  # the client's unit is a message: one small step each, no per-tick work
            if m.error() is not None:
                errors += 1
                continue
            values.append(m.value())
            last[m.partition()] = m.offset()
        if errors:
            log.warning("kafka: %d error events in a poll", errors)
            self.ctx.count(errors=errors)
        if not values:
            return 0
        ticks, bad = decode(values)
        rows = ticks["sym"].astype(np.int64) - self.lo
        mine = (rows >= 0) & (rows < self.n_rows)
        self.not_ours += int(len(ticks) - mine.sum())
        ticks = ticks[mine]
        ticks["sym"] = rows[mine]
        if bad:
            log.warning("kafka: dropped %d malformed messages", bad)
            self.ctx.count(drops=bad)
        n = self.sink.push(ticks)  # type: ignore[attr-defined]
        for p, off in last.items():  # after the ring: a restart resumes right after this batch
            self.offsets[p] = off + 1
        return n

    def commit(self, force: bool = False) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        now = time.monotonic()
        if not force and now < self._next_commit:
            return
        self._next_commit = now + COMMIT_EVERY_S
        done = [TopicPartition(self.topic, p, int(self.offsets[p])) for p in self.parts if self.offsets[p] >= 0]
        if not done:
            return
        try:
            self.consumer.commit(offsets=done, asynchronous=not force)
        except KafkaException as exc:
            log.warning("kafka commit failed (offsets stay in shared memory): %s", exc)

    def run(self) -> None:
        self._assign()
        try:
            while self.ctx.should_run():
                self.ctx.beat()
                self.poll_once()
                self.commit()
        finally:
            self.commit(force=True)
            self.consumer.close()
