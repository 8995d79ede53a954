"""Streaming replay benchmark: peak RSS and events/s per core of `replay bbo` (or `verify`, or `book --at`) on one
hour of 1x, 4x and 8x the events, streamed (replay.stream) against the whole-hour path (baseline, same run), and
for bbo where the time goes.

    .venv/bin/python bench/stream.py [--events 2000000] [--multiples 1,4,8] [--command bbo|verify|book] [--no-write]

verify checks grouped snapshots recorded every GROUPED_EVERY of the hour (their levels are the replayed book's
at each instant, so every one must pass); book takes the book at the hour's last event.

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
import pyarrow.compute as pc
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

from recorder.store.writer import write_options  # noqa: E402
from replay import book as B  # noqa: E402
from replay import outputs, source, stream  # noqa: E402
from replay_util import T0, events_table, synth_l3  # noqa: E402
from schemas import TABLES  # noqa: E402

EX, PAIR = "bench", "BTC_USD"
#: verify: one grouped snapshot (top 10 levels per side) per this much of the hour.
GROUPED_EVERY = 10 * 10**9
HOUR = source.HOUR_NS
H0 = T0 - T0 % HOUR


def peak_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def write_grouped(root: Path) -> int:
    """Grouped REST snapshots of the written hour, one per GROUPED_EVERY: the replayed top 10 levels at each
    instant, with the snapshot id right after the event shown; returns how many."""
    d = outputs.hour_job(str(root), EX, PAIR, H0, "l3", False, B.Depth(10, GROUPED_EVERY, final=True), False,
                         False).depth
    seq, t = d.column("seq").to_numpy(), d.column("ts").cast(pa.int64()).to_numpy()
    u, first = np.unique(seq, return_index=True)
    d = d.filter(pa.array(t == t[first][np.searchsorted(u, seq)]))  # one snapshot per event shown
    ts = d.column("ts").cast(pa.int64())
    sid = pc.add(d.column("seq"), 1)
    tab = pa.table({"ts_event": ts, "ts_recv": ts, "seq": sid, "session": pa.repeat(2, d.num_rows),
                    "snapshot_id": sid, "side": d.column("side"), "level": d.column("level"),
                    "price": d.column("price"), "amount": d.column("amount"),
                    "source": pa.repeat("rest_grouped", d.num_rows)})
    part = source.partition_dir(root, "book_levels", EX, PAIR, source.date_of(T0))
    part.mkdir(parents=True, exist_ok=True)
    schema = TABLES["book_levels"].schema
    pq.write_table(pa.table({f.name: tab.column(f.name) if f.name in tab.column_names else pa.nulls(d.num_rows)
                             for f in schema}).cast(schema), part / "g.parquet")
    return len(u)


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


def command(root: str, name: str) -> tuple[B.HourResult, dict]:
    """Run the command once on the hour: its result and what must agree between the two paths."""
    if name == "bbo":
        res = outputs.hour_job(root, EX, PAIR, H0, "l3", True, None, False, True)
        return res, {"bbo": hashlib.sha256(outputs.hour_path(root, "bbo", EX, PAIR, H0).read_bytes()).hexdigest()}
    if name == "verify":
        res = outputs.hour_job(root, EX, PAIR, H0, "l3", False, None, True, False)
        return res, {"checked": res.checked, "skipped": res.skipped, "mismatches": res.mismatches}
    part = source.partition_dir(root, "book_events", EX, PAIR, source.date_of(T0))
    res = B.HourResult(H0, "l3", rows=pq.read_metadata(part / "h14.parquet").num_rows)
    book = B.book_at(root, EX, PAIR, H0 + HOUR - 1)
    res.digest = book.digest()
    return res, {"seq": book.seq, "gap": book.gap}


def child(root: str, mode: str, repeat: int, name: str) -> None:
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
            res, same = command(root, name)
            best, wall = min(best, time.process_time() - t), min(wall, time.perf_counter() - w)
        out.update(seconds=best, wall=wall, rows=res.rows, peak_mb=peak_mb(), digest=res.digest, same=same)
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


def run_child(root: Path, mode: str, repeat: int, name: str) -> dict:
    r = subprocess.run([sys.executable, __file__, "--child", str(root), mode, "--repeat", str(repeat),
                        "--command", name], capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--multiples", default="1,4,8")
    ap.add_argument("--repeat", type=int, default=5, help="runs of each timed figure in its process (best taken)")
    ap.add_argument("--command", choices=sorted(COMMANDS), default="bbo")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(*a.child, a.repeat, a.command)
    s = synth_l3(a.events, seed=a.seed)
    rows, stages = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for m in (int(x) for x in a.multiples.split(",")):
            root = Path(tmp) / f"x{m}"
            n = write_hour(root, s, m)
            snaps = write_grouped(root) if a.command == "verify" else 0
            st = run_child(root, "stream", a.repeat, a.command)
            wh = run_child(root, "whole", a.repeat, a.command)
            assert st["digest"] == wh["digest"] and st["same"] == wh["same"] and st["rows"] == wh["rows"] == n
            if a.command == "verify":
                assert st["same"]["checked"] == snaps and not st["same"]["mismatches"], st["same"]
            rows.append((m, n, st, wh))
            print(f"{m}x {n:,} events: streamed {n / st['seconds']:,.0f} ev/CPU-s, peak {st['peak_mb']:.0f} MB; "
                  f"whole hour {n / wh['seconds']:,.0f} ev/CPU-s, peak {wh['peak_mb']:.0f} MB", file=sys.stderr)
            if m == 1 and a.command == "bbo":
                stages = run_child(root, "stages", a.repeat, a.command)["stages"]
                print(f"stages: {stages}", file=sys.stderr)
    report = render(a, rows, stages)
    print(report)
    if not a.no_write:
        append(HERE / "RESULTS.md", report)


def render(a, rows, stages) -> str:
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    flag = "" if a.command == "bbo" else f" --command {a.command}"
    lines = [f"### {when}: `.venv/bin/python bench/stream.py --events {a.events} --multiples {a.multiples}{flag}`", "",
             f"{COMMANDS[a.command]} in a fresh process pinned to one core, pyarrow on one thread, kernels loaded on a "
             f"small hour first; best of {a.repeat} runs in that process, peak RSS after all of them. Baseline: the "
             "whole-hour path (the code before streaming) on the same files in the same "
             f"run; both give the same digest and {SAME[a.command]}. Load average {os.getloadavg()[0]:.1f} on "
             f"{os.cpu_count()} CPUs shared with other work.", "",
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


COMMANDS = {
    "bbo": "`replay bbo` of one hour (outputs.hour_job: read the hour's Parquet, convert decimals exactly, replay, "
           "write the `bbo` file)",
    "verify": "`replay verify` of one hour (outputs.hour_job with verify: the hour's events replayed and checked "
              f"against grouped snapshots recorded every {GROUPED_EVERY // 10**9} s, each the replayed top 10 levels "
              "at its instant, so every one passes; streamed, a first pass reads ts_recv and seq to place them)",
    "book": "`replay book --at` the hour's last instant (replay.book.book_at: every event of the hour applied)",
}
#: What else the streamed and whole-hour runs must agree on, per command.
SAME = {"bbo": "the same bbo file bytes", "verify": "the same checked, skipped and mismatch lists (0 mismatches)",
        "book": "the same book seq and gap flag"}


def append(path: Path, entry: str) -> None:
    """Append under `## replay` (bench/replay.py's section helper)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("bench_replay", HERE / "replay.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.append_section(path, entry)


if __name__ == "__main__":
    main()
