"""A damaged checkpoint never keeps an instance down (issue 10.7): it is moved aside, the reason
is logged, and the day starts fresh. In-process cases over real segments, then a real instance."""

from __future__ import annotations

import io
import json
import logging
import os
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from procs import checkpoint
from procs.shared import Shared
from tests.procs.instance import Instance
from tests.support import eventually

DAY = 20261127


@pytest.fixture
def shared() -> Iterator[Shared]:
    sh = Shared.create(f"ck{os.getpid()}", keys=[f"S{i}" for i in range(300)], n_workers=1, trading_day=DAY,
                       tick_capacity=1024, bar_capacity=1024, alert_capacity=1024, hist_depth=8,
                       block_shift=6, supervisor_pid=os.getpid(), created_ns=time.time_ns(),
                       states={"bars": {"day": np.zeros(300, np.int64)}})
    try:
        yield sh
    finally:
        sh.close()
        sh.unlink()


def _members(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(4096))


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _meta_not_json(path: Path) -> None:
    m = _members(path)
    m["meta"] = np.frombuffer(b"\xff{not json", np.uint8)
    np.savez(path, **m)


def _member_missing(path: Path) -> None:
    m = _members(path)
    del m["hist_rows"]
    np.savez(path, **m)


def _wrong_shape(path: Path) -> None:
    m = _members(path)
    m["f8"] = m["f8"][:, :10]
    np.savez(path, **m)


def _flipped_member(path: Path) -> None:
    """A zip whose member bytes were damaged in place (CRC no longer matches)."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as zf:
        info = zf.getinfo("f8.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200
    raw[start : start + 64] = os.urandom(64)
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", [_truncate, _garbage, _empty, _meta_not_json, _member_missing, _wrong_shape,
                                    _flipped_member])
def test_damaged_checkpoint_is_moved_aside(shared: Shared, tmp_path: Path, damage: Callable[[Path], None],
                                           caplog: pytest.LogCaptureFixture) -> None:
    shared.table.f8[:] = 1.5
    path = tmp_path / "x.checkpoint.npz"
    checkpoint.save(shared, path, event_ns=123)
    assert checkpoint.restore(shared, path, DAY)["event_ns"] == 123  # the undamaged file restores
    damage(path)
    shared.table.f8[:] = 7.0
    with caplog.at_level(logging.ERROR, "scanner.supervisor"), pytest.raises(checkpoint.CheckpointRefused) as ei:
        checkpoint.restore(shared, path, DAY)
    assert "moved aside" in str(ei.value)
    assert not path.exists()
    aside = list(tmp_path.glob("x.checkpoint.npz.corrupt-*"))
    assert len(aside) == 1
    assert "unreadable" in caplog.text and aside[0].name in caplog.text
    assert (shared.table.f8 == 7.0).all()  # nothing half-restored


def test_a_checkpoint_of_another_day_is_refused_but_kept(shared: Shared, tmp_path: Path) -> None:
    """Refusal (wrong day, layout, universe) is not damage: the file stays where it is."""
    path = tmp_path / "x.checkpoint.npz"
    checkpoint.save(shared, path, event_ns=1)
    with pytest.raises(checkpoint.CheckpointRefused, match="trading day"):
        checkpoint.restore(shared, path, DAY + 1)
    assert path.exists() and not list(tmp_path.glob("*.corrupt-*"))


def test_instance_starts_over_a_garbage_checkpoint(tmp_path: Path) -> None:
    inst = Instance(tmp_path, f"g{os.getpid()}")
    ckpt = inst.data_dir / f"{inst.name}.checkpoint.npz"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"PK\x03\x04" + os.urandom(2000))  # looks like a zip, is not one
    inst.start()
    try:
        eventually(inst.all_running, 300, 0.2, "all processes running over a garbage checkpoint")
        out = inst.output()
        assert "unreadable" in out and "moved aside" in out
        assert list(inst.data_dir.glob(f"{inst.name}.checkpoint.npz.corrupt-*"))
        assert inst.stop() == 0
        with np.load(ckpt) as z:  # the clean stop wrote a good one again
            assert json.loads(bytes(z["meta"]).decode())["n_rows"] == 600
    finally:
        inst.close()


def test_history_round_trips_and_is_streamed_not_copied(tmp_path: Path) -> None:
    """The bar history comes back exactly; saving it holds a few chunks, never a full copy."""
    import tracemalloc

    n = 4096
    sh = Shared.create(f"cks{os.getpid()}", keys=[f"S{i}" for i in range(n)], n_workers=1, trading_day=DAY,
                       tick_capacity=1024, bar_capacity=1024, alert_capacity=1024, hist_depth=256,
                       block_shift=6, supervisor_pid=os.getpid(), created_ns=time.time_ns(),
                       states={"bars": {"day": np.zeros(n, np.int64)}})
    try:
        h = sh.history
        h.hist[:] = np.random.default_rng(5).normal(size=h.hist.shape)
        h.head[:] = np.arange(n) * 3
        want, want_head = h.hist.copy(), h.head.copy()
        path = tmp_path / "s.checkpoint.npz"
        tracemalloc.start()
        try:
            checkpoint.save(sh, path, event_ns=9)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < h.hist.nbytes / 4, (peak, h.hist.nbytes)  # the table's copy (~4 MB) and 2 chunks
        h.hist[:] = np.nan
        h.head[:] = 0
        assert checkpoint.restore(sh, path, DAY)["event_ns"] == 9
        np.testing.assert_array_equal(h.hist, want)
        np.testing.assert_array_equal(h.head, want_head)
    finally:
        sh.close()
        sh.unlink()


def test_a_checkpoint_of_an_older_build_is_refused_but_kept(shared: Shared, tmp_path: Path) -> None:
    """A file with the field-major `hist` member (before streaming) is refused, not moved aside."""
    path = tmp_path / "x.checkpoint.npz"
    checkpoint.save(shared, path, event_ns=1)
    m = _members(path)
    m["hist"] = m.pop("hist_rows").transpose(1, 0, 2)
    np.savez(path, **m)
    with pytest.raises(checkpoint.CheckpointRefused, match="older build"):
        checkpoint.restore(shared, path, DAY)
    assert path.exists() and not list(tmp_path.glob("*.corrupt-*"))
