"""Signing, token bucket, retry schedule and message text."""

from __future__ import annotations

import hashlib
import hmac
import random

import pytest

from scanner.notify import messages, signing
from scanner.notify.limits import RetrySchedule, TokenBucket

SECRET = "0123456789abcdef"
ALERT = {"rule": "gap", "rule_name": "Gap up 3%", "severity": "high", "tags": ["gap"], "symbol": "AAPL",
         "kind": "enter", "values": {"gap_pct": 3.14159265, "volume": 120000.0, "rsi_14": None},
         "event_ts": 1714570265.0, "scan_ts": 1714570265.5, "host": "h1", "worker": 0, "seq": 42, "generation": 1}


def test_signature_covers_timestamp_and_body() -> None:
    body = b'{"symbol":"AAPL"}'
    h = signing.signed_headers(SECRET, body, now=1_700_000_000)
    ts, sig = h[signing.TIMESTAMP_HEADER], h[signing.SIGNATURE_HEADER]
    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert ts == "1700000000" and sig == "sha256=" + expected
    assert signing.verify(SECRET, ts, sig, body, now=1_700_000_010)
    assert not signing.verify(SECRET, ts, sig, body + b" ", now=1_700_000_010)  # body changed
    assert not signing.verify("another-secret-xx", ts, sig, body, now=1_700_000_010)
    assert not signing.verify(SECRET, "1700000001", sig, body, now=1_700_000_010)  # timestamp changed
    assert not signing.verify(SECRET, ts, sig, body, now=1_700_001_000)  # replayed too late
    assert not signing.verify(SECRET, "soon", sig, body)


def test_token_bucket_never_exceeds_capacity_plus_refill() -> None:
    bucket = TokenBucket(rate=2.0, capacity=5, now=0.0)
    assert sum(bucket.take(0.0) for _ in range(20)) == 5
    assert bucket.wait_s(0.0) == pytest.approx(0.5)
    passed = 5 + sum(bucket.take(t / 100) for t in range(1, 301))  # 3 s of polling every 10 ms
    assert passed <= 5 + 2.0 * 3.0 and passed >= 5 + 2.0 * 3.0 - 1
    with pytest.raises(ValueError, match="'rate' must be positive"):
        TokenBucket(0.0, 1, 0.0)


def test_retry_schedule_grows_with_jitter_and_cap() -> None:
    sched = RetrySchedule(base_s=1.0, cap_s=8.0, max_attempts=5)
    rng = random.Random(1)
    for n, d in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        waits = [sched.delay(n, rng) for _ in range(200)]
        assert all(d / 2 <= w <= d for w in waits)
        assert max(waits) - min(waits) > d / 4  # really jittered
    with pytest.raises(ValueError):
        RetrySchedule(base_s=2.0, cap_s=1.0)


def test_messages() -> None:
    assert messages.email_subject(ALERT, "[scanner]") == "[scanner] AAPL: Gap up 3% [high]"
    body = messages.email_body(ALERT)
    assert "gap_pct = 3.14159" in body and "rsi_14 = n/a" in body and "2024-05-01 09:31:05 ET" in body
    sms = messages.sms_body(ALERT)
    assert sms.startswith("AAPL: Gap up 3% [high] 09:31:05 gap_pct=3.14159") and len(sms) <= 160
    long = {**ALERT, "values": {f"m{i}": float(i) for i in range(60)}, "kind": "exit"}
    text = messages.sms_body(long)
    assert len(text) == 160 and text.endswith("...") and text.isascii() and "(exit)" in text
