"""Trading-status metrics: time since a halt ended and the distance to the LULD bands.

Vectorised numpy over whole columns, no state; missing inputs give NaN. Percentages are percent.
"""

from __future__ import annotations

import numpy as np

from scanner.session import NS


def seconds_since_resume(event_ns: int, resume_ts_ns: np.ndarray, halted: np.ndarray,
                         out: np.ndarray) -> np.ndarray:
    """Seconds from the last resume (0 = none) to `event_ns`; NaN while halted or with no resume."""
    np.divide(event_ns - resume_ts_ns, NS, out=out)
    out[(resume_ts_ns == 0) | (halted == 1)] = np.nan
    return out


def pct_to_band(price: np.ndarray, band: np.ndarray, out: np.ndarray, *, upper: bool) -> np.ndarray:
    """Distance from the price to a LULD band, percent of the price: positive inside the band
    (upper: band above the price; lower: price above the band), negative outside it."""
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(band - price if upper else price - band, price, out=out)
    out *= 100.0
    out[~(price > 0)] = np.nan
    return out
