"""Store benchmark: log ingest rate (fsync on), end-to-end Parquet rate, bytes/row, files per hour.

Run: .venv/bin/python bench/store.py [--rows N]   (prints figures; baseline = plain pq.write_table)
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recorder.store import Store
from schemas import BOOK_EVENTS, DEC

T0 = 1_710_262_800 * 10**9  # 2024-03-12 17:00 UTC


def _dec(units: np.ndarray, scale: int) -> pa.Array:
    """int64 count of 10^-scale units → DECIMAL(38,18), exactly (relabel the scale, then widen)."""
    raw = pa.array(units, pa.int64()).cast(pa.decimal128(38, 0))
    return pa.Array.from_buffers(pa.decimal128(38, scale), len(raw), raw.buffers()).cast(DEC)


def book_events(n: int, seed: int = 1) -> pa.Table:
    """book_events-shaped rows: bursts of messages, A/C/F mix, sparse ids, tick-grid prices."""
    rng = np.random.default_rng(seed)
    per_msg = rng.choice([1, 1, 1, 2, 3], size=n)
    msg_of_row = np.repeat(np.arange(n), per_msg)[:n]
    first_row = np.r_[True, msg_of_row[1:] != msg_of_row[:-1]]
    n_msg = msg_of_row[-1] + 1
    gaps = rng.lognormal(np.log(400_000), 1.2, n_msg).astype(np.int64) + 1_000  # µs..ms apart
    ts_recv_msg = T0 + np.cumsum(gaps)
    ts_recv = ts_recv_msg[msg_of_row]
    latency = rng.lognormal(np.log(8_000_000), 0.6, n_msg).astype(np.int64)
    ts_event = ((ts_recv_msg - latency) // 1000 * 1000)[msg_of_row]
    seq = np.arange(n) + msg_of_row + 1_000  # one raw-message seq before each message's rows
    msg_seq = np.maximum.accumulate(np.where(first_row, seq - 1, 0))
    session = 1 + (np.arange(n) // 2_000_000) * 7_919
    action = rng.choice(np.array(["A", "C", "F"]), size=n, p=[0.5, 0.4, 0.1])
    side = rng.choice(np.array(["bid", "ask"]), size=n)
    new_ids = 1_000_000_000 + np.cumsum(rng.integers(1, 400, size=n))
    back = np.minimum(rng.geometric(0.002, size=n), np.arange(n))
    order_id = np.where(action == "A", new_ids, new_ids[np.arange(n) - back])
    mid = 6_500_000 + np.cumsum(rng.integers(-3, 4, size=n))  # cents
    offset = rng.geometric(0.15, size=n) - 1
    price_cents = np.where(side == "bid", mid - offset, mid + 1 + offset)
    amount_sat = np.maximum(1, np.round(rng.lognormal(np.log(0.05), 1.5, size=n), 4) * 1e8).astype(np.int64)
    fill = action == "F"
    trade_id = np.where(fill, 50_000_000 + np.cumsum(fill), 0)
    taker = np.where(fill, new_ids + 17, 0)
    return pa.table({
        "ts_event": pa.array(ts_event, BOOK_EVENTS.schema.field("ts_event").type),
        "ts_recv": pa.array(ts_recv, BOOK_EVENTS.schema.field("ts_recv").type),
        "seq": pa.array(seq, pa.int64()),
        "session": pa.array(session, pa.int64()),
        "msg_seq": pa.array(msg_seq, pa.int64()),
        "action": pa.array(action, pa.string()),
        "side": pa.array(side, pa.string()),
        "order_id": pa.array(order_id, pa.int64()),
        "price": _dec(price_cents, 2),
        "amount": _dec(amount_sat, 8),
        "trade_id": pa.array(trade_id, pa.int64(), mask=~fill),
        "taker_order_id": pa.array(taker, pa.int64(), mask=~fill),
    }, schema=BOOK_EVENTS.schema)
