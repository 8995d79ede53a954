"""`recorder` command: run the daemon, the simulator, and dataset status."""
from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

import click


@click.group()
@click.version_option(package_name="booktape")
def main() -> None:
    """booktape recorder: record venues' books and trades into a Parquet dataset."""


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="TOML config (see recorder.example.toml).")
@click.option("--allow-unlisted", is_flag=True,
              help="Record even when a configured pair is not in the venue's list of pairs (its feeds then report "
                   "failing in /health) instead of refusing to start.")
def run(config_path: str, allow_unlisted: bool) -> None:
    """Record the configured venues until SIGTERM/SIGINT. A start-up failure is one line on stderr, exit 2."""
    import signal

    early: list[int] = []  # a stop asked for while still starting up is honoured once running
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: early.append(signum))
    # Arrow's pool for the recorder process, chosen before pyarrow loads (the Parquet writer takes the C++ default
    # pool, which only this variable sets): mimalloc kept faulting in fresh zeroed huge pages for the store's
    # buffers, 8-10 % of the recorder's CPU on the firehose; jemalloc reuses them (bench/RESULTS.md).
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")
    from recorder import config
    from recorder.startup import fail

    try:
        cfg = config.load(config_path)
    except config.ConfigError as e:
        fail(str(e), _log_format(config_path))
    from recorder import daemon

    sys.exit(daemon.main(cfg, early=early, allow_unlisted=allow_unlisted))


def _log_format(config_path: str) -> str:
    """The config's log_format when it can be read at all (a config error is reported in it)."""
    import tomllib

    try:
        with open(config_path, "rb") as fh:
            fmt = tomllib.load(fh).get("recorder", {}).get("log_format", "json")
    except (OSError, ValueError, AttributeError):
        return "kv"
    return fmt if fmt in ("json", "kv") else "kv"


@main.command()
@click.option("--root", required=True, type=click.Path(file_okay=False, exists=True), help="Dataset root.")
def status(root: str) -> None:
    """Rows per table and venue, and the sessions events (gaps, rejects, restarts) of a dataset."""
    from recorder.status import render, summarize

    click.echo(render(summarize(root), Path(root)), nl=False)


@main.command()
@click.option("--root", required=True, help="Dataset root: a directory or s3://bucket/prefix.")
@click.option("--older-than", "older_than", required=True, help="Age like 30d or 36h: whole days older are dropped.")
@click.option("--table", "tables", multiple=True, help="Only this table (repeatable; default: every table).")
@click.option("--dry-run", is_flag=True, help="List what would go, change nothing.")
def prune(root: str, older_than: str, tables: tuple[str, ...], dry_run: bool) -> None:
    """Drop date partitions older than an age; never the current day; safe while readers and recorders run."""
    from recorder.store import prune as P
    from schemas import storage

    if not storage.is_remote(root) and not os.path.isdir(root):
        raise click.ClickException(f"dataset root not found: {root}")
    try:
        parts = P.prune(root, P.parse_age(older_than), list(tables) or None, dry_run=dry_run)
    except P.PruneError as e:
        raise click.BadParameter(str(e)) from None
    for p in parts:
        click.echo(f"{'would drop' if dry_run else 'dropped'} {p.rel}")
    click.echo(f"{len(parts)} partition(s) {'to drop' if dry_run else 'dropped'} "
               f"(dates before {P.cutoff(P.parse_age(older_than))})")


@main.command()
@click.option("--seconds", default=30.0, show_default=True, help="How long to record (after the kernels are loaded).")
@click.option("--root", type=click.Path(), default=None, help="Dataset root (default: a temp dir).")
@click.option("--pairs", default="BTC_USD,ETH_BTC", show_default=True)
@click.option("--rate", default=50.0, show_default=True, help="Simulated messages per second per venue and pair.")
@click.option("--seed", default=1, show_default=True)
def demo(seconds: float, root: str | None, pairs: str, rate: float, seed: int) -> None:
    """Simulator for all four venues + recorder for a while, then what was recorded (exit 1 if nothing was)."""
    import logging

    from recorder import daemon, demo as demo_mod
    from recorder.startup import StartupError, fail
    from recorder.status import render, summarize

    daemon.setup_logging("kv", "warning", lambda s: s)
    logging.getLogger("recorder").setLevel(logging.ERROR)
    tmp = None
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="booktape-demo-")
        root = tmp.name
    click.echo(f"recording {seconds:g}s from the simulator ({pairs}, {rate:g} msg/s per venue and pair) into {root}")
    try:
        asyncio.run(demo_mod.record(seconds, root, pairs=pairs.split(","), rate=rate, seed=seed,
                                    announce=lambda line: click.echo(line)))
    except StartupError as e:
        fail(str(e))
    summary = summarize(root)
    click.echo(render(summary, Path(root)), nl=False)
    empty = demo_mod.nothing_recorded(summary)
    if tmp is not None:
        tmp.cleanup()
    if empty:
        click.echo(f"recorder demo: nothing recorded from {', '.join(empty)} in {seconds:g}s", err=True)
        sys.exit(1)


from recorder.sim.cli import simulate  # noqa: E402

main.add_command(simulate)
