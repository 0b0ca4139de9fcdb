"""Destination config: kinds, validation, filters, files, and the Settings switch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from scanner.config import Settings, reveal
from scanner.notify.destinations import (
    EmailDestination,
    SmsDestination,
    WebhookDestination,
    load_destinations,
    parse_destinations,
    severity_rank,
)

HOOK = {"name": "hook", "kind": "webhook", "url": "https://example.test/h", "secret": "0123456789abcdef"}
MAIL = {"name": "mail", "kind": "email", "smtp_host": "127.0.0.1", "from_addr": "s@x.test", "to": ["t@x.test"]}
SMS = {"name": "sms", "kind": "sms", "account_sid": "AC1", "auth_token": "s3cr3t-tok", "from_number": "+15550001",
       "to": ["+15550002"]}
ALERT = {"rule": "gap", "symbol": "AAPL", "severity": "high", "tags": ["gap", "momo"], "kind": "enter"}


def test_kinds_by_discriminator() -> None:
    hook, mail, sms = parse_destinations([HOOK, MAIL, SMS])
    assert isinstance(hook, WebhookDestination) and isinstance(mail, EmailDestination)
    assert isinstance(sms, SmsDestination)
    assert sms.messages_url() == "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json"
    assert "0123456789abcdef" not in repr(hook) and "s3cr3t" not in repr(sms)


@pytest.mark.parametrize("bad", [
    {**HOOK, "kind": "pager"},
    {**HOOK, "url": "ftp://x"},
    {**HOOK, "secret": "short"},
    {**HOOK, "surprise": 1},
    {**MAIL, "to": []},
    {**HOOK, "min_severity": "urgent"},
    {**HOOK, "rate_per_minute": 0},
])
def test_invalid_destinations_are_refused(bad: dict) -> None:
    with pytest.raises(ValidationError):
        parse_destinations([bad])


def test_names_are_unique() -> None:
    with pytest.raises(ValueError, match="used twice"):
        parse_destinations([HOOK, {**MAIL, "name": "hook"}])


def test_filters() -> None:
    (d,) = parse_destinations([HOOK])
    assert d.accepts(ALERT)  # no filters: everything
    (d,) = parse_destinations([{**HOOK, "rules": ["gap"], "symbols": ["aapl"], "tags": ["momo", "x"],
                                "min_severity": "medium"}])
    assert d.accepts(ALERT)
    assert not d.accepts({**ALERT, "rule": "other"})
    assert not d.accepts({**ALERT, "symbol": "MSFT"})
    assert not d.accepts({**ALERT, "tags": ["x2"]})
    assert not d.accepts({**ALERT, "severity": "low"})
    assert d.accepts({**ALERT, "severity": "critical"})
    (d,) = parse_destinations([{**HOOK, "kinds": ["enter"]}])
    assert not d.accepts({**ALERT, "kind": "exit"})
    assert severity_rank("bogus") == severity_rank("info") == 0


def test_files_toml_and_json(tmp_path: Path) -> None:
    toml = tmp_path / "notify.toml"
    toml.write_text('[[destinations]]\nname = "hook"\nkind = "webhook"\nurl = "http://h.test/x"\n'
                    'secret = "0123456789abcdef"\nsymbols = ["SPY"]\n\n'
                    '[[destinations]]\nname = "off"\nkind = "webhook"\nurl = "http://h.test/y"\n'
                    'secret = "0123456789abcdef"\nenabled = false\n')
    js = tmp_path / "notify.json"
    js.write_text(json.dumps([MAIL]))
    dests = load_destinations([SMS], toml)
    assert [d.name for d in dests] == ["sms", "hook"]  # disabled one left out
    assert dests[1].symbols == ["SPY"]
    assert [d.name for d in load_destinations([], js)] == ["mail"]


def test_settings_validate_and_switch_the_notifier() -> None:
    with pytest.raises(ValidationError):
        Settings(notify_destinations=[{**HOOK, "secret": "short"}])
    assert not Settings(notify_destinations=[HOOK]).notifier_enabled()  # no Redis: nothing to consume
    assert not Settings(redis_url="redis://127.0.0.1:1/0").notifier_enabled()  # nowhere to deliver
    s = Settings(redis_url="redis://127.0.0.1:1/0", notify_destinations=[HOOK])
    assert s.notifier_enabled()
    back = Settings.model_validate_json(s.secret_json())  # the child round trip (the 0600 settings file)
    assert [{k: reveal(x) if isinstance(x, SecretStr) else x for k, x in d.items()}
            for d in back.notify_destinations] == [HOOK]
    assert HOOK["secret"] not in s.model_dump_json()  # a dump masks it
