"""What a grouped snapshot (`book_levels` source `rest_grouped`) asserts about the L3 book, for the recorder's
live check and `replay verify` alike: its levels, best first per side, are the book's best levels."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

V = TypeVar("V")


def first_difference(snapshot: Sequence[V], book: Sequence[V]) -> int | None:
    """The first level (0 = best) of one side where the book's best levels differ from the snapshot's, None
    when they agree. Levels are (price, amount) pairs in any exact representation; the book's levels past
    the snapshot's last are not compared (a venue may truncate its grouped book)."""
    for k, level in enumerate(snapshot):
        if k >= len(book) or book[k] != level:
            return k
    return None
