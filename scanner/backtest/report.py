"""The backtest's HTML report: one self-contained page (inline CSS and SVG drawn here, no
script, no font or library from the network), so it opens offline and can be mailed.

Per rule: its statistics by time of day, the distribution of its forward returns (30 min and
session close), its cumulative return over the days, and the day's price chart of its
most-alerted symbols with the alert times marked. Everything a user wrote (rule ids and names,
symbols) is escaped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from typing import Any

import numpy as np

from scanner.backtest.returns import HORIZONS
from scanner.backtest.stats import GROUPS
from scanner.session import NY

W, H, PAD = 560, 180, 28


@dataclass
class PriceChart:
    """One symbol's day for the report: minute closes and the alert times of one rule."""

    rule: int
    symbol: str
    day: int
    count: int  # alerts of the rule on that symbol and day
    minute_ns: np.ndarray
    close: np.ndarray
    alert_ns: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:+.2f}%"


def _scale(v: np.ndarray, lo: float, hi: float, a: float, b: float) -> np.ndarray:
    span = hi - lo if hi > lo else 1.0
    return a + (v - lo) / span * (b - a)


def svg_histogram(values: np.ndarray, title: str, bins: int = 30) -> str:
    """Bars of the distribution of `values` (returns, shown in %), zero marked."""
    v = values[~np.isnan(values)] * 100
    head = f'<svg viewBox="0 0 {W} {H}" class="chart"><text x="{PAD}" y="14">{escape(title)} (n={len(v)})</text>'
    if not len(v):
        return head + f'<text x="{W / 2}" y="{H / 2}">no data</text></svg>'
    lo, hi = float(np.percentile(v, 1)), float(np.percentile(v, 99))
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi <= lo:
        lo, hi = lo - 1, hi + 1
    counts, edges = np.histogram(np.clip(v, lo, hi), bins=bins, range=(lo, hi))
    x = _scale(edges, lo, hi, PAD, W - 8)
    top = counts.max() or 1
    parts = [head]
    for i, c in enumerate(counts.tolist()):
        h = (H - PAD - 22) * c / top
        cls = "pos" if edges[i] >= 0 else "neg"
        bw = max(x[i + 1] - x[i] - 1, 1)
        parts.append(f'<rect class="{cls}" x="{x[i]:.1f}" y="{H - PAD - h:.1f}" width="{bw:.1f}" '
                     f'height="{h:.1f}"><title>{edges[i]:.2f}..{edges[i + 1]:.2f}%: {c}</title></rect>')
    zx = _scale(np.array([0.0]), lo, hi, PAD, W - 8)[0]
    parts.append(f'<line class="zero" x1="{zx:.1f}" y1="20" x2="{zx:.1f}" y2="{H - PAD}"/>')
    parts.append(f'<text x="{PAD}" y="{H - 8}">{lo:.2f}%</text><text x="{W - 60}" y="{H - 8}">{hi:.2f}%</text>')
    return "".join(parts) + "</svg>"


def svg_line(xs: np.ndarray, ys: np.ndarray, title: str, labels: list[str] | None = None,
             marks: np.ndarray | None = None, pct: bool = False) -> str:
    """A polyline of ys over xs; `marks` (x values) drawn as dots on the line."""
    head = f'<svg viewBox="0 0 {W} {H}" class="chart"><text x="{PAD}" y="14">{escape(title)}</text>'
    ok = ~np.isnan(ys)
    if not ok.any():
        return head + f'<text x="{W / 2}" y="{H / 2}">no data</text></svg>'
    xs, ys = xs[ok].astype(np.float64), ys[ok] * (100 if pct else 1)
    x0, x1 = float(xs.min()), float(xs.max())
    y0, y1 = float(ys.min()), float(ys.max())
    if pct:
        y0, y1 = min(y0, 0.0), max(y1, 0.0)
    px = _scale(xs, x0, x1, PAD + 30, W - 8)
    py = _scale(ys, y0, y1, H - PAD, 22)
    pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px.tolist(), py.tolist(), strict=True))
    parts = [head, f'<polyline class="line" points="{pts}"/>']
    if len(xs) == 1:
        parts.append(f'<circle class="pt" cx="{px[0]:.1f}" cy="{py[0]:.1f}" r="3"/>')
    unit = "%" if pct else ""
    parts.append(f'<text x="2" y="26">{y1:.2f}{unit}</text><text x="2" y="{H - PAD}">{y0:.2f}{unit}</text>')
    if labels:
        parts.append(f'<text x="{PAD + 30}" y="{H - 8}">{escape(labels[0])}</text>'
                     f'<text x="{W - 110}" y="{H - 8}">{escape(labels[-1])}</text>')
    if marks is not None and len(marks):
        my = np.interp(marks.astype(np.float64), xs, ys)
        mx = _scale(marks.astype(np.float64), x0, x1, PAD + 30, W - 8)
        my = _scale(my, y0, y1, H - PAD, 22)
        parts += [f'<circle class="alert" cx="{a:.1f}" cy="{b:.1f}" r="3.5"/>' for a, b in
                  zip(mx.tolist(), my.tolist(), strict=True)]
    return "".join(parts) + "</svg>"


