"""Import a general market-by-order stream (CSV or Parquet) into the dataset as `book_events`.

Columns: `ts, action, side, price, size, order_id`.
- ts: integer epoch nanoseconds, or ISO-8601 text in UTC (`2026-11-21T14:03:07.250Z`, `Z` optional).
- action (case-insensitive): add = A, add, new, insert; full cancel = C, cancel, delete, del, D, remove, X;
  partial cancel = P, partial, reduce, modify, M (size is the amount removed);
  execution against order_id = F, fill, execute, execution, E, trade, T, match.
- side (case-insensitive): bid, b, buy; ask, a, sell, s, offer.
- price, size: exact decimal text (CSV) or DECIMAL/integer/text (Parquet); floats are read by their
  shortest repr. Cancels and executions may leave side and price empty: they come from the order's add.
Rows must be in time order. Output: a leading R, then the rows with seq in file order; every later hour
starts with R + S rows (the book at the hour boundary, replayed with the engine) so each hour replays alone.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from replay import book as B
from replay import kernels as K
from replay import outputs, source
from schemas import DEC, TABLES, TS

COLUMNS = ("ts", "action", "side", "price", "size", "order_id")
ACTION_SPELLINGS = {
    "A": ("a", "add", "new", "insert"),
    "C": ("c", "cancel", "delete", "del", "d", "remove", "x"),
    "P": ("p", "partial", "reduce", "modify", "m"),
    "F": ("f", "fill", "execute", "execution", "e", "trade", "t", "match"),
}
SIDE_SPELLINGS = {"bid": ("bid", "b", "buy"), "ask": ("ask", "a", "sell", "s", "offer")}


class MboError(ValueError):
    """The file cannot be imported (missing columns, unknown spellings, unordered time)."""


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


def read_mbo(path: Path) -> pa.Table:
    """The file's six columns (CSV read with text price/size so decimals stay exact)."""
    if path.suffix.lower() == ".parquet":
        tab = pq.read_table(path)
    else:
        types = {"price": pa.string(), "size": pa.string(), "ts": pa.string(), "order_id": pa.int64()}
        tab = pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(column_types=types,
                                                                      strings_can_be_null=True))
    missing = [c for c in COLUMNS if c not in tab.column_names]
    if missing:
        raise MboError(f"{path.name}: missing column(s) {', '.join(missing)}; need {', '.join(COLUMNS)}")
    return tab.select(list(COLUMNS))


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


def max_seq(root: Path) -> int:
    """Largest seq in any table of the root (from Parquet statistics; 0 when empty)."""
    best = 0
    for t in TABLES:
        for f in sorted((Path(root) / t).rglob("*.parquet")) if (Path(root) / t).is_dir() else []:
            if f.name.startswith(("_", ".")):
                continue
            meta = pq.ParquetFile(f).metadata
            idx = meta.schema.to_arrow_schema().get_field_index("seq")
            for g in range(meta.num_row_groups):
                st = meta.row_group(g).column(idx).statistics
                if st is not None and st.has_min_max:
                    best = max(best, st.max_raw)
    return best


