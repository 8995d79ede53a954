"""Handing freed memory back to the OS after the store's big steps (conversion, merge)."""
from __future__ import annotations

import ctypes

import pyarrow as pa

_malloc_trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc only


def release_memory() -> None:
    """Give freed memory back to the OS: Arrow's pool, and the C heap the Parquet writer's metadata and codecs
    use (glibc keeps freed chunks of a long-lived thread's arena otherwise; RSS crept ~1 MB per conversion)."""
    pa.default_memory_pool().release_unused()
    if _malloc_trim is not None:
        _malloc_trim(0)
