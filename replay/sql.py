"""DuckDB over the dataset root: one view per table of `schemas.TABLES`, a catalog file, and `replay sql`.

Every view is `<typed empty row set> UNION ALL BY NAME read_parquet(<glob>, allow_empty=true)`, so a table
with no files yet still has its columns and types, and the glob is re-evaluated by every query: files that
arrive after `connect()` are seen without reconnecting. DuckDB's glob does not skip hidden files, so the
glob itself excludes names starting with `_` or `.` (temporary and internal files) and any directory that
is not `exchange=*/pair=*/date=*` (such as `_log/`).
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import click
import duckdb
import pyarrow as pa
import pyarrow.compute as pc

import schemas
from schemas import files, storage

#: DuckDB type of each partition column, as the views declare it.
PARTITION_TYPES = {"exchange": "VARCHAR", "pair": "VARCHAR", "date": "DATE"}
#: Tables whose view keeps only the newest version of each row (by `latest_by`); `<name>_all` keeps every
#: version. `trades` is deliberately not here: the recorder already de-duplicates it, so its view stays raw.
LATEST_VIEWS = ("candles",)
CATALOG_NAME = "catalog.duckdb"
#: The file in the root whose presence the catalog's views check (the dataset has not moved).
ANCHOR = ".catalog-root"
FORMATS = ("table", "csv", "json", "parquet")
#: -o/--output file extensions and the format each one means.
EXTENSIONS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".ndjson": "json", ".parquet": "parquet",
              ".pq": "parquet"}
#: Rows per Arrow batch read from DuckDB.
_BATCH_ROWS = 10_000
#: Most fractional digits a factor of `notional` may have: DECIMAL(38,18) x DECIMAL(38,18) would need 36 and
#: overflows DuckDB's 38 digits at any price above ~170, so each factor is narrowed to this scale first.
NOTIONAL_SCALE = 10
#: Columns the views add to a table's own: (name, SQL over the table's columns, meaning).
DERIVED = {
    "trades": [("notional",
                f"CASE WHEN price IS NULL OR amount IS NULL THEN NULL "
                f"WHEN price = round(price, {NOTIONAL_SCALE}) AND amount = round(amount, {NOTIONAL_SCALE}) "
                f"THEN CAST(price AS DECIMAL(38,{NOTIONAL_SCALE})) * CAST(amount AS DECIMAL(38,{NOTIONAL_SCALE})) "
                f"ELSE error('notional: a price or amount has more than {NOTIONAL_SCALE} decimals; multiply "
                f"CAST(price AS DECIMAL(38,s1)) * CAST(amount AS DECIMAL(38,s2)) with s1 + s2 <= 28 yourself') END",
                f"price * amount, exact (DECIMAL(38,{2 * NOTIONAL_SCALE})): the quote-currency value of the trade")],
}


def duckdb_type(type_: pa.DataType) -> str:
    """The DuckDB type a Parquet column of this Arrow type reads as."""
    if pa.types.is_decimal(type_):
        return f"DECIMAL({type_.precision},{type_.scale})"
    if pa.types.is_timestamp(type_):
        unit = {"s": "_S", "ms": "_MS", "us": "", "ns": "_NS"}[type_.unit]
        return f"TIMESTAMPTZ{unit}" if type_.tz else f"TIMESTAMP{unit}"
    simple = {pa.string(): "VARCHAR", pa.binary(): "BLOB", pa.int64(): "BIGINT", pa.int32(): "INTEGER",
              pa.bool_(): "BOOLEAN"}
    try:
        return simple[type_]
    except KeyError:
        raise TypeError(f"no DuckDB type mapped for Arrow type {type_}") from None


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _glob(root: Path | str, table: str) -> str:
    """The glob of a table's data files: partition directories only, no `_`/`.` names."""
    return "/".join([str(root), table, "exchange=*", "pair=*", "date=*", "[!_.]*.parquet"])


def view_sql(root: Path, table: schemas.Table, paths: list[Path] | None = None, guard: str = "") -> str:
    """SELECT every column of `table` (schema columns, then partition columns) over the files under `root`:
    its glob, or exactly `paths` when given (a root holding unreadable files); `guard` is a WHERE clause."""
    typed = dict(zip(table.schema.names, map(duckdb_type, table.schema.types))) | PARTITION_TYPES
    empty = ", ".join(f"NULL::{t} AS {_ident(c)}" for c, t in typed.items())
    hive = "{" + ", ".join(f"{_literal(c)}: {_literal(t)}" for c, t in PARTITION_TYPES.items()) + "}"
    where = f" WHERE {guard}" if guard else ""
    columns = ", ".join(map(_ident, typed))
    if paths is not None and not paths:
        return f"SELECT {columns} FROM (SELECT {empty} WHERE false){where}"
    where_from = _literal(_glob(root, table.name)) if paths is None else \
        "[" + ", ".join(_literal(str(f)) for f in paths) + "]"
    scan = (f"read_parquet({where_from}, hive_partitioning = true, hive_types = {hive}, "
            "union_by_name = true, allow_empty = true)")
    return f"SELECT {columns} FROM (SELECT {empty} WHERE false UNION ALL BY NAME SELECT * FROM {scan}){where}"


