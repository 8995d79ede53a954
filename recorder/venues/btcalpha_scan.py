"""Compiled fast path for BTC-Alpha / bitexbit `42["book_<PAIR>",{...}]` frames: a batch of raw frames to numpy columns.

A frame is accepted only when orjson + `btcalpha.parse_book_event` (bitexbit's with `need_cancel_id`) surely give the
same events; any other frame is refused (`ok` False) for the Python parser. Accepted: strict JSON, ASCII only, no
escapes, nesting at most `_MAX_DEPTH`, no repeated key among those read, numbers only when exact (see `_FLOAT_LIMIT`).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from recorder.rows import ParseError
from recorder.venues.btcalpha import pair_of_event
from recorder.venues.common import TS_MAX_NS, TS_MIN_NS

__all__ = ["Names", "Scan", "scan_frames", "warm"]

_MAX_DEPTH = 32  # deepest nesting accepted in a skipped value
_INT64_MAX = 2**63 - 1
_INT64_CUT = _INT64_MAX // 10  # v * 10 + d overflows when v > _INT64_CUT (or v == _INT64_CUT and d > 7)
_POW10 = np.array([10**i for i in range(19)], np.int64)
# A bare JSON fraction with k fraction digits and significand M < 2**53 (k <= 22): float(M) / 10**k is the correctly
# rounded double x of the text (Clinger's fast path). When 10**-k > ulp(x), no other decimal with k fraction digits
# rounds to x, so repr(x) (what the Python path stores) has the text's value. With 2**(E-1) <= x < 2**E,
# ulp(x) = 2**(E-53), and the condition holds exactly when x < 2**(53 - bit_length(10**k)) = _FLOAT_LIMIT[k].
_FLOAT_SAFE = 2**53
_POW10F = np.array([float(10**k) for k in range(23)])  # exact doubles
_FLOAT_LIMIT = np.array([math.ldexp(1.0, 53 - (10**k).bit_length()) for k in range(23)])
#: Smallest trade object (`{"tid":0,"type":"buy","price":1,"amount":1,"o_id":0}`): bounds the F events of a frame.
_MIN_TRADE_BYTES = 52

# Keys read; a key's code is its index. Top level: the first ten; trade objects: TYPE, PRICE, AMOUNT, TID, O_ID.
_KEYS = (b"success", b"cancelled", b"trades", b"date", b"oid", b"type", b"price", b"amount", b"cancel_order_id",
         b"pair", b"tid", b"o_id")
SUCCESS, CANCELLED, TRADES, DATE, OID, TYPE, PRICE, AMOUNT, CANCEL_ID, PAIR, TID, O_ID = range(len(_KEYS))
_KEY_BYTES = np.frombuffer(b"".join(_KEYS), np.uint8)
_KEY_OFF = np.cumsum([0] + [len(k) for k in _KEYS]).astype(np.int64)
_KEY_AT = np.full((16, 128), -1, np.int64)  # (length, first byte) -> the one key code it may be
for _k, _name in enumerate(_KEYS):
    assert _KEY_AT[len(_name), _name[0]] < 0
    _KEY_AT[len(_name), _name[0]] = _k
_ORDER_KEYS = (1 << DATE) | (1 << OID) | (1 << TYPE) | (1 << PRICE) | (1 << AMOUNT)
_TRADE_KEYS = (1 << TID) | (1 << TYPE) | (1 << PRICE) | (1 << AMOUNT) | (1 << O_ID)

# Rows of the event matrix (one int64 row per output column).
_N_COLS = 14
(C_FRAME, C_ACTION, C_SIDE, C_ORDER, C_TRADE, C_TAKER, C_P_OFF, C_P_LEN, C_P_HI, C_P_LO,
 C_A_OFF, C_A_LEN, C_A_HI, C_A_LO) = range(_N_COLS)


@dataclass(slots=True)
class Scan:
    """Columns of a scanned batch: per frame (n), then per event (E) in frame order, each frame's in parser order."""

    ok: np.ndarray  # bool[n]: accepted
    pair: np.ndarray  # int32[n]: index into Names (-1 when refused)
    ts_event: np.ndarray  # int64[n]: the message's `date` in ns
    taker: np.ndarray  # int8[n]: new order 0 buy / 1 sell; cancel (and refused) -1
    ev_off: np.ndarray  # int64[n+1]: events of frame i are ev_off[i]:ev_off[i+1]
    frame: np.ndarray  # int32[E]
    action: np.ndarray  # uint8[E]: ord('A'), ord('F'), ord('C')
    side: np.ndarray  # int8[E]: 0 bid, 1 ask
    order_id: np.ndarray  # int64[E]
    trade_id: np.ndarray  # int64[E], -1 when None
    taker_order_id: np.ndarray  # int64[E], -1 when None
    price_off: np.ndarray  # int64[E]: price text is buf[price_off:price_off + price_len]
    price_len: np.ndarray  # int32[E]
    amount_off: np.ndarray  # int64[E]
    amount_len: np.ndarray  # int32[E]
    price_hi: np.ndarray  # int64[E]: price = hi + lo / 10**18, 0 <= lo < 10**18
    price_lo: np.ndarray  # int64[E]
    amount_hi: np.ndarray  # int64[E]
    amount_lo: np.ndarray  # int64[E]


