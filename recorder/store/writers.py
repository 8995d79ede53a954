"""Writer ids on a dataset root: each writer holds `<root>/_state/writer-<id>.lock` (flock) while it writes.

The lock is what tells "a recorder is running on this root" apart from files a stopped one left: a held
flock dies with its process, so a kill -9 never leaves a stale lock.
"""
from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path

from .fsutil import makedirs
from .writer import StoreError

WRITER_RE = re.compile(r"[A-Za-z0-9_]{1,64}")


def lock_path(root, writer: str) -> Path:
    """The lock file of one writer id."""
    return Path(root) / "_state" / f"writer-{writer}.lock"


def acquire(root, writer: str) -> int:
    """Hold writer's lock (an fd to os.close to release); StoreError when the id is bad or already held."""
    if not isinstance(writer, str) or not WRITER_RE.fullmatch(writer):
        raise StoreError(f"bad writer id {writer!r} (must match {WRITER_RE.pattern})")
    path = lock_path(root, writer)
    makedirs(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreError(f"writer id {writer!r} is already open on {root} (another process holds {path})") from None
    return fd


def held(root) -> list[str]:
    """Writer ids whose lock a live process holds right now (probed without blocking), sorted."""
    out = []
    for path in sorted((Path(root) / "_state").glob("writer-*.lock")):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            out.append(path.name[len("writer-"):-len(".lock")])
        finally:
            os.close(fd)  # releases the probe's shared lock
    return out
