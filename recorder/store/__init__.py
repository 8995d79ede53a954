"""Crash-safe partitioned Parquet store: durable log first, then Parquet by table/exchange/pair/date/hour.

append() validates a batch and writes it as one CRC frame to the writer's log segment
(`<root>/_log/<writer>/`); a background thread fsyncs the log every `fsync_interval` seconds, seals
segments (by size, age, wall-clock hour or memory pressure) and converts sealed segments into Parquet,
then merges each closed hour into one file (in a child process: compact.py). open() recovers whatever a
crash left behind.

On disk: `<root>/<table>/exchange=<x>/pair=<P>/date=<YYYY-MM-DD>/h<HH>-<writer>-<segment>.parquet` (one
per log segment and hour, named so re-converting a segment rewrites the same file) or `h<HH>-<hash>.parquet`
(compacted). Internal state lives in `<root>/_log/` and `<root>/_state/` (hive readers skip `_` names);
files being written are `.<name>.parquet.tmp` in their final directory: pyarrow skips the dot, DuckDB's
`*.parquet` glob the suffix (DuckDB does NOT skip dot-prefixed `.parquet` names). See compact.py for the
one moment a reader can see an hour twice.

Overflow policy (bounded memory): data not yet in Parquet (`pending_bytes`, the log backlog) is capped at
`max_pending_bytes`. An append that would go beyond blocks until conversion frees room, for at most
`overload_timeout` seconds, then raises StoreError("store overloaded ..."); that call writes nothing. A single
batch bigger than the cap is refused. A waiting append seals the open segment at once, so its room comes
from converting that segment, not from the segment ageing out.

A full disk is a state (`DiskFull`, a `StoreBusy`): the append writes nothing and the caller retries; the
background work retries with backoff and logs one line a minute. `open()` refuses to start without
`min_free_bytes` free. A small reserve file (`_state/reserve-<writer>`) is given up for `reserve` appends (the
gap rows of a stop) when the disk is full. Segments also keep their frames in memory, up to half of
`max_pending_bytes` in all, so conversion does not read the log back (only recovery, and a segment past that
share, do): unconverted data holds at most `max_pending_bytes` of memory, as when each conversion read its
segment back. Compaction streams (compact.py): its extra memory is a few tens of MB whatever the hour's size,
and it runs in a short-lived child process, so the writer's RSS never holds it and fsync/conversion go on
meanwhile. After each conversion and merge, freed memory is handed back to the OS (memory.py).

Allocator: `recorder run` makes jemalloc the process's Arrow pool (ARROW_DEFAULT_MEMORY_POOL, unless set: see
recorder/cli.py). After an in-process merge (`compact()`) with release_unused(), mimalloc, jemalloc and the
system allocator return to within 6-16 MB of the pre-compaction RSS (bench/store.py: "compaction peak memory"),
which is why background compaction is a child process.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path

import pyarrow as pa

from recorder.procs import child_env

from . import compact as _compact
from . import log as _log
from . import writers as _writers
from .fsutil import fsync_dir, makedirs
from .memory import release_memory
from .seq import SeqLease
from .validate import to_batch
from .writer import DiskFull, StoreBusy, StoreError, check_key, convert, partition_path

__all__ = ["DiskFull", "Store", "StoreBusy", "StoreError", "partition_path"]

_log_ = logging.getLogger(__name__)
WRITER_RE = _writers.WRITER_RE
#: Background compaction looks at closed hours at most this often (seconds).
COMPACT_EVERY = 30.0
#: Bytes kept in a reserve file, given up to write a stop's last rows on a full disk.
RESERVE_BYTES = 1 << 20
#: Seconds between two log lines about the same persisting trouble (a full disk).
COMPLAIN_EVERY = 60.0
_FULL = (errno.ENOSPC, errno.EDQUOT)
#: Fault hook for tests and soak runs: while the file this variable names exists, the background thread is
#: frozen (no fsync, sealing or conversion), as on a stalled disk; it does not even see a close.
FREEZE_ENV = "BOOKTAPE_FAULT_FREEZE_STORE"


def _frozen_hook() -> None:
    path = os.environ.get(FREEZE_ENV)
    while path and os.path.exists(path):
        time.sleep(0.05)


def disk_full(e: BaseException) -> bool:
    """True for the errors of a full filesystem (or quota)."""
    return isinstance(e, OSError) and e.errno in _FULL or "No space left on device" in str(e)


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem holding `path` (or its nearest parent)."""
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


