"""Issue 10.11: disk full in the spool directory. The spool sits on a real 256 KiB tmpfs; when a
filler file takes the space, the writer keeps its records (buffered, ring cursor unmoved, no
torn frame in the file) and retries; once space is back, every record is spooled exactly once."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from shm.ring import Ring
from tests.procs.storage.test_stream import closed, ring, spooled, stream  # noqa: F401 - fixture

assert ring is not None


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "spool"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN): {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(mnt: Path) -> Path:
    """Take every free byte of the file system."""
    filler = mnt / "filler"
    fd = os.open(filler, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        while os.write(fd, b"\0" * 512):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def test_disk_full_loses_nothing(ring: Ring, tiny_fs: Path) -> None:  # noqa: F811
    path = tiny_fs / "b.spool"
    prod = ring.producer()
    st = stream(ring, path)
    prod.publish(closed(40, 0))
    assert st.pump(0.0) == 40 and st.spool.last_seq == 1
    filler = fill(tiny_fs)
    size_before = path.stat().st_size
    prod.publish(closed(300, 40))  # ~20 KiB of spool frames: does not fit
    st.pump(1.0)
    assert st.full_since and st.write_errors == 1 and st.buffered == 300
    assert path.stat().st_size == size_before  # the failed frame was cut off again
    assert int(st.shared_state["cursor"][0]) == 40  # the ring still holds the 300 for a restarted writer
    prod.publish(closed(10, 340))
    assert st.pump(1.5) == 0 and st.write_errors == 1  # waits a second before retrying; polls nothing
    st.pump(2.1)
    assert st.write_errors == 2  # still full
    os.unlink(filler)
    st.pump(3.2)  # space is back: the buffered frame goes in
    assert not st.full_since
    st.pump(3.3)  # and the records that waited in the ring follow
    got = spooled(path)
    assert np.array_equal(np.sort(got["close"]), np.arange(350, dtype=np.float64))
    assert int(st.shared_state["cursor"][0]) == 350
