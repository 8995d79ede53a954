"""Whether the daemon is recording: per-feed states from the last useful message, and the /health verdict.

A feed is `connecting` until its first useful message (a parsed book, trade or candle message, never an
error body), `live` while its last one is younger than its threshold (and, for a poller, every pair was
caught up within it), `stale` past it, `failing` when errors or rejects came after its last useful message
(or a pair it records is not listed by the venue), and `stopped` once the daemon stops it. /health is 503
and names the feeds at fault when any feed is not live: the grace period after start-up only spares feeds
that have not had their first useful message yet.

Other parts of the daemon plug in as components (`Health.component`): a callable returning a `Check`;
the store's health (fsync age, backlog) is one, the kernels' readiness another.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from recorder.metrics import Metrics

STATES = ("connecting", "live", "stale", "failing", "stopped")


@dataclass(frozen=True)
class Check:
    """One component's verdict: ok or not, a short reason, and figures to show."""

    ok: bool
    detail: str = ""
    data: dict = field(default_factory=dict)


@dataclass
class FeedHealth:
    """What health knows of one configured feed."""

    name: str
    pairs: tuple[str, ...]
    stale_after: float  # seconds without a useful message (or a pair not caught up) before live -> stale
    polls: bool = False
    unlisted: tuple[str, ...] = ()
    stopped: bool = False


class Health:
    """Feed states and pluggable component checks over the daemon's Metrics."""

    def __init__(self, metrics: Metrics, grace: float, clock: Callable[[], float] = time.time) -> None:
        self.metrics = metrics
        self.grace = grace
        self._clock = clock
        self.feeds: dict[str, FeedHealth] = {}
        self.components: dict[str, Callable[[], Check]] = {}
        self.started = clock()

    def add_feed(self, fh: FeedHealth) -> None:
        """Track a configured feed (its metrics series exist at 0 from now)."""
        self.feeds[fh.name] = fh
        self.metrics.register(fh.name, fh.pairs if fh.polls else ())

    def component(self, name: str, check: Callable[[], Check]) -> None:
        """Plug in a component whose failing Check makes /health 503 (e.g. "store", "kernels")."""
        self.components[name] = check

    def restart(self) -> None:
        """Grace starts again (the feeds start now: after the kernels are loaded)."""
        self.started = self._clock()

    def stop_all(self) -> None:
        """The daemon is stopping: every feed is `stopped`."""
        for fh in self.feeds.values():
            fh.stopped = True

    def feed_state(self, fh: FeedHealth) -> tuple[str, str]:
        """(state, reason) of one feed now."""
        m = self.metrics
        if fh.stopped:
            return "stopped", "stopped"
        if fh.unlisted:
            return "failing", f"pair(s) {', '.join(fh.unlisted)} not listed by the venue"
        age = m.age(fh.name)
        fault = m.last_fault.get(fh.name)
        useful_t = m.last_useful.get(fh.name, float("-inf"))
        if fault is not None and fault[0] >= useful_t:
            return "failing", fault[1][:300]
        if age is None:
            return "connecting", "no useful message yet"
        if age > fh.stale_after:
            return "stale", f"last useful message {age:.1f}s ago (threshold {fh.stale_after:g}s)"
        if fh.polls:
            behind = {p: lag for p, lag in m.poll_lag(fh.name).items() if lag > fh.stale_after}
            if behind:
                return "stale", "behind: " + ", ".join(f"{p} {lag:.0f}s" for p, lag in sorted(behind.items()))
        return "live", ""

    def report(self) -> dict:
        """The /health body; "ok" is False (503) when a component fails or a feed is not live past the grace."""
        now = self._clock()
        in_grace = now - self.started < self.grace
        feeds, faults = {}, []
        for name, fh in self.feeds.items():
            state, reason = self.feed_state(fh)
            age = self.metrics.age(name)
            feeds[name] = {"state": state, "reason": reason, "up": bool(self.metrics.gauges.get(("up", name), 0)),
                           "last_message_age_seconds": None if age is None else round(age, 3),
                           "stale_after_seconds": fh.stale_after}
            if fh.polls:
                feeds[name]["poll_lag_seconds"] = {p: round(v, 3) for p, v in self.metrics.poll_lag(name).items()}
            if state != "live" and (not in_grace or age is not None or state in ("stale", "stopped") or fh.unlisted):
                faults.append(name)
        checks = {n: c() for n, c in self.components.items()}
        comps = {n: {"ok": c.ok, "detail": c.detail, **c.data} for n, c in checks.items()}
        failed = sorted(n for n, c in checks.items() if not c.ok)
        ok = not faults and not failed
        return {"ok": ok, "ready": all(c.ok for n, c in checks.items() if n == "kernels"),
                "faults": sorted(faults), "components_failing": failed,
                "grace_left_seconds": round(max(0.0, self.grace - (now - self.started)), 3),
                "feeds": feeds, "components": comps}
