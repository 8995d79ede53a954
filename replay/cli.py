"""`replay` command: books, BBO, depth, verification and SQL over a recorded dataset."""
from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="booktape")
def main() -> None:
    """booktape replay: rebuild books from a dataset and query every table."""
