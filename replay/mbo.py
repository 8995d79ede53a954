"""Import a market-by-order stream into the dataset as `book_events`: Databento MBO (DBN, CSV, Parquet) or a
generic table.

Formats (`--format`, default `generic`; `.dbn` and `.dbn.zst` files are always Databento):
- **databento**: Databento's MBO schema, with Databento's semantics. DBN files are decoded by `databento-dbn`,
  Databento's own decoder (no client, no network). CSV/Parquet need columns `ts_recv, action, side, price, size,
  order_id`, optionally `ts_event, flags, instrument_id` (as Databento's CSV export writes them); price is
  decimal text, or an integer in units of 1e-9 (Databento's fixed-point, unpretty `price`); ts is integer ns or
  ISO-8601 text. Per record action:
  - `A` add (`S`, a snapshot order, when it carries F_SNAPSHOT; an R is written first if the snapshot did not
    start with one);
  - `C` cancel of `size`: the whole order (`C`) or part of it (`P`);
  - `M` modify, absolute: the order now rests at `price` with `size`. A smaller size at the same price keeps
    queue priority (`P` of the difference); a price change or a larger size loses it (`C` then `A`). A modify of
    an unknown order is an add, as in Databento's reference book;
  - `R` clears the book (`R`);
  - `T` trade and `F` fill do NOT change the book (Databento sends explicit `C`/`M` records for what they
    take), and `N` carries only flags: none of the three writes a book row. Each `T` becomes a `trades` row
    (aggressor side from its side, source `import`).
  Flags: records up to one carrying F_LAST form one event, whose rows share `msg_seq` (the seq of its first
  row). F_MAYBE_BAD_BOOK writes a `gap` row to `sessions`: replay marks the book not known exact from there
  until the next snapshot.
- **generic**: columns `ts, action, side, price, size, order_id`:
  - ts: integer epoch nanoseconds, or ISO-8601 text in UTC (`2026-11-21T14:03:07.250Z`, `Z` optional).
  - action (case-insensitive): add = A, add, new, insert; full cancel = C, cancel, delete, del, D, remove, X;
    partial cancel = P, partial, reduce, modify, M (size is the amount removed, NOT Databento's absolute
    modify); execution against order_id = F, fill, execute, execution, E, trade, T, match (it reduces the order,
    NOT Databento's no-book-change trade).
  - side (case-insensitive): bid, b, buy; ask, a, sell, s, offer.
  - price, size: exact decimal text (CSV) or DECIMAL/integer/text (Parquet); floats are read by their
    shortest repr. Cancels and executions may leave side and price empty: they come from the order's add.

Rows must be in time order (ts / ts_recv). Output: a leading R, the rows in file order; every later hour starts
with R + S rows (the book at the hour boundary, replayed with the engine) so each hour replays alone, unless the
book is not known exact there (then the hour waits for the stream's next snapshot, as replay marks it).

Safety: the target is validated as the recorder validates venue and pair names, nothing is written outside
`<root>/book_events/` (and `<root>/sessions/` for gap rows), a pair that already holds book data is refused
unless `replace`, seqs come from the root's seq lease (`_state/seq`) like any writer's, and the import refuses
to run while another writer (a recorder) holds the root unless it is given a writer id of its own.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from recorder.store import writers
from recorder.store.seq import SeqLease
from recorder.store.writer import StoreError
from replay import book as B
from replay import kernels as K
from replay import outputs, source
from schemas import DEC, EXCHANGE_RE, TABLES, TS, files, is_pair

COLUMNS = ("ts", "action", "side", "price", "size", "order_id")
DATABENTO_COLUMNS = ("ts_recv", "action", "side", "price", "size", "order_id")
FORMATS = ("generic", "databento")
ACTION_SPELLINGS = {
    "A": ("a", "add", "new", "insert"),
    "C": ("c", "cancel", "delete", "del", "d", "remove", "x"),
    "P": ("p", "partial", "reduce", "modify", "m"),
    "F": ("f", "fill", "execute", "execution", "e", "trade", "t", "match"),
}
SIDE_SPELLINGS = {"bid": ("bid", "b", "buy"), "ask": ("ask", "a", "sell", "s", "offer")}
#: Databento record flags (databento_dbn.F_*: the same values, kept here so CSV imports need no decoder).
F_LAST, F_SNAPSHOT, F_MAYBE_BAD_BOOK = 1 << 7, 1 << 5, 1 << 2
UNDEF_PRICE = (1 << 63) - 1
#: Databento's fixed-point price scale: integer prices are units of 1e-9.
PRICE_DIGITS = 9
#: Writer id the import holds while it writes, unless given one.
WRITER = "import_mbo"
GAP_STREAM = "mbo:book"


class MboError(ValueError):
    """The file cannot be imported (missing columns, unknown spellings, unordered time, unsafe target)."""


@dataclass
class Rows:
    """Book actions in output order as int64 columns: prices at 10**-pk, amounts at 10**-ak (-1: none)."""

    ts_event: np.ndarray
    ts_recv: np.ndarray
    act: np.ndarray
    side: np.ndarray
    oid: np.ndarray
    px: np.ndarray
    amt: np.ndarray
    pk: int
    ak: int
    #: per row: the index of its first row's event (rows of one F_LAST event share it)
    event: np.ndarray
    #: row positions before which a gap starts (F_MAYBE_BAD_BOOK), ascending
    gaps: np.ndarray
    #: Databento T records as `trades` rows (None: the format has no trades)
    trades: pa.Table | None = None

    def __len__(self) -> int:
        return len(self.act)


# ---------------------------------------------------------------- target checks


def check_target(root: Path, exchange: str, pair: str, replace: bool) -> list[Path]:
    """Validate venue and pair as the recorder does and refuse a pair that already holds book data (unless
    replace); returns the files replace would remove."""
    if not EXCHANGE_RE.fullmatch(exchange):
        raise MboError(f"bad --exchange {exchange!r}: lower-case letters and digits starting with a letter, "
                       f"2-32 long (like the recorder's venue names, e.g. btcalpha)")
    if not is_pair(pair):
        raise MboError(f"bad --pair {pair!r}: write BASE_QUOTE in upper case, e.g. BTC_USD")
    old = []
    for table in ("book_events", "book_levels"):
        for date in source.dates(root, table, exchange, pair):
            old += files.named_files(source.partition_dir(root, table, exchange, pair, date))
    if old and not replace:
        raise MboError(f"{exchange} {pair} already holds book data under {root} ({len(old)} file(s), e.g. "
                       f"{old[0].relative_to(root)}); pass --replace to replace it, or import under another "
                       f"--exchange/--pair")
    return old


def hold_root(root: Path, writer: str | None) -> int:
    """The import's writer lock (an fd); refuses while another writer holds the root unless given its own id."""
    if writer is None:
        busy = writers.held(root)
        if busy:
            raise MboError(f"writer(s) {', '.join(busy)} (a running recorder?) hold {root}; stop them, or pass "
                           f"--writer-id ID to import beside them under an id of its own")
    try:
        return writers.acquire(root, writer or WRITER)
    except StoreError as e:
        raise MboError(str(e)) from None


