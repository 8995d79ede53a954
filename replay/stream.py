"""Streaming L3 replay: an hour of book_events goes through the kernel in batches of BATCH_ROWS, the book
carried across batches, so peak memory does not grow with the number of events in the hour.

It writes the same `bbo` and `depth` bytes as the whole-hour path of `replay.book` (its test oracle): bbo
rows are cut into the writer's row groups and depth into parts of SAMPLE_CHUNK samples exactly as there.
Prices and amounts are converted per batch at the smallest scale seen so far; a batch that needs a finer
one rescales the book's state, and a price outside the level range so far widens it. Both are exact and
invisible in outputs (decimals and digests do not depend on the scale). Verify places the grouped snapshots
among the hour's events by a first pass over ts_recv and seq, then checks each as its positions pass
(book._Grouped, the same checks); `book --at` stops reading after the instant. Every replay command streams
an L3 hour; those whose files overlap in seq (several uncompacted files of one stream) cannot be merged a
batch at a time: `plan` returns None and the caller uses the whole-hour path.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from replay import book as B
from replay import kernels as K
from replay import source
from schemas import TABLES

_INT64_MAX = (1 << 63) - 1


@dataclass(frozen=True)
class Group:
    """One book_events file that holds rows of the hour (its row groups are in seq order)."""

    path: Path
    seq_lo: int
    seq_hi: int
    #: every row is inside the hour (by ts_recv statistics): no row filter needed.
    whole: bool


def plan(root, exchange: str, pair: str, hour: int) -> list[Group] | None:
    """The hour's files in seq order, or None when a row group is not declared sorted by seq (the store's
    files are), lacks statistics, or two files overlap in seq."""
    lo, hi = hour, hour + source.HOUR_NS
    time_col = TABLES["book_events"].time_column
    found = []
    files = source.data_files(source.partition_dir(root, "book_events", exchange, pair, source.date_of(hour)),
                              TABLES["book_events"])
    for fi, f in enumerate(files):
        meta = pq.read_metadata(f)
        names = meta.schema.to_arrow_schema()
        it, iq = names.get_field_index(time_col), names.get_field_index("seq")
        spans, inside, prev = [], True, None
        for g in range(meta.num_row_groups):
            rg = meta.row_group(g)
            if rg.num_rows == 0:
                continue
            order = rg.sorting_columns
            if not order or order[0].column_index != iq or order[0].descending:
                return None
            ts, sq = rg.column(it).statistics, rg.column(iq).statistics
            if ts is None or sq is None or not ts.has_min_max or not sq.has_min_max:
                return None
            if prev is not None and sq.min_raw < prev:
                return None
            prev = sq.max_raw
            if ts.max_raw < lo or ts.min_raw >= hi:
                inside = False
                continue
            inside &= lo <= ts.min_raw and ts.max_raw < hi
            spans.append((sq.min_raw, sq.max_raw))
        if spans:
            found.append((spans[0][0], spans[-1][1], fi, f, inside))
    found.sort()
    for a, b in zip(found, found[1:]):
        # a shared boundary seq is a duplicate; the whole-hour path keeps the copy of the earlier file
        if b[0] < a[1] or (b[0] == a[1] and b[2] < a[2]):
            return None
    return [Group(f, slo, shi, whole) for slo, shi, _, f, whole in found]


#: Rows decoded at a time: bounds the Arrow data in memory whatever the writer's row groups.
BATCH_ROWS = 1 << 18


def _code(column: str, values: tuple[str, ...]) -> str:
    whens = " ".join(f"WHEN {column} = '{v}' THEN {i}" for i, v in enumerate(values))
    return f"CASE {whens} ELSE -1 END"


#: DuckDB reads the decimals about twice as fast as pyarrow on one core and codes action and side on the
#: way: an order id missing on anything but R makes the row invalid (-1), as book.Events.from_table does.
_SELECT = (f"SELECT ts_event, ts_recv, seq, "
           f"CAST(CASE WHEN action = 'R' THEN {K.R} WHEN order_id IS NULL THEN -1 "
           f"ELSE {_code('action', K.ACTIONS)} END AS TINYINT) AS act, "
           f"CAST({_code('side', B.SIDES)} AS TINYINT) AS side, "
           f"coalesce(order_id, 0) AS order_id, price, amount FROM read_parquet({{path}})")


#: What the first pass of a verified hour reads: the columns that place grouped snapshots among the events.
_KEYS = "SELECT ts_recv, seq FROM read_parquet({path})"


def _quote(path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def batches(groups: list[Group], hour: int, select: str = _SELECT) -> Iterator[tuple[pa.Table, int]]:
    """(seq-ordered, duplicate-free rows, at most BATCH_ROWS, duplicates dropped) in the hour's seq order,
    the rows source.hour_events reads (same row filter); select: their columns, _SELECT (action and side as
    int8 codes) or _KEYS (ts_recv and seq alone)."""
    import duckdb

    time_col = TABLES["book_events"].time_column
    last = None
    con = duckdb.connect()
    try:
        con.execute("SET threads = 1")  # one hour per core; rows in file order
        for g in groups:
            for rb in con.sql(select.format(path=_quote(g.path))).to_arrow_reader(BATCH_ROWS):
                tab = pa.Table.from_batches([rb])
                if not g.whole:
                    ts = tab.column(time_col).cast(pa.int64()).to_numpy()
                    tab = tab.filter(pa.array((ts >= hour) & (ts < hour + source.HOUR_NS)))
                rd = source.order(tab, ("seq",))
                tab, dups = rd.table, rd.duplicates
                if last is not None and tab.num_rows:
                    if tab.column("seq")[0].as_py() < last:
                        raise B.ReplayError(f"{g.path} is declared sorted by seq but is not")
                    k = int(np.searchsorted(tab.column("seq").to_numpy(), last, "right"))
                    tab, dups = tab.slice(k), dups + k
                if tab.num_rows:
                    last = int(tab.column("seq")[-1].as_py())
                yield tab, dups
    finally:
        con.close()


def _ints(column, k: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(int64 values, validity, scale) of a decimal column at scale k, or the batch's own finer scale."""
    if k < 0:
        return B.exact_ints(column)
    arr, w, valid = B._words(column)
    out = np.empty(len(valid), np.int64)
    if K.dec_to_int(w, valid, k, out) >= 0:
        k = max(k, int(K.dec_scale(w, valid)))
        bad = K.dec_to_int(w, valid, k, out)
        if bad >= 0:
            raise B.ReplayError(f"{arr[bad].as_py()} is not an int64 multiple of 1e-{k}")
    return out, valid, k


