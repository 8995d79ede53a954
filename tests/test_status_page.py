"""Issue 14: the status page at `/`, rendered by a real headless Debian chromium against `recorder run` on the simulator.

The session fixture installs Debian's chromium with apt-get when it is missing (as root, like CI). The test asserts
the rendered content, saves a screenshot under its tmp dir, and checks that a feed whose venue stopped answering
shows as failing.
"""
from __future__ import annotations

import html.parser
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from simfixtures import threaded_sim  # noqa: E402
from test_e2e_process import KEY, SECRET, start, write_config  # noqa: E402
from test_operability import wait_ready  # noqa: E402

from recorder.sim.server import SimConfig  # noqa: E402

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed with apt-get when missing."""
    exe = shutil.which("chromium")
    if exe is None:
        if os.geteuid() != 0:
            pytest.fail("chromium is missing and installing it needs root: apt-get install chromium")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, check=True, capture_output=True)
            subprocess.run(install, env=env, check=True, capture_output=True)
        exe = shutil.which("chromium")
    assert exe, "chromium not found after apt-get install"
    return exe


def browse(exe: str, tmp: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{time.monotonic_ns()}"
    return subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *args, url], capture_output=True, text=True,
                          timeout=120, cwd=tmp)


class Rows(html.parser.HTMLParser):
    """The rows of the feeds table of a rendered DOM: data-feed -> data-state, and every cell's text."""

    def __init__(self) -> None:
        super().__init__()
        self.states: dict[str, str] = {}
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "data-feed" in a:
            self.states[a["data-feed"]] = a["data-state"]

    def handle_data(self, data):
        if data.strip():
            self.text.append(data.strip())


def dom(exe: str, tmp: Path, url: str) -> Rows:
    p = browse(exe, tmp, url, "--dump-dom")
    assert p.returncode == 0 and "<table" in p.stdout, p.stderr[-2000:]
    r = Rows()
    r.feed(p.stdout)
    return r


def health(port: int) -> dict:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        return json.loads(e.read())


def test_status_page_in_a_real_browser_shows_feeds_store_disk_and_a_stopped_feed_as_failing(tmp_path, chromium):
    with threaded_sim(SimConfig(seed=11, pairs=["BTC_USD", "ETH_BTC"], rate=10.0, credentials={"bitbay": (KEY, SECRET)})) as ts:
        cfg = write_config(tmp_path, ts.sim.urls, health_grace=30.0)
        proc = start(cfg, tmp_path / "recorder.log")
        try:
            root = tmp_path / "data"
            wait_ready(root, proc)
            port = json.loads((root / "_state" / "writer-recorder.json").read_text())["port"]
            deadline = time.monotonic() + 60
            while {f["state"] for f in health(port)["feeds"].values()} != {"live"}:
                assert time.monotonic() < deadline, health(port)
                time.sleep(0.5)
            url = f"http://127.0.0.1:{port}/"
            page = dom(chromium, tmp_path, url)
            text = " ".join(page.text)
            assert set(page.states.values()) == {"live"} and len(page.states) >= 10, page.states
            for needle in ("booktape recorder 0.1.0", "recording", "uptime", "msg/s", "last message", "lag",
                           "reconnects 1 h", "gaps 1 h", "rejects 1 h", "Store", "pending_bytes",
                           "Rows recorded since start", "book_events", "trades", "used by the root",
                           "free on its file system"):
                assert needle in text, needle
            shot = tmp_path / "status-live.png"
            p = browse(chromium, tmp_path, url, f"--screenshot={shot}", "--window-size=1280,1900",
                       "--hide-scrollbars")
            assert p.returncode == 0 and shot.stat().st_size > 10_000, p.stderr[-2000:]

            # BitBay stops answering (every response a 500): its feeds must show failing, and the page NOT OK
            req = urllib.request.Request(f"{ts.sim.urls['control']}/_sim/fault", method="POST",
                                         data=json.dumps({"kind": "http_error", "venue": "bitbay", "status": 500,
                                                          "count": 1_000_000}).encode(),
                                         headers={"Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=5).read()
            deadline = time.monotonic() + 60
            while health(port)["feeds"]["bitbay:trades"]["state"] != "failing":
                assert time.monotonic() < deadline, health(port)["feeds"]["bitbay:trades"]
                time.sleep(0.5)
            page = dom(chromium, tmp_path, url)
            assert page.states["bitbay:trades"] == "failing", page.states
            assert page.states["btcalpha:book"] == "live"
            verdict = " ".join(page.text)
            assert "NOT OK:" in verdict and "bitbay:trades" in verdict.split("NOT OK:")[1].split("uptime")[0]
            shot2 = tmp_path / "status-failing.png"
            p = browse(chromium, tmp_path, url, f"--screenshot={shot2}", "--window-size=1280,1900",
                       "--hide-scrollbars")
            assert p.returncode == 0 and shot2.exists()
            print(f"screenshots: {shot} {shot2}")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
