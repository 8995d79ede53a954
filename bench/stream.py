"""Streaming replay benchmark: peak RSS and events/s per core of `replay bbo` on one hour of 1x, 4x and 8x the
events, streamed (replay.stream) against the whole-hour path (baseline, same run), and where the time goes.

    .venv/bin/python bench/stream.py [--events 2000000] [--multiples 1,4,8] [--no-write]

The 1x hour is bench/replay.py's synthetic stream (tests/replay_util.synth_l3); m x is that stream played m
times within the same hour (each copy starts with R + S rows, seq and ts shifted), written with the store's
write options (row groups of 1 M rows). Every figure comes from a fresh process pinned to one core with
pyarrow on one thread; RSS is that process's VmHWM. Results go to bench/RESULTS.md (## replay, streaming).
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

from recorder.store.writer import write_options  # noqa: E402
from replay import outputs, source, stream  # noqa: E402
from replay_util import T0, events_table, synth_l3  # noqa: E402
from schemas import TABLES  # noqa: E402

EX, PAIR = "bench", "BTC_USD"
HOUR = source.HOUR_NS
H0 = T0 - T0 % HOUR


def peak_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def write_hour(root: Path, s: dict, m: int) -> int:
    """The 1x stream played m times within hour H0 into one file; returns the number of events."""
    n = len(s["seq"])
    span = int(s["ts"].max() - H0) + 1
    part = source.partition_dir(root, "book_events", EX, PAIR, source.date_of(T0))
    part.mkdir(parents=True, exist_ok=True)
    step = int(s["seq"].max()) + 3
    with pq.ParquetWriter(part / "h14.parquet", TABLES["book_events"].schema,
                          **{k: v for k, v in write_options(TABLES["book_events"]).items()
                             if k != "row_group_size"}) as w:
        for r in range(m):
            ts = H0 + (s["ts"] - H0) // m + r * (span // m)
            copy = dict(s, ts=ts, seq=s["seq"] + r * step)
            w.write_table(events_table(copy), row_group_size=1 << 20)
    return n * m


#: Functions whose own CPU time makes each stage of the end-to-end figure.
STAGES = {
    "Parquet read + decode (DuckDB scan, Arrow batches)": {"batches", "submit", "to_arrow_reader", "order"},
    "decimal -> int64 conversion, level mapping": {"_ints", "_words", "dec_to_int", "dec_scale", "exact_ints",
                                                   "minmax", "_events", "_prices", "fill_null", "cast", "append"},
    "book kernel": {"l3_run", "grow"},
    "bbo rows (ticks -> decimals, cuts into row groups)": {"_bbo_table", "to_dec", "int_to_dec", "_ts", "_table",
                                                          "_flush_bbo", "concat_tables", "feed"},
    "writing the bbo file (Parquet encode, LZ4, fsync)": {"write_table", "fsync", "write", "<lambda>", "close"},
}


def warm(root: str) -> None:
    """Load the compiled kernels (numba cache) on a small hour of another root, so figures exclude it."""
    small = Path(root).parent / "warm"
    if not small.exists():
        write_hour(small, synth_l3(2_000, seed=9), 1)
    outputs.hour_job(str(small), EX, PAIR, H0, "l3", True, None, False, True)


def child(root: str, mode: str, repeat: int) -> None:
    """One measurement in this (fresh, pinned) process; prints JSON."""
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    base = peak_mb()
    groups = stream.plan(root, EX, PAIR, H0)
    out: dict = {"base_mb": base}
    warm(root)
    if mode in ("stream", "whole"):
        if mode == "whole":
            stream.plan = lambda *a: None
        best, wall = float("inf"), float("inf")
        for _ in range(repeat):
            t, w = time.process_time(), time.perf_counter()
            res = outputs.hour_job(root, EX, PAIR, H0, "l3", True, None, False, True)
            best, wall = min(best, time.process_time() - t), min(wall, time.perf_counter() - w)
        out.update(seconds=best, wall=wall, rows=res.rows, peak_mb=peak_mb(), digest=res.digest,
                   bbo=hashlib.sha256(outputs.hour_path(root, "bbo", EX, PAIR, H0).read_bytes()).hexdigest())
    else:  # stages: cProfile on CPU time, each function's own time put in a stage
        import cProfile
        import pstats

        pr = cProfile.Profile(time.process_time)
        for _ in range(repeat):
            pr.enable()
            outputs.hour_job(root, EX, PAIR, H0, "l3", True, None, False, True)
            pr.disable()
        stats = pstats.Stats(pr).stats
        stages = {k: 0.0 for k in STAGES}
        stages["other"] = 0.0
        for (_, _, name), (_, _, own, _, _) in stats.items():
            stage = next((k for k, names in STAGES.items() if name in names), "other")
            stages[stage] += own / repeat
        out["stages"] = stages
    print(json.dumps(out))


def run_child(root: Path, mode: str, repeat: int) -> dict:
    r = subprocess.run([sys.executable, __file__, "--child", str(root), mode, "--repeat", str(repeat)],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--multiples", default="1,4,8")
    ap.add_argument("--repeat", type=int, default=5, help="runs of each timed figure in its process (best taken)")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(*a.child, a.repeat)
    s = synth_l3(a.events, seed=a.seed)
    rows, stages = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for m in (int(x) for x in a.multiples.split(",")):
            root = Path(tmp) / f"x{m}"
            n = write_hour(root, s, m)
            st = run_child(root, "stream", a.repeat)
            wh = run_child(root, "whole", a.repeat)
            assert st["digest"] == wh["digest"] and st["bbo"] == wh["bbo"] and st["rows"] == wh["rows"] == n
            rows.append((m, n, st, wh))
            print(f"{m}x {n:,} events: streamed {n / st['seconds']:,.0f} ev/CPU-s, peak {st['peak_mb']:.0f} MB; "
                  f"whole hour {n / wh['seconds']:,.0f} ev/CPU-s, peak {wh['peak_mb']:.0f} MB", file=sys.stderr)
            if m == 1:
                stages = run_child(root, "stages", a.repeat)["stages"]
                print(f"stages: {stages}", file=sys.stderr)
    report = render(a, rows, stages)
    print(report)
    if not a.no_write:
        append(HERE / "RESULTS.md", report)


def render(a, rows, stages) -> str:
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"### {when}: `.venv/bin/python bench/stream.py --events {a.events} --multiples {a.multiples}`", "",
             "`replay bbo` of one hour (outputs.hour_job: read the hour's Parquet, convert decimals exactly, replay, "
             "write the `bbo` file) in a fresh process pinned to one core, pyarrow on one thread, kernels loaded on a "
             f"small hour first; best of {a.repeat} runs in that process, peak RSS after all of them. Baseline: the whole-hour path (the code before streaming) on the same files in the same "
             f"run; both give the same digest. Load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
             "shared with other work.", "",
             "Events/s per core = events per CPU-second of that process (all its threads; robust to other work "
             "on the shared cores), wall-clock figure beside it.", "",
             "| events in the hour | streamed ev/s per core (wall) | streamed peak RSS | whole-hour ev/s per core "
             "(wall) | whole-hour peak RSS | speed streamed/whole | RSS whole/streamed |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for m, n, st, wh in rows:
        lines.append(f"| {m}x = {n:,} | {n / st['seconds']:,.0f} ({n / st['wall']:,.0f}) | {st['peak_mb']:.0f} MB | "
                     f"{n / wh['seconds']:,.0f} ({n / wh['wall']:,.0f}) | {wh['peak_mb']:.0f} MB | "
                     f"{wh['seconds'] / st['seconds']:.2f} | {wh['peak_mb'] / st['peak_mb']:.1f} |")
    if stages:
        n = rows[0][1]
        tot = sum(stages.values())
        parts = ", ".join(f"{k} {v:.3f} s ({100 * v / tot:.0f} %)" for k, v in stages.items())
        lines += ["", f"Where the 1x hour's {tot:.3f} CPU-s go (cProfile on CPU time, own time of each function, mean "
                  f"of {a.repeat} runs in one process; profiling adds a little): {parts}; {n / tot:,.0f} ev/s end to "
                  "end under the profiler."]
    return "\n".join(lines) + "\n"


def append(path: Path, entry: str) -> None:
    """Append under `## replay` (bench/replay.py's section helper)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_replay", HERE / "replay.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.append_section(path, entry)


if __name__ == "__main__":
    main()
