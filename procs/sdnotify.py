"""systemd's notify protocol (`Type=notify`): READY=1, WATCHDOG=1, STOPPING=1, STATUS=...

One datagram per message to the AF_UNIX socket named by `$NOTIFY_SOCKET` ('@' = the abstract
namespace); without it (not under systemd) a call does nothing. Only the supervisor speaks it
(its children's environment drops the variable).

A send never blocks the supervisor's loop for long. A datagram socket's queue is short
(`net.unix.max_dgram_qlen`, 10 by default) and a blocking send to a reader that is not reading
(systemd stuck, a test not draining its socket) would stop the loop, and with it heartbeats,
reaping, signals and the stop itself, until the reader drained. So WATCHDOG=1, sent every pass,
does not wait at all (a ping lost to a full queue is replaced by the next one a pass later), and
the once-only messages wait at most `timeout_s`.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("scanner.supervisor")
ONCE_TIMEOUT_S = 2.0  # the most READY=1 / STOPPING=1 wait for room in the queue


def sd_notify(message: str, timeout_s: float = ONCE_TIMEOUT_S) -> bool:
    """Send `message` (e.g. "READY=1"); False when there is no socket or it was not sent.
    `timeout_s` 0: do not wait for room in the queue."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.settimeout(timeout_s)  # 0: non-blocking
            s.connect(addr)
            s.send(message.encode())
        return True
    except (BlockingIOError, TimeoutError):
        # the reader is behind: a lost ping is harmless, a lost READY/STOPPING is worth a line
        (log.debug if timeout_s == 0 else log.warning)("sd_notify %s: the notify socket's queue is full",
                                                       message)
    except OSError as exc:
        log.warning("sd_notify failed: %s", exc)
    return False


def watchdog_ping() -> None:
    """WATCHDOG=1 without waiting (once per supervisor pass)."""
    sd_notify("WATCHDOG=1", 0.0)
