"""The supervisor's signal plumbing, as gunicorn's arbiter does it: a handler only queues the
signal and the kernel writes a byte to a non-blocking pipe (`signal.set_wakeup_fd`), so the
loop's `sleep` wakes at once and the signal is handled in the loop, never inside a handler."""

from __future__ import annotations

import os
import select
import signal
from collections.abc import Iterator


class SignalQueue:
    """Queues `signals` (at most `depth` pending) and wakes `sleep` when one arrives."""

    def __init__(self, signals: tuple[signal.Signals, ...], depth: int = 8) -> None:
        self.signals, self.depth = signals, depth
        self.queue: list[int] = []
        self._r = self._w = -1

    def install(self) -> None:
        self._r, self._w = os.pipe()
        for fd in (self._r, self._w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self._w)
        for sig in self.signals:
            signal.signal(sig, self._queue)

    def _queue(self, signum: int, frame: object) -> None:
        if len(self.queue) < self.depth:
            self.queue.append(signum)

    def pending(self) -> Iterator[str]:
        """Names of the queued signals, oldest first ("term", "hup", ...), taken off the queue."""
        while self.queue:
            yield signal.Signals(self.queue.pop(0)).name[3:].lower()

    def sleep(self, timeout: float) -> None:
        """Wait up to `timeout` s, less when a signal arrives (before `install`: just wait)."""
        try:
            select.select([self._r] if self._r >= 0 else [], [], [], timeout)
            while self._r >= 0 and os.read(self._r, 512):
                pass
        except (BlockingIOError, InterruptedError):
            pass
