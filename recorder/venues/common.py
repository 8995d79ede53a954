"""Helpers shared by the venue adapters: exact decimals, timestamps, JSON, pairs, levels, list/trade/candle walking.

Pure functions, no I/O. Everything that cannot be parsed raises rows.ParseError with a reason.

Decimals. Prices and amounts travel as decimal text and are stored as DECIMAL(38, 18), so `dec`
accepts at most 20 integer and 18 fractional digits (trailing fractional zeros beyond 18 are
dropped: value unchanged). Plain text (`-?d+[.d+]`) is returned unchanged; any other valid form
(exponent, leading `+`, `.5`, `5.`, leading zeros beyond 20 digits) is normalised to plain
positional text of the same value.

Floats (JSON numbers already decoded by orjson) become `repr(x)`, the shortest text that reads
back to the same double (the nearest such text when several tie). That recovers the venue's value
exactly whenever the venue wrote at most 15 significant digits (trailing zeros aside: `0.10000000`
comes back as `0.1`). With 16-17 digits the double may print back as a different text of the same
length: BTC-Alpha's doc date 1485686413.5688234 comes back as 1485686413.5688233 (100 ns off), while
1485686507.0944622 is recovered. With more than 17 digits the extra digits were lost by the JSON
decoder before we saw them. This is the one documented residual; values sent as strings (every 2024
recording) are exact.

Timestamps are int ns UTC computed from the decimal text by digit shifting (never float
arithmetic); digits below 1 ns are truncated. Anything outside [2009-01-01, 2100-01-01) is
rejected as absurd.
"""
from __future__ import annotations

import functools
import re
from decimal import Context, Decimal, Inexact, InvalidOperation, DivisionByZero
from typing import Callable, Iterable, TypeVar

import orjson

from recorder.rows import Candle, Level, ParseError
from schemas import PAIR_RE

__all__ = [
    "ParseError", "dec", "dec_sign", "is_pos", "int_id", "ts_seconds", "ts_ms", "loads", "guard", "shape_error", "at", "SHAPE_ERRORS",
    "canon_pair", "pair_lower", "pair_from_lower", "pair_joined", "split_market", "build_levels",
    "each", "sides", "taker", "trade_pos", "candle",
    "EXACT", "TS_MIN_NS", "TS_MAX_NS", "KNOWN_QUOTES", "RESOLUTIONS",
]

