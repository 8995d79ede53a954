"""The compiled BTC-Alpha / bitexbit frame scanner against the Python path (parse_packet + parse_book_event).

Every frame the scanner accepts must give exactly the Python parser's events; a frame the Python path refuses must be
refused. Realistic traffic must all be accepted (it is the fast path).
"""
from __future__ import annotations

import random
from decimal import Context, Decimal

import numpy as np
import pytest

from recorder.rows import ParseError
from recorder.transport.engineio import parse_packet
from recorder.venues import bitexbit, btcalpha
from recorder.venues.btcalpha_scan import Names, Scan, scan_frames, warm

#: Event names the tests record; the last two can never be book events (the Python path rejects them).
NAMES = ["book_BTC_USD", "book_ETH_BTC", "book_btc_usd", "trades"]
E18 = 10**18
EXACT = Context(prec=80)


@pytest.fixture(scope="module", autouse=True)
def _compiled() -> None:
    warm()


# ------------------------------------------------------------------------------------------ reference
def python_path(raw: bytes, need_cancel_id: bool, names: list[str]):
    """(name, decoded message, Parsed) as the Python path reads a frame, or None when it does not give book events."""
    control, _, frame = parse_packet(raw, 0)
    if control is not None or frame.kind != "event" or frame.name not in names or not frame.args:
        return None
    parse = bitexbit.parse_book_event if need_cancel_id else btcalpha.parse_book_event
    try:
        return frame.name, frame.args[0], parse(frame.name, frame.args[0])
    except ParseError:
        return None


def check_scan(buf: np.ndarray, starts, ends, need_cancel_id: bool, names: list[str] = NAMES) -> Scan:
    """Scan buf[starts[i]:ends[i]] and compare every frame with the Python path; returns the scan."""
    starts, ends = np.asarray(starts, np.int64), np.asarray(ends, np.int64)
    scan = scan_frames(buf, starts, ends, Names(names), need_cancel_id)
    n, m = len(starts), len(scan.action)
    for col, dtype, size in (("ok", np.bool_, n), ("pair", np.int32, n), ("ts_event", np.int64, n),
                             ("taker", np.int8, n), ("ev_off", np.int64, n + 1), ("frame", np.int32, m),
                             ("action", np.uint8, m), ("side", np.int8, m), ("order_id", np.int64, m),
                             ("trade_id", np.int64, m), ("taker_order_id", np.int64, m), ("price_off", np.int64, m),
                             ("price_len", np.int32, m), ("amount_off", np.int64, m), ("amount_len", np.int32, m),
                             ("price_hi", np.int64, m), ("price_lo", np.int64, m), ("amount_hi", np.int64, m),
                             ("amount_lo", np.int64, m)):
        a = getattr(scan, col)
        assert a.dtype == dtype and a.shape == (size,), col
    assert scan.ev_off[0] == 0 and scan.ev_off[-1] == m and (np.diff(scan.ev_off) >= 0).all()
    data = buf.tobytes()
    for i in range(n):
        s, e = int(starts[i]), int(ends[i])
        raw = data[s:e] if 0 <= s <= e <= len(data) else None
        ref = None if raw is None else python_path(raw, need_cancel_id, names)
        lo, hi = scan.ev_off[i], scan.ev_off[i + 1]
        if not scan.ok[i]:
            assert lo == hi and scan.pair[i] == -1, raw
            continue
        assert ref is not None, f"accepted a frame the Python path refuses: {raw!r}"
        name, arg, parsed = ref
        assert names[scan.pair[i]] == name, raw
        assert scan.ts_event[i] == parsed.ts_event, raw
        assert scan.taker[i] == (-1 if "cancelled" in arg else {"buy": 0, "sell": 1}[arg["type"]]), raw
        assert hi - lo == len(parsed.events), raw
        for j, ev in zip(range(lo, hi), parsed.events):
            assert ev.ts_event == parsed.ts_event
            got = (int(scan.frame[j]), chr(scan.action[j]), ("bid", "ask")[scan.side[j]], int(scan.order_id[j]),
                   int(scan.trade_id[j]), int(scan.taker_order_id[j]))
            want = (i, ev.action, ev.side, ev.order_id, -1 if ev.trade_id is None else ev.trade_id,
                    -1 if ev.taker_order_id is None else ev.taker_order_id)
            assert got == want, raw
            for what, ref_text in (("price", ev.price), ("amount", ev.amount)):
                off, ln = int(getattr(scan, what + "_off")[j]), int(getattr(scan, what + "_len")[j])
                assert s <= off and off + ln <= e, raw
                value = Decimal(ref_text)
                assert Decimal(data[off:off + ln].decode()) == value, (what, raw)
                whi, wlo = int(getattr(scan, what + "_hi")[j]), int(getattr(scan, what + "_lo")[j])
                assert 0 <= wlo < E18 and whi * E18 + wlo == EXACT.multiply(value, E18), (what, raw)
    return scan