def to_events(tab: pa.Table, seq0: int) -> pa.Table:
    """book_events rows for an MBO table: leading R, then rows in file order, R + S at each hour boundary."""
    n = tab.num_rows
    if n == 0:
        raise MboError("the file has no rows")
    ts = _ts(tab.column("ts"))
    if np.any(ts[1:] < ts[:-1]):
        raise MboError(f"ts goes back at row {int(np.argmax(ts[1:] < ts[:-1])) + 2}: rows must be in time order")
    act = np.array([K.ACTIONS.index(a) for a in ACTION_SPELLINGS], np.int8)[_codes(tab.column("action"),
                                                                                ACTION_SPELLINGS, "action")]
    side = _codes(tab.column("side"), SIDE_SPELLINGS, "side")
    oidc = tab.column("order_id").cast(pa.int64())
    if oidc.null_count:
        raise MboError("order_id is empty on some rows")
    oid = oidc.to_numpy()
    price, size = _decimal(tab.column("price")), _decimal(tab.column("size"))
    px, pv, pk = B.exact_ints(price)
    amt, av, ak = B.exact_ints(size)
    side, px = _from_add(act, oid, side, np.where(pv, px, -1))
    pv = px >= 0
    hour = ts - ts % source.HOUR_NS
    cuts = np.nonzero(hour[1:] != hour[:-1])[0] + 1
    ev = B.Events.from_arrays(np.arange(n), ts, ts, act, side.astype(np.int8), oid, px, np.where(av, amt, 0), pk, ak)
    rp = B.L3Replay(ev)
    parts, prev = [], 0
    parts.append(_rows(np.array([K.R]), [-1], [0], [0], [0], [ts[0]], ([False],) * 3))
    for c in list(cuts) + [n]:
        rows = slice(prev, c)
        parts.append(_rows(act[rows], side[rows], oid[rows], px[rows], amt[rows], ts[rows],
                           (np.ones(c - prev, bool), pv[rows], av[rows])))
        if c < n:
            rp.run(c)
            bk = rp.book()
            k = len(bk.side)
            parts.append(_rows(np.array([K.R]), [-1], [0], [0], [0], [hour[c]], ([False],) * 3))
            parts.append(_rows(np.full(k, K.S, np.int8), bk.side, bk.order_id, bk.price, bk.amount,
                               np.full(k, hour[c]), (np.ones(k, bool),) * 3))
        prev = c
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    m = len(cols["act"])
    seq = seq0 + np.arange(m, dtype=np.int64)
    tsa = pa.array(cols["ts"], pa.int64()).cast(TS)
    sv = cols["side"] >= 0
    out = {
        "ts_event": tsa, "ts_recv": tsa, "seq": pa.array(seq), "session": pa.array(np.full(m, seq0, np.int64)),
        "msg_seq": pa.nulls(m, pa.int64()), "action": B._strings(cols["act"], K.ACTIONS),
        "side": pa.array(np.array(B.SIDES)[np.where(sv, cols["side"], 0)], pa.string(), mask=~sv),
        "order_id": pa.array(cols["oid"], mask=~cols["ov"]),
        "price": B.to_dec(cols["px"], pk, cols["pv"]), "amount": B.to_dec(cols["amt"], ak, cols["av"]),
        "trade_id": pa.nulls(m, pa.int64()), "taker_order_id": pa.nulls(m, pa.int64()),
    }
    return pa.Table.from_arrays([out[c] for c in TABLES["book_events"].schema.names],
                                schema=TABLES["book_events"].schema)


def _rows(act, side, oid, px, amt, ts, valid) -> dict[str, np.ndarray]:
    """Columns of a block of output rows; valid = (order id, price, amount) validity."""
    ov, pv, av = (np.asarray(v, bool) for v in valid)
    return {"act": np.asarray(act, np.int8), "side": np.asarray(side, np.int64), "oid": np.asarray(oid, np.int64),
            "px": np.asarray(px, np.int64), "amt": np.asarray(amt, np.int64), "ts": np.asarray(ts, np.int64),
            "ov": ov, "pv": pv, "av": av}


def import_file(path: Path, root: Path, exchange: str, pair: str) -> tuple[int, list[Path]]:
    """Import an MBO file as book_events under root, one file per partition-hour; (rows, files)."""
    ev = to_events(read_mbo(Path(path)), max_seq(root) + 1)
    h = ev.column("ts_recv").cast(pa.int64()).to_numpy()
    h = h - h % source.HOUR_NS
    paths = []
    for hour in np.unique(h).tolist():
        part = ev.filter(pa.array(h == hour))
        paths.append(outputs.write_hour(root, "book_events", exchange, pair, hour, part, prefix="mbo"))
    return ev.num_rows, paths
