"""The path from feeds to the store: a bounded row buffer flushed by one writer task, and per-feed taps.

Overflow policy: when `max_rows` rows are pending, feeds wait (`await sink.room()`) before reading
more; nothing is dropped. A blocked socket then backs up into the kernel and, if the venue drops
us, the loss is a recorded gap. Rows reach the store's durable log within `linger` seconds.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable, Protocol

import pyarrow as pa

from recorder.metrics import Metrics
from recorder.rows import BookEvent, Candle, Level, Trade
from recorder.store import StoreError
from schemas import ALL_PAIRS

from . import columns as C

log = logging.getLogger("recorder.sink")
_OVERLOAD_RETRIES = 20  # x the store's overload_timeout (30 s) before a batch is given up
#: seq numbers the sink takes from the store at a time.
SEQ_BLOCK = 4096
#: sessions kinds that also bump a per-feed counter (rejects are counted in Tap.reject).
_COUNTED = {"gap": "gaps", "rate_limited": "rate_limited", "error": "errors"}
#: `disconnect` details of a deliberate stop (logged at info: nothing is wrong).
STOPPING = ("stopping", "poller stopped")


class StoreLike(Protocol):
    """The part of recorder.store.Store the sink uses."""

    def next_seq(self, n: int = 1) -> int: ...
    def append(self, table: str, exchange: str, pair: str, columns) -> int: ...


@dataclass(slots=True)
class Columns:
    """n queued rows of one partition given as columns (columns.typed)."""

    cols: dict[str, pa.Array]
    n: int


class Sink:
    """Buffers rows per (table, exchange, pair); `run` appends them to the store every `linger` seconds."""

    def __init__(self, store: StoreLike, metrics: Metrics, *, max_rows: int = 100_000, linger: float = 0.05,
                 redact: Callable[[str], str] = lambda s: s) -> None:
        self.store = store
        self.metrics = metrics
        self.max_rows = max_rows
        self.linger = linger
        self.redact = redact
        self._buf: dict[tuple[str, str, str], list[list[tuple] | Columns]] = defaultdict(list)
        self.pending = 0
        self._room = asyncio.Event()
        self._room.set()
        self._wake = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self.appended = 0
        self._seq_next = self._seq_end = 0

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
            self._room.clear()
            self._wake.set()

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

    def _append_batch(self, batches: dict[tuple[str, str, str], list[list[tuple] | Columns]]) -> int:
        done = 0
        for (table, exchange, pair), chunks in batches.items():
            # one append per chunk, in queue order: the log stays in seq order (nothing to sort when converting),
            # and concatenating the chunks first cost more than the extra appends
            for c in chunks:
                if type(c) is list:
                    done += self._append(table, exchange, pair, C.to_columns(table, c), len(c))
                else:
                    done += self._append(table, exchange, pair, c.cols, c.n)
        return done

    def _append(self, table: str, exchange: str, pair: str, cols: dict, n: int) -> int:
        for attempt in range(_OVERLOAD_RETRIES + 1):
            try:
                self.store.append(table, exchange, pair, cols)
                return n
            except StoreError as e:
                if "overloaded" in str(e) and attempt < _OVERLOAD_RETRIES:
                    continue  # the store blocked for its timeout: keep waiting (back-pressure)
                return self._row_by_row(table, exchange, pair, cols, n, e)
        return 0

    def _row_by_row(self, table: str, exchange: str, pair: str, cols: dict, n: int, err: Exception) -> int:
        """One bad row must not lose its batch: append one by one, drop (and log) only the refused rows."""
        log.error("store refused a batch; retrying row by row",
                  extra={"fields": {"table": table, "exchange": exchange, "pair": pair, "error": str(err)}})
        done = failed = 0
        for i in range(n):
            try:
                self.store.append(table, exchange, pair, {k: v[i:i + 1] for k, v in cols.items()})
                done += 1
                failed = 0
            except StoreError as e1:
                self.metrics.inc("errors", "sink")
                log.error("row dropped", extra={"fields": {"table": table, "error": str(e1)}})
                failed += 1
                if failed >= 10:  # not a bad row but a failing store: give the batch up in one line
                    log.error("batch dropped", extra={"fields": {"table": table, "rows": n - i - 1}})
                    break
        return done

    async def flush(self) -> None:
        """Hand everything buffered to the store (in a worker thread; one flush at a time, in order)."""
        async with self._flush_lock:
            if not self._buf:
                return
            batches = self.drain()
            counts = [(k, sum(len(c) if type(c) is list else c.n for c in chunks)) for k, chunks in batches.items()]
            n = sum(c for _, c in counts)
            try:
                await asyncio.to_thread(self._append_batch, batches)
            finally:
                self.pending -= n
                self.appended += n
                for (table, exchange, _), c in counts:
                    self.metrics.inc("rows", exchange, c, table)
                if self.pending < self.max_rows:
                    self._room.set()

    async def run(self) -> None:
        """Writer loop: flush every `linger` seconds, or at once when the buffer is full."""
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.linger)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()


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
        """Record one received message verbatim; returns its seq."""
        seq = self.sink.next_seq()
        self.metrics.seen(self.feed, len(payload), status == "ok" and pair is not None)  # data, not control/error
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