def check(frames: list[bytes], need_cancel_id: bool, names: list[str] = NAMES) -> np.ndarray:
    """Frames packed in one buffer (a stray `]}` after each), checked; returns the accepted mask."""
    buf, starts, ends = bytearray(), [], []
    for f in frames:
        starts.append(len(buf))
        buf += f
        ends.append(len(buf))
        buf += b"]}"
    scan = check_scan(np.frombuffer(bytes(buf), np.uint8), starts, ends, need_cancel_id, names)
    return scan.ok.copy()


# ------------------------------------------------------------------------------------------ corpus
def frame(obj: str, name: str = "book_BTC_USD") -> bytes:
    return f'42["{name}",{obj}]'.encode()


def obj(members: list[tuple[str, str]]) -> str:
    """A JSON object from (key, raw JSON value text) pairs, in order."""
    return "{" + ",".join(f'"{k}":{v}' for k, v in members) + "}"


def trade(tid=10000714, typ="sell", price='"60006.47"', amount='"0.078057"', o_id=10000977) -> list[tuple[str, str]]:
    return [("tid", str(tid)), ("type", f'"{typ}"'), ("price", price), ("amount", amount), ("o_id", str(o_id))]


def new_order(date="1700000000.010038", oid=10000991, typ="buy", price="60006.71", amount="0.0",
              trades=((),)) -> list[tuple[str, str]]:
    """A new order's members; `trades` lists each trade's members (empty: the default trade)."""
    tr = "[" + ",".join(obj(t or trade()) for t in trades) + "]"
    return [("success", "true"), ("date", date), ("oid", str(oid)), ("type", f'"{typ}"'), ("price", price),
            ("amount", amount), ("trades", tr)]


def cancel(date="1700000000.010004", oid=10000825, cid="10000115", typ="buy", price="60003.91", amount="0.016311",
           pair='"BTC_USD"') -> list[tuple[str, str]]:
    """A cancel's members (pair None: no `pair` member)."""
    members = [("success", "true"), ("date", date), ("oid", str(oid)), ("cancel_order_id", cid), ("price", price),
               ("type", f'"{typ}"'), ("amount", amount), ("pair", pair), ("cancelled", "true")]
    return [(k, v) for k, v in members if v is not None]


def fmt_num(units: int, dp: int, strip: bool = True) -> str:
    """units * 10**-dp as decimal text (the simulator's form: trailing zeros stripped, `.0` kept)."""
    s = f"{units // 10**dp}.{units % 10**dp:0{dp}d}"
    if not strip:
        return s
    s = s.rstrip("0")
    return s + "0" if s.endswith(".") else s


