"""The systemd unit (issue 10.15): hardened (systemd-analyze security <= 4.0), valid (verify),
its exit-code comment matches the code, and the supervisor speaks the notify protocol
(READY=1, WATCHDOG=1, STOPPING=1) to a real AF_UNIX datagram socket, as systemd would see it,
and a notify socket nobody reads does not stop it."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from procs.runtime import EXIT_CANNOT_BOOT
from procs.shared import seg_name
from shm.control import ControlBlock
from tests.procs.instance import Instance
from tests.support import REPO, eventually

UNIT = REPO / "systemd" / "scanner@.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed (Debian package systemd)")


def unit_copy(tmp_path: Path) -> Path:
    """The unit as an instance (`scanner@t.service`), its ExecStart pointing at this checkout's
    venv (the file names /opt/scanner, which does not exist on a test machine)."""
    text = UNIT.read_text().replace("/opt/scanner/.venv/bin/scanner", str(Path(sys.executable).parent / "scanner"))
    path = tmp_path / "scanner@t.service"
    path.write_text(text)
    return path


def directives(name: str) -> list[str]:
    return [ln.split("=", 1)[1] for ln in UNIT.read_text().splitlines() if ln.startswith(f"{name}=")]


def test_hardening_directives_are_present() -> None:
    text = UNIT.read_text()
    for d in ("DynamicUser=yes", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
              "CapabilityBoundingSet=\n", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
              "SystemCallFilter=@system-service", "UMask=0077", "ReadWritePaths=/var/lib/scanner/%i"):
        assert d in text, d


def test_exit_code_comment_matches_the_code() -> None:
    """RestartPreventExitStatus is exactly the code's cannot-boot status, and the comment says so."""
    assert directives("RestartPreventExitStatus") == [str(EXIT_CANNOT_BOOT)]
    comment = "\n".join(ln for ln in UNIT.read_text().splitlines() if ln.startswith("#"))
    assert re.search(rf"#\s+{EXIT_CANNOT_BOOT}\s+EXIT_CANNOT_BOOT", comment)
    assert re.search(r"#\s+0\s+clean stop", comment)


def test_a_configuration_error_exits_with_cannot_boot(tmp_path: Path) -> None:
    """`scanner start --foreground` with a bad setting exits EXIT_CANNOT_BOOT: systemd stops, no loop."""
    env = dict(os.environ, SCANNER_INSTANCE=f"bad{os.getpid()}", SCANNER_DATA_DIR=str(tmp_path),
               SCANNER_TICK_RING_CAPACITY="1000")  # not a power of two
    r = subprocess.run([sys.executable, "-m", "cli.app", "start", "--foreground"], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == EXIT_CANNOT_BOOT, r.stderr
    assert "tick_ring_capacity" in r.stderr and "Traceback" not in r.stderr


@needs_analyze
def test_security_exposure_is_at_most_4(tmp_path: Path) -> None:
    path = unit_copy(tmp_path)
    r = subprocess.run([ANALYZE, "security", "--offline=true", "--threshold=40", "--no-pager", str(path)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d)", r.stdout)
    assert m, r.stdout[-2000:] + r.stderr
    assert float(m.group(1)) <= 4.0 and r.returncode == 0, r.stdout[-3000:]


@needs_analyze
def test_unit_verifies(tmp_path: Path) -> None:
    path = unit_copy(tmp_path)
    r = subprocess.run([ANALYZE, "verify", "--man=no", str(path)], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path)
    assert r.returncode == 0 and "scanner@t.service" not in r.stderr, r.stderr


class NotifyListener:
    """The notify socket as systemd holds it: a thread reads every datagram as it arrives, so the
    supervisor never finds the queue full (`net.unix.max_dgram_qlen`, 10 by default) and the
    test never has to stop reading while it waits for something else (the supervisor's exit)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.1)  # how often the reader looks at `_done`
        self.got: list[str] = []
        self._done = threading.Event()
        self._reader = threading.Thread(target=self._read, name="notify-listener", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._done.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.got.extend(data.decode().splitlines())  # list.extend: one step under the GIL

    def close(self) -> None:
        self._done.set()
        self._reader.join(timeout=10)
        self.sock.close()


@pytest.fixture
def notify() -> Iterator[NotifyListener]:
    # a short path: AF_UNIX socket names are limited to 107 bytes, pytest's tmp_path can be long
    with tempfile.TemporaryDirectory(prefix="sd") as d:
        listener = NotifyListener(os.path.join(d, "notify.sock"))
        try:
            yield listener
        finally:
            listener.close()


def test_sd_notify_ready_watchdog_stopping(tmp_path: Path, notify: NotifyListener) -> None:
    got = notify.got
    inst = Instance(tmp_path, f"sd{os.getpid()}", NOTIFY_SOCKET=notify.path, SCANNER_SYMBOLS="200",
                    SCANNER_SCAN_WORKERS="1")
    inst.start()
    try:
        eventually(lambda: "READY=1" in got, 120, 0.05, "READY=1")
        n = got.count("WATCHDOG=1")
        eventually(lambda: got.count("WATCHDOG=1") >= n + 3, 30, 0.05, "WATCHDOG=1 pings")
        assert got.index("READY=1") < len(got) - 1  # pings follow the READY
        assert inst.stop() == 0
        # sent before the supervisor exited, so in the socket now: the reader takes it within 0.1 s
        eventually(lambda: "STOPPING=1" in got, 10, 0.05, "STOPPING=1")
        assert got.index("STOPPING=1") > got.index("READY=1")
    finally:
        inst.close()


def supervisor_passes(ctl: ControlBlock, n: int, what: str) -> None:
    """Wait until the supervisor's heartbeat (slot 0, written once per pass of its loop, before
    that pass's WATCHDOG=1) has taken `n` new values: at least n - 1 pings were sent since. A pass
    takes 0.1 s or more; the deadline allows several times that."""
    seen = {int(ctl.slots[0]["heartbeat_ns"])}
    eventually(lambda: (seen.add(int(ctl.slots[0]["heartbeat_ns"])), len(seen) > n)[1], 60 + 0.5 * n, 0.01, what)


def test_a_notify_socket_nobody_reads_does_not_block_the_supervisor(tmp_path: Path) -> None:
    """systemd not reading: once the socket's queue is full, WATCHDOG pings are lost, but the
    supervisor's loop goes on (heartbeats, signals) and it stops on TERM as usual."""
    try:
        qlen = int(Path("/proc/sys/net/unix/max_dgram_qlen").read_text())
    except OSError:
        qlen = 10  # the kernel's default
    with tempfile.TemporaryDirectory(prefix="sd") as d:
        path = os.path.join(d, "notify.sock")
        deaf = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        deaf.bind(path)  # never read
        inst = Instance(tmp_path, f"sdf{os.getpid()}", NOTIFY_SOCKET=path, SCANNER_SYMBOLS="200",
                        SCANNER_SCAN_WORKERS="1")
        inst.start()
        ctl: ControlBlock | None = None
        try:
            eventually(inst.all_running, 120, 0.2, "all processes running")  # READY=1 was sent
            ctl = ControlBlock.attach(seg_name(inst.name, "ctl"))
            supervisor_passes(ctl, qlen + 2, "enough pings to fill the notify queue")
            supervisor_passes(ctl, 5, "supervisor passes after the queue filled")
            assert inst.stop() == 0
        finally:
            if ctl is not None:
                ctl.close()
            inst.close()
            deaf.close()
