"""The synthetic market halts a symbol now and then after a sharp move: no trades while halted,
a resume a few minutes later, LULD bands for every symbol."""

from __future__ import annotations

import numpy as np

from scanner.feeds.synthetic import HALT_PAUSE_S, LULD_BAND, SyntheticTape, make_universe
from scanner.session import NS, session_bounds_ns


def test_halts_pause_trading_then_resume() -> None:
    n = 50
    u = make_universe(n, seed=3, rate=500.0)
    open_ns = session_bounds_ns(20261127)["open"]
    tape = SyntheticTape(u, np.arange(n), 500.0, 11, open_ns)
    ticks, statuses, lulds = [], [], []
    t = open_ns
    step = NS // 2
    while t < open_ns + 90 * 60 * NS:
        ticks.append(tape.generate(t, t + step))
        st, lu = tape.take_market_state()
        statuses.append(st)
        lulds.append(lu)
        t += step
    ticks, statuses, lulds = np.concatenate(ticks), np.concatenate(statuses), np.concatenate(lulds)
    halts = statuses[statuses["halted"] == 1]
    resumes = statuses[statuses["halted"] == 0]
    assert len(halts) >= 2, "no halts in 90 minutes of synthetic market"
    assert len(resumes) >= len(halts) - 1
    for h, r in zip(halts, resumes, strict=False):
        assert h["sym"] == r["sym"]
        pause = (int(r["ts_ns"]) - int(h["ts_ns"])) / NS
        assert HALT_PAUSE_S[0] <= pause <= HALT_PAUSE_S[1] + 1
        during = (ticks["sym"] == h["sym"]) & (ticks["ts_ns"] >= h["ts_ns"]) & (ticks["ts_ns"] < r["ts_ns"])
        assert not during.any(), "trades while halted"
    assert set(np.unique(lulds["sym"]).tolist()) == set(range(n))
    np.testing.assert_allclose(lulds["upper"] / lulds["lower"], (1 + LULD_BAND) / (1 - LULD_BAND), rtol=0.01)