# ---------------------------------------------------------------- column readers


def _codes(col: pa.ChunkedArray, spellings: dict[str, tuple[str, ...]], what: str) -> np.ndarray:
    """Index into spellings' keys for every value (-1 for null); MboError on an unknown spelling."""
    words = [w for ws in spellings.values() for w in ws]
    code = np.array([i for i, ws in enumerate(spellings.values()) for _ in ws] + [-1], np.int64)
    low = pc.utf8_lower(col.cast(pa.string()))
    idx = pc.fill_null(pc.index_in(low, value_set=pa.array(words)), len(words)).to_numpy()
    bad = (idx == len(words)) & low.is_valid().to_numpy(zero_copy_only=False)
    if bad.any():
        raise MboError(f"unknown {what} {col[int(np.argmax(bad))].as_py()!r}; accepted: {', '.join(words)}")
    return code[idx]


def _decimal(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """Exact decimal128(38,18) from decimal, integer or text values."""
    if pa.types.is_floating(col.type):
        col = pa.chunked_array([pa.array([None if v is None else repr(v) for v in col.to_pylist()], pa.string())])
    try:
        return col.cast(DEC)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise MboError(f"price/size not exact decimals with at most 18 fractional digits: {e}") from None


def _ts(col: pa.ChunkedArray) -> np.ndarray:
    """Epoch ns from integer ns or ISO-8601 UTC text."""
    if pa.types.is_integer(col.type):
        return col.cast(pa.int64()).to_numpy()
    if pa.types.is_timestamp(col.type):
        return col.cast(TS).cast(pa.int64()).to_numpy()
    text = pc.replace_substring_regex(col.cast(pa.string()), "Z$", "")
    if pc.all(pc.match_substring_regex(text, r"^\d+$")).as_py():
        return text.cast(pa.int64()).to_numpy()
    try:
        return text.cast(pa.timestamp("ns")).cast(pa.int64()).to_numpy()
    except pa.ArrowInvalid as e:
        raise MboError(f"cannot read ts: {e}") from None


def _read_table(path: Path, columns: tuple[str, ...], text: tuple[str, ...]) -> pa.Table:
    """A CSV or Parquet file's table (CSV: `text` columns read as strings so decimals stay exact)."""
    if path.suffix.lower() == ".parquet":
        tab = pq.read_table(path)
    else:
        tab = pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(
            column_types={c: pa.string() for c in text}, strings_can_be_null=True))
    missing = [c for c in columns if c not in tab.column_names]
    if missing:
        raise MboError(f"{path.name}: missing column(s) {', '.join(missing)}; need {', '.join(columns)}")
    return tab