@intrinsic
def _at(typingctx, arr, i):
    """arr[i] without numba's negative index wraparound (callers keep 0 <= i < arr.size)."""
    def codegen(context, builder, sig, args):
        data = context.make_array(arr)(context, builder, args[0]).data
        return builder.load(builder.gep(data, [args[1]], inbounds=True))
    return arr.dtype(arr, types.intp), codegen


@intrinsic
def _unowned(typingctx, arr):
    """View of an array without its memory owner, so calls taking it skip numba's atomic reference counting
    (valid while `arr` lives: used inside `_scan` on its own arguments)."""
    def codegen(context, builder, sig, args):
        view = context.make_array(arr)(context, builder, args[0])
        view.meminfo = cgutils.get_null_value(view.meminfo.type)
        return view._getvalue()
    return arr(arr), codegen


# ------------------------------------------------------------------------------------- JSON tokens
_WS = np.zeros(256, np.bool_)  # JSON whitespace bytes
_WS[[0x20, 0x0A, 0x0D, 0x09]] = True


@njit(cache=True)
def _ws(buf, i, e):
    """First index >= i that is not JSON whitespace (or e)."""
    while i < e and _WS[_at(buf, i)]:
        i += 1
    return i


@njit(cache=True)
def _digit(buf, i, e):
    """True when buf[i] is an ASCII digit (and i < e)."""
    return i < e and 0x30 <= _at(buf, i) <= 0x39


@njit(cache=True)
def _string(buf, i, e):
    """Index of the closing quote of the string opening at buf[i]; -1 (refused) for escapes, control or non-ASCII."""
    if i >= e or _at(buf, i) != 0x22:
        return -1
    i += 1
    while i < e:
        c = _at(buf, i)
        if c == 0x22:
            return i
        if c < 0x20 or c >= 0x80 or c == 0x5C:
            return -1
        i += 1
    return -1


@njit(cache=True)
def _colon(buf, i, e):
    """Index of the value after `:` (whitespace around it skipped), or -1."""
    i = _ws(buf, i, e)
    if i >= e or _at(buf, i) != 0x3A:
        return -1
    i = _ws(buf, i + 1, e)
    return i if i < e else -1


@njit(cache=True)
def _member_key(buf, i, e):
    """Past a member's key string at buf[i] and its colon (and whitespace): the value's index, -1 when malformed."""
    j = _string(buf, i, e)
    return _colon(buf, j + 1, e) if j >= 0 else -1


@njit(cache=True)
def _literal(buf, i, e, lit):
    """End of the literal `lit` (uint8 array) at buf[i], or -1."""
    n = lit.size
    if i + n > e:
        return -1
    for k in range(n):
        if _at(buf, i + k) != _at(lit, k):
            return -1
    return i + n


_TRUE = np.frombuffer(b"true", np.uint8)
_FALSE = np.frombuffer(b"false", np.uint8)
_NULL = np.frombuffer(b"null", np.uint8)


@njit(cache=True)
def _json_number(buf, i, e):
    """End of the JSON number at buf[i] (full RFC 8259 grammar), or -1."""
    if i < e and _at(buf, i) == 0x2D:
        i += 1
    if not _digit(buf, i, e):
        return -1
    if _at(buf, i) == 0x30:
        i += 1
    else:
        while _digit(buf, i, e):
            i += 1
    if i < e and _at(buf, i) == 0x2E:
        i += 1
        if not _digit(buf, i, e):
            return -1
        while _digit(buf, i, e):
            i += 1
    if i < e and (_at(buf, i) == 0x65 or _at(buf, i) == 0x45):
        i += 1
        if i < e and (_at(buf, i) == 0x2B or _at(buf, i) == 0x2D):
            i += 1
        if not _digit(buf, i, e):
            return -1
        while _digit(buf, i, e):
            i += 1
    return i


