"""BTC-Alpha's current-era alp-ws adapter: diff, trade and control frames, the depth snapshot, the pairs URL."""
import pytest

from recorder.rows import Level, ParseError, Trade
from recorder.venues import btcalpha_alp as alp

#: The one trade frame public code shows (a third-party fetcher's comment, 2023).
TRADE = b'["t",1683703622,274430761,"TRX_USDT","3921.43400516","0.06930900","sell"]'


def test_the_public_trade_frame_is_one_trade_of_its_pair():
    p = alp.parse_ws(TRADE)
    assert p.pair == "TRX_USDT" and p.ts_event == 1683703622_000_000_000
    assert p.trades == [Trade(1683703622_000_000_000, "274430761", "3921.43400516", "0.06930900", "sell")]
    assert alp.parse_ws('["t",1683703622,"274430762","BTC_USDT","1","2","buy"]').trades[0].trade_id == "274430762"


@pytest.mark.parametrize("frame, reason", [
    (b'["t",1683703622,274430761,"TRX_USDT","3921.4","0.069"]', "expected 7 items"),
    (b'["t",1683703622,274430761,"TRX_USDT","3921.4","0.069","short"]', "side"),
    (b'["t",1683703622,-1,"TRX_USDT","3921.4","0.069","sell"]', "trade id"),
    (b'["t",1683703622,274430761,"TRX_USDT","3921.4","-0.069","sell"]', "must be > 0"),
    (b'["t","soon",274430761,"TRX_USDT","3921.4","0.069","sell"]', "time"),
    (b'["t",1683703622,274430761,"TRXUSDT","3921.4","0.069","sell"]', "pair"),
])
def test_malformed_trade_frames_are_refused_with_a_reason(frame, reason):
    with pytest.raises(ParseError, match=reason):
        alp.parse_ws(frame)


def test_diff_and_control_frames():
    d = alp.parse_ws(b'["d",42,"BTC_USDT",[["27715.26","-0.176"]],[["27879.2","0.136"]]]')
    assert (d.pair, d.seq, d.changes) == ("BTC_USDT", 42, [("bid", "27715.26", "-0.176", None),
                                                          ("ask", "27879.2", "0.136", None)])
    assert alp.parse_ws(b'["subscribed","diff.BTC_USDT"]') == "subscribed"
    assert alp.parse_ws(b'{"type":"error"}') == "error"


def test_subscriptions_snapshot_and_pairs_urls():
    assert alp.subscribe("btc_usdt") == '["subscribe","diff.BTC_USDT"]'
    assert alp.TRADES_SUBSCRIBE == '["subscribe","trade.*"]'
    assert alp.snapshot_url(alp.REST_BASE, "BTC_USDT") == \
        "https://btc-alpha.com/api/web/finance/exchange?pair=BTC_USDT&depth=true"
    # the venue lists its pairs on the v1 API beside alp-ws's api/web/ (ccxt and the alp-ws fetcher read it there)
    assert alp.pairs_url(alp.REST_BASE) == "https://btc-alpha.com/api/v1/pairs/"
    assert alp.pairs_url("http://127.0.0.1:8080/api/web") == "http://127.0.0.1:8080/api/v1/pairs/"


def test_depth_snapshot():
    parsed, update_id = alp.parse_snapshot(b'{"depth":{"symbol":"BTC_USDT","bids":[["2","1.5"],["1","1"]],'
                                           b'"asks":[["3","0.5"]],"update_id":7}}', "BTC_USDT")
    assert update_id == 7 and parsed.levels == [Level("bid", 0, "2", "1.5"), Level("bid", 1, "1", "1"),
                                                Level("ask", 0, "3", "0.5")]
