"""Dataset-wide seq numbers: a flock'd lease file hands out blocks, fsynced before any number is used.

`<root>/_state/seq` holds the first number nobody has reserved yet (20 ASCII digits). A process takes
the lock, reads it, writes it plus its block size, fsyncs, and only then uses the block: numbers are
unique across processes and never repeat or go back, whatever crashes (unused rest of a block is skipped).

A lease file is shared only by the processes that see one filesystem. Recorders on several hosts writing
one bucket each lease from their own spool, so each host takes its own namespace N (1..1023): numbers
N * 2**53 .. (N + 1) * 2**53 - 1, leased from `_state/seq-ns<N>`. Namespace 0 is the default (one host).
"""
from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

from .fsutil import fsync_dir, makedirs

BLOCK = 1 << 16
_WIDTH = 20
#: Bits of seq below the namespace: 2**53 numbers per namespace (centuries at a million rows per second).
NS_BITS = 53
NAMESPACES = 1 << (63 - NS_BITS)


class SeqLease:
    """Strictly increasing, root-unique int64 numbers, reserved from the shared lease file in blocks."""

    def __init__(self, root: Path, block: int = BLOCK, namespace: int = 0):
        if not 0 <= namespace < NAMESPACES:
            raise ValueError(f"seq namespace {namespace} is not in 0..{NAMESPACES - 1}")
        self._path = Path(root) / "_state" / ("seq" if namespace == 0 else f"seq-ns{namespace}")
        self._lo, self._hi = max(1, namespace << NS_BITS), (namespace + 1) << NS_BITS
        self._block = block
        self._next = 0
        self._end = 0
        self._lock = threading.Lock()

    def next(self, n: int = 1) -> int:
        """First of `n` consecutive fresh numbers."""
        if n < 1:
            raise ValueError(f"next_seq(n): n must be >= 1, got {n}")
        with self._lock:
            if self._next + n > self._end:
                self._next, self._end = self._reserve(max(n, self._block))
            first = self._next
            self._next += n
            return first

    def _reserve(self, size: int) -> tuple[int, int]:
        makedirs(self._path.parent)
        created = not self._path.exists()
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        if created:
            fsync_dir(self._path.parent)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.pread(fd, _WIDTH, 0)
            start = int(raw) if raw.strip() else 1
            start = max(start, self._end, self._lo)  # never go back, even if the file were rolled back
            end = start + size
            if end >= self._hi:
                raise OverflowError(f"seq space of this namespace exhausted (lease file {self._path})")
            os.pwrite(fd, b"%020d\n" % end, 0)
            os.fsync(fd)
            return start, end
        finally:
            os.close(fd)  # closing releases the flock
