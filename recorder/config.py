"""Recorder configuration: TOML in, validated frozen dataclasses out, with errors that name the key at fault.

Credentials are referenced by environment variable name or come from a separate secrets file;
their values live only in `Secret` objects, whose repr never shows them.
"""
from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from schemas import is_pair

_WRITER_RE = re.compile(r"[A-Za-z0-9_]{1,64}")  # as recorder.store.WRITER_RE (config does not import the store)

VENUES = ("btcalpha", "bitexbit", "bitopro", "bitbay")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _looks_like_key(name: str) -> bool:
    """True unless `name` reads like a conventional variable name (BITBAY_API_KEY, KEY_2): a credential
    pasted in its place mixes letters and digits (BT_KEY_ABC789) or is not upper case."""
    if not re.fullmatch(r"[A-Z][A-Z0-9_]*", name) or len(name) > 48:
        return True
    return any(re.search(r"\d{3}", p) or (len(p) >= 5 and re.search(r"\d", p)) for p in name.split("_"))
RESOLUTIONS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "3h", "4h", "6h", "12h", "1d", "3d", "1w", "1M")


@dataclass(frozen=True)
class VenueSpec:
    """What a venue offers and what its documents allow (defaults for the real endpoints)."""

    channels: tuple[str, ...]
    resolutions: tuple[str, ...]
    max_rate: float  # documented public request limit, requests per second
    urls: Mapping[str, str]
    heartbeat: float  # seconds a live stream may stay silent before we reconnect


SPECS: dict[str, VenueSpec] = {
    "btcalpha": VenueSpec(
        ("book", "trades", "candles", "grouped"), ("1m", "5m", "15m", "30m", "1h", "4h", "1d"), 100.0,
        {"ws_url": "wss://btc-alpha.com", "rest_url": "https://btc-alpha.com/api/v1/",
         "charts_url": "https://btc-alpha.com/api/charts/"}, 60.0),
    "bitexbit": VenueSpec(
        ("book", "trades", "candles", "grouped"), ("1m", "5m", "15m", "30m", "1h", "4h", "1d"), 100.0,
        {"ws_url": "wss://bitexbit.com", "rest_url": "https://bitexbit.com/api/v1/",
         "charts_url": "https://bitexbit.com/api/charts/"}, 60.0),
    "bitopro": VenueSpec(
        ("book", "trades", "candles", "rest_book"),
        ("1m", "5m", "15m", "30m", "1h", "3h", "4h", "6h", "12h", "1d", "1w", "1M"), 10.0,
        {"ws_url": "wss://stream.bitopro.com:443/ws", "rest_url": "https://api.bitopro.com/v3"}, 45.0),
    "bitbay": VenueSpec(
        ("book", "trades"), (), 1.0,
        {"rest_url": "https://bitbay.net/API/Public", "trading_url": "https://bitbay.net/API/Trading/tradingApi.php"},
        0.0),
}


#: `api = "current"`: the successor endpoints (docs/recorder.md "What is known"): Zonda's websocket order book
#: (seqNo) on REST snapshots, its REST transactions and candles; BTC-Alpha's alp-ws diffs on REST depth snapshots
#: and alp-ws trade frames.
CURRENT_SPECS: dict[str, VenueSpec] = {
    "bitbay": VenueSpec(("book", "trades", "candles"),
                        ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d", "3d", "1w"), 1.0,
                        {"ws_url": "wss://api.zondacrypto.exchange/websocket/",
                         "rest_url": "https://api.zondacrypto.exchange/rest"}, 30.0),
    "btcalpha": VenueSpec(("book", "trades"), (), 100.0, {"ws_url": "wss://btc-alpha.com/alp-ws",
                                                          "rest_url": "https://btc-alpha.com/api/web/"}, 60.0),
}


class ConfigError(ValueError):
    """A configuration problem, with the key path in the message."""


class Secret:
    """A credential value that never prints itself."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str) -> None:
        self._value = value
        self.source = source

    def reveal(self) -> str:
        """The value, for signing only."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret(<from {self.source}>)"

    __str__ = __repr__


@dataclass(frozen=True)
class Credentials:
    """An API key pair."""

    key: Secret
    secret: Secret


