"""Human-readable text of an alert (the stream's JSON shape, see scanner.alert_json): e-mail and SMS."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from scanner.session import NY

SMS_LIMIT = 160  # one GSM-7 segment


def _num(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return "n/a" if v is None else str(v)


def event_time(alert: dict[str, Any]) -> str:
    """Event time in New York time (the trading clock), e.g. `2024-05-01 09:31:05 ET`."""
    try:
        ts = datetime.fromtimestamp(float(alert["event_ts"]), UTC).astimezone(NY)
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        return "?"
    return ts.strftime("%Y-%m-%d %H:%M:%S ET")


def headline(alert: dict[str, Any]) -> str:
    """`AAPL: Gap up 3% [high]`, with `(exit)` for an exit alert."""
    exit_mark = " (exit)" if alert.get("kind") == "exit" else ""
    return f"{alert.get('symbol', '?')}: {alert.get('rule_name', alert.get('rule', '?'))}{exit_mark} " \
           f"[{alert.get('severity', 'info')}]"


def email_subject(alert: dict[str, Any], prefix: str = "") -> str:
    return f"{prefix} {headline(alert)}".strip()


def email_body(alert: dict[str, Any]) -> str:
    """Plain text: what matched, when, the metric values, and where it came from."""
    lines = [
        headline(alert),
        "",
        f"rule:     {alert.get('rule_name', '?')} ({alert.get('rule', '?')})",
        f"symbol:   {alert.get('symbol', '?')}",
        f"kind:     {alert.get('kind', '?')}",
        f"severity: {alert.get('severity', 'info')}",
        f"time:     {event_time(alert)}",
    ]
    if alert.get("tags"):
        lines.append(f"tags:     {', '.join(map(str, alert['tags']))}")
    values = alert.get("values") or {}
    if values:
        lines += ["", "values:"] + [f"  {k} = {_num(v)}" for k, v in values.items()]
    lines += ["", f"host {alert.get('host', '?')}, worker {alert.get('worker', '?')}, seq {alert.get('seq', '?')}"]
    return "\n".join(lines) + "\n"


def sms_body(alert: dict[str, Any], limit: int = SMS_LIMIT) -> str:
    """One line, cut to `limit` characters: headline, time of day, values."""
    when = event_time(alert)
    parts = [headline(alert), when[11:19] if when != "?" else ""]
    parts += [f"{k}={_num(v)}" for k, v in (alert.get("values") or {}).items()]
    text = " ".join(p for p in parts if p)
    # "..." not "…": one non-GSM character would switch the SMS to UCS-2 and halve the segment
    return text if len(text) <= limit else text[: limit - 3] + "..."
