"""Alerts to Kafka (`kafka_alerts_topic`): the publisher's optional third fan-out, beside the
shared-memory feed and Redis. The same JSON as the Redis stream, keyed by rule id (a rule's
alerts stay in order), from an idempotent producer. librdkafka queues while the broker is away;
a full local queue drops the oldest batch's alerts and counts them, never blocks the pass."""

from __future__ import annotations

import logging

log = logging.getLogger("scanner.publisher")


class KafkaAlerts:
    def __init__(self, bootstrap: str, topic: str) -> None:
        from confluent_kafka import Producer

        self.topic = topic
        self.producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5,
                                  "client.id": "scanner-publisher", "queue.buffering.max.messages": 500_000})
        self.sent = 0
        self.failed = 0  # delivery reports with an error, plus alerts dropped for a full queue

    def _delivered(self, err: object, msg: object) -> None:
        if err is not None:
            if not self.failed:
                log.error("kafka alert delivery failed: %s", err)
            self.failed += 1

    def send(self, items: list[tuple[str, bytes]]) -> None:
        """Queue (rule id, JSON) pairs; returns at once."""
        for i, (rule_id, payload) in enumerate(items):
            try:
                self.producer.produce(self.topic, value=payload, key=rule_id.encode(), on_delivery=self._delivered)
            except BufferError:
                self.failed += len(items) - i
                log.error("kafka producer queue full: dropped %d alerts", len(items) - i)
                break
            self.sent += 1
        self.producer.poll(0)

    def close(self, timeout: float = 5.0) -> None:
        left = self.producer.flush(timeout)
        if left:
            log.error("kafka: %d alerts not delivered at stop", left)