class Store:
    """One writer's handle on a dataset root (see the module docstring)."""

    def __init__(self, root, writer: str, *, fsync_interval: float = 1.0,
                 max_pending_bytes: int = 64 << 20, segment_bytes: int = 32 << 20,
                 seal_interval: float = 60.0, overload_timeout: float = 30.0, seq_namespace: int = 0):
        if not isinstance(writer, str) or not WRITER_RE.fullmatch(writer):
            raise StoreError(f"bad writer id {writer!r} (must match {WRITER_RE.pattern})")
        self.root = Path(root)
        self.writer = writer
        self._log_dir = self.root / "_log" / writer
        self._reserve_path = self.root / "_state" / f"reserve-{writer}"
        self._fsync_interval = fsync_interval
        self._max_pending = max_pending_bytes
        self._seal_bytes = max(1, min(segment_bytes, max_pending_bytes // 2))
        self._seal_interval = seal_interval
        self._overload_timeout = overload_timeout
        self._seq = SeqLease(self.root, namespace=seq_namespace)
        self._lock = threading.Lock()          # segment writes, pending, counters
        self._room = threading.Condition(self._lock)
        self._sync_lock = threading.Lock()     # fsync vs. segment swap
        self._convert_lock = threading.Lock()  # one conversion/compaction at a time in this process
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._seg: _log.Segment | None = None
        self._seg_born = (0.0, 0)
        self._sealed: deque[_log.Segment] = deque()
        self._pending = 0
        self._held = 0  # bytes of frames segments keep in memory (at most half of _max_pending)
        self._touched: set[tuple] = set()
        self._lock_fd: int | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._last_compact = 0.0
        self._scanned = False  # a full compaction pass has run since open()
        self._compactor: tuple | None = None  # (child process, its output file, its request)
        self._need = 0  # bytes an append is waiting room for (seals the open segment at once)
        self._blocked_since: float | None = None  # wall time an append began waiting for room
        self._unsynced_since: float | None = None  # wall time of the oldest append not yet fsynced
        self._full_since: float | None = None  # wall time the disk was first found full (None: it is not)
        self._retry_at = 0.0  # background work waits until then after a full disk (backoff)
        self._retry_wait = 0.5
        self._complained = 0.0
        #: what open() found left by a crash (a stop leaves no segment): log segments and rows turned into Parquet
        self.recovered = {"segments": 0, "rows": 0}
        self._stats = dict(rows_appended=0, batches_appended=0, bytes_logged=0, fsyncs=0, last_fsync_ts=None,
                           segments_converted=0, files_written=0, compactions=0, batches_rejected=0,
                           overloaded=0, disk_full_errors=0, last_error=None)

    @property
    def min_free_bytes(self) -> int:
        """Free space open() needs: a log segment, its Parquet, and the reserve."""
        return 2 * self._seal_bytes + RESERVE_BYTES

    def check_space(self) -> None:
        """Raise DiskFull, naming the space needed, when the root's filesystem has less than min_free_bytes."""
        free, need = free_bytes(self.root), self.min_free_bytes
        reserve = self._reserve_path
        if free + (reserve.stat().st_size if reserve.exists() else 0) < need:
            raise DiskFull(f"{self.root}: {_mb(free)} free; the recorder needs at least {_mb(need)} free "
                           f"(two {_mb(self._seal_bytes)} log segments and a {_mb(RESERVE_BYTES)} reserve)")

    # -- lifecycle -----------------------------------------------------------------------------
    def open(self) -> "Store":
        """Lock this writer id, recover its leftover log into Parquet, start the background thread."""
        if self._lock_fd is not None:
            return self
        self.check_space()
        makedirs(self._log_dir)
        makedirs(self.root / "_state")
        self._lock_fd = _writers.acquire(self.root, self.writer)
        try:
            with _compact.compaction_lock(self.root):
                _compact.recover(self.root)
            for path in _log.list_segments(self._log_dir):
                frames = _log.recover(path)
                self.recovered["segments"] += 1
                self.recovered["rows"] += sum(f.batch().num_rows for f in frames)
                self._convert(path, frames)
            self._seg = self._new_segment()
            self._make_reserve()
        except BaseException:
            self._release()
            raise
        self._stop.clear()
        self._scanned = False
        self._thread = threading.Thread(target=self._run, name=f"store-{self.writer}", daemon=True)
        self._thread.start()
        return self

    def close(self, compact_wait: float | None = None, timeout: float | None = None) -> None:
        """Flush, convert everything to Parquet, compact closed hours, release the writer lock.

        compact_wait bounds the wait for compaction (None: until done); a merge still running then is stopped
        (crash-safe: the next open() rolls it back and redoes it). `timeout` bounds the whole close: a
        background thread that does not stop in time (a stalled disk) is left; the log is fsynced and kept,
        and what was not converted is converted by the next open().
        """
        if self._lock_fd is None:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            self._stop.set()
            self._wake.set()
            # a thread that is not frozen ends its tick at once (or its conversion: the next open redoes it)
            self._thread.join(None if deadline is None else max(0.0, min(2.0, deadline - time.monotonic() - 1.0)))
            if self._thread.is_alive():
                _log_.warning("store thread did not stop in time: log fsynced and kept for the next start",
                              extra={"fields": {"pending_bytes": self._pending}})
                self.flush()
                return
            self.flush()
            self._seal()
            if self._convert_sealed(deadline):
                waits = [w for w in (compact_wait, None if deadline is None else deadline - time.monotonic())
                         if w is not None]
                self._finish_compaction(max(0.0, min(waits)) if waits else None)
            else:
                _log_.warning("stopping before every log segment was converted: the next start converts them",
                              extra={"fields": {"segments": len(self._sealed)}})
            seg, self._seg = self._seg, None
            seg.close()
            os.unlink(seg.path)
            fsync_dir(self._log_dir)
        finally:
            self._release()

    def __enter__(self) -> "Store":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- writing -------------------------------------------------------------------------------
    def next_seq(self, n: int = 1) -> int:
        """First of n consecutive seq numbers, unique in the root, increasing, never reused."""
        return self._seq.next(n)

    def append(self, table: str, exchange: str, pair: str, columns: Mapping[str, Sequence | pa.Array], *,
               wait: float | None = None, force: bool = False, reserve: bool = False) -> int:
        """Validate one batch and frame it into the log (durable at the next fsync); rows appended.

        At the backlog cap it waits up to `wait` seconds (default `overload_timeout`) for room, then raises
        StoreBusy; on a full disk it raises DiskFull. `force` (a stop's last rows) skips the cap; `reserve`
        (a stop's gap rows) may use the reserve file's space on a full disk.
        """
        if self._lock_fd is None:
            raise StoreError("store is not open")
        if self._error is not None:
            raise StoreError(f"store log failed: {self._error!r}")
        try:
            batch = to_batch(check_key(table, exchange, pair), columns)
        except StoreError:
            with self._lock:
                self._stats["batches_rejected"] += 1
            raise
        if batch.num_rows == 0:
            return 0
        bufs, frame = _log.encode(table, exchange, pair, batch)
        size = sum(memoryview(b).nbytes for b in bufs)
        if size > self._max_pending:
            raise StoreError(f"{table}: batch of {size} bytes exceeds max_pending_bytes={self._max_pending}")
        wait = self._overload_timeout if wait is None else wait
        with self._room:
            deadline = None
            while self._pending + size > self._max_pending and not force:
                self._need = max(self._need, size)
                self._blocked_since = self._blocked_since or time.time()
                self._wake.set()
                now = time.monotonic()
                deadline = deadline or now + wait
                if now >= deadline:
                    self._stats["overloaded"] += 1
                    raise StoreBusy(f"store overloaded: {self._pending} bytes not yet in Parquet "
                                    f"(max_pending_bytes={self._max_pending}) for {wait}s; "
                                    f"{table} batch of {batch.num_rows} rows refused")
                self._room.wait(deadline - now)
            seg = self._seg
            kept = seg.held
            keep = seg.frames is not None and self._held + size <= self._max_pending // 2
            try:
                seg.write(bufs, frame if keep else None)
            except OSError as e:
                if not disk_full(e) or not (reserve and self._give_up_reserve()):
                    raise self._full(e, locked=True) if disk_full(e) else e
                seg.write(bufs, frame if keep else None)
            self._full_since = self._blocked_since = None
            self._unsynced_since = self._unsynced_since or time.time()
            self._held += seg.held - kept
            self._pending += size
            st = self._stats
            st["rows_appended"] += batch.num_rows
            st["batches_appended"] += 1
            st["bytes_logged"] += size
        if self._seg.size >= self._seal_bytes:
            self._wake.set()
        return batch.num_rows

    def flush(self) -> None:
        """fsync the log: everything appended before this call is durable on return."""
        if self._error is not None:
            raise StoreError(f"store log failed: {self._error!r}")
        with self._sync_lock:
            with self._lock:
                seg = self._seg
                if seg is None or seg.synced == seg.size:
                    return
                size, fd = seg.size, os.dup(seg.fd)
            try:
                os.fsync(fd)
            except OSError as e:
                if disk_full(e):  # the pages stay dirty: the next fsync tries them again
                    raise self._full(e) from None
                self._error = e
                raise
            finally:
                os.close(fd)
            with self._lock:
                seg.synced = max(seg.synced, size)
                if seg is self._seg:  # appended meanwhile: unsynced since (at most) now
                    self._unsynced_since = None if seg.synced == seg.size else time.time()
                self._stats["fsyncs"] += 1
                self._stats["last_fsync_ts"] = time.time()

    def commit(self) -> None:
        """Flush, then turn the whole log so far into Parquet now."""
        self.flush()
        self._seal()
        self._convert_sealed()

    def compact(self) -> None:
        """Merge this writer's files of every closed hour under the root into at most one file per
        table/partition/hour, in this process."""
        with self._convert_lock:
            merged, _ = _compact.compact_hours(self.root, writer=self.writer)
        with self._lock:
            self._stats["compactions"] += merged

    @property
    def stats(self) -> dict:
        """Counters for /metrics and /health."""
        with self._lock:
            return dict(self._stats, pending_bytes=self._pending, sealed_segments=len(self._sealed),
                        max_pending_bytes=self._max_pending, disk_full_since=self._full_since,
                        blocked_since=self._blocked_since, unsynced_since=self._unsynced_since)

    # -- a full disk ---------------------------------------------------------------------------
    def _full(self, e: BaseException, locked: bool = False) -> DiskFull:
        """Note the full disk (state for /health, one log line a minute); the error to raise.
        `locked`: the caller holds the store's lock."""
        with self._lock if not locked else contextlib.nullcontext():
            self._full_since = self._full_since or time.time()
            self._stats["disk_full_errors"] += 1
        if time.monotonic() - self._complained >= COMPLAIN_EVERY:
            self._complained = time.monotonic()
            _log_.error("disk full: not writing until space returns",
                        extra={"fields": {"root": str(self.root), "free_bytes": free_bytes(self.root),
                                          "error": str(e)[:200]}})
        return DiskFull(f"disk full under {self.root}: {e}")

    def _make_reserve(self) -> None:
        """The reserve file, allocated (a full disk only costs us not having one)."""
        path = self._reserve_path
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                if os.fstat(fd).st_size < RESERVE_BYTES:
                    os.posix_fallocate(fd, 0, RESERVE_BYTES)
            finally:
                os.close(fd)
        except OSError as e:
            if not disk_full(e):
                raise
            path.unlink(missing_ok=True)

    def _give_up_reserve(self) -> bool:
        """Free the reserve for a forced append; False if there is none left."""
        path = self._reserve_path
        if not path.exists():
            return False
        path.unlink()
        _log_.warning("disk full: reserve given up for the last rows of a stop")
        return True

    # -- background ----------------------------------------------------------------------------
    def _new_segment(self) -> _log.Segment:
        seg = _log.Segment(_log.segment_path(self._log_dir, self._seq.next()))
        fsync_dir(self._log_dir)
        self._seg_born = (time.monotonic(), int(time.time() // 3600))
        return seg

    def _seal(self) -> None:
        """Close the current segment (fsynced) and start a new one; the old one waits for conversion."""
        with self._sync_lock:
            if self._seg.size == 0:
                return
            new = self._new_segment()
            with self._lock:
                old, self._seg = self._seg, new
            old.close()
            with self._lock:
                self._sealed.append(old)
                if self._seg.size == 0:
                    self._unsynced_since = None
                self._stats["fsyncs"] += 1
                self._stats["last_fsync_ts"] = time.time()

    def _convert(self, path: Path, frames: list[_log.Frame] | None = None) -> None:
        """Segment → Parquet (idempotent: deterministic names), then delete the segment. `frames`: the
        segment's frames if kept in memory (else they are read back from the file)."""
        try:
            touched, files = convert(_log.recover(path) if frames is None else frames, self.root, self.writer,
                                     _log.segment_id(path))
        finally:  # the segment's frames are unreferenced now: hand their memory back to the OS
            frames = None
            release_memory()
        os.unlink(path)
        fsync_dir(self._log_dir)
        with self._lock:
            self._touched |= touched
            self._stats["files_written"] += files
            self._stats["segments_converted"] += 1

    def _convert_sealed(self, deadline: float | None = None) -> bool:
        """Convert sealed segments in order; False if `deadline` (monotonic) came first."""
        with self._convert_lock:
            while True:
                with self._lock:
                    if not self._sealed:
                        return True
                    seg = self._sealed[0]
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                self._convert(seg.path, seg.take_frames())
                with self._room:
                    self._sealed.popleft()
                    self._pending -= seg.size
                    self._held -= seg.held
                    self._need = 0  # a waiter still short of room asks again
                    self._full_since = None
                    self._room.notify_all()

    def _start_compactor(self) -> None:
        """Start the compaction child on the closed hours this writer touched (every closed hour under the root
        on the first pass after open: what a crash left); no-op while one runs or when there is nothing to do.

        A child process, not this thread: its memory (an hour's merge) is handed back to the OS when it exits,
        so a 24/7 recorder's RSS never keeps it, and fsync and conversion go on while it works.
        """
        if self._compactor is not None:
            return
        if self._scanned:
            with self._lock:
                todo = sorted({(d, hod) for d, hod, hour in self._touched if _compact.closed(hour)})
            if not todo:
                return
            req = {"hours": [[str(d.relative_to(self.root)), hod] for d, hod in todo]}
        else:
            req = {"scan": True}
        req["writer"] = self.writer  # another recorder's files are its own to merge
        out = tempfile.TemporaryFile()
        proc = subprocess.Popen([sys.executable, "-m", "recorder.store.compact", str(self.root)],
                                stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, env=child_env(),
                                start_new_session=True)  # a terminal's Ctrl-C is the daemon's to handle
        try:
            proc.stdin.write(json.dumps(req).encode())
            proc.stdin.close()
        except OSError:
            pass  # the child died at once: reaped (and reported) below
        self._compactor = (proc, out, req)
        self._last_compact = time.monotonic()

    def _finish_compaction(self, wait: float | None) -> None:
        """At close: the running child, then one for the closed hours not merged yet, within `wait` seconds."""
        deadline = None if wait is None else time.monotonic() + wait
        try:
            for start in (False, True):
                if start:
                    self._start_compactor()  # all closed hours if no pass ran since open
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not self._reap_compactor(wait=True, timeout=left):
                    proc, out, _ = self._compactor
                    self._compactor = None
                    proc.kill()
                    proc.wait()
                    out.close()
                    _log_.warning("compaction still running at close: stopped, the next open redoes it",
                                  extra={"fields": {"pid": proc.pid}})
                    return
        except StoreError:
            _log_.exception("compaction failed at close; the next open retries it")

    def _reap_compactor(self, wait: bool = False, timeout: float | None = None) -> bool:
        """Collect a finished compaction child: count its merges, forget the hours it completed.
        False while the child is still running (after waiting up to `timeout` with `wait`)."""
        if self._compactor is None:
            return True
        proc, out, req = self._compactor
        if wait:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
        elif proc.poll() is None:
            return False
        self._compactor = None
        with out:
            out.seek(0)
            text = out.read().decode("utf-8", "replace")
        try:
            res = json.loads(text.strip().splitlines()[-1]) if proc.returncode == 0 else None
        except (ValueError, IndexError):
            res = None
        if res is None:  # hours stay touched: retried at the next pass
            raise StoreError(f"compaction child exited {proc.returncode}: {text[-500:]}")
        waiting = {(self.root / d, h) for d, h in res["waiting"]}
        with self._lock:
            self._stats["compactions"] += res["merged"]
            if req.get("scan"):
                self._scanned = True
            else:
                done = {(self.root / d, h) for d, h in req["hours"]} - waiting
                self._touched = {t for t in self._touched if (t[0], t[1]) not in done}
        return True

    def _due(self) -> bool:
        seg, (born, hour) = self._seg, self._seg_born
        if not seg.size:
            return False
        return (seg.size >= self._seal_bytes or self._pending > self._max_pending // 2 or self._need > 0
                or time.monotonic() - born >= self._seal_interval or int(time.time() // 3600) != hour)

    def _run(self) -> None:
        tick = max(0.001, min(self._fsync_interval, self._seal_interval, 0.25))
        last_sync = time.monotonic()
        while not self._stop.is_set():
            self._wake.wait(tick)
            self._wake.clear()
            _frozen_hook()
            try:
                if time.monotonic() - last_sync >= self._fsync_interval:
                    self.flush()
                    last_sync = time.monotonic()
                if self._stop.is_set():
                    return
                if time.monotonic() < self._retry_at:
                    continue  # the disk was full: back off
                if self._due():
                    self._seal()
                self._convert_sealed()
                self._reap_compactor()
                if not self._scanned or time.monotonic() - self._last_compact >= max(COMPACT_EVERY,
                                                                                    self._seal_interval):
                    self._start_compactor()
                self._retry_wait = 0.5
            except Exception as e:  # keep the log going; conversion retries next tick
                if disk_full(e) or isinstance(e, DiskFull):
                    if not isinstance(e, DiskFull):
                        self._full(e)
                    self._retry_at = time.monotonic() + self._retry_wait
                    self._retry_wait = min(2 * self._retry_wait, 10.0)
                    continue
                _log_.exception("store background work failed")
                with self._lock:
                    self._stats["last_error"] = repr(e)
                time.sleep(tick)