@dataclass(frozen=True)
class VenueConfig:
    """One venue: where it is, what to record and how fast we may ask."""

    name: str
    pairs: tuple[str, ...]
    channels: tuple[str, ...]
    resolutions: tuple[str, ...]
    urls: Mapping[str, str]
    rate_limit: float
    heartbeat: float
    eio: int | str = "auto"
    framing: str = "socketio"
    ws_path: str = "socket.io"
    subscribe: str = "emit"
    subscribe_json: str = '["subscribe","{channel}"]'
    book_limit: int = 50
    trades_interval: float = 1.0
    candles_interval: float = 10.0
    grouped_interval: float = 60.0
    book_interval: float = 1.0
    snapshot_settle: float = 0.25
    credentials: Credentials | None = None
    api: str = "legacy"


@dataclass(frozen=True)
class Config:
    """The whole daemon configuration."""

    root: Path
    venues: tuple[VenueConfig, ...]
    #: this recorder's writer id: its log, lock and file names; several recorders share a root with distinct ids.
    writer: str = "recorder"
    #: s3://bucket/prefix when the dataset lives in a bucket: `root` is then the local spool (log, open hours),
    #: and finished files are shipped (recorder.store.remote); endpoint and region may come from here.
    remote: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    #: bucket credentials from the secrets file's [s3] table (else botocore's usual chain: AWS_* env, profiles).
    s3_credentials: Credentials | None = None
    #: seq namespace of this host (recorder.store.seq): 0 on a shared local root; 1..1023, one per host, in a bucket.
    seq_namespace: int = 0
    fsync_interval: float = 1.0
    metrics_host: str = "127.0.0.1"
    allow_remote: bool = False  # metrics_host may be an address other machines reach (no authentication)
    metrics_port: int = 0
    log_format: str = "json"
    log_level: str = "info"
    queue_max: int = 100_000
    max_pending_bytes: int = 256 << 20
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    health_grace: float = 60.0  # seconds after start during which a feed not live yet is not a /health fault


_TOP_KEYS = {"recorder", "venues"}
_RECORDER_KEYS = {"root", "writer", "spool", "s3_endpoint_url", "s3_region", "seq_namespace", "fsync_interval", "metrics_host", "allow_remote", "metrics_port", "log_format", "log_level", "queue_max",
                  "max_pending_bytes", "backoff_base", "backoff_cap", "secrets_file", "health_grace"}
_VENUE_KEYS = {"enabled", "api", "pairs", "channels", "resolutions", "ws_url", "rest_url", "charts_url", "trading_url",
               "rate_limit", "heartbeat", "eio", "framing", "ws_path", "subscribe", "subscribe_json", "book_limit", "trades_interval", "candles_interval",
               "grouped_interval", "book_interval", "snapshot_settle", "api_key_env", "api_secret_env"}