def realistic(rng: random.Random, n: int) -> list[bytes]:
    """Frames as the venue (and our simulator) sends them: outer JSON numbers, trade price/amount strings."""
    out = []
    oid, tid = 10_000_000, 20_000_000
    for _ in range(n):
        pair, pdp, base = rng.choice([("BTC_USD", 2, 60000_00), ("ETH_BTC", 6, 52_000)])
        date = fmt_num((1_700_000_000 + rng.randrange(10**8)) * 10**6 + rng.randrange(10**6), 6, strip=False)
        price = base + rng.randrange(-5000, 5000)
        amount = rng.choice([0, rng.randrange(1, 10**6), rng.randrange(1, 10**9)])
        typ = rng.choice(["buy", "sell"])
        oid += 1
        if rng.random() < 0.4:
            members = cancel(date, oid, str(oid + 7), typ, fmt_num(price, pdp), fmt_num(amount, 6),
                             f'"{pair}"' if rng.random() < 0.8 else None)
        else:
            fills = []
            for _ in range(rng.choice([0, 0, 1, 2, 5])):
                tid += 1
                fills.append(trade(tid, "sell" if typ == "buy" else "buy", f'"{fmt_num(price, pdp, False)}"',
                                   f'"{fmt_num(rng.randrange(1, 10**7), 6, False)}"', rng.randrange(10**7, 2 * 10**7)))
            members = new_order(date, oid, typ, fmt_num(price, pdp), fmt_num(amount, 6), fills)
        if rng.random() < 0.2:
            rng.shuffle(members)
        out.append(frame(obj(members), "book_" + pair))
    return out


def test_realistic_frames_all_accepted():
    rng = random.Random(1)
    frames = realistic(rng, 3000)
    frames += [  # the docs' samples and other plain forms
        b'42["book_BTC_USD",{"success":true,"date":1700000000.010002,"oid":10000990,"type":"buy","price":60000.23,'
        b'"amount":0.108869,"trades":[]}]',
        b'42["book_BTC_USD",{"success":true,"date":1700000000.010004,"oid":10000825,"cancel_order_id":10000115,'
        b'"price":60003.91,"type":"buy","amount":0.016311,"pair":"BTC_USD","cancelled":true}]',
        b'42["book_BTC_USD",{"success":true,"date":1700000000.010038,"oid":10000991,"type":"buy","price":60006.71,'
        b'"amount":0.0,"trades":[{"tid":10000714,"type":"sell","price":"60006.47","amount":"0.078057",'
        b'"o_id":10000977},{"tid":10000715,"type":"sell","price":"60006.64","amount":"0.000184","o_id":10000933}]}]',
        frame(obj(new_order(date='"1710264.956584"', oid='"10000991"', price='"60006.71"', amount='"0.5"'))),
        frame(obj(new_order(date="1485686507.094462", price="60000", amount="1"))),
        frame(obj(new_order(date="1700000000", amount="0.000001", price="0.00000001"))),
        frame(obj(cancel(date='"1700000000.123456789123"', cid='"10000115"', pair='"BTC_USD"'))),
        frame(obj(new_order(amount="0.1", trades=[trade(tid='"5"', o_id='"6"')]))),
    ]
    for need_cancel_id in (False, True):
        ok = check(frames, need_cancel_id)
        assert ok.all(), [f for f, a in zip(frames, ok) if not a][:5]


# ------------------------------------------------------------------------------------------ edge cases
BASE_NEW = new_order(amount="0.5", trades=[trade(), trade(10000715, price='"60006.64"', amount='"0.000184"')])
BASE_CANCEL = cancel()


def replaced(members, key, value):
    """members with key's value replaced (value None: key removed)."""
    return [(k, value if k == key else v) for k, v in members if not (k == key and value is None)]