#: 2009-01-01T00:00:00Z and 2100-01-01T00:00:00Z in ns: the plausible range of any venue time.
TS_MIN_NS = 1_230_768_000 * 1_000_000_000
TS_MAX_NS = 4_102_444_800 * 1_000_000_000
_TS_MIN_S, _TS_MAX_S = float(TS_MIN_NS // 1_000_000_000), float(TS_MAX_NS // 1_000_000_000)
#: Candle resolutions the candles table accepts.
RESOLUTIONS = ("1m", "5m", "15m", "30m", "1h", "3h", "4h", "6h", "12h", "1d", "1w", "1M")
_INT64_MAX = (1 << 63) - 1

_PLAIN = re.compile(r"-?[0-9]{1,20}(?:\.[0-9]{1,18})?").fullmatch
_GENERAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?").fullmatch
#: Wide exact arithmetic for sums and the exact-division check (never rounds silently).
_CTX = Context(prec=80, traps=[InvalidOperation, DivisionByZero, Inexact])
#: Public name of the exact context: any operation whose result would be rounded raises decimal.Inexact.
EXACT = _CTX


def _short(x: object) -> str:
    try:
        r = repr(x)
    except ValueError:  # an int too long to print
        return f"<{type(x).__name__} too large>"
    return r if len(r) <= 40 else r[:37] + "..."


def _dec_slow(s: str, what: str) -> str:
    if not _GENERAL(s):
        raise ParseError(f"{what}: not a decimal number: {_short(s)}")
    d = Decimal(s)
    if not d:
        return "0"
    adj = d.adjusted()
    if adj >= 20:
        raise ParseError(f"{what}: decimal out of range (more than 20 integer digits): {_short(s)}")
    if adj < -18:
        raise ParseError(f"{what}: decimal has more than 18 fractional digits: {_short(s)}")
    try:
        d = _CTX.normalize(d)
    except ArithmeticError:  # more than 80 significant digits
        d = None
    if d is None or d.as_tuple().exponent < -18:
        raise ParseError(f"{what}: decimal has more than 18 fractional digits: {_short(s)}")
    return format(d, "f")


def dec(x: object, what: str = "number") -> str:
    """Exact decimal text of a venue number (str, int or float); ParseError naming `what` otherwise."""
    t = type(x)
    if t is str:
        return x if _PLAIN(x) else _dec_slow(x, what)  # type: ignore[arg-type]
    if t is float:
        s = repr(x)
        if "e" in s or "n" in s:  # exponent form, or nan / inf
            if "n" in s:
                raise ParseError(f"{what}: not a finite number: {s}")
            return _dec_slow(s, what)
        # repr without exponent is -?d+.d+ with at most 17 integer digits: only the fraction length can be off.
        return s if len(s) - s.index(".") <= 19 else _dec_slow(s, what)
    if t is int:
        if -10**20 < x < 10**20:  # type: ignore[operator]
            return str(x)
        raise ParseError(f"{what}: decimal out of range (more than 20 integer digits): {_short(x)}")
    raise ParseError(f"{what}: expected a number, got {type(x).__name__} {_short(x)}")


def dec_sign(s: str) -> int:
    """Sign (-1, 0, 1) of a plain decimal text as returned by `dec`."""
    if s.strip("-0.") == "":
        return 0
    return -1 if s[0] == "-" else 1


def is_pos(s: str) -> bool:
    """True when the plain decimal text (from `dec`) is > 0."""
    return s[0] != "-" and s.strip("0.") != ""


def int_id(x: object, what: str = "id") -> int:
    """A venue integer id (JSON int or digit string) as int64; ParseError otherwise."""
    t = type(x)
    if t is int:
        if 0 <= x <= _INT64_MAX:  # type: ignore[operator]
            return x  # type: ignore[return-value]
    elif t is str and x.isascii() and x.isdigit():  # type: ignore[union-attr]
        v = int(x)  # type: ignore[arg-type]
        if v <= _INT64_MAX:
            return v
    raise ParseError(f"{what}: expected a non-negative int64 id, got {type(x).__name__} {_short(x)}")


_POW10 = [10**i for i in range(16)]


def _ns(x: object, what: str, exp: int, allow_ks: bool = False) -> int:
    t = type(x)
    if t is int:
        ip, fp = str(x), ""
    else:
        s = repr(x) if t is float else x
        if t is str or t is float:
            ip, _, fp = s.partition(".")  # type: ignore[union-attr]
        if not (t is str or t is float) or not (ip.isdigit() and (not fp or fp.isdigit()) and s.isascii()
                                                and len(ip) <= 20):
            s = dec(x, what)  # raises for garbage; normalises exponents, signs, '.5'
            if s[0] == "-":
                raise ParseError(f"{what}: negative timestamp {s}")
            ip, _, fp = s.partition(".")
    if allow_ks and len(ip.lstrip("0")) <= 8:  # < 1e8 s: BTC-Alpha's 2024 "seconds / 1000" text
        exp += 3
    ns = int(ip) * _POW10[exp]
    if fp:
        ns += int(fp[:exp].ljust(exp, "0"))
    if TS_MIN_NS <= ns < TS_MAX_NS:
        return ns
    raise ParseError(f"{what}: absurd timestamp {x if t is str else repr(x)} (outside 2009..2100 after normalising)")


def ts_seconds(x: object, what: str = "timestamp", allow_ks: bool = False) -> int:
    """Unix seconds (int, float or decimal text) to exact int ns.

    allow_ks: a value < 1e8 is read as kiloseconds (BTC-Alpha 2024 `"1710264.956584"` = 1710264956.584 s,
    exchanges.md §1.4); such values are before 1973 as seconds, so the rule is unambiguous.
    """
    if type(x) is float and _TS_MIN_S <= x < _TS_MAX_S:  # hot path: float seconds in range; repr has no exponent
        ip, _, fp = repr(x).partition(".")
        return int(ip) * 1_000_000_000 + int(fp[:9].ljust(9, "0"))
    return _ns(x, what, 9, allow_ks)


def ts_ms(x: object, what: str = "timestamp") -> int:
    """Unix milliseconds (int, float or decimal text) to exact int ns."""
    return _ns(x, what, 6)


def loads(b: bytes | bytearray | memoryview | str) -> object:
    """orjson.loads with ParseError (and the decoder's reason) on bad JSON."""
    try:
        return orjson.loads(b)
    except orjson.JSONDecodeError as e:
        raise ParseError(f"bad JSON: {e}") from None
    except TypeError as e:
        raise ParseError(f"bad JSON input type: {e}") from None


F = TypeVar("F", bound=Callable)
T = TypeVar("T")


def shape_error(label: str, e: BaseException) -> ParseError:
    """The ParseError for an exception a parser did not check explicitly (used by `guard` and hot paths)."""
    if isinstance(e, ParseError):
        return e
    if isinstance(e, KeyError):
        return ParseError(f"{label}: missing key {e}")
    if isinstance(e, (TypeError, AttributeError, IndexError)):
        return ParseError(f"{label}: wrong shape ({e})")
    return ParseError(f"{label}: bad value ({type(e).__name__}: {e})")


_FIELD_MSG = re.compile(r"[A-Za-z_][\w.\[\]]*: ").match


def at(prefix: str, e: BaseException) -> ParseError:
    """Re-anchor an item's error under its position: `trades[0]` + `price: ...` -> `trades[0].price: ...`."""
    if isinstance(e, KeyError):
        return ParseError(f"{prefix}: missing key {e}")
    msg = str(e)
    return ParseError(f"{prefix}.{msg}" if _FIELD_MSG(msg) else f"{prefix}: {msg}")


#: Exceptions `guard` turns into ParseError.
SHAPE_ERRORS = (KeyError, TypeError, AttributeError, IndexError, ValueError, ArithmeticError, RecursionError)


def guard(label: str) -> Callable[[F], F]:
    """Decorator: any shape error a parser did not check explicitly becomes a ParseError naming `label`."""
    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*a, **k):
            try:
                return fn(*a, **k)
            except ParseError:
                raise
            except SHAPE_ERRORS as e:
                raise shape_error(label, e) from None
        return inner  # type: ignore[return-value]
    return wrap


