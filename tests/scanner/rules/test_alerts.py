"""Edge-triggered alert state, alert records, and the ScanEngine that ties them to the compiler."""

from __future__ import annotations

import numpy as np
import pytest

from scanner.records import ALERT_DTYPE, ALERT_ENTER, ALERT_EXIT
from scanner.rules.alerts import MODE_BAR, MODE_DAY, MODE_ENTER, MODE_ENTER_EXIT, AlertState, AlertWriter
from scanner.rules.engine import ScanEngine
from scanner.rules.model import parse_rules

S = 1_000_000_000


def state(mode: int, cooldown_s: float = 0, n_rows: int = 3) -> AlertState:
    return AlertState(1, n_rows, np.array([mode]), np.array([int(cooldown_s * S)]))


def feed(
    st: AlertState,
    pattern: list[list[int]],
    t0: int = 0,
    dt_s: float = 1,
    bars: list[int] | None = None,
    days: list[int] | None = None,
) -> list[list[tuple[int, int]]]:
    """Run cycles of one-rule match rows; per cycle the (row, kind) alerts."""
    out = []
    for i, rowbits in enumerate(pattern):
        m = np.array([rowbits], bool)
        bar = bars[i] if bars else 0
        day = days[i] if days else 0
        rule, row, kind = st.step(m, t0 + int(i * dt_s * S), bar, day)
        assert (rule == 0).all()
        out.append(list(zip(row.tolist(), kind.tolist(), strict=True)))
    return out


E, X = ALERT_ENTER, ALERT_EXIT


def test_enter_alerts_on_the_rising_edge_only() -> None:
    got = feed(state(MODE_ENTER), [[1, 0, 0], [1, 1, 0], [1, 1, 0], [0, 1, 0], [1, 1, 1]])
    assert got == [[(0, E)], [(1, E)], [], [], [(0, E), (2, E)]]


def test_enter_exit_emits_exit_for_announced_symbols() -> None:
    got = feed(state(MODE_ENTER_EXIT), [[1, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 0]])
    assert got == [[(0, E)], [(0, X), (1, E)], [(1, X)], []]


def test_cooldown_holds_back_a_rematch_until_it_has_passed() -> None:
    st = state(MODE_ENTER_EXIT, cooldown_s=10)
    # t=0 enter, t=1 exit, t=2..10 matching again inside the cooldown: nothing; t=10 cooldown over
    pattern = [[1, 0, 0], [0, 0, 0]] + [[1, 0, 0]] * 10
    got = feed(st, pattern)
    assert got[0] == [(0, E)] and got[1] == [(0, X)]
    assert all(g == [] for g in got[2:10]) and got[10] == [(0, E)] and got[11] == []
    # flapping inside the cooldown never alerts, and a symbol that was never announced gets no EXIT
    st = state(MODE_ENTER_EXIT, cooldown_s=100)
    got = feed(st, [[1, 0, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0], [1, 0, 0]])
    assert got == [[(0, E)], [(0, X)], [], [], []]


def test_cooldown_is_per_symbol() -> None:
    got = feed(state(MODE_ENTER, cooldown_s=5), [[1, 0, 0], [0, 1, 0], [1, 0, 0]])
    assert got == [[(0, E)], [(1, E)], []]


def test_once_per_bar() -> None:
    st = state(MODE_BAR)
    got = feed(
        st,
        [[1, 0, 0], [0, 0, 0], [1, 1, 0], [1, 1, 0], [1, 0, 0], [0, 0, 1]],
        bars=[100, 100, 100, 101, 101, 102],
    )
    assert got == [[(0, E)], [], [(1, E)], [(0, E), (1, E)], [], [(2, E)]]


def test_once_per_day() -> None:
    st = state(MODE_DAY)
    got = feed(
        st,
        [[1, 0, 0], [0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 0, 0]],
        days=[1, 1, 1, 1, 2],
        bars=[1, 2, 3, 4, 5],
    )
    assert got == [[(0, E)], [], [], [(1, E)], [(0, E)]]


