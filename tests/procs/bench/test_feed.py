"""Smoke test of the feed benchmark (the real numbers come from `scanner bench feed` / docs)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cli.bench import app


def test_bench_feed_quick_prints_the_contract_keys() -> None:
    res = CliRunner().invoke(app, ["feed", "--quick", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    for key in ("alpaca_trades_per_s", "polygon_trades_per_s", "json_baseline_trades_per_s", "alpaca_vs_json",
                "polygon_vs_json"):
        assert out[key] > 0, key
    assert out["trades"] > 10_000 and 1 <= out["mean_trades_per_frame"] <= 1000
    assert set(out["by_frame_size"]) == {"1", "10", "100", "1000"}
