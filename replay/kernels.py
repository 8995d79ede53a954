"""The sequential parts of replay as small numba kernels: the L3 book loop and exact decimal128 <-> int64.

Everything here is a loop that numpy cannot express (each event depends on the book the previous one
left); callers in `replay.book` prepare and consume plain numpy arrays around it.
"""
from __future__ import annotations

import numpy as np
from numba import njit

#: Action codes (index into ACTIONS) and side codes.
ACTIONS = ("R", "S", "A", "F", "C", "P")
R, S, A, F, C, P = range(6)
BID, ASK = 0, 1
#: Conservation anomalies, counted per hour; the index is the code used by the kernel.
KINDS = ("fill_unknown", "overfill", "fill_price", "cancel_unknown", "overcancel", "dup_add", "crossed", "invalid")
FILL_UNKNOWN, OVERFILL, FILL_PRICE, CANCEL_UNKNOWN, OVERCANCEL, DUP_ADD, CROSSED, INVALID = range(8)

_M32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@njit(cache=True, inline="always")
def _div_small(l3, l2, l1, l0, d):
    """128-bit value in four 32-bit limbs divided by d < 2**31: quotient limbs and remainder."""
    r = l3 % d
    q3 = l3 // d
    c = (r << _S32) | l2
    q2 = c // d
    r = c % d
    c = (r << _S32) | l1
    q1 = c // d
    r = c % d
    c = (r << _S32) | l0
    q0 = c // d
    r = c % d
    return q3, q2, q1, q0, r


@njit(cache=True, inline="always")
def _magnitude(w, i):
    """Magnitude (hi, lo 64-bit halves) and sign of the i-th decimal128 unscaled value (w: uint64 pairs lo, hi)."""
    lo = w[2 * i]
    hi = w[2 * i + 1]
    neg = (hi >> np.uint64(63)) != np.uint64(0)
    if neg:
        lo = ~lo + np.uint64(1)
        hi = ~hi + (np.uint64(1) if lo == np.uint64(0) else np.uint64(0))
    return hi, lo, neg


@njit(cache=True, inline="always")
def _limbs(w, i):
    """Magnitude as four 32-bit limbs, and sign, of the i-th decimal128 unscaled value."""
    hi, lo, neg = _magnitude(w, i)
    return hi >> _S32, hi & _M32, lo >> _S32, lo & _M32, neg


@njit(cache=True)
def dec_scale(w, valid):
    """Smallest k (0..18) such that every valid decimal128(38,18) value times 10**k is an integer."""
    need = 0
    for i in range(valid.shape[0]):
        if not valid[i]:
            continue
        l3, l2, l1, l0, neg = _limbs(w, i)
        tz = 0
        for _ in range(2):
            q3, q2, q1, q0, r = _div_small(l3, l2, l1, l0, np.uint64(1000000000))
            if r != np.uint64(0):
                while r % np.uint64(10) == np.uint64(0):
                    r //= np.uint64(10)
                    tz += 1
                break
            tz += 9
            l3, l2, l1, l0 = q3, q2, q1, q0
        if 18 - tz > need:
            need = 18 - tz
    return need


@njit(cache=True, inline="always")
def _mul(a, b):
    """Full 128-bit product of two uint64 as (hi, lo)."""
    a1, a0, b1, b0 = a >> _S32, a & _M32, b >> _S32, b & _M32
    p00, p01, p10, p11 = a0 * b0, a0 * b1, a1 * b0, a1 * b1
    t = (p01 & _M32) + (p10 & _M32) + (p00 >> _S32)
    lo = (p00 & _M32) | ((t & _M32) << _S32)
    hi = p11 + (p01 >> _S32) + (p10 >> _S32) + (t >> _S32)
    return hi, lo


#: 5**-e mod 2**64 for e = 0..18: exact division by 5**e is a multiplication.
_INV5 = np.array([pow(5**e, -1, 2**64) for e in range(19)], np.uint64)


