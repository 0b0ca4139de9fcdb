"""Edge-triggered alerts from a cycle's match matrix, and their ALERT_DTYPE records.

State per (rule, row) is one `latched` flag (the symbol alerted and has not been released
since) plus, for rules with a cooldown, the time of the last ENTER. Per rule mode:

* `enter`: ENTER when a symbol matches and is not latched and its cooldown has passed; the
  latch is released when the symbol stops matching. A symbol that matches again inside its
  cooldown alerts as soon as the cooldown is over if it still matches then.
* `enter_exit`: as `enter`, plus an EXIT when a latched symbol stops matching.
* `once_per_bar` / `once_per_day`: ENTER when a symbol matches and has not alerted in this
  bar / trading day (latches are released when the bar / day given to `step` changes, not
  when the symbol stops matching); the cooldown applies on top.

Only cells where `match != latched` can produce anything, so `step`'s kernel compares the two
matrices 8 cells per uint64 and looks into the few words that differ: one pass over
n_rules x n_rows bytes, whatever the number of alerts (a numba loop: numpy's formulation took
~13 array passes and fancy indexing, 110-170 us a cycle for 31 rules x 5,000 rows against 57-76).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from scanner.records import ALERT_DTYPE, ALERT_ENTER, ALERT_EXIT, ALERT_VALUES
from scanner.rules.limits import ALERT_MODES

MODE_ENTER, MODE_ENTER_EXIT, MODE_BAR, MODE_DAY = (ALERT_MODES.index(m) for m in
                                                   ("enter", "enter_exit", "once_per_bar", "once_per_day"))
NEVER = np.iinfo(np.int64).min // 2  # "no alert yet": any cooldown has passed since
_FIRST_OUT = 1024  # alerts a cycle's output buffers hold at first (they grow when a cycle needs more)


@njit(cache=True, nogil=True)
def _step(match: np.ndarray, latched: np.ndarray, m64: np.ndarray, l64: np.ndarray, edge: np.ndarray,
          exits: np.ndarray, cd_slot: np.ndarray, cooldown_ns: np.ndarray, last_enter: np.ndarray, now_ns: int,
          n_rows: int, start: int, out_rule: np.ndarray, out_row: np.ndarray, out_kind: np.ndarray) -> tuple:
    """Cells `start..` of the flat (rule-major) `match` / `latched`, in order: a matching cell
    that is not latched ENTERs (and latches) unless its rule's cooldown since its last ENTER has
    not passed; a latched cell that stopped matching is released by the edge rules (`edge`),
    with an EXIT for `exits` rules. `m64` / `l64` are the same bytes as uint64 words (whole
    words only). Returns (alerts written to the `out_*` buffers, the cell to resume at): it
    stops, before touching the cell, when the buffers are full."""
    n = match.shape[0]
    nw = m64.shape[0]
    cap = out_rule.shape[0]
    k = 0
    c = start
    i = start // n_rows if n_rows else 0  # the rule of cell c, and where its row 0 is (no division per cell)
    base = i * n_rows
    while c < n:
        if (c & 7) == 0:  # at a word: skip the words where nothing differs
            w = c >> 3
            while w < nw and m64[w] == l64[w]:
                w += 1
            c = max(c, w << 3)
            if c >= n:
                break
        if match[c] != latched[c]:
            if k == cap:
                return k, c
            while c >= base + n_rows:
                i += 1
                base += n_rows
            r = c - base
            if match[c]:
                s = cd_slot[i]
                fire = True
                if s >= 0:
                    if now_ns - last_enter[s, r] >= cooldown_ns[i]:
                        last_enter[s, r] = now_ns
                    else:
                        fire = False
                if fire:
                    latched[c] = True
                    out_rule[k], out_row[k], out_kind[k] = i, r, ALERT_ENTER
                    k += 1
            elif edge[i]:
                latched[c] = False
                if exits[i]:
                    out_rule[k], out_row[k], out_kind[k] = i, r, ALERT_EXIT
                    k += 1
        c += 1
    return k, n


class AlertState:
    """Alert state of `n_rules` x `n_rows` cells; `modes` (index into ALERT_MODES) and
    `cooldown_ns` are per rule."""

    def __init__(self, n_rules: int, n_rows: int, modes: np.ndarray, cooldown_ns: np.ndarray) -> None:
        modes = np.asarray(modes, np.int8)
        cooldown_ns = np.asarray(cooldown_ns, np.int64)
        if modes.shape != (n_rules,) or cooldown_ns.shape != (n_rules,):
            raise ValueError(f"'modes' and 'cooldown_ns' must have {n_rules} entries, "
                             f"had {modes.shape} and {cooldown_ns.shape}")
        if (cooldown_ns < 0).any():
            raise ValueError("'cooldown_ns' must be >= 0")
        self.n_rules, self.n_rows = n_rules, n_rows
        self.modes, self.cooldown_ns = modes, cooldown_ns
        self.latched = np.zeros((n_rules, n_rows), bool)
        cd_rules = np.flatnonzero(cooldown_ns > 0)
        self.cd_slot = np.full(n_rules, -1, np.int64)
        self.cd_slot[cd_rules] = np.arange(len(cd_rules))
        self.last_enter_ns = np.full((len(cd_rules), n_rows), NEVER, np.int64)
        self._bar_rules = np.flatnonzero(modes == MODE_BAR)
        self._day_rules = np.flatnonzero(modes == MODE_DAY)
        self._edge = (modes == MODE_ENTER) | (modes == MODE_ENTER_EXIT)
        self._exit = modes == MODE_ENTER_EXIT
        self.bar: int | None = None
        self.day: int | None = None
        self._out = (np.empty(_FIRST_OUT, np.int64), np.empty(_FIRST_OUT, np.int64), np.empty(_FIRST_OUT, np.uint16))

    def carry(self, old: AlertState, old_of_new: np.ndarray) -> None:
        """Take over the state of rule `old_of_new[i]` of `old` for rule i (-1 = fresh), e.g.
        across a rule change for the rules that did not change (no duplicate ENTERs)."""
        self.bar, self.day = old.bar, old.day
        for new_i, old_i in enumerate(old_of_new.tolist()):
            if old_i < 0:
                continue
            self.latched[new_i] = old.latched[old_i]
            s_new, s_old = self.cd_slot[new_i], old.cd_slot[old_i]
            if s_new >= 0 and s_old >= 0:
                self.last_enter_ns[s_new] = old.last_enter_ns[s_old]

    def step(self, match: np.ndarray, now_ns: int, bar: int,
             day: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """New alerts for this cycle's bool (n_rules, n_rows) match matrix, ordered by (rule, row):
        (rule int64, row int64, kind uint16 ALERT_ENTER / ALERT_EXIT). Updates the state."""
        if match.shape != self.latched.shape or match.dtype != np.bool_ or not match.flags.c_contiguous:
            raise ValueError(f"'match' must be C-contiguous bool {self.latched.shape}, "
                             f"was {match.dtype} {match.shape}")
        if bar != self.bar:
            if self.bar is not None and len(self._bar_rules):
                self.latched[self._bar_rules] = False
            self.bar = bar
        if day != self.day:
            if self.day is not None and len(self._day_rules):
                self.latched[self._day_rules] = False
            self.day = day
        flat_m, flat_l = match.reshape(-1), self.latched.reshape(-1)
        nw = len(flat_m) // 8
        m64, l64 = flat_m[:nw * 8].view(np.uint64), flat_l[:nw * 8].view(np.uint64)
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        cell = 0
        while True:
            rule, row, kind = self._out
            k, cell = _step(flat_m, flat_l, m64, l64, self._edge, self._exit, self.cd_slot, self.cooldown_ns,
                            self.last_enter_ns, now_ns, self.n_rows, cell, rule, row, kind)
            parts.append((rule[:k].copy(), row[:k].copy(), kind[:k].copy()))
            if cell >= len(flat_m):
                break
            self._out = tuple(np.empty(2 * len(a), a.dtype) for a in self._out)  # full: grow, go on
        if len(parts) == 1:
            return parts[0]
        return tuple(np.concatenate(p) for p in zip(*parts, strict=True))  # type: ignore[return-value]


def warm_up() -> None:
    """Compile (first time on a machine) or load `AlertState.step`'s kernel (a worker's first
    scan must not compile it)."""
    AlertState(1, 9, np.array([MODE_ENTER_EXIT]), np.array([1])).step(np.ones((1, 9), bool), 0, 0, 0)


class AlertWriter:
    """Fills ALERT_DTYPE records into a reusable buffer (grown when a cycle needs more)."""

    def __init__(self, worker: int, lo: int, seq: int = 0, capacity: int = 1024) -> None:
        self.worker, self.lo, self.seq = worker, lo, seq
        self._buf = np.zeros(capacity, ALERT_DTYPE)

    def fill(self, rule: np.ndarray, row: np.ndarray, kind: np.ndarray, value_pos: np.ndarray,
             snap: np.ndarray, hist: np.ndarray | None, event_ns: int, scan_ns: int,
             generation: int, keys: np.ndarray, price_pos: int = -1) -> np.ndarray:
        """Records for the alerts (rule index, local row, kind); the record carries `keys[rule]`
        (the rule's stable key, see `scanner.records.rule_key`), `values` from `value_pos` (see
        CompiledRules), `price` from row `price_pos` of `snap` (NaN if -1). Returns a view of
        the buffer, valid until the next call; `seq` advances."""
        k = len(rule)
        if k > len(self._buf):
            self._buf = np.zeros(max(k, 2 * len(self._buf)), ALERT_DTYPE)
        rec = self._buf[:k]
        if k == 0:
            return rec
        rec["seq"] = np.arange(self.seq, self.seq + k, dtype=np.int64)
        self.seq += k
        rec["event_ns"], rec["scan_ns"] = event_ns, scan_ns
        rec["sym"] = row + self.lo
        rec["rule"], rec["generation"], rec["worker"], rec["kind"] = keys[rule], generation, self.worker, kind
        pos = value_pos[rule]
        rows = np.broadcast_to(row[:, None], pos.shape)
        vals = np.full((k, ALERT_VALUES), np.nan)
        m = len(snap)
        live = (pos >= 0) & (pos < m)
        vals[live] = snap[pos[live], rows[live]]
        past = pos >= m
        if past.any() and hist is not None:
            vals[past] = hist[pos[past] - m, rows[past]]
        rec["values"] = vals
        rec["price"] = snap[price_pos, row] if price_pos >= 0 else np.nan
        return rec
