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


_WARM_ENV = "SCANNER_TEST_KERNELS_DONE"  # the file the warm-up writes when it ends: "ok SECONDS" or the error
_WARM_TIMEOUT_S = 1200.0
_WARM_SCRIPT = """
import os, sys, time, traceback
t0 = time.monotonic()
try:
    from procs.instance import warm_kernels
    warm_kernels()
    msg = f"ok {time.monotonic() - t0:.1f}"
except BaseException:
    msg = traceback.format_exc()[-4000:]
with open(sys.argv[1] + ".tmp", "w") as fh:
    fh.write(msg)
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
"""
_warm_proc = pytest.StashKey[subprocess.Popen]()
_warm_ok = False


def pytest_sessionstart(session: pytest.Session) -> None:
    """Compile every numba kernel into the install's cache once, before any test starts an
    instance: on a fresh clone the first instance would otherwise compile them all inside its
    start-up allowance while other tests load the machine (what `scanner start` does on a
    user's first start, where nothing else competes). A separate process, as the supervisor's
    warm-up is, started in the background: tests marked `own_numba_cache` (a cold cache of
    their own) run meanwhile, every other test waits for it (`pytest_runtest_setup`). The
    workers of `make test` inherit the done file's path from the environment."""
    if hasattr(session.config, "workerinput"):
        return
    done = Path(tempfile.mkdtemp(prefix="scanner-warm-")) / "done"
    os.environ[_WARM_ENV] = str(done)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    session.config.stash[_warm_proc] = subprocess.Popen([sys.executable, "-c", _WARM_SCRIPT, str(done)], cwd=REPO,
                                                        env=env)


def _wait_for_kernels() -> None:
    """Block until the session's warm-up has ended; fail the test with its error if it failed."""
    global _warm_ok
    if _warm_ok:
        return
    path = os.environ.get(_WARM_ENV)
    if not path:
        return  # run without this conftest's session start (e.g. a worker of another controller)
    done = Path(path)
    end = time.monotonic() + _WARM_TIMEOUT_S
    while not done.exists():
        if time.monotonic() > end:
            pytest.fail(f"the numba warm-up did not end within {_WARM_TIMEOUT_S:.0f} s", pytrace=False)
        time.sleep(0.2)
    msg = done.read_text()
    if not msg.startswith("ok "):
        pytest.fail(f"the numba warm-up failed:\n{msg}", pytrace=False)
    _warm_ok = True


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("own_numba_cache") is None:
        _wait_for_kernels()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """How long the background warm-up took (the controller started it)."""
    proc = terminalreporter.config.stash.get(_warm_proc, None)
    if proc is None:
        return
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    done = Path(os.environ.get(_WARM_ENV, ""))
    msg = done.read_text() if done.is_file() else "no result"
    terminalreporter.write_line(f"numba kernels: {'ready in ' + msg[3:] + ' s' if msg.startswith('ok ') else msg}")
    shutil.rmtree(done.parent, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files holding an `own_numba_cache` test run first (they need not wait for the kernels'
    warm-up, so they fill the time it takes), then files holding a `slow` test (in collection
    order otherwise, each file's tests together): with the suite spread over workers a file at a
    time (`make test`), the long files then start early and the short ones fill in around them,
    instead of one long file finishing alone at the end."""
    cold = {item.path for item in items if item.get_closest_marker("own_numba_cache")}
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: (item.path not in cold, item.path not in slow))


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
