"""Request signing for every venue, as their documents specify; used by collectors and the simulator alike."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Mapping
from urllib.parse import urlencode


def _hex_hmac(secret: str, message: str | bytes, digest) -> str:
    msg = message.encode() if isinstance(message, str) else message
    return hmac.new(secret.encode(), msg, digest).hexdigest()


def btcalpha_sign(key: str, secret: str, data: Mapping[str, object]) -> str:
    """BTC-Alpha / bitexbit v1 X-SIGN: HMAC-SHA256(secret, key + urlencode(sorted(data)))."""
    return _hex_hmac(secret, key + urlencode(sorted(data.items(), key=lambda kv: kv[0])), hashlib.sha256)


def btcalpha_headers(key: str, secret: str, data: Mapping[str, object], nonce_ms: int) -> dict[str, str]:
    """X-KEY / X-SIGN / X-NONCE headers for a BTC-Alpha or bitexbit v1 private call."""
    return {"X-KEY": key, "X-SIGN": btcalpha_sign(key, secret, data), "X-NONCE": str(nonce_ms)}


def bitexbit_gateway_headers(key: str, secret: str, data: Mapping[str, object], nonce_ms: int) -> dict[str, str]:
    """bitexbit gateway (seed version): same signature as v1 under X-API-Key / X-Signature / X-Nonce."""
    return {"X-API-Key": key, "X-Signature": btcalpha_sign(key, secret, data), "X-Nonce": str(nonce_ms)}


def bitopro_payload(body: Mapping[str, object]) -> str:
    """BitoPro X-BITOPRO-PAYLOAD: base64 of the compact JSON body (padding kept)."""
    return base64.b64encode(json.dumps(body, separators=(",", ":")).encode()).decode()


def bitopro_signature(secret: str, payload: str) -> str:
    """BitoPro X-BITOPRO-SIGNATURE: hex HMAC-SHA384 of the base64 payload."""
    return _hex_hmac(secret, payload, hashlib.sha384)


def bitopro_headers(key: str, secret: str, body: Mapping[str, object]) -> dict[str, str]:
    """The three X-BITOPRO-* headers; for GET the body is {"identity": email, "nonce": ms}."""
    payload = bitopro_payload(body)
    return {
        "X-BITOPRO-APIKEY": key,
        "X-BITOPRO-PAYLOAD": payload,
        "X-BITOPRO-SIGNATURE": bitopro_signature(secret, payload),
    }


def bitbay_body(method: str, moment: int, params: Mapping[str, object]) -> str:
    """BitBay Trading API form body: method and moment first, then params (PHP http_build_query order)."""
    return urlencode({"method": method, "moment": moment, **params})


def bitbay_hash(secret: str, body: str) -> str:
    """BitBay API-Hash: hex HMAC-SHA512(secret, urlencoded POST body)."""
    return _hex_hmac(secret, body, hashlib.sha512)
