"""A frozen store (a stalled disk): back-pressure holds the feeds, nothing received is dropped, and SIGTERM
stops within 10 s, keeping what it can and writing gap rows for the rest."""
from __future__ import annotations

import asyncio
import logging
import threading
import time

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from tickers import StreamTicker, sql, ticker_config  # noqa: E402

from recorder.daemon import Daemon  # noqa: E402
from recorder.feeds.sink import Sink  # noqa: E402
from recorder.metrics import Metrics  # noqa: E402
from recorder.store import FREEZE_ENV, Store  # noqa: E402

pytestmark = pytest.mark.faults  # recordings under injected faults: make faults (run by .ci/run)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("freeze", ["hook", "convert_lock"])
def test_frozen_store_holds_feeds_back_drops_nothing_and_sigterm_stops_within_10s(tmp_path, monkeypatch, caplog,
                                                                                  freeze):
    flag = tmp_path / "freeze"
    monkeypatch.setenv(FREEZE_ENV, str(flag))
    cfg = ticker_config(tmp_path / "data", queue_max=2000, max_pending_bytes=2 << 20)
    feeds = []

    def build(ctx, **_):
        feeds.append(StreamTicker(ctx))
        return feeds

    release = threading.Event()

    def hold_conversion(store):  # the other way to freeze it: conversion blocked, as by a disk stuck in a write
        with store._convert_lock:
            release.wait(120)

    caplog.set_level(logging.INFO)

    async def main():
        d = Daemon(cfg, build=build)
        task = asyncio.create_task(d.run())
        await asyncio.sleep(1.5)
        before = feeds[0].sent
        if freeze == "hook":
            flag.touch()
        else:
            threading.Thread(target=hold_conversion, args=(d.store,), daemon=True).start()
        await asyncio.sleep(6.0)
        held = feeds[0].sent
        await asyncio.sleep(1.0)
        assert feeds[0].sent - held <= 40, "a frozen store must hold the feed back"
        t0 = time.monotonic()
        d.stop()
        code = await asyncio.wait_for(task, 30)
        return code, time.monotonic() - t0, before

    try:
        code, stop_s, before = asyncio.run(main())
    finally:
        flag.unlink(missing_ok=True)
        release.set()
    assert code == 0
    assert stop_s < 10, f"SIGTERM took {stop_s:.1f}s with the store frozen"
    assert not [r for r in caplog.records if "dropped" in r.getMessage()]
    time.sleep(0.5)  # the unfrozen thread sees its stop
    root = tmp_path / "data"
    Store(root, "recorder").open().close()  # the next start recovers the log that was kept
    sent = feeds[0].sent
    assert before > 0
    got = sql(f"SELECT count(DISTINCT seq), count(*) FROM read_parquet('{root}/raw/**/*.parquet')")[0]
    assert got == (sent, sent), f"{sent} rows received, {got} in the dataset"
    gaps = sql(f"SELECT ts, detail FROM read_parquet('{root}/sessions/**/*.parquet', hive_partitioning=true) "
               "WHERE kind = 'gap'")
    assert gaps and "held the stream back" in gaps[0][1], "stopping while held back loses what was not read"


class StuckStore:
    """A store whose writes never return (a disk stuck in the kernel)."""

    def __init__(self) -> None:
        self.block = threading.Event()
        self.seq = 1

    def next_seq(self, n: int = 1) -> int:
        self.seq += n
        return self.seq - n

    def append(self, *a, **kw) -> int:
        self.block.wait(60)
        return 0


def test_sink_close_is_bounded_even_when_a_write_is_stuck_in_the_kernel():
    store = StuckStore()

    async def main():
        sink = Sink(store, Metrics(), max_rows=100)
        from recorder.feeds.sink import Tap
        tap = Tap(sink, "btcalpha", "f")
        for i in range(50):
            tap.raw(1, "s", "BTC_USD", time.time_ns(), b"x")
        writer = asyncio.create_task(sink.run())
        await asyncio.sleep(0.2)  # the writer's flush is now stuck
        for i in range(10):
            tap.raw(1, "s", "BTC_USD", time.time_ns(), b"x")
        t0 = time.monotonic()
        lost = await sink.close(1.0)
        writer.cancel()
        return lost, time.monotonic() - t0

    try:
        lost, took = asyncio.run(main())
    finally:
        store.block.set()
    assert took < 3.0
    assert lost == 60
