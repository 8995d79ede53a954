"""Simulated clock: logical nanoseconds from a start epoch, optionally paced by the wall clock."""
from __future__ import annotations

import time


class SimClock:
    """Logical time starts at `start_ns`; `target_ns()` is how far the engines may run when paced by wall time."""

    def __init__(self, start_ns: int, lead_ns: int = 0) -> None:
        self.start_ns = start_ns
        self.lead_ns = lead_ns
        self._wall0 = time.monotonic_ns()

    def restart_pacing(self) -> None:
        """Pin logical `start_ns + lead_ns` to the wall-clock instant of this call."""
        self._wall0 = time.monotonic_ns()

    def target_ns(self) -> int:
        """Latest logical time that may have happened by now (start + lead + wall time since pacing began)."""
        return self.start_ns + self.lead_ns + (time.monotonic_ns() - self._wall0)

    def wall_delay_s(self, logical_ns: int) -> float:
        """Seconds of wall time until logical instant `logical_ns` is due (<= 0 when already due)."""
        return (logical_ns - self.target_ns()) / 1e9
