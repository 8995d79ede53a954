"""`recorder` command: run the daemon, the simulator, and dataset status."""
from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="booktape")
def main() -> None:
    """booktape recorder: record venues' books and trades into a Parquet dataset."""


from recorder.sim.cli import simulate  # noqa: E402

main.add_command(simulate)
