"""Issue 10.6: secrets stay secret. URL passwords never reach a log line, settings reach the
children through a private (0600) file rather than the environment, and an instance's data
directory is private (umask 077)."""

from __future__ import annotations

import io
import json
import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydantic import SecretStr

from procs.runtime import BootError, RedactingFormatter, read_settings_file, write_settings_file
from scanner.config import Settings, redact, reveal
from tests.procs.instance import Instance
from tests.support import eventually

URLS = {
    "redis://:hunter2@127.0.0.1:6379/0": "redis://:***@127.0.0.1:6379/0",
    "postgresql://scanner:hunter2@db.internal:5432/scanner": "postgresql://scanner:***@db.internal:5432/scanner",
    "https://default:hunter2@ch.example:8443/db": "https://default:***@ch.example:8443/db",
    "host=db user=scanner password=hunter2 dbname=x": "host=db user=scanner password=*** dbname=x",
    "https://hooks.example/send?token=hunter2&x=1": "https://hooks.example/send?token=***&x=1",
}


@pytest.mark.parametrize(("raw", "shown"), URLS.items())
def test_redact(raw: str, shown: str) -> None:
    assert redact(f"cannot connect to {raw}: refused") == f"cannot connect to {shown}: refused"


def test_urls_without_credentials_are_unchanged() -> None:
    for text in ("redis://127.0.0.1:6379/0", "chdb:///var/lib/ch", "http://[::1]:8700/api/rules?limit=5"):
        assert redact(text) == text


@contextmanager
def redacted_log(name: str, fmt: str) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger whose lines go, through the project's RedactingFormatter, into a string."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(RedactingFormatter(fmt))
    log = logging.getLogger(name)
    log.addHandler(handler)
    log.propagate = False
    try:
        yield log, out
    finally:
        log.removeHandler(handler)


def test_every_log_line_is_redacted_even_tracebacks() -> None:
    with redacted_log("test.secrets", "%(levelname)s %(message)s") as (log, out):
        log.warning("redis reconnected (%s)", "redis://:hunter2@h:1/0")
        try:
            raise ConnectionError("Error connecting to postgresql://u:hunter2@h/db")
        except ConnectionError:
            log.exception("storage failed")
    text = out.getvalue()
    assert "hunter2" not in text and "redis://:***@h:1/0" in text
    assert "ConnectionError: Error connecting to postgresql://u:***@h/db" in text


def test_secret_settings_are_masked_but_reach_the_settings_file(tmp_path: Path) -> None:
    s = Settings(instance="sec", data_dir=tmp_path, redis_url="redis://:hunter2@h:1/0",
                 database_url="postgresql://u:hunter2@h/db", clickhouse_url="https://u:hunter2@h:8443/db")
    for name in ("redis_url", "database_url", "clickhouse_url"):
        assert isinstance(getattr(s, name), SecretStr)
    assert "hunter2" not in repr(s) and "hunter2" not in s.model_dump_json()
    assert reveal(s.redis_url) == "redis://:hunter2@h:1/0" and reveal(None) is None
    path = write_settings_file(s)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["database_url"] == "postgresql://u:hunter2@h/db"
    back = read_settings_file(path)
    assert reveal(back.clickhouse_url) == "https://u:hunter2@h:8443/db" and back == s
    os.chmod(path, 0o644)
    with pytest.raises(BootError, match="readable by others"):
        read_settings_file(path)