def test_several_rules_and_modes_in_one_matrix() -> None:
    st = AlertState(3, 4, np.array([MODE_ENTER, MODE_ENTER_EXIT, MODE_BAR]), np.array([0, 0, 0]))
    m1 = np.array([[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 1, 1]], bool)
    r, c, k = st.step(m1, 0, 7, 1)
    assert list(zip(r.tolist(), c.tolist(), k.tolist(), strict=True)) == [
        (0, 0, E),
        (0, 3, E),
        (1, 1, E),
        (2, 0, E),
        (2, 1, E),
        (2, 2, E),
        (2, 3, E),
    ]
    m2 = np.array([[1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]], bool)
    r, c, k = st.step(m2, S, 7, 1)
    assert list(zip(r.tolist(), c.tolist(), k.tolist(), strict=True)) == [(1, 1, X)]
    with pytest.raises(ValueError, match="'match' must be"):
        st.step(np.zeros((3, 5), bool), 0, 7, 1)


class Reference:
    """The alert rules of the module docstring, cell by cell in (rule, row) order."""

    def __init__(self, modes: np.ndarray, cooldown_ns: np.ndarray, n_rows: int) -> None:
        self.modes, self.cooldown = modes, cooldown_ns
        self.latched = np.zeros((len(modes), n_rows), bool)
        self.last = np.full((len(modes), n_rows), None, object)
        self.bar = self.day = None

    def step(self, m: np.ndarray, now: int, bar: int, day: int) -> list[tuple[int, int, int]]:
        for mode, when, seen in ((MODE_BAR, bar, self.bar), (MODE_DAY, day, self.day)):
            if seen is not None and when != seen:
                self.latched[self.modes == mode] = False
        self.bar, self.day = bar, day
        out = []
        for i, r in np.ndindex(*m.shape):
            if m[i, r] and not self.latched[i, r]:
                last = self.last[i, r]
                if self.cooldown[i] == 0 or last is None or now - last >= self.cooldown[i]:
                    self.latched[i, r] = True
                    self.last[i, r] = now
                    out.append((i, r, E))
            elif not m[i, r] and self.latched[i, r] and self.modes[i] in (MODE_ENTER, MODE_ENTER_EXIT):
                self.latched[i, r] = False
                if self.modes[i] == MODE_ENTER_EXIT:
                    out.append((i, r, X))
        return out


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (5, 64), (7, 1001)])
def test_step_equals_the_cell_by_cell_rules(shape: tuple[int, int]) -> None:
    """Random match matrices (sparse, dense, flapping) against every mode, with and without
    cooldowns; a first output buffer of 3 alerts makes every cycle with more resume the kernel."""
    rng = np.random.default_rng(sum(shape))
    modes = np.arange(shape[0]) % 4
    cooldown = np.where(np.arange(shape[0]) % 3 == 1, 3 * S, 0)
    st, ref = AlertState(shape[0], shape[1], modes, cooldown), Reference(modes, cooldown, shape[1])
    st._out = tuple(a[:3] for a in st._out)
    m = np.zeros(shape, bool)
    for cycle in range(40):
        density = (0.0, 0.01, 0.5, 0.95)[cycle % 4]
        flip = rng.random(shape) < density
        m = m ^ flip if cycle % 2 else rng.random(shape) < density
        now, bar, day = cycle * S, cycle // 3, cycle // 20
        r, c, k = st.step(np.ascontiguousarray(m), now, bar, day)
        assert list(zip(r.tolist(), c.tolist(), k.tolist(), strict=True)) == ref.step(m, now, bar, day)
        assert np.array_equal(st.latched, ref.latched)


def _pos(eng: ScanEngine, alert: np.void) -> int:
    """The rule list position of the rule an alert names by its stable key."""
    return int(np.flatnonzero(eng.compiled.keys == alert["rule"])[0])


