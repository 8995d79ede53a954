"""Heartbeats measure the venue, not our own queue: an L3 stream held back by a frozen store is not
'silent', and back-pressure causes no reconnect."""
from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from simfixtures import threaded_sim  # noqa: E402

from recorder import config  # noqa: E402
from recorder.daemon import Daemon  # noqa: E402
from recorder.store import FREEZE_ENV  # noqa: E402
from recorder.sim.server import SimConfig  # noqa: E402

pytestmark = pytest.mark.faults  # recordings under injected faults: make faults (run by .ci/run)


@pytest.mark.timeout(120)
def test_waiting_for_the_sink_is_not_venue_silence(tmp_path, monkeypatch):
    flag = tmp_path / "freeze"
    monkeypatch.setenv(FREEZE_ENV, str(flag))
    with threaded_sim(SimConfig(seed=3, pairs=["BTC_USD", "ETH_BTC"], rate=100.0)) as ts:
        a = ts.sim.urls["btcalpha"]
        cfg = config.parse({"recorder": {"root": str(tmp_path / "data"), "fsync_interval": 0.2, "queue_max": 300,
                                         "max_pending_bytes": 256 << 10},
                            "venues": {"btcalpha": {"pairs": ["BTC_USD", "ETH_BTC"], "channels": ["book"],
                                                    "ws_url": a, "rest_url": f"{a}/api/v1/", "heartbeat": 2.0,
                                                    "rate_limit": 20.0}}}, env={})

        async def main():
            d = Daemon(cfg)
            task = asyncio.create_task(d.run())
            deadline = time.monotonic() + 30
            while d.metrics.value("messages", "btcalpha:book") < 50 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            flag.touch()
            held = False
            t_end = time.monotonic() + 12.0  # six heartbeats
            while time.monotonic() < t_end:
                await asyncio.sleep(0.2)
                held = held or d.sink.full
            reconnects = d.metrics.value("reconnects", "btcalpha:book")
            errors = d.metrics.value("errors", "btcalpha:book")
            flag.unlink()
            await asyncio.sleep(1.0)
            d.stop()
            return await asyncio.wait_for(task, 20), held, reconnects, errors

        code, held, reconnects, errors = asyncio.run(main())
    assert code == 0
    assert held, "the frozen store must have held the stream back (else this test shows nothing)"
    assert reconnects == 0 and errors == 0, f"back-pressure caused {reconnects} reconnects, {errors} errors"