def read_mbo(path: Path) -> pa.Table:
    """A generic file's six columns (CSV read with text price/size so decimals stay exact)."""
    tab = _read_table(path, COLUMNS, ("price", "size", "ts"))
    return tab.select(list(COLUMNS)).set_column(5, "order_id", tab.column("order_id").cast(pa.int64()))


def _from_add(act, oid, *cols):
    """Fill each row's missing (-1) values from the latest earlier add of the same order id (vectorised)."""
    n = len(act)
    o = np.lexsort((np.arange(n), oid))
    so = oid[o]
    gstart = np.maximum.accumulate(np.where(np.r_[True, so[1:] != so[:-1]], np.arange(n), 0))
    last_add = np.maximum.accumulate(np.where(act[o] == K.A, np.arange(n), -1))
    src = np.where(last_add >= gstart, o[np.maximum(last_add, 0)], -1)
    out = []
    for c in cols:
        filled = c.copy()
        need = (c[o] < 0) & (src >= 0)
        filled[o[need]] = c[src[need]]
        out.append(filled)
    return out


def generic_rows(tab: pa.Table) -> Rows:
    """Rows of a generic MBO table (see the module docstring), one per input row."""
    if tab.num_rows == 0:
        raise MboError("the file has no rows")
    ts = _ts(tab.column("ts"))
    act = np.array([K.ACTIONS.index(a) for a in ACTION_SPELLINGS], np.int8)[_codes(tab.column("action"),
                                                                                ACTION_SPELLINGS, "action")]
    side = _codes(tab.column("side"), SIDE_SPELLINGS, "side")
    oidc = tab.column("order_id").cast(pa.int64())
    if oidc.null_count:
        raise MboError("order_id is empty on some rows")
    oid = oidc.to_numpy()
    px, pv, pk = B.exact_ints(_decimal(tab.column("price")))
    amt, av, ak = B.exact_ints(_decimal(tab.column("size")))
    side, px = _from_add(act, oid, side, np.where(pv, px, -1))
    n = len(act)
    return Rows(ts, ts, act, side, oid, px, np.where(av, amt, -1), pk, ak, np.arange(n), np.zeros(0, np.int64))


