"""Fault injection: what can go wrong on demand, per venue, applied to sockets and REST responses."""
from __future__ import annotations

import time
from dataclasses import dataclass

KINDS = ("drop", "stall", "malformed", "http_error", "delay", "duplicate", "reorder", "lose")
#: Fault `lose` takes cancels of orders at least this many price levels behind their side's best.
LOSE_BEHIND = 10


@dataclass(frozen=True)
class Fault:
    """One fault order. `venue` "all" hits every venue; `count` frames/responses, `seconds` for stall/delay.

    `lose` (L3 venues): the next `count` cancels of orders LOSE_BEHIND levels or more behind the best are never
    sent, the socket left open: the stream stays plausible (no anomaly, no crossed book) and only a snapshot
    shows the order is gone."""

    kind: str
    venue: str = "all"
    count: int = 1
    seconds: float = 2.0
    status: int = 502

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {', '.join(KINDS)}")
        if self.kind == "http_error" and self.status not in (429, 500, 502):
            raise ValueError("http_error status must be 429, 500 or 502")


class VenueFaults:
    """Pending faults of one venue; sockets and REST handlers consult it on every frame/response."""

    def __init__(self) -> None:
        self.stall_until = 0.0
        self.malformed = 0
        self.duplicate = 0
        self.reorder = 0
        self.lose = 0
        self.http_errors: list[int] = []
        self.delays: list[float] = []
        self._held: str | None = None

    def add(self, f: Fault) -> None:
        if f.kind == "stall":
            self.stall_until = time.monotonic() + f.seconds
        elif f.kind == "malformed":
            self.malformed += f.count
        elif f.kind == "duplicate":
            self.duplicate += f.count
        elif f.kind == "reorder":
            self.reorder += f.count
        elif f.kind == "lose":
            self.lose += f.count
        elif f.kind == "http_error":
            self.http_errors += [f.status] * f.count
        elif f.kind == "delay":
            self.delays += [f.seconds] * f.count

    def stalled(self) -> bool:
        return time.monotonic() < self.stall_until

    def transform(self, frames: list[str]) -> list[str]:
        """Apply pending stream faults to a batch of outgoing frames (no-op when none are pending)."""
        if not (self.malformed or self.duplicate or self.reorder or self._held):
            return frames
        out = []
        for f in frames:
            if self.malformed:
                self.malformed -= 1
                out.append(f[: max(1, len(f) // 2)])  # truncated JSON: the frame is unparseable
            elif self.duplicate:
                self.duplicate -= 1
                out += (f, f)
            elif self._held is not None:
                out += (f, self._held)  # swapped with the frame before it
                self._held = None
            elif self.reorder:
                self.reorder -= 1
                self._held = f
            else:
                out.append(f)
        return out

    def take_lose(self, behind: int) -> bool:
        """Whether to lose a cancel of an order `behind` price levels behind its side's best (counts it)."""
        if self.lose and behind >= LOSE_BEHIND:
            self.lose -= 1
            return True
        return False

    def take_http_error(self) -> int | None:
        return self.http_errors.pop(0) if self.http_errors else None

    def take_delay(self) -> float:
        return self.delays.pop(0) if self.delays else 0.0
