"""Named POSIX shared-memory segments (files in /dev/shm, mapped MAP_SHARED).

Why not `multiprocessing.shared_memory`: on Python < 3.13 every process that *attaches* a
segment registers it with its resource tracker, which unlinks it when that process exits, so a
restarted worker would delete the table under the supervisor. We map the file ourselves.

Lifecycle: the owner (the supervisor) `create()`s, every process `attach()`es, each process
`close()`s its own mapping (unmaps; the data stays), and only the owner calls `unlink()`, once,
after every child has stopped (removes the name; memory is freed when the last mapping closes).
"""

from __future__ import annotations

import mmap
import os

SHM_DIR = "/dev/shm"


class SegmentError(RuntimeError):
    """A segment could not be created or attached."""


class Segment:
    """One mapped segment; `buf` is a writable memoryview over all of it."""

    def __init__(self, name: str, size: int, mm: mmap.mmap, owner: bool) -> None:
        self.name = name
        self.size = size
        self.owner = owner
        self._mmap: mmap.mmap | None = mm
        self.buf: memoryview = memoryview(mm)

    @staticmethod
    def path(name: str) -> str:
        if "/" in name or not name:
            raise SegmentError(f"bad segment name {name!r}")
        return os.path.join(SHM_DIR, name)

    @classmethod
    def create(cls, name: str, size: int, *, replace: bool = False) -> Segment:
        """Create a zero-filled segment; an existing one is an error unless `replace`."""
        path = cls.path(name)
        if replace:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        except FileExistsError:
            raise SegmentError(f"segment {name!r} already exists (another instance running?)") from None
        try:
            os.ftruncate(fd, size)
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        return cls(name, size, mm, owner=True)

    @classmethod
    def attach(cls, name: str) -> Segment:
        """Map an existing segment read-write."""
        try:
            fd = os.open(cls.path(name), os.O_RDWR)
        except FileNotFoundError:
            raise SegmentError(f"segment {name!r} does not exist (is the instance running?)") from None
        try:
            size = os.fstat(fd).st_size
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        return cls(name, size, mm, owner=False)

    def close(self) -> None:
        """Unmap this process's view. Numpy views over `buf` must be dropped first."""
        if self._mmap is None:
            return
        self.buf.release()
        try:
            self._mmap.close()
        except BufferError:
            # A numpy view still references the mapping; the OS unmaps it at process exit.
            pass
        self._mmap = None

    def unlink(self) -> None:
        """Remove the segment's name (owner only, once). Existing mappings stay valid."""
        try:
            os.unlink(self.path(self.name))
        except FileNotFoundError:
            pass


def align64(n: int) -> int:
    """`n` rounded up to a multiple of 64 (section offsets of every layout: one cache line)."""
    return (n + 63) & ~63
