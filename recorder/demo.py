"""`recorder demo`: the simulator for all four venues in-process, the recorder pointed at it, then status."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from recorder import config as config_mod
from recorder.daemon import Daemon
from recorder.sim.server import DEFAULT_CREDENTIALS, SimConfig, Simulator

#: Environment variables the demo config names for BitBay's signed order book (values: the simulator's).
DEMO_KEY_ENV, DEMO_SECRET_ENV = "BOOKTAPE_DEMO_BITBAY_KEY", "BOOKTAPE_DEMO_BITBAY_SECRET"


def sim_doc(urls: dict[str, str], root: str | Path, pairs: list[str], *, fast: bool = True,
            channels: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """A config document (as parsed TOML) recording every venue of a running simulator."""
    a, x, p, b = (urls.get(v, "http://127.0.0.1:1") for v in ("btcalpha", "bitexbit", "bitopro", "bitbay"))
    poll = {"trades_interval": 1.0, "candles_interval": 2.0 if fast else 10.0}
    venues: dict[str, Any] = {
        "btcalpha": {"ws_url": a, "rest_url": f"{a}/api/v1/", "charts_url": f"{a}/api/charts/",
                     "resolutions": ["1m", "5m"], "grouped_interval": 5.0 if fast else 60.0, "heartbeat": 10.0,
                     "rate_limit": 20.0, **poll},
        "bitexbit": {"ws_url": x, "rest_url": f"{x}/api/v1/", "charts_url": f"{x}/api/charts/",
                     "resolutions": ["1m"], "grouped_interval": 5.0 if fast else 60.0, "heartbeat": 10.0,
                     "rate_limit": 20.0, **poll},
        "bitopro": {"ws_url": p.replace("http://", "ws://") + "/ws", "rest_url": f"{p}/v3", "resolutions": ["1m"],
                    "heartbeat": 45.0, "rate_limit": 8.0, "book_interval": 5.0, **poll},
        "bitbay": {"rest_url": f"{b}/API/Public", "trading_url": f"{b}/API/Trading/tradingApi.php",
                   "api_key_env": DEMO_KEY_ENV, "api_secret_env": DEMO_SECRET_ENV, "rate_limit": 1.0,
                   "book_interval": 5.0, "trades_interval": 1.0},
    }
    venues = {name: v for name, v in venues.items() if name in urls}  # the venues this simulator serves
    for name, v in venues.items():
        v["pairs"] = list(pairs)
        if channels and name in channels:
            v["channels"] = channels[name]
    return {"recorder": {"root": str(root), "fsync_interval": 0.5, "log_format": "kv", "log_level": "warning",
                         "backoff_base": 0.2, "backoff_cap": 2.0 if fast else 30.0},
            "venues": venues}


def demo_env() -> dict[str, str]:
    """The environment the demo config expects (the simulator's BitBay test key)."""
    key, secret = DEFAULT_CREDENTIALS["bitbay"]
    return {DEMO_KEY_ENV: key, DEMO_SECRET_ENV: secret}


#: Tables that hold market data (a demo that recorded none of them for a venue recorded nothing from it).
DATA_TABLES = ("book_events", "book_levels", "trades")


async def record(seconds: float, root: str | Path, *, pairs: list[str], rate: float, seed: int,
                 announce=None) -> None:
    """Run simulator + recorder together for `seconds` once the recorder's feeds run, then stop it gracefully."""
    async with Simulator(SimConfig(seed=seed, pairs=pairs, rate=rate)) as sim:
        cfg = config_mod.parse(sim_doc(sim.urls, root, pairs), base=Path.cwd(), env={**os.environ, **demo_env()})
        ready = asyncio.Event()
        daemon = Daemon(cfg, on_ready=lambda _d: ready.set(), announce=announce)
        task = asyncio.create_task(daemon.run())
        waiting = asyncio.create_task(ready.wait())
        await asyncio.wait([task, waiting], return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), seconds)
            except TimeoutError:
                pass
        daemon.stop()
        await task


def nothing_recorded(summary: dict) -> list[str]:
    """Venues of the demo with no market data rows in the summary (recorder.status.summarize)."""
    got = {v for t in DATA_TABLES for v, n in summary["rows"].get(t, {}).items() if n}
    return [v for v in ("bitbay", "bitexbit", "bitopro", "btcalpha") if v not in got]
