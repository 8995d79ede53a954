"""Helpers for the simulator tests: a simulator on a background event-loop thread, and raw socket clients."""
from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from decimal import Decimal
from typing import Iterator

import aiohttp

from recorder.sim.server import SimConfig, Simulator

START = 1_700_000_000.0  # fixed logical epoch for deterministic runs


@contextlib.contextmanager
def threaded_sim(cfg: SimConfig) -> Iterator["ThreadedSim"]:
    """Run a Simulator on its own loop thread so blocking clients (ccxt) can call it from the test thread."""
    ts = ThreadedSim(cfg)
    ts.start()
    try:
        yield ts
    finally:
        ts.stop()


class ThreadedSim:
    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.sim: Simulator | None = None

    def start(self) -> None:
        self.thread.start()
        self.sim = self.run(self._enter())

    async def _enter(self) -> Simulator:
        return await Simulator(self.cfg).__aenter__()

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def call(self, fn, *args):
        """Call a plain function of the simulator on its loop thread (e.g. advance, true_book)."""
        async def go():
            return fn(*args)
        return self.run(go())

    def stop(self) -> None:
        self.run(self.sim.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def ws_url(base: str, path: str) -> str:
    return base.replace("http://", "ws://") + path


def loads(text: str):
    """JSON with exact decimals for floats."""
    return json.loads(text, parse_float=Decimal)


async def read_frames(ws: aiohttp.ClientWebSocketResponse, until, timeout: float = 10.0) -> list[str]:
    """Collect text frames until `until(frames)` is true."""
    frames: list[str] = []
    async with asyncio.timeout(timeout):
        while not until(frames):
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"socket ended: {msg.type}")
            frames.append(msg.data)
    return frames


async def read_events(ws: aiohttp.ClientWebSocketResponse, n: int, timeout: float = 15.0) -> list[str]:
    """Collect text frames until `n` of them are `42[...]` events."""
    frames: list[str] = []
    seen = 0
    async with asyncio.timeout(timeout):
        while seen < n:
            msg = await ws.receive()
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"socket ended: {msg.type}")
            frames.append(msg.data)
            seen += msg.data.startswith("42")
    return frames


def book_events(frames: list[str]) -> list[tuple[str, dict]]:
    """The (event name, message) of every `42[...]` frame."""
    out = []
    for f in frames:
        if f.startswith("42"):
            name, msg = json.loads(f[2:], parse_float=Decimal)
            out.append((name, msg))
    return out


class _Reply:
    def __init__(self, status: int, body: bytes) -> None:
        self.status_code, self.body = status, body

    def json(self):
        return json.loads(self.body)


class rest:
    """Blocking HTTP for tests (stdlib only): `rest.get(url, params=…)`, `rest.post(url, json=…)`."""

    @staticmethod
    def _do(req: urllib.request.Request, timeout: float) -> _Reply:
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return _Reply(r.status, r.read())
        except urllib.error.HTTPError as e:
            return _Reply(e.code, e.read())

    @classmethod
    def get(cls, url: str, params: dict | None = None, timeout: float = 5) -> _Reply:
        return cls._do(urllib.request.Request(url + ("?" + urllib.parse.urlencode(params) if params else "")), timeout)

    @classmethod
    def post(cls, url: str, body: object = None, timeout: float = 5) -> _Reply:
        data = json.dumps(body).encode()
        return cls._do(urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}), timeout)