@njit(cache=True)
def dec_to_int(w, valid, k, out):
    """out = value * 10**k as int64 for decimal128(38,18) values; returns the first bad index or -1.

    Exact division: shift out 2**e, multiply by 5**-e mod 2**64, check the product back (no rounding)."""
    e = 18 - k
    five = np.uint64(5 ** e)
    inv = _INV5[e]
    ue = np.uint64(e)
    low = (np.uint64(1) << ue) - np.uint64(1)
    for i in range(valid.shape[0]):
        if not valid[i]:
            out[i] = 0
            continue
        hi, lo, neg = _magnitude(w, i)
        if lo & low:
            return i
        if e:
            lo = (lo >> ue) | (hi << (np.uint64(64) - ue))
            hi = hi >> ue
        q = lo * inv
        ph, pl = _mul(q, five)
        if q >= np.uint64(0x8000000000000000) or ph != hi or pl != lo:
            return i
        out[i] = -np.int64(q) if neg else np.int64(q)
    return -1


@njit(cache=True)
def int_to_dec(x, k, w):
    """w (uint64 pairs lo, hi) = decimal128(38,18) unscaled values of x / 10**k."""
    m = np.uint64(10 ** (18 - k))
    m1 = m >> _S32
    m0 = m & _M32
    for i in range(x.shape[0]):
        v = x[i]
        neg = v < 0
        a = np.uint64(-v) if neg else np.uint64(v)
        a1 = a >> _S32
        a0 = a & _M32
        p00 = a0 * m0
        p01 = a0 * m1
        p10 = a1 * m0
        p11 = a1 * m1
        r0 = p00 & _M32
        t = (p01 & _M32) + (p10 & _M32) + (p00 >> _S32)
        r1 = t & _M32
        t = (p01 >> _S32) + (p10 >> _S32) + (p11 & _M32) + (t >> _S32)
        r2 = t & _M32
        r3 = (p11 >> _S32) + (t >> _S32)
        lo = r0 | (r1 << _S32)
        hi = r2 | (r3 << _S32)
        if neg:
            lo = ~lo + np.uint64(1)
            hi = ~hi + (np.uint64(1) if lo == np.uint64(0) else np.uint64(0))
        w[2 * i] = lo
        w[2 * i + 1] = hi


@njit(cache=True, inline="always")
def _home(key, shift):
    """Home position of an order id in a table of 2**(64 - shift) entries (Fibonacci hashing)."""
    return np.int64((np.uint64(key) * _GOLDEN) >> shift)


@njit(cache=True, inline="always")
def _find(ht, shift, key):
    """Position of key in the order table (open addressing, linear probing); ht[pos, 1] == -1 when absent."""
    mask = ht.shape[0] - 1
    pos = _home(key, shift)
    while ht[pos, 1] != -1 and ht[pos, 0] != key:
        pos = (pos + 1) & mask
    return pos


@njit(cache=True, inline="always")
def _delete(ht, shift, pos):
    """Remove the entry at pos, shifting later entries of its probe run back (no tombstones)."""
    mask = ht.shape[0] - 1
    i = pos
    j = pos
    while True:
        j = (j + 1) & mask
        if ht[j, 1] == -1:
            break
        k = _home(ht[j, 0], shift)
        if (k <= i or k > j) if i <= j else (k <= i and k > j):
            ht[i, 0] = ht[j, 0]
            ht[i, 1] = ht[j, 1]
            ht[i, 2] = ht[j, 2]
            ht[i, 3] = ht[j, 3]
            i = j
    ht[i, 1] = -1


@njit(cache=True)
def grow(ht, shift):
    """The order table rehashed into twice the entries (and its new shift)."""
    new = np.full((2 * ht.shape[0], 4), -1, np.int64)
    nshift = shift - np.uint64(1)
    for pos in range(ht.shape[0]):
        if ht[pos, 1] != -1:
            q = _find(new, nshift, ht[pos, 0])
            for c in range(4):
                new[q, c] = ht[pos, c]
    return new, nshift


@njit(cache=True)
def minmax(x):
    """(min, max) of the non-negative values of x, or (0, -1) when there are none."""
    lo = np.int64(0x7FFFFFFFFFFFFFFF)
    hi = np.int64(-1)
    for v in x:
        if v >= 0:
            if v < lo:
                lo = v
            if v > hi:
                hi = v
    return (lo, hi) if hi >= 0 else (np.int64(0), np.int64(-1))