@njit(cache=True)
def _scalar(buf, i, e):
    """End of the JSON string, number or literal at buf[i], or -1."""
    if i >= e:
        return -1
    c = _at(buf, i)
    if c == 0x22:
        j = _string(buf, i, e)
        return j + 1 if j >= 0 else -1
    if c == 0x74:
        return _literal(buf, i, e, _TRUE)
    if c == 0x66:
        return _literal(buf, i, e, _FALSE)
    if c == 0x6E:
        return _literal(buf, i, e, _NULL)
    return _json_number(buf, i, e)


@njit(cache=True)
def _skip(buf, i, e):
    """End of the JSON value at buf[i], validated, nesting at most _MAX_DEPTH; -1 when refused."""
    depth = 0
    objects = 0  # bit d set: the container at depth d is an object
    while True:
        # a value starts at i
        if i >= e:
            return -1
        c = _at(buf, i)
        if c == 0x7B or c == 0x5B:
            if depth == _MAX_DEPTH:
                return -1
            is_obj = c == 0x7B
            objects = (objects | (1 << depth)) if is_obj else (objects & ~(1 << depth))
            depth += 1
            i = _ws(buf, i + 1, e)
            if i < e and _at(buf, i) == (0x7D if is_obj else 0x5D):  # empty container
                i += 1
                depth -= 1
            elif is_obj:
                i = _member_key(buf, i, e)
                if i < 0:
                    return -1
                continue
            else:
                continue
        else:
            i = _scalar(buf, i, e)
            if i < 0:
                return -1
        # a value ended at i: close containers until one continues with `,`
        while depth > 0:
            i = _ws(buf, i, e)
            if i >= e:
                return -1
            is_obj = ((objects >> (depth - 1)) & 1) == 1
            if _at(buf, i) == (0x7D if is_obj else 0x5D):
                i += 1
                depth -= 1
                continue
            if _at(buf, i) != 0x2C:
                return -1
            i = _ws(buf, i + 1, e)
            if is_obj:
                i = _member_key(buf, i, e)
                if i < 0:
                    return -1
            break
        if depth == 0:
            return i


@njit(cache=True)
def _same(buf, a, b, ref, r0, r1):
    """True when buf[a:b] equals ref[r0:r1]."""
    if b - a != r1 - r0:
        return False
    for k in range(b - a):
        if _at(buf, a + k) != _at(ref, r0 + k):
            return False
    return True


@njit(cache=True, inline="always")
def _key(buf, a, b):
    """Code of the key buf[a:b] (index in _KEYS), or -1 for any other key."""
    if b - a >= 16 or b == a or _at(buf, a) >= 128:
        return -1
    k = _KEY_AT[b - a, _at(buf, a)]
    return k if k >= 0 and _same(buf, a, b, _KEY_BYTES, _KEY_OFF[k], _KEY_OFF[k + 1]) else -1


# ------------------------------------------------------------------------------------ typed values
@njit(cache=True, inline="always")
def _digits(buf, j, e):
    """The run of ASCII digits at buf[j]: (end, value); end -1 when the value exceeds int64."""
    v = 0
    while _digit(buf, j, e):
        d = _at(buf, j) - 0x30
        if v >= _INT64_CUT and (v > _INT64_CUT or d > _INT64_MAX % 10):
            return -1, 0
        v = v * 10 + d
        j += 1
    return j, v


