"""PNG of mid, spread and a depth heatmap from replayed hours (matplotlib: the optional `plot` extra)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from replay.book import HourResult


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


def plot(results: list[HourResult], out: Path, title: str, start: int | None, end: int | None) -> None:
    """Write the PNG: mid and spread over time (top), depth amount by price and time (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bbo = _concat([r.bbo for r in results], "ts_recv", start, end)
    depth = _concat([r.depth for r in results], "ts", start, end)
    fig, (ax1, ax3) = plt.subplots(2, 1, figsize=(12, 8), sharex=True)
    if bbo is not None:
        t = bbo.column("ts_recv").cast(pa.int64()).to_numpy().astype("datetime64[ns]")
        bid = bbo.column("bid_price").cast(pa.float64()).to_numpy(zero_copy_only=False)
        ask = bbo.column("ask_price").cast(pa.float64()).to_numpy(zero_copy_only=False)
        ax1.step(t, (bid + ask) / 2, where="post", lw=0.8, label="mid")
        ax2 = ax1.twinx()
        ax2.step(t, ask - bid, where="post", lw=0.6, color="tab:red", label="spread")
        ax2.set_ylabel("spread")
        ax1.legend(loc="upper left")
    ax1.set_ylabel("mid")
    ax1.set_title(title)
    if depth is not None:
        t = depth.column("ts").cast(pa.int64()).to_numpy().astype("datetime64[ns]")
        price = depth.column("price").cast(pa.float64()).to_numpy(zero_copy_only=False)
        amount = depth.column("amount").cast(pa.float64()).to_numpy(zero_copy_only=False)
        sc = ax3.scatter(t, price, c=np.log10(np.maximum(amount, 1e-18)), s=3, marker="s", cmap="viridis", lw=0)
        fig.colorbar(sc, ax=ax3, label="log10 amount")
    ax3.set_ylabel("price")
    fig.autofmt_xdate()
    fig.savefig(out, dpi=100)
    plt.close(fig)
