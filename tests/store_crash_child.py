"""Crash-test child: append rows to a Store forever, printing what each flush() made durable.

Usage: python tests/store_crash_child.py ROOT WRITER SEED
Prints `START <first seq>`, then after each flush `ACK <start>:<n> ...` for every range appended before it.
"""
from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recorder.store import Store  # noqa: E402

T0 = 1_710_262_800 * 10**9  # 2024-03-12 17:00 UTC
STEP = 150_000_000  # 0.15 s of ts_recv per seq: an hour every 24,000 seqs


def rows(table: str, seq: int, n: int) -> dict:
    seqs = list(range(seq, seq + n))
    ts = [T0 + s * STEP for s in seqs]
    if table == "trades":
        return dict(ts_event=[t // 1000 * 1000 for t in ts], ts_recv=ts, seq=seqs, session=[1] * n,
                    trade_id=[f"t{s}" for s in seqs], price=[f"{100 + s % 97}.{s % 100:02d}" for s in seqs],
                    amount=[f"0.{s:08d}"[:10] for s in seqs], taker_side=["buy", "sell"] * (n // 2) + ["buy"] * (n % 2),
                    maker_order_id=[None] * n, taker_order_id=seqs, source=["socket"] * n)
    if table == "book_events":
        return dict(ts_event=ts, ts_recv=ts, seq=seqs, session=[1] * n, msg_seq=seqs, action=["A"] * n,
                    side=["bid"] * n, order_id=seqs, price=["1.5"] * n, amount=[str(s) for s in seqs],
                    trade_id=[None] * n, taker_order_id=[None] * n)
    return dict(ts=ts, seq=seqs, session=[1] * n, stream=["ws:x"] * n, kind=["connect"] * n, detail=[None] * n)


def main() -> None:
    root, writer, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rnd = random.Random(seed)
    store = Store(root, writer, fsync_interval=0.02, seal_interval=0.05, segment_bytes=64 << 10).open()
    print("START", store.next_seq(1), flush=True)
    i = 0
    while True:
        ranges = []
        for _ in range(rnd.randint(1, 8)):
            table = rnd.choice(("trades", "book_events", "sessions"))
            pair = rnd.choice(("BTC_USD", "ETH_BTC")) if table != "sessions" else "ALL"
            n = rnd.randint(1, 300)
            seq = store.next_seq(n)
            store.append(table, "btcalpha", pair, rows(table, seq, n))
            ranges.append(f"{seq}:{n}")
        store.flush()
        print("ACK", " ".join(ranges), flush=True)
        i += 1
        if i % 10 == 0:
            store.compact()


if __name__ == "__main__":
    main()