# ---------------------------------------------------------------- Databento


@dataclass
class Records:
    """Databento MBO records as columns: price in units of 10**-pk (UNDEF_PRICE: none), action/side as bytes."""

    ts_recv: np.ndarray
    ts_event: np.ndarray
    action: np.ndarray
    side: np.ndarray
    price: np.ndarray
    size: np.ndarray
    order_id: np.ndarray
    flags: np.ndarray
    instrument_id: np.ndarray
    pk: int = PRICE_DIGITS
    ak: int = 0


def read_dbn(path: Path, chunk: int = 16 << 20) -> Records:
    """MBO records of a DBN file (`.dbn`, or zstd-compressed `.dbn.zst`) decoded with databento-dbn."""
    try:
        import databento_dbn as dbn
    except ImportError:
        raise MboError("reading DBN needs databento-dbn: pip install 'booktape[databento]'") from None
    comp = dbn.Compression.ZSTD if path.name.lower().endswith(".zst") else dbn.Compression.NONE
    dec = dbn.DBNDecoder(compression=comp)
    cols: dict[str, list] = {k: [] for k in ("ts_recv", "ts_event", "action", "side", "price", "size", "order_id",
                                             "flags", "instrument_id")}
    other = 0
    with open(path, "rb") as f:
        while True:
            data = f.read(chunk)
            if data:
                dec.write(data)
            try:
                recs = dec.decode()
            except Exception as e:  # databento_dbn.DBNError
                raise MboError(f"{path.name}: not a readable DBN file: {e}") from None
            for r in recs:
                if not isinstance(r, dbn.MBOMsg):
                    other += not isinstance(r, dbn.Metadata)
                    continue
                cols["ts_recv"].append(r.ts_recv)
                cols["ts_event"].append(r.ts_event)
                cols["action"].append(str(r.action))
                cols["side"].append(str(r.side))
                cols["price"].append(r.price)
                cols["size"].append(r.size)
                cols["order_id"].append(r.order_id)
                cols["flags"].append(r.flags)
                cols["instrument_id"].append(r.instrument_id)
            if not data:
                break
    if not cols["ts_recv"]:
        raise MboError(f"{path.name}: no MBO records ({other} other record(s)); is it the mbo schema?")
    return Records(*(np.array(cols[k], np.int64) for k in ("ts_recv", "ts_event")),
                   np.array(cols["action"], "S1"), np.array(cols["side"], "S1"),
                   np.array(cols["price"], np.int64), np.array(cols["size"], np.int64),
                   np.array(cols["order_id"], np.uint64).astype(np.int64),
                   np.array(cols["flags"], np.int64), np.array(cols["instrument_id"], np.int64))


def read_databento_table(path: Path) -> Records:
    """MBO records of a Databento CSV or Parquet export (columns as Databento writes them)."""
    tab = _read_table(path, DATABENTO_COLUMNS, ("price", "size", "ts_recv", "ts_event", "action", "side"))
    n = tab.num_rows
    ts_recv = _ts(tab.column("ts_recv"))
    ts_event = _ts(tab.column("ts_event")) if "ts_event" in tab.column_names else ts_recv
    price = tab.column("price")
    if pa.types.is_integer(price.type) or (pa.types.is_string(price.type) and pc.all(pc.match_substring_regex(
            pc.fill_null(price, "0"), r"^-?\d+$")).as_py()):
        px = pc.fill_null(price.cast(pa.int64()), UNDEF_PRICE).to_numpy()
        pk = PRICE_DIGITS
    else:
        ints, valid, pk = B.exact_ints(_decimal(price))
        px = np.where(valid, ints, UNDEF_PRICE)
    size, sv, ak = B.exact_ints(_decimal(tab.column("size")))

    def chars(name: str) -> np.ndarray:
        return np.array([(v or "N")[:1].upper() for v in tab.column(name).cast(pa.string()).to_pylist()], "S1")

    def ints(name: str, default: int) -> np.ndarray:
        if name not in tab.column_names:
            return np.full(n, default, np.int64)
        return pc.fill_null(tab.column(name).cast(pa.int64()), default).to_numpy()

    return Records(ts_recv, ts_event, chars("action"), chars("side"), px, np.where(sv, size, 0),
                   ints("order_id", 0), ints("flags", 0), ints("instrument_id", 0), pk, ak)


