"""`replay` command: books, BBO, depth, verification, plots, MBO import and SQL over a recorded dataset."""
from __future__ import annotations

import sys
from pathlib import Path

import click
import pyarrow.parquet as pq

from replay import book as B
from booktape import Dataset, DatasetError, duration_ns
from booktape import import_mbo as _import_mbo
from replay import outputs, times
from replay.times import iso
from replay.sql import sql
from schemas import files



class _Group(click.Group):
    """A group whose usage errors are one line (`Error: ...`), never a usage block or a traceback."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as e:
            click.echo(f"Error: {e.format_message()}", err=True)
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


def parse_ts(text: str) -> int:
    """Epoch ns of a command-line time (see replay.times.parse_ts); a one-line usage error otherwise."""
    try:
        return times.parse_ts(text)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


class _Time(click.ParamType):
    name = "TIME"

    def convert(self, value, param, ctx):
        return value if isinstance(value, int) else parse_ts(value)


TIME = _Time()


def _options(*names: str):
    """The shared options a command takes (names from _OPTIONS), in that order."""
    def deco(f):
        for n in reversed(names):
            f = _OPTIONS[n](f)
        return f
    return deco


_OPTIONS = {
    "root": click.option("--root", required=True, type=click.Path(file_okay=False, path_type=Path),
                         envvar="BOOKTAPE_ROOT", help="dataset root (or $BOOKTAPE_ROOT)"),
    "exchange": click.option("--exchange", required=True, help="venue, e.g. btcalpha"),
    "pair": click.option("--pair", required=True, help="pair, e.g. BTC_USD"),
    "start": click.option("--start", type=TIME, default=None, help="range start (ISO-8601 or epoch s/ms/us/ns)"),
    "end": click.option("--end", type=TIME, default=None, help="range end, exclusive"),
    "jobs": click.option("--jobs", type=click.IntRange(1, 256), default=1, show_default=True,
                         help="worker processes, one hour each"),
    "progress": click.option("--progress/--no-progress", default=None,
                             help="progress bar on stderr (default: on a TTY)"),
}
_RANGE = ("root", "exchange", "pair", "start", "end", "jobs", "progress")


def _dataset(root: Path) -> Dataset:
    try:
        return Dataset(root)
    except FileNotFoundError as e:
        raise click.UsageError(str(e)) from None


def _call(fn, *args, **kw):
    """Run a Dataset method with its one-line errors as the command's."""
    try:
        return fn(*args, **kw)
    except DatasetError as e:
        raise click.UsageError(str(e)) from None


def _progress(label: str, flag: bool | None) -> outputs.Progress:
    return outputs.Progress(label, sys.stderr.isatty() if flag is None else flag)


def _every(text: str) -> int | None:
    """--every / --window: `event`, or a duration like 250ms, 1s, 1m."""
    try:
        return duration_ns(text)
    except DatasetError as e:
        raise click.BadParameter(str(e)) from None


def _report(res: B.HourResult) -> str:
    """One line about a replayed hour: events read, duplicates, anomalies, digest."""
    bad = ", ".join(f"{k}={v}" for k, v in res.anomalies.items() if v)
    return (f"{iso(res.hour)[:13]} {res.kind} events={res.rows} dup={res.duplicates} "
            f"anomalies={bad or 'none'} digest={res.digest[:16]}")


def _report_written(table: str, root: Path, written) -> None:
    """Per hour: its replay line, the rows written and the file; then the total and where."""
    for r, path in zip(written.results, written):
        n = pq.ParquetFile(path).metadata.num_rows if path.exists() else 0
        click.echo(f"{_report(r)} {table}_rows={n} -> {path}")
    where = written[0].parent.parent if written else root / table
    click.echo(f"wrote {written.rows} {table} rows in {len(written)} file(s) under {where}")


@click.group(cls=_Group)
@click.version_option(package_name="booktape")
def main() -> None:
    """booktape replay: rebuild books from a dataset and query every table."""


