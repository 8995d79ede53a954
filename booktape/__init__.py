"""booktape for notebooks: `from booktape import Dataset`.

>>> from booktape import Dataset
>>> ds = Dataset("demo-data")
>>> ds.venues
['bitbay', 'bitexbit', 'bitopro', 'btcalpha']
>>> ds.sql("SELECT exchange, count(*) AS n FROM trades GROUP BY ALL ORDER BY 1").df()   # pandas
>>> ds.bbo("btcalpha", "BTC_USD", start="2026-11-21T14:00:05Z", end="2026-11-21T14:00:10Z").pl()   # polars

Every method returns a `Frame`: a pyarrow Table (`frame.arrow`; every Table method works on the frame itself)
with `.df()` and `.pl()` when pandas or polars is installed (`pip install 'booktape[pandas]'` / `[polars]`).
Times are datetimes (naive = UTC), ISO-8601 text or epoch numbers (s, ms, us or ns, told apart by size).
Only the `write_*`, `plot` and `import_mbo` methods write (into the dataset, or the PNG named); the `replay`
command line is built on this class. docs/python.md walks through a session on the demo data.
"""
from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import schemas
from replay import book as B
from replay import outputs, source
from replay import sql as S
from replay.times import iso, to_datetime, to_ns

__all__ = ["Dataset", "DatasetError", "Frame", "BookFrame", "Written", "import_mbo"]

Time = Any  # datetime | date | str | int | float | numpy.datetime64 | pandas.Timestamp
_DURATION_UNITS = {"ns": 1, "us": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


class DatasetError(ValueError):
    """What was asked is not in the dataset (unknown venue or pair, empty range, bad argument): one line."""


class Frame:
    """A pyarrow Table with `.df()` (pandas) and `.pl()` (polars); attributes not defined here are the Table's.

    >>> f = Dataset("demo-data").sql("SELECT 1 AS x")
    >>> f.num_rows, f.column_names, f.arrow.schema
    (1, ['x'], x: int32)
    """

    def __init__(self, table: pa.Table):
        self.arrow = table

    def __getattr__(self, name: str):
        if name == "arrow":  # not set yet (unpickling)
            raise AttributeError(name)
        return getattr(self.arrow, name)

    def __len__(self) -> int:
        return self.arrow.num_rows

    def __getitem__(self, key):
        return self.arrow[key]

    def __eq__(self, other) -> bool:
        return self.arrow.equals(other.arrow if isinstance(other, Frame) else other)

    __hash__ = None

    def __arrow_c_stream__(self, requested_schema=None):
        """Arrow PyCapsule stream: pa.table(frame), polars and duckdb read the frame directly."""
        return self.arrow.__arrow_c_stream__(requested_schema)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.arrow.num_rows} rows)\n{self.arrow.schema}"

    def df(self):
        """A pandas DataFrame (decimals stay exact as decimal.Decimal, times are UTC)."""
        try:
            return self.arrow.to_pandas()
        except ModuleNotFoundError:
            raise ImportError("Frame.df() needs pandas: pip install 'booktape[pandas]'") from None

    def pl(self):
        """A polars DataFrame (decimals stay exact as polars Decimal)."""
        try:
            import polars
        except ImportError:
            raise ImportError("Frame.pl() needs polars: pip install 'booktape[polars]'") from None
        return polars.from_arrow(self.arrow)


class BookFrame(Frame):
    """A book at an instant: its levels (or orders) as a Table, plus where it stands in the stream."""

    def __init__(self, table: pa.Table, book: B.Book):
        super().__init__(table)
        self.seq = book.seq
        self.ts = to_datetime(book.ts) if book.ts else None
        self.ts_ns = book.ts
        self.gap = book.gap
        self.digest = book.digest()

    @property
    def exact(self) -> bool:
        """True when the book is known exact (not between a gap and the next snapshot)."""
        return not self.gap

    def __repr__(self) -> str:
        return (f"BookFrame(seq {self.seq} at {iso(self.ts_ns)}, {'GAP' if self.gap else 'exact'}, "
                f"{self.arrow.num_rows} rows)\n{self.arrow.schema}")


