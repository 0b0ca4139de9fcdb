"""`procs.instance.PortLock`: one instance per served port and user (the gateways' SO_REUSEPORT
would let a second one share the port silently)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from procs.instance import PortLock, SupervisorError
from scanner.config import Settings


@pytest.fixture(autouse=True)
def own_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_a_second_instance_on_the_port_is_refused_until_the_first_releases() -> None:
    a = PortLock(Settings(instance="first", http_port=18123))
    b = PortLock(Settings(instance="second", http_port=18123))
    a.acquire()
    with pytest.raises(SupervisorError, match=rf"port 18123 is served by .*'first', pid {os.getpid()}"):
        b.acquire()
    other_port = PortLock(Settings(instance="third", http_port=18124))
    other_port.acquire()  # another port: no conflict
    a.release()
    b.acquire()  # the port is free again; the lock file names its new holder
    assert "'second'" in b.path.read_text()
    b.release()
    other_port.release()
    assert not any(b.path.parent.iterdir())  # released locks leave no file behind


def test_nothing_served_or_an_ephemeral_port_takes_no_lock(own_tmp: Path) -> None:
    for s in (Settings(instance="x", http_port=0), Settings(instance="y", http_port=18125, serve=False)):
        lock = PortLock(s)
        lock.acquire()
        assert lock.fd is None
    assert not any(own_tmp.iterdir())


def test_a_lock_directory_of_another_kind_is_refused(own_tmp: Path) -> None:
    (own_tmp / f"scanner-{os.getuid()}").write_text("not a directory")
    with pytest.raises(SupervisorError, match="is not a directory of this user"):
        PortLock(Settings(instance="z", http_port=18126)).acquire()
