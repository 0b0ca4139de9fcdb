"""Session-wide fixtures: throwaway Redis / PostgreSQL on free loopback ports, stopped after."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import SHARED_DATA, PostgresServer, RedisServer, TansuServer


def pytest_configure(config: pytest.Config) -> None:
    """A base temp dir of this run's own: pytest's shared numbered dirs are pruned by whichever
    run starts next, which deletes the dirs (instance logs, data dirs) of a run still going."""
    if config.option.basetemp is None and not hasattr(config, "workerinput"):
        config.option.basetemp = tempfile.mkdtemp(prefix=f"scanner-pytest-{os.getpid()}-")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path_factory.mktemp("redis"))
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    srv = PostgresServer.temporary()  # a dir the postgres user can enter (pytest's tmp is root-only)
    yield srv
    srv.remove()


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[TansuServer]:
    srv = TansuServer()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real market data folder {SHARED_DATA} is absent")
    return SHARED_DATA
