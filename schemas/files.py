"""The dataset's files: which are data files of which table, and whether each one can be read as it.

A root that runs for months collects the odd broken or foreign file: a file truncated by a full disk,
something copied in by hand, a temporary file left by a killed writer. Every reader (the DuckDB views,
replay, `recorder status`, compaction) takes its data files from `data_files`/`scan` here, which skip such
files with one line naming each (once per process), so one bad file never hides the good ones.
`replay check` lists them all and can move them to `<root>/_quarantine/`.
"""
from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from . import EXCHANGE_RE, PAIR_RE, TABLES, Table

MAGIC = b"PAR1"
QUARANTINE = "_quarantine"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}\Z")
#: A writer's temporary name (store/fsutil.temp_name: a leading dot and a .tmp suffix).
_TEMP = re.compile(r"^\..*\.tmp\Z")
#: Seconds after which a temporary file is a leftover, not a file a running writer is about to rename.
LEFTOVER_AGE = 3600


@dataclass(frozen=True)
class BadFile:
    """A file that is not a readable data file of its place in the layout, and why."""

    path: Path
    #: unreadable | foreign (schema) | temporary | outside the layout
    kind: str
    reason: str

    def line(self, root: Path | None = None) -> str:
        """One line for a person: the file, what is wrong, and what to do."""
        where = f" --root {root}" if root is not None else ""
        return (f"skipping {self.kind} file {self.path}: {self.reason} "
                f"(`replay check{where} --quarantine` moves it to {QUARANTINE}/)")


_probed: dict[tuple[str, int, int], BadFile | None] = {}
_warned: set[str] = set()


def check(path: Path, table: Table) -> BadFile | None:
    """What is wrong with `path` as a data file of `table` (None: nothing): no Parquet magic, a footer that
    does not parse, or a column whose type differs from the table's. Cached by path, size and mtime."""
    try:
        st = path.stat()
    except OSError as e:
        return BadFile(path, "unreadable", f"cannot stat: {e.strerror}")
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _probed:
        why = _problem(path, st.st_size, table)
        _probed[key] = None if why is None else \
            BadFile(path, "foreign" if why.startswith("foreign") else "unreadable", why)
    return _probed[key]


def _problem(path: Path, size: int, table: Table) -> str | None:
    try:
        with open(path, "rb") as f:
            head = f.read(4)
            if size < 12 or head != MAGIC:
                return "not a Parquet file (no magic bytes at the start)"
            f.seek(size - 8)
            tail = f.read(8)
        if tail[4:] != MAGIC:
            return "truncated or not Parquet (no magic bytes at the end)"
        if int.from_bytes(tail[:4], "little") > size - 12:
            return "truncated (footer longer than the file)"
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as e:
        return f"unreadable: {str(e).splitlines()[0]}"
    want = table.schema
    for name in dict.fromkeys((table.time_column, *table.order_by)):
        if schema.get_field_index(name) < 0:
            return f"foreign: no column {name!r} of table {table.name}"
    for field in schema:
        i = want.get_field_index(field.name)
        if i >= 0 and not _same_type(field.type, want.field(i).type):
            return f"foreign: column {field.name} is {field.type}, table {table.name} has {want.field(i).type}"
    return None


def _same_type(got: pa.DataType, want: pa.DataType) -> bool:
    """Types equal, a dictionary-encoded column counting as its value type."""
    if pa.types.is_dictionary(got):
        got = got.value_type
    return got == want


def data_files(directory: Path, table: Table, *, warn: bool = True) -> list[Path]:
    """Readable data files of one partition directory of `table`, sorted by name; the others are skipped
    with one line each on stderr (once per process), temporary and `_`/`.` names silently."""
    if not directory.is_dir():
        return []
    out = []
    for p in sorted(directory.iterdir()):
        if not p.is_file() or p.suffix != ".parquet" or p.name.startswith(("_", ".")):
            continue
        bad = check(p, table)
        if bad is None:
            out.append(p)
        elif warn:
            report(bad)
    return out


def report(bad: BadFile, root: Path | None = None) -> None:
    """Print a skipped file's line on stderr, once per process."""
    if str(bad.path) not in _warned:
        _warned.add(str(bad.path))
        print(f"booktape: {bad.line(root)}", file=sys.stderr)


def partitions(root: Path, table: str):
    """(directory, exchange, pair, date) of every partition directory of a table that fits the layout."""
    base = Path(root) / table
    for ex in _dirs(base, "exchange="):
        for pair in _dirs(ex, "pair="):
            for date in _dirs(pair, "date="):
                yield date, ex.name[9:], pair.name[5:], date.name[5:]


def _dirs(base: Path, prefix: str) -> list[Path]:
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if p.is_dir() and p.name.startswith(prefix))


@dataclass
class Scan:
    """Every file under a root's table directories: readable data files per table, and the bad ones."""

    good: dict[str, list[Path]]
    bad: list[BadFile]


def scan(root: Path, tables=None) -> Scan:
    """Walk the tables' directories of `root` (the quarantine and internal `_` directories excluded)."""
    root = Path(root)
    good: dict[str, list[Path]] = {}
    bad: list[BadFile] = []
    for name in tables or TABLES:
        table = TABLES[name]
        good[name] = []
        base = root / name
        if not base.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            d = Path(dirpath)
            dirnames[:] = sorted(n for n in dirnames if not n.startswith(("_", ".")))
            rel = d.relative_to(base).parts
            placed = _placed(rel)
            for fn in sorted(filenames):
                p = d / fn
                if _TEMP.match(fn):
                    if _age(p) > LEFTOVER_AGE:
                        bad.append(BadFile(p, "temporary", f"a writer's temporary file, untouched for over "
                                                           f"{LEFTOVER_AGE // 60} minutes"))
                elif fn.startswith(("_", ".")):
                    continue
                elif not placed or not fn.endswith(".parquet"):
                    bad.append(BadFile(p, "outside the layout", f"not {name}/exchange=V/pair=P/date=D/*.parquet"))
                else:
                    problem = check(p, table)
                    if problem is None:
                        good[name].append(p)
                    else:
                        bad.append(problem)
    return Scan(good, bad)


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def _placed(parts: tuple[str, ...]) -> bool:
    """True for the partition directory levels exchange=V/pair=P/date=YYYY-MM-DD with valid values."""
    if len(parts) != 3:
        return False
    ex, pair, date = parts
    return (ex.startswith("exchange=") and bool(EXCHANGE_RE.match(ex[9:])) and pair.startswith("pair=")
            and bool(PAIR_RE.match(pair[5:])) and date.startswith("date=") and bool(_DATE.match(date[5:])))


def quarantine(root: Path, bad: list[BadFile]) -> list[tuple[Path, Path]]:
    """Move each bad file to `<root>/_quarantine/<its path relative to root>`, never overwriting or deleting
    anything; returns (from, to) for each file moved."""
    root = Path(root)
    moved = []
    for b in bad:
        target = root / QUARANTINE / b.path.relative_to(root)
        n = 0
        while target.exists():
            n += 1
            target = target.with_name(f"{b.path.name}.{n}")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(b.path, target)
        moved.append((b.path, target))
    for d in {t.parent for _, t in moved} | {f.parent for f, _ in moved}:
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return moved
