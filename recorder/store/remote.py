"""Shipping a writer's finished Parquet files from its local spool root to an s3:// dataset root.

The durable log and the files still being written stay on local disk, where fsync means something. A file
is shipped once nothing will rewrite it: its hour is closed and compacted (one file of this writer left, no
log segment waiting), or the recorder is stopping (`everything=True`: the open hour's final files too).
Shipping = upload to the file's own key (an S3 PUT or multipart upload becomes visible only when complete,
so no reader sees a partial object), then verify size and a SHA-256 of the object read back, and only
then remove the local copy. A crash at any point leaves the local file, and the next pass uploads the same
bytes to the same key again: nothing is lost and nothing is duplicated.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

from schemas import storage

from . import compact
from .fsutil import fsync_dir

log = logging.getLogger(__name__)


def ship_file(fs, spool: Path, remote: str, path: Path) -> str:
    """Upload one spool file to its key under the remote root, verify it, remove the local copy; the key."""
    key = storage.key(remote, path.relative_to(spool).as_posix())
    storage.put_verified(fs, path, key)
    path.unlink()
    fsync_dir(path.parent)
    return key


def pending(spool: Path, writer: str, everything: bool = False) -> list[Path]:
    """Spool files ready to ship: closed, compacted hours of this writer (and every final file if everything)."""
    out = []
    for _, directory, hod, hour in compact.scan(spool):
        final, waiting = compact.final_files(spool, directory, hod, writer)
        if waiting or not final:
            continue
        if everything or (compact.closed(hour) and len(final) == 1):
            out.extend(final)
    return out


def ship(spool: Path, remote: str, writer: str, *, everything: bool = False, fs=None, **s3) -> list[str]:
    """Ship what is ready (see pending) under the compaction lock, so no merge runs on a file being shipped;
    s3: storage.filesystem's endpoint_url, region, key, secret."""
    fs = fs or storage.filesystem(**s3)
    keys = []
    for path in pending(spool, writer, everything):
        with compact.compaction_lock(spool):
            if path.exists():
                keys.append(ship_file(fs, spool, remote, path))
    return keys


class Shipper:
    """A background thread shipping closed hours every `interval` seconds, and everything at stop()."""

    def __init__(self, spool: Path, remote: str, writer: str, interval: float = 30.0, **s3):
        self.spool, self.remote, self.writer, self.interval, self.s3 = Path(spool), remote, writer, interval, s3
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.shipped = 0
        self.errors = 0

    def start(self) -> "Shipper":
        self._thread = threading.Thread(target=self._run, name="shipper", daemon=True)
        self._thread.start()
        return self

    def _pass(self, everything: bool) -> None:
        try:
            self.shipped += len(ship(self.spool, self.remote, self.writer, everything=everything, **self.s3))
        except Exception as e:  # the files stay in the spool; the next pass tries again
            self.errors += 1
            log.warning("shipping to the bucket failed; files kept in the spool", extra={"fields": {
                "error": type(e).__name__}})

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._pass(False)

    def stop(self) -> None:
        """Stop the thread, then ship every final file (call after the store has closed)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._pass(True)

