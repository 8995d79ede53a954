"""Store health for /health and /metrics, from Store.stats: is the store keeping what it is given?

A pure function of the stats, so the /health handler (and its tests) call it with any clock. The store is
stalled when the disk is full, when data has waited longer than `stall_after` seconds for its fsync (a
stalled disk: the fsync interval is 1 s), or when appends have waited that long for room in the backlog.
"""
from __future__ import annotations

import time

#: Seconds of no progress after which the store (and /health) is stalled.
STALL_AFTER = 10.0


def _age(now: float, since: float | None) -> float | None:
    return None if since is None else round(max(0.0, now - since), 3)


def store_health(stats: dict, now: float | None = None, stall_after: float = STALL_AFTER) -> dict:
    """{"ok", "state", "disk_full", "fsync_age_seconds", "unsynced_seconds", "blocked_seconds",
    "backlog_bytes", "backlog_ratio"}; state is "ok" or "stalled: <why>"."""
    now = time.time() if now is None else now
    pending, cap = stats.get("pending_bytes", 0), stats.get("max_pending_bytes") or 1
    full = stats.get("disk_full_since") is not None
    unsynced = _age(now, stats.get("unsynced_since"))
    blocked = _age(now, stats.get("blocked_since"))
    if full:
        state = "stalled: disk full"
    elif unsynced is not None and unsynced > stall_after:
        state = f"stalled: data waiting {unsynced:.0f}s for fsync"
    elif blocked is not None and blocked > stall_after:
        state = f"stalled: backlog full for {blocked:.0f}s"
    else:
        state = "ok"
    return {"ok": state == "ok", "state": state, "disk_full": full,
            "fsync_age_seconds": _age(now, stats.get("last_fsync_ts")), "unsynced_seconds": unsynced or 0.0,
            "blocked_seconds": blocked or 0.0, "backlog_bytes": pending, "backlog_ratio": round(pending / cap, 4)}