# --------------------------------------------------------------------------------------- pairs
#: Quote currencies used to split joined markets (`BTCPLN`) when no pair list is given; longest first.
KNOWN_QUOTES = ("USDT", "USDC", "BUSD", "PLN", "EUR", "USD", "GBP", "TWD", "BTC", "ETH")


def canon_pair(s: object) -> str:
    """Canonical `BASE_QUOTE` (upper case, matches schemas.PAIR_RE, one underscore) or ParseError."""
    if type(s) is not str:
        raise ParseError(f"pair: expected a string, got {type(s).__name__} {_short(s)}")
    p = s.upper()  # type: ignore[union-attr]
    if "_" in p and PAIR_RE.match(p) and p.isascii():
        return p
    raise ParseError(f"pair: not a BASE_QUOTE pair: {_short(s)}")


def pair_lower(pair: str) -> str:
    """Canonical pair to BitoPro's REST id: `BTC_USDT` -> `btc_usdt`."""
    return canon_pair(pair).lower()


def pair_from_lower(s: object) -> str:
    """BitoPro's REST id (any case) to canonical: `btc_usdt` -> `BTC_USDT`."""
    return canon_pair(s)


def pair_joined(pair: str, sep: str = "") -> str:
    """Canonical pair to a joined market code: `BTC_PLN` -> `BTCPLN` (sep="") or `BTC-PLN` (sep="-")."""
    base, quote = canon_pair(pair).split("_")
    return f"{base}{sep}{quote}"


def split_market(market: object, pairs: Iterable[str] | None = None) -> str:
    """Market code `BTCPLN`, `BTC-PLN` or `btc_pln` to canonical `BTC_PLN`.

    Joined codes are split with `pairs` (known canonical pairs) when given, else by the
    longest matching quote in KNOWN_QUOTES.
    """
    if type(market) is not str or not market:
        raise ParseError(f"market: expected a market code, got {_short(market)}")
    m = market.upper()  # type: ignore[union-attr]
    if "-" in m or "_" in m:
        return canon_pair(m.replace("-", "_"))
    if pairs is not None:
        for p in pairs:
            c = canon_pair(p)
            if c.replace("_", "") == m:
                return c
        raise ParseError(f"market: {market!r} is not one of the known pairs")
    for q in KNOWN_QUOTES:
        if m.endswith(q) and len(m) > len(q):
            return canon_pair(f"{m[:-len(q)]}_{q}")
    raise ParseError(f"market: cannot split {market!r} (unknown quote currency)")


