"""The notifier process: the delivery state machine (`procs.notifier.delivery`) run in a loop that
beats the heartbeat every pass."""

from __future__ import annotations

import logging
import socket

from procs.notifier.delivery import Notifier
from procs.runtime import BootError, Context
from scanner.config import reveal
from scanner.notify.destinations import load_destinations
from scanner.notify.limits import RetrySchedule

log = logging.getLogger("scanner.notifier")


def main(ctx: Context) -> None:
    s = ctx.settings
    if not s.redis_url:
        raise BootError("the notifier needs redis_url")
    try:
        dests = load_destinations(s.notify_destinations, s.notify_file)
    except (OSError, ValueError) as exc:
        raise BootError(f"notify destinations: {exc}") from exc
    if not dests:
        raise BootError("the notifier has no enabled destinations")
    retry = RetrySchedule(s.notify_retry_base_s, s.notify_retry_cap_s, s.notify_max_attempts)
    notifier = Notifier(reveal(s.redis_url) or "", dests, consumer=f"{socket.gethostname()}:{s.instance}",
                        group=s.notify_group, dead_stream=s.notify_dead_stream, retry=retry,
                        claim_idle_s=s.notify_claim_idle_s)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a log line per request
    log.info("delivering to %s", ", ".join(f"{d.name} ({d.kind})" for d in dests))
    try:
        while ctx.should_run():
            ctx.beat()
            st = notifier.run_once()
            ctx.count(n_in=st.read, n_out=st.delivered, drops=st.dead, errors=st.failed)
    finally:
        st = notifier.close()
        ctx.count(n_in=st.read, n_out=st.delivered, drops=st.dead, errors=st.failed)
