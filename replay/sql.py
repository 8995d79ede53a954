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

import schemas
from schemas import storage

#: DuckDB type of each partition column, as the views declare it.
PARTITION_TYPES = {"exchange": "VARCHAR", "pair": "VARCHAR", "date": "DATE"}
#: Tables whose view keeps only the newest version of each row (by `latest_by`); `<name>_all` keeps every
#: version. `trades` is deliberately not here: the recorder already de-duplicates it, so its view stays raw.
LATEST_VIEWS = ("candles",)
CATALOG_NAME = "catalog.duckdb"
FORMATS = ("table", "csv", "json", "parquet")
#: Rows per box in table output: DuckDB's renderer draws at most this many rows at once.
_BOX_ROWS = 10_000


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


def view_sql(root: Path, table: schemas.Table) -> str:
    """SELECT every column of `table` (schema columns, then partition columns) over the files under `root`."""
    typed = dict(zip(table.schema.names, map(duckdb_type, table.schema.types))) | PARTITION_TYPES
    empty = ", ".join(f"NULL::{t} AS {_ident(c)}" for c, t in typed.items())
    hive = "{" + ", ".join(f"{_literal(c)}: {_literal(t)}" for c, t in PARTITION_TYPES.items()) + "}"
    scan = (f"read_parquet({_literal(_glob(root, table.name))}, hive_partitioning = true, hive_types = {hive}, "
            "union_by_name = true, allow_empty = true)")
    columns = ", ".join(map(_ident, typed))
    return f"SELECT {columns} FROM (SELECT {empty} WHERE false UNION ALL BY NAME SELECT * FROM {scan})"


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


def create_views(con: duckdb.DuckDBPyConnection, root: Path) -> None:
    """Create (or replace) the view of every table over the absolute `root`."""
    for table in schemas.TABLES.values():
        if table.name in LATEST_VIEWS:
            all_name = f"{table.name}_all"
            con.execute(f"CREATE OR REPLACE VIEW {_ident(all_name)} AS {view_sql(root, table)}")
            con.execute(f"CREATE OR REPLACE VIEW {_ident(table.name)} AS {latest_sql(table, all_name)}")
        else:
            con.execute(f"CREATE OR REPLACE VIEW {_ident(table.name)} AS {view_sql(root, table)}")


def connect(root: str | os.PathLike[str], *, database: str = ":memory:") -> duckdb.DuckDBPyConnection:
    """A DuckDB connection (session time zone UTC) with a view per table over the dataset `root`."""
    root = _root(root)
    con = duckdb.connect(database)
    con.execute("SET TimeZone = 'UTC'")
    if isinstance(root, str):  # s3://: DuckDB reads the bucket through s3fs (httpfs cannot be installed offline)
        con.register_filesystem(storage.filesystem())
    create_views(con, root)
    return con


def write_catalog(root: str | os.PathLike[str], path: str | os.PathLike[str] | None = None) -> Path:
    """Write a DuckDB file holding the views (default `<root>/catalog.duckdb`), atomically; return its path.

    The views hold the root as an absolute path: DuckDB resolves relative paths against the opener's working
    directory, not the file's, so absolute is the only form that works from anywhere. Moving the dataset
    needs `replay sql --write-catalog` again.
    """
    root = _root(root)
    if isinstance(root, str) and not path:
        raise ValueError("an s3:// root needs a local catalog path (its views then read the bucket through a "
                         "registered s3fs filesystem, see docs/scale.md)")
    target = Path(path).resolve() if path else root / CATALOG_NAME
    if isinstance(root, Path) and any(target.is_relative_to(root / name) for name in schemas.TABLES):
        raise ValueError(f"the catalog must not be inside a table directory: {target}")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    os.unlink(tmp)  # DuckDB creates the file itself and refuses an empty one
    try:
        con = duckdb.connect(tmp)
        try:
            if isinstance(root, str):
                con.register_filesystem(storage.filesystem())
            create_views(con, root)
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
    """A scratch connection that renders timestamps in UTC."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


def _print_table(reader: pa.RecordBatchReader) -> None:
    """Draw every row with DuckDB's box renderer, a box per `_BOX_ROWS` rows; all columns unless on a terminal."""
    width = None if sys.stdout.isatty() else 1_000_000
    drawer = _utc_connection()
    drawn = False
    for batch in reader:
        drawer.from_arrow(pa.Table.from_batches([batch])).show(max_rows=batch.num_rows, max_width=width)
        drawn = True
    if not drawn:
        drawer.from_arrow(reader.schema.empty_table()).show(max_width=width)


def _write(reader: pa.RecordBatchReader, fmt: str, output: str | None) -> None:
    """Stream the result as CSV, JSON (one object a line) or Parquet to `output`, or CSV/JSON to stdout."""
    writer = _utc_connection()  # not the query's: the user's session and `SHOW TABLES` stay untouched
    writer.register("result", reader)
    with tempfile.TemporaryDirectory(prefix="booktape-sql-") as tmp:
        target = output or os.path.join(tmp, f"result.{fmt}")
        writer.execute(f"COPY result TO {_literal(target)} (FORMAT {fmt})")
        if not output:
            with open(target, "rb") as f:
                shutil.copyfileobj(f, sys.stdout.buffer)
            sys.stdout.buffer.flush()


@click.command("sql")
@click.argument("query", required=False)
@click.option("--root", envvar="BOOKTAPE_ROOT", default="./data", show_default="$BOOKTAPE_ROOT or ./data",
              type=click.Path(file_okay=False), help="Dataset root.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
              help="table: boxes for people; csv, json (one object a line): stdout for scripts; parquet: --output.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write the result to this file.")
@click.option("--limit", type=click.IntRange(min=0), help="At most this many rows.")
@click.option("--write-catalog", "catalog", is_flag=True,
              help="(Re)write <root>/catalog.duckdb for the duckdb CLI or notebooks.")
def sql(query: str | None, root: str, fmt: str, output: str | None, limit: int | None, catalog: bool) -> None:
    """Run SQL over every table of the dataset (views: raw, book_events, trades, candles, candles_all, ...)."""
    if fmt == "parquet" and not output:
        raise click.ClickException("--format parquet needs --output FILE")
    if fmt == "table" and output:
        raise click.ClickException("--output needs --format csv, json or parquet")
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
        reader = rel.to_arrow_reader(_BOX_ROWS)
        if fmt == "table":
            _print_table(reader)
        else:
            _write(reader, fmt, output)
    except (duckdb.Error, OSError, ValueError) as e:
        raise click.ClickException(str(e).strip().splitlines()[0]) from None