def _check_times(factor: int, *arrays: np.ndarray) -> None:
    """ReplayError unless every value times factor fits int64 (a finer scale must stay exact)."""
    for a in arrays:
        if a.size and int(np.abs(a).max()) > _INT64_MAX // factor:
            raise B.ReplayError(f"a value times {factor} does not fit int64 ticks/lots")


class _Levels:
    """The price level slots of a streamed hour: sorted ticks; direct = every tick of a range (index = tick - lo)."""

    def __init__(self):
        self.ticks = np.zeros(0, np.int64)
        self.direct = True

    @property
    def lo(self) -> int:
        return int(self.ticks[0]) if self.direct and len(self.ticks) else 0

    def fits(self, lo: int, hi: int) -> bool:
        return not len(self.ticks) and hi < 0 or len(self.ticks) > 0 and lo >= self.ticks[0] and hi <= self.ticks[-1]

    def grown(self, px: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, bool]:
        """New (ticks, direct) covering the old ticks and prices px in [lo, hi], with room to drift when direct."""
        if len(self.ticks):
            lo, hi = min(lo, int(self.ticks[0])), max(hi, int(self.ticks[-1]))
        if self.direct and hi - lo < B.DIRECT_MAX:
            pad = min((B.DIRECT_MAX - 1 - (hi - lo)) // 2, 1024 + (hi - lo) // 4)
            return np.arange(max(0, lo - pad), hi + pad + 1, dtype=np.int64), True
        return np.union1d(self.ticks, px[px >= 0]), False

    def index(self, px: np.ndarray) -> np.ndarray:
        """Level index + lo of each price (the kernel's pidx; -1 for no price), prices known to fit."""
        if self.direct:
            return px
        idx = np.searchsorted(self.ticks, px)
        idx[px < 0] = -1
        return idx


class Stream:
    """The L3 book of one hour, advanced batch by batch; bbo and depth rows leave through sinks in the
    whole-hour path's cuts, grouped snapshots (located beforehand) are checked as their positions pass, and
    `at` stops the book after the last event with ts_recv <= at (then `done`; for the book, not outputs)."""

    def __init__(self, hour: int, sessions: pa.Table | None, *, bbo_sink: Callable[[pa.Table], None] | None,
                 depth: B.Depth | None, depth_sink: Callable[[pa.Table], None] | None, bbo_rows: int,
                 grouped: B._Grouped | None = None, at: int | None = None):
        self.hour, self.group_rows, self.grouped, self.at = hour, bbo_rows, grouped, at
        self.done = False
        self.rp: B.L3Replay | None = None
        self.levels = _Levels()
        self.pk = self.ak = -1
        sts = np.zeros(0, np.int64) if sessions is None else sessions.column("ts").cast(pa.int64()).to_numpy()
        sseq = np.zeros(0, np.int64) if sessions is None else sessions.column("seq").to_numpy()
        o = np.argsort(sts, kind="stable")
        self.sess_ts, self.sess_seq = sts[o], sseq[o]
        self.bbo_sink, self.depth, self.depth_sink = bbo_sink, depth, depth_sink
        self.nlev = depth.levels if depth is not None else 0
        self.rows = 0
        self.first: dict[str, int] = {}  # seq of each anomaly kind's first occurrence
        self.last_seq: int | None = None
        self.run_max = np.iinfo(np.int64).min
        self.next_t: int | None = None
        self.bbo_parts: list[pa.Table] = []
        self.bbo_rows = 0
        self.bbo_written = False
        self.depth_parts: list[pa.Table] = []
        self.samples = 0

    # ---------------------------------------------------------------- state changes between batches

    def _remap(self, old_ticks: np.ndarray, ticks: np.ndarray, direct: bool) -> None:
        """Move the book onto new level slots (old_ticks: the old slots' prices at the new scale)."""
        self.levels.ticks, self.levels.direct = ticks, direct
        rp = self.rp
        if rp is None:
            return
        idx = np.searchsorted(ticks, old_ticks)
        lv = np.zeros((2, len(ticks), 2), np.int64)
        lv[:, idx, :] = rp.lv
        rp.lv = lv
        v = rp.ht[:, 1]
        m = v != -1
        v[m] = idx[v[m] >> 1] * 2 + (v[m] & 1)
        for slot in (K.ST_BID, K.ST_ASK, K.ST_PB, K.ST_PA):
            if rp.st[slot] >= 0:
                rp.st[slot] = idx[rp.st[slot]]

    def _price_scale(self, k: int) -> None:
        if self.pk >= 0 and k > self.pk:
            f = 10 ** (k - self.pk)
            _check_times(f, self.levels.ticks)
            old = self.levels.ticks * f
            if self.levels.direct and len(old) and int(old[-1] - old[0]) < B.DIRECT_MAX:
                self._remap(old, np.arange(old[0], old[-1] + 1, dtype=np.int64), True)
            else:
                self._remap(old, old, False)
        self.pk = k

    def _amount_scale(self, k: int) -> None:
        if self.ak >= 0 and k > self.ak and self.rp is not None:
            f = 10 ** (k - self.ak)
            rp = self.rp
            live = rp.ht[:, 1] != -1
            _check_times(f, rp.ht[live, 2], rp.lv[:, :, 0])
            rp.ht[live, 2] *= f
            rp.lv[:, :, 0] *= f
            for slot in (K.ST_PBA, K.ST_PAA):
                if rp.st[slot] > 0:
                    rp.st[slot] *= f
        self.ak = k

    def _prices(self, px: np.ndarray) -> np.ndarray:
        lo, hi = (int(v) for v in K.minmax(px))
        if hi >= 0 and not self.levels.fits(lo, hi):
            old = self.levels.ticks
            self._remap(old, *self.levels.grown(px, lo, hi))
        elif not self.levels.direct:
            known = np.isin(px[px >= 0], self.levels.ticks)
            if not known.all():
                self._remap(self.levels.ticks, *self.levels.grown(px, lo, hi))
        return self.levels.index(px)

    # ---------------------------------------------------------------- one batch

    def _events(self, tab: pa.Table, next_act: int | None) -> B.Events:
        """The batch as kernel columns at the hour's current scales and level slots."""
        act, side = tab.column("act").to_numpy(), tab.column("side").to_numpy()
        px, pv, pk = _ints(tab.column("price"), self.pk)
        amt, _, ak = _ints(tab.column("amount"), self.ak)
        if not pv.all():
            px[~pv] = -1
        self._price_scale(pk)
        self._amount_scale(ak)
        oid = tab.column("order_id").to_numpy()
        seq = tab.column("seq").to_numpy()
        sel = self.sess_seq < seq[-1]
        if self.last_seq is not None:
            sel &= self.sess_seq >= self.last_seq
        gpos = np.sort(np.searchsorted(seq, self.sess_seq[sel], "right"))
        if next_act is not None:
            act = np.append(act, np.int8(next_act))  # the kernel looks one event ahead for a following S
        pidx = self._prices(px)
        return B.Events(seq, pc.fill_null(tab.column("ts_event").cast(pa.int64()), 0).to_numpy(),
                        tab.column("ts_recv").cast(pa.int64()).to_numpy(), act, side, oid, pidx, self.levels.lo,
                        self.levels.ticks, amt, self.pk, self.ak, self.sess_ts, self.sess_seq, gpos)

    def _sample_positions(self, ev: B.Events, run: np.ndarray, next_ts: int | None) -> tuple[np.ndarray, np.ndarray]:
        """(times, event positions) of this batch's depth samples (run: the hour's running-max ts_recv over the
        batch), as book._samples cuts the whole hour."""
        n = len(ev)
        if self.depth.every is None:
            pos = np.nonzero(B._observed(ev.act)[:n])[0]
            return ev.ts_recv[pos], pos
        d = self.depth
        every, end = d.every, self.hour + source.HOUR_NS
        if d.end is not None:
            end = min(end, d.end)
        if self.next_t is None:
            first = int(ev.ts_recv[0]) if d.start is None else max(int(ev.ts_recv[0]), d.start)
            self.next_t = -(-first // every) * every
        if next_ts is not None:
            upto = min(end, max(int(run[-1]), next_ts))
        else:  # the hour's last batch: the final hour of a run stops at its last event (book._samples)
            upto = min(end, int(run[-1]) + 1) if d.final else end
        times = np.arange(self.next_t, upto, every, dtype=np.int64)
        if len(times):
            self.next_t = int(times[-1]) + every
        return times, np.searchsorted(run, times, "right") - 1

    def _sample(self, ev: B.Events, rp: B.L3Replay, dpos: np.ndarray, times: np.ndarray) -> None:
        """Run the batch through its depth samples (times, positions dpos) and grouped candidates in position
        order: depth leaves in parts of SAMPLE_CHUNK samples as in the whole-hour path."""
        chk, off = self.grouped, self.rows
        owner, gpos = chk.candidates(off, off + len(ev)) if chk is not None else (np.zeros(0, np.int64),) * 2
        nd, nlev = len(dpos), max(self.nlev, chk.nlev if chk is not None else 0)
        allpos = np.concatenate([dpos, gpos - off])
        order = np.argsort(allpos, kind="stable")
        c = 0
        while c < len(order):
            idx = order[c:c + B.SAMPLE_CHUNK]
            isd = idx < nd
            filled = np.cumsum(isd)
            room = B.SAMPLE_CHUNK - self.samples
            if filled[-1] > room:  # the depth part is full at its room-th sample
                idx = idx[:int(np.searchsorted(filled, room)) + 1]
                isd = isd[:len(idx)]
            c += len(idx)
            p = allpos[idx]
            dp, da, dc = rp.run(int(p[-1]) + 1, p, nlev)
            if isd.any():
                d = self.nlev
                self.depth_parts.append(B._depth_part(ev, rp, times[idx[isd]], p[isd], dp[isd, :, :d],
                                                      da[isd, :, :d], dc[isd, :, :d]))
                self.samples += int(isd.sum())
                if self.samples == B.SAMPLE_CHUNK:
                    self._flush_depth()
            if not isd.all():
                g = idx[~isd] - nd
                chk.update(owner[g], gpos[g], dp[~isd], da[~isd], ev, rp.gap, off)

    def feed(self, tab: pa.Table, next_act: int | None, next_ts: int | None) -> None:
        """Apply one seq-ordered batch (next_*: the first action and ts_recv of the next batch, None at the end),
        with `at` up to its last event with ts_recv <= at; `done` when nothing after it is needed."""
        ts = tab.column("ts_recv").cast(pa.int64()).to_numpy()
        run = np.maximum.accumulate(np.maximum(ts, self.run_max))
        n = len(ts)
        stop = n if self.at is None else int(np.searchsorted(run, self.at, "right"))
        self.done = stop < n or self.at is not None and next_ts is not None and next_ts > self.at
        if stop == 0:
            return
        ev = self._events(tab, next_act)
        rp = self.rp
        if rp is None:
            rp = self.rp = B.L3Replay(ev, self.bbo_sink is not None)
        else:
            rp.load(ev, self.bbo_sink is not None)
        times = dpos = np.zeros(0, np.int64)
        if self.nlev:
            times, dpos = self._sample_positions(ev, run, next_ts)
        if self.nlev or self.grouped is not None:
            self._sample(ev, rp, dpos, times)
        rp.run(stop)
        for k, f in zip(K.KINDS, rp.first):
            if f >= 0 and k not in self.first:
                self.first[k] = int(ev.seq[f])
        if self.bbo_sink is not None:
            tk = ev.ticks
            ch, bp, ba, ap, aa = rp.bbo_rows()
            part = B._bbo_table(ev.ts_event[ch], ev.ts_recv[ch], ev.seq[ch], np.where(bp >= 0, tk[bp], -1), ba,
                                np.where(ap >= 0, tk[ap], -1), aa, rp.gap[ch], ev.price_scale, ev.amount_scale)
            self.bbo_parts.append(part)
            self.bbo_rows += part.num_rows
            while self.bbo_rows >= self.group_rows:
                self._flush_bbo(self.group_rows)
        self.rows += n
        self.last_seq = int(ev.seq[-1])
        self.run_max = int(run[-1])

    def _flush_depth(self) -> None:
        if self.depth_parts:
            self.depth_sink(pa.concat_tables(self.depth_parts))
        self.depth_parts, self.samples = [], 0

    def _flush_bbo(self, rows: int) -> None:
        tab = pa.concat_tables(self.bbo_parts)
        head, rest = tab.slice(0, rows), tab.slice(rows)
        self.bbo_sink(head)  # chunked as it came: the Parquet writer's bytes are those of one contiguous table
        self.bbo_written = True
        # the rest (less than a batch's rows) copied, so the written parts' buffers are freed
        self.bbo_parts, self.bbo_rows = ([rest.combine_chunks()] if rest.num_rows else []), rest.num_rows
        del tab, head, rest
        pa.default_memory_pool().release_unused()  # once per row group: keeps the allocator's pages flat

    def finish(self) -> B.HourResult:
        """Flush what the sinks still hold and the hour's result (anomalies, first seqs, final book, digest)."""
        res = B.HourResult(self.hour, "l3", rows=self.rows)
        if self.rp is None:
            return res
        if self.samples:
            self._flush_depth()
        if self.bbo_sink is not None and (self.bbo_rows or not self.bbo_written):
            self._flush_bbo(self.bbo_rows)
        res.anomalies = {k: int(c) for k, c in zip(K.KINDS, self.rp.counts)}
        res.first = dict(self.first)
        res.book = self.rp.book()
        res.digest = res.book.digest()
        if self.at is not None:
            res.book.gap |= bool(B._late_gap(self.sess_ts, self.sess_seq, np.array([self.at]),
                                             np.array([res.book.seq]))[0])
        if self.grouped is not None:
            res.mismatches, res.checked, res.skipped = self.grouped.report(self.sess_ts, self.sess_seq)
        return res


def located(root, exchange: str, pair: str, hour: int, groups: list[Group], window: int) -> B._Grouped | None:
    """The hour's grouped snapshots placed among its events by a first pass over ts_recv and seq alone (a
    snapshot's candidates may lie batches before its capture), or None when it has none."""
    rows = B.grouped_rows(root, exchange, pair, hour)
    if not rows.num_rows:
        return None
    chk = B._Grouped(rows, window)
    run_max = np.iinfo(np.int64).min
    for tab, _ in batches(groups, hour, _KEYS):
        if tab.num_rows:
            run = np.maximum.accumulate(np.maximum(tab.column("ts_recv").cast(pa.int64()).to_numpy(), run_max))
            chk.count(tab.column("seq").to_numpy(), run)
            run_max = int(run[-1])
    chk.locate()
    return chk


def replay_hour(root, exchange: str, pair: str, hour: int, groups: list[Group], *,
                bbo_sink: Callable[[pa.Table], None] | None = None, depth: B.Depth | None = None,
                depth_sink: Callable[[pa.Table], None] | None = None, bbo_rows: int = 1 << 20,
                verify: bool = False, window: int = 2 * 10**9, at: int | None = None) -> B.HourResult:
    """Stream one planned hour through the kernel; rows leave through the sinks, bbo in parts of bbo_rows
    (the writer's row group, so the file is cut as when the whole hour is written at once). verify checks the
    grouped snapshots (book._Grouped, window as there); at: the book after every event with ts_recv <= at,
    reading no further."""
    end = hour + source.HOUR_NS
    sess = source.gap_sessions(root, exchange, pair, hour - 60 * 10**9, end) if groups else None
    chk = located(root, exchange, pair, hour, groups, window) if verify and groups else None
    st = Stream(hour, sess, bbo_sink=bbo_sink, depth=depth, depth_sink=depth_sink, bbo_rows=bbo_rows,
                grouped=chk, at=at)
    dups = 0
    pending = None
    for tab, d in batches(groups, hour):
        dups += d
        if not tab.num_rows:
            continue
        if pending is not None:
            st.feed(pending, int(tab.column("act")[0].as_py()), int(tab.column("ts_recv").cast(pa.int64())[0].as_py()))
            if st.done:
                pending = None
                break
        pending = tab
    if pending is not None:
        st.feed(pending, None, None)
    res = st.finish()
    res.duplicates = dups
    return res
