"""ScanEngine: compiled rules + alert state + record writer for one worker's row range.

Buffer ownership: the engine owns two snapshot buffers shaped `(len(f8_cols), n_rows)` and
swaps them every cycle (this cycle's becomes the next cycle's `prev_snap`, for crosses). The
zero-copy path is to fill `engine.snapshot_buffer()` (the buffer the next cycle will use) and
pass that same array to `cycle`; any other array passed to `cycle` is copied into it first.
Likewise `hist_buffer()` for the bar-history operands. The records `cycle` returns are a view
of a reusable buffer, valid until the next call: push them to the ring before calling again.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from scanner.rules.alerts import AlertState, AlertWriter
from scanner.rules.compiler import DEFAULT_BACKEND, Backend, CompiledRules, compile_rules
from scanner.rules.model import Rule


class ScanEngine:
    """Evaluates rules over a worker's rows `lo .. lo + len(keys)` and emits edge-triggered alerts."""

    def __init__(self, rules: Sequence[Rule], keys: Sequence[str], lo: int, worker_id: int,
                 generation: int = 0, seq_start: int = 0, backend: Backend = DEFAULT_BACKEND) -> None:
        if lo < 0:
            raise ValueError(f"'lo' must be >= 0, was {lo}")
        self.keys, self.lo, self.worker_id, self.backend = list(keys), lo, worker_id, backend
        self.writer = AlertWriter(worker_id, lo, seq_start)
        self._install(list(rules), generation, None)

    # -- rules
    def _install(self, rules: list[Rule], generation: int, old: ScanEngine | None) -> None:
        comp = compile_rules(rules, self.keys, self.backend)
        state = AlertState(comp.n_rules, comp.n_rows, comp.modes, comp.cooldown_ns)
        n, m = comp.n_rows, len(comp.f8_cols)
        bufs = [np.full((m, n), np.nan), np.full((m, n), np.nan)]
        hist = np.full((len(comp.hist_refs), n), np.nan)
        have_prev = False
        if old is not None:  # keep unchanged rules' alert state and the previous snapshot's columns
            before = {r.id: (i, r.signature()) for i, r in enumerate(old.compiled.rules)}
            old_of_new = np.array([before[r.id][0] if r.id in before and before[r.id][1] == r.signature()
                                   else -1 for r in rules], np.int64)
            state.carry(old.state, old_of_new)
            if old._have_prev:
                old_prev = old._bufs[1 - old._cur]
                pos = {nm: i for i, nm in enumerate(old.compiled.f8_names)}
                for i, nm in enumerate(comp.f8_names):
                    if nm in pos:
                        bufs[1][i] = old_prev[pos[nm]]
                have_prev = True
        self.compiled: CompiledRules = comp
        self.state = state
        self.generation = generation
        self._bufs, self._cur, self._have_prev, self._hist = bufs, 0, have_prev, hist
        self._match: np.ndarray | None = None

    def set_rules(self, rules: Sequence[Rule], generation: int) -> None:
        """Switch to a new rule list; rules whose id and definition are unchanged keep their
        alert state (no repeated ENTERs), and crosses keep judging against the last snapshot."""
        self._install(list(rules), generation, self)

    @property
    def f8_cols(self) -> np.ndarray:
        """Catalogue f8 columns to snapshot, in `snap` row order."""
        return self.compiled.f8_cols

    @property
    def hist_refs(self) -> list[tuple[str, int]]:
        return self.compiled.hist_refs

    def snapshot_buffer(self) -> np.ndarray:
        """The array the next `cycle` uses as its snapshot (fill it, then pass it in: no copy)."""
        return self._bufs[self._cur]

    def hist_buffer(self) -> np.ndarray:
        """The array `cycle` uses for bar-history operands (fill it, then pass it in: no copy)."""
        return self._hist

    # -- the scan
    def cycle(self, snap: np.ndarray, hist: np.ndarray | None, now_ns: int, event_ns: int,
              minute_of_day_et: int, bar_minute: int, day: int, scan_ns: int | None = None,
              owned: np.ndarray | None = None) -> np.ndarray:
        """Evaluate, update alert state, return this cycle's new alerts (ALERT_DTYPE view).
        `now_ns` drives cooldowns and is the records' scan_ns unless `scan_ns` is given (a replay
        passes event time as `now_ns`, so cooldowns run on the replayed clock, and the wall clock
        as `scan_ns`); `event_ns` is the feed time; `bar_minute` / `day` identify the bar and
        trading day for the once_per_* modes. `owned` (bool per row, Kafka group mode): only those
        rows can match; the others belong to another host (or are being rebuilt). A row that is
        not owned also drops its latches without an alert: a symbol the group moves away still
        matches on its new host, so no EXIT goes out for it here, and one that comes back
        alerts like a new row once it matches (its new host's state is not known here)."""
        cur = self._bufs[self._cur]
        if snap is not cur:
            if snap.shape != cur.shape:
                raise ValueError(f"'snap' must be shaped {cur.shape} (f8_cols x rows), was {snap.shape}")
            np.copyto(cur, snap)
        if self.compiled.hist_refs:
            if hist is None:
                raise ValueError(f"'hist' is needed for {self.compiled.hist_refs}")
            if hist is not self._hist:
                np.copyto(self._hist, hist)
        prev = self._bufs[1 - self._cur] if self._have_prev else None
        match = self.compiled.evaluate(cur, prev, self._hist, minute_of_day_et)
        if owned is not None:
            match &= owned
            self.state.latched &= owned  # in place, no allocation (docstring)
        self._match = match
        rule, row, kind = self.state.step(match, now_ns, bar_minute, day)
        recs = self.writer.fill(rule, row, kind, self.compiled.value_pos, cur, self._hist, event_ns,
                                now_ns if scan_ns is None else scan_ns, self.generation, self.compiled.keys,
                                self.compiled.price_pos)
        self._cur, self._have_prev = 1 - self._cur, True
        return recs

    # -- current matches (for the REST layer)
    @property
    def last_match(self) -> np.ndarray | None:
        """bool (n_rules, n_rows) of the last cycle (a reused buffer: copy it), None before one."""
        return self._match

    def match_counts(self) -> np.ndarray:
        """int64 (n_rules,): symbols matching each rule at the last cycle (zeros before the first)."""
        if self._match is None:
            return np.zeros(self.compiled.n_rules, np.int64)
        return np.count_nonzero(self._match, axis=1).astype(np.int64)

    def matching_rows(self, rule: int) -> np.ndarray:
        """Global rows (lo + local row) matching rule index `rule` at the last cycle."""
        if self._match is None:
            return np.zeros(0, np.int64)
        return np.flatnonzero(self._match[rule]) + self.lo

    def current_matches(self) -> dict[str, list[str]]:
        """Rule id -> symbols matching at the last cycle (rules with no match left out)."""
        if self._match is None:
            return {}
        out: dict[str, list[str]] = {}
        for i in np.flatnonzero(self._match.any(axis=1)).tolist():
            out[self.compiled.rules[i].id] = [self.keys[r] for r in np.flatnonzero(self._match[i]).tolist()]
        return out
