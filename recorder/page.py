"""The status page at `/`: one server-rendered HTML document that refreshes itself (no front-end framework).

`Window` keeps a sample of the per-feed counters every few seconds for the last hour, so the page can show
messages per second and the reconnects, gaps and rejects of the last hour; `render` is pure (dict in, HTML out).
"""
from __future__ import annotations

import html
import time
from collections import deque
from typing import Callable

from recorder.metrics import Metrics

WINDOW_COUNTERS = ("messages", "reconnects", "gaps", "rejects")
REFRESH_SECONDS = 5


class Window:
    """Counter samples over the last hour (bounded: one sample per `every` seconds)."""

    def __init__(self, metrics: Metrics, every: float = 10.0, span: float = 3600.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.metrics, self.every, self.span, self._clock = metrics, every, span, clock
        self.samples: deque[tuple[float, dict]] = deque(maxlen=int(span / every) + 2)
        self.sample()

    def sample(self) -> None:
        """Take one sample now (the daemon's page task calls this every `every` seconds)."""
        c = self.metrics.counters
        self.samples.append((self._clock(), {k: v for k, v in c.items() if k[0] in WINDOW_COUNTERS}))

    def rate(self, name: str, feed: str, over: float = 60.0) -> float:
        """Per-second rate of a counter over about the last `over` seconds."""
        now = self._clock()
        t0, old = next(((t, s) for t, s in self.samples if now - t <= over), self.samples[-1])
        dt = now - t0
        cur = self.metrics.counters.get((name, feed, ""), 0)
        return (cur - old.get((name, feed, ""), 0)) / dt if dt > 0 else 0.0

    def last_hour(self, name: str, feed: str) -> int:
        """Increase of a counter over the last hour (since start when younger)."""
        now = self._clock()
        _, old = next(((t, s) for t, s in self.samples if now - t <= self.span), self.samples[-1])
        return self.metrics.counters.get((name, feed, ""), 0) - old.get((name, feed, ""), 0)


def _num(v: float | None, unit: str = "") -> str:
    if v is None:
        return "–"
    return (f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.1f}") + unit


def _bytes(n: float | None) -> str:
    if n is None:
        return "–"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return ""


def _duration(s: float) -> str:
    s = int(s)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d " if d else "") + f"{h:02d}:{m:02d}:{s:02d}"


CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:0 0 .2em} h2{font-size:1.05em;margin:1.4em 0 .4em}
table{border-collapse:collapse;background:#fff} th,td{border:1px solid #ddd;padding:.3em .6em;text-align:right;white-space:nowrap}
th{background:#f0f0f0} td.l,th.l{text-align:left} td.why{white-space:normal;min-width:8em;max-width:32em}
.state{font-weight:600;border-radius:3px;padding:.1em .5em;color:#fff}
.live{background:#2e7d32}.connecting{background:#1565c0}.stale{background:#ef6c00}
.failing{background:#c62828}.stopped{background:#616161}
.verdict{display:inline-block;font-weight:700;padding:.2em .7em;border-radius:3px;color:#fff}
.ok{background:#2e7d32}.bad{background:#c62828} .muted{color:#777}
"""


def render(d: dict) -> str:
    """The page for one snapshot of the daemon (see Daemon.page_data for the keys)."""
    e = html.escape
    verdict = ('<span class="verdict ok">recording</span>' if d["ok"] else
               f'<span class="verdict bad">NOT OK: {e(", ".join(d["faults"] + d["components_failing"]) or "starting")}'
               '</span>')
    rows = []
    for f in d["feeds"]:
        rows.append(
            f'<tr data-feed="{e(f["name"])}" data-state="{e(f["state"])}"><td class="l">{e(f["venue"])}</td>'
            f'<td class="l">{e(f["feed"])}</td><td class="l why"><span class="state {e(f["state"])}">{e(f["state"])}'
            f'</span> <span class="muted">{e(f["reason"])}</span></td><td>{_num(f["msg_rate"])}</td>'
            f'<td>{_num(f["age"], " s")}</td><td>{_num(f["lag"], " s")}</td><td>{f["reconnects_1h"]}</td>'
            f'<td>{f["gaps_1h"]}</td><td>{f["rejects_1h"]}</td></tr>')
    store = d["store"]
    store_rows = "".join(f'<tr><td class="l">{e(k)}</td><td>{e(str(v))}</td></tr>' for k, v in store.items())
    table_rows = "".join(f'<tr><td class="l">{e(t)}</td><td>{n:,}</td></tr>' for t, n in d["rows"].items())
    disk = d["disk"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<title>booktape recorder – {"ok" if d["ok"] else "NOT OK"}</title><style>{CSS}</style></head>
<body>
<h1>booktape recorder {e(d["version"])}</h1>
<p>{verdict} <span id="uptime">uptime {_duration(d["uptime_s"])}</span> · pid {d["pid"]} · root <code>{e(d["root"])}</code>
 · kernels {"loaded" if d["ready"] else "NOT loaded yet"} · refreshes every {REFRESH_SECONDS} s</p>
<h2>Feeds</h2>
<table id="feeds"><tr><th class="l">venue</th><th class="l">feed</th><th class="l">state</th><th>msg/s</th>
<th>last message</th><th>lag</th><th>reconnects 1 h</th><th>gaps 1 h</th><th>rejects 1 h</th></tr>
{"".join(rows)}</table>
<h2>Store</h2>
<table id="store">{store_rows}</table>
<h2>Rows recorded since start</h2>
<table id="rows"><tr><th class="l">table</th><th>rows</th></tr>{table_rows}</table>
<h2>Disk</h2>
<table id="disk"><tr><td class="l">used by the root</td><td>{_bytes(disk.get("used_bytes"))}</td></tr>
<tr><td class="l">free on its file system</td><td>{_bytes(disk.get("free_bytes"))}</td></tr>
<tr><td class="l">file system size</td><td>{_bytes(disk.get("total_bytes"))}</td></tr></table>
</body></html>
"""
