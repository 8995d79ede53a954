"""Rows of a burst of L3 socket frames the compiled scanner read (pure: numpy in, table columns out).

The L3 feed's fast path (feeds/l3.py) packs a burst of `42[...]` frames into one buffer, scans it
(venues/btcalpha_scan.py), lets each pair's FastBook drop repeated messages and track the book, and
then builds here, without a Python step per message, the same rows the per-message path writes:
one `raw` row per frame, then its book events, then its new trades, seq numbers in that order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

_SIDE_TEXT, _TAKER_TEXT = ("bid", "ask"), ("buy", "sell")  # by the scanner's side and taker codes
_SIDES, _TAKERS = pa.array(_SIDE_TEXT), pa.array(_TAKER_TEXT)
#: A run of frames shorter than this on average is gathered with one `take`, not sliced run by run.
_RUN_MIN = 16


@dataclass(slots=True)
class Packed:
    """Frames in one byte buffer: frame i is buf[starts[i]:ends[i]], received at ts[i] (ns)."""

    data: bytes
    buf: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    ts: np.ndarray

    def raw(self, i: int) -> bytes:
        """Frame i's bytes, as received."""
        return self.data[self.starts[i]:self.ends[i]]

    def payloads(self, frames: np.ndarray) -> pa.Array:
        """The `raw.payload` column of the given frames."""
        n = len(self.starts)
        offsets = np.empty(n + 1, np.int32)  # a burst is far below 2 GiB
        offsets[0] = 0
        offsets[1:] = self.ends
        whole = pa.BinaryArray.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(self.data)])
        if len(frames) == n:
            return whole
        cuts = np.flatnonzero(np.diff(frames) != 1) + 1  # runs of consecutive frames (a pair's messages come in runs)
        if len(cuts) + 1 > len(frames) // _RUN_MIN:
            return whole.take(pa.array(frames))  # a memcpy per frame
        starts, ends = frames[np.r_[0, cuts]].tolist(), (frames[np.r_[cuts - 1, len(frames) - 1]] + 1).tolist()
        return pa.concat_arrays([whole.slice(a, b - a) for a, b in zip(starts, ends)])  # a memcpy per run


def pack(texts: list, stamps: list[int]) -> Packed:
    """Received text frames (str or UTF-8 bytes) and their receive times, packed."""
    data = "".join(texts).encode() if texts and type(texts[0]) is str else b"".join(texts)
    lens = np.fromiter(map(len, texts), np.int64, len(texts))
    if len(data) != int(lens.sum()):  # text not all ASCII: lengths in bytes differ from lengths in characters
        texts = [t.encode() for t in texts]
        lens = np.fromiter(map(len, texts), np.int64, len(texts))
    ends = np.cumsum(lens)
    return Packed(data, np.frombuffer(data, np.uint8), ends - lens, ends, np.array(stamps, np.int64))


_DECIMAL = pa.decimal128(38, 18)
_TEN18_HI, _TEN18_LO = 10**18 >> 32, 10**18 & 0xFFFFFFFF


def decimals(hi: np.ndarray, lo: np.ndarray) -> pa.Array:
    """Exact values hi * 10**18 + lo (0 <= hi < 2**63, 0 <= lo < 10**18) as a decimal(38, 18) column.

    The 128-bit unscaled integers are assembled from 32-bit partial products (compiled: a dozen numpy passes
    cost more): the store then takes the column as it is, with no text to parse and range-check.
    """
    words = np.empty((len(hi), 2), np.uint64)
    _words128(hi, lo, words)
    return pa.Array.from_buffers(_DECIMAL, len(hi), [None, pa.py_buffer(words)])