def test_alert_writer_fills_records() -> None:
    w = AlertWriter(worker=3, lo=1000, seq=50, capacity=1)
    snap = np.array([[1.0, 2.0, 3.0], [10.0, 20.0, 30.0]])
    hist = np.array([[-1.0, -2.0, -3.0]])
    value_pos = np.array([[1, 2, 0, -1, -1, -1], [0, -1, -1, -1, -1, -1]])
    recs = w.fill(
        np.array([0, 1, 0]),
        np.array([2, 0, 1]),
        np.array([E, X, E], np.uint16),
        value_pos,
        snap,
        hist,
        event_ns=5,
        scan_ns=6,
        generation=9,
        keys=np.array([7 << 60, 11], np.uint64),
    )
    assert recs.dtype == ALERT_DTYPE and len(recs) == 3
    assert recs["seq"].tolist() == [50, 51, 52] and w.seq == 53
    assert recs["sym"].tolist() == [1002, 1000, 1001] and recs["rule"].tolist() == [7 << 60, 11, 7 << 60]
    assert (
        recs["kind"].tolist() == [E, X, E] and (recs["worker"] == 3).all() and (recs["generation"] == 9).all()
    )
    assert (recs["event_ns"] == 5).all() and (recs["scan_ns"] == 6).all()
    assert recs["values"][0, :3].tolist() == [30.0, -3.0, 3.0] and np.isnan(recs["values"][0, 3:]).all()
    assert recs["values"][1, 0] == 1.0 and np.isnan(recs["values"][1, 1:]).all()
    assert (
        len(
            w.fill(
                np.zeros(0, np.int64),
                np.zeros(0, np.int64),
                np.zeros(0, np.uint16),
                value_pos,
                snap,
                hist,
                0,
                0,
                0,
                np.zeros(0, np.uint64),
            )
        )
        == 0
        and w.seq == 53
    )


RULES = parse_rules(
    [
        {
            "id": "vwap-up",
            "metric": "price",
            "operator": "crosses_above",
            "other": "vwap",
            "alert_mode": "enter_exit",
        },
        {"id": "gainer", "metric": "change_pct", "operator": ">", "value": 5, "universe": {"min_price": 1}},
        {"id": "mom", "metric": "price", "operator": ">", "other": {"metric": "close", "bars_ago": 3}},
    ]
)


def snap_for(eng: ScanEngine, price: list[float], vwap: list[float], change: list[float]) -> np.ndarray:
    cols = {"price": price, "vwap": vwap, "change_pct": change}
    return np.array([cols[n] for n in eng.compiled.f8_names], np.float64)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_engine_cycles(backend: str) -> None:
    eng = ScanEngine(
        RULES, ["AAA", "BBB", "CCC"], lo=100, worker_id=2, generation=4, seq_start=10, backend=backend
    )  # type: ignore[arg-type]
    assert eng.hist_refs == [("close", 3)]
    hist = np.array([[9.0, 20.0, np.nan]])
    t = 1_700_000_000 * S
    r1 = eng.cycle(
        snap_for(eng, [9.0, 10.0, 0.5], [10.0, 10.0, 1.0], [6.0, 1.0, 9.0]), hist, t, t - 5, 600, 1, 1
    )
    assert [(_pos(eng, a), int(a["sym"]), int(a["kind"])) for a in r1] == [(1, 100, E)]
    assert eng.match_counts().tolist() == [0, 1, 0] and eng.matching_rows(1).tolist() == [100]
    # the zero-copy path: fill the engine's own buffer
    buf = eng.snapshot_buffer()
    buf[:] = snap_for(eng, [11.0, 10.0, 2.0], [10.0, 10.0, 1.0], [6.0, 1.0, 9.0])
    hb = eng.hist_buffer()
    hb[:] = hist
    r2 = eng.cycle(buf, hb, t + S, t, 600, 1, 1)
    got = [(_pos(eng, a), int(a["sym"]), int(a["kind"])) for a in r2]
    assert got == [(0, 100, E), (0, 102, E), (1, 102, E), (2, 100, E)]
    assert (
        r2["seq"].tolist() == [11, 12, 13, 14] and (r2["generation"] == 4).all() and (r2["worker"] == 2).all()
    )
    assert r2["values"][0, :2].tolist() == [11.0, 10.0]  # price, vwap
    assert r2["values"][3, :2].tolist() == [11.0, 9.0]  # price, close[-3]
    assert eng.current_matches() == {"vwap-up": ["AAA", "CCC"], "gainer": ["AAA", "CCC"], "mom": ["AAA"]}
    # the cross is over: EXIT for enter_exit, nothing new for the others
    r3 = eng.cycle(
        snap_for(eng, [11.5, 10.0, 2.0], [10.0, 10.0, 1.0], [6.0, 1.0, 9.0]), hist, t + 2 * S, t, 600, 1, 1
    )
    assert [(_pos(eng, a), int(a["sym"]), int(a["kind"])) for a in r3] == [(0, 100, X), (0, 102, X)]
    with pytest.raises(ValueError, match="'hist' is needed"):
        eng.cycle(eng.snapshot_buffer(), None, t, t, 600, 1, 1)


