"""Dask benchmark: `replay bbo` over several hours on a LocalCluster of 2 worker processes against 1 worker and
against serial --jobs 1, in the same run, on the same files.

    .venv/bin/python bench/cluster.py [--hours 8] [--events-per-hour 600000] [--no-write]

Each figure is the wall time of replay.outputs.run_hours (cluster start-up included, reported apart) and the
outputs are checked byte-identical across the three. Results go to bench/RESULTS.md (## replay).
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

from recorder.store.writer import write_options  # noqa: E402
from replay import outputs, source  # noqa: E402
from replay_util import T0, events_table, synth_l3  # noqa: E402
from schemas import TABLES  # noqa: E402

EX, PAIR = "bench", "BTC_USD"


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted((root / "bbo").rglob("*.parquet")):
        h.update(p.read_bytes())
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=int, default=8)
    ap.add_argument("--events-per-hour", type=int, default=600_000)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    s = synth_l3(a.hours * a.events_per_hour, seed=4, hours=a.hours, t0=T0 - T0 % (24 * source.HOUR_NS))
    n = len(s["seq"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        for h in range(a.hours):  # one file per hour, as compaction leaves them
            sel = (s["ts"] // source.HOUR_NS) == (s["ts"][0] // source.HOUR_NS + h)
            part = source.partition_dir(base, "book_events", EX, PAIR, source.date_of(int(s["ts"][sel][0])))
            part.mkdir(parents=True, exist_ok=True)
            pq.write_table(events_table({k: v[sel] for k, v in s.items()}), part / f"h{h:02d}-a-c.parquet",
                           **write_options(TABLES["book_events"]))
        hours = source.hours(base, "book_events", EX, PAIR, 0, 2**62)
        digests = {}
        for label, kw in (("serial --jobs 1", {}), ("LocalCluster 1 worker", {"scheduler": "local:1"}),
                          ("LocalCluster 2 workers", {"scheduler": "local:2"})):
            root = Path(tmp) / label.replace(" ", "_")
            shutil.copytree(base, root)
            t = time.perf_counter()
            outputs.run_hours(str(root), EX, PAIR, hours, bbo=True, **kw)
            rows.append((label, time.perf_counter() - t))
            digests[label] = digest(root)
            print(f"{label}: {rows[-1][1]:.2f} s", file=sys.stderr)
        assert len(set(digests.values())) == 1, digests
        t = time.perf_counter()
        from distributed import Client, LocalCluster
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None, silence_logs=40) as c, Client(c):
            startup = time.perf_counter() - t
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    serial = rows[0][1]
    one = rows[1][1]
    lines = [f"### {when}: `.venv/bin/python bench/cluster.py --hours {a.hours} --events-per-hour "
             f"{a.events_per_hour}`", "",
             f"`replay bbo` over {len(hours)} hours ({n:,} events, one compacted file per hour) through "
             "replay.outputs.run_hours; wall time including the LocalCluster's start-up (2 workers start in "
             f"{startup:.1f} s here); outputs byte-identical across the three. {os.cpu_count()} CPUs shared with "
             f"other work (load average {os.getloadavg()[0]:.1f}).", "",
             "| run | seconds | events/s | vs 1 worker | vs serial |", "|---|---:|---:|---:|---:|"]
    for label, sec in rows:
        lines.append(f"| {label} | {sec:.2f} | {n / sec:,.0f} | {one / sec:.2f}x | {serial / sec:.2f}x |")
    report = "\n".join(lines) + "\n"
    print(report)
    if not a.no_write:
        import importlib.util
        spec = importlib.util.spec_from_file_location("bench_replay", HERE / "replay.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        mod.append_section(HERE / "RESULTS.md", report)


if __name__ == "__main__":
    main()
