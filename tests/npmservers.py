"""The real npm socket.io / engine.io servers for conformance tests: installed once into a cache directory with
the machine's npm, started as Node processes on 127.0.0.1 (tests/node/btcalpha_server.js) and driven over HTTP."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

#: name -> npm spec; each goes into its own prefix so two socket.io majors coexist.
PACKAGES = {"sio2": "socket.io@2.5.0", "sio4": "socket.io@4", "eio6": "engine.io@6"}
SERVER_JS = Path(__file__).parent / "node" / "btcalpha_server.js"


def cache_dir() -> Path:
    """BOOKTAPE_NPM_CACHE, else ~/.cache/booktape-npm."""
    return Path(os.environ.get("BOOKTAPE_NPM_CACHE") or Path.home() / ".cache" / "booktape-npm")


def install() -> dict[str, Path]:
    """Each package's node_modules directory, installed with npm when missing (skips when npm or node is absent)."""
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        pytest.skip("npm/node not on PATH: the conformance tests run the real npm socket.io and engine.io servers")
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel sessions (other worktrees) share the cache
        for name, spec in PACKAGES.items():
            prefix = root / name
            pkg = spec.rsplit("@", 1)[0]
            stamp = prefix / f".installed-{spec}"
            if not stamp.exists():
                prefix.mkdir(exist_ok=True)
                (prefix / "package.json").write_text('{"private": true}\n')
                r = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--no-save", spec], cwd=prefix,
                                   capture_output=True, text=True, timeout=300)
                if r.returncode != 0 or not (prefix / "node_modules" / pkg / "package.json").exists():
                    raise RuntimeError(f"npm install {spec} failed: {r.stderr[-2000:]}")
                stamp.touch()
            out[name] = prefix / "node_modules"
    return out


def version(modules: Path, pkg: str) -> str:
    return json.loads((modules / pkg / "package.json").read_text())["version"]


class NodeVenue:
    """One btcalpha_server.js process (restartable with its state) and its control endpoints."""

    def __init__(self, modules: Path, mode: str, port: int, pairs: list[str], workdir: Path, *extra: str) -> None:
        self.modules, self.mode, self.port, self.pairs, self.extra = modules, mode, port, pairs, list(extra)
        self.state, self.log = workdir / "node-state.json", workdir / "node-sent.jsonl"
        self.out = workdir / "node.out"
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{port}"

    def start(self) -> "NodeVenue":
        cmd = ["node", str(SERVER_JS), "--mode", self.mode, "--port", str(self.port), "--pairs", ",".join(self.pairs),
               "--state", str(self.state), "--log", str(self.log), *self.extra]
        self.proc = subprocess.Popen(cmd, env={**os.environ, "NODE_PATH": str(self.modules)},
                                     stdout=self.out.open("ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.out.read_text()[-2000:]
            try:
                self.get("/ctl/clients")
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"node server did not listen: {self.out.read_text()[-2000:]}")

    def kill(self) -> None:
        """kill -9 (no close frames)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=5) as r:
            return json.loads(r.read())

    def step(self, n: int) -> int:
        return self.get(f"/ctl/step?n={n}")["sent"]

    def wait_clients(self, n: int, timeout: float = 30.0, subscribed: int | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            c = self.get("/ctl/clients")
            if c["clients"] >= n and (subscribed is None or len(c["subscribed"]) >= subscribed):
                return
            time.sleep(0.05)
        raise AssertionError(f"{n} client(s) never connected/subscribed: {self.get('/ctl/clients')}")

    def book(self, pair: str) -> dict:
        return self.get(f"/ctl/book?pair={pair}")

    def sent(self) -> list[dict]:
        """Every frame sent to a client, in order: {"pair", "wire"}."""
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]

    def stop(self) -> None:
        self.kill()


@contextmanager
def node_venue(*a, **kw):
    v = NodeVenue(*a, **kw).start()
    try:
        yield v
    finally:
        v.stop()
