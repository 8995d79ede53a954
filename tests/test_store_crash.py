"""kill -9 a writer at random moments; every acknowledged row must reach Parquet exactly once."""
from __future__ import annotations

import pytest

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from recorder.store import Store

pytestmark = pytest.mark.faults  # kill -9, restarts and injected faults: make faults (run by .ci/run)

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


class Child:
    """A crash child whose stdout is collected in the background."""

    def __init__(self, root: Path, writer: str, seed: int):
        self.root = root
        self.proc = subprocess.Popen([sys.executable, str(CHILD), str(root), writer, str(seed)],
                                     stdout=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self.reader.start()

    def wait_ack(self) -> None:
        deadline = time.monotonic() + 30
        while not any(line.startswith("ACK") for line in list(self.lines)):
            assert self.proc.poll() is None, "child died on its own"
            assert time.monotonic() < deadline, "child never acknowledged"
            time.sleep(0.01)

    def kill(self) -> tuple[int, set[int]]:
        """kill -9; (the child's first seq, the seqs it acknowledged). Its compaction child, if one was running,
        stops on its own within ~50 ms (recorder.store.compact); wait for that before looking at files."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.reader.join(5)
        deadline = time.monotonic() + 5
        while compactors(self.root) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not compactors(self.root), "compaction child outlived its writer"
        return parse(self.lines)


def compactors(root: Path) -> list[int]:
    """Live compaction children working on root."""
    out = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"recorder.store.compact" in cmd and str(root).encode() in cmd and state != "Z":
            out.append(int(proc.name))
    return out


def run_round(root: Path, seed: int) -> tuple[int, set[int]]:
    """Start the child, kill -9 it at a random moment; (its first seq, the seqs it acknowledged)."""
    child = Child(root, "crashy", seed)
    child.wait_ack()
    time.sleep(random.Random(seed).uniform(0.0, 0.6))
    return child.kill()


def parse(lines: list[str]) -> tuple[int, set[int]]:
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


def test_two_writer_processes_one_root(tmp_path):
    root = tmp_path / "data"
    children = [Child(root, w, seed) for seed, w in enumerate(("p1", "p2"))]
    for c in children:
        c.wait_ack()
    time.sleep(1.0)
    results = [c.kill() for c in children]
    for w in ("p1", "p2"):
        with Store(root, w):
            pass
    seqs = all_seqs(root)
    assert len(seqs) == len(set(seqs)), "the two writers' rows collided or were duplicated"
    acked = results[0][1] | results[1][1]
    assert not results[0][1] & results[1][1], "both writers were given the same seq"
    assert not acked - set(seqs)
    assert duckdb_count(root) == len(seqs)
    writers = {p.name.split("-")[1] for p in visible_files(root) if p.name.count("-") == 2}
    assert writers <= {"p1", "p2"}