def _databento_actions(r: Records) -> tuple[list, list]:
    """Databento semantics applied record by record (each record's mapping depends on the order's state):
    (rows as (record, action, side, order id, price, amount), gap row positions)."""
    A, C, P, R, S = K.A, K.C, K.P, K.R, K.S
    orders: dict[int, list] = {}  # order id -> [side, price, size]
    out: list[tuple] = []
    gaps: list[int] = []
    snap = False  # inside a snapshot: after an R, or an F_SNAPSHOT add
    sides = {b"B": 0, b"A": 1}
    act, sd, px, sz, oid, fl = (r.action.tolist(), r.side.tolist(), r.price.tolist(), r.size.tolist(),
                                r.order_id.tolist(), r.flags.tolist())
    for i in range(len(act)):
        a, o, f = act[i], oid[i], fl[i]
        if f & F_MAYBE_BAD_BOOK:
            gaps.append(len(out))
        p = -1 if px[i] == UNDEF_PRICE else px[i]
        s = sides.get(sd[i], -1)
        if a == b"A":
            if f & F_SNAPSHOT:
                if not snap:
                    out.append((i, R, -1, 0, -1, 0))
                    orders.clear()
                snap = True
                out.append((i, S, s, o, p, sz[i]))
            else:
                snap = False
                out.append((i, A, s, o, p, sz[i]))
            if o not in orders:
                orders[o] = [s, p, sz[i]]
            continue
        if a == b"R":
            out.append((i, R, -1, 0, -1, 0))
            orders.clear()
            snap = True
            continue
        if a not in (b"C", b"M"):
            continue  # T, F, N: no book change
        snap = False
        cur = orders.get(o)
        if a == b"C":
            if cur is None or sz[i] == 0 or sz[i] >= cur[2]:
                out.append((i, C, -1 if cur is None else cur[0], o, -1 if cur is None else cur[1],
                            sz[i] if cur is None else cur[2]))
                orders.pop(o, None)
            else:
                out.append((i, P, cur[0], o, cur[1], sz[i]))
                cur[2] -= sz[i]
        elif cur is None:
            out.append((i, A, s, o, p, sz[i]))
            orders[o] = [s, p, sz[i]]
        elif sz[i] == 0:
            out.append((i, C, cur[0], o, cur[1], cur[2]))
            del orders[o]
        elif cur[0] == s and cur[1] == p and sz[i] <= cur[2]:
            if sz[i] < cur[2]:
                out.append((i, P, s, o, p, cur[2] - sz[i]))
                cur[2] = sz[i]
        else:  # a new price or a larger size loses queue priority: out, and back in at the end
            out.append((i, C, cur[0], o, cur[1], cur[2]))
            out.append((i, A, s, o, p, sz[i]))
            orders[o] = [s, p, sz[i]]
    return out, gaps