@njit(cache=True, inline="always")
def _numeric(buf, i, e):
    """Quoted `[0-9]{1,20}(.[0-9]+)?` or bare JSON `int(.frac)?` (exact per `_FLOAT_LIMIT`) at buf[i]: (end, text off,
    text len, integer part, its significant digits, 18 fraction digits truncated/padded, fraction digits) or end -1."""
    # No sign and no exponent: the byte after the number (`-`, `e`) is then a stray one the caller refuses.
    quoted = i < e and _at(buf, i) == 0x22
    off = i + 1 if quoted else i
    j, iv = _digits(buf, off, e)
    if j < 0:
        return -1, 0, 0, 0, 0, 0, 0
    n_int = j - off
    if n_int == 0 or n_int > 20 or (not quoted and n_int > 1 and _at(buf, off) == 0x30):
        return -1, 0, 0, 0, 0, 0, 0
    sig = 0
    while sig < 19 and iv >= _POW10[sig]:
        sig += 1
    m, m_sig = iv, sig  # all digits as an integer, and their count from the first non-zero one (m exact up to 17)
    fv = 0
    f_off = j + 1
    if j < e and _at(buf, j) == 0x2E:
        j += 1
        while _digit(buf, j, e):
            d = _at(buf, j) - 0x30
            if j - f_off < 18:
                fv = fv * 10 + d
            if m_sig > 0 or d > 0:
                m_sig += 1
                if m_sig <= 17:
                    m = m * 10 + d
            j += 1
        if j == f_off:
            return -1, 0, 0, 0, 0, 0, 0
    f_len = max(j - f_off, 0)
    n = j - off
    if quoted:
        if j >= e or _at(buf, j) != 0x22:
            return -1, 0, 0, 0, 0, 0, 0
        j += 1
    elif f_len > 0 and not (m_sig <= 16 and m < _FLOAT_SAFE and f_len <= 22
                            and m / _POW10F[f_len] < _FLOAT_LIMIT[f_len]):
        return -1, 0, 0, 0, 0, 0, 0
    if f_len < 18:
        fv *= _POW10[18 - f_len]
    return j, off, n, iv, sig, fv, f_len


@njit(cache=True, inline="always")
def _decimal(buf, i, e):
    """Price or amount at buf[i] (`common.dec`, <= 18 fraction digits): (end, text off, len, hi, lo), end -1 refused."""
    j, off, n, iv, _, fv, f_len = _numeric(buf, i, e)
    if j < 0 or f_len > 18:
        return -1, 0, 0, 0, 0
    return j, off, n, iv, fv


@njit(cache=True, inline="always")
def _timestamp(buf, i, e):
    """`common.ts_seconds(x, allow_ks=True)` of the number at buf[i]: (end, ns); end -1 when refused or out of range."""
    j, _, _, iv, sig, fv, _ = _numeric(buf, i, e)
    if j < 0:
        return -1, 0
    width = 12 if sig <= 8 else 9  # up to 8 integer digits: kiloseconds
    if iv > TS_MAX_NS // _POW10[width]:
        return -1, 0
    ns = iv * _POW10[width] + fv // _POW10[18 - width]
    if ns < TS_MIN_NS or ns >= TS_MAX_NS:
        return -1, 0
    return j, ns


@njit(cache=True, inline="always")
def _id(buf, i, e):
    """`common.int_id` of a bare JSON int or a string of at most 20 digits at buf[i], <= int64 max: (end, id), end -1
    when refused (also a bare number going on with a fraction or an exponent)."""
    quoted = i < e and _at(buf, i) == 0x22
    start = i + 1 if quoted else i
    j, v = _digits(buf, start, e)
    if j < 0:
        return -1, 0
    n = j - start
    if n == 0 or n > 20:
        return -1, 0
    if quoted:
        if j >= e or _at(buf, j) != 0x22:
            return -1, 0
        return j + 1, v
    if n > 1 and _at(buf, i) == 0x30:
        return -1, 0  # not a JSON int
    if j < e and (_at(buf, j) == 0x2E or _at(buf, j) == 0x65 or _at(buf, j) == 0x45):
        return -1, 0
    return j, v


_BUY = np.frombuffer(b'"buy"', np.uint8)
_SELL = np.frombuffer(b'"sell"', np.uint8)


@njit(cache=True, inline="always")
def _buy_sell(buf, i, e):
    """`"buy"` -> (end, 0), `"sell"` -> (end, 1); (-1, 0) otherwise."""
    j = _literal(buf, i, e, _BUY)
    if j >= 0:
        return j, 0
    return _literal(buf, i, e, _SELL), 1


@njit(cache=True)
def _next_member(buf, i, e, close):
    """After a member: (index after `,` and whitespace, False), (index past `close`, True), or (-1, False)."""
    i = _ws(buf, i, e)
    if i >= e:
        return -1, False
    if _at(buf, i) == close:
        return i + 1, True
    if _at(buf, i) != 0x2C:
        return -1, False
    return _ws(buf, i + 1, e), False


