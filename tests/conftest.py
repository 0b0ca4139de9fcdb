"""Session-wide fixtures: throwaway Redis / PostgreSQL on free loopback ports, stopped after."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import REPO, SHARED_DATA, PostgresServer, RedisServer, TansuServer

_OWN_BASETEMP = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    """A base temp dir of this run's own: pytest's shared numbered dirs are pruned by whichever
    run starts next, which deletes the dirs (instance logs, data dirs) of a run still going."""
    if config.option.basetemp is None and not hasattr(config, "workerinput"):
        config.option.basetemp = tempfile.mkdtemp(prefix=f"scanner-pytest-{os.getpid()}-")
        config.stash[_OWN_BASETEMP] = config.option.basetemp


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The run's own base temp dir (instance data dirs, logs: ~350 MB for the whole suite) is
    removed after a run where every test passed, and kept for reading after a failure."""
    own = session.config.stash.get(_OWN_BASETEMP, None)
    if own is not None and exitstatus == 0:
        shutil.rmtree(own, ignore_errors=True)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Compile every numba kernel into the install's cache once, before any test starts an
    instance: on a fresh clone the first instance would otherwise compile them all inside its
    start-up allowance while other tests load the machine (what `scanner start` does on a
    user's first start, where nothing else competes). A separate process, as the supervisor's
    warm-up is; tests that need a cold cache set their own NUMBA_CACHE_DIR."""
    if hasattr(session.config, "workerinput"):
        return
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", "from procs.instance import warm_kernels; warm_kernels()"],
                       cwd=REPO, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise pytest.UsageError(f"the numba warm-up failed:\n{r.stderr[-4000:]}")
    print(f"numba kernels ready in {time.monotonic() - t0:.1f} s")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files holding a `slow` test run first (in collection order otherwise, each file's tests
    together): with the suite spread over workers a file at a time (`make test`), the long
    files then start early and the short ones fill in around them, instead of one long file
    finishing alone at the end."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)


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
