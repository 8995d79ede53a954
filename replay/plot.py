"""PNG of a pair over a range: mid with bid/ask and trades, the spread, and a depth heatmap (matplotlib: the
optional `plot` extra). Prices are plain numbers (no axis offset), the three panels share one UTC time axis
clipped to the data, and stretches where the book is not known exact (gaps) are shaded on every panel."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from replay.book import HourResult
from replay.times import iso

#: Price rows of the heatmap at most (fewer when the shown levels have fewer distinct prices).
HEATMAP_ROWS = 160
GAP_STYLE = dict(color="0.55", alpha=0.25, lw=0)


class MissingMatplotlib(RuntimeError):
    """matplotlib is not installed."""


def require() -> None:
    """Raise MissingMatplotlib with the install hint when matplotlib is absent."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MissingMatplotlib("plot needs matplotlib: pip install 'booktape[plot]'") from None


def _concat(tables: list[pa.Table | None], tcol: str, start: int | None, end: int | None) -> pa.Table | None:
    """Tables of several hours joined and cut to [start, end)."""
    tabs = [t for t in tables if t is not None and t.num_rows]
    if not tabs:
        return None
    tab = pa.concat_tables(tabs)
    t = tab.column(tcol).cast(pa.int64()).to_numpy()
    keep = np.ones(len(t), bool) if start is None else t >= start
    if end is not None:
        keep &= t < end
    return tab.filter(pa.array(keep))


def _floats(tab: pa.Table, name: str) -> np.ndarray:
    return tab.column(name).cast(pa.float64()).to_numpy(zero_copy_only=False)


def _ns(tab: pa.Table, name: str) -> np.ndarray:
    return tab.column(name).cast(pa.int64()).to_numpy()


def _dates(ns: np.ndarray) -> np.ndarray:
    return ns.astype("datetime64[ns]")


def gap_spans(t: np.ndarray, gap: np.ndarray, t_end: int) -> list[tuple[int, int]]:
    """(start, end) ns of each run of gap rows: from its first row to the next exact row (or t_end)."""
    if not len(t):
        return []
    edge = np.diff(np.r_[0, gap.astype(np.int8), 0])
    starts, stops = np.nonzero(edge == 1)[0], np.nonzero(edge == -1)[0]
    return [(int(t[a]), int(t[b]) if b < len(t) else t_end) for a, b in zip(starts, stops)]


