"""Backtest computations: forward returns of alerts from the replay's own bars, statistics per
rule and time of day, the HTML report. Pure functions over numpy arrays; the replay that feeds
them is run by `procs.backtest` / `cli.backtest`."""
