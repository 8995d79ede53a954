"""Durable filesystem steps: fsync a directory, create directories durably, publish a file atomically."""
from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make entries created, renamed or removed in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def makedirs(path: Path) -> None:
    """mkdir -p, fsyncing each parent whose entry we created."""
    path = Path(path)
    if path.is_dir():
        return
    makedirs(path.parent)
    try:
        path.mkdir()
    except FileExistsError:
        return
    fsync_dir(path.parent)


def fsync_file(path: Path) -> None:
    """fsync a file's data and metadata."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(final: Path) -> Path:
    """The dot-prefixed name a file is written under before its rename; readers skip it."""
    return final.with_name(f".{final.name}.tmp")


def publish(tmp: Path, final: Path) -> None:
    """fsync `tmp`, rename it over `final`, fsync the directory: readers see all of it or nothing."""
    fsync_file(tmp)
    os.replace(tmp, final)
    fsync_dir(final.parent)


def write_atomic(final: Path, data: bytes) -> None:
    """Write a small file (intent record) atomically and durably."""
    tmp = temp_name(final)
    with open(tmp, "wb") as f:
        f.write(data)
    publish(tmp, final)
