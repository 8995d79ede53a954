"""The durable log: append-only segment files of CRC-framed Arrow IPC record batches, and their recovery.

Frame: u32 body length, u32 CRC32(body), body = u32 schema fingerprint, table, exchange, pair (each u8
length + ASCII), then the Arrow IPC message of one record batch (the schema comes from `schemas`, its
fingerprint guards against reading a log written under another schema). Recovery keeps frames up to the
first torn or bad-CRC one and truncates the file there.
"""
from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from schemas import TABLES

_HEAD = struct.Struct("<II")
_FP = struct.Struct("<I")
#: Per-table schema fingerprints (CRC32 of the serialized schema).
FINGERPRINT = {name: zlib.crc32(t.schema.serialize()) for name, t in TABLES.items()}
SUFFIX = ".log"


def segment_path(log_dir: Path, segment_id: int) -> Path:
    """Segment files are named by their id (from the seq lease: unique, increasing)."""
    return log_dir / f"{segment_id:020d}{SUFFIX}"


def segment_id(path: Path) -> int:
    """The id a segment file is named by."""
    return int(path.name[: -len(SUFFIX)])


def list_segments(log_dir: Path) -> list[Path]:
    """Segments in id order."""
    return sorted(p for p in log_dir.glob(f"*{SUFFIX}") if p.name[: -len(SUFFIX)].isdigit())


def encode(table: str, exchange: str, pair: str, batch: pa.RecordBatch) -> tuple[list, "Frame"]:
    """One frame: the buffers to write (header + key + IPC message, ready for os.writev), and the frame
    itself as recovery would read it back."""
    key = _FP.pack(FINGERPRINT[table]) + b"".join(
        bytes([len(s)]) + s for s in (table.encode(), exchange.encode(), pair.encode()))
    ipc = batch.serialize()
    crc = zlib.crc32(ipc, zlib.crc32(key))
    return [_HEAD.pack(len(key) + ipc.size, crc) + key, ipc], Frame(table, exchange, pair, memoryview(ipc))


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame; the batch stays serialized until it is needed."""

    table: str
    exchange: str
    pair: str
    ipc: memoryview

    def batch(self) -> pa.RecordBatch:
        """The record batch, with the table's exact schema."""
        return pa.ipc.read_record_batch(pa.py_buffer(self.ipc), TABLES[self.table].schema)


def read_frames(data: bytes) -> tuple[list[Frame], int]:
    """Decode frames from a segment's bytes: (good frames, length of the valid prefix)."""
    mv = memoryview(data)
    frames, pos, end = [], 0, len(data)
    while pos + _HEAD.size <= end:
        length, crc = _HEAD.unpack_from(mv, pos)
        body = pos + _HEAD.size
        if length < _FP.size + 3 or body + length > end or zlib.crc32(mv[body:body + length]) != crc:
            break
        frame = _parse_body(mv[body:body + length])
        if frame is None:
            break
        frames.append(frame)
        pos = body + length
    return frames, pos


def _parse_body(mv: memoryview) -> Frame | None:
    (fp,), i, key = _FP.unpack_from(mv, 0), _FP.size, []
    for _ in range(3):
        n = mv[i]
        key.append(bytes(mv[i + 1:i + 1 + n]).decode("ascii", "replace"))
        i += 1 + n
    table, exchange, pair = key
    if table not in TABLES:
        return None
    if FINGERPRINT[table] != fp:
        raise RuntimeError(f"log frame for table {table!r} was written under a different schema; "
                           "convert it with the booktape version that wrote it")
    return Frame(table, exchange, pair, mv[i:])


def recover(path: Path) -> list[Frame]:
    """Read a leftover segment, truncating it (durably) at the first torn or corrupt frame."""
    data = path.read_bytes()
    frames, valid = read_frames(data)
    if valid < len(data):
        with open(path, "r+b") as f:
            f.truncate(valid)
            os.fsync(f.fileno())
    return frames


class Segment:
    """The open segment being appended to; writes go to the OS at once, fsync is the caller's schedule.

    It also keeps the frames written, while the caller lets it (`frames` is None once one was not kept),
    so that converting it need not read the file back.
    """

    def __init__(self, path: Path):
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.size = os.fstat(self.fd).st_size
        self.synced = self.size
        self.frames: list[Frame] | None = [] if self.size == 0 else None
        self.held = 0  # bytes of the kept frames

    def write(self, bufs: list, frame: Frame | None = None) -> int:
        """Append one frame whole, or (on any error) leave the file as it was; keep `frame` in memory
        (None: stop keeping frames, the segment is read back to be converted)."""
        total = sum(memoryview(b).nbytes for b in bufs)
        try:
            written = os.writev(self.fd, bufs)
            if written != total:  # short write: finish it
                rest = b"".join(bytes(memoryview(b)) for b in bufs)[written:]
                while rest:
                    rest = rest[os.write(self.fd, rest):]
        except BaseException:
            os.ftruncate(self.fd, self.size)
            raise
        self.size += total
        if frame is None or self.frames is None:
            self.frames, self.held = None, 0
        else:
            self.frames.append(frame)
            self.held += total
        return total

    def take_frames(self) -> list[Frame] | None:
        """The kept frames, handed over: the segment keeps none after (`held` still says how many bytes)."""
        frames, self.frames = self.frames, None
        return frames

    def close(self) -> None:
        os.fsync(self.fd)
        os.close(self.fd)
