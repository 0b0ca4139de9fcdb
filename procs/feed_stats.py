"""Counters of the live feed, in the `state.feed` segment: written by ingest, read by
`scanner status` and `/metrics`.

One int64 vector, one word per counter (`FEED_COUNTERS` order), in a named-arrays segment the
supervisor creates with the others; only ingest writes it (plain stores of whole words), so a
restarted ingest keeps counting where it stopped. Seconds lost are kept in milliseconds.
"""

from __future__ import annotations

import numpy as np

from procs.shared import Shared

FEED_COUNTERS: tuple[str, ...] = (
    "connected",  # 1 while subscribed, else 0
    "connects",  # successful subscriptions (first one included)
    "disconnects",  # connections lost or given up (dead, closed, error frame)
    "lost_ms",  # time without a subscribed connection after the first one, ms
    "messages",  # data frames received
    "malformed",  # messages that could not be decoded (counted by the parsers)
    "unknown_symbol",  # messages for symbols outside this host's range
    "quotes", "statuses", "halts", "resumes", "lulds",
    "corrections",  # corrections and cancels received
    "corrections_applied",  # of those, applied to a live bar (the rest: docs/operations.md)
    "repaired_bars",  # closed bars inserted from the vendor's REST minute bars after a reconnect
    "repair_errors",  # gap repairs that failed (REST down); the minutes stay missing
    "last_message_ns",  # wall time of the last frame, epoch ns
)
FEED = {name: i for i, name in enumerate(FEED_COUNTERS)}
STATE_NAME = "feed"


def new_feed_state() -> dict[str, np.ndarray]:
    """The arrays of `state.feed` (initial values) for `Shared.create(states=...)`."""
    return {"counters": np.zeros(len(FEED_COUNTERS), np.int64)}


def feed_counters(shared: Shared) -> np.ndarray | None:
    """The live counter vector of an attached instance (None: no such segment)."""
    st = shared.state.get(STATE_NAME)
    return None if st is None else st["counters"]


def feed_summary(shared: Shared) -> dict[str, float | int] | None:
    """The counters as a dict for status and metrics (seconds lost in seconds)."""
    c = feed_counters(shared)
    if c is None:
        return None
    out: dict[str, float | int] = {name: int(c[i]) for name, i in FEED.items()}
    out["seconds_lost"] = round(int(out.pop("lost_ms")) / 1000.0, 3)
    return out
