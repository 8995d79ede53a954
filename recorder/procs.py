"""Child processes of the recorder (the compaction merge, the kernels' first compile)."""
from __future__ import annotations

import os
from pathlib import Path


def child_env() -> dict:
    """The environment for a `python -m/-c` child, with this package importable whatever the install."""
    here = str(Path(__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": here + (os.pathsep + path if path else "")}
