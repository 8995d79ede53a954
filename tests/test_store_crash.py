"""kill -9 a writer at random moments; every acknowledged row must reach Parquet exactly once."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from recorder.store import Store

CHILD = Path(__file__).with_name("store_crash_child.py")
ROUNDS = 12


def visible_files(root: Path) -> list[Path]:
    """What a hive reader lists: no `_` dirs, no dot names."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(("_", "."))]
        out += [Path(dirpath) / f for f in filenames if not f.startswith((".", "_"))]
    return out


def dot_files(root: Path) -> list[Path]:
    return [Path(d) / f for d, dn, fn in os.walk(root) for f in fn + dn
            if f.startswith(".") and "_log" not in Path(d).parts and "_state" not in Path(d).parts]


def all_seqs(root: Path) -> list[int]:
    files = visible_files(root)
    assert all(f.suffix == ".parquet" for f in files), files
    seqs = []
    for f in files:  # every file opens on its own
        seqs += pq.ParquetFile(f).read(columns=["seq"]).column("seq").to_pylist()
    return seqs


def duckdb_count(root: Path) -> int:
    total = 0
    for table in ("trades", "book_events", "sessions"):
        if (root / table).exists():
            total += duckdb.sql(f"select count(*) from read_parquet('{root}/{table}/**/*.parquet', "
                                "hive_partitioning=true)").fetchall()[0][0]
    return total


def run_round(root: Path, seed: int) -> tuple[int, set[int]]:
    """Start the child, kill -9 it at a random moment; (its first seq, the seqs it acknowledged)."""
    proc = subprocess.Popen([sys.executable, str(CHILD), str(root), "crashy", str(seed)],
                            stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 30
    while not any(line.startswith("ACK") for line in list(lines)):
        assert proc.poll() is None, "child died on its own"
        assert time.monotonic() < deadline, "child never acknowledged"
        time.sleep(0.01)
    time.sleep(random.Random(seed).uniform(0.0, 0.6))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    reader.join(5)
    start = int(lines[0].split()[1])
    acked = set()
    for line in lines[1:]:
        if line.startswith("ACK") and line.endswith("\n"):
            for rng in line.split()[1:]:
                s, n = map(int, rng.split(":"))
                acked.update(range(s, s + n))
    return start, acked


def test_kill9_loses_nothing_acknowledged(tmp_path):
    root = tmp_path / "data"
    acked_all: set[int] = set()
    high = 0
    for round_ in range(ROUNDS):
        start, acked = run_round(root, seed=round_)
        assert start > high, f"round {round_}: seq went back ({start} <= {high})"
        # right after the kill, before recovery: every file a reader can see is whole
        all_seqs(root)
        with Store(root, "crashy"):  # open() recovers the dead child's log
            pass
        seqs = all_seqs(root)
        assert len(seqs) == len(set(seqs)), f"round {round_}: duplicated rows"
        acked_all |= acked
        assert not acked_all - set(seqs), f"round {round_}: lost {len(acked_all - set(seqs))} acknowledged rows"
        assert duckdb_count(root) == len(seqs)
        assert not dot_files(root)
        assert not list((root / "_log" / "crashy").iterdir())
        high = max(seqs + [start])
    assert len(acked_all) > 1000
