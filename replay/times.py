"""Instants as epoch nanoseconds UTC: read from ISO-8601 text, epoch numbers or datetimes, and written as ISO."""
from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal, InvalidOperation

_FRACTION = re.compile(r"^(.*?[T ]\d{2}:\d{2}:\d{2})\.(\d{1,9})(.*)$")


def parse_ts(text: str) -> int:
    """Epoch ns from ISO-8601 (`2026-11-21T14:03:07.250Z`, `2026-11-21 14:03:07.250`, naive = UTC) or epoch
    seconds / milliseconds / microseconds / nanoseconds (told apart by magnitude); ValueError otherwise."""
    s = text.strip()
    try:
        v = Decimal(s)
    except InvalidOperation:
        v = None
    if v is not None and v.is_finite():
        mag = abs(v)
        unit = 10**9 if mag < 10**11 else 10**6 if mag < 10**14 else 10**3 if mag < 10**17 else 1
        ns = v * unit
        if ns != ns.to_integral_value():
            raise ValueError(f"{text!r} has digits below a nanosecond")
        return int(ns)
    frac = 0
    m = _FRACTION.match(s)
    if m:
        s, frac = m.group(1) + m.group(3), int(m.group(2).ljust(9, "0"))
    try:
        d = dt.datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(f"cannot read {text!r} as a time (ISO-8601 or epoch s/ms/us/ns)") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.timezone.utc)
    return int(d.timestamp()) * 10**9 + frac


def to_ns(value) -> int:
    """Epoch ns from a datetime (naive = UTC), a date, ISO text, an epoch number (s/ms/us/ns by magnitude),
    a numpy datetime64 or a pandas Timestamp."""
    if isinstance(value, bool):
        raise TypeError("a time cannot be a bool")
    if isinstance(value, (int, float, Decimal)):
        return parse_ts(str(value))
    if isinstance(value, str):
        return parse_ts(value)
    if hasattr(value, "value") and hasattr(value, "tz_localize"):  # pandas.Timestamp: exact ns
        return int(value.value) if value.tzinfo else int(value.tz_localize("UTC").value)
    if type(value).__name__ == "datetime64":
        return int(value.astype("datetime64[ns]").astype("int64"))
    if isinstance(value, dt.datetime):
        d = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
        whole = d.replace(microsecond=0)
        return int(whole.timestamp()) * 10**9 + d.microsecond * 1000
    if isinstance(value, dt.date):
        return to_ns(dt.datetime(value.year, value.month, value.day))
    raise TypeError(f"cannot read {value!r} as a time: give a datetime, ISO-8601 text or epoch number")


def iso(ns: int) -> str:
    """ISO-8601 UTC text of an epoch-ns instant, to the nanosecond."""
    d = dt.datetime.fromtimestamp(ns // 10**9, dt.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S") + f".{ns % 10**9:09d}Z"


def to_datetime(ns: int) -> dt.datetime:
    """An aware UTC datetime (microseconds) of an epoch-ns instant."""
    return dt.datetime.fromtimestamp(ns // 10**9, dt.timezone.utc).replace(microsecond=ns % 10**9 // 1000)