# ------------------------------------------------------------------------------------------ frames
@njit(cache=True)
def _trade(buf, i, e, cols, row):
    """Trade object at buf[i] into cols[:, row] (side = the trade's type: buy 0, sell 1); end or -1."""
    i = _ws(buf, i + 1, e)
    seen = 0
    while True:
        j = _string(buf, i, e)
        if j < 0:
            return -1
        k = _key(buf, i + 1, j)
        i = _colon(buf, j + 1, e)
        if i < 0:
            return -1
        if k == TID or k == O_ID or k == TYPE or k == PRICE or k == AMOUNT:
            if seen & (1 << k):
                return -1
            seen |= 1 << k
        if k == TID or k == O_ID:
            i, v = _id(buf, i, e)
            cols[C_TRADE if k == TID else C_ORDER, row] = v
        elif k == TYPE:
            i, t = _buy_sell(buf, i, e)
            cols[C_SIDE, row] = t
        elif k == PRICE or k == AMOUNT:
            c0 = C_P_OFF if k == PRICE else C_A_OFF
            i, off, n, hi, lo = _decimal(buf, i, e)
            if hi == 0 and lo == 0:  # fills must be > 0
                return -1
            cols[c0, row], cols[c0 + 1, row], cols[c0 + 2, row], cols[c0 + 3, row] = off, n, hi, lo
        else:
            i = _skip(buf, i, e)
        if i < 0:
            return -1
        i, done = _next_member(buf, i, e, 0x7D)
        if i < 0:
            return -1
        if done:
            return i if seen == _TRADE_KEYS else -1


@njit(cache=True)
def _trades(buf, i, e, cols, row):
    """Trades list at buf[i] into rows from `row`: (end, next free row); end -1 when refused."""
    i = _ws(buf, i + 1, e)
    if i < e and _at(buf, i) == 0x5D:
        return i + 1, row
    while True:
        if i >= e or _at(buf, i) != 0x7B:
            return -1, row
        i = _trade(buf, i, e, cols, row)
        if i < 0:
            return -1, row
        row += 1
        i, done = _next_member(buf, i, e, 0x5D)
        if i < 0 or done:
            return i, row


@njit(cache=True)
def _book(buf, i, e, need_cancel_id, blob, pair0, pair1, cols, row, frame):
    """Message object at buf[i] (event pair blob[pair0:pair1]) into event rows from `row`: (end, next free row, ts ns,
    taker), end -1 when refused."""
    i = _ws(buf, i + 1, e)
    seen = 0
    ts = oid = typ = 0
    p_off = p_len = p_hi = p_lo = a_off = a_len = a_hi = a_lo = 0
    cid_ok = pair_ok = False
    first, end_row = row, row
    while True:
        j = _string(buf, i, e)
        if j < 0:
            return -1, row, 0, 0
        k = _key(buf, i + 1, j)
        if k > PAIR:
            k = -1  # trade-only keys are unknown here
        i = _colon(buf, j + 1, e)
        if i < 0:
            return -1, row, 0, 0
        if k >= 0:
            if seen & (1 << k):
                return -1, row, 0, 0
            seen |= 1 << k
        if k == SUCCESS or k == CANCELLED:  # must be true (Python: `is not True` raises)
            i = _literal(buf, i, e, _TRUE)
        elif k == TRADES:
            if _at(buf, i) != 0x5B:
                return -1, row, 0, 0
            i, end_row = _trades(buf, i, e, cols, first)
        elif k == DATE:
            i, ts = _timestamp(buf, i, e)
        elif k == OID:
            i, oid = _id(buf, i, e)
        elif k == TYPE:
            i, typ = _buy_sell(buf, i, e)
        elif k == PRICE:
            i, p_off, p_len, p_hi, p_lo = _decimal(buf, i, e)
        elif k == AMOUNT:
            i, a_off, a_len, a_hi, a_lo = _decimal(buf, i, e)
        elif k == CANCEL_ID:  # validated on cancels only
            j, _ = _id(buf, i, e)
            cid_ok = j >= 0
            i = j if cid_ok else _skip(buf, i, e)
        elif k == PAIR:  # checked on cancels only
            j = _string(buf, i, e)
            pair_ok = j >= 0 and _same(buf, i + 1, j, blob, pair0, pair1)
            i = j + 1 if pair_ok else _skip(buf, i, e)
        else:
            i = _skip(buf, i, e)
        if i < 0:
            return -1, row, 0, 0
        i, done = _next_member(buf, i, e, 0x7D)
        if i < 0:
            return -1, row, 0, 0
        if done:
            break
    if (seen & _ORDER_KEYS) != _ORDER_KEYS:
        return -1, row, 0, 0
    if seen & (1 << CANCELLED):
        has_cid = (seen & (1 << CANCEL_ID)) != 0
        if seen & (1 << TRADES) or (has_cid and not cid_ok) or (need_cancel_id and not has_cid):
            return -1, row, 0, 0
        if (seen & (1 << PAIR)) != 0 and not pair_ok:
            return -1, row, 0, 0
        action, taker = 0x43, -1
    elif seen & (1 << TRADES):
        for r in range(first, end_row):  # fills: makers on the other side
            if cols[C_SIDE, r] != 1 - typ:
                return -1, row, 0, 0
            cols[C_FRAME, r], cols[C_ACTION, r], cols[C_TAKER, r] = frame, 0x46, oid
        if a_hi == 0 and a_lo == 0:
            return i, end_row, ts, typ
        if p_hi == 0 and p_lo == 0:  # a resting order's price must be > 0
            return -1, row, 0, 0
        action, taker = 0x41, typ
    else:
        return -1, row, 0, 0
    r = end_row
    cols[C_FRAME, r], cols[C_ACTION, r], cols[C_SIDE, r], cols[C_ORDER, r] = frame, action, typ, oid
    cols[C_TRADE, r], cols[C_TAKER, r] = -1, -1
    cols[C_P_OFF, r], cols[C_P_LEN, r], cols[C_P_HI, r], cols[C_P_LO, r] = p_off, p_len, p_hi, p_lo
    cols[C_A_OFF, r], cols[C_A_LEN, r], cols[C_A_HI, r], cols[C_A_LO, r] = a_off, a_len, a_hi, a_lo
    return i, r + 1, ts, taker


