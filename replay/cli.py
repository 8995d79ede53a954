"""`replay` command: books, BBO, depth, verification, plots, MBO import and SQL over a recorded dataset."""
from __future__ import annotations

import datetime as dt
import re
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path

import click

from replay import book as B
from replay import cluster, outputs, remote, source  # cluster imports Dask only when a scheduler is used
from replay.sql import sql
from schemas import storage

_FRACTION = re.compile(r"^(.*?[T ]\d{2}:\d{2}:\d{2})\.(\d{1,9})(.*)$")
_DURATION = re.compile(r"^(\d+)(ns|us|ms|s|m|h)$")
_UNITS = {"ns": 1, "us": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


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
    """Epoch ns from ISO-8601 (`2026-11-21T14:03:07.250Z`, `2026-11-21 14:03:07.250`, naive = UTC) or epoch
    seconds / milliseconds / microseconds / nanoseconds (told apart by magnitude)."""
    s = text.strip()
    try:
        v = Decimal(s)
    except InvalidOperation:
        v = None
    if v is not None and v.is_finite():
        mag = abs(v)
        unit = 10**9 if mag < 10**11 else 10**6 if mag < 10**14 else 10**3 if mag < 10**17 else 1
        ns = v * unit
        if ns != ns.to_integral_value():
            raise click.BadParameter(f"{text!r} has digits below a nanosecond")
        return int(ns)
    frac = 0
    m = _FRACTION.match(s)
    if m:
        s, frac = m.group(1) + m.group(3), int(m.group(2).ljust(9, "0"))
    try:
        d = dt.datetime.fromisoformat(s)
    except ValueError:
        raise click.BadParameter(f"cannot read {text!r} as a time (ISO-8601 or epoch s/ms/us/ns)") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.timezone.utc)
    return int(d.timestamp()) * 10**9 + frac


