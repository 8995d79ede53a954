"""Real-venue behaviours the simulator now reproduces, recorded end to end (simulator -> recorder -> dataset)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_e2e_sim import Run, sql, truth  # noqa: E402


def _only(venue: str, channels: list[str]):
    def edit(doc):
        doc["venues"] = {venue: {**doc["venues"][venue], "channels": channels}}
        doc["venues"][venue].pop("api_key_env", None)
        doc["venues"][venue].pop("api_secret_env", None)
    return edit


@pytest.fixture(scope="module")
def bitbay_trades(tmp_path_factory):
    return Run(tmp_path_factory.mktemp("bitbay_trades"), seconds=5.0, rate=8.0,
               doc_edit=_only("bitbay", ["trades"])).go()


def test_bitbay_first_trades_poll_starts_from_the_newest_and_pages_forward(bitbay_trades):
    """trades.json without since is the venue's oldest page (2014 on the real one): the first poll must ask
    sort=desc, then page forward from the newest with since=<tid>, every trade once."""
    run = bitbay_trades
    for pair in ("BTC_USD", "ETH_BTC"):
        ids = sorted(int(t) for (t,) in sql(run.root, f"""SELECT trade_id FROM
            read_parquet('$R/trades/exchange=bitbay/pair={pair}/**/*.parquet')"""))
        made = sorted(e["trade_id"] for e in truth(run.tdir, "events")
                      if e["venue"] == "bitbay" and e["pair"] == pair and e["action"] == "F")
        first_poll = min(ids)
        assert len(made) > 120 and first_poll > made[0] + 50  # not the oldest page
        assert ids == sorted(set(ids)) and ids == [t for t in made if first_poll <= t <= ids[-1]]
        assert ids[-1] == made[-1]  # caught up with the venue
    urls = [u for (u,) in sql(run.root, """SELECT request FROM read_parquet('$R/raw/**/*.parquet')
        WHERE request LIKE '%trades.json%' ORDER BY seq""")]
    assert "sort=desc" in urls[0] and "since" not in urls[0]
    assert all("since=" in u and "sort=asc" in u for u in urls[2:])
