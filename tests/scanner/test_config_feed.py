"""Live-feed settings: credentials are secrets (masked in every dump but the child's), backoff
bounds are checked, the environment variables are the documented ones."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from scanner.config import Settings


def test_credentials_are_masked_but_reach_children(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCANNER_ALPACA_KEY_ID", "AKID-SECRET-1")
    monkeypatch.setenv("SCANNER_ALPACA_SECRET_KEY", "SK-SECRET-2")
    monkeypatch.setenv("SCANNER_POLYGON_API_KEY", "PK-SECRET-3")
    s = Settings(feed="alpaca")
    for text in (s.model_dump_json(), repr(s), str(s.model_dump())):
        assert "SECRET" not in text
    child = Settings.model_validate_json(s.secret_json())
    assert child.alpaca_key_id is not None and child.alpaca_key_id.get_secret_value() == "AKID-SECRET-1"
    assert child.alpaca_secret_key is not None and child.alpaca_secret_key.get_secret_value() == "SK-SECRET-2"
    assert child.polygon_api_key is not None and child.polygon_api_key.get_secret_value() == "PK-SECRET-3"
    assert Settings().live_feed() is False and s.live_feed() is True


def test_backoff_bounds_and_feed_names() -> None:
    with pytest.raises(ValidationError, match="feed_backoff_min_s"):
        Settings(feed_backoff_min_s=5.0, feed_backoff_max_s=1.0)
    with pytest.raises(ValidationError):
        Settings(feed="bloomberg")
    with pytest.raises(ValidationError):
        Settings(alpaca_feed="otc")
