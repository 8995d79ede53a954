"""A small filesystem for disk-full tests: a tmpfs the test mounts (root only; otherwise the test is skipped)."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_fs(where: Path, size: str = "8m"):
    """Mount a tmpfs of `size` at `where` for the duration; skip (with the reason) when that is not possible."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("disk-full tests mount a small tmpfs, which needs root and mount(8)")
    where.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True,
                         text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(path: Path) -> int:
    """Write `path` until the filesystem is full; bytes written."""
    n = 0
    block = b"\0" * (64 << 10)
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                n += f.write(block)
            except OSError:
                break
        # the last block may have gone in partly: the disk is full to the byte
        while True:
            try:
                if not f.write(b"\0" * 512):
                    break
                n += 512
            except OSError:
                break
    return n
