"""The README and docs/python.md as a newcomer uses them: every ```sh and ```python block runs as written,
in order, from a directory laid out like the repository after `make demo` (its demo-data/ is a short demo
recorded by the session's fixture). A block preceded by `<!-- readme-test: skip (why) -->` is not run.

Commands marked `# runs until Ctrl-C` are started in the background and stopped with SIGINT before the next
block without such a command. The simulator's port (8700 in the README and recorder.sim.toml) is moved to
free ports for the test; nothing else is changed."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"(<!-- readme-test: skip[^>]*-->\n)?```(sh|python)\n(.*?)```", re.S)
FOREVER = "# runs until Ctrl-C"


def blocks(path: Path) -> list[tuple[str, str]]:
    """(language, code) of every block to run, in order."""
    return [(lang, code) for skip, lang, code in FENCE.findall(path.read_text()) if not skip]


def lines(code: str) -> list[str]:
    """Logical shell lines (backslash continuations joined), blank lines dropped."""
    return [ln for ln in code.replace("\\\n", " ").splitlines() if ln.strip()]


def free_ports(n: int) -> int:
    """The first of n consecutive free loopback ports."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n >= 65535:
            continue
        try:
            socks = []
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


class Runner:
    """Runs README blocks in `cwd` with one environment, keeping background commands until told to stop."""

    def __init__(self, cwd: Path, port: int):
        self.cwd, self.port = cwd, port
        self.env = {k: v for k, v in os.environ.items() if k not in ("BOOKTAPE_ROOT", "ARROW_DEFAULT_MEMORY_POOL")}
        self.env["PATH"] = f"{Path(sys.executable).parent}:{self.env.get('PATH', '')}"
        self.background: list[tuple[str, subprocess.Popen]] = []
        self.log = []

    def sh(self, code: str) -> None:
        script = []
        for ln in lines(code):
            ln = ln.replace("8700", str(self.port))
            if ln.lstrip().startswith("export "):
                for kv in shlex.split(ln.split("#", 1)[0])[1:]:
                    k, v = kv.split("=", 1)
                    self.env[k] = v
            elif FOREVER in ln:
                self._run(script)
                script = []
                self._start(ln)
            else:
                script.append(ln)
        if not any(FOREVER in ln for ln in lines(code)):
            self.stop()
        self._run(script)

    def _run(self, script: list[str]) -> None:
        if not script:
            return
        text = "set -euo pipefail\n" + "\n".join(script) + "\n"
        out = subprocess.run(["bash", "-c", text], cwd=self.cwd, env=self.env, capture_output=True, text=True,
                             timeout=400)
        self.log.append((text, out.stdout, out.stderr))
        assert out.returncode == 0, f"README commands failed ({out.returncode}):\n{text}\n{out.stdout}\n{out.stderr}"

    def _start(self, ln: str) -> None:
        log = open(self.cwd / f"background-{len(self.background)}.log", "w")
        proc = subprocess.Popen(["bash", "-c", f"exec {ln}"], cwd=self.cwd, env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.background.append((ln, proc))
        if " simulate " in ln:
            self._wait_url(f"http://127.0.0.1:{self.port + 4}/_sim/truth/book?venue=btcalpha&pair=BTC_USD", proc)
        else:
            time.sleep(12.0)  # let it record
        assert proc.poll() is None, (ln, (self.cwd / f"background-{len(self.background) - 1}.log").read_text())

    def _wait_url(self, url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert proc.poll() is None
            try:
                urllib.request.urlopen(url, timeout=2)
                return
            except urllib.error.HTTPError:
                return  # it answers
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"{url} did not answer within {timeout} s")

    def stop(self) -> None:
        """SIGINT every background command, newest first, as Ctrl-C would; each must exit 0 within 15 s."""
        while self.background:
            ln, proc = self.background.pop()
            proc.send_signal(signal.SIGINT)
            try:
                code = proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise AssertionError(f"{ln!r} did not stop within 15 s of Ctrl-C") from None
            assert code == 0, (ln, code)

    def python(self, code: str, scope: dict) -> None:
        cwd = os.getcwd()
        os.chdir(self.cwd)
        try:
            exec(compile(code, "README", "exec"), scope)
        finally:
            os.chdir(cwd)


@pytest.fixture
def repo_copy(demo_root, tmp_path) -> tuple[Path, int]:
    """A directory like the repository after `make demo`: .venv, demo-data/, docs/examples/, the configs."""
    root = tmp_path / "repo"
    root.mkdir()
    (root / ".venv").symlink_to(Path(sys.executable).parent.parent)
    shutil.copytree(demo_root, root / "demo-data")
    shutil.copytree(REPO / "docs" / "examples", root / "docs" / "examples")
    port = free_ports(5)
    cfg = (REPO / "recorder.sim.toml").read_text()
    for i in range(4):
        cfg = cfg.replace(f"127.0.0.1:{8700 + i}", f"127.0.0.1:{port + i}")
    cfg = cfg.replace("metrics_port = 9108", f"metrics_port = {free_ports(1)}")
    (root / "recorder.sim.toml").write_text(cfg)
    return root, port


def test_every_readme_command_runs_as_written(repo_copy):
    root, port = repo_copy
    run = Runner(root, port)
    scope: dict = {}
    todo = blocks(REPO / "README.md")
    assert len(todo) >= 6
    try:
        for lang, code in todo:
            run.sh(code) if lang == "sh" else run.python(code, scope)
    finally:
        for _, proc in run.background:
            proc.kill()
    out = "\n".join(o for _, o, _ in run.log)
    assert "wrote" in out and "verify ok" in out and (root / "btcalpha.png").stat().st_size > 10_000
    assert (root / "bbo.csv").read_text().startswith("ts_event,ts_recv,seq,bid_price")
    assert "imported" in out and (root / "sim-data" / "book_events").is_dir()
    readme = (REPO / "README.md").read_text()
    assert "--output FILE.png" not in readme and "Every replay command takes" not in readme


def test_docs_python_session_runs_as_written(repo_copy):
    root, _ = repo_copy
    run = Runner(root, 0)
    scope: dict = {}
    todo = blocks(REPO / "docs" / "python.md")
    assert len(todo) >= 4 and all(lang == "python" for lang, _ in todo)
    for _, code in todo:
        run.python(code, scope)
    assert scope["bbo"].num_rows > 0 and scope["book"].exact and scope["written"].rows > 0
