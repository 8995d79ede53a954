"""Fixtures shared by test modules: a short demo dataset recorded once per session."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

DEMO_SECONDS = 10


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """A dataset recorded by `recorder demo` (simulator for all four venues) for a few seconds; treat as
    read-only: tests that write copy it first."""
    root = tmp_path_factory.mktemp("demo") / "demo-data"
    env = {k: v for k, v in os.environ.items() if k != "BOOKTAPE_ROOT"}
    out = subprocess.run([str(Path(sys.executable).parent / "recorder"), "demo", "--seconds", str(DEMO_SECONDS),
                          "--root", str(root)], capture_output=True, text=True, timeout=180, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    return root
