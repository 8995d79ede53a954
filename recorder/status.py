"""`recorder status`: what a dataset root holds, per table and venue, and its operational events (DuckDB)."""
from __future__ import annotations

from pathlib import Path

import duckdb

from schemas import TABLES, files

RECORDED = ("raw", "book_events", "book_levels", "trades", "candles", "sessions")
EVENT_KINDS = ("start", "stop", "connect", "disconnect", "gap", "snapshot", "resync", "reject", "rate_limited", "error")


def summarize(root: str | Path) -> dict:
    """{"rows": {table: {venue: n}}, "events": {venue: {kind: n}}, "raw_rejected": {venue: n}, "span": {...},
    "skipped": [BadFile]}; unreadable and foreign files are skipped (schemas.files), and listed."""
    root = Path(root)
    found = files.scan(root, RECORDED)
    con = duckdb.connect()
    out: dict = {"rows": {}, "events": {}, "raw_rejected": {}, "span": {},
                 "skipped": [b for b in found.bad if b.kind in ("unreadable", "foreign")]}
    try:
        for table in RECORDED:
            paths = found.good[table]
            if not paths:
                continue
            listed = ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths)
            rel = f"read_parquet([{listed}], hive_partitioning=true, union_by_name=true)"
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


def render(summary: dict, root: Path | None = None) -> str:
    """The summary as plain-text tables, after one line per skipped file."""
    skipped = "".join(f"{b.line(root)}\n" for b in summary.get("skipped", ()))
    venues = sorted({v for t in summary["rows"].values() for v in t} | set(summary["events"]))
    if not venues:
        return skipped + "no recorded data\n"
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
    return skipped + "\n".join(lines) + "\n"