def test_api_keys_and_notification_secrets_are_masked_but_reach_the_children(tmp_path: Path) -> None:
    key, hmac_key, token, password = "k" * 8 + "hunter2key", "w" * 8 + "hunter2hmac", "hunter2twilio", "hunter2smtp"
    dests = [{"kind": "webhook", "name": "hook", "url": "https://h/x", "secret": hmac_key},
             {"kind": "sms", "name": "sms", "account_sid": "AC1", "auth_token": token, "from_number": "+1",
              "to": ["+2"]},
             {"kind": "email", "name": "mail", "smtp_host": "h", "password": password, "from_addr": "a@h",
              "to": ["b@h"]}]
    s = Settings(instance="sec", data_dir=tmp_path, api_keys={key: "write"}, notify_destinations=dests)
    assert all(isinstance(k, SecretStr) for k in s.api_keys)
    assert "hunter2" not in repr(s) and "hunter2" not in s.model_dump_json() and "hunter2" not in str(s)
    back = read_settings_file(write_settings_file(s))
    assert back == s and {reveal(k): v for k, v in back.api_keys.items()} == {key: "write"}
    from procs.api.deps import key_scope
    from scanner.notify.destinations import load_destinations

    assert key_scope(back.api_keys, key) == "write" and key_scope(back.api_keys, key[:-1]) is None
    hook, sms, mail = load_destinations(back.notify_destinations)
    assert (reveal(hook.secret), reveal(sms.auth_token), reveal(mail.password)) == (hmac_key, token, password)


def test_instance_files_are_private_and_secrets_not_in_child_environments(tmp_path: Path) -> None:
    inst = Instance(tmp_path, f"sec{os.getpid()}", SCANNER_SYMBOLS="200", SCANNER_SCAN_WORKERS="1",
                    SCANNER_CLICKHOUSE_URL=f"chdb://{tmp_path / 'ch'}", SCANNER_STORAGE_FLUSH_MS="100")
    old = os.umask(0o022)  # a permissive caller: the instance must not rely on it
    try:
        inst.start()
        st = eventually(inst.all_running, 300, 0.2, "instance up")
        eventually(lambda: (inst.data_dir / f"{inst.name}.checkpoint.npz").exists(), 60, 0.2, "a checkpoint")
        for p in (p for p in st["processes"] if p["name"] != "supervisor"):  # the caller's own environment
            environ = Path(f"/proc/{p['pid']}/environ").read_bytes()
            assert b"SCANNER_CHILD_SETTINGS=" not in environ, p["name"]  # no settings JSON in the environment
            assert b"SCANNER_CHILD_SETTINGS_FILE=" in environ, p["name"]
        assert inst.stop() == 0
    finally:
        os.umask(old)
        inst.close()
    assert stat.S_IMODE(inst.data_dir.stat().st_mode) == 0o700
    files = [p for p in inst.data_dir.rglob("*")]
    assert any(p.name.endswith(".checkpoint.npz") for p in files) and any(p.is_dir() for p in files)
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) & 0o077 == 0, (p, oct(p.stat().st_mode))


def test_webhook_headers_are_secrets_but_are_sent(tmp_path: Path) -> None:
    """Issue 11.7: webhook header values (often a bearer token) are masked in every dump, repr
    and log line of the settings and of the destination, reach the child through the private
    settings file, and go out in clear on the request only."""
    from procs.notifier.senders import Entry, Job, Senders
    from scanner.notify.destinations import load_destinations
    from tests.procs.test_notifier import Receiver

    token = "Bearer hunter2-token"
    receiver = Receiver()
    dest = {"kind": "webhook", "name": "hook", "url": receiver.url + "/h", "secret": "w" * 16,
            "headers": {"Authorization": token}}
    s = Settings(instance="sec", data_dir=tmp_path, notify_destinations=[dest])
    assert isinstance(s.notify_destinations[0]["headers"]["Authorization"], SecretStr)
    assert "hunter2" not in repr(s) and "hunter2" not in str(s) and "hunter2" not in s.model_dump_json()
    back = read_settings_file(write_settings_file(s))
    assert back == s
    (hook,) = load_destinations(back.notify_destinations)
    assert isinstance(hook.headers["Authorization"], SecretStr) and reveal(hook.headers["Authorization"]) == token
    assert "hunter2" not in repr(hook) and "hunter2" not in hook.model_dump_json()
    with redacted_log("test.secrets.hook", "%(message)s") as (log, out):
        log.warning("destination %r, settings %s", hook, s)
    assert "hook" in out.getvalue() and "hunter2" not in out.getvalue()
    senders = Senders()
    try:
        senders.send(Job(Entry("1-0", b'{"symbol":"AAPL"}', {"symbol": "AAPL"}), hook))
    finally:
        senders.http.close()
        receiver.close()
    (req,) = receiver.got("/h")
    assert req.headers["Authorization"] == token