#: Frames in the scanner's subset: always accepted (and equal to the Python path).
ACCEPT = [
    b'42 [ "book_BTC_USD" , ' + obj(BASE_NEW).replace(",", " ,\n\t").replace(":", " :\r ").encode() + b' ] \n',
    frame(obj(BASE_NEW[::-1])),
    frame(obj(BASE_CANCEL[::-1])),
    frame(obj(BASE_NEW + [("x", '{"a":[1,-2.5e-3,{"b":null}],"c":"s","d":{}}'), ("y", "[]"), ("w", "true"),
                          ("v", "false"), ("u", "null"), ("t", '"\x7f ok"'), ("s", "[[[[]]]]")])),
    frame(obj(BASE_NEW + [("x", "1"), ("x", "2")])),  # duplicate unknown keys: ignored either way
    frame(obj(BASE_NEW + [("x", "123456789012345678901234567890"), ("y", "1e400"), ("z", "-0")])),
    frame(obj(BASE_NEW + [("cancel_order_id", '"x"'), ("pair", "5")])),  # not read on new orders
    frame(obj(BASE_NEW + [("date_", "1"), ("tid", "[]"), ("o_id", "{}")])),
    frame(obj(replaced(BASE_NEW, "success", None))),
    frame(obj(replaced(BASE_NEW, "oid", '"00000000000000000123"'))),
    frame(obj(replaced(BASE_NEW, "oid", "9223372036854775807"))),
    frame(obj(replaced(BASE_NEW, "date", '"1710264.956584"'))),
    frame(obj(replaced(BASE_NEW, "date", '"01700000000.5"'))),
    frame(obj(replaced(BASE_NEW, "date", "1710264.956584"))),
    frame(obj(replaced(BASE_NEW, "date", "4102444799.999999"))),
    frame(obj(replaced(BASE_NEW, "date", "1230768000"))),
    frame(obj(replaced(BASE_NEW, "price", '"00000000000000060006.710000000000000000"'))),
    frame(obj(replaced(BASE_NEW, "price", "9223372036854775807"))),
    frame(obj(replaced(BASE_NEW, "price", "1234567890.123456"))),
    frame(obj(replaced(BASE_NEW, "amount", "0.000000000000000001"))),
    frame(obj(new_order(price="0", amount="0", trades=[]))),
    frame(obj(new_order(price="0.0", amount='"0.000"', trades=[]))),
    frame(obj(new_order(typ="sell", amount="2.5", trades=[trade(typ="buy")]))),
    frame(obj(new_order(amount="0.0", trades=[trade(), trade(tid=1, price="60006", amount="1.5")]))),
    frame(obj(new_order(trades=[trade() + [("date", "null"), ("extra", '{"k":[1,2]}')]]))),
    frame(obj(replaced(BASE_CANCEL, "pair", None))),
    frame(obj(replaced(BASE_CANCEL, "amount", "0"))),
    frame(obj(BASE_CANCEL + [("x", '{"y":' * 30 + "1" + "}" * 30)])),
    frame(obj(new_order(trades=[])), "book_ETH_BTC"),
]