# -------------------------------------------------------------------------------------- levels
def build_levels(side: str, entries: list[tuple[str, str, int | None]], aggregate: bool = False,
                 count_entries: bool = False) -> list[Level]:
    """Sort (price, amount, count) entries best first into Levels (bid: high first, ask: low first).

    Equal prices are summed when `aggregate` (count = entries summed if `count_entries`, else the
    venue counts added up when all present) and rejected otherwise. Prices must be > 0, amounts >= 0.
    """
    for price, amount, _ in entries:
        if price[0] == "-" or price.strip("0.") == "":  # not is_pos(price), inlined: once per level on hot paths
            raise ParseError(f"{side} level: price must be > 0, got {price}")
        if amount[0] == "-" and dec_sign(amount) < 0:
            raise ParseError(f"{side} level: negative amount {amount}")
    # Fast path: float() is monotone, so strictly ordered floats mean strictly ordered decimals.
    f = [float(e[0]) for e in entries]
    if side == "bid":
        ordered = all(a > b for a, b in zip(f, f[1:]))
    else:
        ordered = all(a < b for a, b in zip(f, f[1:]))
    if ordered:
        return [Level(side, i, p, a, 1 if count_entries else c) for i, (p, a, c) in enumerate(entries)]
    keyed = [(Decimal(p), p, a, c) for p, a, c in entries]
    keyed.sort(key=lambda e: e[0], reverse=(side == "bid"))
    out: list[Level] = []
    prev = None
    for d, price, amount, count in keyed:
        if d == prev:
            if not aggregate:
                raise ParseError(f"{side} level: duplicate price {price}")
            last = out[-1]
            last.amount = dec(format(_CTX.add(Decimal(last.amount), Decimal(amount)), "f"), f"{side} level amount")
            if count_entries:
                last.count = (last.count or 0) + 1
            elif last.count is not None and count is not None:
                last.count += count
            else:
                last.count = None
            continue
        out.append(Level(side, len(out), price, amount, 1 if count_entries else count))
        prev = d
    return out


# ------------------------------------------------------------------------------------ walkers
def each(rows: object, fn: Callable[[object], T], label: str = "", what: str | None = None,
         objects: bool = True) -> list[T]:
    """[fn(item) for item in rows] with each item's error anchored at `label[i]`; rows must be a list (named
    `what`, default `label`) and, when `objects`, every item a JSON object."""
    if type(rows) is not list:
        raise ParseError(f"{label if what is None else what}: expected a list, got {type(rows).__name__}")
    out: list[T] = []
    try:
        for r in rows:
            if objects and type(r) is not dict:
                raise ParseError(f"expected an object, got {type(r).__name__}")
            out.append(fn(r))
    except (ParseError, KeyError) as e:
        raise at(f"{label}[{len(out)}]", e) from None
    return out


def sides(d: dict, keys: Iterable[tuple[str, str]], entry: Callable[[object], tuple[str, str, int | None]],
          aggregate: bool = False, count_entries: bool = False, objects: bool = True) -> list[Level]:
    """Levels of each (side, key) list of `d` in turn, `entry(item)` giving (price, amount, count); items are
    walked by `each` (errors at `key[i]`), the rest are `build_levels`'s options."""
    levels: list[Level] = []
    for side, key in keys:
        levels += build_levels(side, each(d[key], entry, key, None, objects), aggregate, count_entries)
    return levels


def taker(x: object, what: str = "type") -> str:
    """A taker side sent as `buy` / `sell`, returned as is; ParseError naming `what` otherwise."""
    if x not in ("buy", "sell"):
        raise ParseError(f"{what}: unknown side {x!r} (expected buy or sell)")
    return x  # type: ignore[return-value]


def trade_pos(price: str, amount: str) -> None:
    """ParseError unless a trade's price and amount (decimal text from `dec`) are both > 0."""
    if price[0] == "-" or amount[0] == "-" or price.strip("0.") == "" or amount.strip("0.") == "":  # is_pos, inlined
        raise ParseError(f"trade price and amount must be > 0, got {price} x {amount}")


def candle(resolution: str, c: dict, keys: Iterable[str], ts_fn: Callable[[dict], int]) -> Candle:
    """A Candle from object `c`: `keys` name open, high, low, close, volume (each >= 0); `ts_fn(c)` is the open time."""
    vals = [dec(c[k], k) for k in keys]
    ts = ts_fn(c)
    if any(v[0] == "-" and dec_sign(v) < 0 for v in vals):
        raise ParseError("negative candle value")
    return Candle(resolution, ts, *vals)
