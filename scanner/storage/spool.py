"""Append-only local spool: records are on disk (fsynced) before any database sees them.

One file per stream (`bars`, `trades`). Layout:

| offset | size | field |
| --- | --- | --- |
| 0 | 64 | file header (`FILE_DTYPE`): magic, version, record size, dtype fingerprint, epoch, created |
| 64 | 48 | frame header (`FRAME_DTYPE`): magic, crc32, seq, n, ring id, ring cursor end, created |
| 112 | n x record size | the frame's records |
| ... | | more frames |

A frame is one batch, appended with one `write` and made durable with `fdatasync` before
`append` returns. On open the frames are scanned; the first one that is short or fails its
CRC (a torn write: the process died mid-append) is cut off together with everything after it.
Its records were never acknowledged, so the caller re-reads them from their source.

Each sink acknowledges the last frame it committed (`ack`, kept in a small side file so a
restart does not redo work; redoing is harmless because every sink is idempotent). `trim`
starts a fresh file (new epoch) once every sink has acknowledged every frame, and compacts the
file when a long backlog left a large acknowledged prefix. `epoch` + `seq` name a frame
uniquely, which makes them usable as an insert de-duplication token.
"""

from __future__ import annotations

import bisect
import os
import secrets
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FILE_MAGIC = int.from_bytes(b"SCSPOOL1", "little")
FRAME_MAGIC = int.from_bytes(b"FRM1", "little")
VERSION = 1
FILE_DTYPE = np.dtype(
    {"names": ["magic", "version", "record_size", "fingerprint", "epoch", "created_ns"],
     "formats": ["<u8", "<u4", "<u4", "<u4", "<u8", "<i8"],
     "offsets": [0, 8, 12, 16, 24, 32], "itemsize": 64}
)
FRAME_DTYPE = np.dtype(
    {"names": ["magic", "crc", "seq", "n", "ring_id", "cursor_end", "created_ns"],
     "formats": ["<u4", "<u4", "<i8", "<i8", "<i8", "<i8", "<i8"],
     "offsets": [0, 4, 8, 16, 24, 32, 40], "itemsize": 48}
)
assert FILE_DTYPE.itemsize == 64 and FRAME_DTYPE.itemsize == 48
COMPACT_BYTES = 64 << 20


def fingerprint(dtype: np.dtype) -> int:
    """crc32 of the record layout: a spool written with another layout is set aside, not misread."""
    return zlib.crc32(repr(np.dtype(dtype).descr).encode())


@dataclass(frozen=True)
class Frame:
    seq: int
    offset: int  # of the frame header
    n: int
    ring_id: int
    cursor_end: int


