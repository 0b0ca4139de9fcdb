"""Indicators over 1-minute bars, vectorised across all symbols of the table.

Each indicator is one set of scalar numba step functions in its family module (`averages`,
`momentum`, `volatility`); `engine.IndicatorEngine` calls the same functions to finalise a
closed bar (state stored) and to compute live values (the live bar as if it closed now, state
untouched), so the two paths cannot disagree. `volume` and `session` hold the vectorised
numpy metrics that need no bar state. TA-Lib is the reference the tests pin them to.
"""

from scanner.indicators.engine import IndicatorEngine

__all__ = ["IndicatorEngine"]