def _stats_table(groups: dict[str, Any]) -> str:
    head = "".join(f"<th>{h} hit</th><th>{h} mean</th><th>{h} median</th>" for h in HORIZONS)
    rows = []
    for g in GROUPS:
        s = groups[g]
        cells = "".join(f"<td>{_pct(s[h]['hit_rate'])[1:] if s[h]['hit_rate'] is not None else '–'}</td>"
                        f"<td>{_pct(s[h]['mean'])}</td><td>{_pct(s[h]['median'])}</td>" for h in HORIZONS)
        rows.append(f"<tr><th>{g}</th><td>{s['alerts']}</td><td>{s['symbols']}</td>{cells}"
                    f"<td>{_pct(s['mfe_30m'])}</td><td>{_pct(s['mae_30m'])}</td></tr>")
    return (f"<div class=\"wide\"><table><tr><th>time of day</th><th>alerts</th><th>symbols</th>{head}<th>MFE 30m</th>"
            f"<th>MAE 30m</th></tr>{''.join(rows)}</table></div>")


def _clock(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, NY).strftime("%H:%M")


def render(meta: dict[str, Any], rules: list[dict[str, Any]], stats: dict[str, dict[str, Any]],
           cols: dict[str, np.ndarray], days: list[int], cumulative: np.ndarray,
           charts: list[PriceChart]) -> str:
    """The whole page. `rules`: dicts with id, name, side; `cols`: per-alert columns (`rule`,
    `ret_30m`, `ret_close`, ...); `cumulative`: (n_rules, n_days) from `stats.cumulative_by_day`."""
    out = [f"""<!doctype html><html><head><meta charset="utf-8"><title>Backtest report</title><style>
body{{font:14px system-ui,sans-serif;margin:24px;color:#222}} h2{{margin-top:36px;border-bottom:1px solid #ccc}}
table{{border-collapse:collapse;font-size:12px}} td,th{{border:1px solid #ddd;padding:2px 6px;text-align:right}}
.chart{{width:{W}px;height:{H}px;border:1px solid #eee;margin:4px}} .chart text{{font-size:10px;fill:#555}}
rect.pos{{fill:#2a9d5a}} rect.neg{{fill:#c8553d}} .zero{{stroke:#333;stroke-dasharray:3}}
.line{{fill:none;stroke:#2b6cb0;stroke-width:1.3}} .alert{{fill:#e8a317;stroke:#333}} .pt{{fill:#2b6cb0}}
.meta td{{text-align:left}} .wide{{overflow-x:auto}}</style></head><body><h1>Backtest report</h1>
<table class="meta">"""]
    for k, v in meta.items():
        out.append(f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>")
    out.append("</table>")
    day_labels = [str(d) for d in days]
    for i, r in enumerate(rules):
        rid = r["id"]
        of_rule = cols["rule"] == i
        out.append(f"<h2>{escape(rid)} <small>{escape(r.get('name') or '')} · side {escape(r.get('side', 'long'))}"
                   "</small></h2>")
        out.append(_stats_table(stats[rid]))
        out.append("<div>")
        out.append(svg_histogram(cols["ret_30m"][of_rule], "forward return after 30 min"))
        out.append(svg_histogram(cols["ret_close"][of_rule], "forward return at the session close"))
        out.append(svg_line(np.arange(len(days)), cumulative[i] if len(days) else np.empty(0),
                            "cumulative 30-min return over the days (sum per alert)", day_labels, pct=True))
        for c in (c for c in charts if c.rule == i):
            t = f"{c.symbol} on {c.day}: {c.count} alerts (dots) · {_clock(int(c.minute_ns[0]))}.." \
                f"{_clock(int(c.minute_ns[-1]))} New York" if len(c.minute_ns) else c.symbol
            out.append(svg_line(c.minute_ns, c.close, t, None, c.alert_ns))
        out.append("</div>")
    out.append("</body></html>")
    return "\n".join(out)