def latest_sql(table: schemas.Table, source: str) -> str:
    """SELECT the newest version (by time column, then capture order) of each `latest_by` key per partition."""
    key = ", ".join(map(_ident, ("exchange", "pair", *table.latest_by)))
    newest = ", ".join(f"{_ident(c)} DESC" for c in (table.time_column, *table.order_by))
    return f"SELECT * FROM {_ident(source)} QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY {newest}) = 1"


def _root(root: str | os.PathLike[str]) -> Path | str:
    """The dataset root as an absolute path (or its s3:// URL); a missing root is an error, not a dataset of
    empty tables."""
    if storage.is_remote(root):
        return str(root).rstrip("/")
    path = Path(root).resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"dataset root not found: {root}")
    return path


def create_views(con: duckdb.DuckDBPyConnection, root: Path, guard: str = "") -> None:
    """Create (or replace) the view of every table over the absolute `root`, with comments from schemas/.

    A table whose directories hold an unreadable or foreign file (one line each on stderr) reads exactly
    its good files instead of its glob: DuckDB fails a whole query on one bad file."""
    found = files.scan(root) if isinstance(root, Path) else files.Scan({t: [] for t in schemas.TABLES}, [])
    broken = {b.path.relative_to(root).parts[0] for b in found.bad if b.kind in ("unreadable", "foreign")}
    for b in found.bad:
        if b.kind in ("unreadable", "foreign"):
            files.report(b, root)
    for table in schemas.TABLES.values():
        listed = found.good[table.name] if table.name in broken else None
        body = view_sql(root, table, listed, guard)
        if table.name in DERIVED:
            body = f"SELECT *, {', '.join(f'{e} AS {_ident(n)}' for n, e, _ in DERIVED[table.name])} FROM ({body})"
        if table.name in LATEST_VIEWS:
            all_name = f"{table.name}_all"
            con.execute(f"CREATE OR REPLACE VIEW {_ident(all_name)} AS {body}")
            con.execute(f"CREATE OR REPLACE VIEW {_ident(table.name)} AS {latest_sql(table, all_name)}")
            _comment(con, all_name, table, "every version of every row")
            _comment(con, table.name, table, "the newest version of each row")
        else:
            con.execute(f"CREATE OR REPLACE VIEW {_ident(table.name)} AS {body}")
            _comment(con, table.name, table)


def _comment(con: duckdb.DuckDBPyConnection, view: str, table: schemas.Table, note: str = "") -> None:
    """COMMENT ON the view and each of its columns: the table's and columns' docs (with units) from schemas/."""
    con.execute(f"COMMENT ON VIEW {_ident(view)} IS {_literal(table.doc + (f' ({note})' if note else ''))}")
    docs = {}
    for f in table.schema:
        meta = {k.decode(): v.decode() for k, v in (f.metadata or {}).items()}
        docs[f.name] = meta.get("doc", "") + (f" [{meta['unit']}]" if meta.get("unit") else "")
    docs |= {c: f"partition: {schemas.PARTITION_DOCS[c]}" for c in PARTITION_TYPES}
    docs |= {n: doc for n, _, doc in DERIVED.get(table.name, [])}
    for col, doc in docs.items():
        con.execute(f"COMMENT ON COLUMN {_ident(view)}.{_ident(col)} IS {_literal(doc)}")


