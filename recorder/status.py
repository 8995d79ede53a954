"""`recorder status`: the recorder running on a root (writer lease, its /health and /metrics), the rows still in
its durable log, and what the Parquet files hold per table and venue, with their operational events (DuckDB)."""
from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import duckdb

from recorder.startup import lease_holder
from recorder.store import log as store_log

from schemas import TABLES, files

RECORDED = ("raw", "book_events", "book_levels", "trades", "candles", "sessions")
EVENT_KINDS = ("start", "stop", "connect", "disconnect", "gap", "snapshot", "resync", "reject", "rate_limited", "error")


def daemons(root: Path, timeout: float = 2.0) -> list[dict]:
    """Every writer holding its lease on the root: pid, uptime, and its /health and /metrics when reachable."""
    out = []
    for lock in sorted((root / "_state").glob("writer-*.lock")):
        writer = lock.stem.removeprefix("writer-")
        if not lease_holder(root, writer):
            continue
        d: dict = {"writer": writer}
        try:
            d.update(json.loads((root / "_state" / f"writer-{writer}.json").read_text()))
        except (OSError, ValueError):
            out.append(d)  # locked but not announced yet: still starting
            continue
        d["uptime_s"] = time.time() - d.get("started", time.time())
        base = f"http://{d['host']}:{d['port']}"
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=timeout) as r:
                d["health"] = json.loads(r.read())
        except urllib.error.HTTPError as e:  # 503 carries the body too
            d["health"] = json.loads(e.read() or b"{}")
        except (OSError, ValueError) as e:
            d["unreachable"] = f"{base}: {e}"
        try:
            with urllib.request.urlopen(f"{base}/metrics", timeout=timeout) as r:
                d["metrics"] = _scalar_metrics(r.read().decode())
        except (OSError, ValueError):
            pass
        out.append(d)
    return out


def _scalar_metrics(text: str) -> dict[str, float]:
    """The label-less samples of an exposition (queue, backlog, uptime...)."""
    return {m[0]: float(m[1]) for m in re.findall(r"^(booktape_\w+) (\S+)$", text, re.M)}


def unsealed_rows(root: Path) -> dict[str, int]:
    """Rows per table still in the writers' durable log (not in Parquet yet); read-only, a torn tail is skipped."""
    out: dict[str, int] = {}
    for seg_dir in sorted((root / "_log").glob("*")):
        for path in store_log.list_segments(seg_dir):
            try:
                frames, _ = store_log.read_frames(path.read_bytes())
            except OSError:
                continue  # converted and removed meanwhile
            for f in frames:
                out[f.table] = out.get(f.table, 0) + f.batch().num_rows
    return out


def summarize(root: str | Path) -> dict:
    """{"daemons": [...], "unsealed": {table: n}, "rows": {table: {venue: n}}, "events": {venue: {kind: n}},
    "raw_rejected": {venue: n}, "span": {...}, "skipped": [BadFile]}; unreadable and foreign files are skipped
    (schemas.files), and listed."""
    root = Path(root)
    found = files.scan(root, RECORDED)
    con = duckdb.connect()
    out: dict = {"daemons": daemons(root), "unsealed": unsealed_rows(root),
                 "rows": {}, "events": {}, "raw_rejected": {}, "span": {},
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


def render_daemons(summary: dict) -> list[str]:
    """Who records on the root, and its health; the rows still in the log."""
    lines = []
    for d in summary.get("daemons", []):
        if "pid" not in d:
            lines.append(f"recorder starting (writer {d['writer']} holds the lease)")
            continue
        up = int(d["uptime_s"])
        lines.append(f"recorder running: pid {d['pid']}, writer {d['writer']}, version {d.get('version')}, "
                     f"uptime {up // 3600}h{up % 3600 // 60:02d}m{up % 60:02d}s, http://{d['host']}:{d['port']}/")
        h = d.get("health")
        if h is None:
            lines.append(f"  /health unreachable: {d.get('unreachable')}")
        else:
            bad = h.get("faults", []) + h.get("components_failing", [])
            lines.append("  health: OK" if h.get("ok") else f"  health: NOT OK ({', '.join(bad) or 'starting'})")
            store = h.get("components", {}).get("store", {})
            if not store.get("ok", True):
                lines.append(f"  store: {store.get('detail')}")
            for name, f in h.get("feeds", {}).items():
                age = f.get("last_message_age_seconds")
                lag = max((f.get("poll_lag_seconds") or {}).values(), default=None)
                lines.append(f"  {name:<20} {f['state']:<10} last message "
                             f"{'never' if age is None else f'{age:.1f}s ago'}"
                             + ("" if lag is None else f", poll lag {lag:.1f}s")
                             + (f"  ({f['reason']})" if f.get("reason") else ""))
        m = d.get("metrics", {})
        if m:
            lines.append(f"  sink queue {m.get('booktape_queue_rows', 0):.0f} rows, store backlog "
                         f"{m.get('booktape_store_pending_bytes', 0):.0f} bytes")
    if not summary.get("daemons"):
        lines.append("no recorder running on this root")
    unsealed = summary.get("unsealed", {})
    lines.append(f"unsealed log rows: {sum(unsealed.values())}"
                 + (" (" + ", ".join(f"{t} {n}" for t, n in sorted(unsealed.items())) + ")" if unsealed else ""))
    return lines + [""]


def render(summary: dict, root: Path | None = None) -> str:
    """One line per skipped file, the running recorder, then the Parquet summary as plain-text tables."""
    skipped = "".join(f"{b.line(root)}\n" for b in summary.get("skipped", ()))
    head = render_daemons(summary)
    venues = sorted({v for t in summary["rows"].values() for v in t} | set(summary["events"]))
    if not venues:
        return skipped + "\n".join(head + ["no recorded data in Parquet yet"]) + "\n"
    w = max(12, *(len(v) for v in venues))
    lines = head + ["rows per table and venue (Parquet)", f"{'table':<12}" + "".join(f"{v:>{w + 2}}" for v in venues)]
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