def test_engine_rule_change_keeps_unchanged_rules_quiet() -> None:
    eng = ScanEngine(RULES[1:2], ["AAA", "BBB"], lo=0, worker_id=0)
    assert eng.compiled.f8_names == ["price", "change_pct"]  # catalogue order
    assert len(eng.cycle(np.array([[2.0, 2.0], [6.0, 7.0]]), None, 0, 0, 600, 1, 1)) == 2
    new_rules = parse_rules(
        [
            RULES[0].dump(),
            RULES[1].dump() | {"name": "renamed", "tags": ["x"]},
            {"id": "new", "metric": "change_pct", "operator": ">", "value": 6.5},
        ]
    )
    eng.set_rules(new_rules, generation=5)
    assert eng.compiled.f8_names == ["price", "vwap", "change_pct"]
    snap = np.array([[3.0, 3.0], [2.5, 2.5], [6.0, 7.0]])
    recs = eng.cycle(snap, None, S, S, 600, 1, 1)
    # "gainer" (only renamed) stays latched; "new" alerts; the cross has no previous vwap: no alert
    assert [(_pos(eng, a), int(a["sym"])) for a in recs] == [(2, 1)] and (recs["generation"] == 5).all()
    # the previous price did carry over: the next cycle judges crosses against this one
    recs = eng.cycle(np.array([[3.0, 2.0], [2.9, 2.5], [6.0, 7.0]]), None, 2 * S, 2 * S, 600, 1, 1)
    assert len(recs) == 0
    recs = eng.cycle(np.array([[3.0, 2.6], [2.9, 2.5], [6.0, 7.0]]), None, 3 * S, 3 * S, 600, 1, 1)
    assert [(_pos(eng, a), int(a["sym"]), int(a["kind"])) for a in recs] == [(0, 1, E)]
    # a changed definition starts fresh
    eng.set_rules(parse_rules([RULES[1].dump() | {"value": 5.5}]), generation=6)
    assert len(eng.cycle(np.array([[2.0, 2.0], [6.0, 7.0]]), None, 4 * S, 4 * S, 600, 1, 1)) == 2


def test_engine_rule_change_carries_the_previous_snapshot() -> None:
    cross = {"id": "p5", "metric": "price", "operator": "crosses_above", "value": 5}
    eng = ScanEngine(parse_rules([cross]), ["AAA"], lo=0, worker_id=0)
    assert len(eng.cycle(np.array([[4.0]]), None, 0, 0, 600, 1, 1)) == 0
    eng.set_rules(parse_rules([{"id": "rsi", "metric": "rsi_14", "operator": ">", "value": 90}, cross]), 2)
    recs = eng.cycle(np.array([[6.0], [50.0]]), None, S, S, 600, 1, 1)  # price, rsi_14
    assert [(_pos(eng, a), int(a["kind"])) for a in recs] == [(1, E)]


def test_a_row_the_group_moves_away_leaves_without_an_exit_and_comes_back_like_a_new_row() -> None:
    """Kafka group mode (`owned`): a row that stops being this host's still matches on its new
    host, so no EXIT goes out here; back again and still matching, it enters once more."""
    rules = parse_rules([{"id": "hold", "metric": "change_pct", "operator": ">", "value": 5,
                          "alert_mode": "enter_exit"}])
    eng = ScanEngine(rules, ["AAA", "BBB"], lo=0, worker_id=0)
    snap = np.array([[10.0, 10.0] if n == "price" else [9.0, 9.0] for n in eng.compiled.f8_names])  # both match
    change = eng.compiled.f8_names.index("change_pct")
    both, first = np.array([True, True]), np.array([True, False])

    def kinds(owned: np.ndarray, t: int) -> list[tuple[int, int]]:
        return [(int(a["sym"]), int(a["kind"])) for a in eng.cycle(snap, None, t * S, t * S, 600, 1, 1,
                                                                   owned=owned)]

    assert kinds(both, 1) == [(0, E), (1, E)]
    assert kinds(first, 2) == []  # BBB moved away: no EXIT for it
    assert kinds(first, 3) == []
    assert kinds(both, 4) == [(1, E)]  # back, still matching
    assert kinds(both, 5) == []
    snap[change, 0] = 1.0
    assert kinds(both, 6) == [(0, X)]  # an owned row that stops matching still exits