#: Frames the Python path refuses, or that are outside the scanner's subset: always refused.
REFUSE = [
    b"", b"4", b"2", b"42", b"40", b"41", b"3probe", b'43["book_BTC_USD",{}]', b"42[]", b'42["book_BTC_USD"]',
    b"\xef\xbb\xbf" + frame(obj(BASE_NEW)),
    b"421" + frame(obj(BASE_NEW))[2:],  # ack id
    b"42/ns," + frame(obj(BASE_NEW))[2:],  # namespace
    frame(obj(BASE_NEW))[:-1],
    frame(obj(BASE_NEW)) + b"]",
    frame(obj(BASE_NEW)) + b" x",
    frame(obj(BASE_NEW)) + b"\x00",
    frame(obj(BASE_NEW))[:-1] + b',1]',  # extra event argument (the Python path reads args[0] only)
    frame(obj(BASE_NEW), "book_XRP_USD"),
    frame(obj(BASE_NEW), "book_btc_usd"),
    frame(obj(BASE_NEW), "trades"),
    frame(obj(BASE_NEW), "book_BTC_US\\u0044"),
    frame(obj(BASE_NEW + [("x", '"\\n"')])),
    frame(obj(BASE_NEW + [("x", '"\u00e9"')])),
    frame(obj(BASE_NEW + [("x", '"a\tb"')])),
    frame(obj(BASE_NEW + [("x", "[1,]")])),
    frame(obj(BASE_NEW + [("x", "{1:2}")])),
    frame(obj(BASE_NEW + [("x", "tru")])),
    frame(obj(BASE_NEW + [("x", "NaN")])),
    frame(obj(BASE_NEW + [("x", "01")])),
    frame(obj(BASE_NEW + [("x", "1.")])),
    frame(obj(BASE_NEW + [("x", '{"y":' * 40 + "1" + "}" * 40)])),
    frame(obj(BASE_NEW)).replace(b'"type":"buy"', b'"type":"b\\u0075y"'),
    frame(obj(BASE_NEW)).replace(b'"oid"', b'"\\u006fid"'),
    frame(obj(BASE_NEW + [("oid", "1")])),
    frame(obj(BASE_NEW + [("success", "true")])),
    frame(obj(new_order(trades=[trade() + [("tid", "1")]]))),
    frame(obj(new_order(trades=[trade() + [("price", '"1"')]]))),
    frame(obj(BASE_CANCEL + [("cancelled", "true")])),
    frame(obj(BASE_CANCEL + [("trades", "[]")])),
    frame(obj(BASE_NEW + [("cancelled", "true")])),
    frame(obj(replaced(BASE_CANCEL, "cancelled", "false"))),
    frame(obj(replaced(BASE_CANCEL, "cancelled", '"true"'))),
    frame(obj(replaced(BASE_CANCEL, "cancelled", "1"))),
    frame(obj(replaced(BASE_NEW, "success", "false"))),
    frame(obj(replaced(BASE_NEW, "success", "null"))),
    frame(obj(replaced(BASE_NEW, "success", '"true"'))),
    frame(obj(replaced(BASE_NEW, "trades", "{}"))),
    frame(obj(replaced(BASE_NEW, "trades", "null"))),
    frame(obj(replaced(BASE_NEW, "trades", '"[]"'))),
    frame(obj(replaced(BASE_NEW, "trades", "[1]"))),
    frame(obj(replaced(BASE_NEW, "trades", "[[]]"))),
    frame(obj(replaced(BASE_NEW, "trades", "[{}]"))),
    frame(obj(replaced(BASE_NEW, "trades", None))),
    frame(obj([("date", "1700000000.5")])),
    frame("{}"), frame("[]"), frame("null"), frame('"x"'),
    frame(obj(replaced(BASE_CANCEL, "pair", '"ETH_BTC"'))),
    frame(obj(replaced(BASE_CANCEL, "pair", '"btc_usd"'))),  # the Python path upper-cases it: refused by design
    frame(obj(replaced(BASE_CANCEL, "pair", "1"))),
    frame(obj(replaced(BASE_CANCEL, "cancel_order_id", '"x"'))),
    frame(obj(replaced(BASE_CANCEL, "cancel_order_id", "-1"))),
    frame(obj(replaced(BASE_CANCEL, "cancel_order_id", "1.0"))),
    frame(obj(replaced(BASE_CANCEL, "amount", "-0.5"))),
    frame(obj(replaced(BASE_CANCEL, "amount", '"-0"'))),
    frame(obj(replaced(BASE_NEW, "type", '"BUY"'))),
    frame(obj(replaced(BASE_NEW, "type", '"buy "'))),
    frame(obj(replaced(BASE_NEW, "type", "0"))),
    frame(obj(new_order(trades=[trade(typ="buy")]))),
    frame(obj(new_order(trades=[trade(typ="x")]))),
    frame(obj(new_order(trades=[trade(amount='"0"')]))),
    frame(obj(new_order(trades=[trade(amount='"0.000"')]))),
    frame(obj(new_order(trades=[trade(amount="0")]))),
    frame(obj(new_order(trades=[trade(price='"0.0"')]))),
    frame(obj(new_order(trades=[trade(amount='"-1"')]))),
    frame(obj(new_order(price="0", amount="1", trades=[]))),
    frame(obj(new_order(price='"0.00"', amount="1", trades=[]))),
    frame(obj(new_order(amount="-1", trades=[]))),
]
for _key in ("date", "oid", "type", "price", "amount"):
    REFUSE += [frame(obj(replaced(BASE_NEW, _key, None))), frame(obj(replaced(BASE_CANCEL, _key, None)))]
