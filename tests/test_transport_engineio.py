"""socket.io over engine.io client against real servers on 127.0.0.1.

* EIO=4: a real python-engineio AsyncServer (aiohttp mode) with hand-rolled socket.io framing.
* EIO=3: a raw aiohttp websocket server written here that speaks v3 per shared/exchanges.md §5
  (open packet, auto ``40``, expects client ``2`` pings, answers ``3``, closes the socket when no
  ping arrives within pingInterval + pingTimeout).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import time

import aiohttp
import engineio
import pytest
from aiohttp import web

from recorder.transport import Frame, SocketIOClient, TransportError
from recorder.transport.engineio import _queued_reader, parse_packet, socketio_url


def run(coro, timeout: float = 15.0):
    async def main():
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(main())


@contextlib.asynccontextmanager
async def serve(app: web.Application):
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


# --------------------------------------------------------------------------- EIO=3 raw server
class V3Server:
    """Minimal engine.io v3 / socket.io 2.x websocket server.

    mode: "normal" | "silent" (open packet then nothing: no 40, no pongs, never closes)
    script: frames (str = text, bytes = binary) sent after the open (and 40), ``gap`` apart
    after_script: None | "close" (websocket close 1001) | "drop" (abort TCP) | a text frame to send
    """

    def __init__(self, *, ping_interval_ms=200, ping_timeout_ms=200, mode="normal", auto40=True,
                 script=(), gap=0.05, after_script=None, open_extra=None):
        self.ping_interval_ms = ping_interval_ms
        self.ping_timeout_ms = ping_timeout_ms
        self.mode = mode
        self.auto40 = auto40
        self.script = list(script)
        self.gap = gap
        self.after_script = after_script
        self.open_extra = open_extra or {}
        self.pings = 0
        self.received: list[str] = []
        self.timed_out = False
        self.queries: list[dict] = []
        self.closed_at: float | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/socket.io/", self.handler)
        return app

    async def handler(self, request: web.Request):
        self.queries.append(dict(request.query))
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        open_pkt = {"sid": "v3sid", "upgrades": [], "pingInterval": self.ping_interval_ms,
                    "pingTimeout": self.ping_timeout_ms, **self.open_extra}
        await ws.send_str("0" + json.dumps(open_pkt))
        if self.mode == "silent":
            async for _ in ws:  # swallow everything, answer nothing
                pass
            self.closed_at = time.monotonic()
            return ws
        if self.auto40:
            await ws.send_str("40")
        sender = asyncio.create_task(self._play(ws, request))
        limit = (self.ping_interval_ms + self.ping_timeout_ms) / 1000
        try:
            while True:
                try:
                    msg = await ws.receive(timeout=limit)
                except asyncio.TimeoutError:
                    # engine.io 3 server: no ping within pingInterval + pingTimeout -> close
                    self.timed_out = True
                    await ws.close()
                    break
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                self.received.append(msg.data)
                if msg.data.startswith("2"):
                    self.pings += 1
                    await ws.send_str("3" + msg.data[1:])
                    # a real v3 server only resets its timer on pings
                elif msg.data == "40" and not self.auto40:
                    await ws.send_str("40")
        finally:
            sender.cancel()
            await asyncio.wait([sender])
            self.closed_at = time.monotonic()
        return ws

    async def _play(self, ws: web.WebSocketResponse, request: web.Request):
        for frame in self.script:
            await asyncio.sleep(self.gap)
            if isinstance(frame, bytes):
                await ws.send_bytes(frame)
            else:
                await ws.send_str(frame)
        if self.after_script is None:
            return
        await asyncio.sleep(self.gap)
        if self.after_script == "close":
            await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"maintenance")
        elif self.after_script == "drop":
            request.transport.abort() if hasattr(request.transport, "abort") else request.transport.close()
        else:
            await ws.send_str(self.after_script)


async def collect(client: SocketIOClient, n: int) -> list[Frame]:
    out = []
    async for f in client:
        out.append(f)
        if len(out) == n:
            break
    return out


# --------------------------------------------------------------------------- unit: parsing
def test_parse_packet_variants():
    ctrl, detail, f = parse_packet(b'0{"sid":"x","pingInterval":25000,"pingTimeout":5000}', 1)
    assert ctrl == "open" and detail["pingTimeout"] == 5000 and f is None
    assert parse_packet(b"2", 1)[0] == "ping"
    assert parse_packet(b"2probe", 1)[:2] == ("ping", b"probe")
    assert parse_packet(b"3", 1)[0] == "pong"
    assert parse_packet(b"1", 1)[0] == "close"
    assert parse_packet(b"40", 1)[0] == "ns_connect"
    assert parse_packet(b'40{"sid":"abc"}', 1)[1] == {"sid": "abc"}
    assert parse_packet(b"41", 1)[0] == "ns_disconnect"
    assert parse_packet(b'44{"message":"no"}', 1)[0] == "ns_error"

    _, _, f = parse_packet(b'42["book_BTC_USD",{"price":935.23,"amount":0.1}]', 7)
    assert f.kind == "event" and f.name == "book_BTC_USD" and f.args == [{"price": 935.23, "amount": 0.1}]
    assert isinstance(f.args[0]["price"], float) and f.ts_recv == 7
    _, _, f = parse_packet(b'4212["ack_me",1,2]', 1)  # with ack id
    assert f.kind == "event" and f.name == "ack_me" and f.args == [1, 2]
    _, _, f = parse_packet(b'42["big",123456789012345678901234567890,NaN]', 1)  # orjson rejects NaN: stdlib fallback
    assert f.kind == "event" and f.name == "big"
    _, _, f = parse_packet(b'42/chat,["x",1]', 1)  # another namespace
    assert f.kind == "other"
    for raw in (b'43[1]', b"6", b"5", b'451-["b",{"_placeholder":true,"num":0}]'):
        assert parse_packet(raw, 1)[2].kind == "other", raw
    for raw, why in ((b"", "empty"), (b"4", "empty socket.io"), (b"42[bad json", "JSON"), (b"4x", "socket.io packet type"),
                     (b"9", "engine.io packet type"), (b'42{"a":1}', "not [name"), (b"42[]", "not [name"),
                     (b"42[1,2]", "not [name"), (b"42\xff\xfe", "JSON"), (b"0[1]", "open")):
        c, _, f = parse_packet(raw, 1)
        assert c is None and f.kind == "malformed" and why in f.error and f.raw == raw, (raw, f)


def test_url_building():
    assert socketio_url("wss://btc-alpha.com", 3) == "wss://btc-alpha.com/socket.io/?EIO=3&transport=websocket"
    assert socketio_url("https://h.example/", 4) == "wss://h.example/socket.io/?EIO=4&transport=websocket"
    assert socketio_url("http://127.0.0.1:1", 3, path="/socket.v2/") == "ws://127.0.0.1:1/socket.v2/?EIO=3&transport=websocket"


# --------------------------------------------------------------------------- EIO=4: python-engineio
def make_v4_server(events_to_push, *, gap=0.1, ping_interval=0.2, ping_timeout=0.3):
    eio = engineio.AsyncServer(async_mode="aiohttp", ping_interval=ping_interval, ping_timeout=ping_timeout,
                               logger=False, engineio_logger=False)
    app = web.Application()
    eio.attach(app, engineio_path="socket.io")
    state = {"connected": [], "disconnected": [], "messages": [], "pushers": []}

    async def push(sid):
        for ev in events_to_push:
            await asyncio.sleep(gap)
            await eio.send(sid, ev)

    @eio.on("connect")
    async def on_connect(sid, environ):
        state["connected"].append((sid, time.monotonic()))

    @eio.on("disconnect")
    async def on_disconnect(sid, *args):
        state["disconnected"].append((sid, time.monotonic()))

    @eio.on("message")
    async def on_message(sid, data):
        state["messages"].append(data)
        if data == "0" or (isinstance(data, str) and data.startswith("0{")):  # socket.io CONNECT to "/"
            await eio.send(sid, '0{"sid":"ns-' + sid + '"}')
            state["pushers"].append(asyncio.ensure_future(push(sid)))

    async def stop_pushers():
        for t in state["pushers"]:
            t.cancel()
        if state["pushers"]:
            await asyncio.wait(state["pushers"])

    return eio, app, state, stop_pushers


def test_v4_python_engineio_events_and_heartbeats():
    events = ['2["book_BTC_USD",{"oid":%d,"price":935.23,"amount":"0.1"}]' % i for i in range(12)]

    async def main():
        eio, app, state, stop = make_v4_server(events, gap=0.1)
        async with serve(app) as base, aiohttp.ClientSession() as session:
            client = SocketIOClient(session, base, eio=4, emits=['42["subscribe","book_BTC_USD"]'],
                                    heartbeat_grace=0.5)
            t0 = time.monotonic()
            async with client:
                assert client.handshake["sid"] and "pingInterval" in client.handshake
                assert client.namespace_sid and client.namespace_sid.startswith("ns-")
                got = await collect(client, 12)
                elapsed = time.monotonic() - t0
                assert not state["disconnected"], "server dropped us (pong missing?)"
            await asyncio.sleep(0.1)
            await stop()
        return client, got, elapsed, state

    client, got, elapsed, state = run(main())
    assert [f.kind for f in got] == ["event"] * 12
    assert [f.args[0]["oid"] for f in got] == list(range(12))
    assert got[0].name == "book_BTC_USD" and got[0].args[0]["amount"] == "0.1"
    assert got[3].raw == ('42' + '["book_BTC_USD",{"oid":3,"price":935.23,"amount":"0.1"}]').encode()
    assert all(a.ts_recv <= b.ts_recv for a, b in zip(got, got[1:]))
    # stayed connected ~1.2 s with server pings every 0.2 s: several answered
    assert elapsed > 1.0
    assert client.pings_answered >= 4
    assert state["messages"][0] == "0" and '2["subscribe","book_BTC_USD"]' in state["messages"]


def test_v4_malformed_frames_do_not_stop_the_stream():
    frames = ["2[bad json", "x", "2{\"not\":\"a list\"}", b"\x00\x01binary", '2["ok",1]']

    async def main():
        eio, app, state, stop = make_v4_server(frames, gap=0.02)
        async with serve(app) as base, aiohttp.ClientSession() as session:
            async with SocketIOClient(session, base, eio=4, heartbeat_grace=0.5) as client:
                got = await collect(client, 5)
            await stop()
        return got

    got = run(main())
    assert [f.kind for f in got] == ["malformed", "malformed", "malformed", "malformed", "event"]
    assert got[0].raw == b"42[bad json" and "JSON" in got[0].error
    assert got[1].raw == b"4x"
    assert got[3].binary and got[3].raw == b"\x00\x01binary"
    assert got[4].name == "ok" and got[4].args == [1]


def test_v3_client_against_v4_only_server_fails_cleanly():
    async def main():
        eio, app, state, stop = make_v4_server([])
        async with serve(app) as base, aiohttp.ClientSession() as session:
            with pytest.raises(TransportError) as ei:
                async with SocketIOClient(session, base, eio=3, open_timeout=3):
                    pass
            await stop()
        return ei.value

    err = run(main())
    assert "connect failed" in str(err) or "closed" in str(err)


# --------------------------------------------------------------------------- EIO=3: raw server
def test_v3_client_pings_keep_the_connection_alive():
    # server closes any socket that sends no ping within 0.2 + 0.2 s; we stay 1.6 s
    srv = V3Server(ping_interval_ms=200, ping_timeout_ms=200,
                   script=['42["book_ETH_BTC",{"n":%d}]' % i for i in range(8)], gap=0.2)

    async def main():
        async with serve(srv.app()) as base, aiohttp.ClientSession() as session:
            t0 = time.monotonic()
            async with SocketIOClient(session, base, eio=3, heartbeat_grace=0.2,
                                      emits=['42["subscribe","book_ETH_BTC"]']) as client:
                got = await collect(client, 8)
                elapsed = time.monotonic() - t0
                assert not srv.timed_out
            return client, got, elapsed

    client, got, elapsed = run(main())
    assert srv.queries[0] == {"EIO": "3", "transport": "websocket"}
    assert [f.args[0]["n"] for f in got] == list(range(8)) and all(f.name == "book_ETH_BTC" for f in got)
    assert elapsed > 1.5
    assert srv.pings >= 5 and client.pongs_received >= 4
    assert not srv.timed_out
    # server auto-sent 40, so the client did not need to; it did send the subscribe emit
    assert "40" not in srv.received and '42["subscribe","book_ETH_BTC"]' in srv.received


def test_v3_server_closes_a_client_that_does_not_ping():
    """Control for the test above: without client pings this server really drops the socket."""
    srv = V3Server(ping_interval_ms=200, ping_timeout_ms=200)

    async def main():
        async with serve(srv.app()) as base, aiohttp.ClientSession() as session:
            t0 = time.monotonic()
            with pytest.raises(TransportError) as ei:
                async with SocketIOClient(session, base, eio=3, client_pings=False, heartbeat_grace=5) as client:
                    await collect(client, 1)
            return ei.value, time.monotonic() - t0

    err, elapsed = run(main())
    assert srv.timed_out and elapsed < 2.0
    assert "closed by server" in str(err)


def test_v3_sends_40_when_server_does_not_auto_connect():
    srv = V3Server(auto40=False, script=['42["e",1]'], gap=0.05)

    async def main():
        async with serve(srv.app()) as base, aiohttp.ClientSession() as session:
            async with SocketIOClient(session, base, eio=3, connect_wait=0.2) as client:
                got = await collect(client, 1)
        return got

    got = run(main())
    assert "40" in srv.received
    assert got[0].kind == "event" and got[0].name == "e"


def test_v3_malformed_frames_yielded_and_stream_continues():
    script = ["42[bad json", "4x", "", b"\x04binary\xff", '42{"a":1}', "43[1]",
              '42["book_X",{"price":1.10,"s":"\u00e9"}]']
    srv = V3Server(script=script, gap=0.02)

    async def main():
        async with serve(srv.app()) as base, aiohttp.ClientSession() as session:
            async with SocketIOClient(session, base, eio=3) as client:
                got = await collect(client, len(script))
        return got

    got = run(main())
    assert [f.kind for f in got] == ["malformed"] * 5 + ["other", "event"]
    assert [f.raw for f in got[:3]] == [b"42[bad json", b"4x", b""]
    assert got[3].binary and got[3].raw == b"\x04binary\xff"
    assert all(f.error for f in got[:5])
    ev = got[6]
    assert ev.raw == '42["book_X",{"price":1.10,"s":"\u00e9"}]'.encode("utf-8")  # verbatim bytes
    assert ev.args == [{"price": 1.1, "s": "\u00e9"}] and isinstance(ev.args[0]["price"], float)


@pytest.mark.parametrize("ending,expect", [
    ("close", "close_code=1001"),
    ("drop", "closed"),
    ("41", "disconnect (41)"),
    ("1", "engine.io close"),
    ('44"not authorized"', "error packet"),
])
def test_server_ending_raises_transport_error_promptly(ending, expect):
    srv = V3Server(script=['42["e",1]'], gap=0.05, after_script=ending)

    async def main():
        async with serve(srv.app()) as base, aiohttp.ClientSession() as session:
            async with SocketIOClient(session, base, eio=3, heartbeat_grace=5.0) as client:
                got = []
                t0 = time.monotonic()
                with pytest.raises(TransportError) as ei:
                    async for f in client:
                        got.append(f)
                elapsed = time.monotonic() - t0
                # the error is sticky
                with pytest.raises(TransportError):
                    await client.recv()
        return got, ei.value, elapsed

    got, err, elapsed = run(main())
    assert [f.name for f in got] == ["e"]
    assert expect in str(err), str(err)
    assert elapsed < 1.0  # far below the 5.4 s heartbeat bound


@pytest.mark.parametrize("eio", [3, 4])
def test_silent_server_heartbeat_timeout_within_bound(eio):
    # open packet, then nothing: no 40, no pong, no close
    srv = V3Server(ping_interval_ms=200, ping_timeout_ms=150, mode="silent")
    grace = 0.1
    bound = 0.2 + 0.15 + grace

    async def main():
        async with serve(srv.app()) as base, aiohttp.ClientSession() as session:
            t0 = time.monotonic()
            with pytest.raises(TransportError) as ei:
                async with SocketIOClient(session, base, eio=eio, heartbeat_grace=grace, open_timeout=10) as client:
                    await collect(client, 1)
            return ei.value, time.monotonic() - t0

    err, elapsed = run(main())
    assert "heartbeat timeout" in str(err)
    assert bound - 0.05 <= elapsed < bound + 0.5


def test_silent_after_handshake_heartbeat_timeout():
    # server answers the handshake and one event, then goes silent (never answers pings)
    class Mute(V3Server):
        async def handler(self, request):
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            await ws.send_str('0{"sid":"m","upgrades":[],"pingInterval":100,"pingTimeout":100}')
            await ws.send_str("40")
            await ws.send_str('42["e",1]')
            async for _ in ws:
                pass
            return ws

    srv = Mute()

    async def main():
        async with serve(srv.app()) as base, aiohttp.ClientSession() as session:
            async with SocketIOClient(session, base, eio=3, heartbeat_grace=0.1) as client:
                first = await client.recv()
                t0 = time.monotonic()
                with pytest.raises(TransportError) as ei:
                    await client.recv()
                return first, ei.value, time.monotonic() - t0, client.pings_sent

    first, err, elapsed, pings = run(main())
    assert first.name == "e"
    assert "heartbeat timeout" in str(err) and elapsed < 0.3 + 0.3
    assert pings >= 1


def test_close_cancels_heartbeat_task_and_is_idempotent():
    srv = V3Server(ping_interval_ms=50, ping_timeout_ms=200)

    async def main():
        async with serve(srv.app()) as base, aiohttp.ClientSession() as session:
            client = SocketIOClient(session, base, eio=3)
            async with client:
                task = client._ping_task
                assert task is not None and not task.done()
                await asyncio.sleep(0.2)
            assert task.done() and client._ping_task is None
            await client.close()  # idempotent
            # consumer cancelled mid-receive: clean close afterwards, no stray tasks
            client2 = SocketIOClient(session, base, eio=3)
            async with client2:
                reader = asyncio.create_task(client2.recv())
                await asyncio.sleep(0.1)
                reader.cancel()
                await asyncio.wait([reader])
            assert client2._ping_task is None
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()
                      and "eio-ping" in t.get_name()]
            assert not others
        return srv.pings

    assert run(main()) >= 2


def test_connect_refused_is_transport_error():
    async def main():
        async with aiohttp.ClientSession() as session:
            with pytest.raises(TransportError) as ei:
                async with SocketIOClient(session, "http://127.0.0.1:9", eio=3, open_timeout=2):
                    pass
            return ei.value

    assert "connect failed" in str(run(main()))


def test_cancelled_during_handshake_leaves_nothing_behind():
    srv = V3Server(ping_interval_ms=100, ping_timeout_ms=5000, mode="silent")

    async def main():
        async with serve(srv.app()) as base, aiohttp.ClientSession() as session:
            async def user():
                async with SocketIOClient(session, base, eio=3, connect_wait=5.0):
                    pass

            task = asyncio.create_task(user())
            await asyncio.sleep(0.3)  # inside the wait for 40; the ping task is running
            task.cancel()
            await asyncio.wait([task])
            assert task.cancelled()
            leftovers = [t for t in asyncio.all_tasks() if "eio-ping" in t.get_name()]
            for _ in range(50):  # the server notices the close
                if srv.closed_at is not None:
                    break
                await asyncio.sleep(0.02)
            return leftovers

    assert run(main()) == []
    assert srv.closed_at is not None


def test_v4_connect_error_is_transport_error():
    class Refuse(V3Server):
        async def handler(self, request):
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            await ws.send_str('0{"sid":"r","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}')
            async for msg in ws:
                if msg.data == "40":
                    await ws.send_str('44{"message":"Not authorized"}')
            return ws

    srv = Refuse()

    async def main():
        async with serve(srv.app()) as base, aiohttp.ClientSession() as session:
            with pytest.raises(TransportError) as ei:
                async with SocketIOClient(session, base, eio=4):
                    pass
            return ei.value

    err = run(main())
    assert "error packet" in str(err) and "Not authorized" in str(err)


def test_recv_batch_hands_event_frames_over_in_order_and_stops_at_other_frames():
    events = [f'42["book_X",{{"n":{i}}}]' for i in range(600)]
    # `42[` frames are handed over undecoded, even broken ones (the consumer's parser judges them)
    events[7] = "42[bad json"
    script = events[:300] + ["4x", "6"] + events[300:]
    srv = V3Server(script=script, gap=0, after_script="close")

    queued: list[bool] = []

    async def main():
        got: list = []  # ("burst", [texts]) or ("frame", Frame)
        async with serve(srv.app()) as base, aiohttp.ClientSession() as session:
            async with SocketIOClient(session, base, eio=3) as client:
                queued.append(_queued_reader(client._ws) is not None)
                await asyncio.sleep(0.3)  # let frames pile up in the socket's queue
                while True:
                    texts, stamps = [], []
                    try:
                        frame = await client.recv_batch(texts, stamps, 128)
                    except TransportError as e:
                        got.append(("burst", texts))
                        return got, str(e)
                    assert len(texts) == len(stamps) <= 128 and stamps == sorted(stamps)
                    got.append(("burst", texts))
                    if frame is not None:
                        got.append(("frame", frame))

    got, err = run(main())
    assert err  # the server closed: TransportError, after every frame was handed over
    flat = [t if isinstance(t, str) else t.decode() for kind, x in got if kind == "burst" for t in x]
    assert flat == events  # every event frame, verbatim and in order
    frames = [x for kind, x in got if kind == "frame"]
    assert [f.kind for f in frames] == ["malformed", "other"]
    # the frames came after exactly the 300 events that preceded them
    before = [t for kind, x in got[:[i for i, (k, _) in enumerate(got) if k == "frame"][0]] if kind == "burst" for t in x]
    assert len(before) == 300
    assert max(len(x) for kind, x in got if kind == "burst") > 1  # bursts, not one frame at a time
    assert queued == [True]  # queued event frames were taken straight from aiohttp's queue (its internals as expected)


def test_parse_packet_raw_engineio_framing():
    """With raw engine.io framing a message packet is the venue's payload, not a socket.io packet."""
    _, _, f = parse_packet(b'4{"oid":1}', 3, "engineio")
    assert f.kind == "message" and f.raw == b'4{"oid":1}'
    assert parse_packet(b'4{"oid":1}', 3)[2].kind == "malformed"  # socket.io framing: type '{' is unknown
    assert parse_packet(b"2", 3, "engineio")[0] == "ping"


def test_auto_url_asks_for_protocol_3_first():
    assert "EIO=3" in socketio_url("http://h", "auto")  # then 4 if the server refuses 3
