"""Store health for /health and /metrics, from Store.stats: is the store keeping what it is given?

A pure function of the stats, so the /health handler (and its tests) call it with any clock.
"""
from __future__ import annotations

import time


def store_health(stats: dict, now: float | None = None) -> dict:
    """{"ok", "state", "disk_full", "backlog_bytes", "backlog_ratio", "fsync_age_seconds"}; state is "ok" or
    "stalled: <why>" (a full disk)."""
    now = time.time() if now is None else now
    pending, cap = stats.get("pending_bytes", 0), stats.get("max_pending_bytes") or 1
    last_fsync = stats.get("last_fsync_ts")
    full = stats.get("disk_full_since") is not None
    state = "stalled: disk full" if full else "ok"
    return {"ok": state == "ok", "state": state, "disk_full": full, "backlog_bytes": pending,
            "backlog_ratio": round(pending / cap, 4),
            "fsync_age_seconds": None if last_fsync is None else round(now - last_fsync, 3)}
