"""The path from feeds to the store: a bounded row buffer flushed by one writer task, and per-feed taps.

Overflow policy: when `max_rows` rows are pending, feeds wait (`await sink.room()`) before reading
more; nothing is dropped. A blocked socket then backs up into the kernel and, if the venue drops
us, the loss is a recorded gap. Rows reach the store's durable log within `linger` seconds. A busy
store (at its backlog cap, or on a full disk) is waited for as long as it takes: back-pressure, not a drop.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from recorder.metrics import Metrics
from recorder.offload import DaemonWorker, in_daemon_thread
from recorder.redact import Redactor
from recorder.rows import BookEvent, Candle, Level, Trade
from recorder.store import DiskFull, StoreBusy, StoreError
from schemas import ALL_PAIRS, TABLES

from . import columns as C

log = logging.getLogger("recorder.sink")
#: Seconds one store append waits for room before the sink looks again.
APPEND_WAIT = 1.0
#: Longest pause between two appends tried on a full disk (the pause doubles from 0.1 s).
FULL_PAUSE_MAX = 5.0
#: seq numbers the sink takes from the store at a time.
SEQ_BLOCK = 4096
#: sessions kinds that also bump a per-feed counter (rejects are counted in Tap.reject).
_COUNTED = {"gap": "gaps", "rate_limited": "rate_limited", "error": "errors"}
#: `disconnect` details of a deliberate stop (logged at info: nothing is wrong).
STOPPING = ("stopping", "poller stopped")


class StoreLike(Protocol):
    """The part of recorder.store.Store the sink uses."""

    def next_seq(self, n: int = 1) -> int: ...
    def append(self, table: str, exchange: str, pair: str, columns, *, wait: float | None = None,
               force: bool = False, reserve: bool = False) -> int: ...


@dataclass(slots=True)
class Columns:
    """n queued rows of one partition given as columns (columns.typed)."""

    cols: dict[str, pa.Array]
    n: int


class Sink:
    """Buffers rows per (table, exchange, pair); `run` appends them to the store every `linger` seconds."""

    def __init__(self, store: StoreLike, metrics: Metrics, *, max_rows: int = 100_000, linger: float = 0.05,
                 redact: Redactor | None = None) -> None:
        self.store = store
        self.metrics = metrics
        self.max_rows = max_rows
        self.linger = linger
        self.redact = redact or Redactor()
        self._buf: dict[tuple[str, str, str], list[list[tuple] | Columns]] = defaultdict(list)
        self.pending = 0
        self._room = asyncio.Event()
        self._room.set()
        self._wake = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self.appended = 0
        self._seq_next = self._seq_end = 0
        self.session = 0  # the daemon run's session: gap rows written at a stop carry it
        self.blocked_since: int | None = None  # time (ns) the buffer filled up; None while it has room
        self._closing = threading.Event()
        self._give_up_at = 0.0
        self._unwritten: list[tuple] = []
        self._running: dict = {}  # the batches of the flush in progress
        self._worker = DaemonWorker("sink-append")

    def next_seq(self, n: int = 1) -> int:
        """First of n fresh seq numbers (from a block reserved from the store: one call per message
        would cost a lock and three calls; an unused rest of a block is skipped, as the store's are)."""
        first = self._seq_next
        if first + n > self._seq_end:
            size = max(n, SEQ_BLOCK)
            first = self.store.next_seq(size)
            self._seq_end = first + size
        self._seq_next = first + n
        return first

    def add(self, table: str, exchange: str, pair: str, row: tuple) -> None:
        """Queue one row."""
        self._rows((table, exchange, pair)).append(row)
        self._queued(1)

    def extend(self, table: str, exchange: str, pair: str, rows: list[tuple]) -> None:
        """Queue rows of one partition."""
        if rows:
            self._rows((table, exchange, pair)).extend(rows)
            self._queued(len(rows))

    def _rows(self, key: tuple[str, str, str]) -> list[tuple]:
        """The partition's last chunk when it is a row list, else a new one after its column parts."""
        chunks = self._buf[key]
        if not chunks or type(chunks[-1]) is not list:
            chunks.append([])
        return chunks[-1]

    def _queued(self, n: int) -> None:
        self.pending += n
        if self.pending >= self.max_rows:
            if self._room.is_set():
                self._room.clear()
                self.blocked_since = time.time_ns()
            self._wake.set()

    def _set_room(self) -> None:
        self._room.set()
        self.blocked_since = None

    @property
    def full(self) -> bool:
        """True while producers should wait."""
        return not self._room.is_set()

    async def room(self) -> None:
        """Wait until the buffer is below its bound."""
        await self._room.wait()

    def extend_columns(self, table: str, exchange: str, pair: str, cols: dict[str, pa.Array], n: int) -> None:
        """Queue n rows of one partition given as columns (columns.typed), after the rows queued before."""
        if n:
            self._buf[(table, exchange, pair)].append(Columns(cols, n))
            self._queued(n)

    def drain(self) -> dict[tuple[str, str, str], list[list[tuple] | Columns]]:
        """Everything queued, per partition in queue order (row lists and column parts); the queue restarts empty."""
        out, self._buf = self._buf, defaultdict(list)
        return out

    def _append_batch(self, batches: dict[tuple[str, str, str], list[list[tuple] | Columns]]) -> list[tuple]:
        """Append the chunks in queue order; returns the (partition, chunk) pairs a stop left unwritten."""
        left: list[tuple] = []
        for key, chunks in batches.items():
            table, exchange, pair = key
            # one append per chunk, in queue order: the log stays in seq order (nothing to sort when converting),
            # and concatenating the chunks first cost more than the extra appends
            for c in chunks:
                if left:  # a stop gave up: keep the rest in order, unwritten
                    left.append((key, c))
                    continue
                try:
                    if type(c) is list:
                        self._append(table, exchange, pair, C.to_columns(table, c), len(c))
                    else:
                        self._append(table, exchange, pair, c.cols, c.n)
                except _GaveUp:
                    left.append((key, c))
        return left

    def _append(self, table: str, exchange: str, pair: str, cols: dict, n: int) -> int:
        try:
            self._wait_append(table, exchange, pair, cols)
            return n
        except StoreError as e:
            return self._row_by_row(table, exchange, pair, cols, n, e)

    def _wait_append(self, table: str, exchange: str, pair: str, cols: dict, reserve: bool = False) -> None:
        """One append, however long a busy store takes (its waits are the back-pressure); raises StoreError
        only for a batch the store refuses, _GaveUp when a stop's deadline passed first.

        Once stopping, appends skip the store's backlog cap (the process is about to exit: the cap bounds a
        running daemon's memory); a full disk then gives up at once, except for `reserve` rows.
        """
        pause = 0.0
        while True:
            closing = self._closing.is_set()
            if closing and time.monotonic() >= self._give_up_at:
                raise _GaveUp
            try:
                self.store.append(table, exchange, pair, cols, wait=APPEND_WAIT, force=closing, reserve=reserve)
                return
            except DiskFull:
                if closing:
                    raise _GaveUp from None
                pause = min(max(2 * pause, 0.1), FULL_PAUSE_MAX)
                self._closing.wait(pause)
            except StoreBusy:
                continue

    def _row_by_row(self, table: str, exchange: str, pair: str, cols: dict, n: int, err: Exception) -> int:
        """One bad row must not lose its batch: append one by one, drop (and log) only the refused rows."""
        log.error("store refused a batch; retrying row by row",
                  extra={"fields": {"table": table, "exchange": exchange, "pair": pair, "error": str(err)}})
        done = failed = 0
        for i in range(n):
            try:
                self._wait_append(table, exchange, pair, {k: v[i:i + 1] for k, v in cols.items()})
                done += 1
                failed = 0
            except StoreError as e1:
                self.metrics.inc("errors", "sink")
                log.error("row dropped", extra={"fields": {"table": table, "error": str(e1)}})
                failed += 1
                if failed >= 10:  # rows the store refuses one after another: one line for the rest
                    log.error("batch dropped", extra={"fields": {"table": table, "rows": n - i - 1}})
                    break
        return done

    async def flush(self, timeout: float | None = None) -> None:
        """Hand everything buffered to the store (in a daemon thread; one flush at a time, in order)."""
        async with self._flush_lock:
            await self._flush(timeout)

    async def _flush(self, timeout: float | None) -> None:
        if not self._buf:
            return
        batches = self._running = self.drain()
        n = sum(_size(c) for chunks in batches.values() for c in chunks)
        work = self._worker.submit(self._append_batch, batches)
        left: list[tuple] = []
        try:
            left = await asyncio.wait_for(asyncio.shield(work), timeout)
        except TimeoutError:  # stuck in the kernel (a stalled disk): a stop counts all of it as not written
            left = [(k, c) for k, chunks in batches.items() for c in chunks]
        finally:
            self._running = {}
            self.pending -= n
            self._unwritten += left
            lost = {id(c) for _, c in left}
            for (table, exchange, _), chunks in batches.items():
                c = sum(_size(x) for x in chunks if id(x) not in lost)
                self.appended += c
                self.metrics.inc("rows", exchange, c, table)
            if self.pending < self.max_rows:
                self._set_room()

    async def close(self, timeout: float) -> int:
        """A stop's last flush, within `timeout` seconds: past the store's cap, then a `gap` row per partition
        for what could still not be written (a full disk, a stalled store). Returns the rows not written."""
        self._give_up_at = time.monotonic() + timeout
        self._closing.set()
        self._wake.set()
        try:
            await asyncio.wait_for(self._flush_lock.acquire(), timeout)
        except TimeoutError:  # the running flush is stuck in the kernel: its rows are not known to be written
            self._unwritten += [(k, c) for k, chunks in self._running.items() for c in chunks]
        else:
            try:
                await self._flush(max(0.0, self._give_up_at - time.monotonic()))
            finally:
                self._flush_lock.release()
        if self._buf:
            self._unwritten += [(k, c) for k, chunks in self.drain().items() for c in chunks]
        lost = sum(_size(c) for _, c in self._unwritten)
        if lost:
            self._give_up_at = time.monotonic() + 1.0
            await asyncio.wait([in_daemon_thread(self._write_gaps, list(self._unwritten), name="sink-gaps")],
                               timeout=1.0)
            self._unwritten = []
        return lost

    def _write_gaps(self, unwritten: list[tuple]) -> None:
        """`gap` rows (sessions, in the reserve if the disk is full) for the rows a stop could not write:
        per partition, from the first such row's time; logged too, in case even they cannot be written."""
        per: dict[tuple[str, str], dict] = defaultdict(lambda: {"rows": defaultdict(int), "ts": None})
        for (table, exchange, pair), c in unwritten:
            p = per[(exchange, pair)]
            p["rows"][table] += _size(c)
            t0 = _first_ts(table, c)
            p["ts"] = t0 if p["ts"] is None else min(p["ts"], t0)
        for (exchange, pair), p in per.items():
            what = ", ".join(f"{t} {n}" for t, n in sorted(p["rows"].items()))
            detail = (f"stopped with {sum(p['rows'].values())} received rows not written, or not known to be "
                      f"({what}): store stalled")
            log.error("rows not written at stop", extra={"fields": {"exchange": exchange, "pair": pair,
                                                                    "rows": dict(p["rows"])}})
            row = C.session_row(p["ts"] or time.time_ns(), self.next_seq(), self.session, "sink", "gap", detail)
            try:
                self._wait_append("sessions", exchange, pair, C.to_columns("sessions", [row]), reserve=True)
            except (StoreError, _GaveUp, OSError) as e:
                log.error("gap row not written", extra={"fields": {"exchange": exchange, "pair": pair,
                                                                   "error": _describe(e)}})

    async def run(self) -> None:
        """Writer loop: flush every `linger` seconds, or at once when the buffer is full (until a stop)."""
        while not self._closing.is_set():
            try:
                await asyncio.wait_for(self._wake.wait(), self.linger)
            except TimeoutError:
                pass
            self._wake.clear()
            if not self._closing.is_set():
                await self.flush()


class _GaveUp(Exception):
    """A stop's deadline passed (or the disk is full at a stop) before a chunk could be appended."""


def _size(c: list | Columns) -> int:
    return len(c) if type(c) is list else c.n


def _first_ts(table: str, c: list | Columns) -> int:
    """Earliest time (ns) of a chunk's rows, by the table's time column."""
    col = TABLES[table].time_column
    if type(c) is list:
        i = TABLES[table].columns.index(col)
        return min(r[i] for r in c)
    return int(pc.min(pc.cast(c.cols[col], pa.int64())).as_py())


def _describe(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:200]


class Tap:
    """One feed's handle: writes raw messages, parsed rows and session events for one exchange."""

    def __init__(self, sink: Sink, exchange: str, feed: str) -> None:
        self.sink = sink
        self.exchange = exchange
        self.feed = feed
        self.metrics = sink.metrics
        self.log = logging.getLogger(f"recorder.feeds.{exchange}")

    def new_session(self) -> int:
        """A fresh session id (allocated from seq)."""
        return self.sink.next_seq()

    def raw(self, session: int, stream: str, pair: str | None, ts_recv: int, payload: bytes, *,
            status: str = "ok", reason: str | None = None, request: str | None = None) -> int:
        """Record one received message verbatim (but for configured credential values); returns its seq."""
        seq = self.sink.next_seq()
        self.metrics.seen(self.feed, len(payload), status == "ok" and pair is not None)  # data, not control/error
        redact = self.sink.redact
        if redact:
            payload = redact.bytes(payload)
            reason, request = (redact(t) if t else t for t in (reason, request))
        self.sink.add("raw", self.exchange, pair or ALL_PAIRS, C.raw_row(ts_recv, seq, session, stream, payload, status,
                                                                         reason, request))
        return seq

    def lag(self, ts_recv: int, ts_event: int) -> None:
        """Record how far behind the venue's clock we received a message."""
        self.metrics.gauges[("lag_seconds", self.feed)] = (ts_recv - ts_event) / 1e9

    def reject(self, session: int, stream: str, pair: str | None, ts_recv: int, payload: bytes, reason: str,
               request: str | None = None) -> int:
        """Keep a message that could not be parsed: raw row (rejected) plus a `reject` session row."""
        seq = self.raw(session, stream, pair, ts_recv, payload, status="rejected", reason=reason[:500],
                       request=request)
        self.metrics.inc("rejects", self.feed)
        self.event(session, stream, "reject", f"raw seq {seq}: {reason[:300]}", pair)
        return seq

    def event(self, session: int, stream: str, kind: str, detail: str | None = None, pair: str | None = None,
              ts: int | None = None, log: bool = True) -> None:
        """A `sessions` row (connect, disconnect, snapshot, gap, resync, reject, rate_limited, error...); also
        logged (unless `log` is False: the daemon logs its own lifecycle), at info when it is no trouble."""
        detail = self.sink.redact(detail) if detail else detail
        ts = time.time_ns() if ts is None else ts
        seq = self.sink.next_seq()
        self.sink.add("sessions", self.exchange, pair or ALL_PAIRS, C.session_row(ts, seq, session, stream, kind, detail))
        counter = _COUNTED.get(kind)
        if counter:
            self.metrics.inc(counter, self.feed)
        if kind in ("error", "reject"):
            self.metrics.fault(self.feed, f"{kind}: {detail}" + (f" ({pair})" if pair else ""))
        quiet = kind in ("connect", "snapshot", "start", "stop") or (kind == "disconnect" and detail in STOPPING)
        if log and kind != "reject":
            level = logging.INFO if quiet else logging.WARNING
            self.log.log(level, kind, extra={"fields": {"feed": self.feed, "stream": stream, "pair": pair,
                                                        "session": session, "detail": detail}})

    def events(self, pair: str, session: int, ts_recv: int, msg_seq: int | None, evs: Iterable[BookEvent]) -> None:
        """book_events rows, seqs in order."""
        evs = list(evs)
        if not evs:
            return
        s0 = self.sink.next_seq(len(evs))
        self.sink.extend("book_events", self.exchange, pair,
                         [C.event_row(ev, ts_recv, s0 + i, session, msg_seq) for i, ev in enumerate(evs)])

    def levels(self, pair: str, session: int, ts_event: int | None, ts_recv: int, snapshot_id: int,
               lvs: list[Level], source: str) -> None:
        """book_levels rows of one snapshot."""
        if not lvs:
            return
        s0 = self.sink.next_seq(len(lvs))
        self.sink.extend("book_levels", self.exchange, pair,
                         [C.level_row(lv, ts_event, ts_recv, s0 + i, session, snapshot_id, source)
                          for i, lv in enumerate(lvs)])

    def trades(self, pair: str, session: int, ts_recv: int, trades: list[Trade], source: str) -> None:
        """trades rows (already de-duplicated)."""
        if not trades:
            return
        s0 = self.sink.next_seq(len(trades))
        self.sink.extend("trades", self.exchange, pair,
                         [C.trade_row(t, ts_recv, s0 + i, session, source) for i, t in enumerate(trades)])

    def candles(self, pair: str, session: int, ts_recv: int, candles: list[Candle]) -> None:
        """candles rows (only changed versions)."""
        if not candles:
            return
        s0 = self.sink.next_seq(len(candles))
        self.sink.extend("candles", self.exchange, pair,
                         [C.candle_row(c, ts_recv, s0 + i, session) for i, c in enumerate(candles)])