def _frame_crc(head: np.ndarray, payload: bytes | memoryview) -> int:
    h = head.copy()
    h["crc"] = 0
    return zlib.crc32(payload, zlib.crc32(h.tobytes()))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """One stream's spool file. `append`/`trim` from one thread; `read`/`pending`/`ack` from any."""

    def __init__(self, path: Path, dtype: np.dtype, sinks: tuple[str, ...]) -> None:
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.sinks = sinks
        self.frames: list[Frame] = []
        self.torn_bytes = 0  # cut off at open (a torn last append)
        self.set_aside: Path | None = None  # a spool of another layout, renamed away at open
        self._lock = threading.Lock()
        self._acks: dict[str, int] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = -1
        self.epoch = 0
        self.last_seq = 0
        self._open()

    # ------------------------------------------------------------------ open / recover
    def _open(self) -> None:
        if self.path.exists() and self.path.stat().st_size >= FILE_DTYPE.itemsize:
            fd = os.open(self.path, os.O_RDWR)
            head = np.frombuffer(os.pread(fd, FILE_DTYPE.itemsize, 0), FILE_DTYPE)[0]
            ok = (int(head["magic"]) == FILE_MAGIC and int(head["record_size"]) == self.dtype.itemsize
                  and int(head["fingerprint"]) == fingerprint(self.dtype))
            if ok:
                self.fd, self.epoch = fd, int(head["epoch"])
                self._scan()
                self._load_acks()
                return
            os.close(fd)
            if int(head["magic"]) == FILE_MAGIC:  # a valid spool of another layout: keep it for an operator
                self.set_aside = self.path.with_name(f"{self.path.name}.layout-{time.time_ns()}")
                os.replace(self.path, self.set_aside)
        self._create()

    def _create(self) -> None:
        """Write a fresh file (new epoch) atomically: temp name, fsync, rename, fsync dir."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        head = np.zeros((), FILE_DTYPE)
        epoch = secrets.randbits(63) or 1
        head["magic"], head["version"], head["record_size"] = FILE_MAGIC, VERSION, self.dtype.itemsize
        head["fingerprint"], head["epoch"], head["created_ns"] = fingerprint(self.dtype), epoch, time.time_ns()
        fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_RDWR, 0o644)
        try:
            os.write(fd, head.tobytes())
            os.fsync(fd)
            os.replace(tmp, self.path)
        except OSError:  # e.g. disk full: the current file stays as it is
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.path.parent)
        if self.fd >= 0:
            os.close(self.fd)
        self.fd, self.epoch = fd, epoch
        self.frames, self.last_seq, self._acks = [], 0, {}

    def _scan(self) -> None:
        size = os.fstat(self.fd).st_size
        off = FILE_DTYPE.itemsize
        rs = self.dtype.itemsize
        while off < size:
            raw = os.pread(self.fd, FRAME_DTYPE.itemsize, off)
            if len(raw) < FRAME_DTYPE.itemsize:
                break
            head = np.frombuffer(raw, FRAME_DTYPE)[0]
            n = int(head["n"])
            end = off + FRAME_DTYPE.itemsize + n * rs
            if int(head["magic"]) != FRAME_MAGIC or n < 0 or end > size:
                break
            payload = os.pread(self.fd, n * rs, off + FRAME_DTYPE.itemsize)
            if _frame_crc(head, payload) != int(head["crc"]):
                break
            self.frames.append(Frame(int(head["seq"]), off, n, int(head["ring_id"]), int(head["cursor_end"])))
            off = end
        if off < size:
            self.torn_bytes = size - off
            os.ftruncate(self.fd, off)
            os.fsync(self.fd)
        self.last_seq = self.frames[-1].seq if self.frames else 0

    # ------------------------------------------------------------------ write side
    def append(self, records: np.ndarray, *, ring_id: int = 0, cursor_end: int = 0) -> int:
        """Append one frame and fdatasync it; returns its seq. The records are durable on return."""
        if records.dtype != self.dtype:
            raise ValueError(f"spool {self.path.name} holds {self.dtype}, got {records.dtype}")
        payload = np.ascontiguousarray(records).tobytes()
        with self._lock:
            seq = self.last_seq + 1
            head = np.zeros((), FRAME_DTYPE)
            head["magic"], head["seq"], head["n"] = FRAME_MAGIC, seq, len(records)
            head["ring_id"], head["cursor_end"], head["created_ns"] = ring_id, cursor_end, time.time_ns()
            head["crc"] = _frame_crc(head, payload)
            off = os.lseek(self.fd, 0, os.SEEK_END)
            data = head.tobytes() + payload
            written = 0
            try:
                while written < len(data):
                    written += os.pwrite(self.fd, data[written:], off + written)
                os.fdatasync(self.fd)
            except OSError:  # e.g. ENOSPC: no torn frame left behind for the next append to follow
                os.ftruncate(self.fd, off)
                raise
            self.frames.append(Frame(seq, off, len(records), ring_id, cursor_end))
            self.last_seq = seq
        return seq

    def trim(self) -> bool:
        """Drop what every sink committed: a fresh file when all is committed, else compact a large
        committed prefix. Returns True when the file changed."""
        with self._lock:
            done = min((self._acks.get(s, 0) for s in self.sinks), default=self.last_seq)
            if not self.frames:
                return False
            if done >= self.last_seq:
                self._create()
                return True
            keep = [f for f in self.frames if f.seq > done]
            if keep and keep[0].offset - FILE_DTYPE.itemsize >= COMPACT_BYTES:
                self._compact(keep)
                return True
        return False

    def _compact(self, keep: list[Frame]) -> None:
        """Rewrite the unacknowledged frames (same epoch and seqs) into a new file."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        rs = self.dtype.itemsize
        fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_RDWR, 0o644)
        os.write(fd, os.pread(self.fd, FILE_DTYPE.itemsize, 0))
        frames = []
        for f in keep:
            off = os.lseek(fd, 0, os.SEEK_END)
            os.write(fd, os.pread(self.fd, FRAME_DTYPE.itemsize + f.n * rs, f.offset))
            frames.append(Frame(f.seq, off, f.n, f.ring_id, f.cursor_end))
        os.fsync(fd)
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        os.close(self.fd)
        self.fd, self.frames = fd, frames

    # ------------------------------------------------------------------ read side
    def last_frame(self) -> Frame | None:
        with self._lock:
            return self.frames[-1] if self.frames else None

    def pending(self, sink: str, limit: int = 1 << 30) -> tuple[int, list[Frame]]:
        """(epoch, frames `sink` has not acknowledged, oldest first, at most `limit` records in all
        but at least one)."""
        with self._lock:
            done = self._acks.get(sink, 0)
            out, total = [], 0
            for f in self.frames:
                if f.seq <= done:
                    continue
                if out and total + f.n > limit:
                    break
                out.append(f)
                total += f.n
            return self.epoch, out

    def read(self, frame: Frame) -> np.ndarray:
        """The records of a frame (looked up by seq: a compaction may have moved it)."""
        with self._lock:
            i = bisect.bisect_left(self.frames, frame.seq, key=lambda f: f.seq)
            if i == len(self.frames) or self.frames[i].seq != frame.seq:
                raise KeyError(f"frame {frame.seq} is no longer in spool {self.path.name}")
            cur = self.frames[i]
            raw = os.pread(self.fd, cur.n * self.dtype.itemsize, cur.offset + FRAME_DTYPE.itemsize)
        return np.frombuffer(raw, self.dtype)

    def backlog(self) -> int:
        """Records not yet acknowledged by the slowest sink."""
        with self._lock:
            done = min((self._acks.get(s, 0) for s in self.sinks), default=self.last_seq)
            return sum(f.n for f in self.frames if f.seq > done)

    # ------------------------------------------------------------------ acknowledgements
    def _ack_path(self, sink: str) -> Path:
        return self.path.with_name(f"{self.path.name}.ack-{sink}")

    def _load_acks(self) -> None:
        for sink in self.sinks:
            try:
                epoch, seq = (int(x) for x in self._ack_path(sink).read_text().split())
            except (OSError, ValueError):
                continue
            if epoch == self.epoch:
                self._acks[sink] = seq

    def ack(self, sink: str, epoch: int, seq: int) -> None:
        """`sink` committed every frame up to `seq` of file `epoch` (ignored for an older file)."""
        with self._lock:
            if epoch != self.epoch or seq <= self._acks.get(sink, 0):
                return
            self._acks[sink] = seq
            path = self._ack_path(sink)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(f"{epoch} {seq}\n")  # no fsync: a lost ack only means an idempotent redo
            os.replace(tmp, path)

    def acked(self, sink: str) -> int:
        with self._lock:
            return self._acks.get(sink, 0)

    def close(self) -> None:
        with self._lock:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1
