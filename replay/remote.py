"""Replay over an s3:// dataset root: the hours' inputs are staged in a local temporary root, replayed there
exactly as a local root is, and the outputs written are uploaded (verified) to their keys in the bucket.

Shipped objects never change (each is uploaded whole, then only read), so a staged copy is a consistent
snapshot of the partitions listed. Only the partitions of the exchange and pair asked for, and of the dates
meeting the range, are copied.
"""
from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from replay import source
from schemas import ALL_PAIRS, storage

#: What a replay reads (book tables, and sessions for gaps), and what it writes.
INPUTS = ("book_events", "book_levels", "sessions")
OUTPUTS = ("bbo", "depth")


def _dates(fs, base: str) -> list[str]:
    return sorted(p.rsplit("date=", 1)[1] for p in fs.ls(base, detail=False) if "/date=" in p) \
        if fs.exists(base) else []


def mirror(fs, root: str, local: Path, exchange: str, pair: str, lo: int | None, hi: int | None) -> int:
    """Copy the inputs of exchange/pair (sessions: the venue-wide partition too) for dates meeting [lo, hi)."""
    first = None if lo is None else source.date_of(lo)
    last = None if hi is None else source.date_of(max(hi - 1, 0))
    n = 0
    for table in INPUTS:
        for p in (pair, ALL_PAIRS) if table == "sessions" else (pair,):
            rel = f"{table}/exchange={exchange}/pair={p}"
            for date in _dates(fs, storage.key(root, rel)):
                if (first and date < first) or (last and date > last):
                    continue
                src = storage.key(root, rel, f"date={date}")
                dst = local / rel / f"date={date}"
                for obj in fs.ls(src, detail=False):
                    name = obj.rsplit("/", 1)[1]
                    if name.endswith(".parquet") and not name.startswith(("_", ".")):
                        dst.mkdir(parents=True, exist_ok=True)
                        fs.get_file(obj, str(dst / name))
                        n += 1
    return n


def publish(fs, local: Path, root: str) -> list[str]:
    """Upload every output file written under the staged root to its key, verified."""
    keys = []
    for table in OUTPUTS:
        for path in sorted((local / table).rglob("*.parquet")) if (local / table).is_dir() else ():
            if path.name.startswith((".", "_")):
                continue
            key = storage.key(root, path.relative_to(local).as_posix())
            storage.put_verified(fs, path, key)
            keys.append(key)
    return keys


@contextmanager
def staged(root, exchange: str, pair: str, lo: int | None = None, hi: int | None = None) -> Iterator[Path]:
    """The root itself when local; for s3:// a local copy of what the replay reads, whose outputs are uploaded
    when the body succeeds."""
    if not storage.is_remote(root):
        yield Path(root)
        return
    fs = storage.filesystem()
    with tempfile.TemporaryDirectory(prefix="booktape-stage-") as tmp:
        local = Path(tmp)
        mirror(fs, str(root), local, exchange, pair, lo, hi)
        yield local
        publish(fs, local, str(root))
