"""`replay plot`: plain price axes, aligned panels, a spread legend, a dense heatmap with a colour bar,
trades by aggressor side, gaps shaded, and a UTC time axis clipped to the data."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from replay import book as B
from replay import outputs
from replay_util import T0, events_table, rows_table, synth_l3
from test_replay_cli import EX, H, PAIR, _write_dataset

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
from matplotlib.collections import QuadMesh  # noqa: E402

from replay import plot as P  # noqa: E402


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("plot")
    _write_dataset(root, events_table(synth_l3(20_000, seed=5, hours=2)), 1, 4)  # a disconnect in hour 2
    res = outputs.run_hours(str(root), EX, PAIR, [T0, T0 + H], bbo=True, depth=B.Depth(20, 10**9), write=False)
    return res


def trades_for(res) -> pa.Table:
    bbo = res[0].bbo
    t = bbo.column("ts_recv").cast(pa.int64()).to_numpy()[::50]
    p = bbo.column("ask_price").to_pylist()[::50]
    return rows_table("trades", [dict(ts_recv=int(x), ts_event=int(x), seq=i, session=1, trade_id=str(i), price=str(v),
                                      amount="1", taker_side=("buy", "sell")[i % 2], source="socket")
                                 for i, (x, v) in enumerate(zip(t, p)) if v is not None])


def test_the_figure_a_trader_would_keep(results):
    trades = trades_for(results)
    fig = P.figure(results, "btcalpha BTC_USD", None, None, trades)
    ax_mid, ax_spread, ax_depth, cax = fig.axes[:4]
    # plain price axes: no offset like +6e4, no scientific notation
    fig.canvas.draw()
    for ax in (ax_mid, ax_spread, ax_depth):
        assert ax.yaxis.get_offset_text().get_text() == ""
        assert all("e" not in t.get_text() for t in ax.get_yticklabels())
    # panels aligned: the same left and right edges
    boxes = [ax.get_position() for ax in (ax_mid, ax_spread, ax_depth)]
    assert len({round(b.x0, 6) for b in boxes}) == 1 and len({round(b.x1, 6) for b in boxes}) == 1
    # spread has a legend entry, trades are there by side
    assert any("spread" in t.get_text() for t in ax_spread.get_legend().get_texts())
    labels = [t.get_text() for t in ax_mid.get_legend().get_texts()]
    assert "trade, buyer aggressor" in labels and "trade, seller aggressor" in labels
    assert "gap: book not known exact" in labels
    # gaps shaded on every panel: the disconnect in hour 2 and each hour's start before its snapshot
    for ax in (ax_mid, ax_spread, ax_depth):
        assert len(ax.patches) >= 1
    # a colour bar with a log scale, and a heatmap whose cells between each sample's outer levels are mostly full
    assert "log scale" in cax.get_ylabel()
    mesh = next(c for c in ax_depth.collections if isinstance(c, QuadMesh))
    grid = np.ma.getmaskarray(mesh.get_array()).reshape(mesh.get_coordinates().shape[0] - 1, -1)
    filled = []
    for col in (~grid).T:
        rows = np.nonzero(col)[0]
        if len(rows) > 1:
            filled.append(col[rows[0]:rows[-1] + 1].mean())
    assert np.median(filled) > 0.5, np.median(filled)
    # the time axis is clipped to the data (first to last book event), in UTC
    bbo = pa.concat_tables([r.bbo for r in results])
    t = bbo.column("ts_recv").cast(pa.int64()).to_numpy()
    x0, x1 = (matplotlib.dates.num2date(v) for v in ax_mid.get_xlim())
    assert abs(x0.timestamp() - t[0] / 1e9) < 1e-3 and abs(x1.timestamp() - t[-1] / 1e9) < 1e-3
    assert ax_depth.get_xlabel() == "time (UTC)"
    matplotlib.pyplot.close(fig)


def test_range_inside_the_data_is_the_axis(results, tmp_path):
    lo, hi = T0 + 600 * 10**9, T0 + 1200 * 10**9
    fig = P.figure(results, "x", lo, hi)
    x0, x1 = (matplotlib.dates.num2date(v).timestamp() for v in fig.axes[0].get_xlim())
    assert lo / 1e9 <= x0 < lo / 1e9 + 5 and hi / 1e9 - 5 < x1 < hi / 1e9
    matplotlib.pyplot.close(fig)
    P.plot(results, tmp_path / "p.png", "x", lo, hi)
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