def databento_rows(r: Records, instrument_id: int | None = None) -> Rows:
    """Rows of Databento MBO records (one instrument: the only one in the file, or the one given)."""
    ids = np.unique(r.instrument_id)
    if instrument_id is None and len(ids) > 1:
        raise MboError(f"the file holds {len(ids)} instruments ({', '.join(map(str, ids[:10]))}"
                       f"{', ...' if len(ids) > 10 else ''}); choose one with --instrument-id")
    if instrument_id is not None:
        if instrument_id not in ids:
            raise MboError(f"no records of instrument {instrument_id}; the file has {', '.join(map(str, ids[:10]))}")
        keep = r.instrument_id == instrument_id
        r = Records(*(getattr(r, k)[keep] for k in ("ts_recv", "ts_event", "action", "side", "price", "size",
                                                    "order_id", "flags", "instrument_id")), r.pk, r.ak)
    bad = np.nonzero(~np.isin(r.action, [b"A", b"C", b"M", b"R", b"T", b"F", b"N"]))[0]
    if len(bad):
        raise MboError(f"unknown Databento action {r.action[bad[0]].decode()!r} at record {bad[0] + 1}; "
                       f"accepted: A C M R T F N")
    rows, gaps = _databento_actions(r)
    if not rows:
        raise MboError("the file has no record that changes the book (only T, F or N)")
    rec, act, side, oid, px, amt = (np.array(c, np.int64) for c in zip(*rows))
    # F_LAST: an event ends at a record carrying it; rows share the index of their event's first row
    last = (r.flags & F_LAST) != 0
    ev_of_rec = np.concatenate(([0], np.cumsum(last[:-1])))
    ev = ev_of_rec[rec]
    first = np.r_[0, np.nonzero(ev[1:] != ev[:-1])[0] + 1]
    event = np.repeat(first, np.diff(np.r_[first, len(ev)]))
    pk = r.pk
    while pk > 0 and not np.any(px[px >= 0] % 10):  # the smallest scale that keeps prices exact
        px = np.where(px >= 0, px // 10, px)
        pk -= 1
    return Rows(r.ts_event[rec], r.ts_recv[rec], act.astype(np.int8), side, oid, px, amt, pk, r.ak, event,
                np.array(gaps, np.int64), _trades(r))


def _trades(r: Records) -> pa.Table:
    """`trades` rows of the T records (aggressor side from the record's side; seqs 0, 1, ... in file order; the
    trade id is `<ts_recv>-<record index>`, stable for the same file)."""
    i = np.nonzero(r.action == b"T")[0]
    n = len(i)
    side = np.array([{b"B": "buy", b"A": "sell"}.get(s) for s in r.side[i].tolist()], dtype=object)
    oid = r.order_id[i]
    valid = r.price[i] != UNDEF_PRICE
    cols = {
        "ts_event": pa.array(r.ts_event[i]).cast(TS), "ts_recv": pa.array(r.ts_recv[i]).cast(TS),
        "seq": pa.array(np.arange(n, dtype=np.int64)), "session": pa.array(np.zeros(n, np.int64)),
        "trade_id": pa.array([f"{t}-{k}" for t, k in zip(r.ts_recv[i].tolist(), i.tolist())], pa.string()),
        "price": B.to_dec(np.where(valid, r.price[i], 0), r.pk, valid), "amount": B.to_dec(r.size[i], r.ak),
        "taker_side": pa.array(side.tolist(), pa.string()), "maker_order_id": pa.nulls(n, pa.int64()),
        "taker_order_id": pa.array(oid, mask=oid == 0), "source": pa.array(["import"] * n, pa.string()),
    }
    return pa.Table.from_arrays([cols[c] for c in TABLES["trades"].schema.names], schema=TABLES["trades"].schema)


def read_rows(path: Path, fmt: str = "generic", instrument_id: int | None = None) -> Rows:
    """Rows of any supported file: `.dbn`/`.dbn.zst` are Databento; CSV/Parquet are read as `fmt`."""
    name = path.name.lower()
    if name.endswith((".dbn", ".dbn.zst")):
        return databento_rows(read_dbn(path), instrument_id)
    if fmt not in FORMATS:
        raise MboError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
    if fmt == "databento":
        return databento_rows(read_databento_table(path), instrument_id)
    if instrument_id is not None:
        raise MboError("--instrument-id applies to Databento files only")
    return generic_rows(read_mbo(path))


# ---------------------------------------------------------------- book_events


def to_tables(rows: Rows) -> tuple[pa.Table, pa.Table]:
    """(book_events, sessions) for Rows: leading R, rows in order, R + S at each hour boundary where the book
    is known exact, and a gap sessions row at each gap; seqs 0, 1, ... in that order (session 0)."""
    n = len(rows)
    if n == 0:
        raise MboError("the file has no rows")
    ts = rows.ts_recv
    if np.any(ts[1:] < ts[:-1]):
        raise MboError(f"ts goes back at row {int(np.argmax(ts[1:] < ts[:-1])) + 2}: rows must be in time order")
    if rows.act[0] != K.R:  # the book starts empty: a leading R says so
        rows = Rows(*(np.r_[v, getattr(rows, k)] for k, v in (("ts_event", rows.ts_event[0]), ("ts_recv", ts[0]),
                                                                ("act", K.R), ("side", -1), ("oid", 0), ("px", -1),
                                                                ("amt", 0))),
                    rows.pk, rows.ak, np.r_[-1, np.where(rows.event >= 0, rows.event + 1, -1)], rows.gaps + 1)
        n, ts = n + 1, rows.ts_recv
    av = rows.amt >= 0
    # the engine's view, to take each hour boundary's book: seq 2i for row i, a gap just before its row
    ev = B.Events.from_arrays(2 * np.arange(n, dtype=np.int64), rows.ts_event, ts, rows.act,
                              rows.side.astype(np.int8), rows.oid, rows.px, np.where(av, rows.amt, 0), rows.pk,
                              rows.ak, (ts[np.minimum(rows.gaps, n - 1)], 2 * rows.gaps - 1))
    rp = B.L3Replay(ev)
    hour = ts - ts % source.HOUR_NS
    cuts = np.nonzero(hour[1:] != hour[:-1])[0] + 1
    parts, prev = [], 0
    for c in list(cuts) + [n]:
        r = slice(prev, c)
        parts.append(_block(rows.act[r], rows.side[r], rows.oid[r], rows.px[r], rows.amt[r], rows.ts_event[r],
                            ts[r], rows.event[r], np.arange(prev, c)))
        if c < n:
            rp.run(c)
            if not rp.gap[c - 1]:
                bk = rp.book()
                k = len(bk.side)
                h = np.full(k + 1, hour[c])
                parts.append(_block(np.r_[K.R, np.full(k, K.S)], np.r_[-1, bk.side], np.r_[0, bk.order_id],
                                    np.r_[-1, bk.price], np.r_[0, bk.amount], h, h, np.full(k + 1, -1)))
        prev = c
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    m = len(cols["act"])
    # a gap row takes the seq just before the output row of the input row it precedes
    src = cols["src"]
    gap_at = np.r_[np.nonzero(src >= 0)[0], m][rows.gaps]
    shift = np.searchsorted(gap_at, np.arange(m), "right")
    seq = np.arange(m, dtype=np.int64) + shift
    gseq = gap_at + np.arange(len(gap_at))
    msg = cols["event"]
    row_seq = np.full(n, -1, np.int64)
    row_seq[src[src >= 0]] = seq[src >= 0]
    msg_seq = pa.array(row_seq[np.maximum(msg, 0)], mask=msg < 0)
    tsa = pa.array(cols["ts"], pa.int64()).cast(TS)
    sv = cols["side"] >= 0
    opv, oav = cols["px"] >= 0, cols["amt"] >= 0
    ov = cols["act"] != K.R
    out = {
        "ts_event": pa.array(cols["tse"], pa.int64()).cast(TS), "ts_recv": tsa, "seq": pa.array(seq),
        "session": pa.array(np.zeros(m, np.int64)), "msg_seq": msg_seq,
        "action": B._strings(cols["act"], K.ACTIONS),
        "side": pa.array(np.array(B.SIDES)[np.where(sv, cols["side"], 0)], pa.string(), mask=~sv),
        "order_id": pa.array(cols["oid"], mask=~ov),
        "price": B.to_dec(np.where(opv, cols["px"], 0), rows.pk, opv),
        "amount": B.to_dec(np.where(oav, cols["amt"], 0), rows.ak, oav),
        "trade_id": pa.nulls(m, pa.int64()), "taker_order_id": pa.nulls(m, pa.int64()),
    }
    events = pa.Table.from_arrays([out[c] for c in TABLES["book_events"].schema.names],
                                  schema=TABLES["book_events"].schema)
    g = len(gap_at)
    gts = ts[np.minimum(rows.gaps, n - 1)]
    sessions = pa.Table.from_arrays([
        pa.array(gts, pa.int64()).cast(TS), pa.array(gseq, pa.int64()), pa.array(np.zeros(g, np.int64)),
        pa.array([GAP_STREAM] * g, pa.string()), pa.array(["gap"] * g, pa.string()),
        pa.array(["F_MAYBE_BAD_BOOK: the source says the book may be wrong until its next snapshot"] * g,
                 pa.string())], schema=TABLES["sessions"].schema)
    return events, sessions


def _block(act, side, oid, px, amt, tse, ts, event, src=None) -> dict[str, np.ndarray]:
    """Columns of a block of output rows; src: the input row of each (-1: synthetic)."""
    act = np.asarray(act, np.int8)
    return {"act": act, "side": np.asarray(side, np.int64), "oid": np.asarray(oid, np.int64),
            "px": np.asarray(px, np.int64), "amt": np.asarray(amt, np.int64), "tse": np.asarray(tse, np.int64),
            "ts": np.asarray(ts, np.int64), "event": np.asarray(event, np.int64),
            "src": np.full(len(act), -1, np.int64) if src is None else np.asarray(src, np.int64)}


def import_file(path: Path, root: Path, exchange: str, pair: str, *, fmt: str = "generic", replace: bool = False,
                writer: str | None = None, instrument_id: int | None = None) -> tuple[int, list[Path]]:
    """Import an MBO file under root, one book_events file per partition-hour; (book_events rows, files).

    Checks everything before writing anything: an unsafe target, a pair with data (unless replace), a busy
    root (unless writer) or an unreadable file is an MboError and leaves the root untouched."""
    root, path = Path(root), Path(path)
    check_target(root, exchange, pair, replace)
    rows = read_rows(path, fmt, instrument_id)
    events, sessions = to_tables(rows)  # every check before the root is touched
    trades = rows.trades if rows.trades is not None else TABLES["trades"].schema.empty_table()
    fd = hold_root(root, writer)
    try:
        old = check_target(root, exchange, pair, replace)  # again, now that the root is ours
        total = events.num_rows + sessions.num_rows + trades.num_rows
        seq0 = SeqLease(root, block=total).next(total)
        events, sessions = _shift(events, seq0, seq0), _shift(sessions, seq0, seq0)
        trades = _shift(trades, seq0 + events.num_rows + sessions.num_rows, seq0)
        paths = _write(root, "book_events", exchange, pair, events)
        for table, tab in (("sessions", sessions), ("trades", trades)):
            if tab.num_rows:
                paths += _write(root, table, exchange, pair, tab)
        if replace:
            old += [f for t in ("sessions", "trades") for d in source.dates(root, t, exchange, pair) for f in
                    files.named_files(source.partition_dir(root, t, exchange, pair, d)) if f.name.startswith("mbo-")]
        for f in old:
            if f not in paths:
                f.unlink()
    finally:
        os.close(fd)
    return events.num_rows, paths


def _shift(tab: pa.Table, by: int, session: int) -> pa.Table:
    """The table with seq and msg_seq moved up by `by`, and every row's session the import's (its first seq)."""
    for name in ("seq", "msg_seq", "session"):
        if name in tab.column_names:
            i = tab.column_names.index(name)
            col = pa.array(np.full(tab.num_rows, session, np.int64)) if name == "session" else pc.add(tab.column(i), by)
            tab = tab.set_column(i, tab.schema.field(i), col)
    return tab


def _write(root: Path, table: str, exchange: str, pair: str, tab: pa.Table) -> list[Path]:
    """One atomic `mbo-` file per partition-hour of the table."""
    h = tab.column(TABLES[table].time_column).cast(pa.int64()).to_numpy()
    h = h - h % source.HOUR_NS
    return [outputs.write_hour(root, table, exchange, pair, hour, tab.filter(pa.array(h == hour)), prefix="mbo")
            for hour in np.unique(h).tolist()]
