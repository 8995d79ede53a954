"""Per-pair state of an L3 stream: snapshot join at connect, hour-start snapshots, hourly REST check, grouped
snapshots fitted to the tracked book's levels (pure).

Methods take parsed events and return `Out` batches to write, in order; the feed does the I/O.
The rule is written out in docs/recorder.md ("Joining the L3 snapshot to the stream").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from recorder.rows import BookEvent, Level

from .book import (GroupedFit, Join, L3Book, LevelKey, add_level, apply_levels, book_from_snapshot, find_cut,
                   fit_grouped, levels)
from .dedup import Recent
from .fastbook import FastBook, Unrepresentable, event_key

HOUR_NS = 3600 * 10**9
MAX_CHECK_MSGS = 200_000


@dataclass(slots=True)
class Out:
    """Book events to write with one receive time and source message (msg_seq None: synthesized)."""

    ts_recv: int
    msg_seq: int | None
    events: list[BookEvent]


@dataclass(slots=True)
class _Msg:
    ts_recv: int
    msg_seq: int
    events: list[BookEvent]


@dataclass
class _Check:
    base: L3Book
    msgs: list[list[BookEvent]] = field(default_factory=list)


@dataclass(frozen=True)
class Ticket:
    """A grouped snapshot in flight: the level log it belongs to, the cut when its request went out, and
    a serial (two requests can go out at one cut)."""

    log: int
    at: int
    serial: int


@dataclass
class _LevelLog:
    """The tracked book's levels at cut `first` and each message's level changes since, kept while grouped
    snapshots are in flight (open: ticket -> cut when its response came, None before)."""

    base: dict[LevelKey, Decimal]
    first: int = 0
    changes: list[list[tuple[LevelKey, Decimal]]] = field(default_factory=list)
    open: dict[Ticket, int | None] = field(default_factory=dict)

    @property
    def end(self) -> int:
        return self.first + len(self.changes)


class L3Join:
    """One pair: buffers while joining, tracks the book, writes R+S at each hour's first event.

    In steady state the feed may hand the book to a compiled `FastBook` (`go_fast`) and apply scanned
    batches with `apply_fast`; every other method takes the book back first (`_slow`).
    """

    def __init__(self, dedup_capacity: int = 4096) -> None:
        self.book: L3Book | None = None
        self.fast: FastBook | None = None
        self._buffer: list[_Msg] = []
        self._sent_before = 0
        self._hour: int | None = None
        self._check: _Check | None = None
        self._seen = Recent(dedup_capacity)
        self.duplicates = 0
        self.last_join: Join | None = None
        self.epoch = 0  # bumped by reset(): a snapshot requested before it must not be joined after it
        self._levels: _LevelLog | None = None
        self._logs = 0  # level logs started: a ticket of an earlier one is void
        self._tickets = 0

    @property
    def joining(self) -> bool:
        """True until a snapshot has been joined (events are buffered meanwhile)."""
        return self.book is None and self.fast is None

    @property
    def hour(self) -> int | None:
        """Hour (ts_recv // HOUR_NS) of the last message applied: another hour starts with R+S rows."""
        return self._hour

    @property
    def orders(self) -> int:
        """Resting orders tracked (0 while joining)."""
        return len(self.fast) if self.fast is not None else len(self.book.orders) if self.book is not None else 0

    def anomalies(self) -> dict[str, int]:
        """Book anomalies counted since the last snapshot was joined, by kind."""
        if self.fast is not None:
            return self.fast.anomaly_counts()
        return dict(self.book.anomalies) if self.book is not None else {}

    def crossed(self) -> bool:
        """True when the tracked book is crossed (False while joining)."""
        if self.fast is not None:
            return self.fast.crossed()
        return self.book is not None and self.book.crossed()

    def go_fast(self) -> bool:
        """Hand the book to a FastBook when steady (joined, no check pending); False if it stays here."""
        if self.fast is not None:
            return True
        if self.book is None or self._check is not None or self._levels is not None or self._hour is None:
            return False
        try:
            self.fast = FastBook(self.book, self._seen)
        except Unrepresentable:
            return False
        self.book = None
        return True

    def _slow(self) -> None:
        """Take the book back from the FastBook (before any Python-path method uses it)."""
        if self.fast is not None:
            self.book, self._seen = self.fast.to_book(), self.fast.recent()
            self.fast = None

    def apply_fast(self, scan, frames, ev_ts, keep) -> None:
        """Frames of a scan, all of this pair and this hour (see FastBook.apply)."""
        self.duplicates += self.fast.apply(scan, frames, ev_ts, keep)

    @property
    def buffered(self) -> int:
        """Messages waiting for the snapshot."""
        return len(self._buffer)

    def reset(self) -> None:
        """Forget the book (connection lost, or a message lost): buffer again until the next snapshot."""
        self.book, self.fast, self._buffer, self._sent_before, self._check = None, None, [], 0, None
        self._levels = None
        self.epoch += 1

    def request_sent(self) -> int:
        """A connect/reconnect snapshot request is about to go out: everything buffered so far is in it.
        Returns that count, for on_snapshot when several snapshots are in flight."""
        self._sent_before = len(self._buffer)
        return self._sent_before

    def on_message(self, events: list[BookEvent], ts_recv: int, msg_seq: int) -> list[Out]:
        """A parsed stream message; returns what to write now (nothing while joining or for a duplicate)."""
        self._slow()
        # A message's first and last events identify it: an order is added or cancelled once, a trade id is unique.
        if events:
            if not self._seen.add(event_key(events)):
                self.duplicates += 1
                return []
        if self.book is None:
            self._buffer.append(_Msg(ts_recv, msg_seq, events))
            return []
        out: list[Out] = []
        self._emit(ts_recv, msg_seq, events, out)
        if self._check is not None:
            self._check.msgs.append(events)
            if len(self._check.msgs) > MAX_CHECK_MSGS:
                self._check = None  # the check snapshot is too slow to be worth its memory: skip this check
        return out

    def _emit(self, ts_recv: int, msg_seq: int | None, events: list[BookEvent], out: list[Out]) -> None:
        hour = ts_recv // HOUR_NS
        if hour != self._hour:
            out.append(Out(ts_recv, None, self.book.snapshot_events(ts_recv)))
            self._hour = hour
        if self._levels is None:
            self.book.apply_all(events)
        else:
            self._levels.changes.append(apply_levels(self.book, events))
            if len(self._levels.changes) > MAX_CHECK_MSGS:
                self._levels = None  # grouped snapshots this slow are not worth the memory: their checks are void
        if events:
            out.append(Out(ts_recv, msg_seq, events))

    def on_snapshot(self, snapshot: list[BookEvent], ts_recv: int, sent_before: int | None = None) -> list[Out]:
        """Join a connect/reconnect snapshot (R + S events) to the buffered messages; sent_before is what
        its request_sent() returned (default: the last request's).

        When the evidence does not fix the book (last_join.exact is False) nothing changes: the messages
        stay buffered, and the same snapshot may be tried again with more of them, or another one."""
        snap_book = book_from_snapshot(snapshot)
        amounts = {oid: o.amount for oid, o in snap_book.orders.items()}
        j = find_cut(amounts, [m.events for m in self._buffer],
                     self._sent_before if sent_before is None else sent_before)
        self.last_join = j
        if not j.exact:
            return []
        post = self._buffer[j.cut:]
        stamp = min([ts_recv] + [m.ts_recv for m in post[:1]])
        self.book, self.fast = snap_book, None
        self._buffer = []
        out = [Out(stamp, None, [BookEvent(stamp, "R")] + [e for e in snapshot if e.action == "S"])]
        self._hour = stamp // HOUR_NS
        for m in post:
            self._emit(m.ts_recv, m.msg_seq, m.events, out)
        return out

    def start_check(self) -> None:
        """An hourly REST snapshot is about to be requested: remember the book to compare it with."""
        self._slow()
        if self.book is not None:
            self._check = _Check(self.book.copy())

    def drop_check(self) -> None:
        """The hourly snapshot failed: stop collecting messages for it."""
        self._check = None

    def on_check(self, snapshot: list[BookEvent], ts_recv: int) -> tuple[bool, str, list[Out]]:
        """Compare the hourly snapshot with the tracked book at the cut; on mismatch resync to it.

        Returns (matched, detail, rows to write: R + S of the snapshot advanced to now on mismatch).
        """
        self._slow()
        chk, self._check = self._check, None
        if chk is None or self.book is None:
            return True, "check skipped (book unknown, or too many messages while waiting)", []
        snap_book = book_from_snapshot(snapshot)
        amounts = {oid: o.amount for oid, o in snap_book.orders.items()}
        j = find_cut(amounts, chk.msgs, 0, {oid: o.amount for oid, o in chk.base.orders.items()})
        expected = chk.base
        for evs in chk.msgs[:j.cut]:
            expected.apply_all(evs)
        want, got = expected.state(), snap_book.state()
        if want == got:
            return True, f"check ok: {len(got)} orders, cut {j.cut}/{len(chk.msgs)}", []
        missing = len(got.keys() - want.keys())
        extra = len(want.keys() - got.keys())
        differ = sum(1 for k in got.keys() & want.keys() if got[k] != want[k])
        for evs in chk.msgs[j.cut:]:
            snap_book.apply_all(evs)
        self.book, self._levels = snap_book, None
        self._hour = ts_recv // HOUR_NS
        detail = (f"check mismatch: {missing} orders only in snapshot, {extra} only in tracked book, "
                  f"{differ} differ; cut {j.cut}/{len(chk.msgs)}{'' if j.consistent else ' (inconsistent)'}")
        return False, detail, [Out(ts_recv, None, snap_book.snapshot_events(ts_recv))]

    def grouped_sent(self) -> Ticket | None:
        """A grouped snapshot request is about to go out: log the tracked book's level changes from here until
        it is fitted (grouped_fit) or dropped. None while joining (there is no book to compare)."""
        self._slow()
        if self.book is None:
            return None
        if self._levels is None:
            self._logs += 1
            self._levels = _LevelLog(levels(self.book))
        self._tickets += 1
        t = Ticket(self._logs, self._levels.end, self._tickets)
        self._levels.open[t] = None
        return t

    def grouped_received(self, t: Ticket) -> None:
        """The grouped snapshot's response arrived: the cut its difference is reported at, if it fits nowhere."""
        if self._live(t):
            self._levels.open[t] = self._levels.end

    def grouped_fit(self, t: Ticket, snapshot: list[Level]) -> GroupedFit | None:
        """Fit the snapshot to the tracked book at every cut from its request to now (see docs/recorder.md,
        "Divergence"); None when the ticket is void (the book was reset or replaced, or the log outgrew
        MAX_CHECK_MSGS) or its response never came."""
        if not self._live(t):
            return None
        lv = self._levels
        resp, fit = lv.open[t], None
        if resp is not None:
            sides: dict[str, list[tuple[Decimal, Decimal]]] = {"bid": [], "ask": []}
            for x in sorted(snapshot, key=lambda x: x.level):
                sides[x.side].append((Decimal(x.price), Decimal(x.amount)))
            fit = fit_grouped(lv.base, lv.changes, t.at - lv.first, sides, resp - lv.first)
        self.grouped_drop(t)
        return fit

    def grouped_drop(self, t: Ticket) -> None:
        """Forget a grouped snapshot in flight; the log keeps only what the ones still open need."""
        if not self._live(t):
            return
        lv = self._levels
        del lv.open[t]
        if not lv.open:
            self._levels = None
            return
        keep = min(x.at for x in lv.open) - lv.first
        for ch in lv.changes[:keep]:
            for key, d in ch:
                add_level(lv.base, key, d)
        del lv.changes[:keep]
        lv.first += keep

    def _live(self, t: Ticket) -> bool:
        return self._levels is not None and t.log == self._logs and t in self._levels.open
