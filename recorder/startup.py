"""Start-up checks that run before anything is written to the root, each failing with one clear line.

`StartupError` is what `recorder run|simulate|demo` print as one line (JSON in json log mode) and exit 2 on.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import NoReturn

import aiohttp

from recorder.config import VenueConfig
from recorder.venues import bitbay, bitopro, btcalpha, btcalpha_alp

#: Trees a dataset root may not live in (kernel and device file systems).
FORBIDDEN = (Path("/proc"), Path("/sys"), Path("/dev"))


class StartupError(Exception):
    """A start-up failure an operator can act on; its message is one line."""


def check_root(root: Path) -> None:
    """The root is a directory we can create or write, outside /proc, /sys and /dev; nothing is created here."""
    resolved = Path(os.path.abspath(root))
    for bad in FORBIDDEN:
        if resolved == bad or bad in resolved.parents:
            raise StartupError(f"dataset root {root} is under {bad}, which cannot hold files; choose another root")
    if resolved.exists() and not resolved.is_dir():
        raise StartupError(f"dataset root {root} exists and is not a directory")
    probe = resolved
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise StartupError(f"dataset root {root}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise StartupError(f"dataset root {root}: {probe} is not writable by this user")


def lock_path(root: Path, writer: str) -> Path:
    """The writer lease file (flock'd by the running recorder's Store)."""
    return Path(root) / "_state" / f"writer-{writer}.lock"


def lease_holder(root: Path, writer: str) -> bool:
    """True when a running recorder holds the writer lease of `writer` on `root` (nothing is created)."""
    p = lock_path(root, writer)
    try:
        fd = os.open(p, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def check_lease(root: Path, writer: str) -> None:
    """A second recorder with the same writer id on the same root is refused before it touches anything."""
    if lease_holder(root, writer):
        raise StartupError(f"another recorder (writer {writer!r}) is already running on {root}: "
                           f"stop it, or give this one another root")


def bind(host: str, port: int) -> socket.socket:
    """Bind the metrics/status listening socket now, so a port in use fails the start before the root is touched."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise StartupError(f"metrics_host {host!r} does not resolve: {e.strerror}") from None
    family, _, _, _, addr = infos[0]
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(addr)
        s.listen(128)
    except OSError as e:
        s.close()
        if e.errno == errno.EADDRINUSE:
            raise StartupError(f"port {port} on {host} is already in use (another recorder or service?); "
                               f"set recorder.metrics_port to a free port, or 0 to pick one") from None
        raise StartupError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    s.setblocking(False)
    return s


def pairs_request(v: VenueConfig) -> tuple[str, object] | None:
    """(URL, parser) of the venue's list of pairs, where the venue has one (BitBay's seed has none).

    Under `api = "current"`: BTC-Alpha still lists its pairs at `api/v1/pairs/` (beside alp-ws's `api/web/`),
    Zonda at `trading/ticker`."""
    if v.api == "current":
        if v.name == "btcalpha":
            return btcalpha_alp.pairs_url(v.urls["rest_url"]), btcalpha.parse_pairs
        return bitbay.zonda_markets_url(v.urls["rest_url"]), bitbay.parse_zonda_markets
    if v.name in ("btcalpha", "bitexbit"):
        return btcalpha.pairs_url(v.urls["rest_url"]), btcalpha.parse_pairs
    if v.name == "bitopro":
        return bitopro.trading_pairs_url(v.urls["rest_url"]), bitopro.parse_trading_pairs
    return None


@dataclass
class PairCheck:
    """The outcome of checking a venue's pairs: those it does not list, why it could not be checked (or ""),
    and the response received (kept for `raw` once the store is open: every message received is recorded)."""

    missing: list[str]
    why: str = ""
    url: str = ""
    status: int | None = None
    body: bytes | None = None
    ts_recv: int = 0


async def unlisted_pairs(v: VenueConfig, http: aiohttp.ClientSession, timeout: float = 10.0) -> PairCheck:
    """Configured pairs the venue does not list (nothing is written: the start may still fail)."""
    req = pairs_request(v)
    if req is None:
        return PairCheck([], f"{v.name} publishes no list of pairs")
    url, parse = req
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as r:
            body = await r.read()
            got = PairCheck([], "", url, r.status, body, time.time_ns())
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        return PairCheck([], f"GET {url}: {type(e).__name__}: {e}", url)
    if got.status != 200:
        got.why = f"GET {url}: HTTP {got.status}"
        return got
    try:
        listed = set(parse(body))
    except ValueError as e:
        got.why = f"GET {url}: unparseable list of pairs ({e})"
        return got
    got.missing = [p for p in v.pairs if p not in listed]
    return got


def fail(message: str, fmt: str = "kv") -> NoReturn:
    """Print a start-up failure as one line on stderr (a JSON object in json log mode) and exit 2."""
    line = " ".join(message.split())
    if fmt == "json":
        out = json.dumps({"ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "level": "error",
                          "logger": "recorder.startup", "msg": "start-up failed", "error": line}, ensure_ascii=False)
    else:
        out = f"recorder: error: {line}"
    print(out, file=sys.stderr, flush=True)
    raise SystemExit(2)
