"""The feed bridge (`scanner feed-bridge`): one feed connection in, the Kafka `ticks` topic out.

Most vendor plans allow one connection; the bridge holds it and every host of the cluster reads
the partitions of its own symbol range (`procs.ingest_kafka`). Ticks are produced keyed by
symbol into the partition of the symbol's range (`scanner.feeds.kafka_wire`), by an idempotent
producer (no duplicates on the producer's own retries). The source here is the synthetic market
over the whole universe, on the same session clock the hosts use; vendor sources plug in as
another iterator of tick batches whose `sym` is the universe index.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from procs.instance import InstanceSetup
from scanner.config import Settings
from scanner.feeds.kafka_wire import encode
from scanner.feeds.synthetic import SyntheticTape, make_universe
from scanner.session import session_bounds_ns, trading_day

log = logging.getLogger("scanner.bridge")
PASS_S = 0.01


class BridgeError(RuntimeError):
    """The bridge cannot run with this configuration (a user-facing message)."""


@dataclass
class BridgeStats:
    ticks: int = 0
    messages: int = 0
    batches: int = 0


def ensure_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Create the ticks topic with `partitions` partitions, or check an existing one has them."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    fut = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic]
    try:
        fut.result(15)
        log.info("created topic %s with %d partitions", topic, partitions)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise BridgeError(f"cannot create topic {topic!r}: {exc}") from None
        have = len(admin.list_topics(topic, timeout=10).topics[topic].partitions)
        if have != partitions:
            raise BridgeError(f"topic {topic!r} has {have} partitions, kafka_partitions is {partitions}") from None


class Bridge:
    """Produces tick batches (TICK_DTYPE, `sym` = universe index) to the ticks topic."""

    def __init__(self, settings: Settings, universe: list[str]) -> None:
        from confluent_kafka import Producer

        if not settings.kafka_bootstrap:
            raise BridgeError("the feed bridge needs kafka_bootstrap (host:port of a broker)")
        self.s, self.names = settings, universe
        ensure_topic(settings.kafka_bootstrap, settings.kafka_ticks_topic, settings.kafka_partitions)
        self.producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True,
                                  "linger.ms": 5, "compression.type": "lz4", "queue.buffering.max.messages": 1_000_000,
                                  "client.id": "scanner-feed-bridge"})
        self.stats = BridgeStats()
        self.failed = 0
        self._errors_logged = 0

    def _delivered(self, err: object, msg: object) -> None:
        if err is not None:
            self.failed += 1
            if self._errors_logged < 10:
                self._errors_logged += 1
                log.error("kafka delivery failed: %s", err)

    def send(self, ticks: np.ndarray) -> None:
        topic = self.s.kafka_ticks_topic
        n_msgs = 0
        for part, key, value in encode(ticks, self.names, len(self.names), self.s.kafka_partitions):
            while True:
                try:
                    self.producer.produce(topic, value=value, key=key, partition=part, on_delivery=self._delivered)
                    break
                except BufferError:  # the local queue is full: let librdkafka send, then retry
                    self.producer.poll(0.05)
            n_msgs += 1
        self.producer.poll(0)
        self.stats.ticks += len(ticks)
        self.stats.messages += n_msgs
        self.stats.batches += 1

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for every message to be acknowledged; returns how many are still queued."""
        return int(self.producer.flush(timeout))


def synthetic_source(settings: Settings, should_run: Callable[[], bool]) -> Iterator[np.ndarray]:
    """The synthetic market over the whole universe, every `PASS_S` of wall time, on the session
    clock a host with the same settings uses (`InstanceSetup.initial_event_time`)."""
    n = settings.symbols
    universe = make_universe(n, settings.feed_seed, settings.feed_rate)
    day = trading_day(time.time_ns())
    tape = SyntheticTape(universe, np.arange(n), settings.feed_rate, settings.feed_seed,
                         session_bounds_ns(day)["open"])
    anchor_event, anchor_wall = InstanceSetup(settings).initial_event_time(day), time.time_ns()
    t_event = anchor_event
    next_pass = time.monotonic()
    while should_run():
        now_event = anchor_event + int((time.time_ns() - anchor_wall) * settings.feed_speed)
        if now_event > t_event:
            yield tape.generate(t_event, now_event)
            t_event = now_event
        next_pass += PASS_S
        time.sleep(max(0.0, next_pass - time.monotonic()))


def run_bridge(settings: Settings, should_run: Callable[[], bool], seconds: float | None = None) -> BridgeStats:
    """Bridge the synthetic market into Kafka until `should_run()` is False or `seconds` passed."""
    if settings.symbols_file:
        raise BridgeError("the synthetic source bridges the synthetic universe: unset symbols_file")
    universe = make_universe(settings.symbols, settings.feed_seed, settings.feed_rate).names
    bridge = Bridge(settings, universe)
    end = None if seconds is None else time.monotonic() + seconds

    def keep() -> bool:
        return should_run() and (end is None or time.monotonic() < end)

    last_log = time.monotonic()
    try:
        for ticks in synthetic_source(settings, keep):
            bridge.send(ticks)
            if time.monotonic() - last_log >= 10.0:
                last_log = time.monotonic()
                log.info("bridged %d ticks in %d messages", bridge.stats.ticks, bridge.stats.messages)
    finally:
        left = bridge.flush()
        if left or bridge.failed:
            log.error("feed bridge: %d messages not delivered, %d still queued", bridge.failed, left)
    return bridge.stats
