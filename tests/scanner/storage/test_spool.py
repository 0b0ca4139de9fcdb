"""The local spool: durable frames, torn-tail recovery, acknowledgements, trimming, compaction."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from scanner.storage import spool as spool_mod
from scanner.storage.rows import SPOOL_BAR_DTYPE, SPOOL_TRADE_DTYPE
from scanner.storage.spool import FILE_DTYPE, FRAME_DTYPE, Spool


def recs(n: int, start: int = 0) -> np.ndarray:
    r = np.zeros(n, SPOOL_BAR_DTYPE)
    r["symbol"] = [f"S{i}".encode() for i in range(start, start + n)]
    r["minute_ns"] = np.arange(start, start + n) * 60_000_000_000
    r["close"] = np.arange(start, start + n) + 0.5
    return r


def test_frames_survive_reopen_in_order(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "b.spool", SPOOL_BAR_DTYPE, ("pg",))
    assert sp.append(recs(3), ring_id=7, cursor_end=3) == 1
    assert sp.append(recs(2, 3), ring_id=7, cursor_end=5) == 2
    epoch = sp.epoch
    sp.close()
    again = Spool(tmp_path / "b.spool", SPOOL_BAR_DTYPE, ("pg",))
    assert again.epoch == epoch and again.last_seq == 2 and again.torn_bytes == 0
    e, frames = again.pending("pg")
    assert e == epoch and [f.seq for f in frames] == [1, 2]
    assert np.array_equal(np.concatenate([again.read(f) for f in frames]), recs(5))
    last = again.last_frame()
    assert last is not None and (last.ring_id, last.cursor_end) == (7, 5)


@pytest.mark.parametrize("damage", ["short_payload", "short_header", "bad_crc"])
def test_torn_last_frame_is_cut(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "b.spool"
    sp = Spool(path, SPOOL_BAR_DTYPE, ("pg",))
    sp.append(recs(4))
    good = path.stat().st_size
    sp.append(recs(4, 4))
    sp.close()
    size = path.stat().st_size
    if damage == "short_payload":
        os.truncate(path, size - 10)
    elif damage == "short_header":
        os.truncate(path, good + FRAME_DTYPE.itemsize // 2)
    else:
        with open(path, "r+b") as f:
            f.seek(size - 5)
            f.write(b"\xff")
    again = Spool(path, SPOOL_BAR_DTYPE, ("pg",))
    assert again.last_seq == 1 and again.torn_bytes > 0
    assert path.stat().st_size == good
    assert again.append(recs(1, 8)) == 2  # appends continue after the cut


def test_ack_and_trim_start_a_new_epoch(tmp_path: Path) -> None:
    path = tmp_path / "b.spool"
    sp = Spool(path, SPOOL_BAR_DTYPE, ("pg", "ch"))
    sp.append(recs(2))
    sp.append(recs(2, 2))
    e = sp.epoch
    sp.ack("pg", e, 2)
    assert not sp.trim() and sp.backlog() == 4  # ch has not committed anything
    sp.ack("ch", e, 1)
    assert sp.backlog() == 2 and [f.seq for f in sp.pending("ch")[1]] == [2]
    sp.close()
    again = Spool(path, SPOOL_BAR_DTYPE, ("pg", "ch"))  # acks persist across a restart
    assert again.acked("pg") == 2 and again.acked("ch") == 1
    again.ack("ch", e, 2)
    assert again.trim()
    assert again.epoch != e and again.last_seq == 0 and again.backlog() == 0
    assert path.stat().st_size == FILE_DTYPE.itemsize
    again.ack("pg", e, 5)  # a late ack for the old file is ignored
    assert again.acked("pg") == 0


def test_pending_respects_the_row_limit(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "b.spool", SPOOL_BAR_DTYPE, ("pg",))
    for i in range(4):
        sp.append(recs(10, 10 * i))
    assert [f.seq for f in sp.pending("pg", 25)[1]] == [1, 2]
    assert [f.seq for f in sp.pending("pg", 1)[1]] == [1]  # at least one frame


def test_compaction_keeps_unacknowledged_frames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_mod, "COMPACT_BYTES", 1000)
    path = tmp_path / "b.spool"
    sp = Spool(path, SPOOL_BAR_DTYPE, ("pg",))
    for i in range(5):
        sp.append(recs(10, 10 * i))
    held = sp.pending("pg")[1][3]  # a reader holding a frame across the compaction
    sp.ack("pg", sp.epoch, 3)
    before = path.stat().st_size
    assert sp.trim()
    assert path.stat().st_size < before
    assert [f.seq for f in sp.pending("pg")[1]] == [4, 5]
    assert np.array_equal(sp.read(held), recs(10, 30))
    sp.close()
    again = Spool(path, SPOOL_BAR_DTYPE, ("pg",))
    assert [f.seq for f in again.pending("pg")[1]] == [4, 5] and again.torn_bytes == 0


def test_spool_of_another_layout_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "x.spool"
    Spool(path, SPOOL_BAR_DTYPE, ("pg",)).append(recs(1))
    other = Spool(path, SPOOL_TRADE_DTYPE, ("ch",))
    assert other.set_aside is not None and other.set_aside.exists() and other.last_seq == 0
    with pytest.raises(ValueError):
        other.append(recs(1))