def _check_keys(where: str, got: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(got) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _typed(where: str, value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ConfigError(f"{where}: expected {what}, got {value!r}")
    if not isinstance(value, kind):
        raise ConfigError(f"{where}: expected {what}, got {type(value).__name__}")
    return value


def _positive(where: str, value: Any) -> float:
    v = float(_typed(where, value, (int, float), "a number"))
    if not v > 0:
        raise ConfigError(f"{where}: must be > 0, got {value!r}")
    return v


def _str_list(where: str, value: Any) -> tuple[str, ...]:
    _typed(where, value, list, "a list of strings")
    for i, item in enumerate(value):
        _typed(f"{where}[{i}]", item, str, "a string")
    if len(set(value)) != len(value):
        raise ConfigError(f"{where}: duplicate entries")
    return tuple(value)


def _url(where: str, value: Any) -> str:
    _typed(where, value, str, "a URL string")
    if not value.startswith(("http://", "https://", "ws://", "wss://")):
        raise ConfigError(f"{where}: not an http(s)/ws(s) URL: {value!r}")
    return value


def _metrics_host(host: str, allow_remote: bool) -> str:
    """An IP address (or localhost) to serve /metrics and /health on; they have no authentication, so an
    address other machines can reach needs allow_remote = true."""
    if host == "localhost":
        return host
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"recorder.metrics_host: {host!r} is not an IP address (or localhost); "
                          f"e.g. 127.0.0.1, ::1, or 0.0.0.0 with allow_remote = true") from None
    if not ip.is_loopback and not allow_remote:
        raise ConfigError(f"recorder.metrics_host: {host} is reachable from other machines and /metrics and "
                          f"/health have no authentication; set recorder.allow_remote = true to serve them there")
    return host


def _credentials(where: str, raw: Mapping[str, Any], secrets: Mapping[str, Any], env: Mapping[str, str],
                 venue: str) -> Credentials | None:
    key_env, secret_env = raw.get("api_key_env"), raw.get("api_secret_env")
    if key_env is not None or secret_env is not None:
        if key_env is None or secret_env is None:
            raise ConfigError(f"{where}: api_key_env and api_secret_env go together")
        parts = []
        for k, name in (("api_key_env", key_env), ("api_secret_env", secret_env)):
            # the value is never repeated in an error: an operator may have pasted the key itself here
            if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
                raise ConfigError(f"{where}.{k}: expected the NAME of an environment variable (letters, digits, "
                                  f"underscores); the value given is not shown, in case it is the key itself")
            if not env.get(name):
                what = "the environment variable it names (not shown: it looks like a key itself)" \
                    if _looks_like_key(name) else f"environment variable {name}"
                raise ConfigError(f"{where}.{k}: {what} is not set or empty")
            parts.append(Secret(env[name], f"env {name}"))
        return Credentials(*parts)
    if venue in secrets:
        entry = secrets[venue]
        if not isinstance(entry, Mapping) or set(entry) != {"api_key", "api_secret"}:
            raise ConfigError(f"secrets file [{venue}]: needs exactly api_key and api_secret")
        for k in ("api_key", "api_secret"):
            if not isinstance(entry[k], str) or not entry[k]:
                raise ConfigError(f"secrets file [{venue}].{k}: must be a non-empty string")
        return Credentials(Secret(entry["api_key"], f"secrets file [{venue}]"),
                           Secret(entry["api_secret"], f"secrets file [{venue}]"))
    return None


#: subscription frames each framing can send (see docs/recorder.md "engine.io venues").
SUBSCRIBE = {"socketio": ("emit", "none"), "engineio": ("text", "json", "none")}


def _socket_framing(where: str, name: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """framing / ws_path / subscribe / subscribe_json of an engine.io venue, defaults by framing."""
    keys = ("framing", "ws_path", "subscribe", "subscribe_json")
    if name not in ("btcalpha", "bitexbit"):
        for k in keys:
            if k in raw:
                raise ConfigError(f"{where}.{k}: only the engine.io venues (btcalpha, bitexbit) have {k}")
        return {}
    framing = raw.get("framing", "socketio")
    if framing not in SUBSCRIBE:
        raise ConfigError(f"{where}.framing: socketio (events book_<PAIR>) or engineio (bare messages), got {framing!r}")
    path = _typed(f"{where}.ws_path", raw.get("ws_path", "socket.io" if framing == "socketio" else "engine.io"),
                  str, "a path string")
    sub = raw.get("subscribe", SUBSCRIBE[framing][0])
    if sub not in SUBSCRIBE[framing]:
        raise ConfigError(f"{where}.subscribe: with framing {framing} one of {', '.join(SUBSCRIBE[framing])}, "
                          f"got {sub!r}")
    tmpl = _typed(f"{where}.subscribe_json", raw.get("subscribe_json", '["subscribe","{channel}"]'), str,
                  "a JSON template string")
    if "{channel}" not in tmpl:
        raise ConfigError(f"{where}.subscribe_json: must contain {{channel}}, got {tmpl!r}")
    return {"framing": framing, "ws_path": path.strip("/"), "subscribe": sub, "subscribe_json": tmpl}


def _s3_credentials(entry: Any) -> Credentials:
    """The secrets file's [s3] access_key_id and secret_access_key (values never in an error)."""
    keys = ("access_key_id", "secret_access_key")
    if not isinstance(entry, Mapping) or set(entry) != set(keys):
        raise ConfigError("secrets file [s3]: needs exactly access_key_id and secret_access_key")
    for k in keys:
        if not isinstance(entry[k], str) or not entry[k]:
            raise ConfigError(f"secrets file [s3].{k}: must be a non-empty string")
    return Credentials(*(Secret(entry[k], "secrets file [s3]") for k in keys))


def _venue(name: str, raw: Any, secrets: Mapping[str, Any], env: Mapping[str, str]) -> VenueConfig | None:
    where = f"venues.{name}"
    if name not in SPECS:
        raise ConfigError(f"{where}: unknown venue; venues are: {', '.join(VENUES)}")
    _typed(where, raw, dict, "a table")
    _check_keys(where, raw, _VENUE_KEYS)
    if not _typed(f"{where}.enabled", raw.get("enabled", True), bool, "true or false"):
        return None
    api = raw.get("api", "legacy")
    if api not in ("legacy", "current"):
        raise ConfigError(f"{where}.api: legacy (the seed endpoints) or current (their successors), got {api!r}")
    if api == "current" and name not in CURRENT_SPECS:
        raise ConfigError(f"{where}.api: current is implemented for {', '.join(CURRENT_SPECS)} only")
    spec = CURRENT_SPECS[name] if api == "current" else SPECS[name]
    pairs = _str_list(f"{where}.pairs", raw.get("pairs", []))
    if not pairs:
        raise ConfigError(f"{where}.pairs: at least one pair is needed")
    for p in pairs:
        if not is_pair(p):
            raise ConfigError(f"{where}.pairs: bad pair {p!r}; write BASE_QUOTE in upper case, e.g. BTC_USD")
    channels = _str_list(f"{where}.channels", raw.get("channels", list(spec.channels)))
    for c in channels:
        if c not in spec.channels:
            raise ConfigError(f"{where}.channels: {name} has no channel {c!r}; it has {', '.join(spec.channels)}")
    resolutions = _str_list(f"{where}.resolutions", raw.get("resolutions", list(spec.resolutions[:1])))
    for r in resolutions:
        if r not in spec.resolutions:
            raise ConfigError(f"{where}.resolutions: {name} has no resolution {r!r}; "
                              f"it has {', '.join(spec.resolutions) or 'none'}")
    if "candles" in channels and not resolutions:
        raise ConfigError(f"{where}.resolutions: channel candles needs at least one resolution")
    urls = dict(spec.urls)
    for k in ("ws_url", "rest_url", "charts_url", "trading_url"):
        if k in raw:
            if k not in spec.urls:
                raise ConfigError(f"{where}.{k}: {name} does not use {k}")
            urls[k] = _url(f"{where}.{k}", raw[k])
    rate = _positive(f"{where}.rate_limit", raw.get("rate_limit", min(spec.max_rate, 10.0)))
    if rate > spec.max_rate:
        raise ConfigError(f"{where}.rate_limit: {rate} req/s exceeds {name}'s documented limit of {spec.max_rate} req/s")
    eio = raw.get("eio", "auto")
    if eio not in (3, 4, "auto") or isinstance(eio, bool):
        raise ConfigError(f"{where}.eio: engine.io version must be 3, 4 or \"auto\", got {eio!r}")
    kw_sock = _socket_framing(where, name, raw)
    book_limit = _typed(f"{where}.book_limit", raw.get("book_limit", 50), int, "an integer")
    if name == "bitopro" and book_limit not in (1, 5, 10, 20, 30, 50):
        raise ConfigError(f"{where}.book_limit: bitopro allows 1, 5, 10, 20, 30 or 50, got {book_limit}")
    creds = _credentials(where, raw, secrets, env, name)
    if name == "bitbay" and api == "legacy" and "book" in channels and creds is None:
        raise ConfigError(f"{where}: channel book polls the signed Trading API; set api_key_env and api_secret_env "
                          f"or give [bitbay] api_key/api_secret in recorder.secrets_file")
    kw = {k: _positive(f"{where}.{k}", raw[k]) for k in
          ("trades_interval", "candles_interval", "grouped_interval", "book_interval", "heartbeat")
          if k in raw}
    if "snapshot_settle" in raw:
        kw["snapshot_settle"] = float(_typed(f"{where}.snapshot_settle", raw["snapshot_settle"], (int, float),
                                             "a number"))
    kw.setdefault("heartbeat", spec.heartbeat)
    return VenueConfig(name=name, pairs=pairs, channels=channels, resolutions=resolutions, urls=urls,
                       rate_limit=rate, eio=eio, book_limit=book_limit, credentials=creds, api=api, **kw_sock, **kw)


def parse(doc: Mapping[str, Any], *, base: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Validate a parsed TOML document; relative paths resolve against `base`."""
    env = os.environ if env is None else env
    base = base or Path.cwd()
    _check_keys("config", doc, _TOP_KEYS)
    rec = _typed("recorder", doc.get("recorder", {}), dict, "a table")
    _check_keys("recorder", rec, _RECORDER_KEYS)
    if "root" not in rec:
        raise ConfigError("recorder.root: the dataset root directory is required")
    root_text = _typed("recorder.root", rec["root"], str, "a path string")
    kw: dict[str, Any] = {}
    if root_text.startswith("s3://"):
        if "spool" not in rec:
            raise ConfigError("recorder.spool: a local directory is required with an s3:// root (the durable log "
                              "and the hours not shipped yet live there)")
        if not root_text[5:].strip("/"):
            raise ConfigError("recorder.root: s3://bucket[/prefix] needs a bucket name")
        kw["remote"] = root_text.rstrip("/")
        root = base / _typed("recorder.spool", rec["spool"], str, "a path string")
        for k in ("s3_endpoint_url", "s3_region"):
            if k in rec:
                kw[k] = _typed(f"recorder.{k}", rec[k], str, "a string")
        ns = _typed("recorder.seq_namespace", rec.get("seq_namespace", 0), int, "an integer")
        if not 1 <= ns <= 1023:
            raise ConfigError("recorder.seq_namespace: required with an s3:// root, 1-1023 and different on each host "
                              "writing the bucket (seq stays unique across hosts; docs/scale.md)")
        kw["seq_namespace"] = ns
    else:
        root = base / root_text
        if rec.get("seq_namespace", 0) != 0:
            ns = _typed("recorder.seq_namespace", rec["seq_namespace"], int, "an integer")
            if not 0 <= ns <= 1023:
                raise ConfigError("recorder.seq_namespace: 0-1023")
            kw["seq_namespace"] = ns
    secrets: Mapping[str, Any] = {}
    if "secrets_file" in rec:
        spath = base / _typed("recorder.secrets_file", rec["secrets_file"], str, "a path string")
        try:
            secrets = tomllib.loads(spath.read_text())
        except OSError as e:
            raise ConfigError(f"recorder.secrets_file: cannot read {spath}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:  # the message quotes no values, only positions
            raise ConfigError(f"recorder.secrets_file: {spath} is not valid TOML ({e})") from None
        for k in secrets:
            if k not in SPECS and k != "s3":
                raise ConfigError(f"secrets file: unknown venue [{k}]")
        if "s3" in secrets:
            kw["s3_credentials"] = _s3_credentials(secrets["s3"])
    venues_raw = _typed("venues", doc.get("venues", {}), dict, "a table")
    venues = tuple(v for v in (_venue(n, r, secrets, env) for n, r in venues_raw.items()) if v is not None)
    if not venues:
        raise ConfigError("venues: no enabled venue")
    for k in ("fsync_interval", "backoff_base", "backoff_cap", "health_grace"):
        if k in rec:
            kw[k] = _positive(f"recorder.{k}", rec[k])
    for k in ("queue_max", "max_pending_bytes"):
        if k in rec:
            v = _typed(f"recorder.{k}", rec[k], int, "an integer")
            if v <= 0:
                raise ConfigError(f"recorder.{k}: must be > 0")
            kw[k] = v
    if "metrics_port" in rec:
        port = _typed("recorder.metrics_port", rec["metrics_port"], int, "an integer")
        if not 0 <= port < 65536:
            raise ConfigError(f"recorder.metrics_port: {port} is not a port (0 picks a free one)")
        kw["metrics_port"] = port
    if "writer" in rec:
        w = _typed("recorder.writer", rec["writer"], str, "a string")
        if not _WRITER_RE.fullmatch(w):
            raise ConfigError(f"recorder.writer: {w!r} must be 1-64 letters, digits or _ (it names files)")
        kw["writer"] = w
    if "metrics_host" in rec:
        kw["metrics_host"] = _metrics_host(_typed("recorder.metrics_host", rec["metrics_host"], str, "an address"),
                                           _typed("recorder.allow_remote", rec.get("allow_remote", False), bool,
                                                  "true or false"))
        kw["allow_remote"] = rec.get("allow_remote", False)
    if rec.get("log_format", "json") not in ("json", "kv"):
        raise ConfigError("recorder.log_format: json or kv")
    if rec.get("log_level", "info") not in ("debug", "info", "warning", "error"):
        raise ConfigError("recorder.log_level: debug, info, warning or error")
    return Config(root=root, venues=venues, log_format=rec.get("log_format", "json"),
                  log_level=rec.get("log_level", "info"), **kw)


def load(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a TOML config file."""
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read config {p}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    return parse(doc, base=p.parent.resolve(), env=env)