class Written(list):
    """Files a write_* method wrote, one per hour (list of Path), with the replayed hours and the rows."""

    def __init__(self, paths: list[Path], results: list[B.HourResult], rows: int):
        super().__init__(paths)
        self.results = results
        self.rows = rows


def duration_ns(every: str | int | dt.timedelta | None) -> int | None:
    """ns of a duration: `event` or None (every event), '250ms', '1s', '1m', a timedelta, or ns."""
    if every is None or every == "event":
        return None
    if isinstance(every, dt.timedelta):
        ns = (every.days * 86_400 + every.seconds) * 10**9 + every.microseconds * 1000
    elif isinstance(every, int) and not isinstance(every, bool):
        ns = every
    else:
        text = str(every)
        num = text.rstrip("nsumh")
        unit = text[len(num):]
        if not num.isdigit() or unit not in _DURATION_UNITS:
            raise DatasetError(f"{every!r}: use `event` or a duration like 100ms, 1s, 1m")
        ns = int(num) * _DURATION_UNITS[unit]
    if ns <= 0:
        raise DatasetError(f"{every!r}: a duration must be positive")
    return ns


def _time(value: Time | None, what: str) -> int | None:
    if value is None:
        return None
    try:
        return to_ns(value)
    except (TypeError, ValueError) as e:
        raise DatasetError(f"{what}: {e}") from None


def _cut(tab: pa.Table, column: str, start: int | None, end: int | None) -> pa.Table:
    """Rows whose `column` is in [start, end)."""
    if start is None and end is None:
        return tab
    t = tab.column(column).cast(pa.int64()).to_numpy()
    keep = np.ones(len(t), bool) if start is None else t >= start
    if end is not None:
        keep &= t < end
    return tab.filter(pa.array(keep))


