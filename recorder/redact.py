"""Credential redaction for everything the recorder writes: logs, sessions details, raw payloads and reasons.

A configured credential value is replaced by *** in its plain form and in the forms a venue or a client may
echo it in (JSON-escaped, URL-encoded), before the text is written anywhere (so Parquet column statistics,
which copy values, never see it either).
"""
from __future__ import annotations

import json
import urllib.parse
from typing import Iterable

MASK = "***"


class Redactor:
    """Replaces every known secret value with *** (str and bytes); falsy when there is nothing to redact."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        for s in secrets:
            if s:
                escaped = json.dumps(s)[1:-1]
                forms |= {s, escaped, escaped.replace("/", "\\/"),  # PHP's json_encode escapes "/"
                          urllib.parse.quote(s, safe=""), urllib.parse.quote_plus(s)}
        self.secrets = sorted(forms, key=len, reverse=True)
        self._bytes = [(s.encode(), MASK.encode()) for s in self.secrets]

    def __bool__(self) -> bool:
        return bool(self.secrets)

    def __call__(self, text: str) -> str:
        for s in self.secrets:
            if s in text:
                text = text.replace(s, MASK)
        return text

    def bytes(self, data: bytes) -> bytes:
        """`data` with every secret form replaced (the same object when none occurs)."""
        for s, mask in self._bytes:
            if s in data:
                data = data.replace(s, mask)
        return data

    def hit(self, data: bytes) -> bool:
        """True when `data` holds a secret form."""
        return any(s in data for s, _ in self._bytes)
