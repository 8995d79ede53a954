"""Signing against the published BitoPro vector and the worked examples in shared/exchanges.md."""
import base64
import json

from recorder.venues import signing


def test_bitopro_published_vector():
    payload = "eyJpZGVudGl0eSI6ImhjbWxpbmpAZ21haWwuY29tIiwibm9uY2UiOjE1NTQzODA5MDkxMzF9"
    assert signing.bitopro_signature("bitopro", payload) == (
        "01a85a9083db47c20da7196380598f3feacd3c76a9077aaf7ffaf08ce0091abf65b61778792607b010921adfe1c2941a"
    )
    assert json.loads(base64.b64decode(payload)) == {"identity": "hcmlinj@gmail.com", "nonce": 1554380909131}


def test_bitopro_payload_matches_readme_examples():
    get = {"identity": "support@bitoex.com", "nonce": 1554380909131}
    assert signing.bitopro_payload(get) == (
        "eyJpZGVudGl0eSI6InN1cHBvcnRAYml0b2V4LmNvbSIsIm5vbmNlIjoxNTU0MzgwOTA5MTMxfQ=="
    )
    post = {"action": "BUY", "type": "limit", "price": "1.123456789", "amount": "666", "timestamp": 1554380909131}
    assert signing.bitopro_payload(post) == (
        "eyJhY3Rpb24iOiJCVVkiLCJ0eXBlIjoibGltaXQiLCJwcmljZSI6IjEuMTIzNDU2Nzg5IiwiYW1vdW50IjoiNjY2IiwidGltZXN0YW1wIjoxNTU0MzgwOTA5MTMxfQ=="
    )


def test_btcalpha_worked_example():
    data = {"type": "buy", "pair": "BTC_USD", "amount": "0.0001", "price": "0.1"}
    assert signing.btcalpha_sign("test-key", "test-secret", data) == (
        "61f3320f7d4cf06449a496771462c1f4e4f1511f3aabc788a07194b92503087a"
    )
    headers = signing.btcalpha_headers("test-key", "test-secret", data, 1700000000000)
    assert headers["X-NONCE"] == "1700000000000" and headers["X-KEY"] == "test-key"
    gateway = signing.bitexbit_gateway_headers("test-key", "test-secret", data, 1)
    assert gateway["X-Signature"] == headers["X-SIGN"]


def test_bitbay_worked_example():
    body = signing.bitbay_body("orderbook", 1500000000, {"order_currency": "BTC", "payment_currency": "PLN"})
    assert body == "method=orderbook&moment=1500000000&order_currency=BTC&payment_currency=PLN"
    assert signing.bitbay_hash("test-secret", body) == (
        "d8025de55952d031d263e682ca945c501157f05a1d6b964024cea6d9104c6ea151c5a80965302491ee04aa8eb4ef423b465d3652925422f5af439ddf5323c912"
    )