def iso(ns: int) -> str:
    """ISO-8601 UTC text of an epoch-ns instant, to the nanosecond."""
    d = dt.datetime.fromtimestamp(ns // 10**9, dt.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S") + f".{ns % 10**9:09d}Z"


class _Time(click.ParamType):
    name = "TIME"

    def convert(self, value, param, ctx):
        return value if isinstance(value, int) else parse_ts(value)


TIME = _Time()


class _Root(click.ParamType):
    """A dataset root: a local directory (Path) or an s3://bucket/prefix URL (kept as text)."""

    name = "ROOT"

    def convert(self, value, param, ctx):
        return value if isinstance(value, Path) or storage.is_remote(value) else Path(value)


ROOT = _Root()


def _common(f):
    """The options every command takes."""
    opts = [
        click.option("--root", required=True, type=ROOT, envvar="BOOKTAPE_ROOT",
                     help="dataset root: a directory or s3://bucket/prefix"),
        click.option("--exchange", required=True, help="venue, e.g. btcalpha"),
        click.option("--pair", required=True, help="pair, e.g. BTC_USD"),
        click.option("--start", type=TIME, default=None, help="range start (ISO-8601 or epoch s/ms/ns)"),
        click.option("--end", type=TIME, default=None, help="range end, exclusive"),
        click.option("--jobs", type=click.IntRange(1, 256), default=1, show_default=True,
                     help="worker processes, one hour each"),
        click.option("--progress/--no-progress", default=None, help="progress bar on stderr (default: on a TTY)"),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _hours(root: Path, exchange: str, pair: str, start: int | None, end: int | None) -> list[int]:
    """Hours with book data in [start, end), with one-line errors for unknown venues, pairs and empty ranges."""
    known = set()
    for t in ("book_events", "book_levels"):
        known.update(source.pairs(root, t, exchange))
    if not known:
        raise click.UsageError(f"no book data for exchange {exchange!r} under {root}")
    if pair not in known:
        raise click.UsageError(f"unknown pair {pair!r} for {exchange}; known: {', '.join(sorted(known))}")
    lo = 0 if start is None else start
    hi = 2**62 if end is None else end
    if hi <= lo:
        raise click.UsageError(f"--end ({iso(hi)}) is not after --start ({iso(lo)})")
    table = "book_events" if B.kind(root, exchange, pair) == "l3" else "book_levels"
    hours = source.hours(root, table, exchange, pair, lo, hi)
    if not hours:
        raise click.UsageError(f"no {exchange} {pair} book data between {iso(lo)} and "
                               f"{'the end' if end is None else iso(hi)}")
    return hours


def _progress(label: str, flag: bool | None) -> outputs.Progress:
    return outputs.Progress(label, sys.stderr.isatty() if flag is None else flag)


def _every(text: str) -> int | None:
    """--every: `event`, or a duration like 250ms, 1s, 1m."""
    if text == "event":
        return None
    m = _DURATION.match(text)
    if not m or int(m.group(1)) == 0:
        raise click.BadParameter(f"{text!r}: use `event` or a duration like 100ms, 1s, 1m")
    return int(m.group(1)) * _UNITS[m.group(2)]


def _report(res: B.HourResult) -> str:
    """One line about a replayed hour: rows, duplicates, anomalies, digest."""
    bad = ", ".join(f"{k}={v}" for k, v in res.anomalies.items() if v)
    return (f"{iso(res.hour)[:13]} {res.kind} rows={res.rows} dup={res.duplicates} "
            f"anomalies={bad or 'none'} digest={res.digest[:16]}")


def _run(root, exchange, pair, start, end, jobs, progress, label, scheduler=None, **kw) -> list[B.HourResult]:
    if scheduler:
        if jobs > 1:
            raise click.UsageError("--jobs and --scheduler exclude each other (the scheduler's workers do the jobs)")
        try:
            cluster.check(scheduler)
        except cluster.ClusterError as e:
            raise click.UsageError(str(e)) from None
    try:
        with remote.staged(root, exchange, pair, start, end) as local:  # s3://: a local copy, outputs uploaded
            hours = _hours(local, exchange, pair, start, end)
            return outputs.run_hours(str(local), exchange, pair, hours, jobs=jobs,
                                     progress=_progress(label, progress), scheduler=scheduler, **kw)
    except B.ReplayError as e:
        raise click.ClickException(str(e)) from None
    except cluster.ClusterError as e:
        raise click.ClickException(str(e)) from None


#: --scheduler, for the commands that write: one Dask task per hour (replay.cluster).
_scheduler = click.option("--scheduler", default=None, metavar="ADDRESS|local:N",
                          help="run the hours on a Dask scheduler (tcp://host:8786) or a LocalCluster of N worker "
                               "processes (needs booktape[cluster])")


@click.group(cls=_Group)
@click.version_option(package_name="booktape")
def main() -> None:
    """booktape replay: rebuild books from a dataset and query every table."""


@main.command()
@_common
@click.option("--at", "at", type=TIME, required=True, help="instant: every event with ts_recv <= AT applied")
@click.option("--levels", type=click.IntRange(1), default=10, show_default=True)
@click.option("--orders", is_flag=True, help="list resting orders (L3) instead of levels")
def book(root, exchange, pair, start, end, jobs, progress, at, levels, orders):
    """Print the book at an instant."""
    lo = at - at % source.HOUR_NS
    try:
        with remote.staged(root, exchange, pair, lo - 60 * 10**9, at + 1) as local:
            _hours(local, exchange, pair, lo, at + 1)
            bk = B.book_at(local, exchange, pair, at)
    except B.ReplayError as e:
        raise click.ClickException(str(e)) from None
    state = "GAP (not known exact)" if bk.gap else "exact"
    click.echo(f"{exchange} {pair} at {iso(at)}: seq {bk.seq} ({iso(bk.ts)}), {state}, digest {bk.digest()}")
    if orders and bk.l3:
        for side, price, amount, oid in bk.orders:
            click.echo(f"{side:3} {price:>20} {amount:>20} {oid}")
        return
    lv = bk.levels(levels)
    click.echo(f"{'':5}{'price':>20} {'amount':>20} {'count':>6}")
    for name in ("ask", "bid"):
        rows = lv[name][::-1] if name == "ask" else lv[name]
        for p, a, c in rows:
            click.echo(f"{name:5}{p:>20} {a:>20} {'' if c is None else c:>6}")


@main.command()
@_common
@_scheduler
def bbo(root, exchange, pair, start, end, jobs, progress, scheduler):
    """Write the `bbo` table (best bid/offer after every change) for every hour meeting [start, end)."""
    for r in _run(root, exchange, pair, start, end, jobs, progress, "bbo", scheduler, bbo=True):
        click.echo(_report(r))


@main.command()
@_common
@click.option("--levels", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--every", default="1s", show_default=True, help="`event` or a duration (100ms, 1s, 1m)")
@_scheduler
def depth(root, exchange, pair, start, end, jobs, progress, levels, every, scheduler):
    """Write the `depth` table (top-N levels per side per interval or event) for every hour meeting [start, end)."""
    d = B.Depth(levels, _every(every))
    for r in _run(root, exchange, pair, start, end, jobs, progress, "depth", scheduler, depth=d):
        click.echo(_report(r))


@main.command()
@_common
@click.option("--window", default="2s", show_default=True,
              help="L3: a grouped snapshot passes if the book equals it at an event within this much ts_recv")
def verify(root, exchange, pair, start, end, jobs, progress, window):
    """Replay and check against recorded grouped snapshots (L3) or snapshot consistency (L2); exit 1 on any problem."""
    bad = 0
    w = _every(window)
    if w is None:
        raise click.BadParameter("--window takes a duration like 500ms or 2s")
    for r in _run(root, exchange, pair, start, end, jobs, progress, "verify", verify=True, write=False, window=w):
        changes = f" level_changes={r.changes}" if r.kind == "l2" else ""
        click.echo(_report(r) + f" checked={r.checked} mismatches={len(r.mismatches)}{changes}")
        for m in r.mismatches:
            click.echo(f"  mismatch: {m}")
        for k, v in r.anomalies.items():
            if v:
                click.echo(f"  anomaly: {k} x{v} (first at seq {r.first.get(k)})")
        bad += len(r.mismatches) + sum(r.anomalies.values())
    if bad:
        raise click.ClickException(f"verify failed: {bad} problem(s)")
    click.echo("verify ok")


@main.command()
@_common
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="PNG file to write")
@click.option("--levels", type=click.IntRange(1, 200), default=20, show_default=True)
@click.option("--every", default="1s", show_default=True, help="depth sampling interval")
def plot(root, exchange, pair, start, end, jobs, progress, out, levels, every):
    """PNG of mid, spread and a depth heatmap over the range (needs the `plot` extra: matplotlib)."""
    from replay import plot as P

    try:
        P.require()
    except P.MissingMatplotlib as e:
        raise click.ClickException(str(e)) from None
    res = _run(root, exchange, pair, start, end, jobs, progress, "plot", bbo=True,
               depth=B.Depth(levels, _every(every)), write=False)
    P.plot(res, out, f"{exchange} {pair}", start, end)
    click.echo(f"wrote {out}")


@main.command("import-mbo")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--root", required=True, type=click.Path(file_okay=False, path_type=Path), envvar="BOOKTAPE_ROOT")
@click.option("--exchange", required=True)
@click.option("--pair", required=True)
@click.option("--start", type=TIME, default=None, help="ignored (accepted like every command)")
@click.option("--end", type=TIME, default=None, help="ignored (accepted like every command)")
@click.option("--jobs", type=click.IntRange(1, 256), default=1, help="ignored (accepted like every command)")
@click.option("--progress/--no-progress", default=None, help="ignored (accepted like every command)")
def import_mbo(file, root, exchange, pair, start, end, jobs, progress):
    """Import a market-by-order CSV/Parquet (ts, action, side, price, size, order_id) as book_events."""
    from replay import mbo

    try:
        n, paths = mbo.import_file(file, root, exchange, pair)
    except mbo.MboError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"imported {n} book_events rows into {len(paths)} file(s) under {root}")


main.add_command(sql)