def connect(root: str | os.PathLike[str], *, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    """A DuckDB connection (session time zone UTC, no progress bar) with a view per table over the dataset `root`.

    DuckDB draws a progress bar on stdout for queries over 2 s, which would land inside CSV/JSON output."""
    root = _root(root)
    con = duckdb.connect(database)
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    if isinstance(root, str):  # s3://: DuckDB reads the bucket through s3fs (httpfs cannot be installed offline)
        con.register_filesystem(storage.filesystem())
    create_views(con, root)
    return con


def write_catalog(root: str | os.PathLike[str], path: str | os.PathLike[str] | None = None) -> Path:
    """Write a DuckDB file holding the views (default `<root>/catalog.duckdb`), atomically; return its path.

    The views hold the root as an absolute path: DuckDB resolves relative paths against the opener's working
    directory, not the file's, so absolute is the only form that works from anywhere. Each view first checks
    that the root's anchor file (`.catalog-root`) is still there, so a query on a moved dataset fails with
    a message saying to write the catalog again, instead of returning 0 rows.
    """
    root = _root(root)
    if isinstance(root, str) and not path:
        raise ValueError("an s3:// root needs a local catalog path (its views then read the bucket through a "
                         "registered s3fs filesystem, see docs/scale.md)")
    target = Path(path).resolve() if path else root / CATALOG_NAME
    if isinstance(root, Path) and any(target.is_relative_to(root / name) for name in schemas.TABLES):
        raise ValueError(f"the catalog must not be inside a table directory: {target}")
    guard = ""
    if isinstance(root, Path):  # a bucket does not move under its URL
        anchor = root / ANCHOR
        if not anchor.exists():
            anchor.write_text("this dataset's catalog views check that this file is here (replay sql --write-catalog)\n")
        moved = (f"booktape catalog: the dataset is no longer at {root}; "
                 f"write the catalog again: replay sql --root NEW_ROOT --write-catalog")
        guard = (f"(SELECT CASE WHEN count(*) = 0 THEN error({_literal(moved)}) ELSE true END "
                 f"FROM glob({_literal(str(anchor))}))")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    os.unlink(tmp)  # DuckDB creates the file itself and refuses an empty one
    try:
        con = duckdb.connect(tmp)
        try:
            if isinstance(root, str):
                con.register_filesystem(storage.filesystem())
            create_views(con, root, guard)
            con.execute("CHECKPOINT")
        finally:
            con.close()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        for leftover in (tmp, tmp + ".wal"):
            if os.path.exists(leftover):
                os.unlink(leftover)
    return target


def _utc_connection() -> duckdb.DuckDBPyConnection:
    """A scratch connection that renders timestamps in UTC (and draws no progress bar on stdout)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    return con


def plain_decimals(table: pa.Table) -> pa.Table:
    """Decimal columns as exact canonical text without padding (`0.05005`, `936`), for CSV and JSON."""
    for i, f in enumerate(table.schema):
        if pa.types.is_decimal(f.type):
            text = pc.cast(table.column(i), pa.string())
            if f.type.scale:
                text = pc.replace_substring_regex(pc.replace_substring_regex(text, r"(\.\d*?)0+$", r"\1"),
                                                  r"\.$", "")
            table = table.set_column(i, pa.field(f.name, pa.string()), text)
    return table


def narrow_decimals(table: pa.Table) -> pa.Table:
    """Each decimal column at the smallest scale that keeps all its values exact (display without padding)."""
    for i, f in enumerate(table.schema):
        if pa.types.is_decimal(f.type) and table.num_rows:
            col = table.column(i)
            k = next(k for k in range(f.type.scale + 1)
                     if pc.all(pc.equal(pc.round(col, k), col)).as_py() is not False)
            table = table.set_column(i, pa.field(f.name, pa.decimal128(f.type.precision, k)), col.cast(
                pa.decimal128(f.type.precision, k)))
    return table


def _type_name(type_: pa.DataType) -> str:
    try:
        return duckdb_type(type_).lower()
    except TypeError:
        return str(type_)


def box(table: pa.Table) -> str:
    """The whole table as one box (names, types, every row, the row count); numbers right-aligned, exact."""
    names = table.column_names
    cells, right = [], []
    for f, col in zip(table.schema, table.columns):
        numeric = pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_decimal(f.type)
        right.append(numeric)
        if pa.types.is_timestamp(f.type) or pa.types.is_date(f.type) or numeric or pa.types.is_boolean(f.type):
            text = pc.cast(col, pa.string()).to_pylist() if col.num_chunks else []
        else:
            text = [None if v is None else (v.decode("utf-8", "backslashreplace") if isinstance(v, bytes) else str(v))
                    for v in col.to_pylist()]
        cells.append(["NULL" if v is None else v.replace("\n", "\\n") for v in text])
    heads = [(n, _type_name(f.type)) for n, f in zip(names, table.schema)]
    widths = [max([len(h[0]), len(h[1])] + [len(v) for v in c]) for h, c in zip(heads, cells)]

    def line(values, align=None):
        out = []
        for i, (v, w) in enumerate(zip(values, widths)):
            out.append(v.rjust(w) if (align or right)[i] is True else v.center(w) if align else v.ljust(w))
        return "│ " + " │ ".join(out) + " │"

    center = ["c"] * len(names)
    rows = ["┌─" + "─┬─".join("─" * w for w in widths) + "─┐",
            line([h[0] for h in heads], center), line([h[1] for h in heads], center),
            "├─" + "─┼─".join("─" * w for w in widths) + "─┤"]
    rows += [line([c[r] for c in cells]) for r in range(table.num_rows)]
    rows.append("└─" + "─┴─".join("─" * w for w in widths) + "─┘")
    rows.append(f"  {table.num_rows} row{'' if table.num_rows == 1 else 's'}")
    return "\n".join(rows)


def _print_table(reader: pa.RecordBatchReader) -> None:
    """Print the whole result as one box, decimals at the smallest scale that keeps each column exact."""
    sys.stdout.write(box(narrow_decimals(reader.read_all())) + "\n")
    sys.stdout.flush()


def _write(reader: pa.RecordBatchReader, fmt: str, output: str | None) -> None:
    """Stream the result as CSV, JSON (one object a line) or Parquet to `output`, or CSV/JSON to stdout.
    CSV and JSON carry decimals as exact text without padding (JSON: as numbers); Parquet keeps DECIMAL."""
    writer = _utc_connection()  # not the query's: the user's session and `SHOW TABLES` stay untouched
    select = "*"
    if fmt in ("csv", "json"):
        decimals = [f.name for f in reader.schema if pa.types.is_decimal(f.type)]
        schema = plain_decimals(reader.schema.empty_table()).schema
        batches = (b for batch in reader for b in plain_decimals(pa.Table.from_batches([batch])).to_batches())
        reader = pa.RecordBatchReader.from_batches(schema, batches)
        if fmt == "json" and decimals:
            select = f"* REPLACE ({', '.join(f'{_ident(c)}::JSON AS {_ident(c)}' for c in decimals)})"
    writer.register("result", reader)
    with tempfile.TemporaryDirectory(prefix="booktape-sql-") as tmp:
        target = output or os.path.join(tmp, f"result.{fmt}")
        writer.execute(f"COPY (SELECT {select} FROM result) TO {_literal(target)} (FORMAT {fmt})")
        if not output:
            with open(target, "rb") as f:
                shutil.copyfileobj(f, sys.stdout.buffer)
            sys.stdout.buffer.flush()


def output_format(fmt: str | None, output: str | None) -> str:
    """The output format: --format if given, else the -o file's extension, else a table on stdout."""
    if fmt is None and output:
        ext = Path(output).suffix.lower()
        if ext not in EXTENSIONS:
            raise click.ClickException(f"cannot tell the format of {output} from its extension; use "
                                       f"{', '.join(EXTENSIONS)} or pass --format csv, json or parquet")
        return EXTENSIONS[ext]
    fmt = fmt or "table"
    if fmt == "parquet" and not output:
        raise click.ClickException("--format parquet needs --output FILE")
    if fmt == "table" and output:
        raise click.ClickException("--output needs --format csv, json or parquet (or a .csv, .json or .parquet name)")
    return fmt


@click.command("sql")
@click.argument("query", required=False)
@click.option("--root", envvar="BOOKTAPE_ROOT", default="./data", show_default="$BOOKTAPE_ROOT or ./data",
              type=click.Path(file_okay=False), help="Dataset root.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="table (default): one box for people; csv, json (one object a line): for scripts; parquet: "
                   "needs --output. Default with --output: from its extension (.csv, .json, .parquet).")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write the result to this file.")
@click.option("--limit", type=click.IntRange(min=0), help="At most this many rows.")
@click.option("--write-catalog", "catalog", is_flag=True,
              help="(Re)write <root>/catalog.duckdb for the duckdb CLI or notebooks.")
def sql(query: str | None, root: str, fmt: str, output: str | None, limit: int | None, catalog: bool) -> None:
    """Run SQL over every table of the dataset (views: raw, book_events, trades, candles, candles_all, ...)."""
    fmt = output_format(fmt, output)
    if not query and not catalog:
        raise click.ClickException("give a query, or --write-catalog")
    try:
        if catalog:
            click.echo(f"wrote {write_catalog(root)}", err=True)
        if not query:
            return
        rel = connect(root).sql(query)
        if limit is not None:
            rel = rel.limit(limit)
        reader = rel.to_arrow_reader(_BATCH_ROWS)
        if fmt == "table":
            _print_table(reader)
        else:
            _write(reader, fmt, output)
    except (duckdb.Error, OSError, ValueError) as e:
        raise click.ClickException(str(e).strip().splitlines()[0]) from None