@njit(cache=True, nogil=True)
def _words128(hi: np.ndarray, lo: np.ndarray, out: np.ndarray) -> None:
    """out[i] = (low 64 bits, high 64 bits) of hi[i] * 10**18 + lo[i]."""
    t_hi, t_lo, m32 = np.uint64(_TEN18_HI), np.uint64(_TEN18_LO), np.uint64(0xFFFFFFFF)
    for i in range(len(hi)):
        h = np.uint64(hi[i])
        h1, h0 = h >> np.uint64(32), h & m32
        mid = h1 * t_lo + h0 * t_hi  # < 2**63 + 2**60: no overflow
        low = h0 * t_lo
        low_plus = low + ((mid & m32) << np.uint64(32))
        carry = np.uint64(1) if low_plus < low else np.uint64(0)
        total = low_plus + np.uint64(lo[i])
        if total < low_plus:
            carry += np.uint64(1)
        out[i, 0] = total
        out[i, 1] = h1 * t_hi + (mid >> np.uint64(32)) + carry


def _letters(codes: np.ndarray) -> pa.Array:
    """One-letter strings from their byte codes (book event actions)."""
    return pa.StringArray.from_buffers(len(codes), pa.py_buffer(np.arange(len(codes) + 1, dtype=np.int32)),
                                       pa.py_buffer(codes.astype(np.uint8).tobytes()))


@dataclass(slots=True)
class Counts:
    """How many rows each frame of a fast run writes (its raw row first), and where its seqs start."""

    events: np.ndarray  # per frame: book events written (0 for a repeated message)
    fresh: np.ndarray  # per event: a fill whose trade is new (a `trades` row)
    rows: np.ndarray  # per frame: 1 + events + new trades

    @property
    def total(self) -> int:
        return int(self.rows.sum())

    def raw_seqs(self, seq0: int) -> np.ndarray:
        """Each frame's raw row seq, in a block of `total` seqs from seq0 (its other rows follow it)."""
        return seq0 + np.cumsum(self.rows) - self.rows


def counts(scan, frames: np.ndarray, keep: np.ndarray, fresh: np.ndarray) -> Counts:
    """Rows of the given frames: keep per frame (FastBook), fresh per event of the scan (trade memory)."""
    nev = (scan.ev_off[frames + 1] - scan.ev_off[frames]) * keep[frames]
    cs = np.zeros(len(fresh) + 1, np.int64)
    np.cumsum(fresh, out=cs[1:])
    ntr = cs[scan.ev_off[frames + 1]] - cs[scan.ev_off[frames]]
    return Counts(nev, fresh, 1 + nev + ntr)