@njit(cache=True)
def _hash(buf, a, b):
    """Hash of buf[a:b] for the Names table (non-negative)."""
    h = b - a
    for k in range(a, b):
        h = (h * 31 + _at(buf, k)) & 0xFFFFFFFFFFFF
    return h


@njit(cache=True)
def _name_index(buf, a, b, blob, noff, table):
    """Index of the name buf[a:b] in the Names hash table, or -1."""
    mask = table.size - 1
    slot = _hash(buf, a, b) & mask
    while table[slot] >= 0:
        k = table[slot]
        if _same(buf, a, b, blob, noff[k], noff[k + 1]):
            return k
        slot = (slot + 1) & mask
    return -1


@njit(cache=True)
def _frame(buf, s, e, need_cancel_id, blob, noff, table, cols, row, frame):
    """Frame buf[s:e] (`42["name",{...}]`) into rows from `row`: (next free row, name index, ts, taker), row -1
    when refused."""
    if e - s < 2 or _at(buf, s) != 0x34 or _at(buf, s + 1) != 0x32:
        return -1, 0, 0, 0
    i = _ws(buf, s + 2, e)
    if i >= e or _at(buf, i) != 0x5B:
        return -1, 0, 0, 0
    i = _ws(buf, i + 1, e)
    j = _string(buf, i, e)
    if j < 0:
        return -1, 0, 0, 0
    name = _name_index(buf, i + 1, j, blob, noff, table)
    i = _ws(buf, j + 1, e)
    if name < 0 or i >= e or _at(buf, i) != 0x2C:
        return -1, 0, 0, 0
    i = _ws(buf, i + 1, e)
    if i >= e or _at(buf, i) != 0x7B:
        return -1, 0, 0, 0
    i, end_row, ts, taker = _book(buf, i, e, need_cancel_id, blob, noff[name] + 5, noff[name + 1], cols, row, frame)
    if i < 0:
        return -1, 0, 0, 0
    i = _ws(buf, i, e)
    if i >= e or _at(buf, i) != 0x5D or _ws(buf, i + 1, e) != e:
        return -1, 0, 0, 0
    return end_row, name, ts, taker


@njit(cache=True)
def _capacity(starts, ends, size):
    """Event rows enough for the frames: one A or C per frame, plus at most one F per trade object's bytes."""
    cap = starts.size + 1
    for f in range(starts.size):
        if 0 <= starts[f] <= ends[f] <= size:
            cap += (ends[f] - starts[f]) // _MIN_TRADE_BYTES
    return cap