@njit(cache=True, inline="always")
def _remove(s, p, q, full, lv, bb, ba):
    """Take q lots from level (s, p); when the order is gone drop its count; returns the new best indices."""
    lv[s, p, 0] -= q
    if full:
        lv[s, p, 1] -= 1
        if lv[s, p, 1] == 0:
            if s == 0 and bb == p:
                while p >= 0 and lv[0, p, 1] == 0:
                    p -= 1
                bb = p
            elif s == 1 and ba == p:
                n = lv.shape[1]
                while p < n and lv[1, p, 1] == 0:
                    p += 1
                ba = p if p < n else -1
    return bb, ba


@njit(cache=True, inline="always")
def _sample(j, lv, bb, ba, dp, da, dc):
    """Record the top dp.shape[2] levels of each side into sample row j (price index -1 = no level)."""
    nlev = dp.shape[2]
    n = lv.shape[1]
    for s in range(2):
        p = bb if s == 0 else ba
        step = -1 if s == 0 else 1
        k = 0
        while k < nlev and 0 <= p < n:
            if lv[s, p, 1] > 0:
                dp[j, s, k] = p
                da[j, s, k] = lv[s, p, 0]
                dc[j, s, k] = lv[s, p, 1]
                k += 1
            p += step
        while k < nlev:
            dp[j, s, k] = -1
            da[j, s, k] = 0
            dc[j, s, k] = 0
            k += 1


#: Slots of the kernel's scalar state vector.
ST_LIVE, ST_BID, ST_ASK, ST_CROSSED, ST_GAP, ST_SNAP, ST_PENDING, ST_GPTR, ST_SPTR, ST_NBBO = range(10)
#: The last emitted bbo row (bid level, bid amount, ask level, ask amount, gap bit), carried in the state so a
#: caller may empty the bbo buffer between calls (streaming replay); the initial values differ from any row.
ST_PB, ST_PBA, ST_PA, ST_PAA, ST_PG = range(10, 15)
STATE_SIZE = 15
_STATE_INIT = {ST_BID: -1, ST_ASK: -1, ST_SNAP: -1, ST_PB: -2, ST_PBA: -1, ST_PA: -2, ST_PAA: -1, ST_PG: 2}


def initial_state() -> np.ndarray:
    """The kernel's state vector before the first event of an hour."""
    st = np.zeros(STATE_SIZE, np.int64)
    for k, v in _STATE_INIT.items():
        st[k] = v
    return st


@njit(cache=True, inline="always")
def _count(counts, first, kind, i):
    counts[kind] += 1
    if first[kind] < 0:
        first[kind] = i


