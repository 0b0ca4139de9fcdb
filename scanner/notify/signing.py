"""Webhook signatures: HMAC-SHA256 over `<timestamp>.<raw body>` with a per-destination secret.

Headers sent with every attempt:

* `X-Scanner-Timestamp`: Unix seconds when the attempt was signed;
* `X-Scanner-Signature`: `sha256=<hex digest>`.

The timestamp is inside the signed bytes (as Stripe and Slack do), so a captured request cannot
be replayed later with a fresh timestamp; a receiver rejects timestamps outside its tolerance and
compares digests in constant time (`verify` does both).
"""

from __future__ import annotations

import hashlib
import hmac
import time

TIMESTAMP_HEADER = "X-Scanner-Timestamp"
SIGNATURE_HEADER = "X-Scanner-Signature"
DELIVERY_HEADER = "X-Scanner-Delivery"  # the stream entry id: receivers dedupe at-least-once repeats with it
PREFIX = "sha256="


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256(secret, b"<timestamp>." + body)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return PREFIX + mac.hexdigest()


def signed_headers(secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The timestamp and signature headers for one attempt."""
    ts = int(time.time() if now is None else now)
    return {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: signature(secret, ts, body)}


def verify(secret: str, timestamp: str, sig: str, body: bytes, *, tolerance_s: float = 300.0,
           now: float | None = None) -> bool:
    """Receiver side: the signature matches and the timestamp is within `tolerance_s` of now."""
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance_s:
        return False
    return hmac.compare_digest(signature(secret, ts, body), sig)