@njit(cache=True)
def _scan(buf, starts, ends, need_cancel_id, blob, noff, table, ok, pair, ts, taker, ev_off, cols):
    """Every frame into the per-frame arrays and event rows; returns the number of events."""
    buf, blob, noff, table, cols = _unowned(buf), _unowned(blob), _unowned(noff), _unowned(table), _unowned(cols)
    row = 0
    for f in range(starts.size):
        ev_off[f] = row
        s, e = starts[f], ends[f]
        if 0 <= s <= e <= buf.size:
            end_row, name, t, tk = _frame(buf, s, e, need_cancel_id, blob, noff, table, cols, row, f)
            if end_row >= 0:
                ok[f], pair[f], ts[f], taker[f] = True, name, t, tk
                row = end_row
    ev_off[starts.size] = row
    return row


# -------------------------------------------------------------------------------------------- API
class Names:
    """The event names the caller records (`book_<PAIR>`) as a hash table for the compiled code; `Scan.pair` indexes
    `names`. A name `btcalpha.pair_of_event` rejects never matches (its frames are refused)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        encoded = [n.encode() for n in self.names]
        self.blob = np.frombuffer(b"".join(encoded), np.uint8)
        self.noff = np.cumsum([0] + [len(b) for b in encoded]).astype(np.int64)
        self.table = np.full(max(8, 1 << (2 * len(encoded)).bit_length()), -1, np.int64)
        mask = self.table.size - 1
        for k, n in enumerate(self.names):
            try:
                pair_of_event(n)
            except ParseError:
                continue
            slot = _hash(self.blob, self.noff[k], self.noff[k + 1]) & mask
            while self.table[slot] >= 0 and self.names[self.table[slot]] != n:
                slot = (slot + 1) & mask
            if self.table[slot] < 0:
                self.table[slot] = k


def _readonly(a: np.ndarray, dtype: type) -> np.ndarray:
    """a as a contiguous read-only array of dtype (one compiled signature for every caller)."""
    a = np.ascontiguousarray(a, dtype)
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


def scan_frames(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, names: Names, need_cancel_id: bool) -> Scan:
    """Frames buf[starts[i]:ends[i]] (uint8 buffer, int64 offsets) scanned into columns; refused ones have no events."""
    buf, starts, ends = _readonly(buf, np.uint8), _readonly(starts, np.int64), _readonly(ends, np.int64)
    if starts.shape != ends.shape or starts.ndim != 1:
        raise ValueError("starts and ends must be 1-d arrays of the same length")
    n = starts.size
    ok = np.zeros(n, np.bool_)
    pair = np.full(n, -1, np.int32)
    ts = np.zeros(n, np.int64)
    taker = np.full(n, -1, np.int8)
    ev_off = np.zeros(n + 1, np.int64)
    cols = np.empty((_N_COLS, _capacity(starts, ends, buf.size)), np.int64)
    m = _scan(buf, starts, ends, bool(need_cancel_id), names.blob, names.noff, names.table, ok, pair, ts, taker,
              ev_off, cols)
    c = cols[:, :m]
    return Scan(ok=ok, pair=pair, ts_event=ts, taker=taker, ev_off=ev_off, frame=c[C_FRAME].astype(np.int32),
                action=c[C_ACTION].astype(np.uint8), side=c[C_SIDE].astype(np.int8), order_id=c[C_ORDER],
                trade_id=c[C_TRADE], taker_order_id=c[C_TAKER], price_off=c[C_P_OFF],
                price_len=c[C_P_LEN].astype(np.int32), amount_off=c[C_A_OFF], amount_len=c[C_A_LEN].astype(np.int32),
                price_hi=c[C_P_HI], price_lo=c[C_P_LO], amount_hi=c[C_A_HI], amount_lo=c[C_A_LO])


def warm() -> None:
    """Compile (or load from numba's cache) the kernels on a tiny input, so the first real batch does not stall."""
    frame = b'42["book_A_B",{"date":1700000000.5,"oid":1,"type":"buy","price":"1","amount":1,"trades":[]}]'
    buf = np.frombuffer(frame, np.uint8)
    scan_frames(buf, np.zeros(1, np.int64), np.full(1, buf.size, np.int64), Names(["book_A_B"]), False)
