"""A fake stream feed for store-fault tests: raw rows as fast as back-pressure lets it, and its config."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import duckdb

from recorder import config
from recorder.feeds.base import StreamSession


class StreamTicker:
    """A stream feed: 2 KB raw rows as fast as back-pressure lets it, inside a StreamSession; `sent` counts
    the rows handed to the sink."""

    def __init__(self, ctx) -> None:
        self.ctx, self.name, self.sent = ctx, "btcalpha:ticker", 0

    async def run(self, healthy) -> None:
        tap = self.ctx.tap(self.name)
        session = tap.new_session()
        with StreamSession(tap, session, "ws:ticker", ["BTC_USD"], "ticker lost") as conn:
            conn.connect("fake")
            healthy()
            while True:
                for _ in range(20):
                    tap.raw(session, "ws:ticker", "BTC_USD", time.time_ns(), b"%08d" % self.sent + b"y" * 2000)
                    self.sent += 1
                if tap.sink.full:
                    await tap.sink.room()
                await asyncio.sleep(0.005)


def ticker_config(root: Path, **rec) -> config.Config:
    """A daemon config whose feeds the test builds itself (the venue is never contacted)."""
    return config.parse({"recorder": {"root": str(root), "fsync_interval": 0.2, **rec},
                         "venues": {"bitopro": {"pairs": ["BTC_USD"]}}}, env={})


def sql(q: str) -> list:
    con = duckdb.connect()
    try:
        return con.execute(q).fetchall()
    finally:
        con.close()
