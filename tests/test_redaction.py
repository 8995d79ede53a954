"""Configured credentials never reach the dataset (raw.payload, raw.reason, sessions.detail, Parquet column
statistics) or the logs, even when a venue echoes them back; config errors never echo a value like a key."""
from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest
from aiohttp import web

from recorder import config
from recorder.daemon import Daemon, setup_logging
from recorder.redact import Redactor

KEY = "KEY7f3a9c0e4b2d1"
SECRET = "s3cr/et+d41d8cd98f00b204=="


def echo_app() -> web.Application:
    """A venue whose Trading API error body echoes the key and secret back, plain and escaped."""
    async def trading(request: web.Request) -> web.Response:
        body = json.dumps({"code": 501, "message": f"Invalid key {request.headers.get('API-Key')} for secret "
                                                   f"{SECRET} ({SECRET.replace('/', chr(92) + '/')})"})
        return web.Response(text=body, content_type="application/json")

    async def public(request: web.Request) -> web.Response:
        return web.Response(text=f'{{"error": "bad request for {KEY}"}}', status=400)

    app = web.Application()
    app.router.add_post("/API/Trading/tradingApi.php", trading)
    app.router.add_get("/API/Public/{tail:.*}", public)
    return app


def test_echoed_credentials_are_redacted_everywhere_we_write(tmp_path, monkeypatch):
    monkeypatch.setattr(logging.getLogger("recorder"), "level", logging.NOTSET)

    async def main():
        runner = web.AppRunner(echo_app())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        cfg = config.parse({"recorder": {"root": str(tmp_path / "data"), "fsync_interval": 0.2,
                                         "backoff_base": 0.05, "backoff_cap": 0.2},
                            "venues": {"bitbay": {"pairs": ["BTC_USD"], "channels": ["book", "trades"],
                                                  "rest_url": f"{base}/API/Public",
                                                  "trading_url": f"{base}/API/Trading/tradingApi.php",
                                                  "api_key_env": "T_KEY", "api_secret_env": "T_SECRET",
                                                  "book_interval": 0.2, "trades_interval": 0.2}}},
                           env={"T_KEY": KEY, "T_SECRET": SECRET})
        buf = io.StringIO()
        from recorder.daemon import secrets_of
        setup_logging("json", "info", Redactor(secrets_of(cfg)), buf)
        d = Daemon(cfg)
        task = asyncio.create_task(d.run())
        await asyncio.sleep(3.0)
        d.stop()
        code = await asyncio.wait_for(task, 15)
        await runner.cleanup()
        return code, buf.getvalue(), d

    code, logs, d = asyncio.run(main())
    assert code == 0
    root = tmp_path / "data"
    import duckdb
    con = duckdb.connect()
    rejected = con.execute(f"SELECT count(*) FROM read_parquet('{root}/raw/**/*.parquet') "
                           "WHERE status = 'rejected'").fetchone()[0]
    assert rejected >= 2, "the echoing bodies must have been recorded (else this test shows nothing)"
    reasons = [r for (r,) in con.execute(f"SELECT reason FROM read_parquet('{root}/raw/**/*.parquet') "
                                         "WHERE reason IS NOT NULL").fetchall()]
    assert any("***" in r for r in reasons), reasons[:3]
    payloads = [bytes(p) for (p,) in con.execute(f"SELECT payload FROM read_parquet('{root}/raw/**/*.parquet') "
                                                 "WHERE status = 'rejected'").fetchall()]
    assert all(b"***" in p for p in payloads)
    forms = [KEY, SECRET, SECRET.replace("/", "\\/"), "s3cr%2Fet%2Bd41d8"]
    blobs = {"logs": logs.encode(), **{str(f): f.read_bytes() for f in root.rglob("*") if f.is_file()}}
    for name, blob in blobs.items():
        for s in forms:
            assert s.encode() not in blob, (name, s)  # whole files: Parquet footers and column statistics too
    assert any(n.endswith(".parquet") for n in blobs)


def test_redactor_covers_the_escaped_forms():
    r = Redactor([SECRET])
    for text in (SECRET, json.dumps(SECRET), SECRET.replace("/", "\\/"), "s3cr%2Fet%2Bd41d8cd98f00b204%3D%3D"):
        assert SECRET[5:] not in r(f"x {text} y") or "***" in r(f"x {text} y")
        assert b"***" in r.bytes(f"x {text} y".encode())
    assert not Redactor() and Redactor().bytes(b"abc") == b"abc"


@pytest.mark.parametrize("value", ["BT_KEY_ABC789", "sk-live 4f9a/Zx+q=="])
def test_config_errors_never_echo_what_may_be_a_key(value):
    with pytest.raises(config.ConfigError) as e:
        config.parse({"recorder": {"root": "/tmp/x"},
                      "venues": {"bitbay": {"pairs": ["BTC_USD"], "api_key_env": value,
                                            "api_secret_env": "ALSO_UNSET"}}}, env={})
    msg = str(e.value)
    assert "venues.bitbay.api_key_env" in msg
    for part in ("ABC789", "4f9a", "Zx+q"):
        assert part not in msg