def heatmap(depth: pa.Table, rows: int = HEATMAP_ROWS) -> tuple[np.ndarray, np.ndarray, np.ma.MaskedArray]:
    """(time edges ns, price edges, amount grid) of depth samples: one column per sample time, price rows on a
    regular grid covering the shown levels (a cell holds the amount resting in its price range)."""
    ts, price, amount = _ns(depth, "ts"), _floats(depth, "price"), _floats(depth, "amount")
    times = np.unique(ts)
    if len(times) > 1:
        mid = (times[1:] + times[:-1]) // 2
        step = int(np.median(np.diff(times)))
        t_edges = np.r_[times[0] - step // 2, mid, times[-1] + step // 2]
    else:
        t_edges = np.array([times[0] - 5 * 10**8, times[0] + 5 * 10**8])
    uniq = np.unique(price)
    lo, hi = float(uniq[0]), float(uniq[-1])
    # rows as fine as one sample's levels are apart on average (its price span over its level count), so a
    # book fills neighbouring cells instead of thin lines; coarser when that would exceed `rows`
    starts = np.r_[0, np.nonzero(np.diff(ts))[0] + 1]
    counts = np.diff(np.r_[starts, len(ts)])
    spans = np.maximum.reduceat(price, starts) - np.minimum.reduceat(price, starts)
    many = counts > 1
    step = float(np.median(spans[many] / (counts[many] - 1))) if many.any() else max(hi - lo, 1.0)
    n = int(min(rows, max(1, round((hi - lo) / step) + 1))) if step > 0 else 1
    if hi <= lo:
        lo, hi = lo - step / 2, hi + step / 2
    half = (hi - lo) / max(n - 1, 1) / 2
    p_edges = np.linspace(lo - half, hi + half, n + 1)
    col = np.searchsorted(times, ts)
    row = np.clip(np.searchsorted(p_edges, price, "right") - 1, 0, n - 1)
    grid = np.zeros((n, len(times)))
    np.add.at(grid, (row, col), amount)
    return t_edges, p_edges, np.ma.masked_less_equal(grid, 0)


def plot(results: list[HourResult], out: Path, title: str, start: int | None, end: int | None,
         trades: pa.Table | None = None) -> None:
    """Write the PNG of figure()."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = figure(results, title, start, end, trades)
    fig.savefig(out)
    plt.close(fig)


def figure(results: list[HourResult], title: str, start: int | None, end: int | None,
           trades: pa.Table | None = None):
    """The figure: mid, bid/ask and trades (top), spread (middle), depth heatmap with colour bar (bottom)."""
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Patch

    bbo = _concat([r.bbo for r in results], "ts_recv", start, end)
    depth = _concat([r.depth for r in results], "ts", start, end)
    trades = _concat([trades], "ts_recv", start, end) if trades is not None else None
    fig = plt.figure(figsize=(13, 9), dpi=100)
    gs = fig.add_gridspec(3, 2, height_ratios=[3, 1.2, 3], width_ratios=[60, 1], hspace=0.08, wspace=0.02,
                          left=0.08, right=0.93, top=0.93, bottom=0.08)
    ax_mid = fig.add_subplot(gs[0, 0])
    ax_spread = fig.add_subplot(gs[1, 0], sharex=ax_mid)
    ax_depth = fig.add_subplot(gs[2, 0], sharex=ax_mid)
    cax = fig.add_subplot(gs[2, 1])
    for cell in (gs[0, 1], gs[1, 1]):
        fig.add_subplot(cell).set_axis_off()

    # the data's range: first to last book event (depth samples past the last event are not data)
    events = _ns(bbo, "ts_recv") if bbo is not None else _ns(depth, "ts") if depth is not None else np.zeros(0)
    if not len(events):
        for ax in (ax_mid, ax_spread, ax_depth):
            ax.text(0.5, 0.5, "no book data in the range", ha="center", va="center", transform=ax.transAxes)
        cax.set_axis_off()
        fig.suptitle(title)
        return fig
    t0, t1 = int(events[0]), int(events[-1])
    if t1 <= t0:
        t1 = t0 + 10**9
    if depth is not None:
        depth = _concat([depth], "ts", t0, t1 + 1)
    gaps: list[tuple[int, int]] = []
    if bbo is not None:
        t = _ns(bbo, "ts_recv")
        bid, ask = _floats(bbo, "bid_price"), _floats(bbo, "ask_price")
        ax_mid.step(_dates(t), bid, where="post", lw=0.7, color="tab:blue", alpha=0.6, label="best bid")
        ax_mid.step(_dates(t), ask, where="post", lw=0.7, color="tab:orange", alpha=0.6, label="best ask")
        ax_mid.step(_dates(t), (bid + ask) / 2, where="post", lw=1.2, color="black", label="mid")
        ax_spread.step(_dates(t), ask - bid, where="post", lw=0.9, color="tab:purple", label="spread (ask - bid)")
        gaps = gap_spans(t, bbo.column("gap").to_numpy(zero_copy_only=False), t1)
    if trades is not None and trades.num_rows:
        tt, tp = _ns(trades, "ts_recv"), _floats(trades, "price")
        side = np.array(trades.column("taker_side").to_pylist(), dtype=object)
        for name, colour, marker in (("buy", "tab:green", "^"), ("sell", "tab:red", "v")):
            m = side == name
            if m.any():
                ax_mid.scatter(_dates(tt[m]), tp[m], s=22, marker=marker, color=colour, edgecolor="black",
                               lw=0.3, zorder=3, label=f"trade, {name}er aggressor")
        m = (side != "buy") & (side != "sell")
        if m.any():
            ax_mid.scatter(_dates(tt[m]), tp[m], s=14, marker="o", color="0.4", zorder=3, label="trade, side unknown")
    if depth is not None and depth.num_rows:
        te, pe, grid = heatmap(depth)
        vals = grid.compressed()
        norm = LogNorm(vmin=max(float(np.percentile(vals, 2)), 1e-12), vmax=max(float(np.percentile(vals, 99.5)),
                                                                                  float(np.percentile(vals, 2)) * 10))
        mesh = ax_depth.pcolormesh(_dates(te), pe, grid, cmap="viridis", norm=norm, shading="flat")
        fig.colorbar(mesh, cax=cax, label="amount resting at price (base, log scale)", extend="both")
        if bbo is not None:
            ax_depth.step(_dates(_ns(bbo, "ts_recv")), (bid + ask) / 2, where="post", lw=0.9, color="red",
                          alpha=0.9, label="mid")
            ax_depth.legend(loc="upper left", fontsize=8, framealpha=0.7)
        gaps += gap_spans(_ns(depth, "ts"), depth.column("gap").to_numpy(zero_copy_only=False), t1)
    else:
        cax.set_axis_off()
    for a, b in gaps:
        for ax in (ax_mid, ax_spread, ax_depth):
            ax.axvspan(_dates(np.array([a]))[0], _dates(np.array([b]))[0], **GAP_STYLE)
    handles, labels = ax_mid.get_legend_handles_labels()
    if gaps:
        handles.append(Patch(**GAP_STYLE, label="gap: book not known exact"))
    ax_mid.legend(handles=handles, loc="upper left", fontsize=8, ncol=3, framealpha=0.8)
    ax_spread.legend(loc="upper left", fontsize=8, framealpha=0.8)
    ax_mid.set_ylabel("price")
    ax_spread.set_ylabel("spread")
    ax_depth.set_ylabel("price")
    for ax in (ax_mid, ax_spread, ax_depth):
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
        ax.grid(True, lw=0.3, alpha=0.5)
    ax_spread.set_ylim(bottom=0)
    ax_mid.set_xlim(_dates(np.array([t0]))[0], _dates(np.array([t1]))[0])
    loc = mdates.AutoDateLocator(tz="UTC")
    ax_depth.xaxis.set_major_locator(loc)
    ax_depth.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc, tz="UTC"))
    ax_depth.set_xlabel("time (UTC)")
    ax_depth.set_facecolor("0.94")  # empty cells: no order at that price
    for ax in (ax_mid, ax_spread):
        plt.setp(ax.get_xticklabels(), visible=False)
        ax.xaxis.offsetText.set_visible(False)
    fig.suptitle(f"{title}   {iso(t0)[:23]}Z .. {iso(t1)[:23]}Z (UTC)")
    return fig