@main.command()
@_options("root", "exchange", "pair")
@click.option("--at", "at", type=TIME, required=True, help="instant: every event with ts_recv <= AT applied")
@click.option("--levels", type=click.IntRange(1), default=10, show_default=True)
@click.option("--orders", is_flag=True, help="list resting orders (L3) instead of levels")
def book(root, exchange, pair, at, levels, orders):
    """Print the book at an instant."""
    bk = _call(_dataset(root).book, exchange, pair, at, levels=levels, orders=orders)
    state = "GAP (not known exact)" if bk.gap else "exact"
    click.echo(f"{exchange} {pair} at {iso(at)}: seq {bk.seq} ({iso(bk.ts_ns)}), {state}, digest {bk.digest}")
    rows = bk.arrow.to_pylist()
    if orders and "order_id" in bk.column_names:
        for r in rows:
            click.echo(f"{r['side']:3} {r['price']:>20} {r['amount']:>20} {r['order_id']}")
        return
    click.echo(f"{'':5}{'price':>20} {'amount':>20} {'count':>6}")
    asks = [r for r in rows if r["side"] == "ask"][::-1]
    for r in asks + [r for r in rows if r["side"] == "bid"]:
        click.echo(f"{r['side']:5}{r['price']:>20} {r['amount']:>20} {'' if r['count'] is None else r['count']:>6}")


@main.command()
@_options(*_RANGE)
def bbo(root, exchange, pair, start, end, jobs, progress):
    """Write the `bbo` table (best bid/offer after every change) for every hour meeting [start, end)."""
    w = _call(_dataset(root).write_bbo, exchange, pair, start, end, jobs=jobs, progress=_progress("bbo", progress))
    _report_written("bbo", root, w)


@main.command()
@_options(*_RANGE)
@click.option("--levels", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--every", default="1s", show_default=True, help="`event` or a duration (100ms, 1s, 1m)")
def depth(root, exchange, pair, start, end, jobs, progress, levels, every):
    """Write the `depth` table (top-N levels per side per interval or event) for every hour meeting [start, end)."""
    w = _call(_dataset(root).write_depth, exchange, pair, levels, _every(every), start, end, jobs=jobs,
              progress=_progress("depth", progress))
    _report_written("depth", root, w)


#: `replay verify` exit status when no snapshot could be checked (see its help).
NOTHING_CHECKED = 3


@main.command()
@_options(*_RANGE)
@click.option("--window", default="2s", show_default=True,
              help="L3: a grouped snapshot passes if the book equals it at an event within this much ts_recv")
@click.option("--allow-empty", is_flag=True, help="exit 0 when there was nothing to check")
def verify(root, exchange, pair, start, end, jobs, progress, window, allow_empty):
    """Replay and check against recorded grouped snapshots (L3) or snapshot consistency (L2).

    Exit 0 when at least one snapshot was checked and every check passed, 1 on any mismatch or anomaly, 3 when
    nothing could be checked (no recorded snapshot in the range: that is not a pass; --allow-empty makes it 0)."""
    bad = checked = 0
    w = _every(window)
    if w is None:
        raise click.BadParameter("--window takes a duration like 500ms or 2s")
    for r in _call(_dataset(root).verify, exchange, pair, start, end, window=w, jobs=jobs,
                   progress=_progress("verify", progress)):
        changes = f" level_changes={r.changes}" if r.kind == "l2" else ""
        skipped = f" skipped={r.skipped}" if r.kind == "l3" else ""
        click.echo(_report(r) + f" checked={r.checked} mismatches={len(r.mismatches)}{skipped}{changes}")
        if r.skipped:
            click.echo(f"  skipped: {r.skipped} snapshot(s) taken while the book was not known exact (before the "
                       "first join, inside a gap, or around a restart or disconnect)")
        for m in r.mismatches:
            click.echo(f"  mismatch: {m}")
        for k, v in r.anomalies.items():
            if v:
                click.echo(f"  anomaly: {k} x{v} (first at seq {r.first.get(k)})")
        bad += len(r.mismatches) + sum(r.anomalies.values())
        checked += r.checked
    if bad:
        raise click.ClickException(f"verify failed: {bad} problem(s)")
    if not checked:
        click.echo(f"verify: nothing checked: no recorded snapshot of {exchange} {pair} in the range, so the "
                   f"replay was not compared with anything", err=True)
        if not allow_empty:
            sys.exit(NOTHING_CHECKED)
        return
    click.echo(f"verify ok: {checked} snapshot(s) checked, 0 mismatches")


@main.command()
@_options(*_RANGE)
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True, help="PNG file to write")
@click.option("--levels", type=click.IntRange(1, 200), default=20, show_default=True)
@click.option("--every", default="1s", show_default=True, help="depth sampling interval")
def plot(root, exchange, pair, start, end, jobs, progress, out, levels, every):
    """PNG of mid, spread, trades and a depth heatmap over the range (needs the `plot` extra: matplotlib)."""
    from replay import plot as P

    try:
        P.require()
    except P.MissingMatplotlib as e:
        raise click.ClickException(str(e)) from None
    path = _call(_dataset(root).plot, exchange, pair, out, start, end, levels=levels, every=_every(every),
                 jobs=jobs, progress=_progress("plot", progress))
    click.echo(f"wrote {path}")


