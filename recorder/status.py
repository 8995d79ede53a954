"""`recorder status`: what a dataset root holds, per table and venue, and its operational events (DuckDB)."""
from __future__ import annotations

from pathlib import Path

import duckdb

from schemas import TABLES

RECORDED = ("raw", "book_events", "book_levels", "trades", "candles", "sessions")
EVENT_KINDS = ("start", "stop", "connect", "disconnect", "gap", "snapshot", "resync", "reject", "rate_limited", "error")


def _glob(root: Path, table: str) -> str | None:
    d = root / table
    return str(d / "**" / "*.parquet") if d.exists() and any(d.rglob("*.parquet")) else None


def summarize(root: str | Path) -> dict:
    """{"rows": {table: {venue: n}}, "events": {venue: {kind: n}}, "raw_rejected": {venue: n}, "span": {...}}."""
    root = Path(root)
    con = duckdb.connect()
    out: dict = {"rows": {}, "events": {}, "raw_rejected": {}, "span": {}}
    try:
        for table in RECORDED:
            g = _glob(root, table)
            if g is None:
                continue
            rel = f"read_parquet('{g}', hive_partitioning=true)"
            out["rows"][table] = dict(con.execute(
                f"SELECT exchange, count(*) FROM {rel} GROUP BY exchange ORDER BY exchange").fetchall())
            tcol = TABLES[table].time_column
            for venue, lo, hi in con.execute(
                    f"SELECT exchange, CAST(min({tcol}) AS VARCHAR), CAST(max({tcol}) AS VARCHAR) FROM {rel} GROUP BY exchange").fetchall():
                span = out["span"].setdefault(venue, [lo, hi])
                span[0], span[1] = min(span[0], lo), max(span[1], hi)
            if table == "raw":
                out["raw_rejected"] = dict(con.execute(
                    f"SELECT exchange, count(*) FROM {rel} WHERE status = 'rejected' GROUP BY exchange").fetchall())
            if table == "sessions":
                for venue, kind, n in con.execute(
                        f"SELECT exchange, kind, count(*) FROM {rel} GROUP BY ALL ORDER BY ALL").fetchall():
                    out["events"].setdefault(venue, {})[kind] = n
    finally:
        con.close()
    return out


def render(summary: dict) -> str:
    """The summary as two plain-text tables."""
    venues = sorted({v for t in summary["rows"].values() for v in t} | set(summary["events"]))
    if not venues:
        return "no recorded data\n"
    w = max(12, *(len(v) for v in venues))
    lines = ["rows per table and venue", f"{'table':<12}" + "".join(f"{v:>{w + 2}}" for v in venues)]
    for table in RECORDED:
        counts = summary["rows"].get(table, {})
        lines.append(f"{table:<12}" + "".join(f"{counts.get(v, 0):>{w + 2}}" for v in venues))
    rej = summary["raw_rejected"]
    lines.append(f"{'raw rejected':<12}" + "".join(f"{rej.get(v, 0):>{w + 2}}" for v in venues))
    lines += ["", "sessions events per venue", f"{'kind':<12}" + "".join(f"{v:>{w + 2}}" for v in venues)]
    for kind in EVENT_KINDS:
        lines.append(f"{kind:<12}" + "".join(f"{summary['events'].get(v, {}).get(kind, 0):>{w + 2}}" for v in venues))
    lines += ["", "time span (our clock) per venue"]
    for v in venues:
        if v in summary["span"]:
            lo, hi = summary["span"][v]
            lines.append(f"{v}: {lo} .. {hi}")
    return "\n".join(lines) + "\n"