for _key in ("tid", "type", "price", "amount", "o_id"):
    REFUSE.append(frame(obj(new_order(trades=[[m for m in trade() if m[0] != _key]]))))
BAD_VALUES = {  # refused values (sign, exponent, leading dot or zero, too many digits, out of range, wrong type)
    "oid": ["-1", "1.0", "1e3", "01", '"1a"', '""', '"-1"', '" 1"', "true", "null", "9223372036854775808",
            '"9223372036854775808"', '"0001234567890123456789"'],
    "price": ["6e4", "6E4", "-1", "+1", ".5", "1.", "01.5", "00", "0x10", '"1e3"', '"+1"', '"1."', '".5"', '" 1"',
              '"1 "', '""', "true", "null", "[1]", '"NaN"', "60000.123456789012", "0.1234567890123456789",
              "123456789012345678901", "9223372036854775808", '"123456789012345678901"', '"9223372036854775808"',
              '"1.1234567890123456789"', "9007199254740993.5", "0.10000000000000000001"],
    "date": ["1700000000.0100021", "1.7e9", "-1700000000", '"1700000000."', '".5"', '"+1700000000"',
             '"1700000000 "', "17000000000", "1230767999.999999", "4102444800", '"99999999"', '"4102444.8"', "1229",
             '"0"', "0", "true", '"123456789012345678901"'],
}
REFUSE += [frame(obj(replaced(BASE_NEW, key, bad))) for key, values in BAD_VALUES.items() for bad in values]
REFUSE += [frame(obj(BASE_NEW))[:k] for k in range(0, len(frame(obj(BASE_NEW))), 3)]
REFUSE += [frame(obj(BASE_CANCEL))[:k] for k in range(0, len(frame(obj(BASE_CANCEL))), 3)]


@pytest.mark.parametrize("need_cancel_id", [False, True])
def test_edge_cases(need_cancel_id):
    ok = check(ACCEPT, need_cancel_id)
    assert ok.all(), [f for f, a in zip(ACCEPT, ok) if not a]
    ok = check(REFUSE, need_cancel_id)
    assert not ok.any(), [f for f, a in zip(REFUSE, ok) if a]


def test_cancel_id_required_by_bitexbit():
    frames = [frame(obj(replaced(BASE_CANCEL, "cancel_order_id", None)))]
    assert check(frames, False).all()
    assert not check(frames, True).any()


def test_truncated_frames_do_not_read_past_their_end():
    """Each prefix of a frame, scanned where the rest of the frame follows in the buffer."""
    for whole in (frame(obj(BASE_NEW)), frame(obj(BASE_CANCEL)), ACCEPT[0], ACCEPT[3]):
        buf = np.frombuffer(whole, np.uint8)
        ends = np.arange(len(whole) + 1)
        scan = check_scan(buf, np.zeros(len(ends), np.int64), ends, False)
        body = whole.rstrip(b" \t\r\n")
        assert scan.ok.tolist() == [k >= len(body) for k in ends]