# l3_run state and outputs:
# - the level of row i is pidx[i] - lo (pidx < 0: no price);
# - ht holds live orders only, rows (order id, level * 2 + side or -1 when empty, amount, event index of
#   the add); the kernel stops before an add when ht is half full, or when bbo is full, and the caller
#   grows them and calls again;
# - status[i]: bit 0 = book not known exact (from the hour's start, an R or a gap position in gpos until
#   a snapshot completes), bit 1 = observed (not in the middle of R + S rows);
# - bbo rows (event, bid level, bid amount, ask level, ask amount) when any of them or the gap bit
#   changes at an observed event (against the last row emitted, kept in st[ST_PB:ST_PG + 1]); samp: sorted event positions whose top
#   levels go into dp/da/dc.
@njit(cache=True)
def l3_run(act, side, oid, pidx, lo, amt, gpos, start, stop, ht, shift, lv, st, counts, first,
           status, bbo, samp, dp, da, dc):
    """Apply events [start, stop) to the book in place, counting anomalies; returns the index reached."""
    n = act.shape[0]
    nlev_total = lv.shape[1]
    limit = ht.shape[0] // 2
    live, bb, ba, crossed = st[ST_LIVE], st[ST_BID], st[ST_ASK], st[ST_CROSSED]
    last_gap, last_snap, pending = st[ST_GAP], st[ST_SNAP], st[ST_PENDING]
    gp, j, nb = st[ST_GPTR], st[ST_SPTR], st[ST_NBBO]
    ng = gpos.shape[0]
    ns = samp.shape[0]
    cap = bbo.shape[1]
    pb, pba, pa, paa, pg = st[ST_PB], st[ST_PBA], st[ST_PA], st[ST_PAA], st[ST_PG]
    while j < ns and samp[j] < start:
        _sample(j, lv, bb, ba, dp, da, dc)
        j += 1
    i = start
    while i < stop:
        a = act[i]
        if ((a == A or a == S) and live >= limit) or (cap > 0 and nb >= cap):
            break
        while gp < ng and gpos[gp] <= i:
            last_gap = max(last_gap, 2 * i + 1)
            gp += 1
        if a == A or a == S:
            s = side[i]
            p = pidx[i] - lo
            if s < 0 or s > 1 or pidx[i] < 0 or p >= nlev_total or amt[i] <= 0:
                _count(counts, first, INVALID, i)
            else:
                pos = _find(ht, shift, oid[i])
                if ht[pos, 1] != -1:
                    _count(counts, first, DUP_ADD, i)
                else:
                    ht[pos, 0] = oid[i]
                    ht[pos, 1] = p * 2 + s
                    ht[pos, 2] = amt[i]
                    ht[pos, 3] = i
                    live += 1
                    lv[s, p, 0] += amt[i]
                    lv[s, p, 1] += 1
                    if s == 0:
                        if p > bb:
                            bb = p
                    elif ba < 0 or p < ba:
                        ba = p
        elif a == R:
            for pos in range(ht.shape[0]):
                v = ht[pos, 1]
                if v != -1:
                    lv[v & 1, v >> 1, 0] = 0
                    lv[v & 1, v >> 1, 1] = 0
                    ht[pos, 1] = -1
            live = 0
            bb = -1
            ba = -1
            last_gap = max(last_gap, 2 * i)
            pending = 1
        elif a == C or ((a == F or a == P) and amt[i] > 0):
            pos = _find(ht, shift, oid[i])
            v = ht[pos, 1]
            if v == -1:
                _count(counts, first, FILL_UNKNOWN if a == F else CANCEL_UNKNOWN, i)
            else:
                s = v & 1
                p = v >> 1
                rest = ht[pos, 2]
                q = rest if a == C else amt[i]
                if a == F and pidx[i] >= 0 and pidx[i] - lo != p:
                    _count(counts, first, FILL_PRICE, i)
                if q > rest:
                    _count(counts, first, OVERFILL if a == F else OVERCANCEL, i)
                    q = rest
                full = q == rest
                if full:
                    _delete(ht, shift, pos)
                    live -= 1
                else:
                    ht[pos, 2] = rest - q
                bb, ba = _remove(s, p, q, full, lv, bb, ba)
        else:
            _count(counts, first, INVALID, i)
        observed = not ((a == R or a == S) and i + 1 < n and act[i + 1] == S)
        if observed:
            if pending:
                last_snap = 2 * i
                pending = 0
            x = 1 if bb >= 0 and ba >= 0 and bb >= ba else 0
            if x and not crossed:
                _count(counts, first, CROSSED, i)
            crossed = x
        g = 1 if last_gap > last_snap else 0
        status[i] = g | (2 if observed else 0)
        if observed and cap > 0:
            bamt = lv[0, bb, 0] if bb >= 0 else 0
            aamt = lv[1, ba, 0] if ba >= 0 else 0
            if bb != pb or bamt != pba or ba != pa or aamt != paa or g != pg:
                bbo[0, nb] = i
                bbo[1, nb] = bb
                bbo[2, nb] = bamt
                bbo[3, nb] = ba
                bbo[4, nb] = aamt
                nb += 1
                pb, pba, pa, paa, pg = bb, bamt, ba, aamt, g
        while j < ns and samp[j] == i:
            _sample(j, lv, bb, ba, dp, da, dc)
            j += 1
        i += 1
    st[ST_LIVE], st[ST_BID], st[ST_ASK], st[ST_CROSSED] = live, bb, ba, crossed
    st[ST_GAP], st[ST_SNAP], st[ST_PENDING] = last_gap, last_snap, pending
    st[ST_GPTR], st[ST_SPTR], st[ST_NBBO] = gp, j, nb
    st[ST_PB], st[ST_PBA], st[ST_PA], st[ST_PAA], st[ST_PG] = pb, pba, pa, paa, pg
    return i
