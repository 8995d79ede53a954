"""Capped exponential backoff with full jitter: one implementation for HTTP retries and reconnect loops.

delay(n) = uniform(0, min(cap, base * 2**n)) for the n-th consecutive failure (n from 0).
Given a seeded ``random.Random`` the schedule is deterministic.
"""
from __future__ import annotations

import random

# 2**60 * base overflows nothing and is far beyond any sane cap.
_MAX_EXPONENT = 60


class Backoff:
    """Stateful full-jitter schedule.

    >>> b = Backoff(0.5, 30.0, random.Random(1))
    >>> d = b.next()        # in [0, 0.5)
    >>> d = b.next()        # in [0, 1.0)
    >>> b.reset()           # after a success
    """

    __slots__ = ("base", "cap", "_rng", "_attempt")

    def __init__(self, base: float = 0.5, cap: float = 30.0, rng: random.Random | None = None) -> None:
        if base <= 0 or cap <= 0:
            raise ValueError("base and cap must be > 0")
        self.base = float(base)
        self.cap = float(cap)
        self._rng = rng if rng is not None else random.Random()
        self._attempt = 0

    @property
    def attempt(self) -> int:
        """Number of delays handed out since construction or the last reset()."""
        return self._attempt

    def ceiling(self, attempt: int | None = None) -> float:
        """Upper bound of the delay for ``attempt`` (default: the next one)."""
        n = self._attempt if attempt is None else attempt
        return min(self.cap, self.base * (2.0 ** min(max(n, 0), _MAX_EXPONENT)))

    def next(self) -> float:
        """Delay (seconds) before the next attempt; advances the schedule."""
        d = self._rng.uniform(0.0, self.ceiling())
        self._attempt += 1
        return d

    def reset(self) -> None:
        """Start over (call after a success / a healthy connection)."""
        self._attempt = 0