# ------------------------------------------------------------------------------------------ numbers
def number_texts(rng: random.Random, n: int, dates: bool = False) -> list[str]:
    """Decimal texts of many shapes: up to 22 digits each side, near the float exactness limit and beyond
    (with `dates`, integer parts mostly in the timestamp range, as seconds or kiloseconds)."""
    out = ["0", "0.0", "1", "0.1", "0.3", "9007199254740992", "9007199254740993", "900719925474099.3",
           "90071992547409.93", "1234567890123456.7", "0.000001", "0.00001", "0.0001", "1e-06", "1E2", "5e-324",
           "99999999999999999999", "9223372036854775807", "18446744073709551616", "0.123456789012345678",
           "1700000000.123456", "1700000000.1234567", "4000000000.000001", "8589934591.999999", "8589934592.000001"]
    for _ in range(n):
        if rng.random() < 0.5:  # up to 17 significant digits, anywhere: around the float exactness limit
            digits = str(rng.randrange(1, 10 ** rng.randint(1, 17)))
            k = rng.randint(1, min(len(digits) + 6, 22))
            digits = digits.rjust(k + 1, "0")
            out.append(digits[:-k] + "." + digits[-k:])
            continue
        if dates and rng.random() < 0.9:
            ip = str(rng.randrange(1_200_000_000, 4_200_000_000) // rng.choice([1, 1, 1000]))
        else:
            ip = str(rng.randrange(10 ** rng.randrange(0, 21))) if rng.random() < 0.9 else "0"
        fp = "".join(rng.choice("0123456789") for _ in range(rng.choice([0, rng.randrange(1, 23)])))
        out.append(ip + ("." + fp if fp else ""))
    return out


@pytest.mark.parametrize("field", ["price", "amount", "date"])
def test_numbers_bare_and_quoted(field):
    """Random decimals as bare JSON numbers and as strings: accepted ones must equal the Python value."""
    rng = random.Random(field)
    texts = number_texts(rng, 1500, field == "date")
    frames = []
    for t in texts:
        frames.append(frame(obj(replaced(BASE_NEW, field, t))))
        frames.append(frame(obj(replaced(BASE_NEW, field, f'"{t}"'))))
        if field != "date":
            frames.append(frame(obj(new_order(trades=[trade(**{field: f'"{t}"'}), trade(**{field: t})]))))
    ok = check(frames, False)
    assert 0.2 < ok.mean() < 0.95  # both ways exercised


def test_float_rule_is_tight_for_dates():
    """Bare float dates: the scanner accepts 6 decimals (the venue's form) and refuses 7 (not exact as a double)."""
    rng = random.Random(7)
    six = [f"{rng.randrange(1_600_000_000, 1_800_000_000)}.{rng.randrange(10**6):06d}" for _ in range(500)]
    seven = [f"{rng.randrange(1_600_000_000, 1_800_000_000)}.{rng.randrange(10**7):07d}" for _ in range(500)]
    assert check([frame(obj(replaced(BASE_NEW, "date", t))) for t in six], True).all()
    assert not check([frame(obj(replaced(BASE_NEW, "date", t))) for t in seven if t[-1] != "0"], True).any()


# ------------------------------------------------------------------------------------------ fuzz
JSONISH = b'{}[]":,.-+eE0123456789 \t\n\\utfnrl'


def mutate(rng: random.Random, raw: bytes) -> bytes:
    """One (mostly) to three random byte edits: delete, insert, replace, duplicate a slice, truncate, swap chunks."""
    b = bytearray(raw)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        i = rng.randrange(len(b) + 1)
        op = rng.randrange(6)
        if op == 0 and i < len(b):
            del b[i]
        elif op == 1:
            b.insert(i, rng.choice(JSONISH) if rng.random() < 0.8 else rng.randrange(256))
        elif op == 2 and i < len(b):
            b[i] = rng.choice(JSONISH)
        elif op == 3:
            j = rng.randrange(i, min(len(b), i + 40) + 1)
            b[i:i] = b[i:j]
        elif op == 4:
            del b[i:]
        else:
            j = rng.randrange(len(b) + 1)
            b[i:i], b[j:j] = b[j:j + 5], b[i:i + 5]
        if not b:
            break
    return bytes(b)


def test_fuzz_mutations():
    rng = random.Random(20240501)
    seeds = realistic(rng, 400) + ACCEPT
    frames = [mutate(rng, rng.choice(seeds)) for _ in range(20000)]
    ok_alpha = check(frames, False)
    ok_exbit = check(frames, True)
    assert 0.03 < ok_alpha.mean() < 0.9, ok_alpha.mean()
    assert (ok_exbit <= ok_alpha).all()  # bitexbit's rule only adds a requirement


def test_fuzz_value_swaps():
    """Members replaced by random values of every JSON type (and non-JSON), keys dropped, repeated or reordered."""
    rng = random.Random(99)
    pool = number_texts(rng, 300) + ['"buy"', '"sell"', "true", "false", "null", "[]", "{}", '"BTC_USD"', "-1",
                                     '"1"', "1.5e3", '"x"', "[{}]", "[1,2]", '{"a":1}', "9223372036854775808"]
    pool += [f'"{t}"' for t in pool[:300]]
    frames = []
    for _ in range(6000):
        members = rng.choice([BASE_NEW, BASE_CANCEL, new_order(trades=[]), cancel(pair=None)])[:]
        for _ in range(rng.randint(1, 2)):
            k = rng.randrange(len(members))
            op = rng.randrange(4)
            if op == 0:
                members[k] = (members[k][0], rng.choice(pool))
            elif op == 1:
                del members[k]
            elif op == 2:
                members.append(members[k])
            else:
                rng.shuffle(members)
        frames.append(frame(obj(members)))
    for need_cancel_id in (False, True):
        ok = check(frames, need_cancel_id)
        assert 0.1 < ok.mean() < 0.9, ok.mean()


# ------------------------------------------------------------------------------------------ batches
def test_batch_layout():
    """Frames anywhere in one buffer, out of order, repeated, overlapping garbage; bad spans refused."""
    rng = random.Random(3)
    frames = realistic(rng, 50) + REFUSE[:30] + ACCEPT[:10]
    buf, spans = bytearray(b"xx"), []
    for f in frames:
        buf += bytes(rng.randrange(256) for _ in range(rng.randrange(4)))
        spans.append((len(buf), len(buf) + len(f)))
        buf += f
    spans += rng.sample(spans, 20)  # the same bytes twice
    rng.shuffle(spans)
    spans += [(5, 4), (-1, 3), (len(buf) - 2, len(buf) + 1), (len(buf), len(buf)), (0, 0)]
    data = np.frombuffer(bytes(buf), np.uint8)
    scan = check_scan(data, [s for s, _ in spans], [e for _, e in spans], False)
    assert scan.ok.sum() == sum(1 for s, e in spans if bytes(buf[s:e]) in frames[:50] + ACCEPT[:10] and 0 <= s)
    assert not scan.ok[-5:].any()


def test_empty_batch():
    scan = scan_frames(np.zeros(0, np.uint8), np.zeros(0, np.int64), np.zeros(0, np.int64), Names(NAMES), True)
    assert len(scan.ok) == 0 and scan.ev_off.tolist() == [0] and len(scan.action) == 0


def test_names():
    """Only the given, valid event names match; the index is the name's position in the list."""
    frames = [frame(obj(BASE_NEW), "book_ETH_BTC"), frame(obj(BASE_NEW), "book_BTC_USD")]
    names = ["book_X_Y", "book_ETH_BTC", "book_BTC_USD", "book_ETH_BTC"]
    buf = np.frombuffer(b"".join(frames), np.uint8)
    ends = np.cumsum([len(f) for f in frames])
    scan = scan_frames(buf, ends - [len(f) for f in frames], ends, Names(names), False)
    assert scan.pair.tolist() == [1, 2]
    assert not scan_frames(buf, ends - [len(f) for f in frames], ends, Names([]), False).ok.any()
    many = Names([f"book_P{i}_USD" for i in range(500)] + ["book_BTC_USD"])
    assert scan_frames(buf, ends - [len(f) for f in frames], ends, many, False).pair.tolist() == [-1, 500]