def occurrences(frames: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """How many times each id already occurred in its frame before (the trade memory tells such repeats apart)."""
    n = len(ids)
    if n < 2:
        return np.zeros(n, np.int64)
    order = np.lexsort((np.arange(n), ids, frames))
    f, i = frames[order], ids[order]
    new = np.ones(n, bool)
    new[1:] = (f[1:] != f[:-1]) | (i[1:] != i[:-1])
    starts = np.flatnonzero(new)
    rank = np.arange(n) - np.repeat(starts, np.diff(np.append(starts, n)))
    out = np.empty(n, np.int64)
    out[order] = rank
    return out


def columns(scan, packed: Packed, frames: np.ndarray, keep: np.ndarray, c: Counts, seq0: int, session: int,
            stream: str, select: np.ndarray) -> dict[str, dict[str, object]]:
    """Columns of the `raw`, `book_events` and `trades` rows of frames[select] (one pair), whose seqs
    come from a block starting at seq0 allocated for all of `frames` in order (Counts)."""
    fr = frames[select]
    rseq = c.raw_seqs(seq0)[select]
    n = len(fr)
    out: dict[str, dict[str, object]] = {"raw": {
        "ts_recv": packed.ts[fr], "seq": rseq, "session": np.full(n, session, np.int64),
        "stream": pa.repeat(pa.scalar(stream), n), "request": pa.nulls(n, pa.string()),
        "status": pa.repeat(pa.scalar("ok"), n), "reason": pa.nulls(n, pa.string()),
        "payload": packed.payloads(fr)}}
    # events of kept frames, in frame order
    starts = scan.ev_off[fr]
    nev = c.events[select]
    ev = np.repeat(starts - np.cumsum(nev) + nev, nev) + np.arange(int(nev.sum()))
    if len(ev):
        efr = scan.frame[ev]
        pos = np.repeat(rseq, nev)
        eseq = pos + 1 + (ev - scan.ev_off[efr])
        out["book_events"] = {
            "ts_event": scan.ts_event[efr], "ts_recv": packed.ts[efr], "seq": eseq,
            "session": np.full(len(ev), session, np.int64), "msg_seq": pos,
            "action": _letters(scan.action[ev]),
            "side": _SIDES.take(scan.side[ev]),
            "order_id": scan.order_id[ev],
            "price": decimals(scan.price_hi[ev], scan.price_lo[ev]),
            "amount": decimals(scan.amount_hi[ev], scan.amount_lo[ev]),
            "trade_id": pa.array(scan.trade_id[ev], mask=scan.trade_id[ev] < 0),
            "taker_order_id": pa.array(scan.taker_order_id[ev], mask=scan.taker_order_id[ev] < 0)}
    # new trades: the fresh fills of the frames (duplicates included: the trade memory decides), in order
    in_sel = np.zeros(len(scan.ok), bool)
    in_sel[fr] = True
    tr = np.flatnonzero(c.fresh & in_sel[scan.frame]) if len(c.fresh) else np.zeros(0, np.int64)
    if len(tr):
        tfr = scan.frame[tr]
        first = np.searchsorted(tfr, tfr, "left")
        where = np.searchsorted(fr, tfr)
        tseq = rseq[where] + 1 + nev[where] + (np.arange(len(tr)) - first)
        out["trades"] = {
            "ts_event": scan.ts_event[tfr], "ts_recv": packed.ts[tfr], "seq": tseq,
            "session": np.full(len(tr), session, np.int64), "trade_id": pc.cast(pa.array(scan.trade_id[tr]), pa.string()),
            "price": decimals(scan.price_hi[tr], scan.price_lo[tr]),
            "amount": decimals(scan.amount_hi[tr], scan.amount_lo[tr]),
            "taker_side": _TAKERS.take(scan.taker[tfr]),
            "maker_order_id": scan.order_id[tr],
            "taker_order_id": scan.taker_order_id[tr], "source": pa.repeat(pa.scalar("socket"), len(tr))}
    return out


def rows(scan, packed: Packed, frames: np.ndarray, keep: np.ndarray, c: Counts, seq0: int, session: int,
         stream: str, select: np.ndarray) -> dict[str, list[tuple]]:
    """The rows of `columns` as tuples, built one by one: cheaper than arrays for a few frames."""
    raw_seq = c.raw_seqs(seq0)[select].tolist()
    fr, nev = frames[select].tolist(), c.events[select].tolist()
    data, starts, ends, ts = packed.data, packed.starts.tolist(), packed.ends.tolist(), packed.ts.tolist()
    ev_off, ts_event, taker = scan.ev_off.tolist(), scan.ts_event.tolist(), scan.taker.tolist()
    action, side, oid = scan.action.tolist(), scan.side.tolist(), scan.order_id.tolist()
    tid, taker_oid, fresh = scan.trade_id.tolist(), scan.taker_order_id.tolist(), c.fresh.tolist()
    p_off, p_len, a_off, a_len = (x.tolist() for x in (scan.price_off, scan.price_len, scan.amount_off, scan.amount_len))
    raw, events, trades = [], [], []
    for f, q, ne in zip(fr, raw_seq, nev):
        t, te, e0 = ts[f], ts_event[f], ev_off[f]
        raw.append((t, q, session, stream, None, "ok", None, data[starts[f]:ends[f]]))
        r = q + 1 + ne
        for e in range(e0, ev_off[f + 1]):
            price = data[p_off[e]:p_off[e] + p_len[e]].decode()
            amount = data[a_off[e]:a_off[e] + a_len[e]].decode()
            if e - e0 < ne:
                events.append((te, t, q + 1 + e - e0, session, q, chr(action[e]), _SIDE_TEXT[side[e]], oid[e], price,
                               amount, None if tid[e] < 0 else tid[e], None if taker_oid[e] < 0 else taker_oid[e]))
            if fresh[e]:
                trades.append((te, t, r, session, str(tid[e]), price, amount, _TAKER_TEXT[taker[f]], oid[e],
                               taker_oid[e], "socket"))
                r += 1
    return {name: rs for name, rs in (("raw", raw), ("book_events", events), ("trades", trades)) if rs}
