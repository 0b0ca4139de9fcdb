"""Publisher: drains every scanner worker's alert ring, once per pass, and fans alerts out.

* the alert feed ring in shared memory (gateways on this host read it: the embedded default,
  no Redis needed), then rings the gateways' feed bells (`procs.feedbell`) so they need not poll;
* Kafka, when `kafka_bootstrap` and `kafka_alerts_topic` are set (`procs.kafka_out`);
* Redis, when `redis_url` is configured: PUBLISH (one channel for all, one per rule) and XADD
  to the bounded `alerts` stream, in pipelines (see `procs.redis_out`); and, once a second,
  the live bar and indicator columns that changed, as hashes `live:<symbol>`, and this host's
  top lists for the cluster (`procs.cluster_top`).

Alerts go first: each pass sends what the rings hold, and the once-a-second side work (a chunk
of the live hashes, or the top lists) runs only in a pass that had no alert to send, or after
`SIDE_WAIT_S` of passes that all had some.

Redis down never stops the pass: alerts wait in a bounded buffer, the connection is retried
with backoff, and what had to be dropped is counted in the slot (`drops`).
"""

from __future__ import annotations

import logging
import time

import numpy as np
from redis import RedisError

from procs.cluster_top import TopPublisher
from procs.feedbell import BellRinger
from procs.kafka_out import KafkaAlerts
from procs.redis_out import LiveMirror, RedisSink
from procs.rules_admin import rules_source
from procs.runtime import Context
from procs.shared import ALERT_CONSUMER_PUBLISHER
from scanner.alert_json import AlertEncoder
from scanner.config import reveal
from scanner.metrics import CATALOGUE, Owner
from shm.records import concat, copied

log = logging.getLogger("scanner.publisher")
PASS_S = 0.002
# alerts taken from each ring per pass: a backlog (after a restart, on a busy machine) is worked
# off over several short passes, each with a heartbeat, not in one pass long enough to be
# killed as stalled (which restarts the publisher into the same backlog: a restart loop)
MAX_PER_RING = 4096
SIDE_WAIT_S = 0.25  # the longest the live hashes and top lists wait while alerts flow in every pass


def main(ctx: Context) -> None:
    sh = ctx.shared
    consumers = [r.consumer(ALERT_CONSUMER_PUBLISHER) for r in sh.alerts]
    feed = sh.feed.producer()
    bells = BellRinger(ctx.settings.instance, len(sh.feed.consumers))
    attached = sh.feed.consumers["attached"]  # the gateways' feed slots (shm view)
    encoder = AlertEncoder(sh.table.key_list(), rules_source(ctx.settings))
    s = ctx.settings
    url = reveal(s.redis_url)
    redis = RedisSink(url, buffer_limit=s.redis_buffer_limit, stream_maxlen=s.alerts_stream_maxlen) if url else None
    kafka = (KafkaAlerts(s.kafka_bootstrap, s.kafka_alerts_topic)
             if s.kafka_bootstrap and s.kafka_alerts_topic else None)
    failures_seen = kafka_failed_seen = 0
    mirror = None
    if redis is not None:
        names = [m.name for m in CATALOGUE.metrics if m.dtype == "f8" and m.owner != Owner.REFERENCE]
        mirror = LiveMirror(redis.client, sh.table.key_list(), names)
        mirror_cols = np.array([CATALOGUE.f8(n) for n in names])
        mirror_buf = np.empty((len(names), sh.table.n_rows))
        rows_state = sh.state["bars"].arrays.get("rows_state") if "bars" in sh.state else None  # Kafka group mode
        tops = TopPublisher(redis.client, s.instance, sh.table.key_list(), s.cluster_top_metrics, s.cluster_top_n,
                            rows_state)
        top_buf = np.empty((len(tops.cols), sh.table.n_rows))
    lost_seen = sum(c.lost for c in consumers)
    side_at = time.monotonic()  # the last pass free for the side work (or that did it)
    while ctx.should_run():
        ctx.beat()
        encoder.watch(sh.control.rules_generation)  # know each rule set before it can change again
        batches = [b for b in (c.poll(MAX_PER_RING) for c in consumers) if len(b)]
        if batches:
            alerts = concat(batches) if len(batches) > 1 else copied(batches[0])
            feed.publish(alerts)
            bells.ring(np.flatnonzero(attached).tolist())
            if redis is not None or kafka is not None:
                encoded = encoder.encode(alerts)
                if redis is not None:
                    redis.send(encoded)
                if kafka is not None:
                    kafka.send(encoded)
            ctx.count(n_in=len(alerts), n_out=len(alerts))
        lost = sum(c.lost for c in consumers)
        if lost != lost_seen:
            log.error("alert rings lapped: %d alerts lost", lost - lost_seen)
            ctx.count(drops=lost - lost_seen)
            lost_seen = lost
        if redis is not None:
            dropped = redis.flush()
            if dropped:
                ctx.count(drops=dropped)
            if redis.failures != failures_seen:
                ctx.count(errors=redis.failures - failures_seen)
                failures_seen = redis.failures
        if kafka is not None and kafka.failed != kafka_failed_seen:
            ctx.count(drops=kafka.failed - kafka_failed_seen)
            kafka_failed_seen = kafka.failed
        # the once-a-second work (live hashes, top lists) only in a pass that had no alert to
        # send: alerts of a burst never wait behind it. Bounded: after SIDE_WAIT_S of alerts in
        # every pass it takes one pass anyway, so a steady alert flow cannot starve it.
        now = time.monotonic()
        if batches or (redis is not None and redis.buffer):
            side = now - side_at > SIDE_WAIT_S
        else:
            side, side_at = True, now
        if side and mirror is not None and mirror.due():
            side_at = now
            if not mirror.sweeping():  # one snapshot per sweep, written out a chunk per pass
                sh.table.snapshot(0, sh.table.n_rows, mirror_cols, mirror_buf)
            mirror.write(mirror_buf)
        elif side and redis is not None and tops.due():
            side_at = now
            sh.table.snapshot(0, sh.table.n_rows, tops.cols, top_buf)
            try:
                tops.publish(top_buf)
            except (RedisError, OSError):  # Redis away: the lists expire, gateways mark this host stale
                tops.next_at += 4.0
        if not batches:
            time.sleep(PASS_S)
    bells.close()
    if kafka is not None:
        kafka.close()
