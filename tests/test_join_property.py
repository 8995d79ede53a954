"""Property test of the L3 snapshot join (hypothesis): the join never double-applies or loses an event.

Random streams from a book of orders that rested before the connection (partly filled and cancelled inside
the buffer, cancels carrying the remaining amount as the venues send it), a snapshot after a random prefix
and a request sent at a random earlier point. The true cut is always among the consistent cuts, and a join
that says it is exact rebuilds exactly the true book; otherwise the feed marks a gap.
"""
from __future__ import annotations

from collections import Counter
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recorder.feeds.book import L3Book, find_cut
from recorder.rows import BookEvent

CASES = 10_000


#: One message: (kind 0-9: < 3 cancels, taker size, maker picks, take per maker, taker remainder rests).
MESSAGE = st.tuples(st.integers(0, 9), st.integers(1, 8), st.lists(st.integers(0, 63), max_size=3),
                    st.lists(st.integers(1, 4), min_size=3, max_size=3), st.booleans())


def _stream(spec, book: dict[int, Decimal]) -> list[list[BookEvent]]:
    """Messages as the venue sends them: a new order's fills (makers in any order) then its resting
    remainder, or a cancel of a resting order with what remained."""
    book = dict(book)
    msgs, oid, tid = [], 1000, 1
    for kind, size, picks, takes, rests in spec:
        ids = sorted(book)
        if ids and kind < 3:
            victim = ids[picks[0] % len(ids)] if picks else ids[0]
            msgs.append([BookEvent(1, "C", "bid", victim, "100", str(book.pop(victim)))])
            continue
        oid += 1
        amt = Decimal(size)
        evs = []
        for maker, take in zip(dict.fromkeys(ids[p % len(ids)] for p in picks) if ids else (), takes):
            take = min(book[maker], amt, Decimal(take))
            if take <= 0:
                break
            evs.append(BookEvent(1, "F", "bid", maker, "100", str(take), tid, oid))
            tid += 1
            book[maker] -= take
            amt -= take
            if book[maker] == 0:
                del book[maker]
        if amt > 0 and rests:
            evs.append(BookEvent(1, "A", "bid", oid, "100", str(amt)))
            book[oid] = amt
        msgs.append(evs)
    return msgs


def _applied(book: L3Book, msgs) -> L3Book:
    out = book.copy()
    for m in msgs:
        out.apply_all(m)
    return out


def test_join_never_double_applies_or_loses_an_event():
    outcomes: Counter[str] = Counter()

    @settings(max_examples=CASES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(st.integers(1, 6), max_size=12), st.lists(MESSAGE, max_size=30), st.floats(0, 1),
           st.floats(0, 1))
    def case(amounts, spec, cut, sent):
        start = L3Book()
        start.apply_all(BookEvent(1, "S", "bid", i + 1, "100", str(a)) for i, a in enumerate(amounts))
        msgs = _stream(spec, {o: a.amount for o, a in start.orders.items()})
        k = round(cut * len(msgs))
        sent_before = round(sent * k) if sent < 0.5 else k  # half the cases: nothing in flight
        at_k = _applied(start, msgs[:k])
        final = _applied(at_k, msgs[k:])
        j = find_cut({o: a.amount for o, a in at_k.orders.items()}, msgs, sent_before)
        assert j.consistent and j.lower <= k <= j.upper
        if j.exact:
            joined = _applied(at_k, msgs[j.cut:])
            assert joined.state() == final.state() and not joined.anomalies
            outcomes["exact"] += 1
        else:
            outcomes["gap"] += 1
        outcomes["in flight" if sent_before < k else "none in flight"] += 1

    case()
    total = outcomes["exact"] + outcomes["gap"]
    print(f"join property: {total} cases, exact {outcomes['exact']} ({outcomes['exact'] / total:.1%}), "
          f"gap {outcomes['gap']} ({outcomes['gap'] / total:.1%}); "
          f"{outcomes['in flight']} with messages in flight")
    assert total >= CASES
    assert outcomes["exact"] > outcomes["gap"]  # gaps are the exception, not the rule