@main.command()
@click.option("--root", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              envvar="BOOKTAPE_ROOT", help="dataset root")
@click.option("--quarantine", is_flag=True, help="move every file listed to <root>/_quarantine/ (same relative path)")
def check(root, quarantine):
    """List unreadable files, files whose schema does not match schemas/, files outside the layout and leftover
    temporary files; exit 1 if there are any (0 once --quarantine moved them). Nothing is ever deleted."""
    found = files.scan(root)
    good = sum(len(v) for v in found.good.values())
    for b in found.bad:
        click.echo(f"{b.kind}: {b.path.relative_to(root)}: {b.reason}")
    click.echo(f"{good} data file(s) readable, {len(found.bad)} problem file(s)")
    if not found.bad:
        return
    if not quarantine:
        raise click.ClickException(f"{len(found.bad)} problem file(s); `replay check --root {root} --quarantine` "
                                   f"moves them to {root / files.QUARANTINE}/")
    for src, dst in files.quarantine(root, found.bad):
        click.echo(f"moved {src.relative_to(root)} -> {dst.relative_to(root)}")


@main.command("import-mbo")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--root", required=True, type=click.Path(file_okay=False, path_type=Path), envvar="BOOKTAPE_ROOT",
              help="dataset root")
@click.option("--exchange", required=True, help="venue name to import under, e.g. glbx")
@click.option("--pair", required=True, help="pair to import under, BASE_QUOTE, e.g. ES_USD")
@click.option("--format", "fmt", type=click.Choice(["generic", "databento"]), default="generic", show_default=True,
              help="CSV/Parquet dialect (.dbn and .dbn.zst files are always databento)")
@click.option("--instrument-id", type=int, default=None, help="databento: the instrument to import from a "
              "file that holds several")
@click.option("--replace", is_flag=True, help="replace the book data the pair already holds")
@click.option("--writer-id", default=None, help="import under this writer id beside running writers (a recorder)")
def import_mbo(file, root, exchange, pair, fmt, instrument_id, replace, writer_id):
    """Import a market-by-order file (Databento DBN/CSV/Parquet, or generic CSV/Parquet) as book_events."""
    try:
        n, paths = _import_mbo(root, file, exchange, pair, format=fmt, replace=replace, writer_id=writer_id,
                              instrument_id=instrument_id)
    except DatasetError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"imported {n} book_events rows into {len(paths)} file(s) under {root / 'book_events'}")


main.add_command(sql)
