"""Publisher: drains every scanner worker's alert ring, once per pass, and fans alerts out.

* the alert feed ring in shared memory (gateways on this host read it: the embedded default,
  no Redis needed);
* Redis, when `redis_url` is configured: PUBLISH (one channel for all, one per rule) and XADD
  to the bounded `alerts` stream, in pipelines (see `procs.redis_out`).

Redis down never stops the pass: alerts wait in a bounded buffer, the connection is retried
with backoff, and what had to be dropped is counted in the slot (`drops`).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from procs.redis_out import RedisSink
from procs.runtime import Context
from procs.shared import ALERT_CONSUMER_PUBLISHER
from scanner.alert_json import AlertEncoder

log = logging.getLogger("scanner.publisher")
PASS_S = 0.002


def main(ctx: Context) -> None:
    sh = ctx.shared
    consumers = [r.consumer(ALERT_CONSUMER_PUBLISHER) for r in sh.alerts]
    feed = sh.feed.producer()
    encoder = AlertEncoder(sh.table.key_list(), ctx.settings.rules_file())
    redis = RedisSink(ctx.settings.redis_url) if ctx.settings.redis_url else None
    lost_seen = sum(c.lost for c in consumers)
    while ctx.should_run():
        ctx.beat()
        batches = [b for b in (c.poll(65536) for c in consumers) if len(b)]
        if batches:
            alerts = np.concatenate(batches) if len(batches) > 1 else batches[0].copy()
            feed.publish(alerts)
            if redis is not None:
                redis.send(encoder.encode(alerts))
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
        if not batches:
            time.sleep(PASS_S)
