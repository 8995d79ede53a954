"""Config loading and validation: clear errors naming the key, credentials by env var name or secrets file."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from recorder import config
from recorder.config import ConfigError

REPO = Path(__file__).resolve().parents[1]


def doc(**venues):
    return {"recorder": {"root": "data"}, "venues": venues or {"btcalpha": {"pairs": ["BTC_USD"]}}}


def test_example_config_is_valid_and_points_at_the_real_venues():
    env = {"BITBAY_API_KEY": "k", "BITBAY_API_SECRET": "s"}
    cfg = config.load(REPO / "recorder.example.toml", env=env)
    urls = {v.name: v.urls for v in cfg.venues}
    assert urls["btcalpha"]["ws_url"] == "wss://btc-alpha.com"
    assert urls["btcalpha"]["rest_url"] == "https://btc-alpha.com/api/v1/"
    assert urls["bitexbit"]["rest_url"] == "https://bitexbit.com/api/v1/"
    assert urls["bitopro"]["ws_url"] == "wss://stream.bitopro.com:443/ws"
    assert urls["bitopro"]["rest_url"] == "https://api.bitopro.com/v3"
    assert urls["bitbay"]["trading_url"].startswith("https://bitbay.net/API/")
    assert all(v.rate_limit <= config.SPECS[v.name].max_rate for v in cfg.venues)


def test_example_current_era_tables_are_valid_and_point_at_the_successor_endpoints():
    """The commented `api = "current"` tables of recorder.example.toml, uncommented, are a valid config."""
    blocks, cur = [], None
    for line in (REPO / "recorder.example.toml").read_text().splitlines():
        if line.startswith("# [venues."):
            cur = [line[2:]]
            blocks.append(cur)
        elif cur is not None and line.startswith("# ") and "=" in line:
            cur.append(line[2:])
        else:
            cur = None
    text = 'recorder = { root = "data" }\n' + "\n".join("\n".join(b) for b in blocks)
    cfg = config.parse(tomllib.loads(text), base=Path("/x"), env={})
    v = {x.name: x for x in cfg.venues}
    assert v["bitbay"].api == v["btcalpha"].api == "current"
    assert set(v["bitbay"].channels) == {"book", "trades", "candles"} and set(v["btcalpha"].channels) == {"book", "trades"}
    assert v["bitbay"].urls["rest_url"] == "https://api.zondacrypto.exchange/rest"
    assert v["btcalpha"].urls["ws_url"] == "wss://btc-alpha.com/alp-ws"


def test_defaults():
    cfg = config.parse(doc(), base=Path("/x"), env={})
    v = cfg.venues[0]
    assert cfg.root == Path("/x/data") and cfg.fsync_interval == 1.0 and cfg.metrics_port == 0
    assert v.channels == config.SPECS["btcalpha"].channels and v.resolutions == ("1m",)
    assert v.urls["ws_url"] == "wss://btc-alpha.com" and v.eio == "auto"  # survives either protocol
    assert (v.framing, v.ws_path, v.subscribe) == ("socketio", "socket.io", "emit")


def test_raw_engineio_framing_defaults_and_choices():
    d = doc()
    d["venues"]["btcalpha"].update(framing="engineio")
    v = config.parse(d, base=Path("/x"), env={}).venues[0]
    assert (v.framing, v.ws_path, v.subscribe) == ("engineio", "engine.io", "text")
    d["venues"]["btcalpha"].update(ws_path="/feed/", subscribe="json", subscribe_json='{"sub":"{channel}"}', eio=3)
    v = config.parse(d, base=Path("/x"), env={}).venues[0]
    assert (v.ws_path, v.subscribe, v.subscribe_json, v.eio) == ("feed", "json", '{"sub":"{channel}"}', 3)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(extra=1), "config: unknown key(s) extra"),
    (lambda d: d["recorder"].update(fsync=1), "recorder: unknown key(s) fsync"),
    (lambda d: d["venues"]["btcalpha"].update(pair=["X"]), "venues.btcalpha: unknown key(s) pair"),
    (lambda d: d["venues"].update(kraken={"pairs": ["BTC_USD"]}), "venues.kraken: unknown venue"),
    (lambda d: d["venues"]["btcalpha"].update(pairs=["btc-usd"]), "bad pair 'btc-usd'"),
    (lambda d: d["venues"]["btcalpha"].update(pairs=["BTCUSD"]), "bad pair 'BTCUSD'"),
    (lambda d: d["venues"]["btcalpha"].update(pairs=[]), "at least one pair"),
    (lambda d: d["venues"]["btcalpha"].update(channels=["orderbook"]), "btcalpha has no channel 'orderbook'"),
    (lambda d: d["venues"]["btcalpha"].update(resolutions=["2m"]), "btcalpha has no resolution '2m'"),
    (lambda d: d["venues"]["btcalpha"].update(rate_limit=500), "exceeds btcalpha's documented limit"),
    (lambda d: d["venues"]["btcalpha"].update(eio=5), 'eio: engine.io version must be 3, 4 or "auto"'),
    (lambda d: d["venues"]["btcalpha"].update(framing="sockjs"), "framing: socketio (events book_<PAIR>) or engineio"),
    (lambda d: d["venues"]["btcalpha"].update(subscribe="text"), "subscribe: with framing socketio one of emit, none"),
    (lambda d: d["venues"]["btcalpha"].update(framing="engineio", subscribe="emit"),
     "subscribe: with framing engineio one of text, json, none"),
    (lambda d: d["venues"]["btcalpha"].update(subscribe_json='["x"]'), "subscribe_json: must contain {channel}"),
    (lambda d: d["venues"]["btcalpha"].update(ws_url="ftp://x"), "not an http(s)/ws(s) URL"),
    (lambda d: d["venues"]["btcalpha"].update(trading_url="https://x"), "btcalpha does not use trading_url"),
    (lambda d: d["recorder"].update(fsync_interval=0), "recorder.fsync_interval: must be > 0"),
    (lambda d: d["recorder"].update(metrics_port=70000), "is not a port"),
    (lambda d: d["recorder"].pop("root"), "recorder.root"),
    (lambda d: d["venues"]["btcalpha"].update(enabled=False), "no enabled venue"),
    (lambda d: d["venues"]["btcalpha"].update(heartbeat="10"), "expected a number"),
])
def test_errors_name_the_key(mutate, message):
    d = doc()
    mutate(d)
    with pytest.raises(ConfigError) as e:
        config.parse(d, env={})
    assert message in str(e.value)


def test_bitbay_book_needs_credentials():
    with pytest.raises(ConfigError, match="set api_key_env and api_secret_env"):
        config.parse(doc(bitbay={"pairs": ["BTC_PLN"]}), env={})
    cfg = config.parse(doc(bitbay={"pairs": ["BTC_PLN"], "channels": ["trades"]}), env={})
    assert cfg.venues[0].credentials is None


def test_missing_env_var_is_named_but_never_its_value():
    d = doc(bitbay={"pairs": ["BTC_PLN"], "api_key_env": "BB_KEY", "api_secret_env": "BB_SECRET"})
    with pytest.raises(ConfigError) as e:
        config.parse(d, env={"BB_KEY": "very-secret-key-value"})
    assert "BB_SECRET" in str(e.value) and "very-secret-key-value" not in str(e.value)
    cfg = config.parse(d, env={"BB_KEY": "very-secret-key-value", "BB_SECRET": "s3cr3t-value"})
    creds = cfg.venues[0].credentials
    assert creds.key.reveal() == "very-secret-key-value"
    text = repr(cfg) + str(creds.key) + repr(creds)
    assert "very-secret-key-value" not in text and "s3cr3t-value" not in text and "env BB_KEY" in text


def test_secrets_file(tmp_path):
    (tmp_path / "secrets.toml").write_text('[bitbay]\napi_key = "file-key"\napi_secret = "file-secret"\n')
    (tmp_path / "r.toml").write_text('[recorder]\nroot = "d"\nsecrets_file = "secrets.toml"\n'
                                     '[venues.bitbay]\npairs = ["BTC_PLN"]\n')
    cfg = config.load(tmp_path / "r.toml", env={})
    assert cfg.venues[0].credentials.secret.reveal() == "file-secret"
    assert cfg.root == tmp_path / "d"
    (tmp_path / "secrets.toml").write_text('[bitbay]\napi_key = "file-key"\n')
    with pytest.raises(ConfigError, match=r"needs exactly api_key and api_secret") as e:
        config.load(tmp_path / "r.toml", env={})
    assert "file-key" not in str(e.value)
    (tmp_path / "secrets.toml").write_text('[bitbay]\napi_key = "file-key\n')
    with pytest.raises(ConfigError, match="not valid TOML") as e:
        config.load(tmp_path / "r.toml", env={})
    assert "file-key" not in str(e.value)


def test_unreadable_and_invalid_config(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        config.load(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("[recorder\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(tmp_path / "bad.toml")


def test_bitopro_book_limit():
    with pytest.raises(ConfigError, match="bitopro allows 1, 5, 10, 20, 30 or 50"):
        config.parse(doc(bitopro={"pairs": ["BTC_TWD"], "book_limit": 7}), env={})


def test_example_toml_parses_as_plain_toml():
    tomllib.loads((REPO / "recorder.example.toml").read_text())


def rec(**kw):
    return {"recorder": {"root": "data", **kw}, "venues": {"btcalpha": {"pairs": ["BTC_USD"]}}}


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3"])
def test_a_non_loopback_metrics_host_needs_allow_remote(host):
    with pytest.raises(ConfigError, match="allow_remote"):
        config.parse(rec(metrics_host=host), env={})
    cfg = config.parse(rec(metrics_host=host, allow_remote=True), env={})
    assert cfg.metrics_host == host and cfg.allow_remote


@pytest.mark.parametrize("host", ["garbage", "127.0.0.1:9000", "999.1.1.1", "", "http://127.0.0.1"])
def test_an_invalid_metrics_host_is_a_config_error(host):
    with pytest.raises(ConfigError, match="recorder.metrics_host"):
        config.parse(rec(metrics_host=host, allow_remote=True), env={})


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_loopback_metrics_hosts_are_fine(host):
    assert config.parse(rec(metrics_host=host), env={}).metrics_host == host


def test_api_current_is_zonda_and_alp_ws():
    d = doc()
    d["venues"]["bitbay"] = {"pairs": ["BTC_PLN"], "api": "current"}
    v = [x for x in config.parse(d, base=Path("/x"), env={}).venues if x.name == "bitbay"][0]
    assert v.api == "current" and v.channels == ("book", "trades", "candles") and v.resolutions == ("1m",)
    assert v.urls["ws_url"].startswith("wss://api.zondacrypto") and v.credentials is None  # all public
    d["venues"]["btcalpha"]["api"] = "current"
    v = [x for x in config.parse(d, base=Path("/x"), env={}).venues if x.name == "btcalpha"][0]
    assert v.channels == ("book", "trades") and v.urls["ws_url"] == "wss://btc-alpha.com/alp-ws"
    d["venues"]["btcalpha"]["channels"] = ["candles"]
    with pytest.raises(config.ConfigError, match="btcalpha has no channel 'candles'; it has book, trades"):
        config.parse(d, base=Path("/x"), env={})
    d["venues"]["btcalpha"]["channels"] = ["book"]
    d["venues"]["bitopro"] = {"pairs": ["BTC_TWD"], "api": "current"}
    with pytest.raises(config.ConfigError, match="api: current is implemented for bitbay, btcalpha only"):
        config.parse(d, base=Path("/x"), env={})
