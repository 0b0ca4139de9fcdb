"""When a dead child starts again: jittered backoff over quick deaths, and a crash-loop breaker.

Each death waits `scanner.backoff.Backoff` (0.1 s doubling to 5 s, jittered); a life of
`LONG_LIFE_S` or more ends the run of quick deaths and starts the wait over. When
`crash_loop_restarts` deaths fall within `crash_loop_window_s`, the breaker holds the child back
`crash_loop_hold_s` (the supervisor marks its slot STATE_HELD, so `scanner status` says why it
is down) and starts counting afresh. Exit code EXIT_CANNOT_BOOT never gets here: the supervisor
stops the instance instead.
"""

from __future__ import annotations

import os
import signal
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from scanner.backoff import Backoff

if TYPE_CHECKING:
    from scanner.config import Settings

LONG_LIFE_S = 30.0  # a child that lived this long was not crash-looping


class Restart(NamedTuple):
    """The policy's answer to one death."""

    next_start: float  # time.monotonic() of the next start (the hold included)
    delay: float  # the backoff wait
    held: bool  # the crash-loop breaker tripped
    deaths: int  # deaths within the window that tripped it (0 when not held)


@dataclass
class RestartPolicy:
    """The restart pacing of one child; `after_death` once per death."""

    window_s: float
    max_restarts: int
    hold_s: float
    backoff: Backoff = field(default_factory=Backoff)  # consecutive quick deaths pace restarts
    deaths: deque[float] = field(default_factory=deque)  # monotonic times of recent deaths (breaker)

    @classmethod
    def from_settings(cls, s: Settings) -> RestartPolicy:
        return cls(s.crash_loop_window_s, s.crash_loop_restarts, s.crash_loop_hold_s)

    def after_death(self, lived_s: float, now: float) -> Restart:
        """Count a death after `lived_s` seconds of life (`now`: time.monotonic()) and say when
        the child may start again."""
        if lived_s >= LONG_LIFE_S:
            self.backoff.succeeded()
        delay = self.backoff.failed(now)
        self.deaths.append(now)
        while self.deaths and now - self.deaths[0] > self.window_s:
            self.deaths.popleft()
        if len(self.deaths) >= self.max_restarts:
            n = len(self.deaths)
            self.deaths.clear()
            return Restart(max(self.backoff.retry_at, now + self.hold_s), delay, True, n)
        return Restart(self.backoff.retry_at, delay, False, 0)


def exit_reason(status: int) -> tuple[int | None, str]:
    """(exit code, None when killed by a signal; how it ended, for the log) of a waitpid status."""
    if os.WIFSIGNALED(status):
        return None, f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    code = os.WEXITSTATUS(status)
    return code, f"exited with code {code}"
