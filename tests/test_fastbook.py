"""The compiled FastBook applies the same rules as L3Book and L3Join's duplicate memory."""
from __future__ import annotations

import random
from decimal import Decimal
from types import SimpleNamespace

import numpy as np
import pytest

from recorder.feeds.book import L3Book
from recorder.feeds.dedup import Recent
from recorder.feeds.fastbook import FastBook, Unrepresentable, event_key, join_text, split
from recorder.feeds.join import L3Join
from recorder.rows import BookEvent


def _scan(messages: list[list[BookEvent]]) -> SimpleNamespace:
    """The columns recorder.venues.btcalpha_scan would give for these messages (one frame each)."""
    evs = [(f, e) for f, m in enumerate(messages) for e in m]
    ev_off = np.zeros(len(messages) + 1, np.int64)
    ev_off[1:] = np.cumsum([len(m) for m in messages])
    col = lambda fn, dt: np.array([fn(e) for _, e in evs], dt)  # noqa: E731
    hi_lo = lambda attr: [split(getattr(e, attr)) for _, e in evs]  # noqa: E731
    p, a = hi_lo("price"), hi_lo("amount")
    return SimpleNamespace(
        ok=np.ones(len(messages), bool), ev_off=ev_off, frame=np.array([f for f, _ in evs], np.int32),
        ts_event=np.array([m[0].ts_event if m else 0 for m in messages], np.int64),
        action=col(lambda e: ord(e.action), np.uint8), side=col(lambda e: ("bid", "ask").index(e.side), np.int8),
        order_id=col(lambda e: e.order_id, np.int64), trade_id=col(lambda e: -1 if e.trade_id is None else e.trade_id, np.int64),
        price_hi=np.array([x[0] for x in p], np.int64), price_lo=np.array([x[1] for x in p], np.int64),
        amount_hi=np.array([x[0] for x in a], np.int64), amount_lo=np.array([x[1] for x in a], np.int64))


def _random_messages(rng: random.Random, n: int) -> list[list[BookEvent]]:
    live: dict[int, Decimal] = {}
    out, oid, tid = [], 1, 1
    for i in range(n):
        ts = 1_700_000_000_000_000_000 + i
        r = rng.random()
        if r < 0.05 and out:
            out.append(list(rng.choice(out[-50:])))  # a repeated message
        elif r < 0.35 and live:
            o = rng.choice(list(live))
            out.append([BookEvent(ts, "C", "bid", o, "100.5", format(live.pop(o), "f"))])
        elif r < 0.4:
            out.append([BookEvent(ts, "C", "ask", 10**9 + i, "1", "1")])  # unknown order
        else:
            msg = []
            for o in rng.sample(list(live), min(len(live), rng.randint(0, 3))):
                amt = rng.choice([live[o], live[o] / 2, live[o] + Decimal("0.001")])  # full, partial, overfill
                live[o] -= amt
                if live[o] <= 0:
                    del live[o]
                msg.append(BookEvent(ts, "F", "ask", o, "101.25", format(amt.normalize(), "f"), tid, oid))
                tid += 1
            amount = Decimal(rng.randint(0, 10**6)) / 10**rng.randint(0, 8)
            if amount > 0 or not msg:
                msg.append(BookEvent(ts, "A", rng.choice(["bid", "ask"]), oid, f"{rng.randint(1, 10**5)}.{rng.randint(0, 99)}",
                                     format(amount, "f") if amount > 0 else "0.5"))
                live[oid] = amount if amount > 0 else Decimal("0.5")
            oid += 1
            out.append(msg)
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fastbook_matches_l3book_and_the_duplicate_memory(seed: int) -> None:
    rng = random.Random(seed)
    start = _random_messages(rng, 300)
    book, seen = L3Book(), Recent(64)
    for m in start:
        if m and seen.add(event_key(m)):
            book.apply_all(m)
    fast = FastBook(book.copy(), seen)  # the copy's anomaly counts start at zero
    before = dict(book.anomalies)
    rest = _random_messages(rng, 3000)
    want_keep = []
    for m in rest:
        fresh = not m or seen.add(event_key(m))
        want_keep.append(int(fresh))
        if fresh:
            book.apply_all(m)
    scan = _scan(rest)
    keep = np.zeros(len(rest), np.int8)
    for lo in range(0, len(rest), 700):  # several bursts: state carries over
        frames = np.arange(lo, min(lo + 700, len(rest)))
        fast.apply(scan, frames, scan.ts_event[scan.frame], keep)
    assert keep.tolist() == want_keep
    back = fast.to_book()
    assert back.state() == book.state()
    since = {k: v - before.get(k, 0) for k, v in book.anomalies.items()}
    assert {k: v for k, v in back.anomalies.items() if v} == {k: v for k, v in since.items() if v}
    assert sum(since.values()) > 100  # the stream exercised every anomaly kind it can
    assert list(fast.recent()) == list(seen)
    assert _values(back.snapshot_events(5)) == _values(book.snapshot_events(5))


def _values(events: list[BookEvent]) -> list[tuple]:
    dec = lambda x: None if x is None else Decimal(x)  # noqa: E731
    return [(e.ts_event, e.action, e.side, e.order_id, dec(e.price), dec(e.amount)) for e in events]


def test_fastbook_grows_past_its_first_capacity() -> None:
    msgs = [[BookEvent(1_700_000_000_000_000_000, "A", "bid", i, "1.5", "2")] for i in range(5000)]
    fast = FastBook(L3Book(), Recent(16))
    scan = _scan(msgs)
    keep = np.zeros(len(msgs), np.int8)
    fast.apply(scan, np.arange(len(msgs)), scan.ts_event[scan.frame], keep)
    assert len(fast) == 5000 and keep.all()
    assert fast.to_book().orders[4999].amount == Decimal(2)


@pytest.mark.parametrize("text", ["-1", "1e5", "1.1234567890123456789", "99999999999999999999", None])
def test_values_outside_the_exact_domain_stay_on_the_python_path(text) -> None:
    with pytest.raises(Unrepresentable):
        split(text)


@pytest.mark.parametrize("text", ["0", "7", "0.000000000000000001", "60000.23", "12345678901234567.5"])
def test_split_and_join_text_round_trip_the_value(text: str) -> None:
    assert Decimal(join_text(*split(text))) == Decimal(text)


def test_l3join_hands_its_book_to_the_fastbook_and_takes_it_back_for_the_python_path() -> None:
    ts = 1_700_000_000_000_000_000
    snapshot = [BookEvent(ts, "R")] + [BookEvent(ts, "S", "bid", i, "10.5", "0.25") for i in range(1, 6)]
    j = L3Join()
    assert not j.go_fast()  # joining: nothing to hand over
    j.on_snapshot(snapshot, ts)
    want = j.book.state()
    assert j.go_fast() and j.book is None and not j.joining and j.orders == 5
    j.start_check()  # the hourly check needs the Python book
    assert j.fast is None and j.book.state() == want
    assert not j.go_fast()  # and keeps it while the check is pending
    ok, _, _ = j.on_check(snapshot, ts + 1)
    assert ok and j.go_fast()
    j.on_message([BookEvent(ts + 2, "C", "bid", 3, "10.5", "0.25")], ts + 2, 99)  # a message on the Python path
    assert j.fast is None and 3 not in j.book.orders and j.orders == 4
    j.reset()
    assert j.joining and j.fast is None and j.orders == 0
