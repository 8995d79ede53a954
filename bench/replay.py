"""Replay benchmark: the numpy/numba book engine against a pure-Python book on the same synthetic L3 stream.

    .venv/bin/python bench/replay.py [--events 2000000] [--seed 1] [--no-write]

(a) replay to the final book, (b) best bid/offer after every event, (c) top-10 depth every 1,000 events,
all from int64 columns in memory (order-id mapping included); (d) end to end from Parquet on disk to the
written `bbo` file, in a fresh process whose peak RSS is reported. Figures go to bench/RESULTS.md (## replay).
"""
from __future__ import annotations

import argparse
import datetime as dt
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

from replay import book as B  # noqa: E402
from replay import outputs  # noqa: E402
from recorder.store.writer import write_options  # noqa: E402  (input files as the store writes them)
from replay import source  # noqa: E402
from replay_util import AMOUNT_SCALE, PRICE_SCALE, T0, RefBook, events_table, synth_l3  # noqa: E402
from schemas import TABLES  # noqa: E402

EX, PAIR = "bench", "BTC_USD"
HOUR = 3_600_000_000_000


def best_of(fn, repeat: int) -> float:
    """Fastest wall time of `repeat` calls."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def baseline(s: dict, mode: str) -> float:
    """Seconds for the pure-Python book: 'final', 'bbo' after every event, or 'depth' every 1,000 events."""
    rows = list(zip(*(s[k].tolist() for k in ("act", "side", "oid", "price", "amount"))))
    ref = RefBook()
    apply, out = ref.apply, []
    t = time.perf_counter()
    if mode == "final":
        for r in rows:
            apply(*r, observe=False)
    elif mode == "bbo":
        bbo = ref.bbo
        for r in rows:
            apply(*r, observe=False)
            out.append(bbo())
    else:
        for i, r in enumerate(rows):
            apply(*r, observe=False)
            if i % 1000 == 999:
                bids, asks = ref.prices[0][-10:][::-1], ref.prices[1][:10]
                out.append(([(p, ref.levels[0][p][0], ref.levels[0][p][1]) for p in bids],
                            [(p, ref.levels[1][p][0], ref.levels[1][p][1]) for p in asks]))
    return time.perf_counter() - t


def engine(s: dict, mode: str) -> None:
    """The engine from int64 columns: Events (price mapping) + kernel (order-id hash table) + outputs."""
    ev = B.Events.from_arrays(s["seq"], s["ts"], s["ts"], s["act"], s["side"], s["oid"], s["price"], s["amount"],
                              PRICE_SCALE, AMOUNT_SCALE)
    rp = B.L3Replay(ev, bbo=mode == "bbo")
    if mode == "depth":
        rp.run(len(ev), np.arange(999, len(ev), 1000), 10)
    else:
        rp.run(len(ev))


def peak() -> float:
    """This process's peak RSS in MB (VmHWM: unlike ru_maxrss it is not inherited from the parent)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def child_e2e(root: str, repeat: int) -> None:
    """(d) in a fresh process pinned to one core: Parquet hour -> written bbo, timed on hour 1, then hour 2
    (peak RSS after each shows memory does not grow with hours); prints JSON."""
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    hour = T0 - T0 % HOUR
    base = peak()
    first = time.perf_counter()
    res = outputs.hour_job(root, EX, PAIR, hour, "l3", True, None, False, True)
    first = time.perf_counter() - first
    t = best_of(lambda: outputs.hour_job(root, EX, PAIR, hour, "l3", True, None, False, True), repeat)
    peak1 = peak()
    outputs.hour_job(root, EX, PAIR, hour + HOUR, "l3", True, None, False, True)
    peak2 = peak()
    rows = pq.read_metadata(outputs.hour_path(root, "bbo", EX, PAIR, hour)).num_rows
    arrow = source.hour_events(root, EX, PAIR, hour).table.nbytes / 1e6  # after the peaks: replay never holds it
    print(json.dumps({"seconds": t, "first": first, "rows": res.rows, "bbo_rows": rows, "peak1_mb": peak1,
                      "peak2_mb": peak2, "base_mb": base, "arrow_mb": arrow}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=9, help="engine runs per figure (best taken)")
    ap.add_argument("--base-repeat", type=int, default=3, help="pure-Python runs per figure (best taken)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    ap.add_argument("--child-e2e", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child_e2e:
        return child_e2e(a.child_e2e, a.repeat)
    t = time.perf_counter()
    s = synth_l3(a.events, seed=a.seed)
    n = len(s["seq"])
    print(f"stream: {n:,} events ({time.perf_counter() - t:.1f}s to generate)", file=sys.stderr)
    engine({k: v[:1000] for k, v in s.items()}, "bbo")  # load the compiled kernels before timing
    rows = []
    for mode, label in (("final", "(a) replay to the final book"), ("bbo", "(b) best bid/offer after every event"),
                        ("depth", "(c) top-10 depth every 1,000 events")):
        base = min(baseline(s, mode) for _ in range(a.base_repeat))
        eng = best_of(lambda: engine(s, mode), a.repeat)
        rows.append((label, n / eng, n / base))
        print(f"{label}: engine {n / eng:,.0f} ev/s, pure Python {n / base:,.0f} ev/s, x{base / eng:.0f}",
              file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        part = source.partition_dir(tmp, "book_events", EX, PAIR, source.date_of(T0))
        part.mkdir(parents=True)
        path = part / "h14.parquet"
        pq.write_table(events_table(s), path, **write_options(TABLES["book_events"]))
        size = path.stat().st_size
        later = dict(s, ts=s["ts"] + HOUR, seq=s["seq"] + 3 * n + 3)  # the same stream one hour later
        pq.write_table(events_table(later), part / "h15.parquet", **write_options(TABLES["book_events"]))
        out = subprocess.run([sys.executable, __file__, "--child-e2e", tmp, "--repeat", str(a.repeat)],
                             capture_output=True, text=True, check=True)
        e2e = json.loads(out.stdout)
    rows.append(("(d) end to end: Parquet hour -> written bbo", n / e2e["seconds"], None))
    print(f"(d) end to end {n / e2e['seconds']:,.0f} ev/s, peak RSS {e2e['peak1_mb']:.0f} MB after one hour, "
          f"{e2e['peak2_mb']:.0f} MB after two", file=sys.stderr)
    report = render(a, n, rows, e2e, size)
    print(report)
    if not a.no_write:
        append_section(HERE / "RESULTS.md", report)


def render(a, n: int, rows: list, e2e: dict, size: int) -> str:
    """The markdown entry for this run."""
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"### {when}: `.venv/bin/python bench/replay.py --events {a.events} --seed {a.seed}`", "",
             f"Synthetic L3 stream of {n:,} events in one hour (adds near the touch, cancels of random live "
             "orders, sweeps of the best levels, partial cancels; order ids random in 1e9..1e12). One core; "
             f"best of {a.repeat} engine runs and {a.base_repeat} baseline runs (load average "
             f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs shared with other work, so figures vary between "
             "runs). The baseline is the pure-Python book of tests/replay_util.py (dict of orders, dict of levels, "
             "bisect-sorted level prices) on the same events, measured in the same run. (a)-(c) start from int64 "
             "columns in memory and include the price mapping and the order-id hash table; (b) keeps the best "
             "bid/offer after every event as the `bbo` table stores it (a row whenever it changes).", "",
             "| measure | engine events/s | pure-Python events/s | speed-up | goal |", "|---|---:|---:|---:|---|"]
    goals = {"(b)": ">= 20,000,000/s and >= 30x", "(d)": ">= 5,000,000/s"}
    for label, eng, base in rows:
        lines.append(f"| {label} | {eng:,.0f} | {'' if base is None else f'{base:,.0f}'} | "
                     f"{'' if base is None else f'{eng / base:.0f}x'} | {goals.get(label[:3], '')} |")
    lines += ["", f"(d) runs in a fresh process pinned to one core (pyarrow with one thread): it reads the hour's "
              f"Parquet file ({size / 1e6:.0f} MB, written with the store's options), converts decimals exactly, "
              f"replays and writes {e2e['bbo_rows']:,} `bbo` rows atomically; its first call (kernel cache load "
              f"included) ran at {n / e2e['first']:,.0f} events/s. Peak RSS of that process: "
              f"{e2e['peak1_mb']:.0f} MB after replaying the hour of {n:,} events, {e2e['peak2_mb']:.0f} MB after "
              "a second such hour (the hour streams in row-group batches; the interpreter with numpy, pyarrow "
              f"and numba loaded is {e2e['base_mb']:.0f} MB; the whole hour's events would take "
              f"{e2e['arrow_mb']:.0f} MB as Arrow columns).", ""]
    return "\n".join(lines)


def append_section(path: Path, entry: str) -> None:
    """Append the entry at the end of the `## replay` section (created when missing), leaving others alone."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = text.rstrip("\n").split("\n")
    try:
        start = lines.index("## replay")
    except ValueError:
        path.write_text("\n".join(lines) + "\n\n## replay\n\n" + entry)
        return
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    body = lines[:end]
    while body and not body[-1].strip():
        body.pop()
    rest = lines[end:]
    path.write_text("\n".join(body + ["", *entry.rstrip("\n").split("\n")] + ([""] + rest if rest else [])) + "\n")


if __name__ == "__main__":
    main()