class Dataset:
    """A booktape dataset root: what it covers, SQL over every table, and books replayed from it.

    >>> ds = Dataset("demo-data")
    >>> ds.pairs("btcalpha")
    ['BTC_USD', 'ETH_BTC']
    >>> ds.book("btcalpha", "BTC_USD", at="2026-11-21T14:00:10Z").df()
    >>> ds.depth("btcalpha", "BTC_USD", levels=5, every="1s").num_rows
    """

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset root not found: {root}")
        self._con = None

    def __repr__(self) -> str:
        return f"Dataset({str(self.root)!r}: {', '.join(self.venues) or 'empty'})"

    # -- what is there -------------------------------------------------------------------------------
    @property
    def venues(self) -> list[str]:
        """Venues (exchange partition values) with files in any table, sorted."""
        found = set()
        for t in schemas.TABLES:
            base = self.root / t
            if base.is_dir():
                found.update(p.name[len("exchange="):] for p in base.iterdir()
                             if p.is_dir() and p.name.startswith("exchange="))
        return sorted(found)

    def pairs(self, exchange: str | None = None) -> list[str] | dict[str, list[str]]:
        """Pairs with book data of one venue; without a venue, {venue: pairs} for every venue."""
        if exchange is None:
            return {v: self.pairs(v) for v in self.venues}
        return sorted(set(source.pairs(self.root, "book_events", exchange))
                      | set(source.pairs(self.root, "book_levels", exchange)))

    def kind(self, exchange: str, pair: str) -> str:
        """'l3' (order-level book_events) or 'l2' (book_levels snapshots)."""
        self._check_pair(exchange, pair)
        return B.kind(self.root, exchange, pair)

    def hours(self, exchange: str, pair: str, start: Time | None = None, end: Time | None = None) -> list[dt.datetime]:
        """Start of every hour (UTC datetime) with book data for the pair, within [start, end) if given."""
        return [to_datetime(h) for h in self._hours(exchange, pair, _time(start, "start"), _time(end, "end"),
                                                    empty_ok=True)]

    def coverage(self) -> Frame:
        """One row per venue and pair with book data: kind, first and last hour, hours covered, gap rows."""
        rows = []
        for ex in self.venues:
            for pair in self.pairs(ex):
                kind = B.kind(self.root, ex, pair)
                hs = self._hours(ex, pair, None, None, empty_ok=True)
                gaps = source.gap_sessions(self.root, ex, pair, hs[0], hs[-1] + source.HOUR_NS).num_rows if hs else 0
                rows.append(dict(exchange=ex, pair=pair, kind=kind, hours=len(hs),
                                 first_hour=to_datetime(hs[0]) if hs else None,
                                 last_hour=to_datetime(hs[-1]) if hs else None, gaps=gaps))
        ts = pa.timestamp("us", tz="UTC")
        schema = pa.schema([("exchange", pa.string()), ("pair", pa.string()), ("kind", pa.string()),
                            ("hours", pa.int64()), ("first_hour", ts), ("last_hour", ts), ("gaps", pa.int64())])
        return Frame(pa.Table.from_pylist(rows, schema=schema))

    def gaps(self, exchange: str | None = None, pair: str | None = None, start: Time | None = None,
             end: Time | None = None) -> Frame:
        """sessions rows after which a book is not known exact until the next snapshot (disconnect, gap,
        resync, reject on a book stream), in time order; replay marks output across them `gap = true`."""
        where, params = [f"kind IN ({', '.join('?' * len(source.GAP_KINDS))})",
                         "NOT regexp_matches(stream, ?)"], [*source.GAP_KINDS, source.NOT_BOOK_STREAM.pattern]
        for col, v in (("exchange", exchange), ("pair", pair)):
            if v is not None:
                where.append(f"{col} = ?")
                params.append(v)
        for op, v, what in ((">=", start, "start"), ("<", end, "end")):
            if v is not None:
                where.append(f"epoch_ns(ts) {op} ?")
                params.append(_time(v, what))
        return self.sql(f"SELECT ts, exchange, pair, stream, kind, detail, seq FROM sessions "
                        f"WHERE {' AND '.join(where)} ORDER BY ts, seq", params)

    # -- SQL -----------------------------------------------------------------------------------------
    def sql(self, query: str, params: Iterable | None = None) -> Frame:
        """Run DuckDB SQL over the views of every table (`raw`, `book_events`, `trades`, `bbo`, ...).

        >>> ds.sql("SELECT pair, sum(notional) AS quote_volume FROM trades WHERE exchange = ? GROUP BY ALL",
        ...        ["btcalpha"]).df()
        """
        con = self.connection()
        rel = con.sql(query, params=list(params)) if params is not None else con.sql(query)
        return Frame(rel.to_arrow_table() if rel is not None else pa.table({}))

    def connection(self):
        """The DuckDB connection holding the views (session time zone UTC), opened at first use."""
        if self._con is None:
            self._con = S.connect(self.root)
        return self._con

    # -- books ---------------------------------------------------------------------------------------
    def book(self, exchange: str, pair: str, at: Time, levels: int | None = 10, orders: bool = False) -> BookFrame:
        """The book right after every event with ts_recv <= at: top `levels` per side (None: all) as
        side, level, price, amount, count; with orders=True (L3) every resting order in priority order.

        >>> b = ds.book("btcalpha", "BTC_USD", "2026-11-21T14:00:10Z", levels=5)
        >>> b.exact, b.seq, b.to_pylist()[0]
        """
        at = _time(at, "at")
        self._hours(exchange, pair, at - at % source.HOUR_NS, at + 1)
        bk = self._replay_error(B.book_at, self.root, exchange, pair, at)
        if orders and bk.l3:
            rows = bk.orders
            tab = pa.table({"side": pa.array([r[0] for r in rows], pa.string()),
                            "price": pa.array([r[1] for r in rows], schemas.DEC),
                            "amount": pa.array([r[2] for r in rows], schemas.DEC),
                            "order_id": pa.array([r[3] for r in rows], pa.int64())})
            return BookFrame(tab, bk)
        lv = bk.levels(levels)
        cols: dict[str, list] = {"side": [], "level": [], "price": [], "amount": [], "count": []}
        for name in ("bid", "ask"):
            for i, (p, a, c) in enumerate(lv[name]):
                for k, v in zip(cols, (name, i, p, a, c)):
                    cols[k].append(v)
        tab = pa.table({"side": pa.array(cols["side"], pa.string()), "level": pa.array(cols["level"], pa.int32()),
                        "price": pa.array(cols["price"], schemas.DEC), "amount": pa.array(cols["amount"], schemas.DEC),
                        "count": pa.array(cols["count"], pa.int32())})
        return BookFrame(tab, bk)

    def bbo(self, exchange: str, pair: str, start: Time | None = None, end: Time | None = None,
            jobs: int = 1) -> Frame:
        """Best bid/offer after every change with ts_recv in [start, end), replayed, not written (the `bbo`
        table's columns; `gap` marks rows produced between a gap and the next snapshot)."""
        lo, hi = _time(start, "start"), _time(end, "end")
        res = self.replay(exchange, pair, lo, hi, jobs=jobs, bbo=True, write=False)
        tabs = [r.bbo for r in res if r.bbo is not None]
        tab = pa.concat_tables(tabs) if tabs else schemas.BBO.schema.empty_table()
        return Frame(_cut(tab, "ts_recv", lo, hi))

    def depth(self, exchange: str, pair: str, levels: int = 10, every: str | int | dt.timedelta | None = "1s",
              start: Time | None = None, end: Time | None = None, jobs: int = 1) -> Frame:
        """Top `levels` per side every `every` ('250ms', '1s', a timedelta, ns; 'event': after every event)
        with ts in [start, end), replayed, not written (the `depth` table's columns)."""
        lo, hi = _time(start, "start"), _time(end, "end")
        res = self.replay(exchange, pair, lo, hi, jobs=jobs, depth=self._depth(levels, every, lo, hi), write=False)
        tabs = [r.depth for r in res if r.depth is not None]
        tab = pa.concat_tables(tabs) if tabs else schemas.DEPTH.schema.empty_table()
        return Frame(_cut(tab, "ts", lo, hi))

    def trades(self, exchange: str, pair: str, start: Time | None = None, end: Time | None = None) -> Frame:
        """Recorded trades of the pair with ts_recv in [start, end), in capture order (the `trades` table's
        columns plus `notional` = price * amount, exact)."""
        cols = ", ".join(schemas.TRADES.schema.names)
        where, params = ["exchange = ?", "pair = ?"], [exchange, pair]
        for op, v, what in ((">=", start, "start"), ("<", end, "end")):
            if v is not None:
                where.append(f"epoch_ns(ts_recv) {op} ?")
                params.append(_time(v, what))
        return self.sql(f"SELECT {cols}, notional FROM trades WHERE {' AND '.join(where)} ORDER BY seq", params)

    # -- what the command line runs (these write) ----------------------------------------------------
    def replay(self, exchange: str, pair: str, start: int | None = None, end: int | None = None, *,
               jobs: int = 1, progress: Callable[[int, int], None] | None = None, **kw) -> list[B.HourResult]:
        """Replay every hour with book data meeting [start, end) (ns); kw as replay.outputs.run_hours."""
        hours = self._hours(exchange, pair, start, end)
        return self._replay_error(outputs.run_hours, str(self.root), exchange, pair, hours, jobs=jobs,
                                  progress=progress, **kw)

    def write_bbo(self, exchange: str, pair: str, start: Time | None = None, end: Time | None = None,
                  jobs: int = 1, progress: Callable[[int, int], None] | None = None) -> Written:
        """Write the `bbo` table for every hour meeting [start, end), one file per hour; the files written."""
        res = self.replay(exchange, pair, _time(start, "start"), _time(end, "end"), jobs=jobs, progress=progress,
                          bbo=True)
        return self._written("bbo", exchange, pair, res)

    def write_depth(self, exchange: str, pair: str, levels: int = 10, every: str | int | None = "1s",
                    start: Time | None = None, end: Time | None = None, jobs: int = 1,
                    progress: Callable[[int, int], None] | None = None) -> Written:
        """Write the `depth` table for every hour meeting [start, end), one file per hour; the files written."""
        lo, hi = _time(start, "start"), _time(end, "end")
        res = self.replay(exchange, pair, lo, hi, jobs=jobs, progress=progress,
                          depth=self._depth(levels, every, lo, hi))
        return self._written("depth", exchange, pair, res)

    def verify(self, exchange: str, pair: str, start: Time | None = None, end: Time | None = None,
               window: str | int = "2s", jobs: int = 1,
               progress: Callable[[int, int], None] | None = None) -> list[B.HourResult]:
        """Replay and check against recorded snapshots; per hour: checked, mismatches, anomalies."""
        w = duration_ns(window)
        if w is None:
            raise DatasetError("window takes a duration like 500ms or 2s")
        return self.replay(exchange, pair, _time(start, "start"), _time(end, "end"), jobs=jobs, progress=progress,
                           verify=True, write=False, window=w)

    def plot(self, exchange: str, pair: str, out: str | os.PathLike[str], start: Time | None = None,
             end: Time | None = None, levels: int = 20, every: str | int | None = "1s", jobs: int = 1,
             progress: Callable[[int, int], None] | None = None) -> Path:
        """Write a PNG of mid, spread, trades and a depth heatmap over the range (needs matplotlib)."""
        from replay import plot as P

        P.require()
        lo, hi = _time(start, "start"), _time(end, "end")
        res = self.replay(exchange, pair, lo, hi, jobs=jobs, progress=progress, bbo=True,
                          depth=self._depth(levels, every, lo, hi), write=False)
        trades = self.trades(exchange, pair, lo, hi).arrow
        P.plot(res, Path(out), f"{exchange} {pair}", lo, hi, trades=trades)
        return Path(out)

    def import_mbo(self, file: str | os.PathLike[str], exchange: str, pair: str, **kw) -> tuple[int, list[Path]]:
        """Import a market-by-order file into this dataset (see booktape.import_mbo)."""
        return import_mbo(self.root, file, exchange, pair, **kw)

    # -- helpers -------------------------------------------------------------------------------------
    def _check_pair(self, exchange: str, pair: str) -> None:
        known = self.pairs(exchange)
        if not known:
            raise DatasetError(f"no book data for exchange {exchange!r} under {self.root}")
        if pair not in known:
            raise DatasetError(f"unknown pair {pair!r} for {exchange}; known: {', '.join(known)}")

    def _hours(self, exchange: str, pair: str, start: int | None, end: int | None,
               empty_ok: bool = False) -> list[int]:
        """Hours (ns) with book data meeting [start, end), with one-line errors for unknown venues, pairs and
        empty ranges."""
        self._check_pair(exchange, pair)
        lo = 0 if start is None else start
        hi = 2**62 if end is None else end
        if hi <= lo:
            raise DatasetError(f"end ({iso(hi)}) is not after start ({iso(lo)})")
        table = "book_events" if B.kind(self.root, exchange, pair) == "l3" else "book_levels"
        hours = source.hours(self.root, table, exchange, pair, lo, hi)
        if not hours and not empty_ok:
            raise DatasetError(f"no {exchange} {pair} book data between {iso(lo)} and "
                               f"{'the end' if end is None else iso(hi)}")
        return hours

    @staticmethod
    def _depth(levels: int, every, start: int | None, end: int | None) -> B.Depth:
        if not isinstance(levels, int) or not 1 <= levels <= 1000:
            raise DatasetError(f"levels must be an integer from 1 to 1000, got {levels!r}")
        return B.Depth(levels, duration_ns(every), start, end)

    @staticmethod
    def _replay_error(fn, *args, **kw):
        try:
            return fn(*args, **kw)
        except B.ReplayError as e:
            raise DatasetError(str(e)) from None

    def _written(self, table: str, exchange: str, pair: str, res: list[B.HourResult]) -> Written:
        paths = [outputs.hour_path(self.root, table, exchange, pair, r.hour) for r in res]
        rows = sum(pq.ParquetFile(p).metadata.num_rows for p in paths if p.exists())
        return Written(paths, res, rows)


def import_mbo(root: str | os.PathLike[str], file: str | os.PathLike[str], exchange: str, pair: str, *,
               format: str = "generic", replace: bool = False, writer_id: str | None = None,
               instrument_id: int | None = None) -> tuple[int, list[Path]]:
    """Import a market-by-order file (Databento DBN/CSV/Parquet or generic CSV/Parquet, see replay.mbo) as
    book_events under root (created if needed, after every check passed); (rows, files written).

    >>> import_mbo("data", "glbx-mdp3-20261121.mbo.dbn.zst", "glbx", "ES_USD", instrument_id=42)
    """
    from replay import mbo

    try:
        return mbo.import_file(Path(file), Path(root), exchange, pair, fmt=format, replace=replace,
                               writer=writer_id, instrument_id=instrument_id)
    except mbo.MboError as e:
        raise DatasetError(str(e)) from None
